// The web client in real Chromium (Debian's, driven by playwright-core), against a real relay, beside a real CLI
// user. Run by host/cli/tests/it/web.rs, which starts the relay, registers the CLI user and checks the relay's data
// dir for the canary afterwards. Environment: IMFREE_URL (https://127.0.0.1:PORT), IMFREE_BIN, CLI_HOME (the CLI
// user `carol`), SHOTS (where screenshots go), CANARY. Prints one JSON line with the measured timings; exits
// non-zero with the reason when any step fails.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const URL = process.env.IMFREE_URL;
const BIN = process.env.IMFREE_BIN;
const CLI_HOME = process.env.CLI_HOME;
const SHOTS = process.env.SHOTS;
const CANARY = process.env.CANARY;
const WAIT = { timeout: 120_000 };
mkdirSync(SHOTS, { recursive: true });

const timings = {};
const pages = []; // every page, for the failure report
const step = (name) => process.stderr.write(`-- ${name}\n`);

function cli(...args) {
  return execFileSync(BIN, ['client', '--home', CLI_HOME, ...args], { env: { ...process.env, IMFREE_LOG: 'warn' } }).toString();
}

async function shot(page, name) {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

async function open(browser, viewport) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport });
  const page = await context.newPage();
  pages.push(page);
  page.on('pageerror', (e) => process.stderr.write(`page error: ${e}\n`));
  page.on('console', (m) => { if (m.type() === 'error') process.stderr.write(`console: ${m.text()}\n`); });
  const started = Date.now();
  await page.goto(URL);
  await page.waitForFunction(() => window.imfree && window.imfree.ready, null, WAIT);
  return { context, page, loadMs: Date.now() - started };
}

async function register(page, user, password) {
  await page.fill('#register-user', user);
  await page.fill('#register-password', password);
  const started = Date.now();
  await page.click('#register-form button[type=submit]');
  await page.waitForSelector('#chat:not([hidden])', WAIT);
  await page.waitForSelector('#connection:text("connected")', WAIT);
  return Date.now() - started;
}

async function openConversation(page, peer) {
  await page.fill('#new-peer', peer);
  await page.click('#new-form button[type=submit]');
  await page.waitForSelector(`#peer:text-is("${peer}")`, WAIT);
}

