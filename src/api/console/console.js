// The operator console: reads the service's own JSON endpoints every few seconds and
// shows what they say. Plain JavaScript, no library. Every figure is written with
// textContent (never as HTML), and carries its raw value in `data-value` next to the
// formatted text, so a test can compare it with the JSON it came from.
'use strict';

(function () {
  // Seconds between two updates; `?every=N` (1 to 300) changes it.
  const EVERY = (() => {
    const n = Number(new URLSearchParams(location.search).get('every'));
    return Number.isFinite(n) && n >= 1 && n <= 300 ? n : 5;
  })();
  // Fetches drawn per feed, and the most waybill pages read per update.
  const FETCHES_SHOWN = 30;
  const WAYBILL_PAGE = 1000;
  const WAYBILL_PAGES = 20;
  const STATUSES = ['issued', 'in_progress', 'completed', 'cancelled'];
  // The SVG namespace, taken from the logo the HTML parser made (no URI in this file).
  const SVG = document.getElementById('logo').namespaceURI;

  const $ = (root, id) => root.querySelector(`[data-testid="${id}"]`);

  // Sets a figure: its text, and its raw value for tests (and the tooltip when given).
  function put(el, text, value, title) {
    if (!el) return;
    el.textContent = text;
    if (value === undefined || value === null) el.removeAttribute('data-value');
    else el.setAttribute('data-value', String(value));
    if (title) el.title = title; else el.removeAttribute('title');
  }

  const nf = new Intl.NumberFormat('en-US');
  const int = (n) => (typeof n === 'number' ? nf.format(n) : '–');
  const pct = (r) => (typeof r === 'number' ? `${(r * 100).toFixed(1)} %` : '–');

  function bytes(n) {
    if (typeof n !== 'number') return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i === 0 ? n : n.toFixed(1)} ${units[i]}`;
  }

  function duration(seconds) {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '–';
    const s = Math.max(0, Math.round(seconds));
    // Two units at most, the second left out when it is zero: "15 min", "3 h 5 min".
    const two = (a, unitA, b, unitB) => (b ? `${a} ${unitA} ${b} ${unitB}` : `${a} ${unitA}`);
    if (s < 60) return `${s} s`;
    if (s < 3600) return two(Math.floor(s / 60), 'min', s % 60, 's');
    if (s < 86400) return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
    return two(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
  }

  // "3 min 2 s ago", with the timestamp itself as the raw value and tooltip.
  function ago(el, iso) {
    if (!iso) { put(el, 'never', ''); return; }
    const t = Date.parse(iso);
    if (Number.isNaN(t)) { put(el, iso, iso); return; }
    put(el, `${duration((Date.now() - t) / 1000)} ago`, iso, new Date(t).toLocaleString());
  }

  // Today's service date in the browser's time zone, YYYY-MM-DD.
  function today() {
    const d = new Date();
    const two = (n) => String(n).padStart(2, '0');
    return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`;
  }

  // GET a JSON endpoint of this service; a refusal or an error says what it was.
  async function get(path) {
    let res;
    try {
      res = await fetch(path, { headers: { accept: 'application/json' }, cache: 'no-store' });
    } catch (e) {
      throw new Error(`${path}: the service did not answer (${e.message})`);
    }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) {
      const why = body && (body.detail || body.title);
      throw new Error(`${path}: ${res.status}${why ? ` ${why}` : ''}`);
    }
    if (body === null || typeof body !== 'object') throw new Error(`${path}: not JSON`);
    return body;
  }

  // ---------------------------------------------------------------- instances

  function renderInstances(list) {
    const root = document.getElementById('instances');
    const items = Array.isArray(list.instances) ? list.instances : [];
    if (items.length === 0) {
      root.replaceChildren(note('No OTP instance is configured.'));
      return;
    }
    const template = document.getElementById('instance-card');
    root.replaceChildren(...items.map((i) => {
      const card = template.content.firstElementChild.cloneNode(true);
      card.dataset.instance = i.name;
      const http = i.http || {};
      const breaker = (http.breaker && http.breaker.state) || 'unknown';
      const status = i.status || {};
      put($(card, 'instance-name'), i.name, i.name);
      const b = $(card, 'instance-breaker');
      put(b, breaker.replace('_', '-'), breaker,
        `opened ${int(http.breaker && http.breaker.opened)} times, ` +
        `${int(http.breaker && http.breaker.rejected)} calls refused while open`);
      b.className = `badge breaker-${breaker}`;
      put($(card, 'instance-api'),
        `${i.api} · every ${duration(i.refresh_interval)}${i.running ? ' · refreshing now' : ''}`,
        i.api, i.url);
      put($(card, 'instance-connections'), int(http.connections_opened), http.connections_opened);
      put($(card, 'instance-requests'), int(http.requests_sent), http.requests_sent,
        `${int(http.calls)} calls, ${int(http.retries)} retries, ${int(http.failures)} failures`);
      put($(card, 'instance-reuse'), pct(http.reuse_ratio), http.reuse_ratio);
      put($(card, 'instance-refreshes'), int(status.refreshes), status.refreshes);
      ago($(card, 'instance-last-refresh'), status.last_finished_at);
      ago($(card, 'instance-last-success'), status.last_success_at);
      put($(card, 'instance-last-error'), status.last_error || 'none', status.last_error || '');
      return card;
    }));
  }

  // ---------------------------------------------------------------- feeds

  // The counts worth a glance, in this order, with the names the JSON gives them.
  const COUNTS = ['agencies', 'routes', 'route_details', 'stops', 'trips', 'stop_times', 'patterns'];
  const ONE = {
    agencies: 'agency', routes: 'route', route_details: 'route detail', stops: 'stop',
    trips: 'trip', stop_times: 'stop time', patterns: 'pattern',
  };

  function renderFeeds(list, histories) {
    const root = document.getElementById('feeds');
    const items = Array.isArray(list.feeds) ? list.feeds : [];
    if (items.length === 0) {
      root.replaceChildren(note('No feed yet: none configured, or none loaded.'));
      return;
    }
    const template = document.getElementById('feed-card');
    root.replaceChildren(...items.map((f) => {
      const card = template.content.firstElementChild.cloneNode(true);
      card.dataset.feed = f.gtfs_id;
      put($(card, 'feed-id'), f.gtfs_id, f.gtfs_id);
      put($(card, 'feed-instance'), `from ${f.instance}`, f.instance, f.source);
      put($(card, 'feed-version'), f.version ? f.version.slice(0, 12) : 'not loaded',
        f.version || '', f.version || undefined);
      const age = $(card, 'feed-age');
      if (f.fetched_at) {
        const t = Date.parse(f.fetched_at);
        put(age, duration((Date.now() - t) / 1000), f.fetched_at,
          `fetched ${new Date(t).toLocaleString()}`);
      } else {
        put(age, '–', '');
      }
      const counts = $(card, 'feed-counts');
      counts.replaceChildren();
      const c = f.counts || {};
      for (const name of COUNTS) {
        if (typeof c[name] !== 'number') continue;
        const span = document.createElement('span');
        span.className = 'count';
        span.dataset.testid = `feed-count-${name}`;
        put(span, `${int(c[name])} ${c[name] === 1 ? ONE[name] : name.replace('_', ' ')}`, c[name]);
        counts.append(span);
      }
      if (!counts.firstChild) counts.textContent = '–';
      put($(card, 'feed-last-error'), f.last_error || 'none', f.last_error || '');
      const history = histories.get(f.gtfs_id);
      chart($(card, 'feed-fetches'), $(card, 'feed-fetches-caption'), history);
      return card;
    }));
  }

  // A bar per fetch, oldest on the left: height = how long it took, colour = outcome.
  function chart(box, caption, history) {
    box.replaceChildren();
    if (history instanceof Error) {
      put(caption, `history unavailable: ${history.message}`, '');
      box.dataset.count = '0';
      return;
    }
    const fetches = (history && Array.isArray(history.fetches) ? history.fetches : [])
      .slice(0, FETCHES_SHOWN).reverse();
    box.dataset.count = String(fetches.length);
    const tally = {};
    for (const f of fetches) tally[f.outcome] = (tally[f.outcome] || 0) + 1;
    for (const outcome of ['updated', 'unchanged', 'failed']) {
      box.dataset[outcome] = String(tally[outcome] || 0);
    }
    if (fetches.length === 0) {
      put(caption, 'no fetch recorded yet', 0);
      return;
    }
    const took = fetches.map((f) => Math.max(0, (Date.parse(f.finished_at) - Date.parse(f.started_at)) || 0));
    const longest = Math.max(1, ...took);
    const W = 300; const H = 60; const gap = 2;
    const slot = W / FETCHES_SHOWN;
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', `last ${fetches.length} fetches`);
    const base = document.createElementNS(SVG, 'line');
    base.setAttribute('x1', '0'); base.setAttribute('x2', String(W));
    base.setAttribute('y1', String(H - 0.5)); base.setAttribute('y2', String(H - 0.5));
    base.setAttribute('class', 'axis');
    svg.append(base);
    // The newest on the right edge, whatever the number of fetches.
    const first = FETCHES_SHOWN - fetches.length;
    fetches.forEach((f, i) => {
      const h = Math.max(3, (took[i] / longest) * (H - 4));
      const rect = document.createElementNS(SVG, 'rect');
      rect.setAttribute('x', String((first + i) * slot + gap / 2));
      rect.setAttribute('y', String(H - h));
      rect.setAttribute('width', String(Math.max(1, slot - gap)));
      rect.setAttribute('height', String(h));
      rect.setAttribute('class', `fetch ${f.outcome}`);
      const title = document.createElementNS(SVG, 'title');
      const when = new Date(Date.parse(f.started_at)).toLocaleString();
      title.textContent = `${when}: ${f.outcome}, ${took[i]} ms` +
        (typeof f.bytes === 'number' ? `, ${bytes(f.bytes)}` : '') +
        (f.http_status ? `, HTTP ${f.http_status}` : '') +
        (f.error ? ` — ${f.error}` : '');
      rect.append(title);
      svg.append(rect);
    });
    box.append(svg);
    const last = fetches[fetches.length - 1];
    const which = fetches.length === 1 ? 'the last fetch' : `the last ${fetches.length} fetches`;
    put(caption, `${which} (bar height: time taken, longest ${longest} ms); ` +
      `latest ${last.outcome}`, fetches.length);
  }

  // ---------------------------------------------------------------- memory, pool

  function renderMemory(m) {
    const cache = m.route_cache || {};
    put($(document, 'cache-entries'), int(cache.entries), cache.entries);
    put($(document, 'cache-bytes'), bytes(cache.weighted_bytes), cache.weighted_bytes);
    put($(document, 'cache-max-bytes'), bytes(cache.max_bytes), cache.max_bytes);
    put($(document, 'cache-hit-ratio'), pct(cache.hit_ratio), cache.hit_ratio,
      `${int(cache.stale)} served stale`);
    put($(document, 'cache-hits'), int(cache.hits), cache.hits);
    put($(document, 'cache-misses'), int(cache.misses), cache.misses);
    put($(document, 'cache-evictions'), int(cache.evictions), cache.evictions);
    const pool = m.database_pool || {};
    put($(document, 'pool-size'), int(pool.size), pool.size);
    put($(document, 'pool-idle'), int(pool.idle), pool.idle);
    put($(document, 'pool-min'), int(pool.min), pool.min);
    put($(document, 'pool-max'), int(pool.max), pool.max);
    const p = m.process || {};
    const a = m.allocator || {};
    put($(document, 'process-rss'), bytes(p.rss_bytes), p.rss_bytes);
    put($(document, 'allocator-allocated'), bytes(a.allocated_bytes), a.allocated_bytes);
    put($(document, 'uptime'), duration(m.uptime_seconds), m.uptime_seconds);
  }

  // ---------------------------------------------------------------- waybills

  // Every waybill of the date, page after page (at most WAYBILL_PAGES), counted by status.
  async function waybillTally(date) {
    const tally = Object.fromEntries(STATUSES.map((s) => [s, 0]));
    let cursor = '';
    let complete = false;
    for (let page = 0; page < WAYBILL_PAGES; page += 1) {
      const q = new URLSearchParams({ service_date: date, limit: String(WAYBILL_PAGE) });
      if (cursor) q.set('cursor', cursor);
      const list = await get(`/waybills?${q}`);
      for (const w of Array.isArray(list.waybills) ? list.waybills : []) {
        tally[w.status] = (tally[w.status] || 0) + 1;
      }
      if (!list.next_cursor) { complete = true; break; }
      cursor = list.next_cursor;
    }
    return { tally, complete };
  }

  function renderWaybills(date, result) {
    put($(document, 'waybills-date'), date, date);
    const { tally, complete } = result;
    const more = complete ? '' : '≥ ';
    let total = 0;
    for (const s of STATUSES) {
      put($(document, `waybills-${s}`), more + int(tally[s]), tally[s]);
      total += tally[s];
    }
    put($(document, 'waybills-total'), more + int(total), total,
      complete ? undefined : `only the first ${WAYBILL_PAGES * WAYBILL_PAGE} were counted`);
    const bar = $(document, 'waybills-bar');
    bar.replaceChildren();
    for (const s of STATUSES) {
      if (!tally[s]) continue;
      const part = document.createElement('span');
      part.className = `part ${s}`;
      // Width through the CSSOM: allowed by the page's style-src 'self'.
      part.style.flexGrow = String(tally[s]);
      part.title = `${s.replace('_', ' ')}: ${tally[s]}`;
      bar.append(part);
    }
  }

  // ---------------------------------------------------------------- the loop

  function note(text) {
    const p = document.createElement('p');
    p.className = 'empty';
    p.textContent = text;
    return p;
  }

  function setState(state, problems) {
    const el = document.getElementById('state');
    el.dataset.state = state;
    el.textContent = { live: 'live', stale: 'some figures are stale', loading: 'loading…' }[state];
    const p = document.getElementById('problem');
    p.hidden = problems.length === 0;
    p.textContent = problems.join('\n');
  }

  let updates = 0;

  async function update() {
    const date = today();
    const problems = [];
    // Each part on its own: one failing endpoint leaves the others' figures fresh.
    const [instances, feeds, memory, waybills] = await Promise.allSettled([
      get('/instances'), get('/feeds'), get('/memory-stats'), waybillTally(date),
    ]);
    if (instances.status === 'fulfilled') renderInstances(instances.value);
    else problems.push(instances.reason.message);
    if (feeds.status === 'fulfilled') {
      const ids = (Array.isArray(feeds.value.feeds) ? feeds.value.feeds : []).map((f) => f.gtfs_id);
      const histories = new Map(await Promise.all(ids.map((id) =>
        get(`/feeds/${encodeURIComponent(id)}/fetches?limit=${FETCHES_SHOWN}`)
          .then((h) => [id, h], (e) => [id, e]))));
      renderFeeds(feeds.value, histories);
    } else {
      problems.push(feeds.reason.message);
    }
    if (memory.status === 'fulfilled') renderMemory(memory.value);
    else problems.push(memory.reason.message);
    if (waybills.status === 'fulfilled') renderWaybills(date, waybills.value);
    else problems.push(waybills.reason.message);

    updates += 1;
    document.body.dataset.updates = String(updates);
    const now = new Date();
    put(document.getElementById('updated'), now.toLocaleTimeString(), now.toISOString());
    setState(problems.length ? 'stale' : 'live', problems);
  }

  async function loop() {
    try {
      await update();
    } catch (e) {
      setState('stale', [`update failed: ${e.message}`]);
    }
    setTimeout(loop, EVERY * 1000);
  }

  loop();
}());
