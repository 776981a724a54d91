//! Unit and property tests of the NAT engine with a fake clock. Every translated packet is checked against a
//! from-scratch recomputation of its checksums (`assert_checksums`).

use super::checksum::{fold, pseudo_header, sum};
use super::wire::*;
use super::*;
use crate::ports::forward::{PortForward, Protocols};
use std::net::{Ipv4Addr, SocketAddrV4};

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
const A: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const B: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 20);
const R1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const R2: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const R3: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const HOP: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);

const OUT: PacketMeta = PacketMeta::new(Direction::Outbound);
const IN: PacketMeta = PacketMeta::new(Direction::Inbound);
const SEC: u64 = 1000;

/// Milliseconds as the NAT's time.
fn at(ms: u64) -> crate::types::Time {
    crate::types::Time::from_unix_ms(ms)
}

fn cfg() -> NatConfig {
    NatConfig::new(WAN, "192.168.1.0/24".parse().unwrap(), ROUTER)
}

fn nat() -> Nat {
    Nat::new(cfg(), 42)
}

// ---- packet builders ----

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], payload: &[u8]) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let ihl = 20 + options.len();
    let total = ihl + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x40 | (ihl / 4) as u8;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..ihl].copy_from_slice(options);
    let c = !fold(sum(&p[..ihl], 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[ihl..].copy_from_slice(payload);
    p
}

fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, seg: &mut [u8], at: usize) {
    seg[at] = 0;
    seg[at + 1] = 0;
    let mut c = !fold(sum(seg, pseudo_header(src.into(), dst.into(), proto, seg.len())));
    if proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn tcp_opts(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8, payload: &[u8], opts: &[u8]) -> Vec<u8> {
    let mut seg = vec![0u8; 20 + payload.len()];
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    seg[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = flags;
    seg[14..16].copy_from_slice(&65535u16.to_be_bytes());
    seg[20..].copy_from_slice(payload);
    l4_checksum(src, dst, PROTO_TCP, &mut seg, 16);
    ipv4(src, dst, PROTO_TCP, opts, &seg)
}

fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Vec<u8> {
    tcp_opts(src, sport, dst, dport, flags, b"hello tcp", &[])
}

fn udp_payload(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8], with_csum: bool) -> Vec<u8> {
    let mut seg = vec![0u8; 8 + payload.len()];
    seg[0..2].copy_from_slice(&sport.to_be_bytes());
    seg[2..4].copy_from_slice(&dport.to_be_bytes());
    let ulen = seg.len() as u16;
    seg[4..6].copy_from_slice(&ulen.to_be_bytes());
    seg[8..].copy_from_slice(payload);
    if with_csum {
        l4_checksum(src, dst, PROTO_UDP, &mut seg, 6);
    }
    ipv4(src, dst, PROTO_UDP, &[], &seg)
}

fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    udp_payload(src, sport, dst, dport, b"hello udp!", true)
}

fn icmp(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let c = !fold(sum(&m, 0));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, PROTO_ICMP, &[], &m)
}

fn echo(src: Ipv4Addr, dst: Ipv4Addr, ty: u8, id: u16, seq: u16) -> Vec<u8> {
    let [a, b] = id.to_be_bytes();
    let [c, d] = seq.to_be_bytes();
    icmp(src, dst, ty, 0, [a, b, c, d], b"ping payload 0123456789")
}

/// An ICMP error from `from` to `to` quoting `quoted` (cut to `quote_len` bytes).
fn error(from: Ipv4Addr, to: Ipv4Addr, ty: u8, code: u8, rest: [u8; 4], quoted: &[u8], quote_len: usize) -> Vec<u8> {
    icmp(from, to, ty, code, rest, &quoted[..quote_len.min(quoted.len())])
}

// ---- views of a packet ----

fn src(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::from(be32(p, 12))
}
fn dst(p: &[u8]) -> Ipv4Addr {
    Ipv4Addr::from(be32(p, 16))
}
fn ihl(p: &[u8]) -> usize {
    usize::from(p[0] & 15) * 4
}
fn sport(p: &[u8]) -> u16 {
    be16(p, ihl(p))
}
fn dport(p: &[u8]) -> u16 {
    be16(p, ihl(p) + 2)
}
fn echo_id(p: &[u8]) -> u16 {
    be16(p, ihl(p) + 4)
}

/// Checks the IP header checksum and the full L4 checksum from scratch; for ICMP errors, also the quoted IP header
/// checksum and, when the quote is whole, the quoted L4 checksum.
fn assert_checksums(p: &[u8]) {
    let h = ihl(p);
    assert_eq!(fold(sum(&p[..h], 0)), 0xffff, "IP header checksum");
    let total = usize::from(be16(p, 2));
    let seg = &p[h..total];
    let (s, d) = (be32(p, 12), be32(p, 16));
    match p[9] {
        PROTO_TCP => assert_eq!(fold(sum(seg, pseudo_header(s, d, PROTO_TCP, seg.len()))), 0xffff, "TCP checksum"),
        PROTO_UDP if be16(seg, 6) != 0 => {
            assert_eq!(fold(sum(seg, pseudo_header(s, d, PROTO_UDP, seg.len()))), 0xffff, "UDP checksum")
        }
        PROTO_ICMP => {
            assert_eq!(fold(sum(seg, 0)), 0xffff, "ICMP checksum");
            if matches!(seg[0], ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED) {
                let q = &seg[8..];
                let qh = usize::from(q[0] & 15) * 4;
                assert_eq!(fold(sum(&q[..qh], 0)), 0xffff, "quoted IP header checksum");
                let qtotal = usize::from(be16(q, 2));
                if qtotal == q.len() {
                    assert_checksums(q);
                }
            }
        }
        _ => {}
    }
}

fn go(n: &mut Nat, p: &mut [u8], meta: PacketMeta, now: u64) -> Verdict {
    let v = n.translate(p, meta, at(now)).0;
    if v == Verdict::Translated {
        assert_checksums(p);
    }
    v
}

/// Sends outbound, expects a translation, returns the external port (or echo id).
fn out(n: &mut Nat, mut p: Vec<u8>, now: u64) -> (Vec<u8>, u16) {
    assert_eq!(go(n, &mut p, OUT, now), Verdict::Translated);
    assert_eq!(src(&p), WAN);
    let port = if p[9] == PROTO_ICMP { echo_id(&p) } else { sport(&p) };
    (p, port)
}

// ---- mapping and filtering ----

#[test]
fn endpoint_independent_mapping_preserves_port() {
    let mut n = nat();
    let (p1, e1) = out(&mut n, udp(A, 5000, R1, 53), 0);
    let (_, e2) = out(&mut n, udp(A, 5000, R2, 53), 0);
    let (_, e3) = out(&mut n, tcp(A, 5000, R1, 80, TCP_SYN), 0);
    assert_eq!((e1, e2, e3), (5000, 5000, 5000));
    assert_eq!((dst(&p1), dport(&p1)), (R1, 53));
    assert_eq!(n.snapshot(at(0)).mappings.len(), 2, "one UDP and one TCP mapping");
}

