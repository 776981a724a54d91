//! The sans-IO DNS core: a caching forwarder with a local zone. Fed client queries, upstream answers, failures and
//! the time; it answers from the cache or the local zone at once (`Handled::Replied`), or returns `Action`s for the
//! shell (send this query upstream, reply to that waiting client, close that upstream socket).
//!
//! Contract with the shell:
//! - Every `Action::Query { handle, .. }` ends with exactly one `Action::Cancel { handle }`: after its answer was
//!   accepted, after the shell reported a failure, on timeout, or when another attempt took over. Until then the
//!   shell keeps reading that socket and feeds what arrives to `handle_response` (a mismatching answer is ignored
//!   and the query keeps waiting, RFC 5452). After the Cancel it closes the socket.
//! - Call `handle_timeout(now)` at `next_timeout()` (which may be early: spurious calls are harmless).
//! - Replies are whole DNS messages; over TCP the shell adds the 2-byte length.
//!
//! The cached path (`handle_query` on a hit) parses the header and question by hand, looks the lowercased key up,
//! copies the stored wire answer into the caller's buffer and patches id, flags, the question's case and TTLs: no
//! allocation (given a `reply` buffer with capacity), no full decoder.

use super::cache::{Cache, Entry};
use super::local::{LocalZone, push_opt};
use super::log::{Device, LogEntry, Logged, QueryLog};
use super::wire::{self, Edns, Query, QueryError, Section};
use crate::labels::labelled_enum;
use crate::types::{Mac, Time};
use ipnet::Ipv4Net;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// Longest TTL we keep an answer (and the most we hand out): 1 day.
pub const MAX_TTL: u32 = 86_400;
/// Longest a negative answer is kept (RFC 2308 section 5 suggests 1-3 hours).
pub const MAX_NEGATIVE_TTL: u32 = 10_800;
/// Distinct questions waiting upstream at once; more are dropped (counted).
pub const MAX_PENDING: usize = 4096;
/// Clients waiting for one question.
pub const MAX_WAITERS: usize = 128;
/// Attempts per question, per upstream (TCP retries after a truncated answer not counted).
pub const ATTEMPTS_PER_UPSTREAM: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub upstreams: Vec<SocketAddr>,
    /// The local domain, "lan".
    pub domain: String,
    pub router_ip: Ipv4Addr,
    /// Names of the router itself in the local domain.
    pub router_names: Vec<String>,
    pub lan_subnet: Ipv4Net,
    pub cache_entries: usize,
    /// TTL of local-zone answers (and their SOA MINIMUM).
    pub local_ttl: u32,
    /// Per attempt.
    pub upstream_timeout_ms: u64,
    /// After this, SERVFAIL to every waiting client.
    pub total_timeout_ms: u64,
    pub log_entries_per_device: usize,
    /// Devices kept in the query log and the name map (least recently active evicted).
    pub max_devices: usize,
}

