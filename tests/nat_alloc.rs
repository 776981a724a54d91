//! `Nat::translate` allocates nothing, for every kind of packet, also when it creates mappings and evicts old
//! ones to make room, once the tables have reached their steady size: the slabs are allocated for their bounds in
//! `Nat::new`; the hash indexes grow until their capacity is twice the most entries they held (`nat::table`), which
//! here is over by round ~8,000 of the warm-up (the last doublings, of tombstone clean-ups after the tables first
//! filled, came at rounds 5,355 and 8,026). A binary of its own, because it installs a counting global allocator
//! (the lib's unit tests already have one, for the DNS core).

use gatekeeper::nat::{Direction, DropReason, Nat, NatConfig, PacketMeta, Verdict};
use gatekeeper::types::Time;
use std::cell::Cell;
use std::net::Ipv4Addr;

thread_local! { static ALLOCATIONS: Cell<u64> = const { Cell::new(0) }; }

/// Counts this thread's allocations (alloc, zeroed alloc, realloc) on top of the system allocator.
struct CountingAllocator;

fn count() {
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count();
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count();
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, size: usize) -> *mut u8 {
        count();
        unsafe { std::alloc::System.realloc(ptr, layout, size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 20);
const REMOTE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const OUT: PacketMeta = PacketMeta::new(Direction::Outbound);
const IN: PacketMeta = PacketMeta::new(Direction::Inbound);

/// An IPv4 packet in `buf` (checksums are not looked at by `translate`, only updated).
fn packet(buf: &mut [u8; 128], src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> usize {
    let len = 20 + l4.len();
    buf[..20].fill(0);
    buf[0] = 0x45;
    buf[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    buf[8] = 64;
    buf[9] = proto;
    buf[12..16].copy_from_slice(&src.octets());
    buf[16..20].copy_from_slice(&dst.octets());
    buf[20..len].copy_from_slice(l4);
    len
}

/// TCP (20-byte header + 8 bytes) or UDP (8-byte header + 20 bytes) with these ports.
fn ports(proto: u8, sport: u16, dport: u16, tcp_flags: u8) -> [u8; 28] {
    let mut l4 = [0u8; 28];
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4[12] = 5 << 4;
        l4[13] = tcp_flags;
    } else {
        l4[4..6].copy_from_slice(&28u16.to_be_bytes());
    }
    l4
}

fn echo(ty: u8, id: u16) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = ty;
    m[4..6].copy_from_slice(&id.to_be_bytes());
    m
}

struct Run {
    nat: Nat,
    buf: [u8; 128],
    now: u64,
}

impl Run {
    fn go(&mut self, meta: PacketMeta, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4: &[u8]) -> (Verdict, u16) {
        let len = packet(&mut self.buf, src, dst, proto, l4);
        let (v, r) = self.nat.translate(&mut self.buf[..len], meta, Time::from_unix_ms(self.now));
        std::hint::black_box(r);
        // The external port (outbound) or identifier, as rewritten.
        let at = if proto == 1 { 24 } else { 20 };
        (v, u16::from_be_bytes([self.buf[at], self.buf[at + 1]]))
    }

    /// One of every kind of packet, on flows keyed by `k`; new flows (mappings) every round.
    fn round(&mut self, k: u16) {
        let t = Verdict::Translated;
        let sport = 1024 + k % 20_000;
        // TCP: a new connection out, the answer in, data both ways.
        let (v, ext) = self.go(OUT, HOST, REMOTE, 6, &ports(6, sport, 443, 0x02));
        assert_eq!(v, t);
        assert_eq!(self.go(IN, REMOTE, WAN, 6, &ports(6, 443, ext, 0x12)).0, t);
        assert_eq!(self.go(OUT, HOST, REMOTE, 6, &ports(6, sport, 443, 0x10)).0, t);
        assert_eq!(self.go(IN, REMOTE, WAN, 6, &ports(6, 443, ext, 0x10)).0, t);
        // UDP out and back; another host hairpins to it.
        let (v, uext) = self.go(OUT, HOST, REMOTE, 17, &ports(17, sport, 53, 0));
        assert_eq!(v, t);
        assert_eq!(self.go(IN, REMOTE, WAN, 17, &ports(17, 53, uext, 0)).0, t);
        assert_eq!(self.go(OUT, OTHER, WAN, 17, &ports(17, 30_000 + k % 1000, uext, 0)).0, t);
        // ICMP echo out and back.
        let (v, id) = self.go(OUT, HOST, REMOTE, 1, &echo(8, k));
        assert_eq!(v, t);
        assert_eq!(self.go(IN, REMOTE, WAN, 1, &echo(0, id)).0, t);
        // An ICMP error about the UDP flow.
        let mut err = [0u8; 36];
        err[0] = 3;
        err[1] = 3;
        let mut quote = [0u8; 128];
        packet(&mut quote, WAN, REMOTE, 17, &ports(17, uext, 53, 0));
        err[8..36].copy_from_slice(&quote[..28]);
        assert_eq!(self.go(IN, Ipv4Addr::new(100, 64, 0, 1), WAN, 1, &err).0, t);
        // Not translated: for the router, spoofed, unsupported, to nothing.
        assert_eq!(self.go(OUT, HOST, Ipv4Addr::new(10, 0, 0, 1), 17, &ports(17, 1, 53, 0)).0, Verdict::Accept);
        let v = self.go(OUT, Ipv4Addr::new(172, 16, 0, 1), REMOTE, 17, &ports(17, 1, 53, 0)).0;
        assert_eq!(v, Verdict::Drop(DropReason::NotInside));
        assert_eq!(self.go(OUT, HOST, REMOTE, 47, &[0; 8]).0, Verdict::Drop(DropReason::UnsupportedProtocol));
        assert_eq!(self.go(IN, REMOTE, WAN, 17, &ports(17, 1, 9, 0)).0, Verdict::Local);
        let len = packet(&mut self.buf, HOST, REMOTE, 17, &[0; 4]);
        self.buf[0] = 0x65;
        assert_eq!(
            self.nat.translate(&mut self.buf[..len], OUT, Time::from_unix_ms(self.now)).0,
            Verdict::Drop(DropReason::Malformed)
        );
        self.now += 3;
        if k.is_multiple_of(500) {
            self.nat.expire(Time::from_unix_ms(self.now));
        }
    }
}

#[test]
fn translate_allocates_nothing_for_any_packet_even_creating_and_evicting_mappings() {
    let counted = allocations();
    std::hint::black_box(vec![1u8; 10]);
    assert_eq!(allocations(), counted + 1, "the allocator counts");
    let mut cfg = NatConfig::new(WAN, "10.0.0.0/24".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 1));
    // Small bounds, so that the rounds below fill the tables many times over and evict.
    cfg.max_mappings = 2_000;
    cfg.max_connections = 3_000;
    cfg.port_range = (1024, 60999);
    let mut run = Run { nat: Nat::new(cfg, 7), buf: [0; 128], now: 1_000 };
    // Warm-up: the tables fill (2,000 mappings by round ~450) and churn until the indexes stop growing.
    for k in 0..20_000 {
        run.round(k);
    }
    assert_eq!(run.nat.stats().mappings, 2_000, "full");
    let before = allocations();
    for k in 20_000..65_000 {
        run.round(k);
    }
    let made = allocations() - before;
    let s = *run.nat.stats();
    assert!(s.mappings_evicted > 10_000, "the tables filled and evicted: {s:?}");
    assert!(s.mappings_created > 100_000, "{s:?}");
    assert_eq!(made, 0, "allocations in {} translate calls", 45_000 * 15);
}
