// Ports: what the internet can reach and why (services on the gateway, port
// forwards, app mappings by NAT-PMP/PCP/UPnP, full-cone NAT mappings) with
// their connections, and the management of port forwards.
//
// The table refreshes every 2 s, so rows are kept by key and only the cells
// whose data changed are rebuilt: buttons and links under the pointer, the
// expanded state and open edit forms survive a refresh.

import { api, isAbort, type Device, type Forward, type ForwardBody, type ForwardProtocol, type ForwardsResp, type PortConnection, type PortKind, type PortRow, type PortsResp } from '../api';
import { badge, fmtBytes, fmtCount, fmtDuration, h, setChildren, setText, toast, type Child } from '../dom';
import { devicePath, errorText, showError, type PageFn, type Scope } from '../page';
import { displayName } from './devices';

const REFRESH_MS = 2000;
const DEVICES_MS = 30_000;

const KIND_LABEL: Record<PortKind, string> = { service: 'service', forward: 'forward', app: 'app', mapping: 'NAT mapping' };
const ORIGIN_LABEL: Record<string, string> = { 'nat-pmp': 'NAT-PMP', pcp: 'PCP', upnp: 'UPnP' };
const PROTO_LABEL: Record<ForwardProtocol, string> = { tcp: 'TCP', udp: 'UDP', both: 'TCP + UDP' };

// ---------- shared helpers (the device page uses them too) ----------

function known<T extends string>(map: Record<T, string>, v: string): v is T {
  return Object.prototype.hasOwnProperty.call(map, v);
}

export function kindBadge(kind: string): HTMLElement {
  return known(KIND_LABEL, kind) ? badge(KIND_LABEL[kind], 'port-' + kind) : badge(String(kind), 'neutral');
}

export function originLabel(origin: string): string {
  return ORIGIN_LABEL[origin] ?? String(origin);
}

function protoLabel(p: string): string {
  return known(PROTO_LABEL, p) ? PROTO_LABEL[p] : String(p).toUpperCase();
}

/** The LAN device a row belongs to (forwards, app mappings and NAT mappings have one). */
export function rowMac(r: PortRow): string | null {
  return r.forward?.mac ?? r.app?.mac ?? r.mapping?.mac ?? null;
}

function rowDevice(r: PortRow): string | null {
  return r.forward?.device ?? r.app?.device ?? r.mapping?.device ?? null;
}

export function rowInternal(r: PortRow): string | null {
  return r.forward?.internal ?? r.app?.internal ?? r.mapping?.internal ?? null;
}

/** The port of "10.0.0.36:41234" (or "[::1]:80"), if it is a valid one. */
export function portOf(addr: string | null | undefined): number | null {
  if (!addr) return null;
  const i = addr.lastIndexOf(':');
  if (i < 0) return null;
  const s = addr.slice(i + 1);
  if (!/^\d{1,5}$/.test(s)) return null;
  const n = Number(s);
  return n >= 1 && n <= 65535 ? n : null;
}

/** Time left before the row goes away by itself; `null` for "does not expire". */
export function rowRemainingMs(r: PortRow): number | null {
  if (r.kind === 'app' && r.app) return typeof r.app.remaining_s === 'number' ? r.app.remaining_s * 1000 : null;
  if (r.kind === 'mapping' && r.mapping) return r.mapping.remaining_ms ?? null;
  return null;
}

export function timeLeftView(r: PortRow): Child {
  const ms = rowRemainingMs(r);
  if (ms !== null) return fmtDuration(Math.max(0, ms));
  if (r.kind === 'forward') return h('span', { class: 'muted' }, 'no expiry');
  return h('span', { class: 'muted' }, '—');
}

/** Description, origin or what the row is, for the details column. */
export function detailView(r: PortRow): Child[] {
  if (r.kind === 'service' && r.service) return [h('span', { class: 'muted' }, 'listening on '), h('span', { class: 'mono' }, r.service.address || '—')];
  if (r.kind === 'forward' && r.forward) {
    return [r.forward.source === 'config' ? badge('from config', 'config') : null, r.forward.description ? h('span', { class: 'desc' }, r.forward.description) : h('span', { class: 'muted' }, 'no description')];
  }
  if (r.kind === 'app' && r.app) return [badge(originLabel(r.app.origin), 'origin'), r.app.description ? h('span', { class: 'desc' }, r.app.description) : null];
  if (r.kind === 'mapping' && r.mapping) {
    return [h('span', { class: 'muted' }, 'outgoing traffic'), typeof r.mapping.idle_ms === 'number' ? h('span', { class: 'muted small' }, ` · idle ${fmtDuration(r.mapping.idle_ms)}`) : null];
  }
  return [];
}

/** A device as a link to its page: its name, else its MAC. */
function deviceView(name: string | null, mac: string | null): Child {
  if (!name && !mac) return h('span', { class: 'muted' }, 'unknown device');
  const label = name || mac || '';
  const main = mac ? h('a', { href: devicePath(mac) }, label) : h('span', null, label);
  return [main, name && mac ? h('div', { class: 'dev-sub mono' }, mac) : null];
}

