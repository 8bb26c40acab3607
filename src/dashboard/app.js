"use strict";

// The emojis offered as buttons; any emoji anyone sends still shows in the counts.
const BUTTONS = ["🔥", "❤️", "😂", "👏", "😮", "😢", "🎉", "👍"];
const MINUTE_MS = 60_000;
// A huge window must not flood the page with floating emojis.
const BURST_PER_WINDOW = 60;
const BURST_ON_PAGE = 240;
const LINE_COLOURS = ["#ff7a45", "#5da9ff", "#3ddc97", "#c77dff"];

// The server's rule for a stream id; checked here too so a bad `?stream=` is explained on the
// page instead of surfacing as a failed registration.
const STREAM_ID = /^[A-Za-z0-9_.:-]{1,64}$/;
const DEFAULT_STREAM = "default";
const STREAMS_POLL_MS = 3000;

const $ = (id) => document.getElementById(id);
const userId = "web-" + Math.random().toString(36).slice(2, 10);
const recent = []; // window summaries of the last minute, oldest first
let followed = null; // the stream this page follows; null while the URL names an invalid one
// Bumped on every switch: answers and events that belong to an earlier stream are dropped.
let generation = 0;
let client = null;
let source = null;
let windows = 0;
let resyncs = 0;
let corrections = 0;
let streams = []; // the last answer of GET /streams
let streamsKnown = false; // whether that answer came: without it, "not active" would be a guess
let pickerKey = "";
let pollTimer = null;

// Tokens: a server with tokens on answers 401 without one. The page then asks for one and
// keeps it in the emostream_token cookie, which fetch and EventSource send by themselves
// (EventSource cannot set an Authorization header).
const TOKEN_COOKIE = "emostream_token";

function savedToken() {
  const pair = document.cookie.split("; ").find((c) => c.startsWith(`${TOKEN_COOKIE}=`));
  return pair ? pair.slice(TOKEN_COOKIE.length + 1) : null;
}

// Seconds until the token's `exp`, or null when it cannot be read (the server decides anyway).
function secondsLeft(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const exp = JSON.parse(atob(part)).exp;
    return Number.isFinite(exp) ? Math.floor(exp - Date.now() / 1000) : null;
  } catch {
    return null;
  }
}

function saveToken(token) {
  const left = secondsLeft(token);
  const attributes = ["path=/", "SameSite=Strict"];
  if (left !== null) attributes.push(`max-age=${Math.max(left, 0)}`);
  if (location.protocol === "https:") attributes.push("Secure");
  document.cookie = `${TOKEN_COOKIE}=${token}; ${attributes.join("; ")}`;
}

function forgetToken() {
  document.cookie = `${TOKEN_COOKIE}=; path=/; max-age=0; SameSite=Strict`;
}

// Shows the token box with why it is needed.
function askForToken(why) {
  $("token-form").hidden = false;
  $("token-note").textContent = why;
  document.body.dataset.token = savedToken() ? "refused" : "needed";
}

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  document.body.dataset.state = state;
}

function streamFromUrl() {
  const raw = new URLSearchParams(location.search).get("stream");
  return raw === null || raw === "" ? DEFAULT_STREAM : raw;
}

// A URL can carry any length: keep what the page repeats of it readable.
const shorten = (text) => (text.length > 80 ? `${text.slice(0, 77)}…` : text);

function showProblem(text) {
  $("problem").textContent = text;
  $("problem").hidden = false;
}

// Follows `id`: drops what the page shows and holds for the previous stream, then registers.
function start(id) {
  generation += 1;
  release();
  resetView();
  $("problem").hidden = true;
  $("stream").textContent = shorten(id);
  document.title = `emostream — ${shorten(id)}`;
  if (!STREAM_ID.test(id)) {
    followed = null;
    document.body.dataset.stream = "";
    setState("invalid stream");
    showProblem(`“${shorten(id)}” is not a valid stream id: use 1–64 of A–Z a–z 0–9 _ . : - ` +
      "(for example match-42), or pick an active stream above.");
  } else {
    followed = id;
    document.body.dataset.stream = id;
    register(generation);
  }
  setButtons();
  renderPicker();
}

