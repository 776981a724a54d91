//! Tests of the DNS core. Messages are built and checked with hickory-proto, an independent encoder/decoder.

use super::*;
use crate::dns::{NAMES_PER_DEVICE, special_zones};
use crate::types::Time;
use hickory_proto::op::{Edns as HEdns, Message, MessageType, OpCode, Query as HQuery, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NULL, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::cell::Cell;
use std::net::{Ipv6Addr, SocketAddrV4};

// ---- allocation counting (this thread only) for the no-allocation check of the cached path ----

struct Counting;
thread_local! { static ALLOCS: Cell<u64> = const { Cell::new(0) }; }
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, n: usize) -> *mut u8 {
        let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
        unsafe { std::alloc::System.realloc(p, l, n) }
    }
}
#[global_allocator]
static GLOBAL: Counting = Counting;
fn allocs() -> u64 {
    ALLOCS.with(|c| c.get())
}

// ---- helpers ----

const NOW: u64 = 1_700_000_000_000;

/// Unix milliseconds as the core's time.
fn ms(unix_ms: u64) -> Time {
    Time::from_unix_ms(unix_ms)
}
const U0: &str = "10.0.0.1:53";
const U1: &str = "10.0.0.2:53";

fn cfg() -> DnsConfig {
    DnsConfig::new(
        Ipv4Addr::new(192, 168, 1, 1),
        "192.168.1.0/24".parse().unwrap(),
        vec![U0.parse().unwrap(), U1.parse().unwrap()],
    )
}

fn client(n: u8) -> ClientRef {
    ClientRef {
        addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 100 + n), 40000)),
        transport: Transport::Udp,
        conn: 0,
    }
}

fn cq(name: &str, qtype: RecordType, id: u16, edns: Option<(u16, bool)>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(HQuery::query(Name::from_ascii(name).unwrap(), qtype));
    if let Some((payload, dnssec_ok)) = edns {
        let mut e = HEdns::new();
        e.set_max_payload(payload);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn a(n: &str, ttl: u32, ip: [u8; 4]) -> Record {
    Record::from_rdata(name(n), ttl, RData::A(A(Ipv4Addr::from(ip))))
}

fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
    let rd = SOA::new(name(&format!("ns.{zone}")), name(&format!("host.{zone}")), 1, 3600, 600, 86400, minimum);
    Record::from_rdata(name(zone), ttl, RData::SOA(rd))
}

/// The upstream's answer to an upstream query built by the core.
fn upstream_answer(q: &[u8], rcode: ResponseCode, answers: Vec<Record>, auth: Vec<Record>) -> Vec<u8> {
    let qm = Message::from_vec(q).unwrap();
    let mut m = Message::new(qm.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.add_queries(qm.queries.clone());
    m.add_answers(answers);
    m.add_authorities(auth);
    let mut e = HEdns::new();
    e.set_max_payload(1232);
    m.set_edns(e);
    m.to_vec().unwrap()
}

struct T {
    dns: Dns,
    out: Vec<Action>,
    reply: Vec<u8>,
    now: u64,
}

impl T {
    fn new(cfg: DnsConfig) -> T {
        T { dns: Dns::new(cfg, 42), out: Vec::new(), reply: Vec::with_capacity(65535), now: NOW }
    }
    fn ask(&mut self, q: &[u8], from: ClientRef) -> Handled {
        self.dns.handle_query(q, from, ms(self.now), &mut self.reply, &mut self.out)
    }
    fn reply_msg(&self) -> Message {
        Message::from_vec(&self.reply).unwrap()
    }
    /// Removes and returns the Query actions.
    fn queries(&mut self) -> Vec<(QueryHandle, SocketAddr, Transport, Vec<u8>)> {
        let mut v = Vec::new();
        self.out.retain(|a| match a {
            Action::Query { handle, upstream, transport, bytes } => {
                v.push((*handle, *upstream, *transport, bytes.clone()));
                false
            }
            _ => true,
        });
        v
    }
    fn one_query(&mut self) -> (QueryHandle, SocketAddr, Transport, Vec<u8>) {
        let mut q = self.queries();
        assert_eq!(q.len(), 1, "expected one upstream query");
        q.pop().unwrap()
    }
    fn replies(&mut self) -> Vec<(ClientRef, Vec<u8>)> {
        let mut v = Vec::new();
        self.out.retain(|a| match a {
            Action::Reply { to, bytes } => {
                v.push((*to, bytes.clone()));
                false
            }
            _ => true,
        });
        v
    }
    fn cancels(&mut self) -> Vec<QueryHandle> {
        let mut v = Vec::new();
        self.out.retain(|a| match a {
            Action::Cancel { handle } => {
                v.push(*handle);
                false
            }
            _ => true,
        });
        v
    }
    fn respond(&mut self, h: QueryHandle, bytes: &[u8]) {
        self.dns.handle_response(h, bytes, ms(self.now), &mut self.out);
    }
    /// Asks `q`, answers upstream with `answers`, returns the client's reply.
    fn resolve(&mut self, q: &[u8], from: ClientRef, answers: Vec<Record>) -> Vec<u8> {
        assert_eq!(self.ask(q, from), Handled::Pending);
        let (h, _, _, uq) = self.one_query();
        let ans = upstream_answer(&uq, ResponseCode::NoError, answers, vec![]);
        self.respond(h, &ans);
        let mut r = self.replies();
        assert_eq!(r.len(), 1);
        assert_eq!(self.cancels(), vec![h]);
        r.pop().unwrap().1
    }
}

fn question_bytes(m: &[u8]) -> &[u8] {
    let mut i = 12;
    while m[i] != 0 {
        i += 1 + m[i] as usize;
    }
    &m[12..i + 5]
}

fn rcode(m: &[u8]) -> u8 {
    m[3] & 0x0f
}

// ---- cache ----

#[test]
fn cache_hit_keeps_id_and_case_and_counts_ttl_down() {
    let mut t = T::new(cfg());
    let q1 = cq("WwW.Test.", RecordType::A, 0x1234, None);
    assert_eq!(t.ask(&q1, client(1)), Handled::Pending);
    let (h, up, tr, uq) = t.one_query();
    assert_eq!((up, tr), (U0.parse().unwrap(), Transport::Udp));
    // The upstream query: RD, lowercased question, EDNS(0) with 1232, a fresh id.
    let um = Message::from_vec(&uq).unwrap();
    assert!(um.metadata.recursion_desired);
    assert_eq!(um.queries[0].name().to_ascii(), "www.test.");
    assert_eq!(um.edns.as_ref().unwrap().max_payload(), 1232);
    let ans = upstream_answer(&uq, ResponseCode::NoError, vec![a("www.test.", 300, [1, 2, 3, 4])], vec![]);
    t.respond(h, &ans);
    let r = t.replies();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, client(1));
    let m = Message::from_vec(&r[0].1).unwrap();
    assert_eq!(m.metadata.id, 0x1234);
    assert_eq!(question_bytes(&r[0].1), question_bytes(&q1));
    assert!(m.edns.is_none(), "no OPT to a client that sent none");
    assert_eq!(m.answers[0].ttl, 300);
    assert_eq!(t.cancels(), vec![h]);

    t.now += 10_500;
    let q2 = cq("www.TEST.", RecordType::A, 7, None);
    assert_eq!(t.ask(&q2, client(2)), Handled::Replied);
    assert!(t.out.is_empty());
    let m = t.reply_msg();
    assert_eq!(m.metadata.id, 7);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(question_bytes(&t.reply), question_bytes(&q2));
    assert_eq!(m.answers[0].ttl, 290);
    assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(1, 2, 3, 4))));
    assert_eq!(t.dns.stats().cache_hits, 1);

    // Time going backwards: no panic, full TTL.
    t.now = NOW - 5000;
    assert_eq!(t.ask(&q2, client(2)), Handled::Replied);
    assert_eq!(t.reply_msg().answers[0].ttl, 300);

    // Expired: forwarded again.
    t.now = NOW + 301_000;
    assert_eq!(t.ask(&q2, client(2)), Handled::Pending);
}

