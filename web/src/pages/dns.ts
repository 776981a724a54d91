// DNS: cache/upstream health and the query log of the whole network.

import { api, qs, type DnsEntry, type DnsStats } from '../api';
import { badge, debounce, fmtCount, fmtTime, fmtWhen, h, setChildren, statBox } from '../dom';
import { devicePath, showError, type PageFn } from '../page';

function answerText(e: DnsEntry): string {
  if (e.answers && e.answers.length) return e.answers.join(', ');
  return String(e.rcode ?? '—');
}

/** A query-log row; `withDevice` adds the device and latency columns. */
export function dnsRow(e: DnsEntry, withDevice: boolean): HTMLTableRowElement {
  const failed = !(e.answers && e.answers.length) && String(e.rcode).toUpperCase() !== 'NOERROR';
  const time = h('td', { class: 'time', title: fmtWhen(e.unix_ms) }, fmtTime(e.unix_ms));
  const cells: (HTMLElement | null)[] = [
    time,
    withDevice ? h('td', { class: 'device' }, h('a', { href: devicePath(e.device) }, e.device_name || e.device)) : null,
    h('td', { class: 'qname mono' }, e.name),
    h('td', { class: 'qtype' }, String(e.qtype)),
    h('td', { class: 'answer mono' + (failed ? ' failed' : '') }, answerText(e)),
    withDevice ? h('td', { class: 'num latency' }, e.cached ? '—' : e.latency_ms === null || e.latency_ms === undefined ? '—' : `${Math.round(e.latency_ms)} ms`) : null,
    h('td', { class: 'cached' }, e.cached ? badge('cached', 'static') : h('span', { class: 'muted' }, 'no')),
  ];
  return h('tr', null, cells);
}

export const dnsPage: PageFn = (root, scope) => {
  let q = new URLSearchParams(location.search).get('q') ?? '';
  const cards = h('div', { class: 'stats stats-big' });
  const upBody = h('tbody');
  const upTable = h(
    'table',
    { id: 'dns-upstreams', class: 'table' },
    h('thead', null, h('tr', null, h('th', null, 'Upstream'), h('th', null, 'Health'), h('th', { class: 'num' }, 'Sent'), h('th', { class: 'num' }, 'Answered'), h('th', { class: 'num' }, 'Missed'), h('th', { class: 'num' }, 'Latency'))),
    upBody,
  );
  const search = h('input', {
    id: 'dns-search',
    type: 'search',
    placeholder: 'Search names, e.g. example.com',
    value: q,
    autocomplete: 'off',
    'aria-label': 'Search DNS log',
  });
  const count = h('span', { class: 'muted small' });
  const logBody = h('tbody');
  const logTable = h(
    'table',
    { id: 'dns-log', class: 'table' },
    h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Device'), h('th', null, 'Name'), h('th', null, 'Type'), h('th', null, 'Answer'), h('th', { class: 'num' }, 'Latency'), h('th', null, 'Cached'))),
    logBody,
  );

  root.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'DNS'), h('p', { class: 'muted' }, 'The gateway answers and caches name lookups for your network.'))),
    cards,
    h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', null, 'Upstream servers')), h('div', { class: 'table-scroll' }, upTable)),
    h('section', { class: 'card' }, h('div', { class: 'card-head wrap' }, h('h2', null, 'Query log'), count), h('div', { class: 'toolbar' }, search), h('div', { class: 'table-scroll' }, logTable)),
  );

  async function loadStats(): Promise<void> {
    const s = await api<DnsStats>('/api/dns/stats', { signal: scope.signal });
    const rate = typeof s.hit_rate === 'number' ? `${(s.hit_rate * 100).toFixed(1)}%` : '—';
    setChildren(
      cards,
      statBox('Cache hit rate', rate, `${fmtCount(s.hits)} hits · ${fmtCount(s.misses)} misses`, 'accent'),
      statBox('Queries', fmtCount(s.queries)),
      statBox('Cache', fmtCount(s.cache_entries), `of ${fmtCount(s.cache_size)} entries`),
      statBox('Upstreams healthy', `${(s.upstreams ?? []).filter((u) => u.healthy).length} / ${(s.upstreams ?? []).length}`),
    );
    const ups = s.upstreams ?? [];
    setChildren(
      upBody,
      ups.length
        ? ups.map((u) =>
            h(
              'tr',
              null,
              h('td', { class: 'mono' }, u.address),
              h('td', null, u.healthy ? badge('healthy', 'ok') : badge('down', 'bad')),
              h('td', { class: 'num' }, fmtCount(u.sent)),
              h('td', { class: 'num' }, fmtCount(u.answered)),
              h('td', { class: 'num' }, fmtCount(u.missed)),
              h('td', { class: 'num' }, u.latency_ms === null || u.latency_ms === undefined ? '—' : `${Math.round(u.latency_ms)} ms`),
            ),
          )
        : h('tr', null, h('td', { colspan: 7, class: 'empty' }, 'No upstream servers configured.')),
    );
  }

  let seq = 0;
  async function loadLog(): Promise<void> {
    const my = ++seq;
    const r = await api<{ entries: DnsEntry[] }>('/api/dns/log' + qs({ device: 'all', q, limit: 500 }), { signal: scope.signal });
    if (my !== seq) return; // a newer search superseded this one
    const entries = r.entries ?? [];
    setChildren(count, `${entries.length}${entries.length >= 500 ? '+' : ''} entries${q ? ` matching “${q}”` : ''}`);
    setChildren(logBody, entries.length ? entries.map((e) => dnsRow(e, true)) : h('tr', null, h('td', { colspan: 7, class: 'empty' }, q ? 'Nothing matches this search.' : 'No queries logged yet.')));
  }

  const onSearch = debounce(() => {
    q = search.value.trim();
    const p = new URLSearchParams(location.search);
    if (q) p.set('q', q);
    else p.delete('q');
    const s = p.toString();
    history.replaceState(null, '', location.pathname + (s ? '?' + s : ''));
    loadLog().catch((e) => showError(e, scope));
  }, 250);
  search.addEventListener('input', onSearch);

  void Promise.allSettled([loadStats(), loadLog()]).then((res) => {
    for (const r of res) if (r.status === 'rejected') showError(r.reason, scope);
    scope.ready();
  });
  scope.interval(() => {
    loadStats().catch((e) => showError(e, scope));
    loadLog().catch((e) => showError(e, scope));
  }, 5000);
};
