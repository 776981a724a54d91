import { api, ApiError, session } from '../api';
import { h, setText } from '../dom';
import { navigate, type PageFn } from '../page';

/** Only same-site paths: "/x" but not "//evil.example" (open redirect). */
export function safeNext(next: string | null): string {
  if (!next || !next.startsWith('/') || next.startsWith('//') || next.startsWith('/\\') || next.startsWith('/login')) return '/';
  return next;
}

export const loginPage: PageFn = (root, scope) => {
  const next = safeNext(new URLSearchParams(location.search).get('next'));
  const pw = h('input', { id: 'password', type: 'password', name: 'password', autocomplete: 'current-password', required: true, placeholder: 'Password', 'aria-label': 'Password' });
  const btn = h('button', { id: 'login', type: 'submit', class: 'btn btn-primary btn-block' }, 'Log in');
  const err = h('p', { id: 'login-error', class: 'form-error', role: 'alert' });
  let retryTimer: ReturnType<typeof setInterval> | undefined;
  scope.onCleanup(() => clearInterval(retryTimer));

  const lockFor = (secs: number, msg: string) => {
    clearInterval(retryTimer);
    let left = Math.max(1, Math.ceil(secs));
    btn.disabled = true;
    const tick = () => {
      if (left <= 0) {
        clearInterval(retryTimer);
        btn.disabled = false;
        setText(err, msg);
        return;
      }
      setText(err, `${msg} Try again in ${left} s.`);
      left--;
    };
    tick();
    retryTimer = setInterval(tick, 1000);
  };

  const form = h(
    'form',
    {
      class: 'login-form',
      onsubmit: async (ev: Event) => {
        ev.preventDefault();
        setText(err, '');
        btn.disabled = true;
        try {
          const r = await api<{ csrf: string }>('/api/login', { method: 'POST', body: { password: pw.value }, no401Redirect: true });
          session.authenticated = true;
          session.csrf = r?.csrf ?? null;
          navigate(next, true);
        } catch (e) {
          if (!scope.alive) return;
          btn.disabled = false;
          if (e instanceof ApiError && e.status === 429) {
            const body = e.body as { retry_after_s?: number } | null;
            const secs = body && typeof body.retry_after_s === 'number' ? body.retry_after_s : 30;
            lockFor(secs, e.message || 'Too many attempts.');
          } else {
            setText(err, e instanceof Error ? e.message : String(e));
          }
          pw.select();
        }
      },
    },
    h('div', { class: 'login-logo', 'aria-hidden': 'true' }),
    h('h1', null, 'Gatekeeper'),
    h('p', { class: 'muted' }, 'Log in to manage your network.'),
    // For password managers; the gateway has a single admin account.
    h('input', { type: 'text', name: 'username', autocomplete: 'username', value: 'admin', class: 'hidden', 'aria-hidden': 'true', tabindex: -1 }),
    h('label', { class: 'sr-only', for: 'password' }, 'Password'),
    pw,
    btn,
    err,
  );
  root.append(h('section', { class: 'login-card card' }, form));
  pw.focus();
  scope.ready();
};