#[test]
fn lru_eviction() {
    let mut c = cfg();
    c.cache_entries = 2;
    let mut t = T::new(c);
    for (n, ip) in [("a.test.", 1), ("b.test.", 2)] {
        t.resolve(&cq(n, RecordType::A, 1, None), client(1), vec![a(n, 300, [1, 1, 1, ip])]);
    }
    assert_eq!(t.ask(&cq("a.test.", RecordType::A, 2, None), client(1)), Handled::Replied);
    t.resolve(&cq("c.test.", RecordType::A, 3, None), client(1), vec![a("c.test.", 300, [1, 1, 1, 3])]);
    assert_eq!(t.dns.cache_len(), 2);
    assert_eq!(t.dns.stats().cache_evictions, 1);
    assert_eq!(t.ask(&cq("a.test.", RecordType::A, 4, None), client(1)), Handled::Replied);
    assert_eq!(t.ask(&cq("c.test.", RecordType::A, 4, None), client(1)), Handled::Replied);
    assert_eq!(t.ask(&cq("b.test.", RecordType::A, 5, None), client(1)), Handled::Pending);
}

#[test]
fn negative_answers_cached_for_soa_minimum() {
    let mut t = T::new(cfg());
    // NXDOMAIN: SOA TTL 3600, MINIMUM 30 -> 30 s.
    let q = cq("nope.test.", RecordType::A, 9, None);
    assert_eq!(t.ask(&q, client(1)), Handled::Pending);
    let (h, _, _, uq) = t.one_query();
    t.respond(h, &upstream_answer(&uq, ResponseCode::NXDomain, vec![], vec![soa("test.", 3600, 30)]));
    let r = t.replies();
    let m = Message::from_vec(&r[0].1).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].ttl, 30);
    t.now += 29_000;
    assert_eq!(t.ask(&q, client(1)), Handled::Replied);
    let m = t.reply_msg();
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].ttl, 1);
    t.now += 2_000;
    assert_eq!(t.ask(&q, client(1)), Handled::Pending);
    t.queries();

    // NODATA: SOA TTL 20 < MINIMUM 300 -> 20 s.
    let q = cq("host.test.", RecordType::AAAA, 9, None);
    assert_eq!(t.ask(&q, client(1)), Handled::Pending);
    let (h, _, _, uq) = t.one_query();
    t.respond(h, &upstream_answer(&uq, ResponseCode::NoError, vec![], vec![soa("test.", 20, 300)]));
    assert_eq!(t.replies().len(), 1);
    t.now += 19_000;
    assert_eq!(t.ask(&q, client(1)), Handled::Replied);
    let m = t.reply_msg();
    assert_eq!((m.metadata.response_code, m.answers.len(), m.authorities[0].ttl), (ResponseCode::NoError, 0, 1));
    t.now += 1_000;
    assert_eq!(t.ask(&q, client(1)), Handled::Pending);
    t.queries();

    // Without an SOA: not cached (RFC 2308 5).
    let q = cq("nosoa.test.", RecordType::A, 9, None);
    t.ask(&q, client(1));
    let (h, _, _, uq) = t.one_query();
    t.respond(h, &upstream_answer(&uq, ResponseCode::NXDomain, vec![], vec![]));
    assert_eq!(t.replies().len(), 1);
    assert_eq!(t.ask(&q, client(1)), Handled::Pending);
}