impl DnsConfig {
    pub fn new(router_ip: Ipv4Addr, lan_subnet: Ipv4Net, upstreams: Vec<SocketAddr>) -> Self {
        DnsConfig {
            upstreams,
            domain: crate::types::LOCAL_DOMAIN.into(),
            router_ip,
            router_names: vec!["gatekeeper".into(), "router".into()],
            lan_subnet,
            cache_entries: 10_000,
            local_ttl: 60,
            upstream_timeout_ms: 1000,
            total_timeout_ms: 4000,
            log_entries_per_device: 200,
            max_devices: 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Who asked: the shell's handle for the client. `conn` identifies a TCP connection (0 for UDP).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientRef {
    pub addr: SocketAddr,
    pub transport: Transport,
    pub conn: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueryHandle(pub u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// An answer for a client whose query was waiting. A full DNS message (no TCP length prefix).
    Reply { to: ClientRef, bytes: Vec<u8> },
    /// Send `bytes` to `upstream` from a fresh socket with a random source port (UDP) or over a new TCP connection,
    /// and report what comes back with `handle_response(handle, ..)` or `handle_failure(handle, ..)`.
    Query { handle: QueryHandle, upstream: SocketAddr, transport: Transport, bytes: Vec<u8> },
    /// The core is done with this upstream query: the shell closes its socket.
    Cancel { handle: QueryHandle },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    /// `reply` holds the answer.
    Replied,
    /// Forwarded or coalesced: the answer comes later as an `Action::Reply`.
    Pending,
    Dropped(DropReason),
}

labelled_enum! {
    /// Why a client datagram got no reply. `as_str` labels are stable (metrics, logs).
    pub enum DropReason {
        /// Shorter than the 12-byte header.
        Truncated => "truncated",
        /// QR=1: a response, never answered (no reflection loops).
        NotQuery => "not_query",
        /// Too many questions (or clients for one question) waiting upstream.
        Overloaded => "overloaded",
    }
}

/// Upper bounds of the upstream latency histogram's buckets, in ms.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];
const RCODE_NAMES: [&str; 7] = ["noerror", "formerr", "servfail", "nxdomain", "notimp", "refused", "other"];

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Client messages received.
    pub queries: u64,
    pub cache_hits: u64,
    /// Forwarded (or coalesced) questions.
    pub cache_misses: u64,
    /// Answered by the local zone or as a special-use name.
    pub local: u64,
    /// Queries that joined an identical question already waiting upstream.
    pub coalesced: u64,
    pub upstream_sent: u64,
    /// Upstream answers accepted (NOERROR/NXDOMAIN).
    pub upstream_answered: u64,
    pub upstream_timeouts: u64,
    /// Failures reported by the shell (send, connect, read).
    pub upstream_failures: u64,
    /// SERVFAIL/REFUSED/other error RCODEs from upstreams.
    pub upstream_errors: u64,
    /// Answers whose id or question did not match (ignored; the query kept waiting).
    pub upstream_mismatched: u64,
    /// Answers that did not parse.
    pub upstream_malformed: u64,
    /// Answers or failures for a handle no longer in use.
    pub upstream_stale: u64,
    pub tcp_retries: u64,
    /// SERVFAIL replies sent to clients.
    pub servfail: u64,
    pub formerr: u64,
    pub notimp: u64,
    pub cache_evictions: u64,
    drops: [u64; DropReason::ALL.len()],
    /// Replies to clients by RCODE: NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, then any other.
    answers: [u64; 7],
    /// Upstream answers' latency: counts per bucket of [`LATENCY_BOUNDS_MS`] (the last: above them), and the sum.
    latency: [u64; LATENCY_BOUNDS_MS.len() + 1],
    latency_sum_ms: u64,
}

impl Stats {
    /// A reply to a client with this RCODE.
    fn answered(&mut self, rcode: u16) {
        let i = match rcode {
            0..=5 => usize::from(rcode),
            _ => 6,
        };
        self.answers[i] += 1;
    }

    fn upstream_latency(&mut self, ms: u64) {
        let i = LATENCY_BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(LATENCY_BOUNDS_MS.len());
        self.latency[i] += 1;
        self.latency_sum_ms += ms;
    }

    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
    /// (reason, count) for every reason, zeros included, in `DropReason::ALL` order.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.dropped(r)))
    }
}

/// A client waiting for an upstream answer.
struct Waiter {
    client: ClientRef,
    device: Device,
    id: u16,
    rd: bool,
    cd: bool,
    /// The client's question bytes, its case.
    question: Vec<u8>,
    edns: Option<Edns>,
    arrived_ms: u64,
}

/// A question waiting upstream.
struct Pending {
    handle: u64,
    id: u16,
    upstream: usize,
    transport: Transport,
    attempts: u32,
    attempt_sent_ms: u64,
    attempt_deadline: u64,
    deadline: u64,
    /// The upstream query (id patched per attempt).
    query: Vec<u8>,
    name_len: usize,
    qtype: u16,
    name: Arc<str>,
    waiters: Vec<Waiter>,
}

pub struct Dns {
    cfg: DnsConfig,
    rng: StdRng,
    cache: Cache,
    zone: LocalZone,
    log: QueryLog,
    /// Keyed like the cache.
    pending: HashMap<Box<[u8]>, Pending>,
    handles: HashMap<u64, Box<[u8]>>,
    /// (deadline, handle); entries of finished attempts are skipped when they come due.
    timers: BTreeSet<(u64, u64)>,
    next_handle: u64,
    /// The upstream that answered last: new questions start there.
    preferred: usize,
    stats: Stats,
    /// Per upstream, in `cfg.upstreams` order.
    health: Vec<UpstreamHealth>,
}

/// How one upstream is doing: attempts sent to it, answered, missed (timed out, failed or an error answer),
/// its latency (a moving average of answered attempts) and when it last answered.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct UpstreamHealth {
    pub sent: u64,
    pub answered: u64,
    pub missed: u64,
    /// Missed attempts since the last answer: 3 or more in a row and it counts as unhealthy.
    pub missed_in_a_row: u32,
    pub latency_ms: Option<f64>,
    pub last_answer_ms: Option<u64>,
}

