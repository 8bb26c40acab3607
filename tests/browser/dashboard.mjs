// Drives the dashboard in headless Chromium: waits for the live stream, clicks 🔥 once and
// waits for a later window that counts exactly that reaction, then saves a screenshot. Then
// the CORS policy as the browser applies it: the server must list http://localhost:PORT (and
// no other origin) with --cors-origin; a page of BASE_URL's origin may not post to
// localhost, a page of localhost may post to BASE_URL.
//
//   node tests/browser/dashboard.mjs BASE_URL SCREENSHOT_PATH
//
// Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM). Exits non-zero with the reason.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";

const [base, screenshot] = process.argv.slice(2);
if (!base || !screenshot) {
  console.error("usage: node dashboard.mjs BASE_URL SCREENSHOT_PATH");
  process.exit(64);
}
const OVERALL_MS = 60_000;
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

async function fail(why) {
  console.error(`dashboard test failed: ${why}`);
  try {
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.error(`screenshot of the failure: ${screenshot}`);
  } catch { /* the failure is already reported */ }
  await browser.close();
  process.exit(1);
}

try {
  await page.goto(base);
  await page.waitForFunction(() => document.getElementById("state").textContent === "live", null, { timeout: 15_000 });
  await page.waitForFunction(() => Number(document.body.dataset.windows) >= 1, null, { timeout: 15_000 });
  const cluster = await page.textContent("#cluster");
  const subscriber = await page.textContent("#subscriber");
  if (!/^\d+$/.test(cluster) || !/^\d+$/.test(subscriber)) {
    await fail(`cluster ${cluster} and subscriber ${subscriber} are not shown`);
  }
  const before = Number(await page.textContent("#window"));
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
