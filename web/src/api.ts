// All HTTP and WebSocket access to the gateway goes through here, so CSRF
// headers, 401 handling and error extraction live in one place.

export interface Session {
  authenticated: boolean;
  csrf: string | null;
  public_read: boolean;
}

export const session: Session = { authenticated: false, csrf: null, public_read: false };

export class ApiError extends Error {
  constructor(
    public status: number,
    message: string,
    public body: unknown = null,
    /** Already handled (e.g. redirected to login): don't show it. */
    public silent = false,
  ) {
    super(message);
  }
}

let unauthorized: () => void = () => {};
/** main.ts registers the redirect-to-login behaviour. */
export function onUnauthorized(fn: () => void): void {
  unauthorized = fn;
}

export interface ApiOptions {
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  body?: unknown;
  signal?: AbortSignal;
  /** Set for /api/login, where 401 means "wrong password". */
  no401Redirect?: boolean;
}

export async function api<T>(path: string, opts: ApiOptions = {}): Promise<T> {
  const method = opts.method ?? 'GET';
  const headers: Record<string, string> = { Accept: 'application/json' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    if (session.csrf) headers['X-CSRF-Token'] = session.csrf;
  }
  let res: Response;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      credentials: 'same-origin',
      signal: opts.signal,
      cache: 'no-store',
    });
  } catch (e) {
    if (isAbort(e)) throw e;
    throw new ApiError(0, 'Cannot reach the gateway (network error)');
  }
  if (res.status === 401 && !opts.no401Redirect) {
    session.authenticated = false;
    unauthorized();
    throw new ApiError(401, 'Please log in', null, true);
  }
  const text = await res.text();
  let data: unknown = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!res.ok) {
    const err = data && typeof data === 'object' && typeof (data as { error?: unknown }).error === 'string' ? (data as { error: string }).error : `${res.status} ${res.statusText || 'error'}`;
    throw new ApiError(res.status, err, data);
  }
  return data as T;
}

export function isAbort(e: unknown): boolean {
  return e instanceof DOMException && e.name === 'AbortError';
}

/** Query string from an object, skipping null/undefined values. */
export function qs(params: Record<string, string | number | null | undefined>): string {
  const parts: string[] = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === null || v === undefined || v === '') continue;
    parts.push(`${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`);
  }
  return parts.length ? '?' + parts.join('&') : '';
}

// ---------- API types ----------

export interface Rates {
  up: number;
  down: number;
}

export interface Device {
  device: string;
  mac: string | null;
  vendor: string | null;
  ip: string | null;
  hostname: string | null;
  name: string | null;
  lease_state: 'dynamic' | 'static' | 'expired' | null;
  first_seen_ms: number | null;
  last_seen_ms: number | null;
  last_second?: Rates;
  last_hour?: Rates;
  last_day?: Rates;
  total?: { up_bytes: number; down_bytes: number; up_packets: number; down_packets: number };
}

export interface LiveEntry {
  device?: string;
  remote?: string;
  up: number;
  down: number;
}

export interface LiveMsg {
  t: number;
  devices?: LiveEntry[];
  remotes?: LiveEntry[];
}

export interface TrafficResp {
  from: number;
  to: number;
  step: number;
  series: [number, number, number][];
}

export interface TrafficStats {
  from: number;
  to: number;
  up_bytes: number;
  down_bytes: number;
  up_packets: number;
  down_packets: number;
  avg_up_bps?: number | null;
  avg_down_bps?: number | null;
  peak_up_bps?: number | null;
  peak_up_at?: number | null;
  peak_down_bps?: number | null;
  peak_down_at?: number | null;
}

export interface TopEntry {
  device?: string;
  remote?: string;
  name: string | null;
  up_bytes: number;
  down_bytes: number;
  up_packets?: number;
  down_packets?: number;
}

export interface DnsEntry {
  device: string;
  device_name: string | null;
  unix_ms: number;
  name: string;
  qtype: string | number;
  rcode: string | number;
  latency_ms: number | null;
  answers: string[] | null;
  cached: boolean;
}

export interface Lease {
  mac: string;
  ip: string;
  hostname: string | null;
  name: string | null;
  kind: 'dynamic' | 'static';
  origin: 'lease' | 'ui' | 'config';
  expires_ms: number | null;
  active: boolean;
}

