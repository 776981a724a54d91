// Boot, top bar and the client-side router (real paths + pushState).

import { api, onLiveState, onUnauthorized, session, type Session } from './api';
import { h, setChildren, toast } from './dom';
import { Scope, setNavHandler, showError, type PageFn } from './page';
import { devicesPage } from './pages/devices';
import { devicePage } from './pages/device';
import { networkPage } from './pages/network';
import { leasesPage } from './pages/leases';
import { dnsPage } from './pages/dns';
import { portsPage } from './pages/ports';
import { loginPage } from './pages/login';

interface Route {
  match: (path: string) => Record<string, string> | null;
  page: PageFn;
  nav?: string;
  title: string;
}

const exact = (p: string) => (path: string) => (path === p ? {} : null);

const routes: Route[] = [
  { match: exact('/'), page: devicesPage, nav: '/', title: 'Devices' },
  {
    match: (path) => {
      const m = /^\/devices\/([^/]+)\/?$/.exec(path);
      if (!m) return null;
      try {
        return { device: decodeURIComponent(m[1]) };
      } catch {
        return null;
      }
    },
    page: devicePage,
    nav: '/',
    title: 'Device',
  },
  { match: exact('/network'), page: networkPage, nav: '/network', title: 'Network' },
  { match: exact('/ports'), page: portsPage, nav: '/ports', title: 'Ports' },
  { match: exact('/leases'), page: leasesPage, nav: '/leases', title: 'Leases' },
  { match: exact('/dns'), page: dnsPage, nav: '/dns', title: 'DNS' },
  { match: exact('/login'), page: loginPage, title: 'Log in' },
];

const NAV: [string, string][] = [
  ['/', 'Devices'],
  ['/network', 'Network'],
  ['/ports', 'Ports'],
  ['/leases', 'Leases'],
  ['/dns', 'DNS'],
];

const app = document.getElementById('app') as HTMLElement;
let current: Scope | null = null;

const navLinks = new Map<string, HTMLAnchorElement>();
const liveDot = h('span', { class: 'live-dot idle', title: 'Live updates' });
const authBox = h('div', { class: 'auth' });
const main = h('main', { id: 'main' });

function topBar(): HTMLElement {
  const links = NAV.map(([href, label]) => {
    const a = h('a', { href, class: 'nav-link' }, label);
    navLinks.set(href, a);
    return a;
  });
  return h(
    'header',
    { class: 'topbar' },
    h('div', { class: 'topbar-inner' }, h('a', { href: '/', class: 'brand' }, h('span', { class: 'brand-mark', 'aria-hidden': 'true' }), 'Gatekeeper'), h('nav', { class: 'nav' }, links), h('div', { class: 'topbar-right' }, liveDot, authBox)),
  );
}

function renderAuth(path: string): void {
  if (path === '/login') {
    setChildren(authBox);
    return;
  }
  if (session.authenticated) {
    setChildren(authBox, h('button', { id: 'logout', class: 'btn btn-ghost', onclick: logout }, 'Log out'));
  } else {
    setChildren(authBox, h('a', { href: '/login?next=' + encodeURIComponent(path), class: 'btn btn-ghost' }, 'Log in'));
  }
}

async function logout(): Promise<void> {
  try {
    await api('/api/logout', { method: 'POST' });
  } catch (e) {
    showError(e);
  }
  session.authenticated = false;
  session.csrf = null;
  go('/login', true);
}

function currentPath(): string {
  return location.pathname + location.search;
}

function render(): void {
  current?.dispose();
  delete document.body.dataset.ready;
  const scope = new Scope();
  current = scope;

  const path = location.pathname;
  if (path !== '/login' && !session.authenticated && !session.public_read) {
    go('/login?next=' + encodeURIComponent(currentPath()), true);
    return;
  }

  let route: Route | undefined;
  let params: Record<string, string> | null = null;
  for (const r of routes) {
    params = r.match(path);
    if (params) {
      route = r;
      break;
    }
  }
  for (const [href, a] of navLinks) a.classList.toggle('active', !!route && route.nav === href);
  renderAuth(path);
  document.body.classList.toggle('login-mode', path === '/login');

  const root = h('div', { class: 'page' });
  setChildren(main, root);
  window.scrollTo(0, 0);
  if (!route || !params) {
    document.title = 'Not found · Gatekeeper';
    root.append(h('section', { class: 'card empty' }, h('h1', null, 'Page not found'), h('p', null, h('a', { href: '/' }, 'Back to devices'))));
    scope.ready();
    return;
  }
  document.title = `${route.title} · Gatekeeper`;
  try {
    route.page(root, scope, params);
  } catch (e) {
    showError(e);
  }
}

function go(path: string, replace = false): void {
  if (replace) history.replaceState(null, '', path);
  else if (path !== currentPath()) history.pushState(null, '', path);
  render();
}

setNavHandler(go);

// Intercept same-origin link clicks for in-app navigation.
document.addEventListener('click', (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = (ev.target as Element | null)?.closest?.('a');
  if (!a || a.hasAttribute('download') || a.target) return;
  const href = a.getAttribute('href');
  if (!href || !href.startsWith('/') || href.startsWith('//') || href.startsWith('/api/')) return;
  ev.preventDefault();
  go(href);
});

window.addEventListener('popstate', render);

onUnauthorized(() => {
  if (location.pathname === '/login') return;
  go('/login?next=' + encodeURIComponent(currentPath()), true);
});

onLiveState((st) => {
  liveDot.classList.toggle('on', st === 'on');
  liveDot.classList.toggle('idle', st === 'idle');
  liveDot.title = st === 'on' ? 'Live: connected' : 'Live: connecting…';
});


async function boot(): Promise<void> {
  setChildren(app, topBar(), main);
  // The server already sends a page load without a session to /login; this only learns the CSRF token.
  let s: Session | null = null;
  try {
    s = await api<Session>('/api/session', { no401Redirect: true });
  } catch (e) {
    // Without a session answer, assume login is needed.
    if (e instanceof Error) toast(e.message);
  }
  if (s) {
    session.authenticated = !!s.authenticated;
    session.csrf = s.csrf ?? null;
    session.public_read = !!s.public_read;
  }
  render();
}

void boot();
