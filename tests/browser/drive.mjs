// Drives headless Chromium (the system /usr/bin/chromium; playwright-core never downloads a browser)
// for tests/test_browser.py. Usage: node drive.mjs '<json job>'; prints one JSON result line.
//
// Jobs:
//   {"mode": "checkout", "pages": [url, ...]}  load each page, wait for its documentLoad span, click
//       "Checkout", wait until the page's exporter flushed; returns each page's E2E_STATE + console.
//   {"mode": "screenshot", "loginUrl", "username", "password", "url", "path"}  log in to the Django
//       admin through its form, open `url`, save a full-page PNG to `path`; returns bar/legend counts.

import { chromium } from 'playwright-core';

const job = JSON.parse(process.argv[2]);
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

async function checkout(browser, url) {
  const page = await browser.newPage();
  const consoleMessages = [];
  page.on('console', (message) => consoleMessages.push(`${message.type()}: ${message.text()}`));
  page.on('pageerror', (error) => consoleMessages.push(`pageerror: ${error}`));
  await page.goto(url, { waitUntil: 'load', timeout: 15000 });
  await page.waitForFunction(() => window.E2E_STATE && window.E2E_STATE.ready, null, { timeout: 10000 });
  await page.click('#checkout');
  await page.waitForFunction(() => window.E2E_STATE.done, null, { timeout: 20000 });
  const state = await page.evaluate(() => window.E2E_STATE);
  const origin = await page.evaluate(() => window.location.origin);
  await page.close();
  return { url, origin, state, console: consoleMessages };
}

async function screenshot(browser) {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  await page.goto(job.loginUrl, { timeout: 15000 });
  await page.fill('#id_username', job.username);
  await page.fill('#id_password', job.password);
  await Promise.all([page.waitForNavigation({ timeout: 15000 }), page.click('input[type=submit]')]);
  const response = await page.goto(job.url, { timeout: 15000 });
  await page.screenshot({ path: job.path, fullPage: true });
  const info = await page.evaluate(() => ({
    title: document.title,
    bars: Array.from(document.querySelectorAll('#e2e-waterfall .e2e-bar')).map((bar) => ({
      left: bar.style.left,
      width: bar.style.width,
      background: getComputedStyle(bar).backgroundColor,
      widthPx: bar.getBoundingClientRect().width,
    })),
    waterfallText: (document.querySelector('#e2e-waterfall') || document.body).innerText.slice(0, 3000),
  }));
  await page.close();
  return { status: response ? response.status() : null, ...info };
}

const browser = await chromium.launch({ executablePath, headless: true, args: ARGS, timeout: 20000 });
try {
  let result;
  if (job.mode === 'checkout') {
    result = { pages: [] };
    for (const url of job.pages) result.pages.push(await checkout(browser, url));
  } else if (job.mode === 'screenshot') {
    result = await screenshot(browser);
  } else {
    throw new Error(`unknown mode ${job.mode}`);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  await browser.close();
}
