//! `cargo bench --bench translate`: ns per packet through `Nat::translate` on established flows (the fast path),
//! both directions, with 10,000 live flows in the table, plus the cost of a new flow.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatekeeper::nat::{Direction, Nat, NatConfig, PacketMeta, Verdict};
use gatekeeper::types::Time;
use std::hint::black_box;
use std::net::Ipv4Addr;

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const OUT: PacketMeta = PacketMeta::new(Direction::Outbound);
const IN: PacketMeta = PacketMeta::new(Direction::Inbound);

fn csum(data: &[u8], mut s: u32) -> u16 {
    for c in data.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// A 1500-byte TCP ACK segment (IP 20 + TCP 20 + 1460 payload) with valid checksums.
fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 1500];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&1500u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = csum(&p[..20], 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    let (s, d) = (u32::from(src), u32::from(dst));
    let ph = (s >> 16) + (s & 0xffff) + (d >> 16) + (d & 0xffff) + 6 + 1480;
    let c = csum(&p[20..], ph);
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// The first 40 bytes (IP + TCP headers) of each flow's outbound and inbound packet, stored contiguously so that the
/// benchmark's own reads stay cheap; the 1460-byte payload (zeros) is the same for every flow.
/// One flow's outbound and inbound headers.
type HeaderPair = ([u8; 40], [u8; 40]);

fn setup(flows: u32) -> (Nat, Vec<HeaderPair>) {
    let cfg = NatConfig::new(WAN, "10.0.0.0/8".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 1));
    let mut nat = Nat::new(cfg, 1);
    let mut pairs = Vec::new();
    for i in 0..flows {
        let host = Ipv4Addr::from(0x0a01_0000 + i / 50);
        let sport = 20000 + (i % 50) as u16;
        let remote = Ipv4Addr::from(0xc633_6400 + (i % 200));
        let mut o = tcp(host, sport, remote, 443);
        assert_eq!(nat.translate(&mut o, OUT, Time::ZERO).0, Verdict::Translated);
        let ext = u16::from_be_bytes([o[20], o[21]]);
        let i = tcp(remote, 443, WAN, ext);
        let o = tcp(host, sport, remote, 443);
        pairs.push((o[..40].try_into().unwrap(), i[..40].try_into().unwrap()));
    }
    (nat, pairs)
}

/// Copies a flow's 40 header bytes into the (hot) work buffer, as if the packet had just been received.
fn load(work: &mut [u8], hdr: &[u8]) {
    work[..40].copy_from_slice(&hdr[..40]);
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("translate");
    g.throughput(Throughput::Elements(1));
    for flows in [1u32, 10_000] {
        let (mut nat, pairs) = setup(flows);
        let mut work = tcp(Ipv4Addr::new(10, 1, 0, 0), 20000, Ipv4Addr::new(198, 51, 100, 0), 443);
        let mut k = 0usize;
        g.bench_function(format!("established_outbound_{flows}_flows"), |b| {
            b.iter(|| {
                k = (k + 7919) % pairs.len();
                load(&mut work, &pairs[k].0);
                black_box(nat.translate(black_box(&mut work), OUT, Time::from_unix_ms(1000)))
            })
        });
        g.bench_function(format!("established_inbound_{flows}_flows"), |b| {
            b.iter(|| {
                k = (k + 7919) % pairs.len();
                load(&mut work, &pairs[k].1);
                black_box(nat.translate(black_box(&mut work), IN, Time::from_unix_ms(1000)))
            })
        });
    }
    let mut n = 0u32;
    g.bench_function("new_flow_with_eviction", |b| {
        let mut cfg = NatConfig::new(WAN, "10.0.0.0/8".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 1));
        cfg.max_mappings = 10_000;
        cfg.max_connections = 10_000;
        let mut nat = Nat::new(cfg, 2);
        let template = tcp(Ipv4Addr::new(10, 1, 0, 1), 1, Ipv4Addr::new(198, 51, 100, 1), 80);
        let mut p = template.clone();
        b.iter(|| {
            n = n.wrapping_add(1);
            load(&mut p, &template);
            p[14..16].copy_from_slice(&((n >> 16) as u16).to_be_bytes());
            p[20..22].copy_from_slice(&(n as u16).to_be_bytes());
            black_box(nat.translate(&mut p, OUT, Time::from_unix_ms(u64::from(n))))
        })
    });
    g.finish();

    // What a change of forwards or app mappings costs the packet path: `set_forwards` runs under the NAT's lock
    // (between two batches), here with 10,000 flows in the table and 100 forwards, one mapping coming and going.
    let (mut nat, _) = setup(10_000);
    let fwd = |p: u16| gatekeeper::ports::PortForward {
        protocols: gatekeeper::ports::Protocols::Udp,
        external_port: p,
        internal: std::net::SocketAddrV4::new(Ipv4Addr::new(10, 9, 0, 1), p),
    };
    let base: Vec<_> = (40_000..40_100).map(fwd).collect();
    let mut more = base.clone();
    more.push(fwd(40_100));
    let mut flip = false;
    c.bench_function("set_forwards_100_with_10000_flows", |b| {
        b.iter(|| {
            flip = !flip;
            nat.set_forwards(if flip { more.clone() } else { base.clone() });
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