#[test]
fn coalesces_identical_questions() {
    let mut t = T::new(cfg());
    let q1 = cq("same.test.", RecordType::A, 100, None);
    let q2 = cq("SAME.test.", RecordType::A, 200, Some((1232, false)));
    assert_eq!(t.ask(&q1, client(1)), Handled::Pending);
    assert_eq!(t.ask(&q2, client(2)), Handled::Pending);
    assert_eq!(t.ask(&q2, client(2)), Handled::Pending); // retransmission: not a third waiter
    let qs = t.queries();
    assert_eq!(qs.len(), 1);
    let (h, _, _, uq) = qs[0].clone();
    t.respond(h, &upstream_answer(&uq, ResponseCode::NoError, vec![a("same.test.", 60, [9, 9, 9, 9])], vec![]));
    let r = t.replies();
    assert_eq!(r.len(), 2);
    assert_eq!(t.dns.stats().coalesced, 1);
    for ((to, bytes), (want_to, want_q, want_id)) in r.iter().zip([(client(1), &q1, 100), (client(2), &q2, 200)]) {
        assert_eq!(*to, want_to);
        let m = Message::from_vec(bytes).unwrap();
        assert_eq!(m.metadata.id, want_id);
        assert_eq!(question_bytes(bytes), question_bytes(want_q));
        assert_eq!(m.answers.len(), 1);
    }
    assert!(Message::from_vec(&r[1].1).unwrap().edns.is_some());
}

// ---- upstream failures ----

#[test]
fn failover_on_timeout_then_servfail_by_total_timeout() {
    let mut t = T::new(cfg());
    let q = cq("slow.test.", RecordType::A, 5, Some((1232, false)));
    assert_eq!(t.ask(&q, client(1)), Handled::Pending);
    let mut handles = vec![];
    let mut ids = vec![];
    let (h, up, _, uq) = t.one_query();
    assert_eq!(up, U0.parse().unwrap());
    handles.push(h);
    ids.push(wire::be16(&uq, 0));
    let mut ups = vec![up];
    let mut cancels = vec![];
    while let Some(next) = t.dns.next_timeout().map(Time::unix_ms) {
        assert!(next <= NOW + 5000);
        t.now = next;
        t.dns.handle_timeout(ms(t.now), &mut t.out);
        cancels.extend(t.cancels());
        for (h, up, _, uq) in t.queries() {
            handles.push(h);
            ups.push(up);
            ids.push(wire::be16(&uq, 0));
        }
        if !t.replies().is_empty() {
            break;
        }
    }
    assert_eq!(t.now, NOW + 4000, "SERVFAIL at the total timeout");
    let u0: SocketAddr = U0.parse().unwrap();
    let u1: SocketAddr = U1.parse().unwrap();
    assert_eq!(ups, vec![u0, u1, u0, u1]);
    assert_eq!(cancels, handles, "every attempt cancelled exactly once");
    assert_eq!(t.dns.stats().servfail, 1);
    assert_eq!(t.dns.stats().upstream_timeouts, 4);
    ids.dedup();
    assert!(ids.len() >= 3, "fresh random ids per attempt: {ids:?}");
    // The late answer of a cancelled attempt is stale.
    t.respond(handles[0], &q);
    assert_eq!(t.dns.stats().upstream_stale, 1);
    assert!(t.out.is_empty());
}

#[test]
fn servfail_reply_shape() {
    let mut t = T::new(cfg());
    let q = cq("Fail.test.", RecordType::A, 77, Some((1232, false)));
    t.ask(&q, client(1));
    // Every upstream fails at once: after all attempts, SERVFAIL (not silence).
    for _ in 0..100 {
        let qs = t.queries();
        if qs.is_empty() {
            break;
        }
        t.dns.handle_failure(qs[0].0, ms(t.now), &mut t.out);
    }
    let r = t.replies();
    assert_eq!(r.len(), 1);
    let m = Message::from_vec(&r[0].1).unwrap();
    assert_eq!((m.metadata.id, m.metadata.response_code), (77, ResponseCode::ServFail));
    assert_eq!(question_bytes(&r[0].1), question_bytes(&q));
    assert!(m.edns.is_some());
    assert_eq!(t.dns.stats().upstream_failures, u64::from(ATTEMPTS_PER_UPSTREAM) * 2);
    t.out.clear();
    assert_eq!(t.dns.next_timeout().map(Time::unix_ms).map(|n| n <= t.now + 1000), Some(true)); // stale timers only
    t.dns.handle_timeout(ms(t.now + 10_000), &mut t.out);
    assert!(t.out.is_empty());
    assert_eq!(t.dns.next_timeout().map(Time::unix_ms), None);
}

#[test]
fn upstream_servfail_tries_the_next_one() {
    let mut t = T::new(cfg());
    let q = cq("flaky.test.", RecordType::A, 5, None);
    t.ask(&q, client(1));
    let (h, up, _, uq) = t.one_query();
    t.respond(h, &upstream_answer(&uq, ResponseCode::ServFail, vec![], vec![]));
    assert_eq!(t.cancels(), vec![h]);
    let (h2, up2, _, uq2) = t.one_query();
    assert_ne!(up, up2);
    assert!(t.replies().is_empty());
    t.respond(h2, &upstream_answer(&uq2, ResponseCode::NoError, vec![a("flaky.test.", 60, [5, 5, 5, 5])], vec![]));
    assert_eq!(t.replies().len(), 1);
    assert_eq!(t.dns.stats().upstream_errors, 1);
    // The one that answered is preferred next time.
    t.ask(&cq("other.test.", RecordType::A, 6, None), client(1));
    assert_eq!(t.one_query().1, up2);
}