async function send(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

const message = (page, text) => page.locator('#messages li.message', { hasText: text });

async function main() {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--ignore-certificate-errors'],
  });
  try {
    step('two browsers open the page');
    const a = await open(browser, { width: 1100, height: 760 });
    const b = await open(browser, { width: 390, height: 800 }); // a phone
    timings.page_ready_ms = a.loadMs;
    await shot(a.page, '01-register');

    step('both register (each browser becomes its user\'s first device)');
    timings.register_ms = await register(a.page, 'alice', 'alice-password-1');
    await register(b.page, 'bob', 'bob-password-12');

    step('alice writes to bob; bob reads it');
    await openConversation(a.page, 'bob');
    const first = `Hello **bob** ${CANARY}-first`;
    const sentAt = Date.now();
    await send(a.page, first);
    await b.page.waitForSelector('#conversations li[data-peer="alice"]', WAIT);
    timings.first_message_ms = Date.now() - sentAt;
    await b.page.waitForSelector('#conversations li[data-peer="alice"] .unread', WAIT);
    await b.page.click('#conversations li[data-peer="alice"]');
    await message(b.page, `${CANARY}-first`).waitFor(WAIT);
    const bold = await message(b.page, `${CANARY}-first`).locator('.body strong').textContent();
    if (bold !== 'bob') throw new Error(`Markdown not rendered: ${bold}`);
    await message(a.page, `${CANARY}-first`).locator('.status:text-is("✓✓ read")').waitFor(WAIT);

    step('bob reacts; alice sees the reaction');
    await message(b.page, `${CANARY}-first`).locator('button[aria-label=React]').click();
    await b.page.click('#emoji-picker button[aria-label="React with 🎉"]');
    await message(a.page, `${CANARY}-first`).locator('.reactions button:text("🎉 1")').waitFor(WAIT);

    step('alice edits; bob sees the new text');
    a.page.once('dialog', (d) => d.accept(`Edited for bob ${CANARY}-edited`));
    await message(a.page, `${CANARY}-first`).locator('button[aria-label=Edit]').click();
    await message(b.page, `${CANARY}-edited`).locator('.meta', { hasText: 'edited' }).waitFor(WAIT);
    if (await message(b.page, `${CANARY}-first`).count() !== 0) throw new Error('the old text is still shown');

    step('bob replies; alice sees the reply with its quote');
    await b.page.click('#messages li.message button[aria-label=Reply]');
    await send(b.page, `Got it ${CANARY}-reply`);
    await message(a.page, `${CANARY}-reply`).locator('.quote').waitFor(WAIT);

    step('alice deletes a message; bob sees it deleted');
    await send(a.page, `Oops ${CANARY}-oops`);
    await message(b.page, `${CANARY}-oops`).waitFor(WAIT);
    a.page.once('dialog', (d) => d.accept());
    await message(a.page, `${CANARY}-oops`).locator('button[aria-label=Delete]').click();
    await b.page.locator('#messages li.message .deleted').waitFor(WAIT);
    if (await message(b.page, `${CANARY}-oops`).count() !== 0) throw new Error('the deleted text is still shown');
    await shot(a.page, '02-conversation');
    await shot(b.page, '03-conversation-phone');

    step('bob searches his messages');
    await b.page.click('#back');
    await b.page.fill('#search', 'edited bob');
    await b.page.click('#search-form button[type=submit]');
    await b.page.locator('#results li', { hasText: `${CANARY}-edited` }).waitFor(WAIT);
    await shot(b.page, '04-search-phone');
    await b.page.fill('#search', '');
    await b.page.dispatchEvent('#search', 'input');

    step('bob reloads: unlock with the password, the history is still there');
    await b.page.reload();
    await b.page.waitForSelector('#unlock-form:not([hidden])', WAIT);
    await shot(b.page, '05-unlock-phone');
    await b.page.fill('#unlock-password', 'bob-password-12');
    await b.page.click('#unlock-form button[type=submit]');
    await b.page.waitForSelector('#conversations li[data-peer="alice"]', WAIT);
    await b.page.click('#conversations li[data-peer="alice"]');
    await message(b.page, `${CANARY}-edited`).locator('.reactions button:text("🎉 1")').waitFor(WAIT);
    await message(b.page, `${CANARY}-reply`).waitFor(WAIT);
    step('bob, reloaded, sees alice typing, then still sends and receives');
    await a.page.fill('#text', 'typing');
    await a.page.dispatchEvent('#text', 'input');
    await b.page.waitForSelector('#typing:text("alice is typing")', WAIT);
    await a.page.fill('#text', '');
    await send(b.page, `Back again ${CANARY}-back`);
    await message(a.page, `${CANARY}-back`).waitFor(WAIT);

    step('a CLI user and a browser user, both ways');
    cli('send', 'alice', `Hi alice, carol here on the CLI ${CANARY}-cli`);
    await a.page.waitForSelector('#conversations li[data-peer="carol"]', WAIT);
    await a.page.click('#conversations li[data-peer="carol"]');
    await message(a.page, `${CANARY}-cli`).waitFor(WAIT);
    await send(a.page, `Hi carol, from the browser ${CANARY}-web`);
    await message(a.page, `${CANARY}-web`).locator('.status:text("✓")').waitFor(WAIT);
    let received = '';
    for (let i = 0; i < 60 && !received.includes(`${CANARY}-web`); i++) {
      received += cli('recv');
      if (!received.includes(`${CANARY}-web`)) await new Promise((r) => setTimeout(r, 1000));
    }
    if (!received.includes(`${CANARY}-web`)) throw new Error(`carol did not receive the browser's message: ${received}`);
    await shot(a.page, '06-cli-conversation');

    step('safety numbers agree between the two browsers');
    await a.page.click('#conversations li[data-peer="bob"]');
    await a.page.click('#verify');
    await b.page.click('#verify');
    const number = async (page) => (await page.locator('#safety').textContent()).split('\n')[1];
    await a.page.waitForSelector('#safety:not([hidden])', WAIT);
    await b.page.waitForSelector('#safety:not([hidden])', WAIT);
    const [na, nb] = [await number(a.page), await number(b.page)];
    if (!/^[0-9 ]{60,}$/.test(na) || na !== nb) throw new Error(`safety numbers differ: ${na} / ${nb}`);
    await shot(a.page, '07-safety-number');

    process.stdout.write(`${JSON.stringify({ ok: true, timings })}\n`);
  } catch (e) {
    // What each page showed when the step failed: its status line and a screenshot.
    for (const [i, page] of pages.entries()) {
      const status = await page.locator('#connection').textContent().catch(() => '?');
      process.stderr.write(`page ${i}: status "${status}"\n`);
      await shot(page, `failure-page-${i}`).catch(() => {});
    }
    throw e;
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