function switchTo(id) {
  if (id === followed) return;
  const url = new URL(location.href);
  url.searchParams.set("stream", id);
  // A history entry per pick, so Back returns to the previous stream (see popstate).
  window.history.pushState(null, "", url);
  start(id);
}

// Frees a place on its subscriber now; the server would otherwise keep it until its TTL.
function unregister(clientId) {
  fetch(`/clients/${encodeURIComponent(clientId)}`, { method: "DELETE", keepalive: true }).catch(() => {});
}

function release() {
  if (source) source.close();
  if (client) unregister(client.client_id);
  source = null;
  client = null;
}

function resetView() {
  recent.length = 0;
  windows = 0;
  resyncs = 0;
  corrections = 0;
  document.body.dataset.windows = "0";
  document.body.dataset.corrections = "0";
  $("window").textContent = "–";
  $("resyncs").textContent = "0";
  $("corrections").textContent = "0";
  $("total").textContent = "0";
  $("span").textContent = "";
  $("counts").replaceChildren();
  $("empty").hidden = true;
  $("waiting").hidden = false;
  $("chart").replaceChildren();
  $("legend").replaceChildren();
  $("burst").replaceChildren();
  $("cluster").textContent = "–";
  $("subscriber").textContent = "–";
}

async function register(gen) {
  if (gen !== generation) return;
  setState("connecting");
  let answer;
  try {
    const response = await fetch("/clients", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ stream_id: followed }),
    });
    answer = await response.json().catch(() => ({}));
    if (gen !== generation) {
      if (response.ok && answer.client_id) unregister(answer.client_id);
      return;
    }
    if (response.status === 401) {
      setState("token needed");
      askForToken(savedToken()
        ? `The token was refused (${answer.message || "401"}): paste a fresh one.`
        : "This server needs a token to watch: paste one.");
      return;
    }
    // Another try cannot fix a refused stream (invalid, forbidden): say so and stop.
    if ([400, 403, 404].includes(response.status)) {
      setState("refused");
      showProblem(`The server refused to follow “${followed}”: ${answer.message || answer.error || response.status}`);
      return;
    }
    if (!response.ok) throw new Error(`POST /clients answered ${response.status}`);
  } catch (e) {
    if (gen !== generation) return;
    console.warn("registration failed, retrying:", e.message);
    setTimeout(() => register(gen), 2000);
    return;
  }
  client = answer;
  $("cluster").textContent = String(client.cluster);
  $("subscriber").textContent = String(client.subscriber);
  follow(client.events_url, gen);
  // The viewer counts include this page from now: show them without waiting for the next poll.
  setTimeout(pollStreams, 500);
}

function follow(url, gen) {
  const events = new URL(url, location.href);
  // The server's events_url names the stream; one without per-stream delivery does not, and
  // ignores the parameter.
  if (!events.searchParams.has("stream_id")) events.searchParams.set("stream_id", followed);
  // EventSource reconnects by itself and sends Last-Event-ID, so the server replays what
  // was missed; it gives up only when the server answers with an error status.
  const es = new EventSource(events);
  source = es;
  es.onopen = () => { if (gen === generation) setState("live"); };
  es.onerror = () => {
    if (gen !== generation) return;
    if (es.readyState === EventSource.CLOSED) {
      release();
      setState("closed");
      setTimeout(() => register(gen), 3000);
    } else {
      setState("reconnecting");
    }
  };
  const on = (kind, handle) => es.addEventListener(kind, (e) => {
    if (gen !== generation) return;
    const summary = JSON.parse(e.data);
    // A server without per-stream delivery mixes the streams on one event stream.
    if ((summary.stream_id ?? DEFAULT_STREAM) !== followed) return;
    handle(summary);
  });
  on("window", (s) => show(s, false));
  on("resync", (s) => show(s, true));
  on("correction", correct);
}