function whoView(r: PortRow): Child {
  if (r.kind === 'service' && r.service) {
    return [h('span', { class: 'proc' }, r.service.process || 'unknown process'), typeof r.service.pid === 'number' ? h('div', { class: 'small muted' }, `pid ${r.service.pid}`) : null];
  }
  return deviceView(rowDevice(r), rowMac(r));
}

function inOut(bytesIn: number, bytesOut: number, title?: string): HTMLElement {
  return h('span', { class: 'inout', title: title ?? null }, h('span', { class: 'r-down' }, '↓ ' + fmtBytes(bytesIn)), ' ', h('span', { class: 'r-up' }, '↑ ' + fmtBytes(bytesOut)));
}

function rangeText(first: number, last: number): string {
  return last > first ? `${first}–${last}` : String(first);
}

/** Text a row is found by in the filter box. */
function haystack(r: PortRow): string {
  const parts: (string | number | null | undefined)[] = [r.port, r.protocol, r.kind, KIND_LABEL[r.kind], rowDevice(r), rowMac(r), rowInternal(r)];
  if (r.service) parts.push(r.service.process, r.service.address, r.service.pid);
  if (r.forward) parts.push(r.forward.description, r.forward.source);
  if (r.app) parts.push(r.app.description, r.app.origin, originLabel(r.app.origin));
  return parts
    .filter((p) => p !== null && p !== undefined && p !== '')
    .join(' ')
    .toLowerCase();
}

/** Stable identity of a row across refreshes (the expanded state hangs on it). */
function rowKey(r: PortRow): string {
  let id = '';
  if (r.forward) id = 'f' + r.forward.id;
  else if (r.app) id = `a${r.app.origin}/${r.app.internal}`;
  else if (r.mapping) id = 'm' + r.mapping.internal;
  else if (r.service) id = `s${r.service.pid}/${r.service.address}`;
  return `${r.protocol}/${r.port}/${r.kind}/${id}`;
}

/** Rebuild a cell only when what it shows changed. */
const sigs = new WeakMap<Element, string>();
function put(cell: Element, sig: string, build: () => Child): void {
  if (sigs.get(cell) === sig) return;
  sigs.set(cell, sig);
  setChildren(cell, build());
}

// ---------- forward form ----------

interface DeviceChoice {
  mac: string;
  label: string;
}

function deviceChoices(devs: Device[]): DeviceChoice[] {
  const out: DeviceChoice[] = [];
  const seen = new Set<string>();
  for (const d of devs) {
    if (!d.mac) continue;
    const mac = d.mac.toLowerCase();
    if (seen.has(mac)) continue;
    seen.add(mac);
    const name = displayName(d);
    const label = name ? `${name} · ${d.ip ?? 'no address'} · ${d.mac}` : `${d.mac} · ${d.ip ?? 'no address'}`;
    out.push({ mac: d.mac, label });
  }
  out.sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true, sensitivity: 'base' }));
  return out;
}

/** Refill a device select, keeping its value (a MAC not in the list stays as its own option). */
function fillDeviceSelect(sel: HTMLSelectElement, choices: DeviceChoice[], want: string | null = null): void {
  const value = (want ?? sel.value).toLowerCase();
  const opts: HTMLOptionElement[] = [h('option', { value: '' }, choices.length ? 'Choose a device…' : 'No devices known yet')];
  let found = false;
  for (const c of choices) {
    const o = h('option', { value: c.mac }, c.label);
    if (c.mac.toLowerCase() === value) {
      o.selected = true;
      found = true;
    }
    opts.push(o);
  }
  if (value && !found) {
    const o = h('option', { value }, `${value} · not in the device list`);
    o.selected = true;
    opts.push(o);
  }
  setChildren(sel, opts);
}

const PORT_RE = /^\d{1,5}$/;

function parsePort(s: string): number | null {
  const t = s.trim();
  if (!PORT_RE.test(t)) return null;
  const n = Number(t);
  return n >= 1 && n <= 65535 ? n : null;
}

/** "8080" or "8080-8090" -> [first, last], or an error message. */
export function parseRange(s: string): [number, number] | string {
  const m = /^\s*(\d+)\s*(?:[-–]\s*(\d+))?\s*$/.exec(s);
  const bad = 'External port must be a number from 1 to 65535, or a range like 8080-8090';
  if (!m) return bad;
  const first = parsePort(m[1]);
  const last = m[2] === undefined ? first : parsePort(m[2]);
  if (first === null || last === null) return bad;
  if (first > last) return 'The first port of the range must not be above the last';
  return [first, last];
}

interface ForwardForm {
  form: HTMLFormElement;
  device: HTMLSelectElement;
  err: HTMLElement;
  submit: HTMLButtonElement;
  reset(): void;
}

/**
 * The fields of a forward, used by "New forward" (`init` null) and by the
 * inline edit form. `send` gets a validated body; its error goes next to the form.
 */
