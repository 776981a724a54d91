// Network: interfaces, totals, live graph of everything, top talkers.

import { api, openLive, qs, type Device, type LiveMsg, type Status, type TopEntry, type TrafficStats } from '../api';
import { LiveWindow, rateChart, showLive } from '../charts';
import { fmtBytes, fmtRate, frameScheduler, h, setChildren, statBox } from '../dom';
import { devicePath, showError, type PageFn } from '../page';
import { displayName } from './devices';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

function kv(label: string, value: string | Node): HTMLElement[] {
  return [h('dt', null, label), h('dd', null, value)];
}

/** A ranked list with a proportional bar; `href` makes the label a link. */
function topList(items: { label: string; sub?: string | null; href?: string; down: number; up: number; fmt: (n: number) => string }[], emptyText: string): HTMLElement {
  if (!items.length) return h('p', { class: 'empty' }, emptyText);
  const max = Math.max(1, ...items.map((i) => i.down + i.up));
  return h(
    'ol',
    { class: 'top-list' },
    items.map((i) => {
      const bar = h('div', { class: 'bar' });
      const bd = h('span', { class: 'bar-down' });
      const bu = h('span', { class: 'bar-up' });
      // CSSOM width, not a style attribute (CSP).
      bd.style.width = `${(i.down / max) * 100}%`;
      bu.style.width = `${(i.up / max) * 100}%`;
      bar.append(bd, bu);
      return h(
        'li',
        null,
        h('div', { class: 'top-row' }, h('div', { class: 'top-label' }, i.href ? h('a', { href: i.href }, i.label) : h('span', { class: 'mono' }, i.label), i.sub ? h('span', { class: 'muted small' }, ' ' + i.sub) : null), h('div', { class: 'top-val small' }, h('span', { class: 'r-down' }, '↓ ' + i.fmt(i.down)), ' ', h('span', { class: 'r-up' }, '↑ ' + i.fmt(i.up)))),
        bar,
      );
    }),
  );
}