function show(summary, resync) {
  windows += 1;
  document.body.dataset.windows = String(windows);
  $("waiting").hidden = true;
  if (resync) {
    resyncs += 1;
    $("resyncs").textContent = resyncs;
  }
  showWindow(summary, resync);
  remember(summary);
  drawChart();
  burst(summary);
}

function showWindow(summary, resync) {
  $("window").textContent = summary.window;
  $("total").textContent = summary.total;
  const start = new Date(summary.start_ms).toLocaleTimeString();
  const end = new Date(summary.end_ms).toLocaleTimeString();
  const revised = summary.revision ? ` (corrected, revision ${summary.revision})` : "";
  $("span").textContent = `${start} – ${end}${resync ? " (resynced: windows were skipped)" : ""}${revised}`;
  showCounts(summary);
}

// Late reactions changed a window (the whole window comes again, with a higher revision):
// replace the copy shown, or place it if it is the stream's first emission of that window. A
// replayed correction (an older or equal revision) changes nothing.
function correct(summary) {
  const i = recent.findIndex((s) => s.window === summary.window);
  if (i >= 0 && (recent[i].revision || 0) >= (summary.revision || 0)) return;
  if (i < 0 && !(recent.length && summary.end_ms > recent[recent.length - 1].end_ms - MINUTE_MS)) return;
  corrections += 1;
  document.body.dataset.corrections = String(corrections);
  $("corrections").textContent = corrections;
  if (i >= 0) {
    recent[i] = summary;
  } else {
    recent.push(summary);
    recent.sort((a, b) => a.window - b.window);
  }
  if (recent[recent.length - 1].window === summary.window) showWindow(summary, false);
  drawChart();
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
  if (recent.length && recent[recent.length - 1].window >= summary.window) {
    recent.length = 0; // a resync or a restart: start the minute over
  }
  recent.push(summary);
  while (recent.length && recent[0].end_ms <= summary.end_ms - MINUTE_MS) recent.shift();
}