function forwardForm(opts: { idPrefix: string | null; init: Forward | null; choices: DeviceChoice[]; submitLabel: string; onCancel?: () => void; send: (b: ForwardBody) => Promise<void> }): ForwardForm {
  const id = (s: string) => (opts.idPrefix ? `${opts.idPrefix}-${s}` : null);
  const init = opts.init;
  const device = h('select', { id: id('device'), class: 'fwd-device', 'aria-label': 'Device', required: true });
  fillDeviceSelect(device, opts.choices, init?.mac ?? '');
  const protocol = h(
    'select',
    { id: id('protocol'), class: 'fwd-protocol', 'aria-label': 'Protocol' },
    (['tcp', 'udp', 'both'] as ForwardProtocol[]).map((p) => {
      const o = h('option', { value: p }, PROTO_LABEL[p]);
      if (init && init.protocol === p) o.selected = true;
      return o;
    }),
  );
  const external = h('input', {
    id: id('external'),
    class: 'fwd-external mono',
    type: 'text',
    placeholder: '8080 or 8080-8090',
    autocomplete: 'off',
    spellcheck: 'false',
    'aria-label': 'External port or range',
    value: init ? (init.external_last > init.external_first ? `${init.external_first}-${init.external_last}` : String(init.external_first)) : '',
  });
  const internal = h('input', { id: id('internal'), class: 'fwd-internal mono', type: 'number', min: 1, max: 65535, placeholder: 'same', title: 'Empty: the same as the (first) external port', 'aria-label': 'Internal port', value: init ? String(init.internal_port) : '' });
  const description = h('input', { id: id('description'), class: 'fwd-description', type: 'text', placeholder: 'e.g. web server', autocomplete: 'off', 'aria-label': 'Description', value: init?.description ?? '' });
  const submit = h('button', { id: id('submit'), class: 'btn btn-primary fwd-submit', type: 'submit' }, opts.submitLabel);
  const cancel = opts.onCancel ? h('button', { class: 'btn fwd-cancel', type: 'button', onclick: opts.onCancel }, 'Cancel') : null;
  const err = h('p', { id: id('error'), class: 'form-error fwd-error', role: 'alert' });
  const field = (label: string, input: HTMLElement, cls = '') => h('label', { class: 'fwd-field ' + cls }, h('span', { class: 'field-label' }, label), input);

  const inputs = [device, external, internal];
  function invalid(el: HTMLElement | null): void {
    for (const i of inputs) i.classList.toggle('invalid', i === el);
  }

  function read(): ForwardBody | { error: string; field: HTMLElement } {
    if (!device.value) return { error: 'Choose the device to forward to', field: device };
    const range = parseRange(external.value);
    if (typeof range === 'string') return { error: range, field: external };
    let internalPort = range[0];
    if (internal.value.trim() !== '' || internal.validity.badInput) {
      const p = parsePort(internal.value);
      if (p === null) return { error: 'Internal port must be a number from 1 to 65535', field: internal };
      internalPort = p;
    }
    if (internalPort + (range[1] - range[0]) > 65535) return { error: `Internal ports ${internalPort}–${internalPort + range[1] - range[0]} would run past 65535`, field: internal };
    return { mac: device.value, protocol: protocol.value as ForwardProtocol, external_first: range[0], external_last: range[1], internal_port: internalPort, description: description.value.trim() };
  }

  const form = h(
    'form',
    {
      class: 'fwd-form',
      novalidate: true,
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        const b = read();
        if ('error' in b) {
          setText(err, b.error);
          invalid(b.field);
          b.field.focus();
          return;
        }
        invalid(null);
        setText(err, '');
        submit.disabled = true;
        try {
          await opts.send(b);
        } catch (e) {
          if (isAbort(e)) return;
          // The server says why (taken port, unknown device, …): show it right here.
          setText(err, errorText(e));
        } finally {
          submit.disabled = false;
        }
      },
    },
    field('Device', device, 'wide'),
    field('Protocol', protocol, 'narrow'),
    field('External port', external),
    field('Internal port', internal, 'narrow'),
    field('Description', description, 'wide'),
    h('div', { class: 'fwd-buttons' }, submit, cancel),
  );
  form.addEventListener('input', () => {
    if (err.textContent) invalid(null);
  });
  return {
    form,
    device,
    err,
    submit,
    reset() {
      external.value = '';
      internal.value = '';
      description.value = '';
      setText(err, '');
      invalid(null);
    },
  };
}

// ---------- the page ----------

interface FwdView {
  f: Forward;
  tr: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  errTr: HTMLTableRowElement;
  errEl: HTMLElement;
  edit: { tr: HTMLTableRowElement; form: ForwardForm } | null;
}

interface RowView {
  key: string;
  row: PortRow;
  tr: HTMLTableRowElement;
  cells: HTMLTableCellElement[];
  toggle: HTMLButtonElement;
  noConn: HTMLElement;
  stable: HTMLButtonElement | null;
  errEl: HTMLElement;
  sub: HTMLTableRowElement;
  subCell: HTMLTableCellElement;
  hay: string;
  busy: boolean;
}

const PORT_COLS = 10;
const FWD_COLS = 9;

