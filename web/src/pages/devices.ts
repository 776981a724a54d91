// Devices overview: the table everyone lands on. Live rates and sparklines
// come from one WebSocket; all DOM writes for a tick happen in one frame.

import { api, openLive, type Device, type LiveMsg } from '../api';
import { currentTheme, drawSpark, onThemeChange } from '../charts';
import { badge, fmtBytes, fmtRate, fmtRel, fmtWhen, frameScheduler, h, setChildren, setText } from '../dom';
import { devicePath, navigate, showError, type PageFn } from '../page';

const TICKS = 600; // 60 s at 100 ms
const BUSY_BPS = 10_000;

type SortKey = 'name' | 'vendor' | 'ip' | 'seen' | 'rate';

/** Per-device ring of the last 600 ticks. */
class Ring {
  up = new Float64Array(TICKS);
  down = new Float64Array(TICKS);
  at = new Float64Array(TICKS).fill(-1);

  put(tick: number, up: number, down: number): void {
    const i = tick % TICKS;
    this.at[i] = tick;
    this.up[i] = up;
    this.down[i] = down;
  }

  /** Bytes/s over the 10 ticks ending at `end`. */
  rate(end: number): { up: number; down: number } {
    let u = 0;
    let d = 0;
    for (let t = end - 9; t <= end; t++) {
      const i = t % TICKS;
      if (this.at[i] === t) {
        u += this.up[i];
        d += this.down[i];
      }
    }
    return { up: u, down: d };
  }

  series(end: number, out: Float64Array): void {
    for (let k = 0; k < TICKS; k++) {
      const t = end - TICKS + 1 + k;
      const i = t % TICKS;
      out[k] = this.at[i] === t ? this.up[i] + this.down[i] : 0;
    }
  }
}

interface Row {
  dev: Device;
  tr: HTMLTableRowElement;
  name: HTMLElement;
  sub: HTMLElement;
  vendorM: HTMLElement;
  vendor: HTMLElement;
  ip: HTMLElement;
  seenLast: HTMLElement;
  seenFirst: HTMLElement;
  rateDown: HTMLElement;
  rateUp: HTMLElement;
  day: HTMLElement;
  canvas: HTMLCanvasElement;
  lease: HTMLElement;
  ring: Ring;
  rateNow: number;
}

export function displayName(d: { name: string | null; hostname: string | null }): string | null {
  return d.name || d.hostname || null;
}

