// Drives the dashboard in headless Chromium: waits for the live stream, clicks 🔥 once and
// waits for a later window that counts exactly that reaction, then saves a screenshot. A late
// 🔥 for that window then comes back as a correction the chart shows (ringed, with 2). Then
// streams: a `?stream=` that is not a stream id is explained, not followed; while reactions go
// to "match-1" (N 🔥) and "match-2" (M 😂) in every window, `/?stream=match-2` shows M and
// not N, picking match-1 in the list shows N with `stream=match-1` in the URL, and Back
// returns to match-2 (a second screenshot, SCREENSHOT_PATH with "-streams"). Then the CORS
// policy as the browser applies it: the server must list http://localhost:PORT (and no other
// origin) with --cors-origin; a page of BASE_URL's origin may not post to localhost, a page
// of localhost may post to BASE_URL.
//
//   node tests/browser/dashboard.mjs BASE_URL SCREENSHOT_PATH [WINDOW_MS]
//
// WINDOW_MS (default 2000) is the server's --window-ms: the reactions of the streams part are
// posted once per window, so each window's counts are known exactly.
//
// Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM). Exits non-zero with the reason.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";

const [base, screenshot, windowArg] = process.argv.slice(2);
const WINDOW_MS = Number(windowArg || 2000);
if (!base || !screenshot || !(WINDOW_MS > 0)) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT_PATH [WINDOW_MS]");
  process.exit(64);
}
const OVERALL_MS = 150_000;
const timer = setTimeout(() => {
  console.error(`dashboard test: no result within ${OVERALL_MS / 1000} s`);
  process.exit(1);
}, OVERALL_MS);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // The machine's network is closed: without these, Chromium keeps trying Google's hosts.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1100, height: 760 } });
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));
page.on("console", (m) => { if (m.type() === "error") console.error(`page console: ${m.text()}`); });

// `on` is the page the failure is about: its screenshot is the one that explains it.
async function fail(why, on = page) {
  console.error(`dashboard test failed: ${why}`);
  try {
    mkdirSync(dirname(screenshot), { recursive: true });
    await on.screenshot({ path: screenshot, fullPage: true });
    console.error(`screenshot of the failure: ${screenshot}`);
  } catch { /* the failure is already reported */ }
  await browser.close();
  process.exit(1);
}

// Waits for the page's last window to be exactly `counts` ({emoji: count}), nothing else.
function showsExactly(on, counts, timeout) {
  return on.waitForFunction((counts) => {
    const rows = [...document.querySelectorAll("#counts li")]
      .map((li) => [li.dataset.emoji, li.querySelector(".count").textContent]);
    const want = Object.entries(counts).map(([e, n]) => [e, String(n)]);
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    return document.getElementById("total").textContent === String(total) &&
      JSON.stringify(rows.sort()) === JSON.stringify(want.sort());
  }, counts, { timeout });
}

const shown = (on) => on.evaluate(() => ({
  stream: document.getElementById("stream").textContent,
  total: document.getElementById("total").textContent,
  rows: [...document.querySelectorAll("#counts li")].map((li) => `${li.dataset.emoji}×${li.querySelector(".count").textContent}`),
}));

// Every window from now on: N 🔥 to match-1 and M 😂 to match-2, in one batch with one
// timestamp early in the window, so both streams' counts are exact and fall in the same window.
const N = 3;
const M = 5;
function feedStreams() {
  let last = -1;
  let failure = null;
  const tick = async () => {
    const now = Date.now();
    const window = Math.floor(now / WINDOW_MS);
    if (window === last || now - window * WINDOW_MS > WINDOW_MS / 2) return;
    last = window;
    const reactions = [
      ...Array.from({ length: N }, (_, i) => ({ user_id: `fan1-${window}-${i}`, emoji_type: "🔥", timestamp: now, stream_id: "match-1" })),
      ...Array.from({ length: M }, (_, i) => ({ user_id: `fan2-${window}-${i}`, emoji_type: "😂", timestamp: now, stream_id: "match-2" })),
    ];
    try {
      const r = await fetch(new URL("/emoji/batch", base), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(reactions),
      });
      if (r.status !== 202) failure = `POST /emoji/batch answered ${r.status}: ${await r.text()}`;
    } catch (e) {
      failure = `POST /emoji/batch failed: ${e.message}`;
    }
  };
  const timer = setInterval(tick, 50);
  return { stop: () => clearInterval(timer), failure: () => failure };
}