impl UpstreamHealth {
    pub fn healthy(&self) -> bool {
        self.missed_in_a_row < 3
    }

    fn missed(&mut self) {
        self.missed += 1;
        self.missed_in_a_row = self.missed_in_a_row.saturating_add(1);
    }
}

impl Dns {
    pub fn new(cfg: DnsConfig, seed: u64) -> Dns {
        Dns {
            rng: StdRng::seed_from_u64(seed),
            cache: Cache::new(cfg.cache_entries),
            zone: LocalZone::new(&cfg.domain, cfg.router_ip, &cfg.router_names, cfg.lan_subnet, cfg.local_ttl),
            log: QueryLog::new(cfg.log_entries_per_device, cfg.max_devices),
            pending: HashMap::new(),
            handles: HashMap::new(),
            timers: BTreeSet::new(),
            next_handle: 1,
            preferred: 0,
            stats: Stats::default(),
            health: vec![UpstreamHealth::default(); cfg.upstreams.len()],
            cfg,
        }
    }

    fn device_of(&self, addr: SocketAddr) -> Device {
        let ip = match addr.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
            ip => ip,
        };
        match ip {
            IpAddr::V4(v4) => match self.zone.mac_of(v4) {
                Some(mac) => Device::Mac(mac),
                None => Device::Ip(ip),
            },
            _ => Device::Ip(ip),
        }
    }

    /// A client query. Fast path: fills `reply` (cleared first) and returns Replied. Otherwise may push Actions.
    pub fn handle_query(
        &mut self,
        query: &[u8],
        from: ClientRef,
        now: Time,
        reply: &mut Vec<u8>,
        out: &mut Vec<Action>,
    ) -> Handled {
        let now_ms = now.unix_ms();
        self.stats.queries += 1;
        reply.clear();
        let mut keybuf = [0u8; wire::MAX_KEY];
        let (q, klen) = match wire::parse_query(query, &mut keybuf) {
            Ok(v) => v,
            Err(QueryError::Drop(r)) => {
                self.stats.drops[r.index()] += 1;
                return Handled::Dropped(r);
            }
            Err(QueryError::FormErr) => {
                self.stats.formerr += 1;
                self.stats.answered(u16::from(wire::RCODE_FORMERR));
                header_reply(query, wire::RCODE_FORMERR, reply);
                return Handled::Replied;
            }
            Err(QueryError::NotImp) => {
                self.stats.notimp += 1;
                self.stats.answered(u16::from(wire::RCODE_NOTIMP));
                header_reply(query, wire::RCODE_NOTIMP, reply);
                return Handled::Replied;
            }
            Err(QueryError::BadVers(q)) => {
                error_reply(q.id, q.rd, q.cd, q.question(query), Some(0), wire::RCODE_BADVERS, reply);
                return Handled::Replied;
            }
        };
        let key = &keybuf[..klen];
        let device = self.device_of(from.addr);

        if let Some(e) = self.cache.get(key, now_ms) {
            replay(e, now_ms, &q, q.question(query), from.transport, reply);
            self.stats.cache_hits += 1;
            self.stats.answered(u16::from(e.rcode));
            let logged = Logged {
                unix_ms: now_ms,
                name: e.name.clone(),
                qtype: q.qtype,
                rcode: u16::from(e.rcode),
                latency_ms: 0,
                answers: e.ips.clone(),
                cached: true,
            };
            self.log.record(&device, logged);
            return Handled::Replied;
        }

        let name = &key[..q.name_len];
        if let Some((rcode, ip)) = self.zone.answer(query, &q, name, reply) {
            self.stats.local += 1;
            self.stats.answered(u16::from(rcode));
            let logged = Logged {
                unix_ms: now_ms,
                name: wire::name_to_string(name).into(),
                qtype: q.qtype,
                rcode: u16::from(rcode),
                latency_ms: 0,
                answers: ip.into_iter().collect(),
                cached: false,
            };
            self.log.record(&device, logged);
            return Handled::Replied;
        }

        self.stats.cache_misses += 1;
        let waiter = Waiter {
            client: from,
            device,
            id: q.id,
            rd: q.rd,
            cd: q.cd,
            question: q.question(query).to_vec(),
            edns: q.edns,
            arrived_ms: now_ms,
        };
        if self.cfg.upstreams.is_empty() {
            error_reply(q.id, q.rd, q.cd, &waiter.question, q.edns.map(|_| 0), u16::from(wire::RCODE_SERVFAIL), reply);
            self.stats.servfail += 1;
            self.log_reply(
                &waiter,
                &Arc::from(wire::name_to_string(name)),
                q.qtype,
                wire::RCODE_SERVFAIL,
                now_ms,
                None,
            );
            return Handled::Replied;
        }
        if let Some(p) = self.pending.get_mut(key) {
            if p.waiters.iter().any(|w| w.client == from && w.id == q.id && w.question == waiter.question) {
                return Handled::Pending; // a retransmission
            }
            if p.waiters.len() >= MAX_WAITERS {
                self.stats.drops[DropReason::Overloaded.index()] += 1;
                return Handled::Dropped(DropReason::Overloaded);
            }
            p.waiters.push(waiter);
            self.stats.coalesced += 1;
            return Handled::Pending;
        }
        if self.pending.len() >= MAX_PENDING {
            self.stats.drops[DropReason::Overloaded.index()] += 1;
            return Handled::Dropped(DropReason::Overloaded);
        }
        let mut upstream_query = Vec::with_capacity(wire::HEADER_LEN + q.name_len + 4 + wire::OPT_LEN);
        upstream_query.extend_from_slice(&[
            0,
            0,
            wire::F2_RD,
            if q.cd { wire::F3_CD } else { 0 },
            0,
            1,
            0,
            0,
            0,
            0,
            0,
            1,
        ]);
        upstream_query.extend_from_slice(&key[..q.name_len + 4]);
        push_opt(&mut upstream_query, key[q.name_len + 4] != 0, 0);
        let n = self.cfg.upstreams.len();
        let p = Pending {
            handle: 0,
            id: 0,
            upstream: (self.preferred + n - 1) % n, // the first attempt moves to the preferred one
            transport: Transport::Udp,
            attempts: 0,
            attempt_sent_ms: 0,
            attempt_deadline: 0,
            deadline: now_ms.saturating_add(self.cfg.total_timeout_ms),
            query: upstream_query,
            name_len: q.name_len,
            qtype: q.qtype,
            name: wire::name_to_string(name).into(),
            waiters: vec![waiter],
        };
        let key: Box<[u8]> = key.into();
        self.pending.insert(key.clone(), p);
        self.attempt(&key, now_ms, false, out);
        Handled::Pending
    }

    /// Sends the next attempt for `key` (the same upstream over TCP if `tcp`, else the next upstream over UDP), or
    /// fails the question when attempts or time are used up. Cancels the previous attempt's handle.
    fn attempt(&mut self, key: &[u8], now_ms: u64, tcp: bool, out: &mut Vec<Action>) {
        let n = self.cfg.upstreams.len();
        let Some(p) = self.pending.get_mut(key) else { return };
        if p.handle != 0 {
            self.handles.remove(&p.handle);
            out.push(Action::Cancel { handle: QueryHandle(p.handle) });
            p.handle = 0;
        }
        let max = ATTEMPTS_PER_UPSTREAM.saturating_mul(n as u32);
        if now_ms >= p.deadline || (!tcp && p.attempts >= max) {
            self.fail(key, now_ms, out);
            return;
        }
        if tcp {
            p.transport = Transport::Tcp;
            self.stats.tcp_retries += 1;
        } else {
            p.transport = Transport::Udp;
            p.upstream = (p.upstream + 1) % n;
            p.attempts += 1;
        }
        let handle = self.next_handle;
        self.next_handle += 1;
        p.handle = handle;
        p.id = self.rng.random::<u16>();
        wire::put16(&mut p.query, 0, p.id);
        p.attempt_sent_ms = now_ms;
        p.attempt_deadline = now_ms.saturating_add(self.cfg.upstream_timeout_ms.max(1)).min(p.deadline);
        if let Some(h) = self.health.get_mut(p.upstream) {
            h.sent += 1;
        }
        self.timers.insert((p.attempt_deadline, handle));
        self.handles.insert(handle, key.into());
        self.stats.upstream_sent += 1;
        out.push(Action::Query {
            handle: QueryHandle(handle),
            upstream: self.cfg.upstreams[p.upstream],
            transport: p.transport,
            bytes: p.query.clone(),
        });
    }

    /// SERVFAIL to every waiter of `key`.
    fn fail(&mut self, key: &[u8], now_ms: u64, out: &mut Vec<Action>) {
        let Some(p) = self.finish(key, out) else { return };
        for w in &p.waiters {
            let mut bytes = Vec::new();
            let rcode = u16::from(wire::RCODE_SERVFAIL);
            error_reply(w.id, w.rd, w.cd, &w.question, w.edns.map(|_| 0), rcode, &mut bytes);
            out.push(Action::Reply { to: w.client, bytes });
            self.stats.servfail += 1;
            self.log_reply(w, &p.name, p.qtype, wire::RCODE_SERVFAIL, now_ms, None);
        }
    }

    /// Removes the question and cancels its current attempt.
    fn finish(&mut self, key: &[u8], out: &mut Vec<Action>) -> Option<Pending> {
        let p = self.pending.remove(key)?;
        if p.handle != 0 {
            self.handles.remove(&p.handle);
            out.push(Action::Cancel { handle: QueryHandle(p.handle) });
        }
        Some(p)
    }

    fn log_reply(
        &mut self,
        w: &Waiter,
        name: &Arc<str>,
        qtype: u16,
        rcode: u8,
        now_ms: u64,
        ips: Option<&Arc<[IpAddr]>>,
    ) {
        self.stats.answered(u16::from(rcode));
        let logged = Logged {
            unix_ms: w.arrived_ms,
            name: name.clone(),
            qtype,
            rcode: u16::from(rcode),
            latency_ms: now_ms.saturating_sub(w.arrived_ms).min(u64::from(u32::MAX)) as u32,
            answers: ips.cloned().unwrap_or_else(|| Arc::from(Vec::new())),
            cached: false,
        };
        self.log.record(&w.device, logged);
    }

    /// An upstream's answer to `handle`.
    pub fn handle_response(&mut self, handle: QueryHandle, m: &[u8], now: Time, out: &mut Vec<Action>) {
        let now_ms = now.unix_ms();
        let Some(key) = self.handles.get(&handle.0).cloned() else {
            self.stats.upstream_stale += 1;
            return;
        };
        let Some(p) = self.pending.get(&key[..]) else {
            self.handles.remove(&handle.0);
            self.stats.upstream_stale += 1;
            return;
        };
        // RFC 5452 9.1: id and question must match, else it is not our answer (keep waiting).
        let qlen = p.name_len + 4;
        let qend = wire::HEADER_LEN + qlen;
        let matches = m.len() >= qend
            && wire::be16(m, 0) == p.id
            && m[2] & wire::F2_QR != 0
            && (m[2] >> 3) & 0x0f == 0
            && wire::be16(m, 4) == 1
            && m[12..12 + p.name_len].eq_ignore_ascii_case(&key[..p.name_len])
            && m[12 + p.name_len..qend] == key[p.name_len..qlen];
        if !matches {
            self.stats.upstream_mismatched += 1;
            return;
        }
        if m[2] & wire::F2_TC != 0 {
            if p.transport == Transport::Udp {
                self.attempt(&key, now_ms, true, out);
            } else {
                self.stats.upstream_malformed += 1;
                self.attempt(&key, now_ms, false, out);
            }
            return;
        }
        let Ok(walk) = wire::walk_answer(m, qend) else {
            self.stats.upstream_malformed += 1;
            self.attempt(&key, now_ms, false, out);
            return;
        };
        let rcode = m[3] & 0x0f;
        let ext = walk.opt.map_or(0, |(e, _)| e);
        if ext != 0 || !(rcode == wire::RCODE_NOERROR || rcode == wire::RCODE_NXDOMAIN) {
            self.stats.upstream_errors += 1;
            if let Some(h) = self.health.get_mut(p.upstream) {
                h.missed();
            }
            self.attempt(&key, now_ms, false, out);
            return;
        }
        let upstream = p.upstream;
        let took = now_ms.saturating_sub(p.attempt_sent_ms) as f64;
        self.stats.upstream_latency(now_ms.saturating_sub(p.attempt_sent_ms));
        let (entry, lifetime) = build_entry(m, walk, qend, now_ms, p.name.clone());
        self.stats.upstream_answered += 1;
        if let Some(h) = self.health.get_mut(upstream) {
            h.answered += 1;
            h.missed_in_a_row = 0;
            h.last_answer_ms = Some(now_ms);
            h.latency_ms = Some(h.latency_ms.map_or(took, |l| l * 0.8 + took * 0.2));
        }
        self.preferred = upstream;
        let Some(p) = self.finish(&key, out) else { return };
        let q = |w: &Waiter| Query {
            id: w.id,
            rd: w.rd,
            cd: w.cd,
            name_len: p.name_len,
            question_end: qend,
            qtype: p.qtype,
            qclass: 0,
            edns: w.edns,
        };
        for w in &p.waiters {
            let mut bytes = Vec::with_capacity(entry.wire.len() + wire::OPT_LEN);
            replay(&entry, now_ms, &q(w), &w.question, w.client.transport, &mut bytes);
            out.push(Action::Reply { to: w.client, bytes });
            self.log_reply(w, &entry.name, p.qtype, entry.rcode, now_ms, Some(&entry.ips));
        }
        if lifetime > 0 {
            self.cache.insert(&key, entry);
            self.stats.cache_evictions = self.cache.evictions;
        }
    }

    /// The shell could not send / connect / read for `handle`: try the next upstream or fail over.
    pub fn handle_failure(&mut self, handle: QueryHandle, now: Time, out: &mut Vec<Action>) {
        let now_ms = now.unix_ms();
        let Some(key) = self.handles.get(&handle.0).cloned() else {
            self.stats.upstream_stale += 1;
            return;
        };
        self.stats.upstream_failures += 1;
        if let Some(h) = self.pending.get(&key[..]).and_then(|p| self.health.get_mut(p.upstream)) {
            h.missed();
        }
        self.attempt(&key, now_ms, false, out);
    }

    /// When `handle_timeout` is due; may be early.
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.first().map(|&(t, _)| Time::from_unix_ms(t))
    }

    pub fn handle_timeout(&mut self, now: Time, out: &mut Vec<Action>) {
        let now_ms = now.unix_ms();
        while let Some(&(t, h)) = self.timers.first() {
            if t > now_ms {
                break;
            }
            self.timers.pop_first();
            let Some(key) = self.handles.get(&h).cloned() else { continue };
            let Some(p) = self.pending.get(&key[..]) else { continue };
            if p.handle != h {
                continue;
            }
            self.stats.upstream_timeouts += 1;
            if let Some(h) = self.health.get_mut(p.upstream) {
                h.missed();
            }
            if now_ms >= p.deadline {
                self.fail(&key, now_ms, out);
            } else {
                self.attempt(&key, now_ms, false, out);
            }
        }
    }

    /// Local zone + device identity, from DHCP lease events and static hosts. `name` is a bare label ("laptop").
    pub fn set_host(&mut self, name: Option<&str>, ip: Ipv4Addr, mac: Option<Mac>) {
        self.zone.set_host(name, ip, mac);
    }

    pub fn remove_host(&mut self, ip: Ipv4Addr) {
        self.zone.remove_host(ip);
    }

    /// The device's logged queries, oldest first.
    pub fn query_log(&self, device: &Device) -> Vec<LogEntry> {
        self.log.entries(device)
    }

    /// Devices with logged queries, most recently active first.
    pub fn devices(&self) -> Vec<Device> {
        self.log.devices()
    }

    /// The name `device` resolved to reach `remote` (from A/AAAA answers; the name the client asked).
    pub fn name_for(&self, device: &Device, remote: IpAddr) -> Option<&str> {
        self.log.name_for(device, remote)
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The counters in the program's one shape: replies by kind, upstream outcomes, `dropped{reason}`, and the
    /// cache's size as a gauge.
    pub fn counters(&self) -> crate::counters::Counters {
        let s = &self.stats;
        let mut c = crate::counters::Counters::new();
        for (name, n) in [
            ("queries", s.queries),
            ("cache_hits", s.cache_hits),
            ("cache_misses", s.cache_misses),
            ("local", s.local),
            ("coalesced", s.coalesced),
            ("upstream_sent", s.upstream_sent),
            ("upstream_answered", s.upstream_answered),
            ("upstream_timeouts", s.upstream_timeouts),
            ("upstream_failures", s.upstream_failures),
            ("upstream_errors", s.upstream_errors),
            ("upstream_mismatched", s.upstream_mismatched),
            ("upstream_malformed", s.upstream_malformed),
            ("upstream_stale", s.upstream_stale),
            ("tcp_retries", s.tcp_retries),
            ("servfail", s.servfail),
            ("formerr", s.formerr),
            ("notimp", s.notimp),
            ("cache_evictions", s.cache_evictions),
        ] {
            c.counter(name, n);
        }
        for (r, n) in s.drops() {
            c.labelled("dropped", "reason", r.as_str(), n);
        }
        for (name, n) in RCODE_NAMES.iter().zip(s.answers) {
            c.labelled("answers", "rcode", name, n);
        }
        let names =
            ["upstream_latency_seconds_bucket", "upstream_latency_seconds_sum", "upstream_latency_seconds_count"];
        c.histogram_ms(names, &LATENCY_BOUNDS_MS, &s.latency, s.latency_sum_ms);
        c.gauge("cache_entries", self.cache_len() as u64);
        c
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.cfg.upstreams
    }

    /// Each upstream's health, in [`Dns::upstreams`] order.
    pub fn health(&self) -> &[UpstreamHealth] {
        &self.health
    }

    pub fn cache_capacity(&self) -> usize {
        self.cfg.cache_entries
    }

    /// Entries in the answer cache.
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }
}