#[test]
fn truncated_udp_answer_retried_over_tcp() {
    let mut t = T::new(cfg());
    let q = cq("big.test.", RecordType::A, 5, None);
    t.ask(&q, client(1));
    let (h, up, tr, uq) = t.one_query();
    assert_eq!(tr, Transport::Udp);
    let mut tc = upstream_answer(&uq, ResponseCode::NoError, vec![], vec![]);
    tc[2] |= wire::F2_TC;
    t.respond(h, &tc);
    assert_eq!(t.cancels(), vec![h]);
    let (h2, up2, tr2, uq2) = t.one_query();
    assert_eq!((up2, tr2), (up, Transport::Tcp));
    assert_eq!(t.dns.stats().tcp_retries, 1);
    let records: Vec<Record> = (0..60).map(|i| a("big.test.", 60, [10, 0, 0, i])).collect();
    t.respond(h2, &upstream_answer(&uq2, ResponseCode::NoError, records, vec![]));
    let r = t.replies();
    // 60 A records do not fit 512 bytes: the UDP client without EDNS gets TC=1 and retries over TCP.
    let m = Message::from_vec(&r[0].1).unwrap();
    assert!(m.metadata.truncation);
    assert_eq!(m.answers.len(), 0);
    let tcp = ClientRef { transport: Transport::Tcp, conn: 9, ..client(1) };
    assert_eq!(t.ask(&q, tcp), Handled::Replied);
    assert_eq!(t.reply_msg().answers.len(), 60);
}

#[test]
fn mismatched_answers_are_ignored() {
    let mut t = T::new(cfg());
    let q = cq("id.test.", RecordType::A, 5, None);
    t.ask(&q, client(1));
    let (h, _, _, uq) = t.one_query();
    let good = upstream_answer(&uq, ResponseCode::NoError, vec![a("id.test.", 60, [1, 1, 1, 1])], vec![]);
    let mut bad_id = good.clone();
    bad_id[0] ^= 0xff;
    t.respond(h, &bad_id);
    let other_q = cq("other.test.", RecordType::A, wire::be16(&uq, 0), None);
    let other = upstream_answer(&other_q, ResponseCode::NoError, vec![], vec![]);
    t.respond(h, &other);
    let mut other_type = good.clone();
    let qt = 12 + 9;
    other_type[qt + 1] = 28;
    t.respond(h, &other_type);
    t.respond(h, &good[..11]);
    assert!(t.out.is_empty());
    assert_eq!(t.dns.stats().upstream_mismatched, 4);
    // Upper case in the answer's question is accepted (0x20 style), then the real answer goes through.
    let mut upper = good.clone();
    upper[13..15].make_ascii_uppercase();
    t.respond(h, &upper);
    assert_eq!(t.replies().len(), 1);
}

// ---- local zone and special-use names ----

#[test]
fn local_zone() {
    let mut t = T::new(cfg());
    let mac = Mac([2, 0, 0, 0, 0, 0x50]);
    t.dns.set_host(Some("Laptop"), Ipv4Addr::new(192, 168, 1, 50), Some(mac));
    t.dns.set_host(Some("nas"), Ipv4Addr::new(192, 168, 1, 60), None);
    let check = |t: &mut T, q: Vec<u8>, rc: ResponseCode, want: Option<RData>| {
        assert_eq!(t.ask(&q, client(1)), Handled::Replied, "{:?}", Message::from_vec(&q).unwrap().queries);
        let m = t.reply_msg();
        assert_eq!(m.metadata.response_code, rc);
        assert!(m.metadata.authoritative);
        assert_eq!(question_bytes(&t.reply), question_bytes(&q));
        match want {
            Some(rd) => {
                assert_eq!(m.answers.len(), 1);
                assert_eq!(m.answers[0].data, rd);
                assert_eq!(m.answers[0].ttl, 60);
                assert_eq!(m.answers[0].name, m.queries[0].name().clone());
            }
            None => {
                assert_eq!(m.answers.len(), 0);
                assert_eq!(m.authorities.len(), 1);
                assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
            }
        }
        assert!(t.out.is_empty());
    };
    let ip = |a, b, c, d| Some(RData::A(A(Ipv4Addr::new(a, b, c, d))));
    let ptr = |n: &str| Some(RData::PTR(hickory_proto::rr::rdata::PTR(name(n))));
    check(&mut t, cq("laptop.lan.", RecordType::A, 1, None), ResponseCode::NoError, ip(192, 168, 1, 50));
    check(&mut t, cq("LAPTOP.Lan.", RecordType::A, 1, Some((1232, false))), ResponseCode::NoError, ip(192, 168, 1, 50));
    check(&mut t, cq("nas.lan.", RecordType::A, 1, None), ResponseCode::NoError, ip(192, 168, 1, 60));
    check(&mut t, cq("gatekeeper.lan.", RecordType::A, 1, None), ResponseCode::NoError, ip(192, 168, 1, 1));
    check(&mut t, cq("router.lan.", RecordType::A, 1, None), ResponseCode::NoError, ip(192, 168, 1, 1));
    check(
        &mut t,
        cq("50.1.168.192.in-addr.arpa.", RecordType::PTR, 1, None),
        ResponseCode::NoError,
        ptr("laptop.lan."),
    );
    check(
        &mut t,
        cq("1.1.168.192.in-addr.arpa.", RecordType::PTR, 1, None),
        ResponseCode::NoError,
        ptr("gatekeeper.lan."),
    );
    check(&mut t, cq("99.1.168.192.in-addr.arpa.", RecordType::PTR, 1, None), ResponseCode::NXDomain, None);
    check(&mut t, cq("unknown.lan.", RecordType::A, 1, None), ResponseCode::NXDomain, None);
    check(&mut t, cq("a.b.lan.", RecordType::A, 1, None), ResponseCode::NXDomain, None);
    check(&mut t, cq("laptop.lan.", RecordType::AAAA, 1, None), ResponseCode::NoError, None);
    check(&mut t, cq("laptop.lan.", RecordType::MX, 1, None), ResponseCode::NoError, None);
    check(&mut t, cq("lan.", RecordType::A, 1, None), ResponseCode::NoError, None);
    t.dns.remove_host(Ipv4Addr::new(192, 168, 1, 50));
    check(&mut t, cq("laptop.lan.", RecordType::A, 1, None), ResponseCode::NXDomain, None);
    check(&mut t, cq("50.1.168.192.in-addr.arpa.", RecordType::PTR, 1, None), ResponseCode::NXDomain, None);
    // A name moves to its newest holder.
    t.dns.set_host(Some("nas"), Ipv4Addr::new(192, 168, 1, 61), None);
    check(&mut t, cq("nas.lan.", RecordType::A, 1, None), ResponseCode::NoError, ip(192, 168, 1, 61));
    check(&mut t, cq("60.1.168.192.in-addr.arpa.", RecordType::PTR, 1, None), ResponseCode::NXDomain, None);
    // Hostile names are not added.
    t.dns.set_host(Some("evil.name"), Ipv4Addr::new(192, 168, 1, 70), None);
    check(&mut t, cq("70.1.168.192.in-addr.arpa.", RecordType::PTR, 1, None), ResponseCode::NXDomain, None);
    assert_eq!(t.dns.stats().local, 18);
}

