//! `cargo bench --bench traffic`: the sans-IO traffic core (`gatekeeper::traffic::Traffic`).
//!
//! 1. Throughput: records ingested per second on one core, the shell's work included (`advance` and `take_ticks`
//!    every simulated 100 ms, `maintain` every simulated second), for a mix of 50 devices x 200 remotes and for one
//!    pair alone.
//! 2. Memory (printed, not timed): 50 devices x 200 remotes, each pair active in 1,000 buckets over 24 h, with a
//!    mix of bucket kinds; `Traffic::memory()` and the heap the core really holds (a counting allocator), then each
//!    kind on its own. The totals the core reports are checked against what was fed in.
//! 3. Queries on that core: `series` of one device over 24 h in 2,000 points, `top(None)` over 24 h, `range_stats`
//!    of one device over 1 h, and one `maintain`.
//!
//! Without `--bench` (`cargo test --benches`) the memory part runs at a small scale so a test run stays quick.

use criterion::{Criterion, SamplingMode, Throughput};
use gatekeeper::nat::{L4, PacketRecord, Verdict, Way};
use gatekeeper::traffic::series::{Flow, Series};
use gatekeeper::traffic::{Select, Traffic, TrafficConfig};
use gatekeeper::types::{Device, Mac};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// --- a counting allocator: the heap the core really holds, not only its own estimate -----------------------------

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to `System` unchanged; only a counter is kept beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

// --- the workload's pieces -------------------------------------------------------------------------------------

/// A Unix ms on an hour boundary.
const T0: u64 = 1_800_000_000_000;
const DAY_MS: u64 = 24 * 3600 * 1000;
const DAY_BUCKETS: u32 = (DAY_MS / 100) as u32;
const DEVICES: u32 = 50;
const REMOTES: u32 = 200;
const BUCKETS_PER_PAIR: usize = 1000;

/// splitmix64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

fn lan(d: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, 10 + d as u8)
}

fn remote(r: u32) -> Ipv4Addr {
    Ipv4Addr::from(0xc633_6400 + r) // 198.51.100.0/24
}

fn mac(d: u32) -> Mac {
    Mac([2, 0, 0, 0, 0, d as u8])
}

/// Devices 0..25 are known by MAC (a DHCP lease), the others by address only.
fn known_by_mac(d: u32) -> bool {
    d < DEVICES / 2
}

fn device_id(d: u32) -> Device {
    if known_by_mac(d) { Device::Mac(mac(d)) } else { Device::Ip(IpAddr::V4(lan(d))) }
}

fn new_core(cap: usize) -> Traffic {
    let mut t = Traffic::new(TrafficConfig { memory_bytes: cap });
    for d in 0..DEVICES {
        if known_by_mac(d) {
            t.set_host(lan(d), mac(d));
        }
    }
    t
}

fn record(at_ms: u64, device: Ipv4Addr, remote: Ipv4Addr, way: Way, bytes: u32, segments: u16) -> PacketRecord {
    PacketRecord {
        at_ms,
        device,
        remote,
        device_port: 40_000,
        remote_port: 443,
        bytes,
        segments,
        ip_proto: 6,
        protocol: L4::Tcp,
        way,
        hairpin: false,
        verdict: Verdict::Translated,
    }
}

// --- 1. throughput ---------------------------------------------------------------------------------------------