function drawChart() {
  const svg = $("chart");
  // Drawn in the element's own pixels, so text and lines are not stretched.
  const [w, h, left, bottom] = [Math.max(300, svg.clientWidth || 600), 180, 34, 18];
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const end = recent[recent.length - 1].end_ms;
  const x = (ms) => left + ((ms - (end - MINUTE_MS)) / MINUTE_MS) * (w - left - 4);
  // Lines for the total and the minute's three most sent emojis.
  const sums = new Map();
  for (const s of recent) for (const e of s.emojis) sums.set(e.emoji, (sums.get(e.emoji) || 0) + e.count);
  const top = [...sums.entries()].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([e]) => e);
  const series = [["total", (s) => s.total], ...top.map((e) => [e, (s) => (s.emojis.find((c) => c.emoji === e) || { count: 0 }).count])];
  const max = Math.max(1, ...recent.map((s) => s.total));
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
  const points = (value) => recent.map((s) => `${x((s.start_ms + s.end_ms) / 2).toFixed(1)},${y(value(s)).toFixed(1)}`);
  if (recent.length > 1) {
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
  // A ring on each corrected window's total: its counts changed after it was first shown.
  for (const s of recent.filter((s) => s.revision > 0)) {
    const mark = el("circle", {
      class: "corrected", r: 4,
      cx: x((s.start_ms + s.end_ms) / 2).toFixed(1), cy: y(s.total).toFixed(1),
      "data-window": s.window, "data-total": s.total, "data-revision": s.revision,
    });
    const tip = el("title", {});
    tip.textContent = `window ${s.window} corrected by late reactions: total ${s.total} (revision ${s.revision})`;
    mark.append(tip);
    svg.append(mark);
  }
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
  if (followed === null) return;
  try {
    const response = await fetch("/emoji", {
      method: "POST",
      headers: { "content-type": "application/json" },
      // With a token the user is the token's: a user_id of the page's own would not match it.
      body: JSON.stringify(savedToken()
        ? { emoji_type: emoji, stream_id: followed }
        : { user_id: userId, emoji_type: emoji, stream_id: followed }),
    });
    if (response.status === 401) askForToken("Reacting needs a token: paste one.");
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

function setButtons() {
  for (const button of $("buttons").querySelectorAll("button")) button.disabled = followed === null;
  $("sent").classList.remove("error");
  $("sent").textContent = followed === null
    ? "Pick a valid stream to react."
    : "Click an emoji: it is counted in the window it falls in.";
}

async function pollStreams() {
  try {
    const response = await fetch("/streams", { headers: { accept: "application/json" } });
    if (response.status === 401) askForToken("This server needs a token to list its streams: paste one.");
    if (!response.ok) throw new Error(`GET /streams answered ${response.status}`);
    const list = await response.json();
    if (!Array.isArray(list)) throw new Error("GET /streams did not answer a list");
    // Only ids the server could accept back: anything else could not be followed anyway.
    streams = list.filter((s) => s && typeof s.stream_id === "string" && STREAM_ID.test(s.stream_id));
    streamsKnown = true;
    $("streams-note").textContent = streams.length ? "" : "no stream is active yet";
  } catch (e) {
    streamsKnown = false;
    $("streams-note").textContent = `the list of streams is unavailable (${e.message})`;
  }
  renderPicker();
  clearTimeout(pollTimer);
  pollTimer = setTimeout(pollStreams, STREAMS_POLL_MS);
}

const count = (n) => (Number.isFinite(n) ? String(n) : "–");

function renderPicker() {
  const mine = streams.find((s) => s.stream_id === followed);
  $("viewers").textContent = mine ? count(mine.viewers) : "–";
  const rows = streams.map((s) => [s.stream_id,
    `${s.stream_id} · ${count(s.viewers)} watching · last total ${s.last_window == null ? "–" : count(s.last_total)}`]);
  if (followed === null) rows.unshift(["", "— pick a stream —"]);
  else if (!mine) rows.unshift([followed, streamsKnown ? `${followed} · not active: waiting for reactions` : followed]);
  // Rebuilt only when something changed, so a list a person has open is not yanked away.
  const key = JSON.stringify([followed, rows]);
  if (key === pickerKey) return;
  pickerKey = key;
  const select = $("streams");
  select.replaceChildren(...rows.map(([id, label]) => {
    const option = document.createElement("option");
    option.value = id;
    option.textContent = label;
    option.disabled = id === "";
    option.selected = id === (followed ?? "");
    return option;
  }));
}

$("streams").addEventListener("change", (e) => {
  if (STREAM_ID.test(e.target.value)) switchTo(e.target.value);
});
window.addEventListener("popstate", () => {
  const id = streamFromUrl();
  if (id !== followed) start(id);
});
window.addEventListener("pagehide", release);
// A page restored from the back-forward cache was released on its way in: follow again.
window.addEventListener("pageshow", (e) => { if (e.persisted) start(streamFromUrl()); });

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const token = $("token").value.trim();
  if (!/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/.test(token)) {
    $("token-note").textContent = "That is not a JWT (three base64url parts joined by dots).";
    return;
  }
  const left = secondsLeft(token);
  if (left !== null && left <= 0) {
    $("token-note").textContent = "That token has expired: ask for a fresh one.";
    return;
  }
  saveToken(token);
  $("token").value = "";
  $("token-note").textContent = "Token saved in this browser.";
  document.body.dataset.token = "saved";
  if (followed !== null) start(followed);
  pollStreams();
});
$("token-forget").addEventListener("click", () => {
  forgetToken();
  $("token-note").textContent = "Token forgotten.";
  document.body.dataset.token = "forgotten";
  if (followed !== null) start(followed);
  pollStreams();
});
// A page that holds a token offers to replace it.
if (savedToken()) {
  $("token-form").hidden = false;
  document.body.dataset.token = "saved";
}

buttons();
start(streamFromUrl());
pollStreams();