#[test]
fn special_use_names_never_go_upstream() {
    let mut t = T::new(cfg());
    let mut names: Vec<String> = special_zones().iter().map(|z| format!("x.{z}.")).collect();
    names.extend(special_zones().iter().map(|z| format!("{z}.")));
    names.extend(
        [
            "localhost.",
            "foo.localhost.",
            "printer.local.",
            "x.invalid.",
            "abc.onion.",
            "router.home.arpa.",
            "4.3.2.10.in-addr.arpa.",
            "1.0.16.172.in-addr.arpa.",
            "9.9.31.172.in-addr.arpa.",
            "5.5.168.192.in-addr.arpa.",
            "1.1.254.169.in-addr.arpa.",
            "1.0.0.127.in-addr.arpa.",
            "0.0.0.0.in-addr.arpa.",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa.",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.e.f.ip6.arpa.",
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.",
        ]
        .map(String::from),
    );
    for n in &names {
        for qt in [RecordType::A, RecordType::AAAA, RecordType::PTR, RecordType::SOA, RecordType::TXT] {
            let q = cq(n, qt, 3, None);
            assert_eq!(t.ask(&q, client(1)), Handled::Replied, "{n} {qt}");
            assert!(t.out.is_empty(), "{n} {qt} went upstream");
            let m = t.reply_msg();
            assert!(matches!(m.metadata.response_code, ResponseCode::NoError | ResponseCode::NXDomain), "{n}");
        }
    }
    t.ask(&cq("LocalHost.", RecordType::A, 3, None), client(1));
    assert_eq!(t.reply_msg().answers[0].data, RData::A(A(Ipv4Addr::LOCALHOST)));
    t.ask(&cq("localhost.", RecordType::AAAA, 3, None), client(1));
    assert_eq!(t.reply_msg().answers[0].data, RData::AAAA(AAAA(Ipv6Addr::LOCALHOST)));
    t.ask(&cq("1.0.0.127.in-addr.arpa.", RecordType::PTR, 3, None), client(1));
    assert_eq!(t.reply_msg().answers.len(), 1);
    t.ask(&cq("x.invalid.", RecordType::A, 3, None), client(1));
    assert_eq!(t.reply_msg().metadata.response_code, ResponseCode::NXDomain);
    // Public and test names are forwarded.
    for n in ["www.test.", "example.", "www.example.com.", "1.1.1.1.in-addr.arpa.", "1.0.32.172.in-addr.arpa.", "arpa."]
    {
        assert_eq!(t.ask(&cq(n, RecordType::A, 3, None), client(1)), Handled::Pending, "{n}");
        assert_eq!(t.queries().len(), 1);
    }
}

// ---- EDNS and truncation ----