#[test]
fn a_new_wan_address_carries_mappings_and_forwards_over() {
    let new_wan = Ipv4Addr::new(203, 0, 113, 77);
    let mut c = cfg();
    c.forwards =
        vec![PortForward { external_port: 8080, internal: SocketAddrV4::new(B, 80), protocols: Protocols::Tcp }];
    let mut n = Nat::new(c, 42);
    let (_, e) = out(&mut n, udp(A, 5000, R1, 53), 0);
    n.set_wan_ip(new_wan);
    assert_eq!(n.config().wan_ip, new_wan);
    // The same flow leaves from the new address, same port.
    let mut p = udp(A, 5000, R1, 53);
    assert_eq!(go(&mut n, &mut p, OUT, 1), Verdict::Translated);
    assert_eq!((src(&p), sport(&p)), (new_wan, e));
    // Replies to the new address come in; to the old one they are no longer ours.
    let mut p = udp(R1, 53, new_wan, e);
    assert_eq!(go(&mut n, &mut p, IN, 2), Verdict::Translated);
    assert_eq!((dst(&p), dport(&p)), (A, 5000));
    let mut p = udp(R1, 53, WAN, e);
    assert_eq!(go(&mut n, &mut p, IN, 2), Verdict::Local);
    // The forward answers on the new address.
    let mut p = tcp(R2, 40000, new_wan, 8080, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, IN, 3), Verdict::Translated);
    assert_eq!((dst(&p), dport(&p)), (B, 80));
    // Hairpinning goes by the new address too.
    let mut p = udp(B, 6000, new_wan, e);
    assert_eq!(go(&mut n, &mut p, OUT, 4), Verdict::Translated);
    assert_eq!((src(&p), dst(&p), dport(&p)), (new_wan, A, 5000));
}

#[test]
fn endpoint_independent_filtering() {
    let mut n = nat();
    // Before any mapping: not ours (the router's own traffic shares the address).
    let mut p = udp(R3, 9999, WAN, 5000);
    assert_eq!(go(&mut n, &mut p, IN, 0), Verdict::Local);
    let mut p = tcp(R3, 9999, WAN, 5000, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, IN, 0), Verdict::Local);

    out(&mut n, udp(A, 5000, R1, 53), 0);
    out(&mut n, tcp(A, 5000, R1, 80, TCP_SYN), 0);
    // A third remote reaches the mapping (UDP, and a TCP SYN: RFC 5382 EIF).
    let mut p = udp(R3, 9999, WAN, 5000);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Translated);
    assert_eq!((src(&p), sport(&p), dst(&p), dport(&p)), (R3, 9999, A, 5000));
    let mut p = tcp(R3, 9999, WAN, 5000, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Translated);
    assert_eq!((dst(&p), dport(&p)), (A, 5000));
    // The internal host answers the SYN: a connection in SYN-received state.
    out(&mut n, tcp(A, 5000, R3, 9999, TCP_SYN | TCP_ACK), 2);
    let s = n.snapshot(at(2));
    let c = s.connections.iter().find(|c| c.remote == SocketAddrV4::new(R3, 9999) && c.protocol == Protocol::Tcp);
    assert_eq!(c.unwrap().state, Some(TcpState::SynReceived));
    // Another port of the WAN address is still not ours.
    let mut p = udp(R3, 9999, WAN, 5001);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Local);
}

#[test]
fn port_taken_allocates_another_and_both_work() {
    let mut n = nat();
    let (_, ea) = out(&mut n, udp(A, 5000, R1, 53), 0);
    let (_, eb) = out(&mut n, udp(B, 5000, R1, 53), 0);
    assert_eq!(ea, 5000);
    assert_ne!(eb, 5000);
    assert!((1024..=65535).contains(&eb));
    for (e, host) in [(ea, A), (eb, B)] {
        let mut p = udp(R1, 53, WAN, e);
        assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Translated);
        assert_eq!((dst(&p), dport(&p)), (host, 5000));
    }
    // A source port outside the range is never kept (no LAN host takes port 22 of the WAN address).
    let (_, e) = out(&mut n, tcp(A, 22, R1, 22, TCP_SYN), 0);
    assert!(e >= 1024);
}

#[test]
fn hairpinning_both_ways() {
    let mut n = nat();
    let (_, ea) = out(&mut n, udp(A, 5000, R1, 3478), 0);
    // B sends to A's external endpoint.
    let mut p = udp(B, 6000, WAN, ea);
    assert_eq!(go(&mut n, &mut p, OUT, 1), Verdict::Translated);
    assert_eq!((dst(&p), dport(&p)), (A, 5000));
    assert_eq!(src(&p), WAN, "source is B's external address (RFC 4787 REQ-9)");
    let eb = sport(&p);
    // A answers B's external endpoint.
    let mut p = udp(A, 5000, WAN, eb);
    assert_eq!(go(&mut n, &mut p, OUT, 2), Verdict::Translated);
    assert_eq!((src(&p), sport(&p), dst(&p), dport(&p)), (WAN, ea, B, 6000));
    // TCP too.
    let (_, ta) = out(&mut n, tcp(A, 7000, R1, 80, TCP_SYN), 0);
    let mut p = tcp(B, 7001, WAN, ta, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, OUT, 3), Verdict::Translated);
    assert_eq!((src(&p), dst(&p), dport(&p)), (WAN, A, 7000));
    // To the WAN address with nothing behind: for the router, untouched.
    let mut p = tcp(B, 7001, WAN, 443, TCP_SYN);
    let before = p.clone();
    assert_eq!(go(&mut n, &mut p, OUT, 3), Verdict::Accept);
    assert_eq!(p, before);
    assert_eq!(n.stats().hairpinned, 3);
}

#[test]
fn icmp_echo_by_identifier() {
    let mut n = nat();
    let (p, ia) = out(&mut n, echo(A, R1, ICMP_ECHO_REQUEST, 77, 1), 0);
    assert_eq!(ia, 77);
    assert_eq!(dst(&p), R1);
    let (_, ib) = out(&mut n, echo(B, R1, ICMP_ECHO_REQUEST, 77, 1), 0);
    assert_ne!(ib, 77);
    for (id, host) in [(ia, A), (ib, B)] {
        let mut p = echo(R1, WAN, ICMP_ECHO_REPLY, id, 1);
        assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Translated);
        assert_eq!((dst(&p), echo_id(&p)), (host, 77));
    }
    // Echo requests to the WAN address are the router's to answer.
    let mut p = echo(R1, WAN, ICMP_ECHO_REQUEST, 77, 1);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Local);
    // An unknown reply id: not ours.
    let mut p = echo(R1, WAN, ICMP_ECHO_REPLY, 4242, 1);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Local);
}

// ---- ICMP errors ----

#[test]
fn port_unreachable_for_outbound_udp() {
    let mut n = nat();
    let (sent, e) = out(&mut n, udp(A, 5000, R1, 53), 0);
    let mut p = error(R1, WAN, ICMP_DEST_UNREACH, 3, [0; 4], &sent, sent.len());
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Translated);
    assert_eq!(dst(&p), A);
    let q = &p[28..];
    assert_eq!((src(q), sport(q), dst(q), dport(q)), (A, 5000, R1, 53));
    assert_eq!(n.stats().icmp_errors_translated, 1);
    // Only 8 bytes of UDP quoted (RFC 792 minimum): still translated.
    let mut p = error(R1, WAN, ICMP_DEST_UNREACH, 3, [0; 4], &sent, 28);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Translated);
    assert_eq!(sport(&p[28..]), 5000);
    // Quote of a flow we do not know: not ours.
    let mut other = sent.clone();
    other[20..22].copy_from_slice(&(e + 1).to_be_bytes());
    let mut p = error(R1, WAN, ICMP_DEST_UNREACH, 3, [0; 4], &other, other.len());
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Local);
}

