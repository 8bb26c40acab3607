// The dashboard with tokens on (`--auth-subscribers`), in headless Chromium: the page asks for
// a token, refuses one that is not a JWT, takes the pasted one into the emostream_token cookie,
// goes live, and a clicked 🔥 is counted (the reaction carries no user_id: the token's sub is
// the user). A reload goes live on the cookie alone; Forget removes it and the page asks again.
//
//   node tests/browser/token.mjs BASE_URL TOKEN SCREENSHOT_PATH
//
// Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM). Exits non-zero with the reason.
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { chromium } from "playwright-core";

const [base, token, screenshot] = process.argv.slice(2);
if (!base || !token || !screenshot) {
  console.error("usage: node token.mjs BASE_URL TOKEN SCREENSHOT_PATH");
  process.exit(64);
}
const OVERALL_MS = 90_000;
const timer = setTimeout(() => {
  console.error(`token test: no result within ${OVERALL_MS / 1000} s`);
  process.exit(1);
}, OVERALL_MS);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const context = await browser.newContext({ viewport: { width: 1100, height: 760 } });
const page = await context.newPage();
const pageErrors = [];
page.on("pageerror", (e) => pageErrors.push(e.message));

async function fail(why) {
  console.error(`token test failed: ${why}`);
  try {
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    console.error(`screenshot of the failure: ${screenshot}`);
  } catch { /* the failure is already reported */ }
  await browser.close();
  process.exit(1);
}

const state = () => page.evaluate(() => ({
  state: document.body.dataset.state,
  token: document.body.dataset.token,
  note: document.getElementById("token-note").textContent,
  problem: document.getElementById("problem").textContent,
}));

async function waitFor(what, predicate, arg, timeout = 20_000) {
  await page.waitForFunction(predicate, arg, { timeout })
    .catch(async () => fail(`${what}; the page: ${JSON.stringify(await state())}`));
}

const cookie = async () => (await context.cookies(base)).find((c) => c.name === "emostream_token");

await page.goto(base);
await waitFor("the page did not ask for a token",
  () => document.body.dataset.state === "token needed" &&
    !document.getElementById("token-form").hidden);
console.log("without a token the page asks for one");

await page.fill("#token", "not a token");
await page.click("#token-form button[type=submit]");
await waitFor("a text that is not a JWT was not refused",
  () => document.getElementById("token-note").textContent.includes("not a JWT"));
if (await cookie()) await fail("a text that is not a JWT was kept");

await page.fill("#token", token);
await page.click("#token-form button[type=submit]");
await waitFor("the page did not go live with the pasted token",
  () => document.body.dataset.state === "live");
const kept = await cookie();
if (!kept || kept.value !== token) await fail(`the token is not in the cookie: ${JSON.stringify(kept)}`);
if (kept.sameSite !== "Strict" || !(kept.expires > Date.now() / 1000)) {
  await fail(`the cookie is not SameSite=Strict until the token's expiry: ${JSON.stringify(kept)}`);
}
console.log("a pasted token goes into the emostream_token cookie and the page goes live");

await page.click('#buttons button[data-emoji="🔥"]');
await waitFor("the clicked 🔥 was not accepted",
  () => document.getElementById("sent").textContent.includes("sent"), undefined, 10_000);
await waitFor("no window counted the clicked 🔥",
  () => [...document.querySelectorAll("#counts li")]
    .some((li) => li.dataset.emoji === "🔥" && li.querySelector(".count").textContent === "1"),
  undefined, 30_000);
console.log("a click is counted: the token's sub is the user");
mkdirSync(dirname(screenshot), { recursive: true });
await page.screenshot({ path: screenshot, fullPage: true });

await page.reload();
await waitFor("a reload did not go live on the cookie", () => document.body.dataset.state === "live");
console.log("a reload goes live on the cookie alone");

await page.click("#token-forget");
await waitFor("after Forget the page did not ask for a token again",
  () => document.body.dataset.state === "token needed");
if (await cookie()) await fail("Forget left the cookie");
console.log("Forget removes the cookie and the page asks again");

if (pageErrors.length) await fail(`errors on the page: ${pageErrors.join("; ")}`);
clearTimeout(timer);
await browser.close();