/// One simulated second of records (`at_ms` relative to the second's start), `rate` of them.
///
/// Mix: 80% of records go to 500 busy pairs (5% of the 10,000), 20% to any pair; busy pairs 70% down (1500 B,
/// 10% of them GRO aggregates of 2-20 segments) and 30% up (52 B ACKs); other pairs half each way, 52-1500 B; 1%
/// of records are hairpinned (one LAN device to another through the WAN address).
fn mix_second(rate: u32, seed: u64) -> Vec<PacketRecord> {
    let mut rng = Rng(seed);
    (0..rate)
        .map(|k| {
            let at = u64::from(k) * 1000 / u64::from(rate);
            let pair = if rng.chance(0.8) { rng.range(0, 499) * 20 } else { rng.range(0, 9_999) } as u32;
            let (d, r) = (pair / REMOTES, pair % REMOTES);
            if rng.chance(0.01) {
                let other = (d + 1 + rng.range(0, u64::from(DEVICES) - 2) as u32) % DEVICES;
                let mut rec = record(at, lan(d), lan(other), Way::Up, rng.range(60, 1500) as u32, 1);
                rec.hairpin = true;
                return rec;
            }
            let busy = pair.is_multiple_of(20);
            let (way, bytes, segments) = if busy {
                if rng.chance(0.7) {
                    if rng.chance(0.1) {
                        let n = rng.range(2, 20) as u16;
                        (Way::Down, 1500 * u32::from(n), n)
                    } else {
                        (Way::Down, 1500, 1)
                    }
                } else {
                    (Way::Up, 52, 1)
                }
            } else {
                let way = if rng.chance(0.5) { Way::Up } else { Way::Down };
                (way, rng.range(52, 1500) as u32, 1)
            };
            record(at, lan(d), remote(r), way, bytes, segments)
        })
        .collect()
}

/// One pair only: 3 of 5 records down (1500 B), 2 up (52 B ACKs).
fn one_pair_second(rate: u32) -> Vec<PacketRecord> {
    (0..rate)
        .map(|k| {
            let at = u64::from(k) * 1000 / u64::from(rate);
            let (way, bytes) = if k % 5 < 3 { (Way::Down, 1500) } else { (Way::Up, 52) };
            record(at, lan(0), remote(0), way, bytes, 1)
        })
        .collect()
}

/// The core and the shell's clock across iterations.
struct Live {
    t: Traffic,
    base: u64,
    next_tick: u64,
}

impl Live {
    fn new() -> Live {
        Live { t: new_core(64 << 20), base: T0, next_tick: T0 }
    }

    /// Feeds one simulated second as the shell would: records in time order, `advance` + `take_ticks` every
    /// 100 ms, `maintain` at the end of the second.
    fn second(&mut self, pattern: &[PacketRecord]) {
        for r in pattern {
            let at = self.base + r.at_ms;
            while self.next_tick <= at {
                self.t.advance(self.next_tick);
                black_box(self.t.take_ticks());
                self.next_tick += 100;
            }
            let mut rec = *r;
            rec.at_ms = at;
            self.t.ingest(&rec);
        }
        self.base += 1000;
        while self.next_tick <= self.base {
            self.t.advance(self.next_tick);
            black_box(self.t.take_ticks());
            self.next_tick += 100;
        }
        self.t.maintain(self.base);
    }
}

fn throughput(c: &mut Criterion) {
    let mut g = c.benchmark_group("traffic_ingest");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let cases: [(&str, Vec<PacketRecord>); 3] = [
        ("mix_50x200_300k_per_s", mix_second(300_000, 1)),
        ("mix_50x200_10k_per_s", mix_second(10_000, 2)),
        ("one_pair_300k_per_s", one_pair_second(300_000)),
    ];
    for (name, pattern) in cases {
        g.throughput(Throughput::Elements(pattern.len() as u64));
        let mut l = Live::new();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    l.second(&pattern);
                }
                start.elapsed()
            })
        });
        let m = l.t.memory();
        println!(
            "  {name}: after {} simulated s: {} records, {} buckets held, {:.2} B/bucket, {} evicted, {} late",
            (l.base - T0) / 1000,
            l.t.stats().records,
            m.buckets,
            m.bytes_per_bucket,
            l.t.stats().evicted_buckets,
            l.t.stats().late,
        );
    }
    g.finish();
}

// --- 2. memory at scale ----------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Dns,
    Keepalive,
    Web,
    Bulk,
}

const KINDS: [Kind; 4] = [Kind::Dns, Kind::Keepalive, Kind::Web, Kind::Bulk];

/// The mix's share of pairs per kind, in percent.
fn weight(k: Kind) -> u64 {
    match k {
        Kind::Dns => 25,
        Kind::Keepalive => 25,
        Kind::Web => 40,
        Kind::Bulk => 10,
    }
}