export const networkPage: PageFn = (root, scope) => {
  const lan = h('dl', { class: 'facts' });
  const wan = h('dl', { class: 'facts' });
  const dayStats = h('div', { class: 'stats' });
  const hourStats = h('div', { class: 'stats' });
  const liveEl = h('div', { id: 'network-live', class: 'chart' });
  const liveNow = h('div', { class: 'live-now' });
  const topNow = h('div', { id: 'top-now' });
  const topDay = h('div', { id: 'top-devices' });
  const topRemotes = h('div', { id: 'top-remotes' });

  root.append(
    h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Network'))),
    h('div', { class: 'grid-2' }, h('section', { class: 'card' }, h('h2', null, 'LAN'), lan), h('section', { class: 'card' }, h('h2', null, 'Internet (WAN)'), wan)),
    h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', null, 'Whole network · live'), liveNow), liveEl),
    h('div', { class: 'grid-2' }, h('section', { class: 'card' }, h('h2', null, 'Last 24 hours'), dayStats), h('section', { class: 'card' }, h('h2', null, 'Last hour'), hourStats)),
    h('div', { class: 'grid-3' }, h('section', { class: 'card' }, h('h2', null, 'Busiest now'), h('p', { class: 'muted small' }, 'last 10 s'), topNow), h('section', { class: 'card' }, h('h2', null, 'Top devices'), h('p', { class: 'muted small' }, 'last 24 h'), topDay), h('section', { class: 'card' }, h('h2', null, 'Top remotes'), h('p', { class: 'muted small' }, 'last 24 h'), topRemotes)),
  );

  const names = new Map<string, string>();

  async function loadStatus(): Promise<void> {
    const s = await api<Status>('/api/status', { signal: scope.signal });
    setChildren(
      lan,
      kv('Interface', h('span', { class: 'mono' }, s.lan_interface ?? '—')),
      kv('Ports', (s.lan_ports ?? []).length ? h('span', { class: 'mono' }, s.lan_ports.join(', ')) : '—'),
      kv('Subnet', h('span', { class: 'mono' }, s.subnet ?? '—')),
      kv('Router', h('span', { class: 'mono' }, s.router ?? '—')),
    );
    setChildren(
      wan,
      kv('Interface', h('span', { class: 'mono' }, s.wan ?? 'not configured')),
      kv('Address', h('span', { class: 'mono' }, s.wan_address ?? '—')),
      kv('Upstream DNS', (s.upstreams ?? []).length ? h('span', { class: 'mono' }, s.upstreams.join(', ')) : '—'),
      kv('Port forwards', String((s.port_forwards ?? []).length)),
    );
  }

  async function loadStats(): Promise<void> {
    const now = Date.now();
    const [d, hr] = await Promise.all([
      api<TrafficStats>('/api/traffic/stats' + qs({ device: 'all', from: now - DAY, to: now }), { signal: scope.signal }),
      api<TrafficStats>('/api/traffic/stats' + qs({ device: 'all', from: now - HOUR, to: now }), { signal: scope.signal }),
    ]);
    const view = (s: TrafficStats) => [
      statBox('Downloaded', fmtBytes(s.down_bytes), undefined, 'down'),
      statBox('Uploaded', fmtBytes(s.up_bytes), undefined, 'up'),
      statBox('Average', '↓ ' + fmtRate(s.avg_down_bps), '↑ ' + fmtRate(s.avg_up_bps)),
      statBox('Peak', '↓ ' + fmtRate(s.peak_down_bps), '↑ ' + fmtRate(s.peak_up_bps)),
    ];
    setChildren(dayStats, view(d));
    setChildren(hourStats, view(hr));
  }

  async function loadTop(): Promise<void> {
    const now = Date.now();
    const [devs, rems] = await Promise.all([
      api<{ top: TopEntry[] }>('/api/traffic/top' + qs({ device: 'all', from: now - DAY, to: now, limit: 10 }), { signal: scope.signal }),
      api<{ top: TopEntry[] }>('/api/traffic/top' + qs({ device: 'all', remotes: 1, from: now - DAY, to: now, limit: 10 }), { signal: scope.signal }),
    ]);
    setChildren(
      topDay,
      topList(
        (devs.top ?? []).map((e) => ({ label: e.name || names.get(e.device ?? '') || e.device || '—', href: e.device ? devicePath(e.device) : undefined, down: e.down_bytes, up: e.up_bytes, fmt: fmtBytes })),
        'No traffic in the last 24 h.',
      ),
    );
    setChildren(topRemotes, topList((rems.top ?? []).map((e) => ({ label: e.remote ?? '—', sub: e.name, down: e.down_bytes, up: e.up_bytes, fmt: fmtBytes })), 'No traffic in the last 24 h.'));
  }

  async function loadNames(): Promise<void> {
    const r = await api<{ devices: Device[] }>('/api/devices', { signal: scope.signal });
    for (const d of r.devices ?? []) {
      const n = displayName(d);
      names.set(d.device, n ?? d.ip ?? d.device);
    }
  }

  // ---------- live ----------
  const live = rateChart(liveEl, scope, { height: 220, live: true });
  const lw = new LiveWindow();
  // Per-device bytes for the last 100 ticks (10 s), for "busiest now".
  const recent: { tick: number; devs: { device: string; up: number; down: number }[] }[] = [];
  let lastTopDraw = 0;

  const frame = frameScheduler(() => {
    showLive(live, lw, liveEl, liveNow);
    if (performance.now() - lastTopDraw > 1000) {
      lastTopDraw = performance.now();
      const agg = new Map<string, { up: number; down: number }>();
      for (const r of recent) {
        for (const e of r.devs) {
          const a = agg.get(e.device) ?? { up: 0, down: 0 };
          a.up += e.up;
          a.down += e.down;
          agg.set(e.device, a);
        }
      }
      const items = [...agg.entries()]
        .sort((a, b) => b[1].up + b[1].down - (a[1].up + a[1].down))
        .slice(0, 10)
        // average over the 10 s window -> bytes/s
        .map(([dev, a]) => ({ label: names.get(dev) ?? dev, href: devicePath(dev), down: a.down / 10, up: a.up / 10, fmt: fmtRate }));
      setChildren(topNow, topList(items, 'Quiet right now.'));
    }
  });
  scope.onCleanup(() => frame.cancel());

  const onLive = (m: LiveMsg) => {
    let up = 0;
    let down = 0;
    const devs: { device: string; up: number; down: number }[] = [];
    for (const e of m.devices ?? []) {
      up += e.up || 0;
      down += e.down || 0;
      if (e.device) devs.push({ device: e.device, up: e.up || 0, down: e.down || 0 });
    }
    lw.put(m.t, up, down);
    const tick = Math.round(m.t / 100);
    // Replace a replayed tick instead of double counting it.
    const idx = recent.findIndex((r) => r.tick === tick);
    if (idx >= 0) recent[idx].devs = devs;
    else recent.push({ tick, devs });
    const cutoff = lw.latest - 100;
    while (recent.length && recent[0].tick <= cutoff) recent.shift();
    frame.schedule();
  };
  scope.onCleanup(openLive('all', onLive));

  void Promise.allSettled([loadStatus(), loadStats(), loadNames().catch((e) => showError(e, scope)).then(loadTop)]).then((res) => {
    for (const r of res) if (r.status === 'rejected') showError(r.reason, scope);
    scope.ready();
  });
  scope.interval(() => {
    loadStats().catch((e) => showError(e, scope));
    loadTop().catch((e) => showError(e, scope));
  }, 30_000);
};