export const devicesPage: PageFn = (root, scope) => {
  const rows = new Map<string, Row>();
  const params = new URLSearchParams(location.search);
  let sortKey: SortKey = 'name';
  let sortDir = 1;
  let filter = params.get('q') ?? '';
  let latestTick = -1;
  let lastSort = 0;
  const seriesBuf = new Float64Array(TICKS);

  const filterInput = h('input', {
    id: 'device-filter',
    type: 'search',
    placeholder: 'Filter by name, vendor, IP or MAC',
    value: filter,
    autocomplete: 'off',
    'aria-label': 'Filter devices',
    oninput: () => {
      filter = filterInput.value;
      history.replaceState(null, '', filter ? '/?q=' + encodeURIComponent(filter) : '/');
      applyFilter();
    },
  });
  const summary = h('span', { class: 'muted' });
  const totalRate = h('span', { class: 'total-rate' });

  const headers: [SortKey | null, string, string][] = [
    ['name', 'Device', 'name'],
    ['vendor', 'Vendor', 'vendor'],
    ['ip', 'IP', 'ip'],
    ['seen', 'Seen', 'seen'],
    ['rate', 'Now', 'rate'],
    [null, 'Last 60 s', 'spark'],
    [null, 'Today', 'day'],
    [null, 'Lease', 'lease'],
  ];
  const ths = new Map<SortKey, HTMLElement>();
  const thead = h(
    'thead',
    null,
    h(
      'tr',
      null,
      headers.map(([key, label, cls]) => {
        if (!key) return h('th', { class: cls }, label);
        const th = h('th', { class: `${cls} sortable`, 'data-sort': key, tabindex: 0, role: 'button', 'aria-label': `Sort by ${label}` }, label, h('span', { class: 'sort-ind' }));
        const act = () => {
          if (sortKey === key) sortDir = -sortDir;
          else {
            sortKey = key;
            // Busiest and most recent first feels natural.
            sortDir = key === 'rate' || key === 'seen' ? -1 : 1;
          }
          sortRows();
        };
        th.addEventListener('click', act);
        th.addEventListener('keydown', (e: KeyboardEvent) => {
          if (e.key === 'Enter' || e.key === ' ') {
            e.preventDefault();
            act();
          }
        });
        ths.set(key, th);
        return th;
      }),
    ),
  );
  const tbody = h('tbody');
  const empty = h('div', { class: 'empty hidden' });
  const table = h('table', { id: 'devices', class: 'table devices-table' }, thead, tbody);

  root.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Devices'), h('p', { class: 'muted' }, summary)), h('div', { class: 'head-side' }, totalRate)),
    h('section', { class: 'card' }, h('div', { class: 'toolbar' }, filterInput), h('div', { class: 'table-scroll' }, table), empty),
  );

  function makeRow(dev: Device): Row {
    const name = h('div', { class: 'dev-name' });
    const sub = h('div', { class: 'dev-sub mono' });
    const vendorM = h('div', { class: 'dev-vendor-m' });
    const link = h('a', { href: devicePath(dev.device), class: 'row-link' }, name);
    const vendor = h('td', { class: 'vendor' });
    const ip = h('td', { class: 'ip mono' });
    const seenLast = h('div');
    const seenFirst = h('div', { class: 'small muted' });
    const rateDown = h('span', { class: 'r-down' });
    const rateUp = h('span', { class: 'r-up' });
    const day = h('td', { class: 'day small' });
    const canvas = h('canvas', { class: 'sparkline', width: 120, height: 28, 'aria-hidden': 'true' });
    const lease = h('td', { class: 'lease' });
    const tr = h(
      'tr',
      { 'data-device': dev.device, class: 'clickable' },
      h('td', { class: 'name' }, link, sub, vendorM),
      vendor,
      ip,
      h('td', { class: 'seen' }, seenLast, seenFirst),
      h('td', { class: 'rate' }, h('div', null, '↓ ', rateDown), h('div', null, '↑ ', rateUp)),
      h('td', { class: 'spark' }, canvas),
      day,
      lease,
    );
    tr.addEventListener('click', (ev) => {
      if ((ev.target as Element).closest('a')) return; // the link navigates itself
      navigate(devicePath(dev.device));
    });
    const row: Row = { dev, tr, name, sub, vendorM, vendor, ip, seenLast, seenFirst, rateDown, rateUp, day, canvas, lease, ring: new Ring(), rateNow: 0 };
    return row;
  }

  function fillRow(r: Row): void {
    const d = r.dev;
    const dn = displayName(d);
    setText(r.name, dn ?? '—');
    r.name.classList.toggle('unnamed', !dn);
    setText(r.sub, d.mac ?? (d.device !== d.ip ? d.device : ''));
    setText(r.vendor, d.vendor ?? '—');
    setText(r.vendorM, d.vendor ?? '');
    setText(r.ip, d.ip ?? '—');
    setText(r.seenLast, d.last_seen_ms ? fmtRel(d.last_seen_ms) : '—');
    r.seenLast.title = d.last_seen_ms ? 'Last seen ' + fmtWhen(d.last_seen_ms) : '';
    setText(r.seenFirst, d.first_seen_ms ? 'since ' + new Date(d.first_seen_ms).toLocaleDateString() : '');
    r.seenFirst.title = d.first_seen_ms ? 'First seen ' + fmtWhen(d.first_seen_ms) : '';
    const day = d.last_day;
    setText(r.day, day ? `↓ ${fmtBytes(day.down)} · ↑ ${fmtBytes(day.up)}` : '—');
    const ls = d.lease_state;
    setChildren(r.lease, ls ? badge(ls, ls) : h('span', { class: 'muted' }, '—'));
    // Before the socket delivers, show the server's last-second figure.
    if (latestTick < 0 && d.last_second) {
      r.rateNow = d.last_second.up + d.last_second.down;
      setText(r.rateDown, fmtRate(d.last_second.down));
      setText(r.rateUp, fmtRate(d.last_second.up));
    }
  }

  function matches(r: Row, q: string): boolean {
    if (!q) return true;
    const d = r.dev;
    return [d.name, d.hostname, d.vendor, d.ip, d.mac, d.device].some((v) => v && v.toLowerCase().includes(q));
  }

  function applyFilter(): void {
    const q = filter.trim().toLowerCase();
    let shown = 0;
    for (const r of rows.values()) {
      const ok = matches(r, q);
      r.tr.classList.toggle('hidden', !ok);
      if (ok) shown++;
    }
    empty.classList.toggle('hidden', shown > 0);
    setText(empty, rows.size === 0 ? 'No devices seen yet.' : 'No device matches this filter.');
    setText(summary, `${rows.size} device${rows.size === 1 ? '' : 's'}` + (q ? ` · ${shown} shown` : ''));
  }

  function ipKey(ip: string | null): string {
    if (!ip) return '\uffff';
    const p = ip.split('.');
    if (p.length === 4) return p.map((x) => x.padStart(3, '0')).join('.');
    return ip;
  }

  function sortRows(): void {
    lastSort = performance.now();
    const list = [...rows.values()];
    const str = (a: string | null, b: string | null) => {
      // Empty values sort last regardless of direction.
      if (!a && !b) return 0;
      if (!a) return 1 * sortDir;
      if (!b) return -1 * sortDir;
      return a.localeCompare(b, undefined, { numeric: true, sensitivity: 'base' });
    };
    list.sort((a, b) => {
      let c = 0;
      switch (sortKey) {
        case 'name':
          c = str(displayName(a.dev), displayName(b.dev));
          break;
        case 'vendor':
          c = str(a.dev.vendor, b.dev.vendor);
          break;
        case 'ip':
          c = ipKey(a.dev.ip).localeCompare(ipKey(b.dev.ip));
          break;
        case 'seen':
          c = (a.dev.last_seen_ms ?? 0) - (b.dev.last_seen_ms ?? 0);
          break;
        case 'rate':
          c = a.rateNow - b.rateNow;
          break;
      }
      if (c === 0) c = a.dev.device.localeCompare(b.dev.device);
      return c * sortDir;
    });
    // appendChild moves existing rows: no re-creation, canvases keep state.
    list.forEach((r, i) => {
      if (tbody.children[i] !== r.tr) tbody.appendChild(r.tr);
    });
    for (const [k, th] of ths) {
      th.classList.toggle('sorted', k === sortKey);
      th.setAttribute('aria-sort', k === sortKey ? (sortDir > 0 ? 'ascending' : 'descending') : 'none');
      const ind = th.querySelector('.sort-ind');
      if (ind) ind.textContent = k === sortKey ? (sortDir > 0 ? ' ▲' : ' ▼') : '';
    }
  }

  async function load(): Promise<void> {
    const r = await api<{ devices: Device[] }>('/api/devices', { signal: scope.signal });
    const seen = new Set<string>();
    for (const d of r.devices ?? []) {
      seen.add(d.device);
      let row = rows.get(d.device);
      if (!row) {
        row = makeRow(d);
        rows.set(d.device, row);
      }
      row.dev = d;
      fillRow(row);
    }
    for (const [k, row] of rows) {
      if (!seen.has(k)) {
        row.tr.remove();
        rows.delete(k);
      }
    }
    sortRows();
    applyFilter();
  }

  // One frame per tick: rates, busy class, sparklines.
  const frame = frameScheduler(() => {
    if (latestTick < 0) return;
    let totUp = 0;
    let totDown = 0;
    for (const r of rows.values()) {
      const rt = r.ring.rate(latestTick);
      r.rateNow = rt.up + rt.down;
      totUp += rt.up;
      totDown += rt.down;
      setText(r.rateDown, fmtRate(rt.down));
      setText(r.rateUp, fmtRate(rt.up));
      r.tr.classList.toggle('busy', r.rateNow > BUSY_BPS);
      r.tr.classList.toggle('idle', r.rateNow === 0);
      if (!r.tr.classList.contains('hidden')) {
        r.ring.series(latestTick, seriesBuf);
        const pts = String(drawSpark(r.canvas, seriesBuf, currentTheme()));
        // Tests read how many points of the last 60 s carry traffic.
        if (r.canvas.dataset.points !== pts) r.canvas.dataset.points = pts;
      }
    }
    setChildren(totalRate, h('span', { class: 'r-down' }, '↓ ' + fmtRate(totDown)), h('span', { class: 'r-up' }, '↑ ' + fmtRate(totUp)));
    // Re-sorting by rate every tick would make rows jump; once a second is readable.
    if (sortKey === 'rate' && performance.now() - lastSort > 1000) sortRows();
  });
  scope.onCleanup(() => frame.cancel());
  onThemeChange(() => frame.schedule(), scope);

  const onLive = (m: LiveMsg) => {
    const tick = Math.round(m.t / 100);
    if (tick > latestTick) latestTick = tick;
    for (const e of m.devices ?? []) {
      if (!e.device) continue;
      const r = rows.get(e.device);
      if (r) r.ring.put(tick, e.up || 0, e.down || 0);
    }
    frame.schedule();
  };

  load()
    .catch((e) => showError(e, scope))
    .finally(() => {
      scope.ready();
      if (scope.alive) scope.onCleanup(openLive('all', onLive));
    });
  scope.interval(() => load().catch((e) => showError(e, scope)), 10_000);
};
