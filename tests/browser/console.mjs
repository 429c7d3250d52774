// Opens the operator console (/ui) of a running service in Debian's headless Chromium and
// checks what it shows against the service's JSON endpoints read at the same time.
// Started by scripts/browser-test.sh, which starts the service and creates the waybills.
//
//   BASE=http://127.0.0.1:PORT EXPECT_WAYBILLS='{"issued":1,...}' OUT=target node console.mjs
//
// Env: BASE (the service), EXPECT_WAYBILLS (today's waybills by status, as created),
// OUT (where the screenshots go; default ../../target), CHROMIUM (default
// /usr/bin/chromium), TIMEOUT_S (the whole run; default 120).
// Prints one line per check and closes with `browser: N passed, M failed`; exits 1 on
// any failed check, and on a time-out.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.BASE || '').replace(/\/$/, '');
const OUT = resolve(process.env.OUT || new URL('../../target', import.meta.url).pathname);
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT_S = Number(process.env.TIMEOUT_S || 120);
const EXPECT_WAYBILLS = JSON.parse(process.env.EXPECT_WAYBILLS || 'null');
// Seconds between the page's updates during the test (its default is 5).
const EVERY = 2;

if (!BASE) {
  console.error('BASE is not set (the service, e.g. http://127.0.0.1:8000)');
  process.exit(2);
}

let passed = 0;
let failed = 0;
function check(name, ok, detail = '') {
  if (ok) passed += 1; else failed += 1;
  // The details only for a failure: what the page showed against what the JSON said.
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${!ok && detail ? `: ${detail}` : ''}`);
  return ok;
}
function finish(extra) {
  if (extra) console.log(extra);
  console.log(`browser: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

// The whole run is bounded: whatever hangs, it ends.
const deadline = setTimeout(() => {
  failed += 1;
  finish(`FAIL the run took longer than ${TIMEOUT_S} s`);
}, TIMEOUT_S * 1000);
deadline.unref();

async function json(path) {
  const res = await fetch(BASE + path, { headers: { accept: 'application/json' } });
  if (!res.ok) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return res.json();
}

const origin = new URL(BASE).origin;
const profile = mkdtempSync(join(tmpdir(), 'console-browser-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      // The network cut, in the browser: no host name resolves but the service's.
      `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${new URL(BASE).hostname}`,
    ],
    viewport: { width: 1280, height: 900 },
    timeout: 30_000,
  });
} catch (e) {
  check('chromium starts', false, e.message.split('\n')[0]);
  rmSync(profile, { recursive: true, force: true });
  finish();
}

let outcome;
try {
  outcome = await run(context);
} catch (e) {
  check('the run went to its end', false, e.stack || String(e));
} finally {
  await context.close().catch(() => {});
  rmSync(profile, { recursive: true, force: true });
}
finish(outcome);

