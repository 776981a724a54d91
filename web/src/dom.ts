// DOM building and formatting helpers.
//
// Everything the API returns is treated as hostile text: elements are only
// ever built with createElement, and string children become text nodes.

export type Child = Node | string | number | null | undefined | false | Child[];
type Listener = (ev: any) => void;
export type Attrs = Record<string, string | number | boolean | null | undefined | Listener>;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Attrs | null,
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith('on')) {
        // Only real functions become listeners; a string here would be an
        // inline handler, which we never create.
        if (typeof v === 'function') el.addEventListener(k.slice(2).toLowerCase(), v);
        continue;
      }
      if (typeof v === 'function') continue;
      if (k === 'class') el.className = String(v);
      else if (k === 'value' && 'value' in el) (el as HTMLInputElement).value = String(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el: Node, children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
}

/** Replace all children of `el`. */
export function setChildren(el: Node, ...children: Child[]): void {
  while (el.firstChild) el.removeChild(el.firstChild);
  append(el, children);
}

export function setText(el: Element, text: string): void {
  // Avoid touching the DOM when nothing changed (cheap per-tick updates).
  if (el.textContent !== text) el.textContent = text;
}

// ---------- formatters ----------

const UNITS = ['B', 'kB', 'MB', 'GB', 'TB', 'PB'];

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) return '—';
  let v = Math.abs(n);
  let i = 0;
  while (v >= 1000 && i < UNITS.length - 1) {
    v /= 1000;
    i++;
  }
  const s = i === 0 ? String(Math.round(v)) : v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2);
  return (n < 0 ? '-' : '') + s + ' ' + UNITS[i];
}

export function fmtRate(bytesPerSec: number | null | undefined): string {
  if (bytesPerSec === null || bytesPerSec === undefined || !isFinite(bytesPerSec)) return '—';
  return fmtBytes(bytesPerSec) + '/s';
}

/** Short rate for axes: "1.5M/s". */
export function fmtRateShort(v: number): string {
  if (v === 0) return '0';
  const short = ['', 'k', 'M', 'G', 'T'];
  let x = Math.abs(v);
  let i = 0;
  while (x >= 1000 && i < short.length - 1) {
    x /= 1000;
    i++;
  }
  const s = x >= 100 || Number.isInteger(x) ? x.toFixed(0) : x >= 10 ? x.toFixed(1).replace(/\.0$/, '') : x.toFixed(2).replace(/0$/, '').replace(/\.0?$/, '');
  return s + short[i] + 'B/s';
}

export function fmtCount(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) return '—';
  return n.toLocaleString();
}

function sameDay(a: Date, b: Date): boolean {
  return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** Local time if today, else local date and time. */
export function fmtWhen(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !ms) return '—';
  const d = new Date(ms);
  return sameDay(d, new Date()) ? d.toLocaleTimeString() : d.toLocaleString();
}

export function fmtTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—';
  return new Date(ms).toLocaleTimeString();
}

export function fmtDateTime(ms: number | null | undefined): string {
  if (ms === null || ms === undefined) return '—';
  return new Date(ms).toLocaleString();
}

/** "in 11 h", "5 min ago", "just now". */
export function fmtRel(ms: number | null | undefined, now = Date.now()): string {
  if (ms === null || ms === undefined) return '—';
  const diff = ms - now;
  const a = Math.abs(diff) / 1000;
  let s: string;
  if (a < 10) return 'just now';
  if (a < 60) s = `${Math.round(a)} s`;
  else if (a < 3600) s = `${Math.round(a / 60)} min`;
  else if (a < 86400 * 2) s = `${Math.round(a / 3600)} h`;
  else s = `${Math.round(a / 86400)} d`;
  return diff > 0 ? `in ${s}` : `${s} ago`;
}

export function fmtDuration(ms: number): string {
  const s = ms / 1000;
  if (s < 90) return `${Math.round(s)} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 86400 * 2) return `${+(s / 3600).toFixed(1)} h`;
  return `${+(s / 86400).toFixed(1)} d`;
}

// ---------- toasts ----------

let toastBox: HTMLElement | null = null;
const shown = new Map<string, HTMLElement>();

/** Show a short message; identical messages are merged so refresh loops don't pile up. */
export function toast(message: string, kind: 'error' | 'ok' = 'error'): void {
  if (!toastBox) {
    toastBox = h('div', { class: 'toasts', role: 'status', 'aria-live': 'polite' });
    document.body.appendChild(toastBox);
  }
  const existing = shown.get(message);
  if (existing) existing.remove();
  const el = h('div', { class: `toast ${kind}` }, h('span', null, message), h('button', { class: 'toast-x', 'aria-label': 'Dismiss', onclick: () => done() }, '×'));
  const done = () => {
    el.remove();
    if (shown.get(message) === el) shown.delete(message);
  };
  shown.set(message, el);
  toastBox.appendChild(el);
  setTimeout(done, kind === 'error' ? 7000 : 3000);
}

export function badge(text: string, kind: string): HTMLElement {
  return h('span', { class: `badge badge-${kind}` }, text);
}

/** A table wrapped in a horizontally scrolling box (for phones). */
export function scrollTable(table: HTMLTableElement): HTMLElement {
  return h('div', { class: 'table-scroll' }, table);
}

export function debounce<A extends unknown[]>(fn: (...a: A) => void, ms: number): (...a: A) => void {
  let t: ReturnType<typeof setTimeout> | undefined;
  return (...a: A) => {
    if (t !== undefined) clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
}

/** Run `fn` once per animation frame at most, with a timer fallback so it also
 *  runs when rAF is throttled (hidden tab, some headless setups). */
export function frameScheduler(fn: () => void): { schedule(): void; cancel(): void } {
  let pending = false;
  let raf = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const run = () => {
    if (!pending) return;
    pending = false;
    cancelAnimationFrame(raf);
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    fn();
  };
  return {
    schedule() {
      if (pending) return;
      pending = true;
      raf = requestAnimationFrame(run);
      timer = setTimeout(run, 250);
    },
    cancel() {
      pending = false;
      cancelAnimationFrame(raf);
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}

/** A labelled figure for the stats rows. */
export function statBox(label: string, value: string, sub?: string, cls = ''): HTMLElement {
  return h('div', { class: `stat ${cls}` }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value), sub ? h('div', { class: 'stat-sub' }, sub) : null);
}

