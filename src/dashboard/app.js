"use strict";

// The emojis offered as buttons; any emoji anyone sends still shows in the counts.
const BUTTONS = ["🔥", "❤️", "😂", "👏", "😮", "😢", "🎉", "👍"];
const MINUTE_MS = 60_000;
// A huge window must not flood the page with floating emojis.
const BURST_PER_WINDOW = 60;
const BURST_ON_PAGE = 240;
const LINE_COLOURS = ["#ff7a45", "#5da9ff", "#3ddc97", "#c77dff"];

const $ = (id) => document.getElementById(id);
const userId = "web-" + Math.random().toString(36).slice(2, 10);
const history = []; // window summaries of the last minute, oldest first
let client = null;
let source = null;
let windows = 0;
let resyncs = 0;

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  document.body.dataset.state = state;
}

async function register() {
  setState("connecting");
  try {
    const response = await fetch("/clients", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    if (!response.ok) throw new Error(`POST /clients answered ${response.status}`);
    client = await response.json();
  } catch (e) {
    console.warn("registration failed, retrying:", e.message);
    setTimeout(register, 2000);
    return;
  }
  $("cluster").textContent = client.cluster;
  $("subscriber").textContent = client.subscriber;
  follow(client.events_url);
}

function follow(url) {
  // EventSource reconnects by itself and sends Last-Event-ID, so the server replays what
  // was missed; it gives up only when the server answers with an error status.
  source = new EventSource(url);
  source.onopen = () => setState("live");
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) {
      setState("closed");
      setTimeout(register, 3000);
    } else {
      setState("reconnecting");
    }
  };
  source.addEventListener("window", (e) => show(JSON.parse(e.data), false));
  source.addEventListener("resync", (e) => show(JSON.parse(e.data), true));
}

function show(summary, resync) {
  windows += 1;
  document.body.dataset.windows = String(windows);
  if (resync) {
    resyncs += 1;
    $("resyncs").textContent = resyncs;
  }
  $("window").textContent = summary.window;
  $("total").textContent = summary.total;
  const start = new Date(summary.start_ms).toLocaleTimeString();
  const end = new Date(summary.end_ms).toLocaleTimeString();
  $("span").textContent = `${start} – ${end}${resync ? " (resynced: windows were skipped)" : ""}`;
  showCounts(summary);
  remember(summary);
  drawChart();
  burst(summary);
}

function showCounts(summary) {
  const list = $("counts");
  list.replaceChildren();
  $("empty").hidden = summary.emojis.length > 0;
  const top = summary.emojis.length ? summary.emojis[0].count : 1;
  for (const { emoji, count, scaled } of summary.emojis) {
    const row = document.createElement("li");
    row.dataset.emoji = emoji;
    row.innerHTML = '<span class="emoji"></span><span class="bar"></span>' +
      '<span class="count"></span><span class="scaled"></span>';
    row.querySelector(".emoji").textContent = emoji;
    row.querySelector(".bar").style.width = `${(100 * count) / top}%`;
    row.querySelector(".count").textContent = String(count);
    row.querySelector(".scaled").textContent = `×${scaled}`;
    row.querySelector(".scaled").title = "displayed emojis after scaling";
    list.append(row);
  }
}

function remember(summary) {
  if (history.length && history[history.length - 1].window >= summary.window) {
    history.length = 0; // a resync or a restart: start the minute over
  }
  history.push(summary);
  while (history.length && history[0].end_ms <= summary.end_ms - MINUTE_MS) history.shift();
}