fn pick_kind(rng: &mut Rng) -> Kind {
    let mut x = rng.range(0, 99);
    for k in KINDS {
        if x < weight(k) {
            return k;
        }
        x -= weight(k);
    }
    unreachable!()
}

/// One pair's generator: when it is active (sorted bucket offsets within the day) and what each bucket holds.
struct PairGen {
    kind: Kind,
    rng: Rng,
    at: Vec<u32>,
    next: usize,
    /// DNS: (query, answer) sizes of the pair's four names; keepalive: the one packet each way in `names[0]`.
    names: [(u64, u64); 4],
    /// Bulk: the current download's packets per bucket, and the bucket of the last entry.
    rate: u64,
    last: u32,
}

/// Lays sessions (`(start, length)`, any order) out one after the other, each entry `1 + gap()` after the last.
fn lay_out(mut sessions: Vec<(u32, u32)>, rng: &mut Rng, gap: impl Fn(&mut Rng) -> u32) -> Option<Vec<u32>> {
    sessions.sort_unstable();
    let mut out = Vec::with_capacity(BUCKETS_PER_PAIR);
    let mut free = 0u32;
    for (start, len) in sessions {
        let mut b = start.max(free);
        for _ in 0..len {
            out.push(b);
            b += 1 + gap(rng);
        }
        free = b + 1;
    }
    (out.last().is_some_and(|&l| l < DAY_BUCKETS) && out.len() == BUCKETS_PER_PAIR).then_some(out)
}

/// Splits `BUCKETS_PER_PAIR` into sessions of `lo..=hi` buckets starting anywhere in the day but its last `tail`.
fn sessions(rng: &mut Rng, lo: u64, hi: u64, tail: u32) -> Vec<(u32, u32)> {
    let mut left = BUCKETS_PER_PAIR as u64;
    let mut v = Vec::new();
    while left > 0 {
        let len = rng.range(lo, hi).min(left);
        left -= len;
        v.push((rng.range(0, u64::from(DAY_BUCKETS - tail)) as u32, len as u32));
    }
    v
}

impl PairGen {
    fn new(kind: Kind, seed: u64) -> PairGen {
        let mut rng = Rng(seed);
        let at = loop {
            let at = match kind {
                // Lookups (or NTP, STUN, small API calls) at random times: a Poisson-like process.
                Kind::Dns => {
                    let mut s = BTreeSet::new();
                    while s.len() < BUCKETS_PER_PAIR {
                        s.insert(rng.range(0, u64::from(DAY_BUCKETS) - 1) as u32);
                    }
                    Some(s.into_iter().collect())
                }
                // A timer every 86.4 s (1,000 a day), jittered by a bucket either way.
                Kind::Keepalive => {
                    let phase = rng.range(2, 860) as u32;
                    Some((0..BUCKETS_PER_PAIR as u32).map(|k| phase + k * 864 + rng.range(0, 2) as u32 - 1).collect())
                }
                // Page loads: 5-30 active buckets each, mostly back to back (30% with a 100-300 ms pause).
                Kind::Web => {
                    let s = sessions(&mut rng, 5, 30, 200);
                    lay_out(s, &mut rng, |r| if r.chance(0.3) { r.range(1, 3) as u32 } else { 0 })
                }
                // Downloads / streams: 1-4 runs of consecutive buckets (5% with a stall of 1-2 buckets).
                Kind::Bulk => {
                    let n = rng.range(1, 4);
                    let s = sessions(&mut rng, BUCKETS_PER_PAIR as u64 / n, BUCKETS_PER_PAIR as u64 / n, 1300);
                    lay_out(s, &mut rng, |r| if r.chance(0.05) { r.range(1, 2) as u32 } else { 0 })
                }
            };
            if let Some(at) = at {
                break at;
            }
        };
        let mut names = [(0, 0); 4];
        for n in &mut names {
            let q = rng.range(60, 90);
            *n = match kind {
                Kind::Keepalive => (rng.range(60, 120), rng.range(52, 100)),
                _ => (q, q + rng.range(16, 200)),
            };
        }
        PairGen { kind, rng, at, next: 0, names, rate: 0, last: 0 }
    }