#[test]
fn fragmentation_needed_for_tcp() {
    let mut n = nat();
    let (sent, _) = out(&mut n, tcp(A, 40000, R1, 443, TCP_SYN), 0);
    let (sent, _) = {
        let _ = sent;
        out(&mut n, tcp_opts(A, 40000, R1, 443, TCP_ACK, &[0xab; 1400], &[]), 1)
    };
    // A router on the path quotes the whole IP header and 28 bytes (TCP header + a bit): MTU 1280.
    let mtu = 1280u16.to_be_bytes();
    for quote in [28, 48, 68] {
        let mut p = error(HOP, WAN, ICMP_DEST_UNREACH, 4, [0, 0, mtu[0], mtu[1]], &sent, quote);
        assert_eq!(go(&mut n, &mut p, IN, 2), Verdict::Translated, "quote {quote}");
        assert_eq!(dst(&p), A);
        assert_eq!(&p[26..28], &mtu);
        let q = &p[28..];
        assert_eq!((src(q), sport(q)), (A, 40000));
        if quote >= 38 {
            // The quoted TCP checksum was updated: equal to the original (untranslated) packet's.
            let original = tcp_opts(A, 40000, R1, 443, TCP_ACK, &[0xab; 1400], &[]);
            assert_eq!(be16(q, 36), be16(&original, 36));
        }
    }
}

#[test]
fn time_exceeded_for_traceroute_probes() {
    let mut n = nat();
    for ttl in 2..6u16 {
        let (sent, _) = out(&mut n, udp(A, 33000, R1, 33434 + ttl), u64::from(ttl));
        let mut p = error(HOP, WAN, ICMP_TIME_EXCEEDED, 0, [0; 4], &sent, sent.len());
        assert_eq!(go(&mut n, &mut p, IN, u64::from(ttl)), Verdict::Translated);
        let q = &p[28..];
        assert_eq!((dst(&p), src(q), sport(q), dport(q)), (A, A, 33000, 33434 + ttl));
    }
    // ICMP traceroute (echo probes).
    let (sent, _) = out(&mut n, echo(A, R1, ICMP_ECHO_REQUEST, 999, 3), 9);
    let mut p = error(HOP, WAN, ICMP_TIME_EXCEEDED, 0, [0; 4], &sent, sent.len());
    assert_eq!(go(&mut n, &mut p, IN, 9), Verdict::Translated);
    assert_eq!((dst(&p), src(&p[28..]), echo_id(&p[28..])), (A, A, 999));
}

#[test]
fn outbound_error_about_inbound_packet() {
    let mut n = nat();
    let (_, e) = out(&mut n, udp(B, 5353, R1, 5353), 0);
    let mut inbound = udp(R2, 1111, WAN, e);
    assert_eq!(go(&mut n, &mut inbound, IN, 1), Verdict::Translated);
    // B says port unreachable about it.
    let mut p = error(B, R2, ICMP_DEST_UNREACH, 3, [0; 4], &inbound, inbound.len());
    assert_eq!(go(&mut n, &mut p, OUT, 2), Verdict::Translated);
    assert_eq!((src(&p), dst(&p)), (WAN, R2));
    let q = &p[28..];
    assert_eq!((src(q), sport(q), dst(q), dport(q)), (R2, 1111, WAN, e));
    // About a flow with no mapping: never leaves with a private address.
    let stray = udp(R2, 1111, B, 9);
    let mut p = error(B, R2, ICMP_DEST_UNREACH, 3, [0; 4], &stray, stray.len());
    assert_eq!(go(&mut n, &mut p, OUT, 2), Verdict::Drop(DropReason::NoMapping));
}

#[test]
fn hairpinned_error() {
    let mut n = nat();
    let (_, ea) = out(&mut n, udp(A, 5000, R1, 3478), 0);
    let mut p = udp(B, 6000, WAN, ea);
    assert_eq!(go(&mut n, &mut p, OUT, 1), Verdict::Translated);
    let eb = sport(&p);
    // A (now holding the hairpinned packet) reports port unreachable to WAN:eb.
    let mut err = error(A, WAN, ICMP_DEST_UNREACH, 3, [0; 4], &p, p.len());
    assert_eq!(go(&mut n, &mut err, OUT, 2), Verdict::Translated);
    assert_eq!((src(&err), dst(&err)), (WAN, B));
    let q = &err[28..];
    assert_eq!((src(q), sport(q), dst(q), dport(q)), (B, 6000, WAN, ea));
    let _ = eb;
}

// ---- TCP states and timeouts ----

fn handshake(n: &mut Nat, t: u64) -> u16 {
    let (_, e) = out(n, tcp(A, 40000, R1, 443, TCP_SYN), t);
    let mut p = tcp(R1, 443, WAN, e, TCP_SYN | TCP_ACK);
    assert_eq!(go(n, &mut p, IN, t), Verdict::Translated);
    out(n, tcp(A, 40000, R1, 443, TCP_ACK), t);
    e
}

fn conn_state(n: &Nat, now: u64) -> Option<TcpState> {
    n.snapshot(at(now)).connections.iter().find(|c| c.protocol == Protocol::Tcp).and_then(|c| c.state)
}

fn inbound_ok(n: &mut Nat, mut p: Vec<u8>, now: u64) -> bool {
    go(n, &mut p, IN, now) == Verdict::Translated
}

#[test]
fn tcp_established_survives_2h4m() {
    let mut n = nat();
    let e = handshake(&mut n, 0);
    assert_eq!(conn_state(&n, 0), Some(TcpState::Established));
    let t = 7439 * SEC;
    n.expire(at(t));
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_ACK), t));
    // Inbound traffic did not refresh: gone at 2 h 4 min after the last outbound packet.
    n.expire(at(7441 * SEC));
    assert!(!inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_ACK), 7441 * SEC));
    assert!(n.snapshot(at(7441 * SEC)).connections.is_empty());
    // Outbound traffic refreshes.
    let mut n = nat();
    let e = handshake(&mut n, 0);
    out(&mut n, tcp(A, 40000, R1, 443, TCP_ACK), 7000 * SEC);
    n.expire(at(14000 * SEC));
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_ACK), 14000 * SEC));
}