async function run(context) {
  // Every request the page makes is recorded; one to any other origin is cut (aborted)
  // as the network would be, and fails the check below.
  const requests = [];
  const elsewhere = [];
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (new URL(url).origin === origin) return route.continue();
    elsewhere.push(url);
    return route.abort('internetdisconnected');
  });
  const page = context.pages()[0] || await context.newPage();
  page.on('request', (r) => requests.push(r.url()));
  const problems = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(e.message));

  const response = await page.goto(`${BASE}/ui?every=${EVERY}`, { waitUntil: 'load' });
  const headers = response.headers();
  check('GET /ui answers 200 with a content security policy',
    response.status() === 200 &&
      (headers['content-security-policy'] || '').startsWith("default-src 'self'"),
    `${response.status()} ${headers['content-security-policy']}`);

  // The first full update, then the JSON at the same time.
  await page.waitForFunction(() => Number(document.body.dataset.updates || 0) >= 1,
    null, { timeout: 30_000 });
  const shown = await readPage(page);
  const [instances, feeds, memory] = await Promise.all([
    json('/instances'), json('/feeds'), json('/memory-stats'),
  ]);
  check('the page says it is live', shown.state === 'live',
    `${shown.state} ${shown.problem || ''}`);

  // Instances: same names and breaker states; counters present and not ahead of the JSON
  // read after them (they only grow).
  const names = instances.instances.map((i) => i.name);
  check('instances: the names of /instances', same(shown.instances.map((i) => i.name), names),
    `${JSON.stringify(shown.instances.map((i) => i.name))} vs ${JSON.stringify(names)}`);
  let ok = instances.instances.length > 0;
  const why = [];
  for (const want of instances.instances) {
    const got = shown.instances.find((i) => i.name === want.name);
    const http = want.http;
    const fine = got &&
      got.breaker === http.breaker.state &&
      isCount(got.connections) && got.connections <= http.connections_opened &&
      isCount(got.requests) && got.requests <= http.requests_sent &&
      typeof got.reuse === 'number' && got.reuse >= 0 && got.reuse <= 1 &&
      got.lastRefresh === (want.status.last_finished_at || '') &&
      got.lastError === (want.status.last_error || '');
    if (!fine) why.push(`${want.name}: page ${JSON.stringify(got)} vs ${JSON.stringify({ http, status: want.status })}`);
    ok = ok && Boolean(fine);
  }
  check('instances: breaker state, connections, requests, reuse, last refresh and error', ok,
    why.join('; '));

  // Feeds: version, counts, age, and the chart of the fetch history.
  ok = same(shown.feeds.map((f) => f.id), feeds.feeds.map((f) => f.gtfs_id));
  why.length = 0;
  for (const want of feeds.feeds) {
    const got = shown.feeds.find((f) => f.id === want.gtfs_id);
    const history = await json(`/feeds/${encodeURIComponent(want.gtfs_id)}/fetches?limit=30`);
    const counts = want.counts || {};
    const fine = got &&
      got.version === (want.version || '') &&
      (want.version ? want.version.startsWith(got.versionText) : true) &&
      got.instance === want.instance &&
      ['routes', 'trips', 'stops', 'agencies'].every((k) =>
        counts[k] === undefined || got.counts[k] === counts[k]) &&
      got.fetchedAt === (want.fetched_at || '') &&
      got.ageText.length > 0 &&
      got.chart.count === history.fetches.length && got.chart.bars === history.fetches.length &&
      (history.fetches.length >= 1 || !want.last_attempt_at);
    if (!fine) why.push(`${want.gtfs_id}: page ${JSON.stringify(got)} vs ${JSON.stringify(want)} (${history.fetches.length} fetches)`);
    ok = ok && Boolean(fine);
  }
  check('feeds: version, instance, route/trip/stop counts, age, fetch chart', ok && feeds.feeds.length > 0,
    why.join('; '));

  // Route cache and pool: bounds and settings exactly; what moves, present and plausible.
  const cache = memory.route_cache;
  const pool = memory.database_pool;
  const m = shown.memory;
  check('route cache: entries, bytes, hit ratio',
    m.cacheMax === cache.max_bytes && isCount(m.cacheEntries) && isCount(m.cacheBytes) &&
      m.cacheBytes <= cache.max_bytes && typeof m.cacheRatio === 'number' &&
      m.cacheRatio >= 0 && m.cacheRatio <= 1 && m.cacheHits <= cache.hits &&
      m.cacheMisses <= cache.misses && /%$/.test(m.cacheRatioText),
    JSON.stringify({ page: m, json: cache }));
  check('database pool: size, idle, min, max',
    m.poolMax === pool.max && m.poolMin === pool.min && isCount(m.poolSize) &&
      m.poolSize <= pool.max && isCount(m.poolIdle) && m.poolIdle <= m.poolSize,
    JSON.stringify({ page: m, json: pool }));

  // Today's waybills: as created, and as the list answers.
  const date = shown.waybillsDate;
  const listed = await json(`/waybills?service_date=${date}&limit=1000`);
  const byStatus = { issued: 0, in_progress: 0, completed: 0, cancelled: 0 };
  for (const w of listed.waybills) byStatus[w.status] += 1;
  check('waybills: today\'s by status, as /waybills lists them',
    same(shown.waybills, byStatus) &&
      (EXPECT_WAYBILLS === null || same(byStatus, EXPECT_WAYBILLS)),
    `page ${JSON.stringify(shown.waybills)} on ${date}; /waybills ${JSON.stringify(byStatus)}; ` +
      `created ${JSON.stringify(EXPECT_WAYBILLS)}`);

  // It updates itself.
  const before = await page.evaluate(() => Number(document.body.dataset.updates));
  await page.waitForFunction((n) => Number(document.body.dataset.updates) > n, before,
    { timeout: EVERY * 3000 + 5000 }).then(() => true, () => false)
    .then((moved) => check(`the page updates itself (every ${EVERY} s here)`, moved));

  // Offline: every request went to the service; none elsewhere; no error in the console
  // (a blocked script, style or font would show there).
  const foreign = requests.filter((u) => new URL(u).origin !== origin);
  check('every request went to the service itself (network cut)',
    requests.length >= 4 && foreign.length === 0 && elsewhere.length === 0,
    `${requests.length} requests; elsewhere: ${JSON.stringify([...foreign, ...elsewhere])}`);
  check('no error in the browser console', problems.length === 0, JSON.stringify(problems));

  // Screenshots: desktop, then a phone, which must not scroll sideways.
  await page.screenshot({ path: join(OUT, 'console.png'), fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(300);
  const overflow = await page.evaluate(() =>
    document.documentElement.scrollWidth - window.innerWidth);
  check('on a phone (390x844) nothing runs off the side', overflow <= 0, `${overflow} px too wide`);
  await page.screenshot({ path: join(OUT, 'console-phone.png'), fullPage: true });

  // The API explorer (/docs), with the same network cut: Swagger UI from the binary
  // renders every operation of /openapi.json, and asks nothing of any other site.
  const docs = await context.newPage();
  const docsRequests = [];
  const docsProblems = [];
  docs.on('request', (r) => docsRequests.push(r.url()));
  docs.on('pageerror', (e) => docsProblems.push(e.message));
  const spec = await json('/openapi.json');
  const operations = Object.values(spec.paths)
    .reduce((n, item) => n + Object.keys(item).filter((k) => k !== 'parameters').length, 0);
  await docs.goto(`${BASE}/docs`, { waitUntil: 'load' });
  const rendered = await docs.waitForFunction((n) => document.querySelectorAll('.opblock').length >= n,
    operations, { timeout: 20_000 }).then(() => true, () => false);
  const docsForeign = docsRequests.filter((u) => new URL(u).origin !== origin);
  check('the API explorer renders every operation with the network cut',
    rendered && docsForeign.length === 0 && docsProblems.length === 0,
    `${operations} operations in /openapi.json, ${await docs.locator('.opblock').count()} shown; ` +
    `elsewhere: ${JSON.stringify(docsForeign)}; errors: ${JSON.stringify(docsProblems)}`);
  await docs.screenshot({ path: join(OUT, 'docs.png') });
  await docs.close();
  return `screenshots: ${join(OUT, 'console.png')}, ${join(OUT, 'console-phone.png')}, ${join(OUT, 'docs.png')}`;
}

// What the page shows, by data-testid: raw values (data-value) and some texts.
async function readPage(page) {
  return page.evaluate(() => {
    const at = (root, id) => root.querySelector(`[data-testid="${id}"]`);
    const raw = (root, id) => {
      const el = at(root, id);
      return el ? el.getAttribute('data-value') : null;
    };
    const num = (root, id) => {
      const v = raw(root, id);
      return v === null || v === '' ? null : Number(v);
    };
    const statuses = ['issued', 'in_progress', 'completed', 'cancelled'];
    return {
      state: document.getElementById('state').dataset.state,
      problem: document.getElementById('problem').textContent,
      instances: [...document.querySelectorAll('[data-testid="instance"]')].map((c) => ({
        name: raw(c, 'instance-name'),
        breaker: raw(c, 'instance-breaker'),
        breakerText: at(c, 'instance-breaker').textContent,
        connections: num(c, 'instance-connections'),
        requests: num(c, 'instance-requests'),
        reuse: num(c, 'instance-reuse'),
        lastRefresh: raw(c, 'instance-last-refresh'),
        lastError: raw(c, 'instance-last-error'),
      })),
      feeds: [...document.querySelectorAll('[data-testid="feed"]')].map((c) => {
        const chart = at(c, 'feed-fetches');
        return {
          id: raw(c, 'feed-id'),
          instance: raw(c, 'feed-instance'),
          version: raw(c, 'feed-version'),
          versionText: at(c, 'feed-version').textContent,
          fetchedAt: raw(c, 'feed-age'),
          ageText: at(c, 'feed-age').textContent,
          counts: Object.fromEntries(['routes', 'trips', 'stops', 'agencies']
            .map((k) => [k, num(c, `feed-count-${k}`)])
            .filter(([, v]) => v !== null)),
          chart: {
            count: Number(chart.dataset.count),
            bars: chart.querySelectorAll('svg rect.fetch').length,
          },
        };
      }),
      memory: {
        cacheEntries: num(document, 'cache-entries'),
        cacheBytes: num(document, 'cache-bytes'),
        cacheMax: num(document, 'cache-max-bytes'),
        cacheRatio: num(document, 'cache-hit-ratio'),
        cacheRatioText: at(document, 'cache-hit-ratio').textContent,
        cacheHits: num(document, 'cache-hits'),
        cacheMisses: num(document, 'cache-misses'),
        poolSize: num(document, 'pool-size'),
        poolIdle: num(document, 'pool-idle'),
        poolMin: num(document, 'pool-min'),
        poolMax: num(document, 'pool-max'),
      },
      waybillsDate: raw(document, 'waybills-date'),
      waybills: Object.fromEntries(statuses.map((s) => [s, num(document, `waybills-${s}`)])),
    };
  });
}

function isCount(n) {
  return Number.isInteger(n) && n >= 0;
}

// Equal as JSON, the keys of objects in any order (arrays in theirs).
function same(a, b) {
  const norm = (v) => (v && typeof v === 'object' && !Array.isArray(v)
    ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, norm(v[k])]))
    : Array.isArray(v) ? v.map(norm) : v);
  return JSON.stringify(norm(a)) === JSON.stringify(norm(b));
}