    /// What bucket `at` (the next in `self.at`) holds, up and down.
    fn bucket(&mut self, at: u32) -> (Flow, Flow) {
        let r = &mut self.rng;
        let one = |bytes| Flow { bytes, packets: 1 };
        let flows = match self.kind {
            Kind::Dns => {
                // Name 0 half the time, 1 a quarter, 2 and 3 an eighth each.
                let i = match r.range(0, 7) {
                    0..=3 => 0,
                    4 | 5 => 1,
                    6 => 2,
                    _ => 3,
                };
                (one(self.names[i].0), one(self.names[i].1))
            }
            Kind::Keepalive => (one(self.names[0].0), one(self.names[0].1)),
            Kind::Web => {
                let up_n = r.range(1, 4);
                let up = (0..up_n).map(|_| r.range(52, 200)).sum();
                let down_n = r.range(3, 20);
                let down = (down_n - 1) * 1500 + r.range(100, 1500);
                (Flow { bytes: up, packets: up_n as u32 }, Flow { bytes: down, packets: down_n as u32 })
            }
            Kind::Bulk => {
                if self.next == 0 || at - self.last > 10 {
                    self.rate = r.range(20, 80);
                }
                let n = self.rate + r.range(0, 6) - 3;
                let acks = n.div_ceil(2);
                (Flow { bytes: acks * 52, packets: acks as u32 }, Flow { bytes: n * 1500, packets: n as u32 })
            }
        };
        self.last = at;
        self.next += 1;
        flows
    }
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
struct Sums {
    up_bytes: u64,
    down_bytes: u64,
    up_packets: u64,
    down_packets: u64,
}

struct Built {
    t: Traffic,
    /// Heap bytes held by the core (counting allocator), measured after the generators were dropped.
    heap: usize,
    /// The entries' own bytes (a plain `Series` per pair fed the same buckets), when asked for.
    entry_bytes: Option<usize>,
    buckets: u64,
    per_device: Vec<Sums>,
    kinds: [u32; 4],
    seconds: f64,
}

/// `devices` x `remotes` pairs, each active in `BUCKETS_PER_PAIR` buckets over the day from `T0`, of `kind` (or of
/// the mix), fed through the core as the shell would: one record per direction per active bucket (`segments` the
/// bucket's packets: the core sums bytes and packets per bucket, so how a bucket's traffic is split into records
/// does not change what is stored), `advance` every 100 ms, `take_ticks` every second, `maintain` every minute.
fn build(devices: u32, remotes: u32, kind: Option<Kind>, entries: bool, seed: u64) -> Built {
    let started = Instant::now();
    let before = live();
    let mut t = new_core(1 << 30);
    let mut rng = Rng(seed);
    let mut gens: Vec<PairGen> = (0..devices * remotes)
        .map(|p| {
            let k = kind.unwrap_or_else(|| pick_kind(&mut rng));
            PairGen::new(k, seed ^ (u64::from(p) + 1).wrapping_mul(0x2545_F491_4F6C_DD1D))
        })
        .collect();
    let mut kinds = [0u32; 4];
    for g in &gens {
        kinds[KINDS.iter().position(|&k| k == g.kind).unwrap()] += 1;
    }
    let mut plain: Vec<Series> = if entries { (0..gens.len()).map(|_| Series::new()).collect() } else { Vec::new() };
    let mut heap: BinaryHeap<Reverse<(u32, u32)>> =
        gens.iter().enumerate().map(|(p, g)| Reverse((g.at[0], p as u32))).collect();
    let mut per_device = vec![Sums::default(); devices as usize];
    let mut buckets = 0u64;
    let mut clock = T0;
    let shell = |t: &mut Traffic, now: u64| {
        t.advance(now);
        if now.is_multiple_of(1000) {
            drop(t.take_ticks());
        }
        if now.is_multiple_of(60_000) {
            t.maintain(now);
        }
    };
    while let Some(Reverse((at, p))) = heap.pop() {
        let at_ms = T0 + u64::from(at) * 100;
        while clock <= at_ms {
            shell(&mut t, clock);
            clock += 100;
        }
        let g = &mut gens[p as usize];
        let (up, down) = g.bucket(at);
        if let Some(&n) = g.at.get(g.next) {
            heap.push(Reverse((n, p)));
        }
        let (d, r) = (p / remotes, p % remotes);
        if !up.is_empty() {
            t.ingest(&record(at_ms + 10, lan(d), remote(r), Way::Up, up.bytes as u32, up.packets as u16));
        }
        if !down.is_empty() {
            t.ingest(&record(at_ms + 40, lan(d), remote(r), Way::Down, down.bytes as u32, down.packets as u16));
        }
        if entries {
            plain[p as usize].push(u64::from(at), up, down);
        }
        let s = &mut per_device[d as usize];
        s.up_bytes += up.bytes;
        s.down_bytes += down.bytes;
        s.up_packets += u64::from(up.packets);
        s.down_packets += u64::from(down.packets);
        buckets += 1;
    }
    let end = T0 + DAY_MS;
    while clock <= end {
        shell(&mut t, clock);
        clock += 100;
    }
    t.maintain(end);
    drop(t.take_ticks());
    let entry_bytes = entries.then(|| plain.iter().flat_map(|s| s.blocks()).map(|b| b.data.len()).sum());
    drop(plain);
    drop(gens);
    drop(heap);
    // `per_device` is still live: take its few bytes off.
    let heap = live() - before - per_device.capacity() * size_of::<Sums>();
    Built { t, heap, entry_bytes, buckets, per_device, kinds, seconds: started.elapsed().as_secs_f64() }
}

/// Compares the core's totals with what was fed in; prints every difference.
fn check(b: &Built, devices: u32) -> bool {
    let t = &b.t;
    let end = T0 + DAY_MS;
    let mut ok = true;
    let mut fail = |what: String| {
        println!("  MISMATCH: {what}");
        ok = false;
    };
    let m = t.memory();
    if m.buckets != b.buckets {
        fail(format!("memory().buckets {} != {} fed", m.buckets, b.buckets));
    }
    let st = t.stats();
    if st.evicted_buckets != 0 || st.expired_buckets != 0 || st.late != 0 {
        fail(format!("evicted {} expired {} late {}", st.evicted_buckets, st.expired_buckets, st.late));
    }
    let top = t.top(None, T0, end, devices as usize + 1);
    if top.len() != devices as usize {
        fail(format!("top(None) has {} rows for {devices} devices", top.len()));
    }
    // `devices(now)`'s last day is the 1,440 minutes up to and including now's: at `end` that leaves out the first
    // minute of the day fed, so ask a millisecond before.
    let summaries = t.devices(end - 1);
    for d in 0..devices {
        let want = b.per_device[d as usize];
        let id = device_id(d);
        let as_sums = |x: &gatekeeper::traffic::core::Totals| Sums {
            up_bytes: x.up_bytes,
            down_bytes: x.down_bytes,
            up_packets: x.up_packets,
            down_packets: x.down_packets,
        };
        match top.iter().find(|e| e.device == Some(id)) {
            Some(e) if as_sums(&e.totals) == want => {}
            other => fail(format!("top(None) for {id}: {:?} != {want:?}", other.map(|e| e.totals))),
        }
        match summaries.iter().find(|s| s.device == id) {
            Some(s) if as_sums(&s.total) == want && s.last_day == [want.up_bytes, want.down_bytes] => {}
            other => fail(format!("devices() for {id}: {:?} != {want:?}", other.map(|s| (s.total, s.last_day)))),
        }
        let usage: [u64; 2] =
            t.usage(Some(id), T0, end, 3_600_000).iter().fold([0, 0], |a, (_, v)| [a[0] + v[0], a[1] + v[1]]);
        if usage != [want.up_bytes, want.down_bytes] {
            fail(format!("usage() for {id}: {usage:?} != {:?}", [want.up_bytes, want.down_bytes]));
        }
    }
    let one = Select { device: Some(device_id(0)), remote: None };
    let s = t.series(&one, T0, 43_200, 2000).iter().fold([0, 0], |a, v| [a[0] + v[0], a[1] + v[1]]);
    let want = b.per_device[0];
    if s != [want.up_bytes, want.down_bytes] {
        fail(format!("series(device 0, 24 h) sums to {s:?}, fed {:?}", [want.up_bytes, want.down_bytes]));
    }
    let r = t.range_stats(&one, T0, end);
    if r.totals.up_bytes != want.up_bytes || r.totals.down_packets != want.down_packets {
        fail(format!("range_stats(device 0, 24 h) {:?} != {want:?}", r.totals));
    }
    ok
}

fn mib(b: usize) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn memory(full: bool) -> Built {
    let (remotes, kind_remotes) = if full { (REMOTES, 20) } else { (4, 2) };
    println!();
    println!("== traffic core: memory (50 devices x {remotes} remotes x {BUCKETS_PER_PAIR} active buckets over 24 h)");
    let big = build(DEVICES, remotes, None, false, 42);
    let m = big.t.memory();
    println!(
        "  mix (pairs: {} DNS-like, {} keepalive, {} web, {} bulk), built in {:.1} s:",
        big.kinds[0], big.kinds[1], big.kinds[2], big.kinds[3], big.seconds
    );
    println!(
        "    memory(): history_bytes {} ({:.2} MiB), buckets {}, pairs {}, bytes_per_bucket {:.3}",
        m.history_bytes,
        mib(m.history_bytes),
        m.buckets,
        m.pairs,
        m.bytes_per_bucket
    );
    println!(
        "    heap the core holds (counting allocator): {} ({:.2} MiB), {:.3} B per bucket",
        big.heap,
        mib(big.heap),
        big.heap as f64 / big.buckets as f64
    );
    println!(
        "    of which outside history_bytes (per-device minute/hour tables, indexes, tick backlog): {:.2} MiB",
        mib(big.heap.saturating_sub(m.history_bytes))
    );
    println!("    totals check: {}", if check(&big, DEVICES) { "ok" } else { "FAILED (above)" });
    println!("  each kind alone (50 devices x {kind_remotes} remotes x {BUCKETS_PER_PAIR} buckets):");
    println!("    kind       memory() B/bucket  entry bytes/bucket  heap B/bucket (all of the core)  totals");
    for (i, k) in KINDS.into_iter().enumerate() {
        let b = build(DEVICES, kind_remotes, Some(k), true, 100 + i as u64);
        let m = b.t.memory();
        let ok = check(&b, DEVICES);
        println!(
            "    {:<10} {:>17.3}  {:>18.3}  {:>31.3}  {}",
            format!("{k:?}"),
            m.bytes_per_bucket,
            b.entry_bytes.unwrap_or(0) as f64 / b.buckets as f64,
            b.heap as f64 / b.buckets as f64,
            if ok { "ok" } else { "FAILED" }
        );
    }
    println!();
    big
}

// --- 3. queries ----------------------------------------------------------------------------------------------------

fn queries(c: &mut Criterion, big: &mut Built) {
    let mut g = c.benchmark_group("traffic_query_50x200x1000");
    g.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    let end = T0 + DAY_MS;
    let one = Select { device: Some(device_id(0)), remote: None };
    let t = &big.t;
    g.bench_function("series_one_device_24h_2000_points", |b| {
        b.iter(|| black_box(t.series(black_box(&one), T0, 43_200, 2000)))
    });
    g.bench_function("top_all_devices_24h", |b| b.iter(|| black_box(t.top(None, black_box(T0), end, 10))));
    g.bench_function("top_one_device_24h", |b| b.iter(|| black_box(t.top(Some(device_id(0)), black_box(T0), end, 10))));
    let hour = T0 + 12 * 3_600_000;
    g.bench_function("range_stats_one_device_1h", |b| {
        b.iter(|| black_box(t.range_stats(black_box(&one), hour, hour + 3_600_000)))
    });
    // The shell's once-a-second call, a second later each time (ages out a second of buckets).
    let mut now = end;
    g.bench_function("maintain", |b| {
        b.iter(|| {
            now += 1000;
            big.t.maintain(black_box(now))
        })
    });
    g.finish();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let mut c = Criterion::default().configure_from_args();
    throughput(&mut c);
    let mut big = memory(full);
    queries(&mut c, &mut big);
    c.final_summary();
}