#[test]
fn tcp_transitory_4_minutes() {
    // SYN sent, no answer.
    let mut n = nat();
    let (_, e) = out(&mut n, tcp(A, 40000, R1, 443, TCP_SYN), 0);
    assert_eq!(conn_state(&n, 0), Some(TcpState::SynSent));
    n.expire(at(239 * SEC));
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_SYN | TCP_ACK), 239 * SEC));
    // The SYN-ACK came in but the connection is not established until the outbound ACK: no extension.
    n.expire(at(241 * SEC));
    assert!(!inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_ACK), 241 * SEC));

    // FIN seen (from outside) on an established connection: 4 minutes from then at most.
    let mut n = nat();
    let e = handshake(&mut n, 0);
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_FIN | TCP_ACK), 100 * SEC));
    assert_eq!(conn_state(&n, 100 * SEC), Some(TcpState::Closing));
    out(&mut n, tcp(A, 40000, R1, 443, TCP_FIN | TCP_ACK), 101 * SEC);
    n.expire(at(340 * SEC));
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_ACK), 340 * SEC));
    n.expire(at(342 * SEC));
    assert!(!inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_ACK), 342 * SEC));

    // RST from outside: transitory; an inbound RST never extends the expiry.
    let mut n = nat();
    let e = handshake(&mut n, 0);
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_RST), 50 * SEC));
    assert_eq!(conn_state(&n, 50 * SEC), Some(TcpState::Closed));
    let s = n.snapshot(at(50 * SEC));
    assert_eq!(s.connections[0].remaining_ms, 240 * SEC, "min(old expiry, now + 4 min)");
    // Inbound packets after it extend nothing.
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_RST), 200 * SEC));
    n.expire(at(289 * SEC));
    assert_eq!(n.snapshot(at(289 * SEC)).connections.len(), 1);
    n.expire(at(290 * SEC));
    assert!(n.snapshot(at(290 * SEC)).connections.is_empty());
    assert!(n.snapshot(at(290 * SEC)).mappings.is_empty());

    // A new SYN on the closed 4-tuple starts over.
    let mut n = nat();
    handshake(&mut n, 0);
    out(&mut n, tcp(A, 40000, R1, 443, TCP_RST), 10);
    assert_eq!(conn_state(&n, 10), Some(TcpState::Closed));
    out(&mut n, tcp(A, 40000, R1, 443, TCP_SYN), 20);
    assert_eq!(conn_state(&n, 20), Some(TcpState::SynSent));
}

#[test]
fn udp_5_minutes_inbound_does_not_refresh() {
    let mut n = nat();
    let (_, e) = out(&mut n, udp(A, 5000, R1, 53), 0);
    for t in [100, 200, 299] {
        n.expire(at(t * SEC));
        assert!(inbound_ok(&mut n, udp(R1, 53, WAN, e), t * SEC));
    }
    n.expire(at(300 * SEC));
    assert!(!inbound_ok(&mut n, udp(R1, 53, WAN, e), 300 * SEC));
    // Without calling expire, the lookup itself honours the expiry.
    let mut n = nat();
    let (_, e) = out(&mut n, udp(A, 5000, R1, 53), 0);
    assert!(!inbound_ok(&mut n, udp(R1, 53, WAN, e), 301 * SEC));
    // Outbound refresh.
    out(&mut n, udp(A, 5000, R1, 53), 302 * SEC);
    n.expire(at(600 * SEC));
    assert!(inbound_ok(&mut n, udp(R1, 53, WAN, e), 600 * SEC));
}

#[test]
fn icmp_60_seconds() {
    let mut n = nat();
    let (_, id) = out(&mut n, echo(A, R1, ICMP_ECHO_REQUEST, 5, 1), 0);
    n.expire(at(59 * SEC));
    assert!(inbound_ok(&mut n, echo(R1, WAN, ICMP_ECHO_REPLY, id, 1), 59 * SEC));
    n.expire(at(60 * SEC));
    assert!(!inbound_ok(&mut n, echo(R1, WAN, ICMP_ECHO_REPLY, id, 1), 60 * SEC));
    assert_eq!(n.stats().connections, 0);
}

#[test]
fn flood_keeps_tables_bounded_and_established_flows() {
    let mut c = cfg();
    c.max_mappings = 10_000;
    c.max_connections = 20_000;
    let mut n = Nat::new(c, 7);
    let mut established = Vec::new();
    for i in 0..20u16 {
        let (_, e) = out(&mut n, tcp(A, 30000 + i, R1, 443, TCP_SYN), 0);
        let mut p = tcp(R1, 443, WAN, e, TCP_SYN | TCP_ACK);
        assert_eq!(go(&mut n, &mut p, IN, 0), Verdict::Translated);
        out(&mut n, tcp(A, 30000 + i, R1, 443, TCP_ACK), 0);
        established.push((30000 + i, e));
    }
    // A UDP flow that has seen replies (assured) too.
    let (_, ue) = out(&mut n, udp(A, 4500, R2, 4500), 0);
    assert!(inbound_ok(&mut n, udp(R2, 4500, WAN, ue), 0));
    // 100,000 new flows (SYNs from many hosts and ports to many servers), 1 ms apart.
    for i in 0..100_000u32 {
        let host = Ipv4Addr::new(192, 168, 1, 100 + (i % 100) as u8);
        let sport = 1024 + (i / 100) as u16;
        let server = Ipv4Addr::from(0x0a00_0000 + i);
        let mut p = tcp(host, sport, server, 80, TCP_SYN);
        let t = u64::from(i) + 1;
        assert_eq!(n.translate(&mut p, OUT, at(t)).0, Verdict::Translated);
        if i % 997 == 0 {
            let s = n.stats();
            assert!(s.mappings <= 10_000 && s.connections <= 20_000);
        }
    }
    let now = 100_001;
    let s = *n.stats();
    assert!(s.mappings <= 10_000, "{s:?}");
    assert!(s.connections <= 20_000, "{s:?}");
    assert!(s.mappings_evicted > 80_000, "{s:?}");
    for (sport, e) in established {
        let mut p = tcp(R1, 443, WAN, e, TCP_ACK);
        assert_eq!(go(&mut n, &mut p, IN, now), Verdict::Translated);
        assert_eq!((dst(&p), dport(&p)), (A, sport));
        out(&mut n, tcp(A, sport, R1, 443, TCP_ACK), now);
    }
    assert!(inbound_ok(&mut n, udp(R2, 4500, WAN, ue), now));
}

#[test]
fn flood_from_one_socket_evicts_unanswered_first() {
    let mut c = cfg();
    c.max_connections = 100;
    let mut n = Nat::new(c, 7);
    let e = handshake(&mut n, 0);
    for i in 0..10_000u32 {
        let mut p = udp(B, 9000, Ipv4Addr::from(0x0a00_0000 + i), 53);
        assert_eq!(n.translate(&mut p, OUT, at(1 + u64::from(i))).0, Verdict::Translated);
    }
    assert_eq!(n.stats().connections, 100);
    assert!(inbound_ok(&mut n, tcp(R1, 443, WAN, e, TCP_ACK), 20_000));
}

// ---- forwards ----

