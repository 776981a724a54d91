//! `cargo fuzz run nat_translate`: feeds bytes to the NAT engine as packets.
//!
//! The input is a sequence of packets, each prefixed by a control byte (bit 0: direction, bit 1: csum_partial,
//! bits 2..: clock advance in seconds) and a 2-byte big-endian length, so that state built by one packet (mappings,
//! connections, evictions in a deliberately tiny table) meets the next. Translated packets must keep their length.
#![no_main]

use gatekeeper::config::{PortForward, Protocols};
use gatekeeper::nat::{Direction, Nat, NatConfig, PacketMeta, Verdict, complete_l4_checksum};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

fn nat() -> Nat {
    let mut cfg = NatConfig::new(Ipv4Addr::new(203, 0, 113, 1), "192.168.1.0/24".parse().unwrap(), Ipv4Addr::new(192, 168, 1, 1));
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

fuzz_target!(|data: &[u8]| {
    let mut n = nat();
    let mut now = 0u64;
    let mut rest = data;
    while let [ctl, hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (packet, next) = tail.split_at(len);
        let mut buf = packet.to_vec();
        let direction = if ctl & 1 == 0 { Direction::Outbound } else { Direction::Inbound };
        let meta = PacketMeta { direction, csum_partial: ctl & 2 != 0 };
        let v = n.translate(&mut buf, meta, now);
        assert_eq!(buf.len(), packet.len());
        if v == Verdict::Accept || matches!(v, Verdict::Drop(_)) || v == Verdict::Local {
            assert_eq!(buf, packet, "only translated packets are modified");
        }
        let _ = complete_l4_checksum(&mut buf);
        now += u64::from(ctl >> 2) * 1000;
        if ctl & 0x80 != 0 {
            n.expire(now);
        }
        rest = next;
    }
    let s = n.snapshot(now);
    assert!(s.mappings.iter().filter(|m| !m.forward).count() <= 16);
    assert!(s.connections.len() <= 24);
});