// A late reaction for the clicked window (already shown with 1 🔥): the page receives the
// window again as an `event: correction` and redraws it, ringed on the chart, with 2.
async function correctionPart(window) {
  const r = await fetch(new URL("/emoji", base), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user_id: "late-fan", emoji_type: "🔥", timestamp: window * WINDOW_MS + 1 }),
  });
  if (r.status !== 202) await fail(`the late reaction was answered ${r.status}: ${await r.text()}`);
  await page.waitForFunction((window) => {
    const mark = document.querySelector(`#chart circle.corrected[data-window="${window}"]`);
    return mark !== null && mark.dataset.total === "2" && mark.dataset.revision === "1" &&
      document.getElementById("corrections").textContent === "1";
  }, window, { timeout: 20_000 }).catch(async () => {
    const marks = await page.$$eval("#chart circle.corrected", (m) => m.map((c) => ({ ...c.dataset })));
    await fail(`window ${window} was not shown corrected to 2 🔥: marks ${JSON.stringify(marks)}, corrections ${await page.textContent("#corrections")}`);
  });
  console.log(`corrections: a late 🔥 for window ${window} redrew it with 2 (revision 1), ringed on the chart`);
}

async function streamsPart() {
  const bad = "no spaces<b>here</b>";
  const invalid = await browser.newPage();
  invalid.on("pageerror", (e) => pageErrors.push(`${bad}: ${e.message}`));
  await invalid.goto(new URL(`/?stream=${encodeURIComponent(bad)}`, base).href);
  await invalid.waitForSelector("#problem:not([hidden])", { timeout: 5_000 });
  const problem = await invalid.textContent("#problem");
  if (!problem.includes("not a valid stream id")) await fail(`an invalid ?stream= shows ${JSON.stringify(problem)}`, invalid);
  // Shown as text: the markup in the id must not become elements.
  if (await invalid.textContent("#stream") !== bad || await invalid.$("#stream b, #problem b")) {
    await fail(`the invalid stream id is not shown as plain text: ${await invalid.innerHTML("#stream")}`, invalid);
  }
  if (!await invalid.isDisabled('button[data-emoji="🔥"]')) await fail("the buttons react to an invalid stream", invalid);
  await invalid.close();

  const viewer = await browser.newPage({ viewport: { width: 1100, height: 760 } });
  viewer.on("pageerror", (e) => pageErrors.push(`match-2: ${e.message}`));
  await viewer.goto(new URL("/?stream=match-2", base).href);
  await viewer.waitForFunction(() => document.getElementById("state").textContent === "live", null, { timeout: 15_000 });
  if (await viewer.textContent("#stream") !== "match-2") await fail(`/?stream=match-2 follows ${await viewer.textContent("#stream")}`, viewer);
  // Nothing was sent to match-2 yet: no window to show.
  if (!(await viewer.isVisible("#waiting")) || !/waiting for reactions/i.test(await viewer.textContent("#waiting"))) {
    await fail("a stream with no windows does not say it is waiting for reactions", viewer);
  }

  const feed = feedStreams();
  try {
    await showsExactly(viewer, { "😂": M }, 20_000).catch(async () => {
      await fail(`/?stream=match-2 did not show exactly ${M} 😂: ${JSON.stringify(await shown(viewer))}`, viewer);
    });
    await viewer.waitForSelector('#streams option[value="match-1"]', { state: "attached", timeout: 15_000 }).catch(async () => {
      const options = await viewer.$$eval("#streams option", (o) => o.map((x) => x.textContent));
      await fail(`the stream list does not offer match-1: ${JSON.stringify(options)} (${await viewer.textContent("#streams-note")})`, viewer);
    });
    await viewer.selectOption("#streams", "match-1");
    const url = new URL(viewer.url());
    if (url.searchParams.get("stream") !== "match-1") await fail(`after picking match-1 the URL is ${url}`, viewer);
    await showsExactly(viewer, { "🔥": N }, 20_000).catch(async () => {
      await fail(`after picking match-1 the page did not show exactly ${N} 🔥: ${JSON.stringify(await shown(viewer))}`, viewer);
    });
    if (await viewer.textContent("#stream") !== "match-1") await fail(`after picking match-1 the page says ${await viewer.textContent("#stream")}`, viewer);
    const picked = await viewer.$eval("#streams", (s) => s.value);
    if (picked !== "match-1") await fail(`after picking match-1 the list shows ${picked} as followed`, viewer);
    await viewer.waitForTimeout(400);
    await viewer.screenshot({ path: screenshot.replace(/(\.png)?$/, "-streams.png"), fullPage: true });
    await viewer.goBack();
    if (new URL(viewer.url()).searchParams.get("stream") !== "match-2") await fail(`Back went to ${viewer.url()}`, viewer);
    await showsExactly(viewer, { "😂": M }, 20_000).catch(async () => {
      await fail(`after Back the page did not show exactly ${M} 😂 of match-2: ${JSON.stringify(await shown(viewer))}`, viewer);
    });
    if (feed.failure()) await fail(feed.failure());
  } finally {
    feed.stop();
  }
  if (pageErrors.length) await fail(`errors on the page: ${pageErrors.join("; ")}`, viewer);
  await viewer.close();
  console.log(`streams: an invalid id is explained; match-2 showed ${M} 😂, match-1 picked from the list showed ${N} 🔥, Back returned to match-2`);
}

