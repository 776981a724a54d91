// One device: identity + actions, live graph, history with zoom, remotes, DNS,
// its ports (forwards and mappings), packet capture.

import { api, openLive, qs, type Device, type DnsEntry, type LiveMsg, type TopEntry, type TrafficResp, type TrafficStats } from '../api';
import { LiveWindow, rateChart, showLive, type RateData } from '../charts';
import { badge, fmtBytes, fmtCount, fmtDuration, fmtRate, fmtRel, fmtWhen, frameScheduler, h, setChildren, setText, statBox, toast } from '../dom';
import { errorText, showError, type PageFn } from '../page';
import { captureSection } from './capture';
import { displayName } from './devices';
import { dnsRow } from './dns';
import { devicePortsCard } from './ports';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** Step (ms, multiple of 100) giving about 1000 points over the window. */
export function stepFor(width: number): number {
  return Math.max(100, Math.ceil(width / 1000 / 100) * 100);
}

/** Traffic series (bytes per step) as chart data (bytes/s). */
export function toRateData(r: TrafficResp): RateData {
  const step = r.step || 1000;
  const xs: number[] = [];
  const ds: (number | null)[] = [];
  const us: (number | null)[] = [];
  for (const [t, up, down] of r.series ?? []) {
    xs.push(t / 1000);
    us.push((up * 1000) / step);
    ds.push((down * 1000) / step);
  }
  return [xs, ds, us];
}

export function statsView(s: TrafficStats): HTMLElement[] {
  const peak = (bps: number | null | undefined) => (bps ? fmtRate(bps) : '—');
  const at = (ms: number | null | undefined) => (ms ? 'at ' + fmtWhen(ms) : undefined);
  return [
    statBox('Downloaded', fmtBytes(s.down_bytes), `${fmtCount(s.down_packets)} packets`, 'down'),
    statBox('Uploaded', fmtBytes(s.up_bytes), `${fmtCount(s.up_packets)} packets`, 'up'),
    statBox('Average ↓ / ↑', `${fmtRate(s.avg_down_bps)}`, `↑ ${fmtRate(s.avg_up_bps)}`),
    statBox('Peak ↓', peak(s.peak_down_bps), at(s.peak_down_at)),
    statBox('Peak ↑', peak(s.peak_up_bps), at(s.peak_up_at)),
  ];
}

function dl(label: string, value: Node | string): HTMLElement[] {
  return [h('dt', null, label), h('dd', null, value)];
}

