// Page lifecycle: every page gets a Scope that owns its timers, sockets and
// observers, and is torn down on navigation.

import { ApiError, isAbort } from './api';
import { toast } from './dom';

export class Scope {
  private cleanups: (() => void)[] = [];
  readonly abort = new AbortController();
  alive = true;

  get signal(): AbortSignal {
    return this.abort.signal;
  }

  onCleanup(fn: () => void): void {
    if (this.alive) this.cleanups.push(fn);
    else fn();
  }

  interval(fn: () => void, ms: number): void {
    const id = setInterval(() => {
      // Skip refreshes while the tab is hidden; they resume when visible.
      if (this.alive && document.visibilityState !== 'hidden') fn();
    }, ms);
    this.onCleanup(() => clearInterval(id));
  }

  /** Mark the page's first data as loaded (tests wait for this). */
  ready(): void {
    if (this.alive) document.body.dataset.ready = '1';
  }

  dispose(): void {
    if (!this.alive) return;
    this.alive = false;
    this.abort.abort();
    for (const f of this.cleanups.splice(0).reverse()) {
      try {
        f();
      } catch (e) {
        console.error(e);
      }
    }
  }
}

export type PageFn = (root: HTMLElement, scope: Scope, params: Record<string, string>) => void;

let navHandler: (path: string, replace: boolean) => void = () => {};
export function setNavHandler(fn: (path: string, replace: boolean) => void): void {
  navHandler = fn;
}

/** In-app navigation (pushState). */
export function navigate(path: string, replace = false): void {
  navHandler(path, replace);
}

/** Show an API error to the user, unless it was aborted or already handled. */
export function showError(e: unknown, scope?: Scope): void {
  if (isAbort(e)) return;
  if (scope && !scope.alive) return;
  if (e instanceof ApiError) {
    if (!e.silent) toast(e.message);
    return;
  }
  console.error(e);
  toast(e instanceof Error ? e.message : String(e));
}

export function errorText(e: unknown): string {
  if (e instanceof Error) return e.message;
  return String(e);
}

export function devicePath(device: string): string {
  return '/devices/' + encodeURIComponent(device);
}
