//! `cargo fuzz run dhcp_handle`: feeds bytes to the DHCP server core.
//!
//! The input is used twice: once as a single datagram, then as a sequence of datagrams (each prefixed by a 2-byte
//! big-endian length, the clock advancing between them) so that state built by one packet meets the next.
#![no_main]

use gatekeeper::dhcp::lease::StaticLease;
use gatekeeper::dhcp::server::{DhcpConfig, RelayPool, Server};
use libfuzzer_sys::fuzz_target;
use gatekeeper::types::Time;
use std::net::{Ipv4Addr, SocketAddrV4};

const NOW: Time = Time::from_unix_secs(1_700_000_000);

fn server() -> Server {
    let mut cfg = DhcpConfig::new(Ipv4Addr::new(192, 168, 1, 1), "192.168.1.0/24".parse().unwrap());
    // A small pool, so exhaustion, reuse and conflicts are reachable.
    cfg.range = (Ipv4Addr::new(192, 168, 1, 100), Ipv4Addr::new(192, 168, 1, 115));
    cfg.lease_secs = 120;
    cfg.static_leases =
        vec![StaticLease { mac: gatekeeper::types::Mac([2, 0, 0, 0, 0, 1]), ip: Ipv4Addr::new(192, 168, 1, 105), hostname: Some("nas".into()) }];
    cfg.relay_pools = vec![RelayPool {
        subnet: "10.9.0.0/24".parse().unwrap(),
        range: (Ipv4Addr::new(10, 9, 0, 100), Ipv4Addr::new(10, 9, 0, 103)),
        router: None,
    }];
    Server::new(cfg, vec![], vec![], NOW).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let from = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68);
    let mut s = server();
    let _ = s.handle(data, from, NOW);

    let mut s = server();
    let mut now = NOW;
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (packet, next) = tail.split_at(len);
        let _ = s.handle(packet, from, now);
        now = now.plus_ms(1000 * u64::from(*lo % 64));
        for (_record, _event) in s.expire(now) {}
        let _ = s.next_expiry();
        rest = next;
    }
    let _ = s.leases().count();
});