export const devicePage: PageFn = (root, scope, params) => {
  const id = params.device;
  const enc = encodeURIComponent(id);
  const url = new URLSearchParams(location.search);
  let dev: Device | null = null;

  // ---------- header ----------
  const title = h('h1', { class: 'dev-title' }, id);
  const facts = h('dl', { class: 'facts' });
  const renameInput = h('input', { id: 'rename-input', type: 'text', placeholder: 'Give it a name', maxlength: 64, autocomplete: 'off', 'aria-label': 'Device name' });
  const renameSave = h('button', { id: 'rename-save', type: 'submit', class: 'btn btn-primary' }, 'Save');
  const renameErr = h('p', { id: 'rename-error', class: 'form-error', role: 'alert' });
  const makeStatic = h('button', { id: 'make-static', type: 'button', class: 'btn hidden', title: 'Always give this device its current address' }, 'Make address static');
  const actionErr = h('p', { class: 'form-error', role: 'alert' });

  const renameForm = h(
    'form',
    {
      class: 'inline-form',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        setText(renameErr, '');
        renameSave.disabled = true;
        try {
          await api(`/api/devices/${enc}`, { method: 'PUT', body: { name: renameInput.value.trim() } });
          toast(renameInput.value.trim() ? 'Name saved' : 'Name cleared', 'ok');
          await loadInfo();
        } catch (e) {
          setText(renameErr, errorText(e));
          showError(e, scope);
        } finally {
          renameSave.disabled = false;
        }
      },
    },
    renameInput,
    renameSave,
  );

  makeStatic.addEventListener('click', async () => {
    const mac = dev?.mac ?? id;
    setText(actionErr, '');
    makeStatic.disabled = true;
    try {
      await api(`/api/leases/${encodeURIComponent(mac)}`, { method: 'PUT', body: { ip: null } });
      toast('Address pinned', 'ok');
      await loadInfo();
    } catch (e) {
      setText(actionErr, errorText(e));
      showError(e, scope);
    } finally {
      makeStatic.disabled = false;
    }
  });

  const liveNow = h('div', { class: 'live-now' });
  const head = h(
    'section',
    { class: 'card dev-head' },
    h('div', { class: 'dev-head-main' }, h('a', { href: '/', class: 'back' }, '← Devices'), title, facts),
    h('div', { class: 'dev-head-side' }, h('label', { class: 'field-label', for: 'rename-input' }, 'Name'), renameForm, renameErr, makeStatic, actionErr),
  );

  // ---------- live ----------
  const liveEl = h('div', { id: 'live-chart', class: 'chart' });
  const liveCard = h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', null, 'Live · last 60 s'), liveNow), liveEl);

  // ---------- history ----------
  const btnHour = h('button', { id: 'range-hour', class: 'seg', type: 'button' }, 'Hour');
  const btnDay = h('button', { id: 'range-day', class: 'seg', type: 'button' }, '24 h');
  const btnEarlier = h('button', { id: 'history-earlier', class: 'btn btn-small', type: 'button', title: 'Earlier' }, '‹ Earlier');
  const btnLater = h('button', { id: 'history-later', class: 'btn btn-small', type: 'button', title: 'Later' }, 'Later ›');
  const winLabel = h('span', { class: 'win-label muted' });
  const remoteChip = h('div', { class: 'remote-chip' });
  const histEl = h('div', { id: 'history-chart', class: 'chart' });
  const statsEl = h('div', { id: 'range-stats', class: 'stats' });
  const dlJson = h('a', { id: 'download-json', class: 'btn btn-small', download: `traffic-${id.replace(/[^A-Za-z0-9._-]/g, '-')}.json` }, 'JSON');
  const dlCsv = h('a', { id: 'download-csv', class: 'btn btn-small', download: `traffic-${id.replace(/[^A-Za-z0-9._-]/g, '-')}.csv` }, 'CSV');
  const histCard = h(
    'section',
    { class: 'card' },
    h('div', { class: 'card-head wrap' }, h('h2', null, 'History'), h('div', { class: 'seg-group', role: 'group', 'aria-label': 'Range' }, btnHour, btnDay), h('div', { class: 'pager' }, btnEarlier, btnLater)),
    h('div', { class: 'sub-head' }, winLabel, remoteChip),
    histEl,
    h('p', { class: 'hint muted small' }, 'Drag across the chart to zoom in.'),
    statsEl,
    h('div', { class: 'downloads' }, h('span', { class: 'muted small' }, 'Download what is shown:'), dlJson, dlCsv),
  );

  // ---------- remotes ----------
  const remotesBody = h('tbody');
  const remotesTable = h('table', { id: 'remotes', class: 'table' }, h('thead', null, h('tr', null, h('th', null, 'Remote'), h('th', { class: 'name' }, 'Name'), h('th', { class: 'num' }, '↓ Down'), h('th', { class: 'num' }, '↑ Up'))), remotesBody);
  const remotesCard = h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', null, 'Remotes'), h('span', { class: 'muted small' }, 'in the history window · click to focus')), h('div', { class: 'table-scroll scroll-y' }, remotesTable));

  // ---------- dns ----------
  const dnsBody = h('tbody');
  const dnsTable = h('table', { id: 'device-dns', class: 'table' }, h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Name'), h('th', null, 'Type'), h('th', null, 'Answer'), h('th', null, 'Cached'))), dnsBody);
  const dnsCard = h('section', { class: 'card' }, h('div', { class: 'card-head' }, h('h2', null, 'DNS queries'), h('span', { class: 'muted small' }, 'latest 200')), h('div', { class: 'table-scroll scroll-y' }, dnsTable));

  // Filled once the device's MAC is known (capture is per MAC; the page id may be an IP).
  const captureSlot = h('div', { class: 'capture-slot' });
  let captureMac: string | null = null;
  function startCapture(mac: string | null | undefined): void {
    if (!mac || captureMac || !scope.alive) return;
    captureMac = mac;
    captureSection(captureSlot, mac, scope);
  }

  // ---------- ports ----------
  const ports = devicePortsCard(scope);
  const loadPorts = () => ports.load(dev?.mac ?? (/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(id) ? id : null));

  root.append(head, liveCard, histCard, h('div', { class: 'grid-2' }, remotesCard, dnsCard), ports.el, captureSlot);

  // ---------- info ----------
  async function loadInfo(): Promise<void> {
    const r = await api<{ devices: Device[] }>('/api/devices', { signal: scope.signal });
    const low = id.toLowerCase();
    dev = (r.devices ?? []).find((d) => d.device.toLowerCase() === low || (d.mac ?? '').toLowerCase() === low) ?? null;
    const name = dev ? displayName(dev) : null;
    setText(title, name ?? id);
    document.title = `${name ?? id} · Gatekeeper`;
    if (!dev) {
      setChildren(facts, dl('Device', id), dl('Status', 'Not in the device list'));
      makeStatic.classList.add('hidden');
      return;
    }
    const ls = dev.lease_state;
    setChildren(
      facts,
      dl('MAC', h('span', { class: 'mono' }, dev.mac ?? '—')),
      dl('IP', h('span', { class: 'mono' }, dev.ip ?? '—')),
      dl('Vendor', dev.vendor ?? '—'),
      dl('Hostname', dev.hostname ?? '—'),
      dl('Lease', ls ? badge(ls, ls) : '—'),
      dl('Seen', `${dev.last_seen_ms ? fmtRel(dev.last_seen_ms) : '—'}${dev.first_seen_ms ? ' · first ' + fmtWhen(dev.first_seen_ms) : ''}`),
      dev.total ? dl('All time', `↓ ${fmtBytes(dev.total.down_bytes)} · ↑ ${fmtBytes(dev.total.up_bytes)}`) : null,
    );
    if (document.activeElement !== renameInput) renameInput.value = dev.name ?? '';
    renameInput.placeholder = dev.hostname ? `e.g. ${dev.hostname}` : 'Give it a name';
    makeStatic.classList.toggle('hidden', ls !== 'dynamic');
    startCapture(dev.mac);
  }

  // ---------- live chart ----------
  const live = rateChart(liveEl, scope, { height: 200, live: true });
  const lw = new LiveWindow();
  const liveFrame = frameScheduler(() => showLive(live, lw, liveEl, liveNow));
  scope.onCleanup(() => liveFrame.cancel());
  const low = id.toLowerCase();
  scope.onCleanup(
    openLive(id, (m: LiveMsg) => {
      let up = 0;
      let down = 0;
      for (const e of m.devices ?? []) {
        if (e.device && e.device.toLowerCase() !== low) continue;
        up += e.up || 0;
        down += e.down || 0;
      }
      lw.put(m.t, up, down);
      liveFrame.schedule();
    }),
  );

  // ---------- history ----------
  let width = HOUR;
  let to = Date.now();
  let from = to - width;
  let anchored = true; // window ends at "now" and follows it
  let remote: string | null = url.get('remote');
  let remoteName: string | null = null;
  let histSeq = 0;

  const hist = rateChart(histEl, scope, {
    height: 260,
    onSelect: (a, b) => {
      const f = Math.round(a);
      const t = Math.round(b);
      if (t - f < 5000) return;
      from = f;
      to = t;
      width = t - f;
      anchored = false;
      void loadHistory();
    },
  });

  function setRange(w: number): void {
    width = w;
    to = Date.now();
    from = to - w;
    anchored = true;
    void loadHistory();
  }
  btnHour.addEventListener('click', () => setRange(HOUR));
  btnDay.addEventListener('click', () => setRange(DAY));
  btnEarlier.addEventListener('click', () => {
    from -= width;
    to -= width;
    anchored = false;
    void loadHistory();
  });
  btnLater.addEventListener('click', () => {
    const now = Date.now();
    to += width;
    from += width;
    if (to >= now - 1000) {
      to = now;
      from = now - width;
      anchored = true;
    }
    void loadHistory();
  });

  function trafficQuery(extra: Record<string, string | number | null> = {}): string {
    return qs({ device: id, remote, from, to, step: stepFor(to - from), ...extra });
  }

  function renderRemoteChip(): void {
    if (!remote) {
      setChildren(remoteChip, h('span', { class: 'chip' }, 'All remotes'));
      return;
    }
    setChildren(
      remoteChip,
      h('span', { class: 'chip chip-active' }, 'Remote: ', h('span', { class: 'mono' }, remote), remoteName ? h('span', { class: 'muted' }, ` (${remoteName})`) : null),
      h('button', { id: 'remote-clear', type: 'button', class: 'btn btn-small', onclick: () => selectRemote(null, null) }, 'All remotes'),
    );
  }

  function selectRemote(r: string | null, name: string | null): void {
    remote = r;
    remoteName = name;
    const p = new URLSearchParams(location.search);
    if (r) p.set('remote', r);
    else p.delete('remote');
    const s = p.toString();
    history.replaceState(null, '', location.pathname + (s ? '?' + s : ''));
    for (const tr of remotesBody.querySelectorAll('tr')) tr.classList.toggle('selected', tr.getAttribute('data-remote') === r);
    void loadHistory(false);
  }

  async function loadHistory(withTop = true): Promise<void> {
    const seq = ++histSeq;
    if (anchored) {
      to = Date.now();
      from = to - width;
    }
    btnHour.classList.toggle('active', anchored && width === HOUR);
    btnDay.classList.toggle('active', anchored && width === DAY);
    btnLater.disabled = anchored || to >= Date.now() - 1000;
    setText(winLabel, `${fmtWhen(from)} – ${anchored ? 'now' : fmtWhen(to)} · ${fmtDuration(to - from)}`);
    renderRemoteChip();
    const q = trafficQuery();
    dlJson.href = '/api/traffic' + q;
    dlCsv.href = '/api/traffic' + q + '&format=csv';
    const f = from;
    const t = to;
    const jobs: Promise<unknown>[] = [
      api<TrafficResp>('/api/traffic' + q, { signal: scope.signal }).then((r) => {
        if (seq !== histSeq) return;
        hist.setRange(f / 1000, t / 1000);
        hist.setData(toRateData(r));
        histEl.dataset.from = String(f);
        histEl.dataset.to = String(t);
      }),
      api<TrafficStats>('/api/traffic/stats' + qs({ device: id, remote, from: f, to: t }), { signal: scope.signal }).then((s) => {
        if (seq !== histSeq) return;
        setChildren(statsEl, statsView(s));
      }),
    ];
    if (withTop) jobs.push(loadTop(seq, f, t));
    const res = await Promise.allSettled(jobs);
    for (const r of res) if (r.status === 'rejected') showError(r.reason, scope);
  }

  async function loadTop(seq: number, f: number, t: number): Promise<void> {
    const r = await api<{ top: TopEntry[] }>('/api/traffic/top' + qs({ device: id, from: f, to: t, limit: 50 }), { signal: scope.signal });
    if (seq !== histSeq) return;
    const top = r.top ?? [];
    if (!top.length) {
      setChildren(remotesBody, h('tr', null, h('td', { colspan: 4, class: 'empty' }, 'No traffic in this window.')));
      return;
    }
    setChildren(
      remotesBody,
      top.map((e) => {
        const ip = e.remote ?? '';
        const tr = h(
          'tr',
          { 'data-remote': ip, class: 'clickable' + (ip === remote ? ' selected' : ''), tabindex: 0 },
          h('td', { class: 'remote mono' }, ip),
          h('td', { class: 'name' }, e.name ?? '—'),
          h('td', { class: 'num down' }, fmtBytes(e.down_bytes)),
          h('td', { class: 'num up' }, fmtBytes(e.up_bytes)),
        );
        const act = () => {
          selectRemote(ip === remote ? null : ip, ip === remote ? null : e.name);
        };
        tr.addEventListener('click', act);
        tr.addEventListener('keydown', (ev: KeyboardEvent) => {
          if (ev.key === 'Enter') act();
        });
        if (ip === remote && !remoteName && e.name) {
          remoteName = e.name;
          renderRemoteChip();
        }
        return tr;
      }),
    );
  }

  // ---------- dns ----------
  async function loadDns(): Promise<void> {
    const r = await api<{ entries: DnsEntry[] }>('/api/dns/log' + qs({ device: id, limit: 200 }), { signal: scope.signal });
    const entries = r.entries ?? [];
    if (!entries.length) {
      setChildren(dnsBody, h('tr', null, h('td', { colspan: 5, class: 'empty' }, 'No DNS queries logged.')));
      return;
    }
    setChildren(dnsBody, entries.map((e) => dnsRow(e, false)));
  }

  const info = loadInfo();
  // The ports card matches by MAC, which the device list tells.
  const first = Promise.allSettled([info, loadHistory(), loadDns(), info.catch(() => undefined).then(loadPorts)]);
  void first.then((res) => {
    for (const r of res) if (r.status === 'rejected') showError(r.reason, scope);
    // Fall back to the page id when it is itself a MAC (e.g. the device list failed).
    if (/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(id)) startCapture(id);
    scope.ready();
  });
  scope.interval(() => {
    loadDns().catch((e) => showError(e, scope));
    loadPorts().catch((e) => showError(e, scope));
  }, 5000);
  // Keep a "now"-anchored window current without refetching too often.
  scope.interval(() => {
    if (anchored) void loadHistory();
  }, 60_000);
  scope.interval(() => loadInfo().catch((e) => showError(e, scope)), 30_000);
};