/// Turns a checked upstream answer into a cache entry: OPT RR removed (with any additional RRs after it), AA and
/// TC cleared, RA set, TTLs capped, a negative answer's SOA TTL set to min(SOA TTL, MINIMUM) (RFC 2308 section 5).
/// Returns the entry and how long it may be cached in seconds (0: do not cache).
fn build_entry(m: &[u8], walk: wire::Walk, qend: usize, now_ms: u64, name: Arc<str>) -> (Entry, u32) {
    let mut rrs = walk.rrs;
    let mut wire_bytes = match walk.opt {
        Some((_, opt)) => {
            rrs.retain(|(_, rr)| rr.start < opt.start);
            let mut w = m[..opt.start].to_vec();
            let ar = rrs.iter().filter(|(s, _)| *s == Section::Additional).count() as u16;
            wire::put16(&mut w, 10, ar);
            w
        }
        None => m[..walk.end].to_vec(),
    };
    wire_bytes[2] &= !(wire::F2_AA | wire::F2_TC);
    wire_bytes[3] |= wire::F3_RA;
    let rcode = m[3] & 0x0f;
    let mut ttls = Vec::with_capacity(rrs.len());
    let mut ips = Vec::new();
    let mut answer_min: Option<u32> = None;
    let mut negative: Option<(usize, u32)> = None;
    for (i, (section, rr)) in rrs.iter().enumerate() {
        let ttl = wire::be32(m, rr.ttl_at).min(MAX_TTL);
        ttls.push((rr.ttl_at as u16, ttl));
        match section {
            Section::Answer => {
                answer_min = Some(answer_min.map_or(ttl, |a| a.min(ttl)));
                let rd = &m[rr.rdata..rr.end];
                match (rr.rtype, rd.len()) {
                    (wire::TYPE_A, 4) => ips.push(IpAddr::from(<[u8; 4]>::try_from(rd).expect("4 bytes"))),
                    (wire::TYPE_AAAA, 16) => ips.push(IpAddr::from(<[u8; 16]>::try_from(rd).expect("16 bytes"))),
                    _ => {}
                }
            }
            Section::Authority if negative.is_none() && rr.rtype == wire::TYPE_SOA && rr.end - rr.rdata >= 22 => {
                let minimum = wire::be32(m, rr.end - 4);
                negative = Some((i, ttl.min(minimum).min(MAX_NEGATIVE_TTL)));
            }
            _ => {}
        }
    }
    let is_negative = rcode == wire::RCODE_NXDOMAIN || answer_min.is_none();
    let lifetime = if is_negative {
        match negative {
            Some((i, neg)) => {
                ttls[i].1 = neg;
                neg
            }
            None => 0, // RFC 2308 5: no SOA, no negative caching
        }
    } else {
        answer_min.unwrap_or(0)
    };
    for &(at, ttl) in &ttls {
        wire::put32(&mut wire_bytes, at as usize, ttl);
    }
    debug_assert!(qend <= wire_bytes.len());
    let entry = Entry {
        wire: wire_bytes,
        ttls,
        stored_ms: now_ms,
        expires_ms: now_ms.saturating_add(u64::from(lifetime) * 1000),
        rcode,
        name,
        ips: ips.into(),
    };
    (entry, lifetime)
}

