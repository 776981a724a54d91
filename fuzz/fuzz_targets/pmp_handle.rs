//! `cargo fuzz run pmp_handle`: feeds bytes to the NAT-PMP/PCP core as datagrams from LAN devices.
//!
//! The input is a sequence of datagrams, each prefixed by a 2-byte big-endian length, against the router's own
//! rules (`ports::core::Ports`, a cap of 4 mappings per device), so mappings made by one datagram meet the renewals,
//! deletes and errors of the next. The length's low byte picks the sender (one of three LAN devices, or an address
//! off the LAN), advances the clock, toggles the WAN address, and with its low bit writes the sender's address
//! into a PCP request's client address field (so ADDRESS_MISMATCH does not stop every PCP request). Every answer is
//! checked to be a well-formed response.
#![no_main]

use gatekeeper::ports::core::{Limits, Ports, Saved};
use gatekeeper::ports::pmp::{Outcome, PmpConfig, handle};
use gatekeeper::types::Time;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

const START: Time = Time::from_unix_secs(1_700_000_000);
const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);

/// The router's own port rules (`ports::core`), with a small cap per device, so the fuzzer reaches their
/// refusals too.
fn mapper() -> Ports {
    let limits = Limits { mappings_per_device: 4, ..Limits::default() };
    let mut p = Ports::new(limits, Vec::new(), Saved::default(), START, 1);
    p.set_external_ip(Some(WAN));
    p
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = PmpConfig::new(Ipv4Addr::new(192, 168, 1, 1), "192.168.1.0/24".parse().unwrap());
    let mut mapper = mapper();
    let mut wan = Some(WAN);
    let mut now = START;
    let mut rest = data;
    while let [hi, lo, tail @ ..] = rest {
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        let sender = match lo >> 6 {
            3 => Ipv4Addr::new(198, 51, 100, 7),
            n => Ipv4Addr::new(192, 168, 1, 10 + n),
        };
        let mut datagram = frame.to_vec();
        if lo & 1 == 1 && datagram.len() >= 24 && datagram[0] == 2 {
            datagram[8..24].copy_from_slice(&sender.to_ipv6_mapped().octets());
        }
        if lo & 0x3e == 0x3e {
            wan = wan.xor(Some(WAN));
            mapper.set_external_ip(wan);
        }
        if lo & 0x3e == 0x3c {
            (cfg.natpmp, cfg.pcp) = (cfg.pcp, !cfg.natpmp);
        }
        if let Outcome::Answer(a) = handle(&cfg, &mut mapper, now, SocketAddrV4::new(sender, 5350), &datagram) {
            assert!(cfg.lan.contains(&sender), "answered off the LAN");
            assert_eq!(a.get(1).copied(), datagram.get(1).map(|op| op | 0x80), "opcode of the answer");
            match a[0] {
                0 => assert!(a.len() >= 8 && a.len() <= 1100),
                2 => assert!(a.len() >= 24 && a.len() <= 1100 && a.len() % 4 == 0 && a[2] == 0),
                v => panic!("answer in version {v}"),
            }
        }
        now = now.plus_ms(250 * u64::from(*lo & 0x1f));
    }
    // Only LAN devices, each mapping itself, within the NAT's ports.
    assert!(mapper.mappings().iter().all(|m| cfg.lan.contains(&m.ip) && (1024..=60999).contains(&m.external_port)));
});