try {
  await page.goto(base);
  await page.waitForFunction(() => document.getElementById("state").textContent === "live", null, { timeout: 15_000 });
  const cluster = await page.textContent("#cluster");
  const subscriber = await page.textContent("#subscriber");
  if (!/^\d+$/.test(cluster) || !/^\d+$/.test(subscriber)) {
    await fail(`cluster ${cluster} and subscriber ${subscriber} are not shown`);
  }
  // A quiet stream gets no windows (only keep-alives), so there may be none before the click.
  const before = Number(await page.textContent("#window")) || -1;
  await page.click('button[data-emoji="🔥"]');
  await page.waitForFunction(
    (before) => {
      const window = Number(document.getElementById("window").textContent);
      const row = document.querySelector('#counts li[data-emoji="🔥"] .count');
      return window > before && row !== null && row.textContent === "1";
    },
    before,
    { timeout: 20_000 },
  );
  if (pageErrors.length) await fail(`errors on the page: ${pageErrors.join("; ")}`);
  // Let the burst start so the screenshot shows it.
  await page.waitForTimeout(600);
  mkdirSync(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });
  const window = await page.textContent("#window");
  await correctionPart(Number(window));
  await streamsPart();
  const port = new URL(base).port;
  const post = (from, target) => from.evaluate(async (target) => {
    try {
      const r = await fetch(`${target}/emoji`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ user_id: "cors-check", emoji_type: "👍", timestamp: Date.now() }),
      });
      return `status ${r.status}`;
    } catch (e) {
      return `blocked (${e.message})`;
    }
  }, target);
  const unlisted = await post(page, `http://localhost:${port}`);
  if (!unlisted.startsWith("blocked")) {
    await fail(`a page of ${base} posted to http://localhost:${port}, whose --cors-origin does not list it: ${unlisted}`);
  }
  const listedPage = await browser.newPage();
  await listedPage.goto(`http://localhost:${port}/`);
  const listed = await post(listedPage, base.replace(/\/$/, ""));
  if (listed !== "status 202") {
    await fail(`a page of the listed origin http://localhost:${port} could not post: ${listed}`);
  }
  console.log(`CORS: an unlisted origin's post is ${unlisted}; the listed origin's got ${listed}`);
  console.log(`dashboard test passed: 🔥 counted once in window ${window} (cluster ${cluster}, subscriber ${subscriber}); screenshot ${screenshot}`);
  await browser.close();
  clearTimeout(timer);
} catch (e) {
  await fail(e.message);
}
