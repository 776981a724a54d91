// uPlot wrappers (rate charts) and the hand-drawn table sparkline.

import uPlot from 'uplot';
import { fmtRate, fmtRateShort, h, setChildren } from './dom';
import type { Scope } from './page';

export interface Theme {
  up: string;
  down: string;
  upFill: string;
  downFill: string;
  grid: string;
  text: string;
  muted: string;
  spark: string;
  sparkFill: string;
}

/** Colors come from CSS variables so light/dark themes apply to charts too. */
export function theme(): Theme {
  const cs = getComputedStyle(document.documentElement);
  const v = (n: string, d: string) => cs.getPropertyValue(n).trim() || d;
  return {
    up: v('--up', '#f59e0b'),
    down: v('--down', '#2563eb'),
    upFill: v('--up-fill', 'rgba(245,158,11,.15)'),
    downFill: v('--down-fill', 'rgba(37,99,235,.15)'),
    grid: v('--grid', 'rgba(0,0,0,.08)'),
    text: v('--text', '#111'),
    muted: v('--muted', '#666'),
    spark: v('--spark', '#2563eb'),
    sparkFill: v('--spark-fill', 'rgba(37,99,235,.2)'),
  };
}

// The current theme; refreshed in place when the color scheme flips so
// charts repaint without reloading the page.
let current: Theme | null = null;
const charts = new Set<uPlot>();
const themeListeners = new Set<() => void>();
export function currentTheme(): Theme {
  return (current ??= theme());
}
/** Pages with hand-drawn canvases redraw through this. */
export function onThemeChange(fn: () => void, scope: Scope): void {
  themeListeners.add(fn);
  scope.onCleanup(() => themeListeners.delete(fn));
}
window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => {
  current = theme();
  for (const u of charts) {
    // Legend markers are styled once at init; update them too.
    u.root.querySelectorAll<HTMLElement>('.u-legend .u-series').forEach((row) => {
      const m = row.querySelector<HTMLElement>('.u-marker');
      const label = row.querySelector('.u-label')?.textContent;
      if (!m || (label !== 'Down' && label !== 'Up')) return;
      m.style.borderColor = label === 'Down' ? current!.down : current!.up;
      m.style.background = label === 'Down' ? current!.downFill : current!.upFill;
    });
    u.redraw(false);
  }
  themeListeners.forEach((f) => f());
});

export type RateData = [number[], (number | null)[], (number | null)[]];

export interface RateChart {
  u: uPlot;
  setData(d: RateData, resetScales?: boolean): void;
  /** Fix the x range (seconds), e.g. to show the full requested window. */
  setRange(fromS: number, toS: number): void;
}

export interface RateChartOpts {
  height?: number;
  /** Called with a dragged range in ms; enables drag-to-select. */
  onSelect?: (fromMs: number, toMs: number) => void;
  /** Live charts don't animate legend/cursor and skip points. */
  live?: boolean;
}

/**
 * A two-series (down, up) rate chart sized to `el`. x values are unix
 * seconds (uPlot's default), y values bytes/s.
 */
export function rateChart(el: HTMLElement, scope: Scope, opts: RateChartOpts = {}): RateChart {
  const t = currentTheme;
  const height = opts.height ?? 240;
  const axis = (): uPlot.Axis => ({
    stroke: () => t().muted,
    grid: { stroke: () => t().grid, width: 1 },
    ticks: { stroke: () => t().grid, width: 1 },
    font: '11px system-ui, sans-serif',
  });
  let fixed: [number, number] | null = null;
  const width = () => Math.max(200, el.clientWidth || 600);
  const options: uPlot.Options = {
    width: width(),
    height,
    cursor: {
      drag: { x: !!opts.onSelect, y: false, setScale: false },
      points: { show: !opts.live },
    },
    select: { show: !!opts.onSelect, left: 0, top: 0, width: 0, height: 0 },
    legend: { live: !opts.live },
    scales: {
      x: {
        time: true,
        range: (_u, min, max) => (fixed ? [fixed[0], fixed[1]] : [min, max]),
      },
      y: { range: (_u, _min, max) => [0, Math.max(max * 1.1, 1000)] },
    },
    axes: [
      axis(),
      {
        ...axis(),
        size: 64,
        values: (_u, splits) => splits.map((v) => fmtRateShort(v)),
      },
    ],
    series: [
      {},
      {
        label: 'Down',
        stroke: () => t().down,
        fill: () => t().downFill,
        width: 1.5,
        points: { show: false },
        value: (_u, v) => (v === null || v === undefined ? '—' : fmtRate(v)),
      },
      {
        label: 'Up',
        stroke: () => t().up,
        fill: () => t().upFill,
        width: 1.5,
        points: { show: false },
        value: (_u, v) => (v === null || v === undefined ? '—' : fmtRate(v)),
      },
    ],
    hooks: {
      setSelect: [
        (u) => {
          if (!opts.onSelect || u.select.width < 4) return;
          const a = u.posToVal(u.select.left, 'x');
          const b = u.posToVal(u.select.left + u.select.width, 'x');
          u.setSelect({ left: 0, top: 0, width: 0, height: 0 }, false);
          opts.onSelect(a * 1000, b * 1000);
        },
      ],
    },
  };
  const u = new uPlot(options, [[], [], []], el);
  charts.add(u);
  const ro = new ResizeObserver(() => {
    const w = width();
    if (w !== u.width) u.setSize({ width: w, height });
  });
  ro.observe(el);
  scope.onCleanup(() => {
    ro.disconnect();
    charts.delete(u);
    u.destroy();
  });
  return {
    u,
    setData(d, reset = true) {
      u.setData(d as uPlot.AlignedData, reset);
    },
    setRange(fromS, toS) {
      fixed = [fromS, toS];
      u.setScale('x', { min: fromS, max: toS });
    },
  };
}