function drawChart() {
  const svg = $("chart");
  // Drawn in the element's own pixels, so text and lines are not stretched.
  const [w, h, left, bottom] = [Math.max(300, svg.clientWidth || 600), 180, 34, 18];
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const end = history[history.length - 1].end_ms;
  const x = (ms) => left + ((ms - (end - MINUTE_MS)) / MINUTE_MS) * (w - left - 4);
  // Lines for the total and the minute's three most sent emojis.
  const sums = new Map();
  for (const s of history) for (const e of s.emojis) sums.set(e.emoji, (sums.get(e.emoji) || 0) + e.count);
  const top = [...sums.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([e]) => e);
  const series = [["total", (s) => s.total], ...top.map((e) => [e, (s) => (s.emojis.find((c) => c.emoji === e) || { count: 0 }).count])];
  const max = Math.max(1, ...history.map((s) => s.total));
  const y = (v) => h - bottom - (v / max) * (h - bottom - 8);
  const ns = "http://www.w3.org/2000/svg";
  const el = (name, attrs) => {
    const node = document.createElementNS(ns, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  };
  svg.replaceChildren(
    el("line", { class: "axis", x1: left, y1: h - bottom, x2: w, y2: h - bottom }),
    el("line", { class: "axis", x1: left, y1: 8, x2: left, y2: h - bottom }),
  );
  const maxLabel = el("text", { class: "label", x: 2, y: 14 });
  maxLabel.textContent = String(max);
  const zero = el("text", { class: "label", x: 2, y: h - bottom });
  zero.textContent = "0";
  const ago = el("text", { class: "label", x: left, y: h - 2 });
  ago.textContent = "−60 s";
  const now = el("text", { class: "label", x: w - 24, y: h - 2 });
  now.textContent = "now";
  svg.append(maxLabel, zero, ago, now);
  const points = (value) => history.map((s) => `${x((s.start_ms + s.end_ms) / 2).toFixed(1)},${y(value(s)).toFixed(1)}`);
  if (history.length > 1) {
    const total = points(series[0][1]);
    svg.append(el("polygon", { class: "area", points: [`${total[0].split(",")[0]},${h - bottom}`, ...total, `${total[total.length - 1].split(",")[0]},${h - bottom}`].join(" ") }));
  }
  const legend = $("legend");
  legend.replaceChildren();
  series.forEach(([name, value], i) => {
    const colour = LINE_COLOURS[i % LINE_COLOURS.length];
    svg.append(el("polyline", { class: "line", points: points(value).join(" "), stroke: colour }));
    const key = document.createElement("span");
    key.style.setProperty("--c", colour);
    key.textContent = name;
    legend.append(key);
  });
}

function burst(summary) {
  const layer = $("burst");
  let budget = Math.min(BURST_PER_WINDOW, BURST_ON_PAGE - layer.childElementCount);
  for (const { emoji, scaled } of summary.emojis) {
    for (let i = 0; i < scaled && budget > 0; i++, budget--) {
      const span = document.createElement("span");
      span.textContent = emoji;
      span.style.left = `${5 + Math.random() * 90}%`;
      span.style.setProperty("--dx", `${(Math.random() - 0.5) * 20}vw`);
      span.style.setProperty("--t", `${1.8 + Math.random() * 1.6}s`);
      span.style.animationDelay = `${Math.random() * 0.8}s`;
      span.addEventListener("animationend", () => span.remove());
      layer.append(span);
    }
  }
}

async function react(emoji) {
  const note = $("sent");
  try {
    const response = await fetch("/emoji", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ user_id: userId, emoji_type: emoji }),
    });
    if (response.status === 202) {
      note.classList.remove("error");
      note.textContent = `${emoji} sent: watch for it in the next window.`;
      return;
    }
    const body = await response.json().catch(() => ({}));
    const wait = response.headers.get("retry-after");
    note.classList.add("error");
    note.textContent = `${body.message || `the server answered ${response.status}`}${wait ? ` (retry in ${wait} s)` : ""}`;
  } catch (e) {
    note.classList.add("error");
    note.textContent = `not sent: ${e.message}`;
  }
}

function buttons() {
  const box = $("buttons");
  for (const emoji of BUTTONS) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.emoji = emoji;
    button.textContent = emoji;
    button.setAttribute("aria-label", `send ${emoji}`);
    button.addEventListener("click", () => react(emoji));
    box.append(button);
  }
}

// Release the place on the subscriber; the server would otherwise expire it after its TTL.
window.addEventListener("pagehide", () => {
  if (source) source.close();
  if (client) fetch(`/clients/${client.client_id}`, { method: "DELETE", keepalive: true });
});

buttons();
register();
