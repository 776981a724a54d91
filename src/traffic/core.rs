//! The sans-IO traffic core: the packet path's records in, 100 ms buckets per (device, remote) pair out, as live
//! ticks and as 24 h of history; per-device totals by minute (the last day) and by hour (90 days).
//!
//! Time is the records' own (`at_ms`), so the history of a packet is where it happened, whatever the shell's
//! timing. The core keeps one bucket open; a record of a later bucket closes it (and every one in between, as an
//! empty tick), and [`Traffic::advance`] closes it when the clock passes its end. A record that arrives after its
//! bucket closed (a queue that published late) is counted into the open one (counted as `late`): totals stay exact,
//! its time moves by at most a bucket or two.
//!
//! A device is its MAC when the hosts table knows one for its address ([`Traffic::set_host`]), else its address.

use super::series::{Flow, Series};
use crate::counters::Counters;
use crate::nat::{DropReason, PacketRecord, Verdict, Way};
use crate::types::{Device, Mac};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

pub const BUCKET_MS: u64 = 100;
/// How long the 100 ms history goes back.
pub const HISTORY_MS: u64 = 24 * 3600 * 1000;
/// How long hourly totals are kept.
pub const LONG_MS: u64 = 90 * 24 * 3600 * 1000;
/// Ticks kept for a new live subscriber (the last minute).
pub const BACKLOG_TICKS: usize = 600;
const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// Estimated bytes per pair besides its series (the pair, its index entry, the device's list entry).
const PAIR_OVERHEAD: usize = 128;
/// Empty ticks emitted at most when the clock jumps (after a suspend, say): a subscriber's minute of backlog.
const MAX_EMPTY_TICKS: u64 = BACKLOG_TICKS as u64;

#[derive(Debug, Clone)]
pub struct TrafficConfig {
    /// The history's memory cap: past it, the oldest buckets go first.
    pub memory_bytes: usize,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig { memory_bytes: 64 << 20 }
    }
}

/// One 100 ms step of the live view: what each device sent and received in it, and per remote.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Tick {
    /// The bucket's start (Unix ms).
    pub at_ms: u64,
    pub devices: Vec<DeviceTick>,
    pub remotes: Vec<RemoteTick>,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct DeviceTick {
    pub device: Device,
    pub up: u64,
    pub down: u64,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct RemoteTick {
    pub device: Device,
    pub remote: Ipv4Addr,
    pub up: u64,
    pub down: u64,
}

/// Up and down, bytes and packets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub up_packets: u64,
    pub down_packets: u64,
}

impl Totals {
    fn add(&mut self, f: &[Flow; 2]) {
        self.up_bytes += f[0].bytes;
        self.down_bytes += f[1].bytes;
        self.up_packets += u64::from(f[0].packets);
        self.down_packets += u64::from(f[1].packets);
    }
    pub fn bytes(&self) -> u64 {
        self.up_bytes + self.down_bytes
    }
}

pub(super) struct DeviceState {
    pub(super) id: Device,
    pub(super) ip: Option<Ipv4Addr>,
    pub(super) first_seen_ms: u64,
    pub(super) last_seen_ms: u64,
    pub(super) pairs: Vec<u32>,
    acc: [Flow; 2],
    active: bool,
    /// The last closed active buckets (at most a second's worth).
    recent: VecDeque<(u64, [Flow; 2])>,
    /// Per-minute totals for the last day (index: Unix minute), active minutes only.
    pub(super) minutes: VecDeque<(u64, [Flow; 2])>,
    /// Per-hour totals for 90 days (index: Unix hour), active hours only.
    pub(super) hours: VecDeque<(u64, [Flow; 2])>,
    pub(super) total: Totals,
}

impl DeviceState {
    pub(super) fn new(id: Device, now_ms: u64) -> DeviceState {
        DeviceState {
            id,
            ip: None,
            first_seen_ms: now_ms,
            last_seen_ms: now_ms,
            pairs: Vec::new(),
            acc: [Flow::ZERO; 2],
            active: false,
            recent: VecDeque::new(),
            minutes: VecDeque::new(),
            hours: VecDeque::new(),
            total: Totals::default(),
        }
    }
}

fn add_to(slots: &mut VecDeque<(u64, [Flow; 2])>, at: u64, f: &[Flow; 2]) {
    match slots.back_mut() {
        Some((t, v)) if *t == at => {
            v[0].merge(f[0]);
            v[1].merge(f[1]);
        }
        _ => slots.push_back((at, *f)),
    }
}