/**
 * Draw a filled sparkline of `values` (oldest first) on a canvas. Many values
 * are folded into one pixel column by max, so 600 points on ~120 px is cheap.
 */
export function drawSpark(canvas: HTMLCanvasElement, values: ArrayLike<number>, t: Theme, floor = 100): number {
  const dpr = window.devicePixelRatio || 1;
  const cw = canvas.clientWidth || 120;
  const ch = canvas.clientHeight || 28;
  const W = Math.round(cw * dpr);
  const H = Math.round(ch * dpr);
  if (canvas.width !== W) canvas.width = W;
  if (canvas.height !== H) canvas.height = H;
  const ctx = canvas.getContext('2d');
  if (!ctx) return 0;
  ctx.clearRect(0, 0, W, H);
  const n = values.length;
  if (!n) return 0;
  let nonZero = 0;
  const cols = Math.max(1, Math.min(W, n));
  const colMax = new Float64Array(cols);
  let max = floor;
  for (let i = 0; i < n; i++) {
    const c = Math.min(cols - 1, Math.floor((i * cols) / n));
    const v = values[i];
    if (v > 0) nonZero++;
    if (v > colMax[c]) colMax[c] = v;
    if (v > max) max = v;
  }
  const pad = 1 * dpr;
  const y = (v: number) => H - pad - (v / max) * (H - 2 * pad);
  const x = (c: number) => (cols === 1 ? W : (c / (cols - 1)) * W);
  ctx.beginPath();
  ctx.moveTo(0, H);
  for (let c = 0; c < cols; c++) ctx.lineTo(x(c), y(colMax[c]));
  ctx.lineTo(W, H);
  ctx.closePath();
  ctx.fillStyle = t.sparkFill;
  ctx.fill();
  ctx.beginPath();
  for (let c = 0; c < cols; c++) {
    if (c === 0) ctx.moveTo(x(c), y(colMax[c]));
    else ctx.lineTo(x(c), y(colMax[c]));
  }
  ctx.strokeStyle = t.spark;
  ctx.lineWidth = 1.25 * dpr;
  ctx.stroke();
  return nonZero;
}

/**
 * Last 60 s of live ticks (100 ms each) keyed by tick number, so backlog
 * replays after a reconnect overwrite instead of double counting.
 */
export class LiveWindow {
  static readonly TICKS = 600;
  private up = new Float64Array(LiveWindow.TICKS);
  private down = new Float64Array(LiveWindow.TICKS);
  private tickAt = new Float64Array(LiveWindow.TICKS).fill(-1);
  latest = -1;

  put(tMs: number, up: number, down: number): void {
    const tick = Math.round(tMs / 100);
    if (tick <= this.latest - LiveWindow.TICKS) return; // too old
    const i = ((tick % LiveWindow.TICKS) + LiveWindow.TICKS) % LiveWindow.TICKS;
    this.tickAt[i] = tick;
    this.up[i] = up;
    this.down[i] = down;
    if (tick > this.latest) this.latest = tick;
  }

  /** Chart data as rates (bytes/s) plus the raw byte total in the window. */
  data(): { d: RateData; sum: number } {
    const N = LiveWindow.TICKS;
    const xs: number[] = new Array(N);
    const us: number[] = new Array(N);
    const ds: number[] = new Array(N);
    let sum = 0;
    const end = this.latest;
    for (let k = 0; k < N; k++) {
      const tick = end - N + 1 + k;
      const i = ((tick % N) + N) % N;
      xs[k] = tick / 10;
      if (this.tickAt[i] === tick) {
        us[k] = this.up[i] * 10;
        ds[k] = this.down[i] * 10;
        sum += this.up[i] + this.down[i];
      } else {
        us[k] = 0;
        ds[k] = 0;
      }
    }
    return { d: [xs, ds, us], sum };
  }
}

/**
 * Draws a live window into its chart and its "now" rates (the last second, 10 ticks), and leaves the window's
 * byte sum and the time on the chart element (`data-sum`, `data-updated`: the browser tests read them).
 */
export function showLive(chart: RateChart, lw: LiveWindow, el: HTMLElement, now: HTMLElement): void {
  const { d, sum } = lw.data();
  chart.setData(d);
  const n = d[0].length;
  let u = 0;
  let dn = 0;
  for (let i = Math.max(0, n - 10); i < n; i++) {
    u += (d[2][i] ?? 0) / 10;
    dn += (d[1][i] ?? 0) / 10;
  }
  setChildren(now, h('span', { class: 'r-down' }, '↓ ' + fmtRate(dn)), h('span', { class: 'r-up' }, '↑ ' + fmtRate(u)));
  el.dataset.sum = String(sum);
  el.dataset.updated = String(Date.now());
}
