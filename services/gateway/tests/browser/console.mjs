// The web console in Chromium, as a person uses it. Run by tests/it/console.rs, which starts
// the stack and passes everything through CONSOLE_* variables; exits non-zero on the first
// failed check. Every page is saved as a screenshot under CONSOLE_SCREENSHOTS.

import { execFileSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import assert from 'node:assert/strict';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const require = createRequire(join(env('HAVEN_PLAYWRIGHT_CORE'), 'package.json'));
const { chromium } = require(env('HAVEN_PLAYWRIGHT_CORE'));

const base = env('CONSOLE_BASE');
const token = env('CONSOLE_TOKEN');
const orders = Number(env('CONSOLE_ORDERS'));
const shots = env('CONSOLE_SCREENSHOTS');
const downloads = env('CONSOLE_DOWNLOADS');
const retryId = env('CONSOLE_RETRY_ID');
// Only this run's pictures, so a stale failure.png never misleads.
rmSync(shots, { recursive: true, force: true });
mkdirSync(shots, { recursive: true });

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...args) => console.log('[console]', ...args);
const shot = (page, name) => page.screenshot({ path: join(shots, `${name}.png`), fullPage: true });

/** The export's COPY queries running in this test's database. */
function runningCopies() {
  const sql = `SELECT count(*) FROM pg_stat_activity
     WHERE datname = current_database() AND pid <> pg_backend_pid()
       AND state = 'active' AND query ILIKE '%COPY%TO STDOUT%'`;
  return Number(execFileSync('psql', [env('CONSOLE_DATABASE_URL'), '-Atc', sql]).toString().trim());
}

async function until(what, check, ms = 15000) {
  const end = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** Chromium's own bandwidth limit, so a download takes long enough to watch and cancel. */
async function throttle(page, bytesPerSecond) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Network.enable');
  await cdp.send('Network.emulateNetworkConditions', {
    offline: false,
    latency: 0,
    downloadThroughput: bytesPerSecond,
    uploadThroughput: -1,
  });
  return cdp;
}