fn sum_since(slots: &VecDeque<(u64, [Flow; 2])>, since: u64) -> [u64; 2] {
    slots.iter().rev().take_while(|(t, _)| *t >= since).fold([0, 0], |a, (_, v)| [a[0] + v[0].bytes, a[1] + v[1].bytes])
}

pub(super) struct Pair {
    pub(super) device: u32,
    pub(super) remote: Ipv4Addr,
    pub(super) series: Series,
    acc: [Flow; 2],
    active: bool,
}

/// What the stats say about the core.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub records: u64,
    /// Records of translated packets that arrived after their bucket had closed.
    pub late: u64,
    /// Records of packets that were not the devices' (LAN to router, router-bound from the WAN).
    pub local: u64,
    /// Dropped packets (not in the history), by reason: packets and bytes.
    pub dropped: HashMap<DropReason, (u64, u64)>,
    /// Buckets removed to stay under the memory cap, and the ones that aged out (older than 24 h).
    pub evicted_buckets: u64,
    pub expired_buckets: u64,
    pub ticks: u64,
}

/// A summary of one device for the devices list.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeviceSummary {
    pub device: Device,
    pub ip: Option<Ipv4Addr>,
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    /// Bytes `[up, down]` in the last second, hour (by minute), day (by minute), and since it was first seen.
    pub last_second: [u64; 2],
    pub last_hour: [u64; 2],
    pub last_day: [u64; 2],
    pub total: Totals,
}

/// Which pairs a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Select {
    pub device: Option<Device>,
    pub remote: Option<Ipv4Addr>,
}

/// A query's statistics over a range.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RangeStats {
    pub from: u64,
    pub to: u64,
    #[serde(flatten)]
    pub totals: Totals,
    /// Average rates over the range, bytes per second.
    pub avg_up_bps: f64,
    pub avg_down_bps: f64,
    /// The busiest 100 ms bucket of each direction, as bytes per second, and when it was.
    pub peak_up_bps: u64,
    pub peak_up_at: Option<u64>,
    pub peak_down_bps: u64,
    pub peak_down_at: Option<u64>,
    /// Time with any traffic (active buckets x 100 ms).
    pub active_ms: u64,
}

/// A row of a top list: a remote (for one device) or a device (for all).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct TopEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<Device>,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Memory and contents of the history.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Memory {
    pub cap_bytes: usize,
    /// Heap bytes of every pair's series plus an estimate of each pair's fixed cost.
    pub history_bytes: usize,
    pub buckets: u64,
    pub pairs: usize,
    pub devices: usize,
    /// `history_bytes / buckets`.
    pub bytes_per_bucket: f64,
    /// The history is complete from here (Unix ms): later than 24 h ago when the cap evicted older buckets.
    pub complete_from_ms: u64,
}

pub struct Traffic {
    pub(super) cfg: TrafficConfig,
    hosts: HashMap<Ipv4Addr, Mac>,
    pub(super) devices: Vec<DeviceState>,
    pub(super) device_ids: HashMap<Device, u32>,
    pub(super) pairs: Vec<Option<Pair>>,
    free_pairs: Vec<u32>,
    pair_ids: HashMap<(u32, Ipv4Addr), u32>,
    /// The bucket being accumulated.
    open: Option<u64>,
    active_pairs: Vec<u32>,
    active_devices: Vec<u32>,
    backlog: VecDeque<Arc<Tick>>,
    fresh: Vec<Arc<Tick>>,
    /// Buckets appended per minute of their time, to find how far back to evict to meet the cap.
    per_minute: VecDeque<(u64, u64)>,
    memory: Memory,
    /// Buckets before this one have been evicted (or aged out).
    pub(super) complete_from: u64,
    pub(super) stats: Stats,
}

impl Traffic {
    pub fn new(cfg: TrafficConfig) -> Traffic {
        let memory = Memory { cap_bytes: cfg.memory_bytes, ..Memory::default() };
        Traffic {
            cfg,
            hosts: HashMap::new(),
            devices: Vec::new(),
            device_ids: HashMap::new(),
            pairs: Vec::new(),
            free_pairs: Vec::new(),
            pair_ids: HashMap::new(),
            open: None,
            active_pairs: Vec::new(),
            active_devices: Vec::new(),
            backlog: VecDeque::with_capacity(BACKLOG_TICKS),
            fresh: Vec::new(),
            per_minute: VecDeque::new(),
            memory,
            complete_from: 0,
            stats: Stats::default(),
        }
    }