/// Writes `e` as the answer to the client query `q` (whose question bytes are `question`, same length as stored).
/// Patches id, RD/CD, the question's case and every TTL (counted down); adds an OPT RR when the client sent one;
/// answers TC=1 with empty sections when the message would not fit the client's UDP size.
#[inline]
fn replay(e: &Entry, now_ms: u64, q: &Query, question: &[u8], transport: Transport, reply: &mut Vec<u8>) {
    let limit = match (transport, q.edns) {
        (Transport::Tcp, _) => usize::from(u16::MAX),
        (Transport::Udp, None) => 512,
        (Transport::Udp, Some(edns)) => usize::from(edns.payload.clamp(512, wire::EDNS_PAYLOAD)),
    };
    let opt = if q.edns.is_some() { wire::OPT_LEN } else { 0 };
    let qend = wire::HEADER_LEN + question.len();
    reply.clear();
    if e.wire.len() + opt <= limit {
        reply.extend_from_slice(&e.wire);
        let elapsed = (now_ms.saturating_sub(e.stored_ms) / 1000).min(u64::from(u32::MAX)) as u32;
        for &(at, ttl) in &e.ttls {
            wire::put32(reply, at as usize, ttl.saturating_sub(elapsed));
        }
    } else {
        reply.extend_from_slice(&e.wire[..qend]);
        reply[2] |= wire::F2_TC;
        reply[6..12].fill(0);
    }
    wire::put16(reply, 0, q.id);
    reply[2] = (reply[2] & !wire::F2_RD) | if q.rd { wire::F2_RD } else { 0 };
    reply[3] = (reply[3] & !wire::F3_CD) | if q.cd { wire::F3_CD } else { 0 };
    reply[wire::HEADER_LEN..qend].copy_from_slice(question);
    if let Some(edns) = q.edns {
        push_opt(reply, edns.dnssec_ok, 0);
        let ar = wire::be16(reply, 10).wrapping_add(1);
        wire::put16(reply, 10, ar);
    }
}

