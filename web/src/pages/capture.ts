// The device page's "Packet capture" section: ring status and controls,
// filtered pcap/pcapng downloads, and a live packet list over WebSocket.

import { api, isAbort } from '../api';
import { badge, fmtCount, fmtWhen, frameScheduler, h, setChildren, setText } from '../dom';
import { errorText, type Scope } from '../page';

export interface CaptureStatus {
  enabled: boolean;
  paused: boolean;
  ring_bytes: number;
  used_bytes: number;
  packets: number;
  evicted: number;
  oldest_us: number | null;
  newest_us: number | null;
  snap: number;
}

export interface PacketLine {
  time_us: number;
  dir: 'out' | 'in';
  remote: string;
  name: string | null;
  proto: string;
  len: number;
  summary: string;
  origin: string;
  skipped: number;
}

const MAX_ROWS = 200;
const RECONNECT_MS = 2000;
const MIB = 1024 * 1024;

/** Ring sizes are configured in MiB (`ring_mb`), so show them the same way. */
function fmtMB(n: number): string {
  const v = n / MIB;
  const s = v === 0 ? '0' : v < 1 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0);
  return s.replace(/\.0+$/, '') + ' MB';
}

/** HH:MM:SS.mmm in local time. */
export function fmtClock(us: number): string {
  const d = new Date(us / 1000);
  const p = (n: number, w = 2) => String(n).padStart(w, '0');
  return `${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}.${p(d.getMilliseconds(), 3)}`;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Build the section into `container`; everything it opens is closed with `scope`. */
export function captureSection(container: HTMLElement, mac: string, scope: Scope): void {
  const base = `/api/devices/${encodeURIComponent(mac)}`;
  const fileBase = 'capture-' + mac.replace(/[^A-Za-z0-9]/g, '');
  let status: CaptureStatus | null = null;

  // ---------- status + controls ----------
  const stateEl = h('div', { id: 'capture-status', class: 'capture-status' }, 'Loading…');
  const errEl = h('p', { id: 'capture-error', class: 'form-error', role: 'alert' });
  const toggleBtn = h('button', { id: 'capture-toggle', type: 'button', class: 'btn btn-small hidden' }, 'Pause');
  const clearBtn = h('button', { id: 'capture-clear', type: 'button', class: 'btn btn-small btn-danger hidden' }, 'Clear');

  // ---------- download form ----------
  const winSel = h(
    'select',
    { id: 'capture-window', 'aria-label': 'Time window' },
    h('option', { value: '0' }, 'Everything'),
    h('option', { value: String(5 * 60_000) }, 'Last 5 minutes'),
    h('option', { value: String(3_600_000) }, 'Last hour'),
  );
  const remoteIn = h('input', { id: 'capture-remote', type: 'text', placeholder: 'any', inputmode: 'decimal', autocomplete: 'off', spellcheck: 'false' });
  const portIn = h('input', { id: 'capture-port', type: 'number', min: 1, max: 65535, placeholder: 'any' });
  const protoSel = h('select', { id: 'capture-proto' }, h('option', { value: '' }, 'Any'), h('option', { value: 'tcp' }, 'TCP'), h('option', { value: 'udp' }, 'UDP'), h('option', { value: 'icmp' }, 'ICMP'));
  const dlPcapng = h('a', { id: 'capture-download', class: 'btn btn-small btn-primary', download: fileBase + '.pcapng' }, 'Download pcapng');
  const dlPcap = h('a', { id: 'capture-download-pcap', class: 'btn btn-small', download: fileBase + '.pcap' }, 'pcap');
  const formErr = h('p', { id: 'capture-form-error', class: 'form-error', role: 'alert' });
  const field = (label: string, input: HTMLElement, cls = '') => h('label', { class: 'capture-field ' + cls }, h('span', { class: 'field-label' }, label), input);
  const form = h(
    'form',
    { class: 'capture-form', onsubmit: (ev: Event) => ev.preventDefault() },
    field('Window', winSel),
    field('Remote IP', remoteIn),
    field('Port', portIn, 'narrow'),
    field('Protocol', protoSel, 'narrow'),
    h('div', { class: 'capture-dl' }, dlPcapng, dlPcap),
  );

  /** The filter as a query string, or an error message for bad input. */
  function query(): { q: string } | { error: string } {
    const p = new URLSearchParams();
    // The window is relative to the moment of the click, not of the last edit.
    const win = Number(winSel.value);
    if (win > 0) p.set('from', String(Date.now() - win));
    const remote = remoteIn.value.trim();
    if (remote) {
      if (!IPV4.test(remote)) return { error: 'Remote must be an IPv4 address like 203.0.113.1' };
      p.set('remote', remote);
    }
    const port = portIn.value.trim();
    if (port) {
      const n = Number(port);
      if (!Number.isInteger(n) || n < 1 || n > 65535) return { error: 'Port must be a number from 1 to 65535' };
      p.set('port', String(n));
    }
    if (protoSel.value) p.set('proto', protoSel.value);
    const s = p.toString();
    return { q: s ? '?' + s : '' };
  }

  /** Refresh both hrefs (tests read them); returns false when the form is invalid. */
  function updateLinks(): boolean {
    const r = query();
    const bad = 'error' in r;
    setText(formErr, bad ? r.error : '');
    remoteIn.classList.toggle('invalid', bad && r.error.startsWith('Remote'));
    portIn.classList.toggle('invalid', bad && r.error.startsWith('Port'));
    if (bad) return false;
    dlPcapng.href = `${base}/capture.pcapng${r.q}`;
    dlPcap.href = `${base}/capture.pcap${r.q}`;
    return true;
  }
  form.addEventListener('input', updateLinks);
  form.addEventListener('change', updateLinks);
  // Recompute "from" at click time; the browser then follows the fresh href.
  for (const a of [dlPcapng, dlPcap]) {
    a.addEventListener('click', (ev: Event) => {
      if (!updateLinks()) ev.preventDefault();
    });
  }
  updateLinks();

  // ---------- live view ----------
  const liveState = h('span', { id: 'capture-live-state', class: 'muted small' });
  const livePause = h('button', { id: 'capture-live-pause', type: 'button', class: 'btn btn-small' }, 'Pause');
  const liveBody = h('tbody');
  const placeholder = h('tr', null, h('td', { colspan: 6, class: 'empty' }, 'No packets yet.'));
  liveBody.append(placeholder);
  const liveTable = h(
    'table',
    { id: 'capture-live', class: 'table capture-live' },
    h('thead', null, h('tr', null, h('th', null, 'Time'), h('th', null, 'Dir'), h('th', null, 'Remote'), h('th', null, 'Proto'), h('th', { class: 'num' }, 'Len'), h('th', null, 'Summary'))),
    liveBody,
  );

  const body = h(
    'div',
    { class: 'capture-body hidden' },
    h('h3', { class: 'capture-h3' }, 'Download'),
    form,
    formErr,
    h('div', { class: 'card-head capture-live-head' }, h('h3', { class: 'capture-h3' }, 'Live packets'), h('div', { class: 'capture-live-ctl' }, liveState, livePause)),
    h('div', { class: 'table-scroll scroll-y' }, liveTable),
  );

  container.append(
    h(
      'section',
      { id: 'capture', class: 'card' },
      h('div', { class: 'card-head wrap' }, h('h2', null, 'Packet capture'), h('div', { class: 'capture-actions' }, toggleBtn, clearBtn)),
      stateEl,
      errEl,
      body,
    ),
  );

  // ---------- live socket ----------
  const live = liveView(`${base}/packets`, liveBody, placeholder, liveState, scope);
  let userPaused = false; // the live view's own pause, separate from the ring's
  livePause.addEventListener('click', () => {
    userPaused = !userPaused;
    setText(livePause, userPaused ? 'Resume' : 'Pause');
    if (userPaused) live.stop();
    else if (status?.enabled) live.start();
  });

  function render(s: CaptureStatus): void {
    status = s;
    const on = !!s.enabled;
    toggleBtn.classList.toggle('hidden', !on);
    clearBtn.classList.toggle('hidden', !on);
    body.classList.toggle('hidden', !on);
    if (!on) {
      setChildren(stateEl, h('span', { class: 'muted' }, 'Capture is off for this device'));
      live.stop();
      return;
    }
    setText(toggleBtn, s.paused ? 'Resume' : 'Pause');
    const span = s.oldest_us !== null && s.newest_us !== null ? `from ${fmtWhen(s.oldest_us / 1000)} to ${fmtWhen(s.newest_us / 1000)}` : 'no packets yet';
    setChildren(
      stateEl,
      s.paused ? badge('paused', 'config') : badge('capturing', 'ok'),
      h('span', null, `${fmtCount(s.packets)} packets, ${fmtMB(s.used_bytes)} of ${fmtMB(s.ring_bytes)}`),
      h('span', { class: 'muted' }, span),
      s.evicted > 0 ? h('span', { class: 'muted small' }, `${fmtCount(s.evicted)} older packets dropped`) : null,
      s.snap > 0 ? h('span', { class: 'muted small' }, `first ${fmtCount(s.snap)} bytes of each packet`) : null,
    );
    if (!userPaused) live.start();
  }

  // Sequence numbers keep a slow periodic GET from overwriting a newer POST answer.
  let seq = 0;
  async function request(init?: { method: 'POST'; body: unknown }): Promise<void> {
    const my = ++seq;
    try {
      const s = await api<CaptureStatus>(`${base}/capture`, { ...init, signal: scope.signal });
      if (my !== seq || !scope.alive) return;
      setText(errEl, '');
      render(s);
    } catch (e) {
      if (isAbort(e) || !scope.alive) return;
      if (my === seq || init) setText(errEl, errorText(e));
    }
  }

  async function act(action: 'pause' | 'resume' | 'clear', btn: HTMLButtonElement): Promise<void> {
    btn.disabled = true;
    try {
      await request({ method: 'POST', body: { action } });
    } finally {
      btn.disabled = false;
    }
  }
  toggleBtn.addEventListener('click', () => void act(status?.paused ? 'resume' : 'pause', toggleBtn));
  clearBtn.addEventListener('click', () => {
    if (confirm('Delete all captured packets of this device?')) void act('clear', clearBtn);
  });

  void request();
  scope.interval(() => void request(), 5000);
}

interface LiveView {
  start(): void;
  stop(): void;
}

/** A WebSocket feeding rows into `tbody`, newest first; reconnects after unexpected closes. */
function liveView(path: string, tbody: HTMLTableSectionElement, placeholder: HTMLElement, stateEl: HTMLElement, scope: Scope): LiveView {
  let ws: WebSocket | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let queue: PacketLine[] = [];

  // Batch DOM work to one update per frame so a burst doesn't thrash layout.
  const frame = frameScheduler(() => {
    const lines = queue.slice(-MAX_ROWS);
    queue = [];
    placeholder.remove();
    const frag = document.createDocumentFragment();
    for (let i = lines.length - 1; i >= 0; i--) {
      frag.append(packetRow(lines[i]));
      // The skipped lines came before this one, so they sit below it.
      if (lines[i].skipped > 0) frag.append(h('tr', { class: 'capture-skipped' }, h('td', { colspan: 6 }, `… ${fmtCount(lines[i].skipped)} more not shown`)));
    }
    tbody.prepend(frag);
    while (tbody.rows.length > MAX_ROWS) tbody.lastElementChild?.remove();
  });

  const connect = () => {
    timer = undefined;
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const sock = new WebSocket(`${proto}//${location.host}${path}`);
    ws = sock;
    setText(stateEl, 'connecting…');
    sock.onopen = () => setText(stateEl, 'live');
    sock.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let m: PacketLine;
      try {
        m = JSON.parse(ev.data) as PacketLine;
      } catch {
        return;
      }
      if (!m || typeof m !== 'object' || typeof m.time_us !== 'number') return;
      queue.push(m);
      frame.schedule();
    };
    sock.onclose = () => {
      if (ws !== sock) return;
      ws = null;
      if (!scope.alive) return;
      setText(stateEl, 'reconnecting…');
      timer = setTimeout(connect, RECONNECT_MS);
    };
  };

  const view: LiveView = {
    start() {
      if (ws || timer !== undefined || !scope.alive) return;
      connect();
    },
    stop() {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      if (ws) {
        // Detach first so this close doesn't schedule a reconnect.
        const sock = ws;
        ws = null;
        sock.onclose = null;
        sock.close();
      }
      frame.cancel();
      queue = [];
      setText(stateEl, 'paused');
    },
  };
  scope.onCleanup(() => view.stop());
  return view;
}

function packetRow(m: PacketLine): HTMLTableRowElement {
  const dir = m.dir === 'in' ? 'in' : 'out';
  const str = (v: unknown) => (typeof v === 'string' ? v : v === null || v === undefined ? '' : String(v));
  const name = str(m.name);
  const remote = str(m.remote);
  const origin = str(m.origin);
  return h(
    'tr',
    { 'data-dir': dir, 'data-proto': str(m.proto), 'data-origin': origin },
    h('td', { class: 'time mono' }, fmtClock(m.time_us)),
    h('td', { class: 'capture-dir ' + (dir === 'in' ? 'r-down' : 'r-up') }, dir === 'in' ? '↓ in' : '↑ out'),
    h('td', { class: 'capture-remote' }, name ? [h('span', null, name), ' ', h('span', { class: 'mono muted' }, remote)] : h('span', { class: 'mono' }, remote)),
    h('td', null, str(m.proto)),
    h('td', { class: 'num' }, typeof m.len === 'number' ? fmtCount(m.len) : ''),
    h('td', { class: 'capture-summary' }, origin && origin !== 'nat' ? badge(origin, 'origin') : null, str(m.summary)),
  );
}