#[test]
fn edns_present_absent_and_512_truncation() {
    let mut t = T::new(cfg());
    // ~ 700-byte answer: 40 A records.
    let records: Vec<Record> = (0..40).map(|i| a("many.test.", 60, [10, 0, 1, i])).collect();
    let q = cq("many.test.", RecordType::A, 1, Some((4096, false)));
    let r = t.resolve(&q, client(1), records);
    assert!(r.len() > 512);
    let m = Message::from_vec(&r).unwrap();
    assert_eq!(m.answers.len(), 40);
    assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
    assert!(!m.metadata.truncation);

    // No EDNS: TC=1 with empty sections and no OPT.
    assert_eq!(t.ask(&cq("many.test.", RecordType::A, 2, None), client(1)), Handled::Replied);
    let m = t.reply_msg();
    assert!(m.metadata.truncation);
    assert_eq!((m.answers.len(), m.authorities.len(), m.additionals.len()), (0, 0, 0));
    assert!(m.edns.is_none());
    assert_eq!(m.queries.len(), 1);
    assert!(t.reply.len() <= 512);

    // EDNS with a payload of 512: also truncated, OPT kept.
    assert_eq!(t.ask(&cq("many.test.", RecordType::A, 3, Some((512, false))), client(1)), Handled::Replied);
    let m = t.reply_msg();
    assert!(m.metadata.truncation && m.edns.is_some());

    // Small answer, no EDNS: whole, no OPT; with EDNS and DO: OPT with DO echoed (a separate cache key).
    t.resolve(&cq("one.test.", RecordType::A, 4, None), client(1), vec![a("one.test.", 60, [1, 0, 0, 1])]);
    assert_eq!(t.ask(&cq("one.test.", RecordType::A, 5, None), client(1)), Handled::Replied);
    assert!(t.reply_msg().edns.is_none());
    assert_eq!(t.ask(&cq("one.test.", RecordType::A, 6, Some((1232, false))), client(1)), Handled::Replied);
    assert!(t.reply_msg().edns.is_some());
    assert_eq!(t.ask(&cq("one.test.", RecordType::A, 7, Some((1232, true))), client(1)), Handled::Pending);
    let (h, _, _, uq) = t.one_query();
    assert!(Message::from_vec(&uq).unwrap().edns.unwrap().flags().dnssec_ok);
    t.respond(h, &upstream_answer(&uq, ResponseCode::NoError, vec![a("one.test.", 60, [1, 0, 0, 1])], vec![]));
    let r = t.replies();
    assert!(Message::from_vec(&r[0].1).unwrap().edns.unwrap().flags().dnssec_ok);

    // EDNS version 1: BADVERS.
    let mut q = cq("one.test.", RecordType::A, 8, Some((1232, false)));
    let n = q.len();
    q[n - 5] = 1; // OPT TTL: ext-rcode, VERSION, flags
    assert_eq!(t.ask(&q, client(1)), Handled::Replied);
    assert_eq!(rcode(&t.reply), 0);
    let n = t.reply.len();
    assert_eq!(t.reply[n - 11..n - 4], [0, 0, 41, 4, 0xd0, 1, 0], "OPT with extended RCODE 1 (BADVERS = 16)");
    assert_eq!(question_bytes(&t.reply), question_bytes(&q));
}

#[test]
fn stored_answers_replay_byte_exact() {
    let mut t = T::new(cfg());
    let q = cq("www.test.", RecordType::A, 0x4242, Some((1232, false)));
    assert_eq!(t.ask(&q, client(1)), Handled::Pending);
    let (h, _, _, uq) = t.one_query();
    let mx = RData::MX(MX::new(10, name("mail.www.test.")));
    let unknown = RData::Unknown { code: RecordType::Unknown(65280), rdata: NULL::with(vec![0xde, 0xad, 0xbe, 0xef]) };
    let answers = vec![
        Record::from_rdata(name("www.test."), 300, RData::CNAME(CNAME(name("edge.cdn.test.")))),
        a("edge.cdn.test.", 120, [203, 0, 113, 7]),
        Record::from_rdata(name("edge.cdn.test."), 120, mx),
        Record::from_rdata(name("edge.cdn.test."), 120, RData::TXT(TXT::new(vec!["hello".into()]))),
        Record::from_rdata(name("www.test."), 300, unknown),
    ];
    let auth = vec![Record::from_rdata(
        name("cdn.test."),
        900,
        RData::NS(hickory_proto::rr::rdata::NS(name("ns1.cdn.test."))),
    )];
    let mut up = upstream_answer(&uq, ResponseCode::NoError, answers, auth);
    wire::put16(&mut up, 0, wire::be16(&uq, 0));
    assert!(up.windows(2).filter(|w| w[0] & 0xc0 == 0xc0).count() >= 5, "the upstream compresses");
    t.respond(h, &up);
    let r = t.replies().pop().unwrap().1;
    // Same bytes but the id (the client's); the upstream's OPT and ours are identical here.
    assert_eq!(r.len(), up.len());
    assert_eq!(wire::be16(&r, 0), 0x4242);
    assert_eq!(r[2..], up[2..]);
    // From the cache 100 s later: same bytes except id and TTLs.
    t.now += 100_000;
    assert_eq!(t.ask(&q, client(2)), Handled::Replied);
    let c = t.reply.clone();
    assert_eq!(c.len(), up.len());
    let m = Message::from_vec(&c).unwrap();
    let ttls: Vec<u32> = m.answers.iter().chain(&m.authorities).map(|r| r.ttl).collect();
    assert_eq!(ttls, vec![200, 20, 20, 20, 200, 800]);
    let qend = 12 + question_bytes(&c).len();
    let walk = wire::walk_answer(&c, qend).unwrap();
    let in_ttl = |i: usize| walk.rrs.iter().any(|(_, rr)| (rr.ttl_at..rr.ttl_at + 4).contains(&i));
    let diff: Vec<usize> = (2..c.len()).filter(|&i| c[i] != up[i]).collect();
    assert!(!diff.is_empty() && diff.iter().all(|&i| in_ttl(i)), "only TTL bytes differ: {diff:?}");
    assert_eq!(m.answers[4].record_type(), RecordType::Unknown(65280));
}

// ---- bad input ----