#[test]
fn port_forwards() {
    let mut c = cfg();
    c.forwards = vec![
        PortForward { protocols: Protocols::Tcp, external_port: 8080, internal: SocketAddrV4::new(B, 80) },
        PortForward { protocols: Protocols::Both, external_port: 25565, internal: SocketAddrV4::new(B, 25565) },
    ];
    let mut n = Nat::new(c, 1);
    let mut p = tcp(R1, 50000, WAN, 8080, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, IN, 0), Verdict::Translated);
    assert_eq!((dst(&p), dport(&p)), (B, 80));
    let (p, e) = out(&mut n, tcp(B, 80, R1, 50000, TCP_SYN | TCP_ACK), 1);
    assert_eq!((e, dst(&p)), (8080, R1));
    let mut p = udp(R2, 1, WAN, 25565);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Translated);
    assert_eq!(dst(&p), B);
    // UDP 8080 is not forwarded.
    let mut p = udp(R2, 1, WAN, 8080);
    assert_eq!(go(&mut n, &mut p, IN, 1), Verdict::Local);
    // Ephemeral allocation never takes a forwarded port.
    let (_, e) = out(&mut n, tcp(A, 8080, R1, 80, TCP_SYN), 2);
    assert_ne!(e, 8080);
    let (_, e) = out(&mut n, udp(A, 25565, R1, 80), 2);
    assert_ne!(e, 25565);
    // Forwards never expire.
    n.expire(at(1_000_000 * SEC));
    let mut p = tcp(R3, 1, WAN, 8080, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, IN, 1_000_000 * SEC), Verdict::Translated);
    // Replacing the forwards: an ephemeral mapping on the new port gives way.
    let (_, ea) = out(&mut n, udp(A, 6000, R1, 80), 1_000_000 * SEC);
    n.set_forwards(vec![PortForward {
        protocols: Protocols::Udp,
        external_port: ea,
        internal: SocketAddrV4::new(B, 7),
    }]);
    let mut p = udp(R1, 80, WAN, ea);
    assert_eq!(go(&mut n, &mut p, IN, 1_000_000 * SEC), Verdict::Translated);
    assert_eq!((dst(&p), dport(&p)), (B, 7));
    let mut p = tcp(R3, 1, WAN, 8080, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, IN, 1_000_000 * SEC), Verdict::Local);
    assert_eq!(n.snapshot(at(0)).mappings.iter().filter(|m| m.forward).count(), 1);
}

#[test]
fn forwards_left_in_place_keep_their_counters() {
    let mut n = nat();
    let fwd = |port: u16, to: Ipv4Addr| PortForward {
        protocols: Protocols::Tcp,
        external_port: port,
        internal: SocketAddrV4::new(to, 80),
    };
    n.set_forwards(vec![fwd(8080, A)]);
    let mut p = tcp(R3, 1, WAN, 8080, TCP_SYN);
    assert_eq!(go(&mut n, &mut p, IN, SEC), Verdict::Translated);
    let before = n.snapshot(at(SEC)).total_connections;
    // Another forward comes: the first keeps its connections and its counters.
    n.set_forwards(vec![fwd(8080, A), fwd(9090, B)]);
    let snap = n.snapshot(at(SEC));
    let first = snap.mappings.iter().find(|m| m.external.port() == 8080).unwrap();
    assert_eq!((first.traffic.packets_in, snap.total_connections), (1, before));
    assert_eq!(snap.mappings.iter().filter(|m| m.forward).count(), 2);
    // Changing a forward's target is a new mapping; the dropped one is gone.
    n.set_forwards(vec![fwd(8080, B)]);
    let snap = n.snapshot(at(SEC));
    let now = snap.mappings.iter().find(|m| m.external.port() == 8080).unwrap();
    assert_eq!((*now.internal.ip(), now.traffic.packets_in), (B, 0));
    assert!(!snap.mappings.iter().any(|m| m.external.port() == 9090));
}

// ---- checksums ----

#[test]
fn udp_checksum_zero_stays_zero() {
    let mut n = nat();
    let mut p = udp_payload(A, 5000, R1, 53, b"x", false);
    assert_eq!(go(&mut n, &mut p, OUT, 0), Verdict::Translated);
    assert_eq!(be16(&p, 26), 0);
    let mut p = udp_payload(R1, 53, WAN, 5000, b"x", false);
    assert_eq!(go(&mut n, &mut p, IN, 0), Verdict::Translated);
    assert_eq!(be16(&p, 26), 0);
}

/// The packet as the kernel hands it with CHECKSUM_PARTIAL: the L4 field holds the folded pseudo-header sum.
fn make_partial(p: &mut [u8]) {
    let h = ihl(p);
    let total = usize::from(be16(p, 2));
    let at = h + if p[9] == PROTO_TCP { 16 } else { 6 };
    let ps = fold(pseudo_header(be32(p, 12), be32(p, 16), p[9], total - h));
    p[at..at + 2].copy_from_slice(&ps.to_be_bytes());
}

#[test]
fn csum_partial_comes_out_complete() {
    let mut n = nat();
    let partial_out = PacketMeta { csum_partial: true, ..PacketMeta::new(Direction::Outbound) };
    let partial_in = PacketMeta { csum_partial: true, ..PacketMeta::new(Direction::Inbound) };
    for mut p in [tcp_opts(A, 5000, R1, 80, TCP_SYN, &[7; 3000], &[]), udp_payload(A, 5001, R1, 80, &[9; 1001], true)] {
        make_partial(&mut p);
        assert_eq!(go(&mut n, &mut p, partial_out, 0), Verdict::Translated);
    }
    let mut p = udp_payload(R1, 80, WAN, 5001, &[1; 77], true);
    make_partial(&mut p);
    assert_eq!(go(&mut n, &mut p, partial_in, 0), Verdict::Translated);
    // Hairpin.
    let mut p = tcp(B, 1234, WAN, 5000, TCP_SYN);
    make_partial(&mut p);
    assert_eq!(go(&mut n, &mut p, partial_out, 0), Verdict::Translated);
    // The standalone function, on an untranslated packet.
    let mut p = tcp_opts(A, 1, B, 2, TCP_ACK, &[3; 333], &[1, 1, 1, 0]);
    let good = p.clone();
    make_partial(&mut p);
    assert!(complete_l4_checksum(&mut p));
    assert_eq!(p, good);
    let mut e = echo(A, R1, 8, 1, 1);
    assert!(!complete_l4_checksum(&mut e));
}

/// A GSO packet with CHECKSUM_PARTIAL keeps, after translation, exactly the pseudo-header sum of its new addresses
/// in the checksum field: what Linux derives each segment's checksum from when it splits the packet (UDP: the
/// length word is swapped for the segment's; TCP: recomputed). The payload is never read or changed.
#[test]
fn gso_partial_keeps_the_pseudo_header_sum_for_the_new_addresses() {
    let mut n = nat();
    let gso = |direction| PacketMeta { csum_partial: true, gso: true, ..PacketMeta::new(direction) };
    let check = |p: &[u8]| {
        let h = usize::from(p[0] & 0xf) * 4;
        assert_eq!(fold(sum(&p[..h], 0)), 0xffff, "IP header checksum");
        let (at, len) = if p[9] == PROTO_TCP { (h + 16, p.len() - h) } else { (h + 6, usize::from(be16(p, h + 4))) };
        assert_eq!(be16(p, at), fold(pseudo_header(be32(p, 12), be32(p, 16), p[9], len)));
    };
    let body: Vec<u8> = (0..60_000u32).map(|i| (i * 7) as u8).collect();
    for mut p in [tcp_opts(A, 6000, R1, 80, TCP_ACK, &body, &[]), udp_payload(A, 6001, R1, 443, &body, true)] {
        make_partial(&mut p);
        assert_eq!(n.translate(&mut p, gso(Direction::Outbound), at(0)).0, Verdict::Translated);
        assert_eq!(src(&p), WAN);
        check(&p);
        assert_eq!(&p[p.len() - body.len()..], &body[..]);
    }
    let mut p = udp_payload(R1, 443, WAN, 6001, &body, true);
    make_partial(&mut p);
    assert_eq!(n.translate(&mut p, gso(Direction::Inbound), at(0)).0, Verdict::Translated);
    assert_eq!(dst(&p), A);
    check(&p);
    // A GSO packet whose checksum is complete (not partial) is updated incrementally like any other.
    let mut p = tcp_opts(A, 6000, R1, 80, TCP_ACK, &body, &[]);
    assert_eq!(go(&mut n, &mut p, PacketMeta { gso: true, ..OUT }, 0), Verdict::Translated);
}

