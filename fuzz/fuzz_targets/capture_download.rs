//! `cargo fuzz run capture_download`: a download's query string and a ring of arbitrary stored packets.
//!
//! The input up to the first 0xff byte is the query (split on `&` and `=`, as the web layer hands the pairs to
//! `Filter::from_pairs`); the rest is packets (each prefixed by a 2-byte big-endian length, its low bit the
//! direction), pushed into a small ring that evicts. A filter that parses is applied while both file formats are
//! written, and every stored packet gets its live-view line: no panics, and the writers count what they wrote.
#![no_main]

use gatekeeper::capture::filter::Filter;
use gatekeeper::capture::pcap::{self, About, Format};
use gatekeeper::capture::ring::{Direction, Origin, Ring};
use gatekeeper::capture::summary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|&b| b == 0xff).unwrap_or(data.len());
    let (query, mut rest) = (String::from_utf8_lossy(&data[..split]).into_owned(), data.get(split + 1..).unwrap_or(&[]));
    let pairs: Vec<(&str, &str)> =
        query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    let filter = Filter::from_pairs(pairs).unwrap_or_default();
    let mut ring = Ring::new(4096);
    let mut t = 1_700_000_000_000_000u64;
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let dir = if n & 1 == 0 { Direction::Out } else { Direction::In };
        let body = &rest[2..(2 + n).min(rest.len())];
        ring.push(t, dir, Origin::Nat, body, if n % 3 == 0 { 64 } else { 0 });
        t += 1000;
        rest = &rest[(2 + n).min(rest.len())..];
    }
    let snap = ring.snapshot();
    let about = About { mac: gatekeeper::types::Mac([2, 0, 0, 0, 0, 1]), name: Some(query.clone()), ip: None };
    for format in [Format::PcapNg, Format::Pcap] {
        let mut bytes = 0;
        let n = pcap::write(format, &about, &snap, &filter, |c| {
            bytes += c.len();
            true
        });
        assert!(n <= snap.len() && bytes > 0);
    }
    for p in snap.iter() {
        let _ = summary::line(p.data, p.len, p.direction == Direction::Out, p.time_us, "nat");
    }
});