#[test]
fn malformed_queries_get_formerr_notimp_or_drop() {
    let mut t = T::new(cfg());
    let q = cq("www.example.com.", RecordType::A, 0x0101, Some((1232, true)));
    for n in 0..q.len() {
        let h = t.ask(&q[..n], client(1));
        if n < 12 {
            assert_eq!(h, Handled::Dropped(DropReason::Truncated));
        } else {
            assert_eq!(h, Handled::Replied, "len {n}");
            assert_eq!(rcode(&t.reply), 1, "len {n}");
            assert_eq!(wire::be16(&t.reply, 0), 0x0101);
        }
    }
    let header = |flags: [u8; 2], qd: u16| {
        let mut m = vec![0xab, 0xcd, flags[0], flags[1]];
        m.extend_from_slice(&qd.to_be_bytes());
        m.extend_from_slice(&[0; 6]);
        m
    };
    // A compression loop / pointer in the question.
    let mut m = header([1, 0], 1);
    m.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
    assert_eq!(t.ask(&m, client(1)), Handled::Replied);
    assert_eq!(rcode(&t.reply), 1);
    // QDCOUNT 0 and 2.
    for qd in [0, 2] {
        let mut m = header([1, 0], qd);
        m.extend_from_slice(&q[12..]);
        assert_eq!(t.ask(&m, client(1)), Handled::Replied);
        assert_eq!(rcode(&t.reply), 1);
    }
    // Opcodes 2 (STATUS) and 5 (UPDATE): NOTIMP, opcode echoed.
    for op in [2u8, 5] {
        let mut m = q.clone();
        m[2] = op << 3 | 1;
        assert_eq!(t.ask(&m, client(1)), Handled::Replied);
        assert_eq!(rcode(&t.reply), 4);
        assert_eq!((t.reply[2] >> 3) & 0xf, op);
        assert!(t.reply[2] & 0x80 != 0);
    }
    // QR=1: dropped.
    let mut m = q.clone();
    m[2] |= 0x80;
    assert_eq!(t.ask(&m, client(1)), Handled::Dropped(DropReason::NotQuery));
    // Oversized name (5 x 63-byte labels = 320 bytes), an extended label type, two OPTs.
    let mut m = header([1, 0], 1);
    for _ in 0..5 {
        m.push(63);
        m.extend_from_slice(&[b'a'; 63]);
    }
    m.extend_from_slice(&[0, 0, 1, 0, 1]);
    assert_eq!(t.ask(&m, client(1)), Handled::Replied);
    assert_eq!(rcode(&t.reply), 1);
    let mut m = header([1, 0], 1);
    m.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
    assert_eq!(t.ask(&m, client(1)), Handled::Replied);
    assert_eq!(rcode(&t.reply), 1);
    let mut m = q.clone();
    m[11] = 2;
    m.extend_from_slice(&q[q.len() - 11..]);
    assert_eq!(t.ask(&m, client(1)), Handled::Replied);
    assert_eq!(rcode(&t.reply), 1);
    assert!(t.out.is_empty());
    assert_eq!(t.dns.stats().dropped(DropReason::Truncated), 12);
    assert_eq!(t.dns.stats().dropped(DropReason::NotQuery), 1);
    // 253-byte name: fine.
    let long = format!("{}.{}.{}.{}.", "a".repeat(63), "b".repeat(63), "c".repeat(63), "d".repeat(61));
    assert_eq!(t.ask(&cq(&long, RecordType::A, 1, None), client(1)), Handled::Pending);
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % max;
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut t = T::new(cfg());
    let mut rng = Rng(0x9e3779b97f4a7c15);
    let base = cq("www.example.com.", RecordType::A, 1, Some((1232, false)));
    for i in 0..200_000 {
        let mut m = if i % 2 == 0 { rng.bytes(600) } else { base.clone() };
        if i % 2 == 1 {
            // Mutate a valid query in a few places.
            for _ in 0..(rng.next() % 4 + 1) {
                let at = rng.next() as usize % m.len();
                m[at] = rng.next() as u8;
            }
            m.truncate(rng.next() as usize % (m.len() + 1));
        }
        let _ = t.ask(&m, client((i % 7) as u8));
    }
    // Random upstream answers to a pending question, then mutated real ones.
    t.out.clear();
    t.ask(&cq("pending.test.", RecordType::A, 1, None), client(1));
    let (mut h, _, _, mut uq) = t.one_query();
    let good = |uq: &[u8]| {
        upstream_answer(
            uq,
            ResponseCode::NoError,
            vec![a("pending.test.", 60, [1, 2, 3, 4]), soa("test.", 60, 60)],
            vec![],
        )
    };
    for i in 0..100_000 {
        let mut m = if i % 2 == 0 { rng.bytes(600) } else { good(&uq) };
        if i % 2 == 1 {
            for _ in 0..(rng.next() % 3 + 1) {
                let at = 12 + rng.next() as usize % (m.len() - 12);
                m[at] = rng.next() as u8;
            }
        }
        t.respond(h, &m);
        if !t.out.is_empty() || !t.dns.handles.contains_key(&h.0) {
            t.out.clear();
            t.dns.cache = Cache::new(100);
            t.ask(&cq("pending.test.", RecordType::A, 1, None), client(1));
            let qs = t.queries();
            t.out.clear();
            if let Some(q) = qs.into_iter().next() {
                (h, uq) = (q.0, q.3);
            }
        }
    }
}

// ---- query log and name map ----

