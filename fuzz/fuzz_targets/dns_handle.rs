//! `cargo fuzz run dns_handle`: feeds bytes to the DNS core, as client queries and as upstream answers.
//!
//! The first byte picks a split; the input is then used (1) as one client query, (2) as a sequence of client
//! queries (each prefixed by a 2-byte big-endian length, the clock advancing between them), and (3) after a valid
//! query created a pending upstream handle, as a sequence of upstream answers to it (the same framing; a length's
//! low bit also toggles between the handle's real id patched in and the raw bytes, so deeper parsing is reached).
#![no_main]

use gatekeeper::dns::{Action, ClientRef, Dns, DnsConfig, Transport};
use gatekeeper::types::Time;
use libfuzzer_sys::fuzz_target;
use std::net::{Ipv4Addr, SocketAddr};

const NOW: Time = Time::from_unix_ms(1_700_000_000_000);

fn dns() -> Dns {
    let mut cfg = DnsConfig::new(
        Ipv4Addr::new(192, 168, 1, 1),
        "192.168.1.0/24".parse().unwrap(),
        vec!["10.0.0.1:53".parse().unwrap(), "10.0.0.2:53".parse().unwrap()],
    );
    cfg.cache_entries = 8;
    cfg.log_entries_per_device = 4;
    cfg.max_devices = 4;
    let mut d = Dns::new(cfg, 7);
    d.set_host(Some("laptop"), Ipv4Addr::new(192, 168, 1, 50), Some(gatekeeper::types::Mac([2, 0, 0, 0, 0, 1])));
    d
}

fn frames(mut rest: &[u8]) -> impl Iterator<Item = (&[u8], u8)> {
    std::iter::from_fn(move || {
        let [hi, lo, tail @ ..] = rest else { return None };
        let len = (usize::from(*hi) << 8 | usize::from(*lo)).min(tail.len());
        let (frame, next) = tail.split_at(len);
        rest = next;
        Some((frame, *lo))
    })
}

/// A well-formed query for `www.test. A` with EDNS.
const QUERY: &[u8] = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x01\x03www\x04test\x00\x00\x01\x00\x01\x00\x00\x29\x04\xd0\x00\x00\x00\x00\x00\x00";

fuzz_target!(|data: &[u8]| {
    let from = |n: u8| ClientRef {
        addr: SocketAddr::from((Ipv4Addr::new(192, 168, 1, 48 + n % 4), 5353)),
        transport: if n & 4 != 0 { Transport::Tcp } else { Transport::Udp },
        conn: u64::from(n & 4),
    };
    let (mut reply, mut out) = (Vec::with_capacity(65535), Vec::new());

    let mut d = dns();
    let _ = d.handle_query(data, from(0), NOW, &mut reply, &mut out);

    let mut d = dns();
    let mut now = NOW;
    for (frame, lo) in frames(data) {
        let _ = d.handle_query(frame, from(lo), now, &mut reply, &mut out);
        now = now.plus_ms(u64::from(lo) * 40);
        d.handle_timeout(now, &mut out);
    }
    let _ = d.devices().iter().map(|dev| d.query_log(dev)).count();

    // Upstream answers for a pending question.
    let mut d = dns();
    out.clear();
    let _ = d.handle_query(QUERY, from(1), NOW, &mut reply, &mut out);
    let mut pending = out.iter().find_map(|a| match a {
        Action::Query { handle, bytes, .. } => Some((*handle, [bytes[0], bytes[1]])),
        _ => None,
    });
    let mut now = NOW;
    for (frame, lo) in frames(data) {
        let Some((handle, id)) = pending else { break };
        let mut m = frame.to_vec();
        if lo & 1 == 1 && m.len() >= 2 {
            m[..2].copy_from_slice(&id);
        }
        out.clear();
        match lo % 16 {
            15 => d.handle_failure(handle, now, &mut out),
            14 => d.handle_timeout(now.plus_ms(1000), &mut out),
            _ => d.handle_response(handle, &m, now, &mut out),
        }
        now = now.plus_ms(u64::from(lo));
        if let Some(next) = out.iter().find_map(|a| match a {
            Action::Query { handle, bytes, .. } => Some((*handle, [bytes[0], bytes[1]])),
            _ => None,
        }) {
            pending = Some(next);
        }
        // Replay of whatever got cached.
        let _ = d.handle_query(QUERY, from(lo), now, &mut reply, &mut out);
    }
});