    // --- hosts ------------------------------------------------------------------------------------------------

    /// `ip` belongs to `mac` now (a lease or a static host).
    pub fn set_host(&mut self, ip: Ipv4Addr, mac: Mac) {
        self.hosts.insert(ip, mac);
    }

    /// Nobody holds `ip` any more: its next packets count under the address.
    pub fn remove_host(&mut self, ip: Ipv4Addr) {
        self.hosts.remove(&ip);
    }

    /// The whole hosts table, replacing what was known.
    pub fn set_hosts(&mut self, all: impl IntoIterator<Item = (Ipv4Addr, Mac)>) {
        self.hosts = all.into_iter().collect();
    }

    pub fn device_of(&self, ip: Ipv4Addr) -> Device {
        self.hosts.get(&ip).map_or(Device::Ip(IpAddr::V4(ip)), |m| Device::Mac(*m))
    }

    // --- records in -------------------------------------------------------------------------------------------

    /// One record from the packet path.
    pub fn ingest(&mut self, r: &PacketRecord) {
        self.stats.records += 1;
        match r.verdict {
            Verdict::Translated => {}
            Verdict::Drop(reason) => {
                let d = self.stats.dropped.entry(reason).or_default();
                d.0 += u64::from(r.segments.max(1));
                d.1 += u64::from(r.bytes);
                return;
            }
            Verdict::Accept | Verdict::Local => {
                self.stats.local += 1;
                return;
            }
        }
        let bucket = r.at_ms / BUCKET_MS;
        self.roll_to(bucket);
        if self.open.is_some_and(|o| bucket < o) {
            self.stats.late += 1;
        }
        let (bytes, packets) = (u64::from(r.bytes), u32::from(r.segments.max(1)));
        self.account(r.device, r.remote, r.way, bytes, packets, r.at_ms);
        if r.hairpin {
            // The receiver's side of a packet between two LAN hosts through the WAN address.
            let other = match r.way {
                Way::Up => Way::Down,
                Way::Down => Way::Up,
            };
            self.account(r.remote, r.device, other, bytes, packets, r.at_ms);
        }
    }

    fn device_index(&mut self, id: Device, now_ms: u64) -> u32 {
        if let Some(&i) = self.device_ids.get(&id) {
            return i;
        }
        let i = self.devices.len() as u32;
        self.devices.push(DeviceState::new(id, now_ms));
        self.device_ids.insert(id, i);
        i
    }

    pub(super) fn pair_index(&mut self, device: u32, remote: Ipv4Addr) -> u32 {
        if let Some(&p) = self.pair_ids.get(&(device, remote)) {
            return p;
        }
        let pair = Pair { device, remote, series: Series::new(), acc: [Flow::ZERO; 2], active: false };
        let p = match self.free_pairs.pop() {
            Some(p) => {
                self.pairs[p as usize] = Some(pair);
                p
            }
            None => {
                self.pairs.push(Some(pair));
                (self.pairs.len() - 1) as u32
            }
        };
        self.pair_ids.insert((device, remote), p);
        self.devices[device as usize].pairs.push(p);
        p
    }

    fn account(&mut self, device_ip: Ipv4Addr, remote: Ipv4Addr, way: Way, bytes: u64, packets: u32, at_ms: u64) {
        let id = self.device_of(device_ip);
        let d = self.device_index(id, at_ms);
        let p = self.pair_index(d, remote);
        let dir = usize::from(way == Way::Down);
        let dev = &mut self.devices[d as usize];
        dev.ip = Some(device_ip);
        dev.last_seen_ms = dev.last_seen_ms.max(at_ms);
        dev.acc[dir].add(bytes, packets);
        if !dev.active {
            dev.active = true;
            self.active_devices.push(d);
        }
        let pair = self.pairs[p as usize].as_mut().expect("indexed pairs exist");
        pair.acc[dir].add(bytes, packets);
        if !pair.active {
            pair.active = true;
            self.active_pairs.push(p);
        }
    }

    // --- time -------------------------------------------------------------------------------------------------

    /// The clock is at `now_ms`: closes the open bucket once it has ended.
    pub fn advance(&mut self, now_ms: u64) {
        self.roll_to(now_ms / BUCKET_MS);
    }

