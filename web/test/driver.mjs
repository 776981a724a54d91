// The browser tests' hands: headless Debian Chromium driven by Playwright, one JSON command per line on stdin,
// one JSON answer per line on stdout. The Rust tests (tests/ui.rs) run this inside a LAN namespace of a lab
// and do everything else (the gateway, restarts, traffic) themselves.
//   {"op":"goto","url":...}   {"op":"eval","js":"() => ..."}   {"op":"wait","js":"() => ...","timeout_ms":N}
//   {"op":"fill","selector","text"}   {"op":"click","selector"}   {"op":"press","selector","key"}
//   {"op":"screenshot","path","full":bool}   {"op":"theme","dark":bool}   {"op":"viewport","width","height"}
//   {"op":"close"}
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const browser = await chromium.launchPersistentContext(mkdtempSync(join(tmpdir(), 'gk-chromium-')), {
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  viewport: { width: 1280, height: 800 },
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
const page = browser.pages()[0] ?? await browser.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
page.on('dialog', (d) => d.accept());

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  let cmd;
  let answer;
  try {
    cmd = JSON.parse(line);
    switch (cmd.op) {
      case 'goto': await page.goto(cmd.url, { waitUntil: 'load' }); answer = { url: page.url() }; break;
      case 'eval': answer = { value: await page.evaluate(`(${cmd.js})()`) }; break;
      case 'wait': {
        // Polled from outside with evaluate (waitForFunction evals in the page, which our CSP forbids).
        const end = Date.now() + (cmd.timeout_ms ?? 10000);
        let value;
        for (;;) {
          try { value = await page.evaluate(`(${cmd.js})()`); } catch (e) { value = undefined; }
          if (value) break;
          if (Date.now() > end) throw new Error(`timed out waiting for ${cmd.js}`);
          await new Promise((r) => setTimeout(r, 20));
        }
        answer = { value };
        break;
      }
      case 'fill': await page.fill(cmd.selector, cmd.text); answer = {}; break;
      case 'click': await page.click(cmd.selector); answer = {}; break;
      case 'press': await page.press(cmd.selector, cmd.key); answer = {}; break;
      case 'screenshot': await page.screenshot({ path: cmd.path, fullPage: !!cmd.full }); answer = {}; break;
      case 'theme': await page.emulateMedia({ colorScheme: cmd.dark ? 'dark' : 'light' }); answer = {}; break;
      case 'viewport': await page.setViewportSize({ width: cmd.width, height: cmd.height }); answer = {}; break;
      case 'problems': answer = { value: problems.splice(0) }; break;
      case 'close': await browser.close(); process.stdout.write(JSON.stringify({ ok: true }) + '\n'); process.exit(0);
      default: throw new Error(`unknown op ${cmd.op}`);
    }
    answer.ok = true;
  } catch (e) {
    answer = { ok: false, error: String(e && e.message || e) };
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}
await browser.close();