#[test]
fn random_flows_checksums_and_unique_external_ports() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let mut runner = TestRunner::new(Config { cases: 64, ..Config::default() });
    let flow = (0u8..3, 0u8..6, 1020u16..1040, 0u8..4, 0u16..4, any::<bool>(), 0u8..6);
    runner
        .run(&prop::collection::vec(flow, 1..300), |flows| {
            let mut c = cfg();
            c.port_range = (1024, 1047); // small: collisions, exhaustion and eviction
            c.max_mappings = 40;
            c.max_connections = 60;
            let mut n = Nat::new(c, 3);
            let mut now = 0;
            for (proto, host, port, remote, rport, inbound, flags) in flows {
                now += 7 * SEC;
                let h = Ipv4Addr::new(192, 168, 1, 10 + host);
                let r = Ipv4Addr::new(198, 51, 100, 1 + remote);
                let f = [TCP_SYN, TCP_ACK, TCP_SYN | TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, 0][usize::from(flags)];
                let mut p = match (proto, inbound) {
                    (0, false) => tcp(h, port, r, 80 + rport, f),
                    (0, true) => tcp(r, 80 + rport, WAN, port, f),
                    (1, false) => udp(h, port, r, 80 + rport),
                    (1, true) => udp(r, 80 + rport, WAN, port),
                    (_, false) => echo(h, r, ICMP_ECHO_REQUEST, port, 1),
                    (_, true) => echo(r, WAN, ICMP_ECHO_REPLY, port, 1),
                };
                let v = go(&mut n, &mut p, if inbound { IN } else { OUT }, now);
                if !inbound && proto < 2 && f & TCP_RST == 0 {
                    prop_assert_eq!(v, Verdict::Translated);
                }
                if v == Verdict::Translated && !inbound {
                    prop_assert_eq!(src(&p), WAN);
                }
                if now % (30 * SEC) == 0 {
                    n.expire(at(now));
                }
                let s = n.snapshot(at(now));
                let mut ext = std::collections::HashSet::new();
                let mut int = std::collections::HashSet::new();
                for m in &s.mappings {
                    prop_assert!(ext.insert((m.protocol, m.external.port())), "external port twice: {:?}", m);
                    prop_assert!(int.insert((m.protocol, m.internal)), "internal endpoint twice: {:?}", m);
                }
                prop_assert!(s.mappings.len() <= 40 && s.connections.len() <= 60);
                prop_assert_eq!(s.connections.len() as u64, n.stats().connections);
            }
            Ok(())
        })
        .unwrap();
}

// ---- hostile input ----

#[test]
fn ip_options_handled() {
    let mut n = nat();
    let opts = [0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert + NOPs + EOL
    let mut p = tcp_opts(A, 5000, R1, 80, TCP_SYN, b"x", &opts);
    assert_eq!(go(&mut n, &mut p, OUT, 0), Verdict::Translated);
    assert_eq!(be16(&p, 28), 5000);
    assert_eq!(&p[20..28], &opts);
    let mut p = udp(R1, 80, WAN, 5000);
    assert_eq!(go(&mut n, &mut p, IN, 0), Verdict::Local, "UDP 5000 has no mapping");
}

#[test]
fn malformed_and_fragments() {
    let mut n = nat();
    let mut p = udp(A, 5000, R1, 53);
    p[0] = 0x44; // IHL 4
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Drop(DropReason::Malformed));
    let mut p = udp(A, 5000, R1, 53);
    p[0] = 0x65;
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Drop(DropReason::Malformed));
    let mut p = udp(A, 5000, R1, 53);
    let l = p.len() as u16 + 1;
    p[2..4].copy_from_slice(&l.to_be_bytes());
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Drop(DropReason::Truncated));
    // Trailing bytes past the total length are left alone.
    let mut p = udp(A, 5000, R1, 53);
    p.extend_from_slice(&[0xee; 6]);
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Translated);
    assert_eq!(&p[p.len() - 6..], &[0xee; 6]);
    // A later fragment.
    let mut p = udp(A, 5000, R1, 53);
    p[6] = 0x00;
    p[7] = 0x10;
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Drop(DropReason::Fragment));
    assert_eq!(n.translate(&mut p, IN, at(0)).0, Verdict::Drop(DropReason::Martian));
    let mut p = udp(R1, 53, WAN, 5000);
    p[7] = 0x10;
    assert_eq!(n.translate(&mut p, IN, at(0)).0, Verdict::Drop(DropReason::Fragment));
    // A first fragment is translated by its header.
    let mut p = udp(A, 5000, R1, 53);
    p[6] = 0x20; // MF
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Translated);
    assert_eq!(n.stats().dropped_for(DropReason::Fragment), 2);
    // Unsupported outbound protocol never leaves; inbound is the router's business.
    let mut p = ipv4(A, R1, 47, &[], &[0; 8]);
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Drop(DropReason::UnsupportedProtocol));
    let mut p = ipv4(R1, WAN, 47, &[], &[0; 8]);
    assert_eq!(n.translate(&mut p, IN, at(0)).0, Verdict::Local);
    // Outside sources, inside destinations from the WAN, the router's own LAN address.
    let mut p = udp(R2, 1, R1, 53);
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Drop(DropReason::NotInside));
    let mut p = udp(R2, 1, A, 53);
    assert_eq!(n.translate(&mut p, IN, at(0)).0, Verdict::Drop(DropReason::Martian));
    let mut p = udp(A, 1, ROUTER, 53);
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Accept);
    let mut p = udp(A, 1, B, 53);
    assert_eq!(n.translate(&mut p, OUT, at(0)).0, Verdict::Accept);
    let s = serde_json::to_value(n.stats()).unwrap();
    assert_eq!(s["drops"]["fragment"], 2);
}

fn samples() -> Vec<Vec<u8>> {
    let udp_sent = udp(WAN, 5000, R1, 53);
    let tcp_sent = tcp(WAN, 5000, R1, 80, TCP_ACK);
    let echo_sent = echo(WAN, R1, ICMP_ECHO_REQUEST, 5000, 1);
    let inbound_udp = udp(R2, 1111, A, 5000);
    vec![
        tcp(A, 5000, R1, 80, TCP_SYN),
        udp(A, 5000, R1, 53),
        echo(A, R1, ICMP_ECHO_REQUEST, 5000, 1),
        tcp(R1, 80, WAN, 5000, TCP_ACK),
        udp(R1, 53, WAN, 5000),
        echo(R1, WAN, ICMP_ECHO_REPLY, 5000, 1),
        error(R1, WAN, ICMP_DEST_UNREACH, 3, [0; 4], &udp_sent, 99),
        error(HOP, WAN, ICMP_DEST_UNREACH, 4, [0, 0, 5, 0], &tcp_sent, 99),
        error(HOP, WAN, ICMP_TIME_EXCEEDED, 0, [0; 4], &echo_sent, 99),
        error(A, R2, ICMP_DEST_UNREACH, 3, [0; 4], &inbound_udp, 99),
        tcp(B, 1, WAN, 5000, TCP_SYN),
        tcp_opts(A, 5000, R1, 80, TCP_ACK, b"", &[1; 40]),
    ]
}