    fn roll_to(&mut self, bucket: u64) {
        let Some(open) = self.open else {
            self.open = Some(bucket);
            return;
        };
        if bucket <= open {
            return;
        }
        self.close(open);
        // Every bucket in between was empty: one tick each, up to a minute's worth.
        let gap = bucket - open - 1;
        for b in bucket - gap.min(MAX_EMPTY_TICKS)..bucket {
            self.emit(Tick { at_ms: b * BUCKET_MS, ..Tick::default() });
        }
        self.open = Some(bucket);
    }

    fn close(&mut self, bucket: u64) {
        let mut tick = Tick { at_ms: bucket * BUCKET_MS, devices: Vec::new(), remotes: Vec::new() };
        let n = self.active_pairs.len() as u64;
        for &p in &self.active_pairs {
            let pair = self.pairs[p as usize].as_mut().expect("active pairs exist");
            pair.series.push(bucket, pair.acc[0], pair.acc[1]);
            tick.remotes.push(RemoteTick {
                device: self.devices[pair.device as usize].id,
                remote: pair.remote,
                up: pair.acc[0].bytes,
                down: pair.acc[1].bytes,
            });
            pair.acc = [Flow::ZERO; 2];
            pair.active = false;
        }
        self.active_pairs.clear();
        if n > 0 {
            let minute = bucket * BUCKET_MS / MINUTE_MS;
            match self.per_minute.back_mut() {
                Some((m, c)) if *m == minute => *c += n,
                _ => self.per_minute.push_back((minute, n)),
            }
            self.memory.buckets += n;
        }
        let (minute, hour) = (bucket * BUCKET_MS / MINUTE_MS, bucket * BUCKET_MS / HOUR_MS);
        for &d in &self.active_devices {
            let dev = &mut self.devices[d as usize];
            let acc = dev.acc;
            tick.devices.push(DeviceTick { device: dev.id, up: acc[0].bytes, down: acc[1].bytes });
            if dev.recent.len() >= 10 {
                dev.recent.pop_front();
            }
            dev.recent.push_back((bucket, acc));
            add_to(&mut dev.minutes, minute, &acc);
            add_to(&mut dev.hours, hour, &acc);
            dev.total.add(&acc);
            dev.acc = [Flow::ZERO; 2];
            dev.active = false;
        }
        self.active_devices.clear();
        self.emit(tick);
    }

    fn emit(&mut self, tick: Tick) {
        let t = Arc::new(tick);
        if self.backlog.len() >= BACKLOG_TICKS {
            self.backlog.pop_front();
        }
        self.backlog.push_back(t.clone());
        self.fresh.push(t);
        self.stats.ticks += 1;
    }

    /// Ticks closed since the last call, oldest first (the shell broadcasts them).
    pub fn take_ticks(&mut self) -> Vec<Arc<Tick>> {
        std::mem::take(&mut self.fresh)
    }

    /// The last minute of ticks, for a new subscriber.
    pub fn backlog(&self) -> Vec<Arc<Tick>> {
        self.backlog.iter().cloned().collect()
    }

    /// Once a second or so: ages out what is older than 24 h (90 days for hourly totals), keeps the history under
    /// its memory cap (oldest buckets first), and recounts the memory.
    pub fn maintain(&mut self, now_ms: u64) {
        let age_cut = now_ms.saturating_sub(HISTORY_MS) / BUCKET_MS;
        if age_cut > self.complete_from {
            let t = self.trim_all(age_cut);
            self.stats.expired_buckets += t;
        }
        let long_cut = now_ms.saturating_sub(LONG_MS) / HOUR_MS;
        let minute_cut = now_ms.saturating_sub(HISTORY_MS) / MINUTE_MS;
        for d in &mut self.devices {
            while d.hours.front().is_some_and(|(h, _)| *h < long_cut) {
                d.hours.pop_front();
            }
            while d.minutes.front().is_some_and(|(m, _)| *m < minute_cut) {
                d.minutes.pop_front();
            }
        }
        self.recount();
        // Over the cap: estimate from the buckets per minute how far back to cut to get to 90% of it; repeat if the
        // estimate fell short (a minute at a time at least).
        let mut rounds = 0;
        while self.memory.history_bytes > self.cfg.memory_bytes && rounds < 64 {
            rounds += 1;
            let per_bucket = self.memory.bytes_per_bucket.max(1.0);
            let fixed = self.memory.pairs * PAIR_OVERHEAD;
            let budget = (self.cfg.memory_bytes as f64 * 0.9 - fixed as f64).max(0.0);
            let keep = (budget / per_bucket) as u64;
            let mut kept = 0u64;
            let mut cut_minute = self.per_minute.back().map_or(0, |&(m, _)| m + 1);
            for &(m, n) in self.per_minute.iter().rev() {
                if kept + n > keep {
                    break;
                }
                kept += n;
                cut_minute = m;
            }
            let oldest = self.per_minute.front().map_or(0, |&(m, _)| m);
            let cut_minute = cut_minute.max(oldest + 1);
            let cut = cut_minute * MINUTE_MS / BUCKET_MS;
            let t = self.trim_all(cut);
            self.stats.evicted_buckets += t;
            self.recount();
            if t == 0 && self.per_minute.is_empty() {
                break;
            }
        }
    }