export interface Status {
  lan_interface: string;
  lan_ports: string[];
  subnet: string;
  router: string;
  wan: string | null;
  wan_address: string | null;
  upstreams: string[];
  port_forwards: unknown[];
}

export interface DnsStats {
  cache_entries: number;
  cache_size: number;
  queries: number;
  hits: number;
  misses: number;
  hit_rate: number;
  upstreams: {
    address: string;
    sent: number;
    answered: number;
    /** Attempts that timed out, failed or got an error answer. */
    missed: number;
    latency_ms: number | null;
    healthy: boolean;
  }[];
}

export type PortProtocol = 'tcp' | 'udp';
export type PortKind = 'service' | 'forward' | 'app' | 'mapping';
export type ForwardProtocol = 'tcp' | 'udp' | 'both';

/** One connection through an open port (GET /api/ports). */
export interface PortConnection {
  remote: string;
  remote_name: string | null;
  state: string | null;
  age_ms: number;
  idle_ms: number;
  remaining_ms: number | null;
  bytes_in: number;
  bytes_out: number;
}

/** One row of GET /api/ports: exactly one of service/forward/app/mapping is set, per `kind`. */
export interface PortRow {
  protocol: PortProtocol;
  port: number;
  kind: PortKind;
  service: { process: string; pid: number; address: string } | null;
  forward: { id: string; source: 'api' | 'config'; device: string | null; mac: string | null; internal: string | null; description: string } | null;
  app: { origin: 'nat-pmp' | 'pcp' | 'upnp'; device: string | null; mac: string | null; internal: string; description: string; remaining_s: number | null } | null;
  mapping: {
    internal: string;
    device: string | null;
    mac: string | null;
    idle_ms: number | null;
    remaining_ms: number | null;
    bytes_in: number;
    bytes_out: number;
    packets_in: number;
    packets_out: number;
  } | null;
  connections: PortConnection[];
  connections_total: number;
}

export interface PortsResp {
  wan_ip: string | null;
  rows: PortRow[];
  truncated: boolean;
}

/** A port forward (GET /api/forwards). */
export interface Forward {
  id: string;
  source: 'api' | 'config';
  mac: string | null;
  device: string | null;
  ip: string | null;
  protocol: ForwardProtocol;
  external_first: number;
  external_last: number;
  internal_port: number;
  description: string;
  active: boolean;
  inactive_reason: string | null;
  packets_in: number;
  bytes_in: number;
  packets_out: number;
  bytes_out: number;
  connections: number;
}

export interface ForwardsResp {
  wan_ip: string | null;
  forwards: Forward[];
}

/** Body of POST /api/forwards and PUT /api/forwards/{id}. */
export interface ForwardBody {
  mac: string;
  protocol: ForwardProtocol;
  external_first: number;
  external_last?: number;
  internal_port: number;
  description: string;
}

// ---------- live WebSocket ----------

export type LiveState = 'idle' | 'connecting' | 'on';
type LiveListener = (state: LiveState) => void;
const liveListeners = new Set<LiveListener>();
/** The top bar shows a "live" indicator from this. */
export function onLiveState(fn: LiveListener): void {
  liveListeners.add(fn);
}

/**
 * Subscribe to /api/live for a device ("all" for the whole network).
 * Reconnects with exponential backoff; returns a function that closes it.
 */
export function openLive(device: string, onMsg: (m: LiveMsg) => void): () => void {
  let ws: WebSocket | null = null;
  let closed = false;
  let delay = 500;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const emit = (c: LiveState) => liveListeners.forEach((f) => f(c));

  const connect = () => {
    const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
    ws = new WebSocket(`${proto}//${location.host}/api/live?device=${encodeURIComponent(device)}`);
    ws.onopen = () => emit('on');
    ws.onmessage = (ev) => {
      // Only reset the backoff once data flows, so an accept-then-close
      // server doesn't get hammered.
      delay = 500;
      if (typeof ev.data !== 'string') return;
      let m: LiveMsg;
      try {
        m = JSON.parse(ev.data) as LiveMsg;
      } catch {
        return;
      }
      if (m && typeof m.t === 'number') onMsg(m);
    };
    ws.onclose = () => {
      ws = null;
      if (closed) return;
      emit('connecting');
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 15000);
    };
  };
  emit('connecting');
  connect();
  return () => {
    closed = true;
    if (timer !== undefined) clearTimeout(timer);
    if (ws) {
      ws.onclose = null;
      ws.close();
    }
    emit('idle');
  };
}