const browser = await chromium.launch({
  executablePath: env('HAVEN_CHROMIUM'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
const page = await context.newPage();
const failures = [];
page.on('pageerror', (e) => failures.push(`page error: ${e.message}`));
page.on('console', (m) => { if (m.type() === 'error') log('browser console:', m.text()); });
page.on('response', (r) => { if (r.status() >= 400) log(`${r.status()} from ${r.request().method()} ${r.url().replace(/sig=[0-9a-f]+/, 'sig=…')}`); });

try {
  // ---------------------------------------------------------------- sign-in
  log('an expired token shows the sign-in with the reason');
  await page.goto(`${base}/console/#token=${encodeURIComponent(env('CONSOLE_EXPIRED_TOKEN'))}`);
  await page.getByRole('heading', { name: 'Sign in', exact: true }).waitFor();
  await until('the reason', async () => (await page.getByRole('alert').allTextContents()).join(' ').includes('expired'));
  assert.ok(!page.url().includes('token='), 'the token left the address bar');
  await shot(page, 'sign-in');

  log('a pasted token signs in');
  await page.getByLabel('Access token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Exports', exact: true }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('haven.token')), token);

  // ---------------------------------------------------------------- exports
  log('the catalogue as cards, the form pre-filled');
  await page.getByRole('button', { name: /^Orders/ }).click();
  await page.getByRole('heading', { name: 'Export Orders' }).waitFor();
  assert.equal(await page.getByLabel('Format').inputValue(), 'csv');
  assert.match(await page.getByLabel('From', { exact: true }).inputValue(), /^\d{4}-\d{2}-\d{2}$/);
  assert.ok((await page.getByText('(default)').count()) > 0, 'default fields are marked');
  await page.getByRole('button', { name: 'Select all' }).click();
  await page.getByRole('button', { name: 'Default only' }).click();

  log(`a ${orders}-row CSV download with a moving progress bar`);
  let cdp = await throttle(page, 4 * 1024 * 1024);
  const seen = new Set();
  const downloadStarted = page.waitForEvent('download', { timeout: 120000 });
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  const progress = page.getByRole('progressbar', { name: 'Export progress' });
  const watching = (async () => {
    for (let i = 0; i < 600; i++) {
      const value = await progress.evaluate((p) => p.value).catch(() => null);
      if (value !== null && value > 0) seen.add(value);
      await sleep(50);
      if (seen.size >= 3) break;
    }
  })();
  const download = await downloadStarted;
  await watching;
  assert.ok(seen.size >= 2, `the progress bar moved (${[...seen].join(', ')})`);
  assert.match(download.suggestedFilename(), /^orders.*\.csv$/);
  await download.saveAs(join(downloads, 'orders.csv'));
  const summary = `Exported ${orders.toLocaleString('en-US')} records to ${download.suggestedFilename()}`;
  await page.getByText(summary).waitFor();
  await page.getByRole('table', { name: 'Recent exports' }).getByText('completed').first().waitFor();
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });
  await shot(page, 'exports');

  log('Cancel mid-download stops the query');
  cdp = await throttle(page, 64 * 1024);
  await page.getByLabel('Format').selectOption('json');
  await page.getByRole('button', { name: 'Export', exact: true }).click();
  await until('rows arriving', async () => (await progress.evaluate((p) => p.value).catch(() => 0)) > 0, 30000);
  assert.ok(runningCopies() >= 1, 'the export query runs while the download does');
  await page.getByRole('button', { name: 'Cancel', exact: true }).click();
  await page.getByText('Export cancelled').waitFor();
  await until('the export query to end', () => runningCopies() === 0, 20000);
  await cdp.send('Network.emulateNetworkConditions', { offline: false, latency: 0, downloadThroughput: -1, uploadThroughput: -1 });

  // ---------------------------------------------------------------- error queue
  log('an item retried from the error queue');
  await page.getByRole('link', { name: 'Error queue' }).click();
  await page.getByRole('heading', { name: 'Error queue', exact: true }).waitFor();
  const table = page.getByRole('table', { name: 'Retry items' });
  await table.getByText('shopify.sync_product').waitFor();
  const short = retryId.slice(-8);
  await page.getByRole('button', { name: `Details shopify.sync_product ${short}` }).click();
  await page.getByRole('table', { name: 'Attempts of shopify.sync_product' }).waitFor();
  await shot(page, 'error-queue');
  const updated = await page.getByText(/^Updated /).textContent();
  await page.getByRole('button', { name: `Retry shopify.sync_product ${short}` }).click();
  await page.getByText('Retried shopify.sync_product').waitFor();
  const item = await page.evaluate(async ({ id, t }) => {
    const res = await fetch(`/api/errors/${id}`, { headers: { Authorization: `Bearer ${t}` } });
    return res.json();
  }, { id: retryId, t: token });
  assert.ok(item.status !== 'pending' || Date.parse(item.next_retry_at) <= Date.now() + 1000,
    `the item is due now: ${JSON.stringify(item)}`);
  await until('the list to refresh itself', async () => (await page.getByText(/^Updated /).textContent()) !== updated, 12000);

  // ---------------------------------------------------------------- integrations
  log('a wrong Klaviyo key refused with the reason, the right one connected');
  await page.getByRole('link', { name: 'Integrations' }).click();
  await page.getByRole('heading', { name: 'Integrations', exact: true }).waitFor();
  await page.getByLabel('Klaviyo API key').fill('pk_wrong_key');
  await page.getByRole('button', { name: 'Connect Klaviyo', exact: true }).click();
  const klaviyo = page.getByRole('article', { name: 'Klaviyo' });
  await until('the refusal', async () => {
    const text = (await klaviyo.getByRole('alert').allTextContents()).join(' ');
    return text.includes('Incorrect authentication credentials') && !text.includes('[object');
  });
  await page.getByLabel('Klaviyo API key').fill(env('CONSOLE_KLAVIYO_KEY'));
  await page.getByRole('button', { name: 'Connect Klaviyo', exact: true }).click();
  await page.getByText('Klaviyo connected').waitFor();
  await page.getByRole('button', { name: 'Disconnect Klaviyo', exact: true }).waitFor();

  log('a setup step skipped');
  const skip = page.getByRole('button', { name: /^Skip / }).first();
  const step = (await skip.getAttribute('aria-label')).replace(/^Skip /, '');
  await skip.click();
  await page.getByText(`${step} skipped`).waitFor();
  await page.getByRole('button', { name: `Reset ${step}` }).waitFor();
  // The bar counts the steps done or skipped (Klaviyo's connection completed its own).
  const done = await page.getByRole('button', { name: /^Reset / }).count();
  assert.ok(done >= 2, `${done} steps done`);
  assert.equal(await page.getByRole('progressbar', { name: 'Setup progress' }).evaluate((p) => p.value), done);

  log('Shopify connected through the real OAuth redirects');
  await page.getByLabel('Shop domain').fill(env('CONSOLE_SHOP'));
  await page.getByRole('button', { name: 'Connect Shopify', exact: true }).click();
  await page.waitForURL(`${base}/console/#integrations`, { timeout: 30000 });
  await page.getByText('Shopify connected').waitFor();
  await page.getByRole('button', { name: 'Disconnect Shopify', exact: true }).waitFor();
  await shot(page, 'integrations');

  // ---------------------------------------------------------------- schedules
  log('a schedule refused for a bad address, then created, paused, resumed and edited');
  await page.getByRole('link', { name: 'Schedules' }).click();
  await page.getByRole('heading', { name: 'Schedules', exact: true }).waitFor();
  await page.getByRole('heading', { name: 'New schedule' }).waitFor();
  await page.getByLabel('Export type').selectOption('orders');
  await page.getByLabel('Email', { exact: true }).check();
  await page.getByLabel('Email address').fill('not-an-address');
  await page.getByRole('button', { name: 'Create schedule' }).click();
  await until('the refusal naming the address', async () =>
    (await page.getByRole('alert').allTextContents()).join(' ').includes('delivery_email: must be an email address'));
  assert.equal(await page.getByLabel('Email address').getAttribute('aria-invalid'), 'true');
  assert.ok(await page.getByLabel('Email address').evaluate((el) => el === document.activeElement), 'focus moved to the address');

  await page.getByLabel('Stored file with a download link').check();
  assert.ok(await page.getByLabel('Email address').isHidden(), 'no address for a stored file');
  await page.getByLabel('Frequency').selectOption('weekly');
  await page.getByLabel('Weekday').selectOption('1');
  await page.getByLabel('Time', { exact: true }).fill('08:00');
  await page.getByLabel('Time zone').fill('Europe/Paris');
  await page.getByRole('button', { name: 'Create schedule' }).click();
  await page.getByText(/^Created schedule for Orders, next run /).waitFor();
  const schedules = page.getByRole('table', { name: 'Schedules' });
  await schedules.getByText('Weekly, Monday at 08:00 (Europe/Paris)').waitFor();
  const scheduleName = (await page.getByRole('button', { name: /^Pause Orders / }).getAttribute('aria-label')).replace(/^Pause /, '');
  await page.getByRole('button', { name: `Pause ${scheduleName}` }).click();
  await page.getByText('Paused Orders').waitFor();
  await schedules.getByText('paused', { exact: true }).waitFor();
  await page.getByRole('button', { name: `Resume ${scheduleName}` }).click();
  await page.getByText('Resumed Orders').waitFor();
  await schedules.getByText('active', { exact: true }).waitFor();

  await page.getByRole('button', { name: `Edit ${scheduleName}` }).click();
  await page.getByRole('heading', { name: 'Edit schedule: Orders' }).waitFor();
  assert.equal(await page.getByLabel('Time zone').inputValue(), 'Europe/Paris');
  await page.getByLabel('Frequency').selectOption('monthly');
  await page.getByLabel('Day of month').fill('31');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.getByText(/^Saved schedule for Orders, next run /).waitFor();
  await schedules.getByText('Monthly, day 31 at 08:00 (Europe/Paris)').waitFor();
  await page.getByRole('heading', { name: 'New schedule' }).waitFor();

  log('a due slot runs, and its stored file downloads through the signed link');
  execFileSync('psql', [env('CONSOLE_DATABASE_URL'), '-Atc',
    "UPDATE exports.scheduled_exports SET next_run_at = now() - interval '1 second'"]);
  await page.getByRole('button', { name: `Runs ${scheduleName}` }).click();
  const runs = page.getByRole('table', { name: `Runs of ${scheduleName}` });
  await runs.getByText('delivered', { exact: true }).waitFor({ timeout: 30000 });
  const link = runs.getByRole('link', { name: /^Download the run of / });
  const href = await link.getAttribute('href');
  assert.ok(href.startsWith(`${base}/api/objects/scheduled-exports/`), href);
  assert.match(href, /\.csv\?expires=\d+&sig=[0-9a-f]+$/);
  await shot(page, 'schedules');
  const scheduled = page.waitForEvent('download', { timeout: 30000 });
  await link.click();
  const file = await scheduled;
  await file.saveAs(join(downloads, 'scheduled.csv'));

  log('a schedule deleted after a confirmation');
  await page.getByRole('button', { name: `Delete ${scheduleName}` }).click();
  await page.getByRole('button', { name: `Keep ${scheduleName}` }).click();
  await page.getByRole('button', { name: `Delete ${scheduleName}` }).click();
  await page.getByRole('button', { name: `Confirm delete ${scheduleName}` }).click();
  await page.getByText('Deleted the Orders schedule').waitFor();
  await page.getByText('No schedules yet.').waitFor();

  log('readable on a phone');
  await page.setViewportSize({ width: 375, height: 800 });
  for (const route of ['integrations', 'schedules', 'errors', 'exports']) {
    await page.goto(`${base}/console/#${route}`);
    await page.getByRole('heading', { level: 1 }).waitFor();
    await sleep(300);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `#${route} scrolls sideways on a phone by ${overflow}px`);
    await shot(page, `${route}-phone`);
  }
  await page.setViewportSize({ width: 1280, height: 900 });

  log('every control has a name');
  const unnamed = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => !el.labels?.length && !el.getAttribute('aria-label') && !el.textContent.trim())
    .map((el) => el.outerHTML));
  assert.deepEqual(unnamed, []);

  // ---------------------------------------------------------------- other origins
  log('a listed origin may call the API and read Content-Disposition; another may not');
  const call = async (origin) => {
    const other = await context.newPage();
    await other.goto(origin);
    const result = await other.evaluate(async ({ url, t }) => {
      try {
        const res = await fetch(url, { headers: { Authorization: `Bearer ${t}` } });
        await res.text();
        return { status: res.status, disposition: res.headers.get('Content-Disposition'), id: res.headers.get('X-Export-Id') };
      } catch (e) {
        return { blocked: String(e) };
      }
    }, { url: `${base}/api/export?type=orders&limit=3`, t: token });
    await other.close();
    return result;
  };
  const allowed = await call(env('CONSOLE_ALLOWED_ORIGIN'));
  assert.equal(allowed.status, 200, JSON.stringify(allowed));
  assert.match(allowed.disposition ?? '', /^attachment; filename="orders.*\.csv"$/);
  assert.ok(allowed.id, 'X-Export-Id is readable');
  const refused = await call(env('CONSOLE_REFUSED_ORIGIN'));
  assert.ok(refused.blocked, `an unlisted origin was let through: ${JSON.stringify(refused)}`);

  // ---------------------------------------------------------------- API docs
  log('the API documentation renders from vendored files');
  await page.goto(`${base}/api/docs`);
  await page.getByText('Haven gateway').first().waitFor({ timeout: 20000 });
  await page.getByText('/api/export/history/{export_id}').first().waitFor();
  await shot(page, 'api-docs');

  assert.deepEqual(failures, []);
  log('all checks passed');
} catch (e) {
  await shot(page, 'failure').catch(() => {});
  console.error('[console] FAILED:', e);
  process.exitCode = 1;
} finally {
  await browser.close();
}