    /// Removes every bucket before `cut` from every pair; returns how many.
    fn trim_all(&mut self, cut: u64) -> u64 {
        let mut n = 0;
        let mut emptied = Vec::new();
        for (i, slot) in self.pairs.iter_mut().enumerate() {
            if let Some(p) = slot {
                n += p.series.trim_before(cut).buckets;
                if p.series.is_empty() && !p.active {
                    emptied.push(i as u32);
                }
            }
        }
        for p in emptied {
            self.remove_pair(p);
        }
        let minute = cut * BUCKET_MS / MINUTE_MS;
        while self.per_minute.front().is_some_and(|&(m, _)| m < minute) {
            self.per_minute.pop_front();
        }
        self.complete_from = self.complete_from.max(cut);
        n
    }

    fn remove_pair(&mut self, p: u32) {
        if let Some(pair) = self.pairs[p as usize].take() {
            self.pair_ids.remove(&(pair.device, pair.remote));
            self.devices[pair.device as usize].pairs.retain(|&x| x != p);
            self.free_pairs.push(p);
        }
    }

    fn recount(&mut self) {
        let (mut bytes, mut buckets, mut pairs) = (0usize, 0u64, 0usize);
        for p in self.pairs.iter().flatten() {
            bytes += p.series.heap_bytes() + PAIR_OVERHEAD;
            buckets += p.series.buckets();
            pairs += 1;
        }
        self.memory.history_bytes = bytes;
        self.memory.buckets = buckets;
        self.memory.pairs = pairs;
        self.memory.devices = self.devices.len();
        self.memory.bytes_per_bucket = if buckets == 0 { 0.0 } else { bytes as f64 / buckets as f64 };
        self.memory.complete_from_ms = self.complete_from * BUCKET_MS;
    }

