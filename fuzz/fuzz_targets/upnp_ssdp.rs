//! `cargo fuzz run upnp_ssdp`: feeds bytes to the UPnP SSDP core as datagrams received on port 1900.
//!
//! The first byte picks the sender (inside the LAN or not, and its port); the rest is the datagram, given to
//! `ssdp::handle` and `ssdp::search_mx`. Replies must fit miniupnpc's 1536-byte buffer and never exceed the 9
//! things the device is.
#![no_main]

use gatekeeper::ports::upnp::{UpnpConfig, ssdp};
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddrV4};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, datagram)) = data.split_first() else { return };
    let cfg = UpnpConfig::new(
        Ipv4Addr::new(192, 168, 1, 1),
        "192.168.1.0/24".parse().unwrap(),
        5000,
        "1d2c3b4a-0000-4000-8000-0123456789ab",
    );
    let ip = if pick & 0x80 == 0 { Ipv4Addr::new(192, 168, 1, pick) } else { Ipv4Addr::new(10, 0, 0, pick) };
    let from = SocketAddrV4::new(ip, if pick & 0x40 == 0 { 1900 } else { u16::from(pick & 1) });
    if let ssdp::SsdpOutcome::Replies(r) = ssdp::handle(&cfg, from, datagram) {
        assert!(!r.is_empty() && r.len() <= 9);
        assert!(r.iter().all(|m| m.len() < 1536));
    }
    if let Some(mx) = ssdp::search_mx(datagram) {
        assert!(mx <= 5);
    }
});