#[test]
fn query_log_ring_and_name_map() {
    let mut c = cfg();
    c.log_entries_per_device = 5;
    c.max_devices = 2;
    let mut t = T::new(c);
    let mac = Mac([2, 0, 0, 0, 0, 0x65]);
    t.dns.set_host(Some("phone"), Ipv4Addr::new(192, 168, 1, 101), Some(mac)); // client(1)
    for i in 0..8 {
        t.ask(&cq(&format!("h{i}.lan."), RecordType::A, 1, None), client(1));
    }
    let dev = Device::Mac(mac);
    let log = t.dns.query_log(&dev);
    assert_eq!(log.len(), 5);
    assert_eq!(
        log.iter().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["h3.lan", "h4.lan", "h5.lan", "h6.lan", "h7.lan"]
    );
    assert_eq!((log[0].rcode.as_str(), log[0].qtype.as_str()), ("NXDOMAIN", "A"));

    // Name map from a forwarded answer and from a cached one.
    t.now += 1;
    t.resolve(&cq("Video.Test.", RecordType::A, 1, None), client(1), vec![a("video.test.", 60, [198, 51, 100, 1])]);
    let ip: IpAddr = "198.51.100.1".parse().unwrap();
    assert_eq!(t.dns.name_for(&dev, ip), Some("video.test"));
    let last = t.dns.query_log(&dev).pop().unwrap();
    assert_eq!((last.answers, last.cached, last.rcode.as_str(), last.unix_ms), (vec![ip], false, "NOERROR", NOW + 1));
    t.ask(&cq("video.test.", RecordType::A, 1, None), client(2));
    let dev2 = Device::Ip("192.168.1.102".parse().unwrap());
    assert_eq!(t.dns.name_for(&dev2, ip), Some("video.test"));
    assert!(t.dns.query_log(&dev2)[0].cached);
    assert_eq!(t.dns.name_for(&dev2, "1.1.1.1".parse().unwrap()), None);
    // Devices are bounded (LRU): a third one pushes out the least recently active.
    t.ask(&cq("x.lan.", RecordType::A, 1, None), client(3));
    let devices = t.dns.devices();
    assert_eq!(devices.len(), 2);
    assert!(!devices.contains(&dev));
    // Latency of a forwarded answer.
    t.ask(&cq("slow.test.", RecordType::A, 1, None), client(3));
    let (h, _, _, uq) = t.one_query();
    t.now += 250;
    t.respond(h, &upstream_answer(&uq, ResponseCode::NoError, vec![a("slow.test.", 60, [1, 1, 1, 1])], vec![]));
    let dev3 = Device::Ip("192.168.1.103".parse().unwrap());
    assert_eq!(t.dns.query_log(&dev3).pop().unwrap().latency_ms, 250);
}

#[test]
fn name_map_is_bounded() {
    let mut t = T::new(cfg());
    let dev = Device::Ip("192.168.1.101".parse().unwrap());
    let records: Vec<Record> =
        (0..250).map(|i| a("many.test.", 60, [10, 1, (i / 250) as u8, (i % 250) as u8])).collect();
    t.resolve(&cq("many.test.", RecordType::A, 1, None), client(1), records);
    for round in 0..20u8 {
        let n = format!("n{round}.test.");
        let records: Vec<Record> = (0..200).map(|i| a(&n, 60, [10, 2 + round, 0, i as u8])).collect();
        t.resolve(
            &cq(&n, RecordType::A, 1, Some((65000, false))),
            ClientRef { transport: Transport::Tcp, ..client(1) },
            records,
        );
    }
    let known = (0..20u8).flat_map(|r| (0..200).map(move |i| IpAddr::from([10, 2 + r, 0, i as u8])));
    let count = known.filter(|ip| t.dns.name_for(&dev, *ip).is_some()).count();
    assert!((NAMES_PER_DEVICE / 2..=NAMES_PER_DEVICE).contains(&count), "{count}");
    assert_eq!(t.dns.name_for(&dev, IpAddr::from([10, 21, 0, 199])), Some("n19.test"));
}

// ---- performance ----

fn warm() -> (T, Vec<u8>) {
    let mut t = T::new(cfg());
    let q = cq("www.Example.com.", RecordType::A, 0x1234, Some((1232, false)));
    let answers = vec![
        Record::from_rdata(name("www.example.com."), 300, RData::CNAME(CNAME(name("edge.example.net.")))),
        a("edge.example.net.", 300, [93, 184, 216, 34]),
        a("edge.example.net.", 300, [93, 184, 216, 35]),
    ];
    t.resolve(&q, client(1), answers);
    (t, q)
}

#[test]
fn cached_path_does_not_allocate() {
    let (mut t, q) = warm();
    for _ in 0..300 {
        assert_eq!(t.ask(&q, client(1)), Handled::Replied); // fill the log ring to its bound
    }
    let before = allocs();
    for i in 0..1000 {
        t.now += i % 2;
        assert_eq!(t.ask(&q, client(1)), Handled::Replied);
    }
    assert_eq!(allocs() - before, 0, "allocations on the cached path");
}

/// `cargo test --release --lib dns::core::tests::bench_cached -- --ignored --nocapture`
#[test]
#[ignore]
fn bench_cached() {
    let (mut t, q) = warm();
    let n = 2_000_000u64;
    for _ in 0..10_000 {
        t.ask(&q, client(1));
    }
    let start = std::time::Instant::now();
    for i in 0..n {
        let h = t.dns.handle_query(std::hint::black_box(&q), client(1), ms(NOW + i / 1000), &mut t.reply, &mut t.out);
        std::hint::black_box((&h, &t.reply));
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    println!("cached path: {ns:.1} ns/query ({} byte answer)", t.reply.len());
    assert_eq!(t.dns.stats().cache_hits, n + 10_000);
}