    /// Memory and contents as of the last [`Traffic::maintain`].
    pub fn memory(&self) -> Memory {
        self.memory.clone()
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The core's counters in the program's one shape.
    pub fn counters(&self) -> Counters {
        let s = &self.stats;
        let m = &self.memory;
        let mut c = Counters::new();
        c.counter("records", s.records)
            .counter("late_records", s.late)
            .counter("local_records", s.local)
            .counter("ticks", s.ticks)
            .counter("evicted_buckets", s.evicted_buckets)
            .counter("expired_buckets", s.expired_buckets)
            .gauge("history_bytes", m.history_bytes as u64)
            .gauge("history_cap_bytes", m.cap_bytes as u64)
            .gauge("buckets", m.buckets)
            .gauge("pairs", m.pairs as u64)
            .gauge("devices", m.devices as u64)
            .gauge("complete_from_ms", m.complete_from_ms);
        let mut drops: Vec<_> = s.dropped.iter().collect();
        drops.sort_by_key(|(r, _)| r.as_str());
        for (r, (packets, bytes)) in drops {
            c.labelled("dropped_packets", "reason", r.as_str(), *packets);
            c.labelled("dropped_bytes", "reason", r.as_str(), *bytes);
        }
        c
    }

    // --- queries ----------------------------------------------------------------------------------------------

    fn selected(&self, sel: &Select) -> Vec<&Pair> {
        let matches = |p: &&Pair| sel.remote.is_none_or(|r| p.remote == r);
        match sel.device {
            Some(d) => match self.device_ids.get(&d) {
                Some(&i) => self.devices[i as usize]
                    .pairs
                    .iter()
                    .filter_map(|&p| self.pairs[p as usize].as_ref())
                    .filter(matches)
                    .collect(),
                None => Vec::new(),
            },
            None => self.pairs.iter().flatten().filter(matches).collect(),
        }
    }

    /// Calls `f(bucket, up, down)` for every active bucket of the selected pairs that overlaps `[from_ms, to_ms)`
    /// (the one holding `from_ms` too), the open bucket included (pair by pair, so not in time order).
    fn each_bucket(&self, sel: &Select, from_ms: u64, to_ms: u64, mut f: impl FnMut(u64, &Pair, Flow, Flow)) {
        let (from, to) = (from_ms / BUCKET_MS, to_ms.div_ceil(BUCKET_MS));
        for p in self.selected(sel) {
            for b in p.series.range(from, to) {
                f(b.at, p, b.up, b.down);
            }
            if let Some(open) = self.open
                && p.active
                && (from..to).contains(&open)
            {
                f(open, p, p.acc[0], p.acc[1]);
            }
        }
    }

    /// Bytes `[up, down]` per step of `step_ms` (a multiple of 100) from `from_ms` (a multiple of 100), one entry
    /// per step, `points` of them.
    pub fn series(&self, sel: &Select, from_ms: u64, step_ms: u64, points: usize) -> Vec<[u64; 2]> {
        let mut out = vec![[0u64; 2]; points];
        let step = step_ms.max(BUCKET_MS);
        let to_ms = from_ms.saturating_add(step.saturating_mul(points as u64));
        self.each_bucket(sel, from_ms, to_ms, |at, _, up, down| {
            let i = ((at * BUCKET_MS).saturating_sub(from_ms) / step) as usize;
            if let Some(slot) = out.get_mut(i) {
                slot[0] += up.bytes;
                slot[1] += down.bytes;
            }
        });
        out
    }

    /// Totals, rates, peak and active time of the selected pairs in `[from_ms, to_ms)` (at most a day and an hour
    /// of 100 ms buckets are summed per query: the caller bounds the range).
    pub fn range_stats(&self, sel: &Select, from_ms: u64, to_ms: u64) -> RangeStats {
        let from = from_ms / BUCKET_MS;
        let n = (to_ms.div_ceil(BUCKET_MS).saturating_sub(from)) as usize;
        let mut dense = vec![[0u64; 2]; n];
        let mut totals = Totals::default();
        self.each_bucket(sel, from_ms, to_ms, |at, _, up, down| {
            totals.add(&[up, down]);
            if let Some(slot) = dense.get_mut((at - from) as usize) {
                slot[0] += up.bytes;
                slot[1] += down.bytes;
            }
        });
        let secs = (to_ms.saturating_sub(from_ms)) as f64 / 1000.0;
        let mut s = RangeStats { from: from_ms, to: to_ms, totals, ..RangeStats::default() };
        if secs > 0.0 {
            s.avg_up_bps = totals.up_bytes as f64 / secs;
            s.avg_down_bps = totals.down_bytes as f64 / secs;
        }
        for (i, v) in dense.iter().enumerate() {
            let at = (from + i as u64) * BUCKET_MS;
            if v[0] > 0 || v[1] > 0 {
                s.active_ms += BUCKET_MS;
            }
            if v[0] * 10 > s.peak_up_bps {
                s.peak_up_bps = v[0] * 10;
                s.peak_up_at = Some(at);
            }
            if v[1] * 10 > s.peak_down_bps {
                s.peak_down_bps = v[1] * 10;
                s.peak_down_at = Some(at);
            }
        }
        s
    }

    /// For one device: its remotes by bytes in `[from_ms, to_ms)`; for all (`device: None`): the devices. At most
    /// `limit` rows, the busiest first.
    pub fn top(&self, device: Option<Device>, from_ms: u64, to_ms: u64, limit: usize) -> Vec<TopEntry> {
        let sel = Select { device, remote: None };
        let mut by: HashMap<(u32, Option<Ipv4Addr>), Totals> = HashMap::new();
        let mut add = |from_ms: u64, to_ms: u64| {
            self.each_bucket(&sel, from_ms, to_ms, |_, p, up, down| {
                let key = match device {
                    Some(_) => (p.device, Some(p.remote)),
                    None => (p.device, None),
                };
                by.entry(key).or_default().add(&[up, down]);
            })
        };
        // For all devices, the whole minutes of the range come from the devices' per-minute totals (decoding every
        // pair's day took ~240 ms at 10,000 pairs, on the thread that drains the rings); only the edges, and the
        // minute still being filled, are read from the buckets.
        let (fb, tb) = (from_ms / BUCKET_MS, to_ms.div_ceil(BUCKET_MS));
        let m0 = (fb * BUCKET_MS).div_ceil(MINUTE_MS);
        let open_minute = self.open.map_or(u64::MAX, |o| o * BUCKET_MS / MINUTE_MS);
        let m1 = (tb * BUCKET_MS / MINUTE_MS).min(open_minute);
        if device.is_none() && m1 > m0 {
            add(fb * BUCKET_MS, m0 * MINUTE_MS);
            add(m1 * MINUTE_MS, tb * BUCKET_MS);
            for (i, d) in self.devices.iter().enumerate() {
                for (_, v) in d.minutes.iter().filter(|(m, _)| (m0..m1).contains(m)) {
                    by.entry((i as u32, None)).or_default().add(v);
                }
            }
        } else {
            add(from_ms, to_ms);
        }
        let mut rows: Vec<TopEntry> = by
            .into_iter()
            .map(|((d, remote), totals)| TopEntry {
                remote,
                device: remote.is_none().then(|| self.devices[d as usize].id),
                totals,
            })
            .collect();
        rows.sort_by(|a, b| b.totals.bytes().cmp(&a.totals.bytes()).then_with(|| a.remote.cmp(&b.remote)));
        rows.truncate(limit);
        rows
    }

    /// The remotes of every device together, busiest first (the network page's top remotes). Reads every
    /// pair's buckets of the range: fine for a home's pairs, a cost that grows with them (no per-remote totals).
    pub fn top_remotes(&self, from_ms: u64, to_ms: u64, limit: usize) -> Vec<TopEntry> {
        let sel = Select { device: None, remote: None };
        let mut by: HashMap<Ipv4Addr, Totals> = HashMap::new();
        self.each_bucket(&sel, from_ms, to_ms, |_, p, up, down| by.entry(p.remote).or_default().add(&[up, down]));
        let mut rows: Vec<TopEntry> =
            by.into_iter().map(|(remote, totals)| TopEntry { remote: Some(remote), device: None, totals }).collect();
        rows.sort_by(|a, b| b.totals.bytes().cmp(&a.totals.bytes()).then_with(|| a.remote.cmp(&b.remote)));
        rows.truncate(limit);
        rows
    }

    /// Every device seen, with its recent totals (as of `now_ms`).
    pub fn devices(&self, now_ms: u64) -> Vec<DeviceSummary> {
        let bucket = now_ms / BUCKET_MS;
        let minute = now_ms / MINUTE_MS;
        self.devices
            .iter()
            .map(|d| {
                let second = d
                    .recent
                    .iter()
                    .filter(|(b, _)| *b + 10 >= bucket)
                    .fold([0, 0], |a, (_, v)| [a[0] + v[0].bytes, a[1] + v[1].bytes]);
                DeviceSummary {
                    device: d.id,
                    ip: d.ip,
                    first_seen_ms: d.first_seen_ms,
                    last_seen_ms: d.last_seen_ms,
                    last_second: second,
                    last_hour: sum_since(&d.minutes, minute.saturating_sub(59)),
                    last_day: sum_since(&d.minutes, minute.saturating_sub(24 * 60 - 1)),
                    total: d.total,
                }
            })
            .collect()
    }

    /// Hourly (`step_ms` 3,600,000) or daily (86,400,000, UTC days) totals of one device or all, `[from, to)`:
    /// `(start ms, [up, down])` for every step with traffic.
    pub fn usage(&self, device: Option<Device>, from_ms: u64, to_ms: u64, step_ms: u64) -> Vec<(u64, [u64; 2])> {
        let mut by: std::collections::BTreeMap<u64, [u64; 2]> = std::collections::BTreeMap::new();
        let step = step_ms.max(HOUR_MS);
        let devices: Vec<&DeviceState> = match device {
            Some(id) => self.device_ids.get(&id).map(|&i| &self.devices[i as usize]).into_iter().collect(),
            None => self.devices.iter().collect(),
        };
        for d in devices {
            for (h, v) in &d.hours {
                let at = h * HOUR_MS;
                if at < from_ms || at >= to_ms {
                    continue;
                }
                let e = by.entry(at / step * step).or_default();
                e[0] += v[0].bytes;
                e[1] += v[1].bytes;
            }
        }
        by.into_iter().collect()
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