fn primed() -> Nat {
    let mut n = nat();
    for p in [tcp(A, 5000, R1, 80, TCP_SYN), udp(A, 5000, R1, 53), echo(A, R1, ICMP_ECHO_REQUEST, 5000, 1)] {
        out(&mut n, p, 0);
    }
    n
}

#[test]
fn every_truncation_never_panics() {
    let mut n = primed();
    for (i, s) in samples().into_iter().enumerate() {
        for cut in 0..s.len() {
            for dir in [OUT, IN] {
                // Cut buffer (total length now past it).
                let mut p = s[..cut].to_vec();
                let v = n.translate(&mut p, dir, at(1)).0;
                assert!(matches!(v, Verdict::Drop(_)), "sample {i} cut {cut}: {v:?}");
                // Consistent total length, L4 cut.
                let mut p = s[..cut].to_vec();
                if p.len() >= 20 {
                    p[2..4].copy_from_slice(&(cut as u16).to_be_bytes());
                    let h = ihl(&p).clamp(20, p.len());
                    p[10] = 0;
                    p[11] = 0;
                    let c = !fold(sum(&p[..h], 0));
                    p[10..12].copy_from_slice(&c.to_be_bytes());
                }
                let v = n.translate(&mut p, dir, at(1)).0;
                if v == Verdict::Translated {
                    assert_eq!(fold(sum(&p[..ihl(&p)], 0)), 0xffff, "sample {i} cut {cut}");
                }
            }
        }
        // Every IHL and every header byte value at a few offsets.
        for ihl_v in 0..16u8 {
            let mut p = s.clone();
            p[0] = 0x40 | ihl_v;
            let _ = n.translate(&mut p, OUT, at(1)).0;
            let _ = n.translate(&mut p, IN, at(1)).0;
        }
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut n = primed();
    let mut x: u64 = 0x1234_5678_9abc_def0;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let base = samples();
    for round in 0..200_000u64 {
        let mut p = if round % 2 == 0 {
            let len = (rnd() % 120) as usize;
            (0..len).map(|_| rnd() as u8).collect::<Vec<u8>>()
        } else {
            // Mutate a valid packet: a few random bytes.
            let mut p = base[(rnd() % base.len() as u64) as usize].clone();
            for _ in 0..1 + rnd() % 4 {
                let i = (rnd() % p.len() as u64) as usize;
                p[i] = rnd() as u8;
            }
            p
        };
        let dir = if rnd() % 2 == 0 { OUT } else { IN };
        let _ = n.translate(&mut p, dir, at(round)).0;
        if round % 1000 == 0 {
            n.expire(at(round));
        }
    }
    let _ = n.snapshot(at(200_000));
}

#[test]
fn snapshot_reports_both_ways() {
    let mut n = nat();
    let (_, e) = out(&mut n, udp(A, 5000, R1, 53), 1000);
    assert!(inbound_ok(&mut n, udp(R1, 53, WAN, e), 1500));
    assert!(inbound_ok(&mut n, udp(R3, 53, WAN, e), 1600)); // EIF: counted on the mapping only
    let s = n.snapshot(at(2000));
    assert_eq!(s.mappings.len(), 1);
    let m = &s.mappings[0];
    assert_eq!((m.traffic.packets_out, m.traffic.packets_in), (1, 2));
    assert_eq!(m.remaining_ms, Some(300 * SEC - 1000));
    let c = &s.connections[0];
    assert_eq!(c.remote, SocketAddrV4::new(R1, 53));
    assert_eq!(c.internal, SocketAddrV4::new(A, 5000));
    assert_eq!(c.external, SocketAddrV4::new(WAN, e));
    assert!(c.assured);
    assert_eq!((c.idle_ms, c.remaining_ms, c.age_ms), (500, 300 * SEC - 1000, 1000));
    assert_eq!((c.traffic.packets_in, c.traffic.bytes_out), (1, udp(A, 5000, R1, 53).len() as u64));
    let j = serde_json::to_string(&s).unwrap();
    assert!(j.contains("\"protocol\":\"udp\""));
}

// ---- packet records ----

/// Translates and returns the verdict and record, checking the record's verdict is the one returned.
fn rec(n: &mut Nat, p: &mut [u8], meta: PacketMeta, now: u64) -> (Verdict, PacketRecord) {
    let (v, r) = n.translate(p, meta, at(now));
    assert_eq!(r.verdict, v);
    assert_eq!(r.at_ms, now);
    if v == Verdict::Translated {
        assert_checksums(p);
    }
    (v, r)
}

#[allow(clippy::too_many_arguments)]
fn assert_record(
    r: &PacketRecord,
    device: (Ipv4Addr, u16),
    remote: (Ipv4Addr, u16),
    protocol: L4,
    way: Way,
    bytes: usize,
    verdict: Verdict,
) {
    assert_eq!((r.device, r.device_port), device, "device of {r:?}");
    assert_eq!((r.remote, r.remote_port), remote, "remote of {r:?}");
    assert_eq!((r.protocol, r.way, r.verdict), (protocol, way, verdict), "{r:?}");
    assert_eq!((r.bytes, r.segments), (bytes as u32, 1), "{r:?}");
}

#[test]
fn records_tcp_udp_icmp_both_ways() {
    let mut n = nat();
    let t = Verdict::Translated;
    // TCP: up from A:4000 to R1:80, and the reply down.
    let mut p = tcp(A, 4000, R1, 80, TCP_SYN);
    let (_, r) = rec(&mut n, &mut p, OUT, 5);
    assert_record(&r, (A, 4000), (R1, 80), L4::Tcp, Way::Up, p.len(), t);
    assert_eq!((r.ip_proto, r.hairpin), (PROTO_TCP, false));
    let ext = sport(&p);
    let mut p = tcp(R1, 80, WAN, ext, TCP_SYN | TCP_ACK);
    let (_, r) = rec(&mut n, &mut p, IN, 6);
    assert_record(&r, (A, 4000), (R1, 80), L4::Tcp, Way::Down, p.len(), t);
    // UDP.
    let mut p = udp(B, 5353, R2, 53);
    let (_, r) = rec(&mut n, &mut p, OUT, 7);
    assert_record(&r, (B, 5353), (R2, 53), L4::Udp, Way::Up, p.len(), t);
    let ext = sport(&p);
    let mut p = udp_payload(R2, 53, WAN, ext, &[7; 300], true);
    let (_, r) = rec(&mut n, &mut p, IN, 8);
    assert_record(&r, (B, 5353), (R2, 53), L4::Udp, Way::Down, p.len(), t);
    // ICMP echo: the device's own identifier as its port, none for the remote.
    let mut p = echo(A, R3, ICMP_ECHO_REQUEST, 0x77, 1);
    let (_, r) = rec(&mut n, &mut p, OUT, 9);
    assert_record(&r, (A, 0x77), (R3, 0), L4::Icmp, Way::Up, p.len(), t);
    let id = echo_id(&p);
    let mut p = echo(R3, WAN, ICMP_ECHO_REPLY, id, 1);
    let (_, r) = rec(&mut n, &mut p, IN, 10);
    assert_record(&r, (A, 0x77), (R3, 0), L4::Icmp, Way::Down, p.len(), t);
    // An ICMP error about the UDP flow, from a router on the way: down to B, from the router.
    let mut quoted = udp(WAN.octets().into(), ext, R2, 53);
    quoted.truncate(28);
    let mut p = error(HOP, WAN, ICMP_DEST_UNREACH, 3, [0; 4], &quoted, 28);
    let (_, r) = rec(&mut n, &mut p, IN, 11);
    assert_record(&r, (B, 0), (HOP, 0), L4::Icmp, Way::Down, p.len(), t);
    // Inbound to nothing: the router's own (Local), addresses as they came.
    let mut p = udp(R1, 1, WAN, 9);
    let (_, r) = rec(&mut n, &mut p, IN, 12);
    assert_record(&r, (WAN, 9), (R1, 1), L4::Udp, Way::Down, p.len(), Verdict::Local);
}

#[test]
fn records_hairpin_and_drops() {
    let mut n = nat();
    // B has a mapping; A sends to it through the WAN address: one record, A's, up, to B's own endpoint.
    let (_, ext_b) = out(&mut n, udp(B, 7000, R1, 9), 0);
    let mut p = udp(A, 7100, WAN, ext_b);
    let (v, r) = rec(&mut n, &mut p, OUT, 1);
    assert_eq!(v, Verdict::Translated);
    assert!(r.hairpin);
    assert_record(&r, (A, 7100), (B, 7000), L4::Udp, Way::Up, p.len(), v);
    // To the WAN address with nothing behind: for the router, not a hairpin.
    let mut p = udp(A, 7100, WAN, 1);
    let (v, r) = rec(&mut n, &mut p, OUT, 1);
    assert_eq!((v, r.hairpin), (Verdict::Accept, false));
    // Dropped: the reason is in the record, with what could be read.
    let mut p = udp(Ipv4Addr::new(10, 9, 9, 9), 1000, R1, 53);
    let (_, r) = rec(&mut n, &mut p, OUT, 2);
    let drop = Verdict::Drop(DropReason::NotInside);
    assert_record(&r, (Ipv4Addr::new(10, 9, 9, 9), 1000), (R1, 53), L4::Udp, Way::Up, p.len(), drop);
    let mut p = tcp(A, 1, R1, 2, TCP_RST);
    let (_, r) = rec(&mut n, &mut p, OUT, 2);
    assert_record(&r, (A, 1), (R1, 2), L4::Tcp, Way::Up, p.len(), Verdict::Drop(DropReason::NoMapping));
    let mut p = ipv4(A, R1, 47, &[], &[0; 24]);
    let (_, r) = rec(&mut n, &mut p, OUT, 2);
    let drop = Verdict::Drop(DropReason::UnsupportedProtocol);
    assert_record(&r, (A, 0), (R1, 0), L4::Other, Way::Up, p.len(), drop);
    assert_eq!(r.ip_proto, 47);
    // Not even an IP header: nothing but the size, the way and the reason.
    let mut p = vec![0x60; 40];
    let (_, r) = rec(&mut n, &mut p, IN, 3);
    assert_eq!(
        r,
        PacketRecord {
            at_ms: 3,
            bytes: 40,
            segments: 1,
            way: Way::Down,
            verdict: Verdict::Drop(DropReason::Malformed),
            ..PacketRecord::EMPTY
        }
    );
}

#[test]
fn a_gso_packet_is_counted_as_its_segments() {
    let mut n = nat();
    let gso = |direction| PacketMeta { csum_partial: true, gso: true, ..PacketMeta::new(direction) };
    // TCP with a 12-byte timestamp option: 52 header bytes, 1448 of payload per 1500-byte segment.
    let opts = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    let payload = 64_000;
    let mut seg = vec![0u8; 32 + payload];
    seg[0..2].copy_from_slice(&6000u16.to_be_bytes());
    seg[2..4].copy_from_slice(&80u16.to_be_bytes());
    seg[12] = 8 << 4;
    seg[13] = TCP_ACK;
    seg[20..32].copy_from_slice(&opts);
    l4_checksum(A, R1, PROTO_TCP, &mut seg, 16);
    let mut p = ipv4(A, R1, PROTO_TCP, &[], &seg);
    make_partial(&mut p);
    let (v, r) = n.translate(&mut p, gso(Direction::Outbound), at(0));
    assert_eq!(v, Verdict::Translated);
    let segments = payload.div_ceil(1448);
    assert_eq!(segments, 45);
    assert_eq!((r.segments as usize, r.bytes as usize), (segments, payload + segments * 52));
    // Not GSO: one packet of its own size, however big.
    let mut p = ipv4(A, R1, PROTO_TCP, &[], &seg);
    let (_, r) = n.translate(&mut p, OUT, at(0));
    assert_eq!((r.segments, r.bytes as usize), (1, 20 + 32 + payload));
    // UDP GSO: counted with the largest datagram that fits the MTU (1472 bytes of payload).
    let mut p = udp_payload(A, 6001, R1, 443, &vec![1; 14_720], true);
    make_partial(&mut p);
    let (_, r) = n.translate(&mut p, gso(Direction::Outbound), at(0));
    assert_eq!((r.segments, r.bytes), (10, 14_720 + 10 * 28));
    // A smaller MTU means more segments.
    let mut c = cfg();
    c.mtu = 1280;
    let mut n = Nat::new(c, 1);
    let mut p = udp_payload(A, 6001, R1, 443, &vec![1; 14_720], true);
    let (_, r) = n.translate(&mut p, gso(Direction::Outbound), at(0));
    assert_eq!(r.segments as usize, 14_720usize.div_ceil(1280 - 28));
}

#[test]
fn view_pages_the_tables() {
    let mut n = nat();
    for i in 0..50u16 {
        out(&mut n, udp(A, 2000 + i, R1, 53), 0);
    }
    let all = n.snapshot(at(0));
    assert_eq!((all.total_mappings, all.total_connections, all.mappings.len()), (50, 50, 50));
    let mut seen = Vec::new();
    for offset in (0..60).step_by(20) {
        let page = n.view(at(0), offset, 20);
        assert_eq!((page.total_mappings, page.total_connections), (50, 50));
        assert_eq!(page.mappings.len(), 20.min(50 - offset.min(50)));
        assert_eq!(page.connections.len(), page.mappings.len());
        seen.extend(page.mappings.into_iter().map(|m| m.internal.port()));
    }
    seen.sort_unstable();
    assert_eq!(seen, (2000..2050).collect::<Vec<_>>(), "every mapping once over the pages");
    assert!(n.view(at(0), 1000, 20).mappings.is_empty());
    // Removing some entries keeps the dense lists right.
    for i in 0..10u16 {
        out(&mut n, udp(A, 2000 + i, R1, 53), 200 * SEC);
    }
    n.expire(at(301 * SEC));
    let mut left: Vec<u16> = n.view(at(301 * SEC), 0, 100).mappings.iter().map(|m| m.internal.port()).collect();
    left.sort_unstable();
    assert_eq!(left, (2000..2010).collect::<Vec<_>>());
    let left: Vec<u16> = n.view(at(301 * SEC), 0, 100).connections.iter().map(|c| c.internal.port()).collect();
    assert_eq!(left.len(), 10);
    n.expire(at(600 * SEC));
    let after = n.view(at(600 * SEC), 0, 100);
    assert_eq!((after.total_mappings, after.mappings.len(), after.connections.len()), (0, 0, 0));
    out(&mut n, udp(A, 9, R1, 53), 601 * SEC);
    assert_eq!(n.view(at(601 * SEC), 0, 100).mappings.len(), 1);
}
