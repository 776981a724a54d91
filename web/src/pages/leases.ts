// DHCP leases: see who has which address, pin, edit or forget them.

import { api, type Lease } from '../api';
import { badge, fmtDateTime, fmtRel, h, setChildren, setText, toast } from '../dom';
import { devicePath, errorText, showError, type PageFn } from '../page';

function ipNum(ip: string): number {
  const p = ip.split('.').map(Number);
  return p.length === 4 && p.every((x) => x >= 0 && x < 256) ? ((p[0] * 256 + p[1]) * 256 + p[2]) * 256 + p[3] : Number.MAX_SAFE_INTEGER;
}

export const leasesPage: PageFn = (root, scope) => {
  const body = h('tbody');
  const rangeEl = h('p', { class: 'muted' });
  const table = h(
    'table',
    { id: 'leases', class: 'table' },
    h('thead', null, h('tr', null, h('th', null, 'MAC'), h('th', null, 'IP'), h('th', null, 'Name'), h('th', null, 'Kind'), h('th', null, 'Expires'), h('th', { class: 'actions' }, 'Actions'))),
    body,
  );
  root.append(h('div', { class: 'page-head' }, h('div', null, h('h1', null, 'Leases'), rangeEl)), h('section', { class: 'card' }, h('div', { class: 'table-scroll' }, table)));

  let editing: string | null = null; // MAC whose inline form is open

  async function mutate(btn: HTMLButtonElement, errEl: HTMLElement, fn: () => Promise<unknown>, ok: string): Promise<boolean> {
    btn.disabled = true;
    setText(errEl, '');
    try {
      await fn();
      toast(ok, 'ok');
      await load();
      return true;
    } catch (e) {
      if (!scope.alive) return false;
      setText(errEl, errorText(e));
      showError(e, scope);
      return false;
    } finally {
      btn.disabled = false;
    }
  }

  function editRow(l: Lease, errEl: HTMLElement): HTMLTableRowElement {
    const ip = h('input', { class: 'edit-ip mono', type: 'text', value: l.ip, inputmode: 'decimal', 'aria-label': 'IP address', required: true });
    const name = h('input', { class: 'edit-name', type: 'text', value: l.name ?? '', placeholder: l.hostname ?? 'name', 'aria-label': 'Name' });
    const save = h('button', { class: 'btn btn-primary btn-small edit-save', type: 'submit' }, 'Save');
    const cancel = h(
      'button',
      {
        class: 'btn btn-small edit-cancel',
        type: 'button',
        onclick: () => {
          editing = null;
          void load();
        },
      },
      'Cancel',
    );
    const form = h(
      'form',
      {
        class: 'inline-form lease-form',
        onsubmit: async (ev: Event) => {
          ev.preventDefault();
          const done = await mutate(save, errEl, () => api(`/api/leases/${encodeURIComponent(l.mac)}`, { method: 'PUT', body: { ip: ip.value.trim(), name: name.value.trim() } }), 'Lease saved');
          if (done) {
            editing = null;
            void load();
          }
        },
      },
      h('label', null, h('span', { class: 'field-label' }, 'IP'), ip),
      h('label', null, h('span', { class: 'field-label' }, 'Name'), name),
      save,
      cancel,
    );
    return h('tr', { class: 'edit-row', 'data-edit': l.mac }, h('td', { colspan: 6 }, form, errEl));
  }

  function row(l: Lease): HTMLTableRowElement[] {
    const errEl = h('div', { class: 'form-error lease-error', role: 'alert' });
    const actions = h('td', { class: 'actions' });
    const mac = encodeURIComponent(l.mac);
    if (l.origin === 'config') {
      actions.append(h('span', { class: 'muted small', title: 'Defined in the configuration file; edit it there.' }, 'from config'));
    } else {
      if (l.kind === 'dynamic') {
        const b = h('button', { class: 'btn btn-small make-static', type: 'button', title: 'Always give this device this address' }, 'Make static');
        b.addEventListener('click', () => void mutate(b, errEl, () => api(`/api/leases/${mac}`, { method: 'PUT', body: { ip: null } }), 'Address pinned'));
        actions.append(b);
      }
      if (l.kind === 'static' && l.origin === 'ui') {
        const b = h('button', { class: 'btn btn-small edit', type: 'button' }, 'Edit');
        b.addEventListener('click', () => {
          editing = editing === l.mac ? null : l.mac;
          void load();
        });
        actions.append(b);
      }
      const f = h('button', { class: 'btn btn-small btn-danger forget', type: 'button' }, 'Forget');
      f.addEventListener('click', () => {
        const who = l.name || l.hostname || l.mac;
        if (!confirm(`Forget the lease of ${who} (${l.ip})?`)) return;
        void mutate(f, errEl, () => api(`/api/leases/${mac}`, { method: 'DELETE' }), 'Lease forgotten');
      });
      actions.append(f);
    }
    const expires =
      l.kind === 'static' ? h('span', { class: 'muted' }, 'never') : l.expires_ms ? h('span', { title: fmtDateTime(l.expires_ms), class: l.expires_ms < Date.now() ? 'expired-text' : '' }, fmtRel(l.expires_ms)) : h('span', { class: 'muted' }, '—');
    const kind = h('td', { class: 'kind' }, badge(l.kind, l.kind), l.origin === 'config' ? badge('config', 'config') : null, l.active ? null : badge('inactive', 'expired'));
    const nm = l.name || l.hostname;
    const tr = h(
      'tr',
      { 'data-mac': l.mac, class: l.active ? '' : 'inactive' },
      h('td', { class: 'mac mono' }, h('a', { href: devicePath(l.mac) }, l.mac)),
      h('td', { class: 'ip mono' }, l.ip),
      h('td', { class: 'name' }, nm ? nm : h('span', { class: 'muted' }, '—'), l.name && l.hostname && l.name !== l.hostname ? h('div', { class: 'small muted' }, l.hostname) : null),
      kind,
      h('td', { class: 'expires' }, expires),
      actions,
    );
    const out = [tr];
    if (editing === l.mac) out.push(editRow(l, errEl));
    else out.push(h('tr', { class: 'err-row' }, h('td', { colspan: 6 }, errEl)));
    return out;
  }

  async function load(force = true): Promise<void> {
    const r = await api<{ leases: Lease[]; range?: [string, string] }>('/api/leases', { signal: scope.signal });
    const leases = (r.leases ?? []).slice().sort((a, b) => ipNum(a.ip) - ipNum(b.ip));
    if (r.range && r.range.length === 2) setText(rangeEl, `Dynamic range ${r.range[0]} – ${r.range[1]} · ${leases.length} lease${leases.length === 1 ? '' : 's'}`);
    // Don't wipe a form the user is typing in.
    const focused = document.activeElement;
    if (editing && focused && body.contains(focused) && focused.tagName === 'INPUT') return;
    // Keep an error visible until the user acts again.
    if (!force && [...body.querySelectorAll('.lease-error')].some((e) => e.textContent)) return;
    setChildren(body, leases.length ? leases.map(row) : h('tr', null, h('td', { colspan: 6, class: 'empty' }, 'No leases yet.')));
  }

  load()
    .catch((e) => showError(e, scope))
    .finally(() => scope.ready());
  scope.interval(() => load(false).catch((e) => showError(e, scope)), 15_000);
};
