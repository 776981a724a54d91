//! `cargo fuzz run nat_translate`: feeds bytes to the NAT engine as packets.
//!
//! The input is a sequence of packets, each prefixed by a control byte (bit 0: direction, bit 1: csum_partial,
//! bits 2..: clock advance in seconds) and a 2-byte big-endian length, so that state built by one packet (mappings,
//! connections, evictions in a deliberately tiny table) meets the next. Translated packets must keep their length.
#![no_main]

use gatekeeper::ports::forward::{PortForward, Protocols};
use gatekeeper::nat::{Direction, Nat, NatConfig, PacketMeta, Verdict, complete_l4_checksum};
use gatekeeper::types::Time;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

fn nat() -> Nat {
    let mut cfg =
        NatConfig::new(Ipv4Addr::new(203, 0, 113, 1), "192.168.1.0/24".parse().unwrap(), Ipv4Addr::new(192, 168, 1, 1));
    cfg.port_range = (1024, 1100);
    cfg.max_mappings = 16;
    cfg.max_connections = 24;
    cfg.forwards = vec![PortForward {
        protocols: Protocols::Both,
        external_port: 8080,
        internal: SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 20), 80),
    }];
    Nat::new(cfg, 7)
}

/// Makes the bytes look like a packet between our addresses often enough to get past the header checks: version
/// 4, a small IHL, total length = buffer, addresses picked from inside / WAN / remote by the original bytes.
fn shape(b: &mut [u8]) {
    const ADDRS: [[u8; 4]; 4] = [[192, 168, 1, 10], [192, 168, 1, 20], [203, 0, 113, 1], [198, 51, 100, 1]];
    if b.len() < 20 {
        return;
    }
    b[0] = 0x40 | (5 + (b[0] & 1)); // IHL 5 or 6
    let len = b.len().min(65535) as u16;
    b[2..4].copy_from_slice(&len.to_be_bytes());
    b[6] &= 0x20; // no fragment offset; MF may stay
    b[7] = 0;
    b[9] = [1, 6, 17, b[9]][usize::from(b[9] & 3)];
    let (s, d) = (ADDRS[usize::from(b[12] & 3)], ADDRS[usize::from(b[16] & 3)]);
    b[12..16].copy_from_slice(&s);
    b[16..20].copy_from_slice(&d);
}

fuzz_target!(|data: &[u8]| {
    let mut n = nat();
    let mut now = 0u64;
    let mut rest = data;
    while let [ctl, hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (packet, next) = tail.split_at(len);
        let mut buf = packet.to_vec();
        if ctl & 0x40 != 0 {
            shape(&mut buf);
        }
        let packet = &buf.clone()[..];
        let direction = if ctl & 1 == 0 { Direction::Outbound } else { Direction::Inbound };
        let meta = PacketMeta { direction, csum_partial: ctl & 2 != 0, gso: ctl & 4 != 0 };
        let v = n.translate(&mut buf, meta, Time::from_unix_ms(now)).0;
        assert_eq!(buf.len(), packet.len());
        if v == Verdict::Accept || matches!(v, Verdict::Drop(_)) || v == Verdict::Local {
            assert_eq!(buf, packet, "only translated packets are modified");
        }
        let _ = complete_l4_checksum(&mut buf);
        now += u64::from(ctl >> 2) * 1000;
        if ctl & 0x80 != 0 {
            n.expire(Time::from_unix_ms(now));
        }
        rest = next;
    }
    let s = n.snapshot(Time::from_unix_ms(now));
    assert!(s.mappings.iter().filter(|m| !m.forward).count() <= 16);
    assert!(s.connections.len() <= 24);
});