export const portsPage: PageFn = (root, scope) => {
  const params = new URLSearchParams(location.search);
  let filter = params.get('q') ?? '';
  let kindFilter = params.get('kind') ?? '';
  let choices: DeviceChoice[] = [];
  const expanded = new Set<string>();
  const rowViews = new Map<string, RowView>();
  const fwdViews = new Map<string, FwdView>();
  let wanIp: string | null = null;

  // ---------- head ----------
  const wanEl = h('p', { id: 'ports-wan', class: 'muted' }, 'Loading…');
  root.append(h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Ports'), wanEl)));

  function setWan(ip: string | null): void {
    wanIp = ip;
    setText(wanEl, ip ? `Public address ${ip} · what the internet can reach, and why` : 'No public (WAN) address right now');
  }

  // ---------- forwards ----------
  const fwdBody = h('tbody');
  const fwdTable = h(
    'table',
    { id: 'forwards', class: 'table forwards-table' },
    h(
      'thead',
      null,
      h('tr', null, h('th', null, 'External'), h('th', null, 'Protocol'), h('th', null, 'Device'), h('th', null, 'Internal'), h('th', null, 'Description'), h('th', null, 'State'), h('th', { class: 'num' }, 'In'), h('th', { class: 'num' }, 'Out'), h('th', { class: 'actions' }, 'Actions')),
    ),
    fwdBody,
  );
  const fwdEmpty = h('tr', null, h('td', { colspan: FWD_COLS, class: 'empty' }, 'No port forwards yet.'));
  const fwdCount = h('span', { class: 'muted small' });

  const newForm = forwardForm({
    idPrefix: 'fwd',
    init: null,
    choices,
    submitLabel: 'Add forward',
    send: async (b) => {
      await api<Forward>('/api/forwards', { method: 'POST', body: b, signal: scope.signal });
      toast(`Forward of ${b.protocol === 'both' ? 'TCP + UDP' : b.protocol.toUpperCase()} ${rangeText(b.external_first, b.external_last ?? b.external_first)} added`, 'ok');
      newForm.reset();
      await reload();
    },
  });

  root.append(
    h('section', { id: 'forwards-card', class: 'card' }, h('div', { class: 'card-head' }, h('h2', null, 'Forwards'), fwdCount), h('div', { class: 'table-scroll' }, fwdTable)),
    h(
      'section',
      { id: 'new-forward', class: 'card' },
      h('h2', null, 'New forward'),
      h('p', { class: 'muted small fwd-hint' }, 'Connections from the internet to the external port go to the device on the internal port. A range keeps its offset: 8080-8090 to internal port 80 forwards 8081 to 81, and so on.'),
      newForm.form,
      newForm.err,
    ),
  );

  function fwdRow(f: Forward): FwdView {
    const cells = Array.from({ length: FWD_COLS }, (_, i) => h('td', { class: ['ext mono', 'proto', 'device', 'internal mono', 'desc', 'state', 'num hits-in', 'num hits-out', 'actions'][i] }));
    const tr = h('tr', { 'data-forward': f.id }, cells);
    const errEl = h('div', { class: 'form-error fwd-row-error', role: 'alert' });
    const errTr = h('tr', { class: 'err-row hidden' }, h('td', { colspan: FWD_COLS }, errEl));
    const v: FwdView = { f, tr, cells, errTr, errEl, edit: null };
    const actions = cells[FWD_COLS - 1];
    if (f.source === 'config') {
      actions.append(h('span', { class: 'muted small', title: 'Defined in the configuration file; edit it there.' }, 'from config'));
    } else {
      const edit = h('button', { class: 'btn btn-small fwd-edit', type: 'button' }, 'Edit');
      const del = h('button', { class: 'btn btn-small btn-danger fwd-delete', type: 'button' }, 'Delete');
      edit.addEventListener('click', () => (v.edit ? closeEdit(v) : openEdit(v)));
      del.addEventListener('click', () => void remove(v, del));
      actions.append(edit, del);
    }
    return v;
  }

  function setRowError(v: { errEl: HTMLElement; errTr?: HTMLTableRowElement }, msg: string): void {
    setText(v.errEl, msg);
    v.errTr?.classList.toggle('hidden', !msg);
  }

  function openEdit(v: FwdView): void {
    setRowError(v, '');
    const form = forwardForm({
      idPrefix: null,
      init: v.f,
      choices,
      submitLabel: 'Save',
      onCancel: () => closeEdit(v),
      send: async (b) => {
        await api<Forward>(`/api/forwards/${encodeURIComponent(v.f.id)}`, { method: 'PUT', body: b, signal: scope.signal });
        toast('Forward saved', 'ok');
        closeEdit(v);
        await reload();
      },
    });
    const tr = h('tr', { class: 'edit-row', 'data-edit': v.f.id }, h('td', { colspan: FWD_COLS }, form.form, form.err));
    v.edit = { tr, form };
    v.tr.classList.add('editing');
    v.tr.after(tr);
    form.device.focus();
  }

  function closeEdit(v: FwdView): void {
    v.edit?.tr.remove();
    v.edit = null;
    v.tr.classList.remove('editing');
  }

  async function remove(v: FwdView, btn: HTMLButtonElement): Promise<void> {
    const f = v.f;
    const who = f.device || f.mac || 'its device';
    if (!confirm(`Delete the forward of ${protoLabel(f.protocol)} ${rangeText(f.external_first, f.external_last)} to ${who}?`)) return;
    btn.disabled = true;
    setRowError(v, '');
    try {
      await api(`/api/forwards/${encodeURIComponent(f.id)}`, { method: 'DELETE', signal: scope.signal });
      toast('Forward deleted', 'ok');
      await reload();
    } catch (e) {
      if (isAbort(e) || !scope.alive) return;
      setRowError(v, errorText(e));
    } finally {
      btn.disabled = false;
    }
  }

  function fillFwd(v: FwdView): void {
    const f = v.f;
    const [ext, proto, dev, internal, desc, state, hin, hout] = v.cells;
    put(ext, `${f.external_first}-${f.external_last}`, () => rangeText(f.external_first, f.external_last));
    put(proto, f.protocol, () => protoLabel(f.protocol));
    put(dev, JSON.stringify([f.device, f.mac]), () => deviceView(f.device, f.mac));
    put(internal, JSON.stringify([f.ip, f.internal_port, f.external_first, f.external_last]), () => {
      const last = f.internal_port + (f.external_last - f.external_first);
      const ports = f.external_last > f.external_first && last <= 65535 ? `${f.internal_port}–${last}` : String(f.internal_port);
      return f.ip ? `${f.ip}:${ports}` : [h('span', { class: 'muted' }, 'no address'), `:${ports}`];
    });
    put(desc, f.description ?? '', () => (f.description ? f.description : h('span', { class: 'muted' }, '—')));
    put(state, JSON.stringify([f.active, f.inactive_reason]), () => [
      f.active ? badge('active', 'ok') : badge('inactive', 'expired'),
      !f.active && f.inactive_reason ? h('div', { class: 'small muted inactive-reason' }, f.inactive_reason) : null,
    ]);
    put(hin, JSON.stringify([f.packets_in, f.bytes_in, f.connections]), () => [h('div', { class: 'r-down' }, fmtBytes(f.bytes_in)), h('div', { class: 'small muted' }, `${fmtCount(f.packets_in)} pkts`)]);
    put(hout, JSON.stringify([f.packets_out, f.bytes_out, f.connections]), () => [
      h('div', { class: 'r-up' }, fmtBytes(f.bytes_out)),
      h('div', { class: 'small muted' }, `${fmtCount(f.packets_out)} pkts`, f.connections ? ` · ${fmtCount(f.connections)} conn.` : ''),
    ]);
    v.tr.classList.toggle('inactive', !f.active);
  }

  function renderForwards(list: Forward[]): void {
    const sorted = list.slice().sort((a, b) => a.external_first - b.external_first || a.protocol.localeCompare(b.protocol) || a.id.localeCompare(b.id));
    const seen = new Set<string>();
    const order: HTMLTableRowElement[] = [];
    for (const f of sorted) {
      seen.add(f.id);
      let v = fwdViews.get(f.id);
      // A forward that changed source gets other buttons: rebuild it.
      if (v && v.f.source !== f.source) {
        closeEdit(v);
        v.tr.remove();
        v.errTr.remove();
        v = undefined;
      }
      if (!v) {
        v = fwdRow(f);
        fwdViews.set(f.id, v);
      }
      v.f = f;
      fillFwd(v);
      order.push(v.tr);
      if (v.edit) order.push(v.edit.tr);
      order.push(v.errTr);
    }
    for (const [id, v] of fwdViews) {
      if (seen.has(id)) continue;
      v.tr.remove();
      v.errTr.remove();
      v.edit?.tr.remove();
      fwdViews.delete(id);
    }
    if (!order.length) order.push(fwdEmpty);
    else fwdEmpty.remove();
    order.forEach((tr, i) => {
      if (fwdBody.children[i] !== tr) fwdBody.insertBefore(tr, fwdBody.children[i] ?? null);
    });
    while (fwdBody.children.length > order.length) fwdBody.lastElementChild?.remove();
    const n = list.length;
    setText(fwdCount, n ? `${n} forward${n === 1 ? '' : 's'} · ${list.filter((f) => f.active).length} active` : '');
  }

  // ---------- open ports ----------
  const filterInput = h('input', {
    id: 'ports-filter',
    type: 'search',
    placeholder: 'Filter by port, device or process',
    value: filter,
    autocomplete: 'off',
    'aria-label': 'Filter ports',
  });
  const kindSelect = h(
    'select',
    { id: 'ports-kind', 'aria-label': 'Kind' },
    h('option', { value: '' }, 'All kinds'),
    h('option', { value: 'service' }, 'Services'),
    h('option', { value: 'forward' }, 'Forwards'),
    h('option', { value: 'app' }, 'App mappings'),
    h('option', { value: 'mapping' }, 'NAT mappings'),
  );
  kindSelect.value = known(KIND_LABEL, kindFilter) ? kindFilter : '';
  kindFilter = kindSelect.value;
  const portsSummary = h('span', { class: 'muted small' });
  const truncNote = h('p', { id: 'ports-truncated', class: 'muted small hidden' }, 'The gateway sent only part of the list (too many rows); the rest are not shown.');
  const portsBody = h('tbody');
  const portsTable = h(
    'table',
    { id: 'ports', class: 'table ports-table' },
    h(
      'thead',
      null,
      h(
        'tr',
        null,
        h('th', { class: 'conn-col', title: 'Connections' }, 'Conns'),
        h('th', { class: 'num' }, 'Port'),
        h('th', null, 'Proto'),
        h('th', null, 'Kind'),
        h('th', null, 'Who'),
        h('th', null, 'Internal'),
        h('th', null, 'Details'),
        h('th', null, 'Time left'),
        h('th', { class: 'num' }, 'Traffic'),
        h('th', { class: 'actions' }),
      ),
    ),
    portsBody,
  );
  const portsEmpty = h('div', { class: 'empty hidden' });
  root.append(
    h(
      'section',
      { id: 'ports-card', class: 'card' },
      h('div', { class: 'card-head' }, h('h2', null, 'Open ports'), portsSummary),
      h('div', { class: 'toolbar ports-toolbar' }, filterInput, kindSelect),
      h('div', { class: 'table-scroll' }, portsTable),
      portsEmpty,
      truncNote,
    ),
  );

  function syncUrl(): void {
    const p = new URLSearchParams();
    if (filter) p.set('q', filter);
    if (kindFilter) p.set('kind', kindFilter);
    const s = p.toString();
    history.replaceState(null, '', '/ports' + (s ? '?' + s : ''));
  }
  filterInput.addEventListener('input', () => {
    filter = filterInput.value;
    syncUrl();
    applyFilter();
  });
  kindSelect.addEventListener('change', () => {
    kindFilter = kindSelect.value;
    syncUrl();
    applyFilter();
  });

  function setExpanded(v: RowView, open: boolean): void {
    if (open) expanded.add(v.key);
    else expanded.delete(v.key);
    v.toggle.setAttribute('aria-expanded', String(open));
    v.tr.classList.toggle('expanded', open);
    fillConnections(v);
    applyFilterTo(v);
  }

  function makeRow(key: string, r: PortRow): RowView {
    const cls = ['conn-col', 'num port mono', 'proto', 'kind', 'who', 'internal mono', 'details', 'left', 'num traffic', 'actions'];
    const cells = cls.map((c) => h('td', { class: c }));
    const toggle = h('button', { class: 'btn btn-small conn-toggle', type: 'button', 'aria-expanded': 'false', title: 'Show connections' });
    const noConn = h('span', { class: 'muted small no-conn', title: 'No connections' }, '0');
    cells[0].append(toggle, noConn);
    const errEl = h('div', { class: 'form-error', role: 'alert' });
    let stable: HTMLButtonElement | null = null;
    if (r.kind === 'mapping') {
      stable = h('button', { class: 'btn btn-small make-forward', type: 'button' }, 'Make stable forward');
      const b = stable;
      b.addEventListener('click', () => void makeStable(v, b));
      cells[9].append(stable);
    }
    cells[9].append(errEl);
    const tr = h('tr', { 'data-key': key, 'data-kind': r.kind, 'data-port': r.port, 'data-protocol': r.protocol }, cells);
    const subCell = h('td', { colspan: PORT_COLS });
    const sub = h('tr', { class: 'conn-row hidden', 'data-conns-of': key }, subCell);
    const v: RowView = { key, row: r, tr, cells, toggle, noConn, stable, errEl, sub, subCell, hay: '', busy: false };
    toggle.addEventListener('click', () => setExpanded(v, !expanded.has(key)));
    return v;
  }

  async function makeStable(v: RowView, btn: HTMLButtonElement): Promise<void> {
    const r = v.row;
    const mac = r.mapping?.mac;
    const internalPort = portOf(r.mapping?.internal);
    if (!mac || internalPort === null) return;
    btn.disabled = true;
    v.busy = true;
    setText(v.errEl, '');
    try {
      await api<Forward>('/api/forwards', { method: 'POST', body: { mac, protocol: r.protocol, external_first: r.port, internal_port: internalPort, description: '' } satisfies ForwardBody, signal: scope.signal });
      toast(`${r.protocol.toUpperCase()} ${r.port} is now forwarded to ${r.mapping?.device || mac}`, 'ok');
      await reload();
    } catch (e) {
      if (isAbort(e) || !scope.alive) return;
      setText(v.errEl, errorText(e));
    } finally {
      v.busy = false;
      if (scope.alive) fillRow(v);
    }
  }

  function fillConnections(v: RowView): void {
    const r = v.row;
    const open = expanded.has(v.key);
    const conns = r.connections ?? [];
    if (!open) {
      put(v.subCell, '', () => null);
      return;
    }
    put(v.subCell, JSON.stringify([conns, r.connections_total]), () => connectionsView(conns, r.connections_total));
  }

  function fillRow(v: RowView): void {
    const r = v.row;
    const c = v.cells;
    const conns = r.connections ?? [];
    const total = typeof r.connections_total === 'number' ? r.connections_total : conns.length;
    v.toggle.classList.toggle('hidden', total === 0 && conns.length === 0);
    v.noConn.classList.toggle('hidden', total > 0 || conns.length > 0);
    setText(v.toggle, `${expanded.has(v.key) ? '▾' : '▸'} ${fmtCount(total)}`);
    v.toggle.title = `${fmtCount(total)} connection${total === 1 ? '' : 's'} · click to ${expanded.has(v.key) ? 'hide' : 'show'}`;
    put(c[1], String(r.port), () => String(r.port));
    put(c[2], r.protocol, () => String(r.protocol).toUpperCase());
    put(c[3], r.kind, () => kindBadge(r.kind));
    put(c[4], JSON.stringify([r.service, rowDevice(r), rowMac(r)]), () => whoView(r));
    put(c[5], JSON.stringify([r.kind, rowInternal(r)]), () => (r.kind === 'service' ? h('span', { class: 'muted' }, 'this gateway') : rowInternal(r) ?? h('span', { class: 'muted' }, '—')));
    put(c[6], JSON.stringify([r.kind, r.forward?.source, r.forward?.description, r.app?.origin, r.app?.description, r.service?.address, r.mapping ? Math.round((r.mapping.idle_ms ?? -1) / 1000) : null]), () => detailView(r));
    const left = rowRemainingMs(r);
    put(c[7], JSON.stringify([r.kind, left === null ? null : Math.round(left / 1000)]), () => timeLeftView(r));
    const m = r.mapping;
    put(c[8], JSON.stringify(m ? [m.bytes_in, m.bytes_out, m.packets_in, m.packets_out] : null), () =>
      m ? inOut(m.bytes_in, m.bytes_out, `in: ${fmtCount(m.packets_in)} packets · out: ${fmtCount(m.packets_out)} packets`) : h('span', { class: 'muted' }, '—'),
    );
    if (v.stable && m) {
      const port = portOf(m.internal);
      const why = !m.mac ? 'The device of this mapping has no known MAC, so it cannot be forwarded' : port === null ? 'The internal address has no port' : null;
      // Keep it disabled while its own request runs (fillRow runs again when it ends).
      v.stable.disabled = !!why || v.busy;
      v.stable.title = why ?? `Forward ${r.protocol.toUpperCase()} ${r.port}${wanIp ? ' on ' + wanIp : ''} to ${m.internal} permanently, so it stays when this mapping expires`;
    }
    v.tr.classList.toggle('has-conns', total > 0);
    fillConnections(v);
    v.hay = haystack(r);
  }

  function applyFilterTo(v: RowView): boolean {
    const tokens = filter.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const ok = (!kindFilter || v.row.kind === kindFilter) && tokens.every((t) => v.hay.includes(t));
    v.tr.classList.toggle('hidden', !ok);
    v.sub.classList.toggle('hidden', !ok || !expanded.has(v.key));
    return ok;
  }

  function applyFilter(): void {
    let shown = 0;
    for (const v of rowViews.values()) if (applyFilterTo(v)) shown++;
    const n = rowViews.size;
    portsEmpty.classList.toggle('hidden', shown > 0);
    setText(portsEmpty, n === 0 ? 'Nothing is open to the internet.' : 'No row matches this filter.');
    setText(portsSummary, `${n} row${n === 1 ? '' : 's'}` + (shown !== n ? ` · ${shown} shown` : ''));
  }

  function renderPorts(resp: PortsResp): void {
    setWan(resp.wan_ip ?? null);
    const seen = new Map<string, number>();
    const order: HTMLTableRowElement[] = [];
    const keep = new Set<string>();
    for (const r of resp.rows ?? []) {
      // Two rows with the same identity get a counter, so keys stay unique.
      const base = rowKey(r);
      const n = seen.get(base) ?? 0;
      seen.set(base, n + 1);
      const key = n ? `${base}#${n}` : base;
      keep.add(key);
      let v = rowViews.get(key);
      if (!v) {
        v = makeRow(key, r);
        rowViews.set(key, v);
      }
      v.row = r;
      fillRow(v);
      order.push(v.tr, v.sub);
    }
    for (const [key, v] of rowViews) {
      if (keep.has(key)) continue;
      v.tr.remove();
      v.sub.remove();
      rowViews.delete(key);
    }
    // Forget expanded rows that are gone, so a later row with the same key starts closed.
    for (const key of expanded) if (!keep.has(key)) expanded.delete(key);
    // appendChild/insertBefore move rows: focus and hover stay where they are.
    order.forEach((tr, i) => {
      if (portsBody.children[i] !== tr) portsBody.insertBefore(tr, portsBody.children[i] ?? null);
    });
    truncNote.classList.toggle('hidden', !resp.truncated);
    applyFilter();
  }

  // ---------- loading ----------
  let portsSeq = 0;
  async function loadPorts(): Promise<void> {
    const my = ++portsSeq;
    const r = await api<PortsResp>('/api/ports', { signal: scope.signal });
    if (my !== portsSeq || !scope.alive) return;
    renderPorts(r);
  }

  let fwdSeq = 0;
  async function loadForwards(): Promise<void> {
    const my = ++fwdSeq;
    const r = await api<ForwardsResp>('/api/forwards', { signal: scope.signal });
    if (my !== fwdSeq || !scope.alive) return;
    if (r.wan_ip !== undefined && wanIp === null) setWan(r.wan_ip);
    renderForwards(r.forwards ?? []);
  }

  async function loadDevices(): Promise<void> {
    const r = await api<{ devices: Device[] }>('/api/devices', { signal: scope.signal });
    if (!scope.alive) return;
    choices = deviceChoices(r.devices ?? []);
    // Refill without losing what is selected; skip a select that is open right now.
    const selects = [newForm.device, ...[...fwdViews.values()].flatMap((v) => (v.edit ? [v.edit.form.device] : []))];
    for (const s of selects) if (document.activeElement !== s) fillDeviceSelect(s, choices);
  }

  function report(res: PromiseSettledResult<unknown>[]): void {
    for (const r of res) if (r.status === 'rejected') showError(r.reason, scope);
  }

  async function reload(): Promise<void> {
    report(await Promise.allSettled([loadForwards(), loadPorts()]));
  }

  let busy = false;
  function tick(): void {
    // A slow gateway must not pile up requests.
    if (busy) return;
    busy = true;
    void reload().finally(() => {
      busy = false;
    });
  }

  busy = true;
  void Promise.allSettled([loadForwards(), loadPorts(), loadDevices()]).then((res) => {
    busy = false;
    report(res);
    scope.ready();
  });
  scope.interval(tick, REFRESH_MS);
  scope.interval(() => loadDevices().catch((e) => showError(e, scope)), DEVICES_MS);
};

function connectionsView(conns: PortConnection[], total: number): Child {
  if (!conns.length) return h('p', { class: 'muted small conn-none' }, total > 0 ? `${fmtCount(total)} connections, none listed.` : 'No connections right now.');
  const body = conns.map((c) =>
    h(
      'tr',
      null,
      h('td', { class: 'remote' }, h('span', { class: 'mono' }, c.remote), c.remote_name ? h('div', { class: 'small muted remote-name' }, c.remote_name) : null),
      h('td', { class: 'state' }, c.state ? c.state : h('span', { class: 'muted' }, '—')),
      h('td', { class: 'num' }, typeof c.age_ms === 'number' ? fmtDuration(c.age_ms) : '—'),
      h('td', { class: 'num' }, typeof c.idle_ms === 'number' ? fmtDuration(c.idle_ms) : '—'),
      h('td', { class: 'num' }, typeof c.remaining_ms === 'number' ? fmtDuration(Math.max(0, c.remaining_ms)) : '—'),
      h('td', { class: 'num r-down' }, fmtBytes(c.bytes_in)),
      h('td', { class: 'num r-up' }, fmtBytes(c.bytes_out)),
    ),
  );
  return [
    h(
      'table',
      { class: 'table conn-table' },
      h('thead', null, h('tr', null, h('th', null, 'Remote'), h('th', null, 'State'), h('th', { class: 'num' }, 'Age'), h('th', { class: 'num' }, 'Idle'), h('th', { class: 'num' }, 'Time left'), h('th', { class: 'num' }, '↓ In'), h('th', { class: 'num' }, '↑ Out'))),
      h('tbody', null, body),
    ),
    total > conns.length ? h('p', { class: 'muted small conn-more' }, `Showing ${fmtCount(conns.length)} of ${fmtCount(total)} connections.`) : null,
  ];
}

// ---------- device page section ----------

/** The device page's "Ports" card: rows of /api/ports that belong to one MAC. */
export function devicePortsCard(scope: Scope): { el: HTMLElement; load(mac: string | null): Promise<void> } {
  const body = h('tbody');
  const table = h(
    'table',
    { id: 'device-ports', class: 'table' },
    h('thead', null, h('tr', null, h('th', null, 'Kind'), h('th', null, 'Proto'), h('th', { class: 'num' }, 'External'), h('th', null, 'Internal'), h('th', null, 'Description'), h('th', null, 'Time left'))),
    body,
  );
  const all = h('a', { href: '/ports', class: 'small' }, 'All ports →');
  const el = h('section', { id: 'device-ports-card', class: 'card' }, h('div', { class: 'card-head' }, h('h2', null, 'Ports'), all), h('div', { class: 'table-scroll' }, table));
  const emptyRow = (text: string) => h('tr', null, h('td', { colspan: 6, class: 'empty' }, text));
  setChildren(body, emptyRow('Loading…'));
  let seq = 0;

  async function load(mac: string | null): Promise<void> {
    const my = ++seq;
    if (!mac) {
      setChildren(body, emptyRow('No MAC address known for this device, so no ports can be matched.'));
      return;
    }
    all.href = '/ports?q=' + encodeURIComponent(mac);
    const r = await api<PortsResp>('/api/ports', { signal: scope.signal });
    if (my !== seq || !scope.alive) return;
    const low = mac.toLowerCase();
    const rows = (r.rows ?? []).filter((p) => (rowMac(p) ?? '').toLowerCase() === low);
    if (!rows.length) {
      setChildren(body, emptyRow('No forwards, app mappings or NAT mappings for this device.'));
      return;
    }
    setChildren(
      body,
      rows.map((p) =>
        h(
          'tr',
          { 'data-kind': p.kind, 'data-port': p.port, 'data-protocol': p.protocol },
          h('td', { class: 'kind' }, kindBadge(p.kind)),
          h('td', { class: 'proto' }, String(p.protocol).toUpperCase()),
          h('td', { class: 'num mono' }, r.wan_ip ? h('span', { title: `${r.wan_ip}:${p.port}` }, String(p.port)) : String(p.port)),
          h('td', { class: 'mono' }, rowInternal(p) ?? '—'),
          h('td', { class: 'details' }, detailView(p)),
          h('td', { class: 'left' }, timeLeftView(p)),
        ),
      ),
    );
  }
  return { el, load };
}