/// A header-only reply (FORMERR, NOTIMP): id, opcode and RD copied, no sections.
fn header_reply(msg: &[u8], rcode: u8, reply: &mut Vec<u8>) {
    reply.clear();
    reply.extend_from_slice(&msg[..wire::HEADER_LEN]);
    reply[2] = wire::F2_QR | (msg[2] & (0x78 | wire::F2_RD));
    reply[3] = wire::F3_RA | rcode;
    reply[4..12].fill(0);
}

/// An error reply with the question echoed (SERVFAIL, BADVERS); an OPT RR when `ext` is Some (the extended RCODE
/// bits of `rcode` go there).
fn error_reply(id: u16, rd: bool, cd: bool, question: &[u8], ext: Option<u8>, rcode: u16, reply: &mut Vec<u8>) {
    reply.clear();
    let f2 = wire::F2_QR | if rd { wire::F2_RD } else { 0 };
    let f3 = wire::F3_RA | if cd { wire::F3_CD } else { 0 } | (rcode & 0x0f) as u8;
    let id = id.to_be_bytes();
    reply.extend_from_slice(&[id[0], id[1], f2, f3, 0, 1, 0, 0, 0, 0, 0, ext.is_some() as u8]);
    reply.extend_from_slice(question);
    if ext.is_some() {
        push_opt(reply, false, (rcode >> 4) as u8);
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
