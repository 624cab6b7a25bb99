// Open a self-contained HTML report in headless Chromium (Debian's, through
// playwright-core): it must render, every image must load, and no request may
// leave the machine. Prints a JSON summary of what a reader sees (the verdict, its
// box's class and colour, each figure's caption) and saves a screenshot.
//   node scripts/check_report.mjs REPORT.html SCREENSHOT.png
import { chromium } from "playwright-core";
import { pathToFileURL } from "node:url";

const [report, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const external = [];
  await page.route("**/*", (route) => {
    const url = route.request().url();
    if (url.startsWith("file:") || url.startsWith("data:")) return route.continue();
    external.push(url);
    return route.abort();
  });
  await page.goto(pathToFileURL(report).href, { waitUntil: "load" });
  const images = await page.$$eval("img", (all) =>
    all.map((img) => ({
      alt: img.alt,
      loaded: img.complete && img.naturalWidth > 0,
      caption: img.closest("figure")?.querySelector("figcaption")?.innerText ?? null,
    })),
  );
  const title = await page.title();
  const box = page.locator(".verdict");
  const verdict = await box.innerText();
  const verdictClass = await box.evaluate((element) =>
    [...element.classList].filter((name) => name !== "verdict").join(" "),
  );
  const verdictColour = await box.evaluate((element) => getComputedStyle(element).backgroundColor);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ title, images, external, verdict, verdictClass, verdictColour }));
} finally {
  await browser.close();
}
