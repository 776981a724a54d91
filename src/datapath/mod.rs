//! The packet path: NFQUEUE sockets, batched receive and verdicts, one packet loop per queue.
//!
//! Each queue has a thread of its own: receive a batch, translate every packet in place under the one lock of
//! the shared NAT table, then queue the verdicts and send them with one `sendmsg`, with no lock held across a
//! system call. The rules spread flows over the queues by port, every packet of a flow through the same queue
//! (`net::firewall`), so one host's flows use every core without reordering; the table is shared because a
//! reply can arrive on another queue than its request. Nothing here allocates or logs per
//! packet.
//!
//! Each packet's record (`nat::record`) goes into its queue's ring (`ring`, SPSC, never waits) for readers that
//! subscribe through the [`NatHandle`]. The handle is also how the rest of the program reaches the NAT without
//! waiting for a batch: counters are read from atomics the loops publish after every batch (no lock), a WAN
//! address change and a paged view take the table's lock briefly. The first queue's loop also expires old entries
//! about once a second (it wakes at least every 200 ms, the receive timeout).

pub mod nfqueue;
pub mod ring;
pub mod tap;

use crate::counters::Counters;
use crate::nat::{Direction, Nat, PacketMeta, PacketRecord, STATS_LEN, Snapshot, Stats, Verdict};
use crate::net::coalesce::{CoalescePolicy, Coalescer, tight_timer_slack};
use crate::net::firewall::MARK;
use crate::types::Time;
use nfqueue::{
    HOOK_PRE_ROUTING, NF_ACCEPT, NF_DROP, NF_REPEAT, NFQA_SKB_CSUMNOTREADY, NFQA_SKB_GSO, Queue, QueueOptions,
};
use ring::{Producer, Reader, Ring};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tap::{Tap, TapProducer, TapReader};
use tracing::{info, warn};

/// Adaptive batching (`net::coalesce`): above 40,000 small packets per second on a queue, its loop waits up to
/// 200 us (the time half a batch takes to arrive, at most) after a partial batch instead of sleeping on the socket,
/// so that one wake-up, one `recvmmsg` and one verdict `sendmsg` serve many packets. 64-byte UDP through one queue
/// (bench/nat.sh): no waiting 0.190 Mpps; waits of up to 100 us 0.206-0.226; up to 200 us 0.236-0.247 (at ~240k/s
/// half a batch takes ~130 us, so the cap no longer cuts the wait short); up to 300/400 us no better. Big packets
/// (average above 1,500 bytes: TCP with GSO) never wait: their cost is the copies, and a wait only slowed one TCP
/// stream (15.1 -> 11.3 Gbit/s).
const COALESCE: CoalescePolicy = CoalescePolicy {
    batch: nfqueue::BATCH,
    above_per_sec: 40_000,
    max_wait: Duration::from_micros(200),
    max_avg_bytes: 1500,
};

/// Records each queue's ring holds: 65,536 x 32 bytes = 2 MiB per queue, a quarter of a second of the
/// measured peak (~0.24 Mpps of 64-byte UDP on one queue) for a reader that falls behind.
pub const RING_CAPACITY: usize = 1 << 16;

/// Mappings and connections in one [`NatHandle::view`] page by default, and at most.
pub const VIEW_LIMIT: usize = 1000;
pub const VIEW_MAX: usize = 10_000;

/// The NAT as the web UI sees it: counters, and a page of the tables.
#[derive(Debug, Default, serde::Serialize)]
pub struct NatView {
    pub queues: u16,
    pub counters: Counters,
    pub offset: usize,
    pub limit: usize,
    /// `now_ms`, the totals, and this page's `mappings` and `connections`.
    #[serde(flatten)]
    pub tables: Snapshot,
}

pub struct Datapath {
    pub first_queue: u16,
    pub queues: u16,
    /// The WAN interface's index: packets queued before routing arrived from the WAN or (hairpinning) the LAN.
    pub wan_index: u32,
    /// Records per queue ring (rounded up to a power of two); [`RING_CAPACITY`] normally.
    pub ring_capacity: usize,
    /// Bytes of each queue's capture tap (`tap`), 0 for none (capture off), and how much of a packet it copies.
    pub tap_bytes: usize,
    pub tap_snap: tap::Snap,
}

/// What every queue's loop and every handle share.
struct Shared {
    nat: Mutex<Nat>,
    stop: Arc<AtomicBool>,
    wan_index: u32,
    malformed: AtomicU64,
    send_errors: AtomicU64,
    queues: u16,
    /// The NAT's `Stats`, as of the end of the last batch of any queue (`Stats::to_array` order).
    stats: [AtomicU64; STATS_LEN],
    rings: Vec<Ring<PacketRecord>>,
    taps: Vec<Tap>,
    /// Each queue's loop counts its turns here (at least one per receive timeout, 200 ms): the service watchdog
    /// sees a stuck loop as a count that stops.
    beats: Vec<AtomicU64>,
    /// Set on purpose (a test of the watchdog): every loop stops turning, as a stuck one would.
    stalled: AtomicBool,
}

impl Shared {
    fn nat(&self) -> std::sync::MutexGuard<'_, Nat> {
        // A panic on another queue's thread must not take this one down: the table itself stays consistent
        // (every update is a whole insert or remove).
        self.nat.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the NAT's counters into the atomics. Called with the lock held, so that two queues' copies land in
    /// the order they were taken (each counter only grows).
    fn publish(&self, nat: &Nat) {
        for (a, v) in self.stats.iter().zip(nat.stats().to_array()) {
            a.store(v, Ordering::Relaxed);
        }
    }
}

/// The control handle of a running packet path: cheap to clone, never waits for a batch.
#[derive(Clone)]
pub struct NatHandle(Arc<Shared>);

impl NatHandle {
    pub fn queues(&self) -> u16 {
        self.0.queues
    }

    /// The NAT's counters, without its lock: as of the end of the last batch (or expiry run).
    pub fn stats(&self) -> Stats {
        let mut a = [0; STATS_LEN];
        for (v, s) in a.iter_mut().zip(&self.0.stats) {
            *v = s.load(Ordering::Relaxed);
        }
        Stats::from_array(&a)
    }

    /// Every counter of the packet path, without the NAT's lock: the NAT's, malformed queue messages, refused
    /// verdict sends, and records dropped per queue because its ring was full.
    pub fn counters(&self) -> Counters {
        let mut c = self.stats().counters();
        c.counter("queue_malformed", self.0.malformed.load(Ordering::Relaxed))
            .counter("verdict_send_errors", self.0.send_errors.load(Ordering::Relaxed));
        for (q, r) in self.0.rings.iter().enumerate() {
            c.labelled("ring_dropped", "queue", &q.to_string(), r.dropped());
        }
        for (q, t) in self.0.taps.iter().enumerate() {
            c.labelled("capture_tap_dropped", "queue", &q.to_string(), t.dropped());
        }
        c
    }

    /// The WAN link's address changed (see `app::follow_wan_address`): in effect for the next packet.
    pub fn set_wan_ip(&self, ip: std::net::Ipv4Addr) {
        self.0.nat().set_wan_ip(ip);
    }

    /// Replaces the port forwards (the admin's, the config's and the apps' mappings, all pinned): takes the NAT's
    /// lock for a moment, between two batches of a queue.
    pub fn set_forwards(&self, forwards: Vec<crate::ports::PortForward>) {
        self.0.nat().set_forwards(forwards);
    }

    /// Each queue loop's turn count (see `Shared::beats`).
    pub fn beats(&self) -> Vec<u64> {
        self.0.beats.iter().map(|b| b.load(Ordering::Relaxed)).collect()
    }

    /// Stops (or restarts) every queue loop's turning, on purpose: what a stuck packet path looks like, for
    /// testing the service watchdog. Packets wait in the kernel's queues meanwhile (and are dropped when full).
    pub fn stall(&self, on: bool) {
        self.0.stalled.store(on, Ordering::Relaxed);
    }

    /// The WAN address the NAT translates to now.
    pub fn wan_ip(&self) -> std::net::Ipv4Addr {
        self.0.nat().wan_ip()
    }

    /// Counters, and up to `limit` (at most [`VIEW_MAX`]) mappings and connections from `offset` of each table,
    /// copied under the lock in O(limit).
    pub fn view(&self, offset: usize, limit: usize) -> NatView {
        let limit = limit.min(VIEW_MAX);
        let tables = self.0.nat().view(Time::now(), offset, limit);
        NatView { queues: self.0.queues, counters: self.counters(), offset, limit, tables }
    }

    /// The reader of queue `queue`'s records (by position, from 0), unless that queue has one already (one
    /// reader per ring; dropping it lets another subscribe). Records are written only while a reader is attached.
    pub fn records(&self, queue: usize) -> Option<Reader<PacketRecord>> {
        self.0.rings.get(queue)?.subscribe()
    }

    /// The reader of queue `queue`'s capture tap, unless it has one already or capture is off. Packets are
    /// copied only while a reader is attached.
    pub fn tap(&self, queue: usize) -> Option<TapReader> {
        self.0.taps.get(queue)?.subscribe()
    }

    /// Asks every queue's loop to end (within the receive timeout).
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// The bound queues, ready to run ([`Loops::run`]).
pub struct Loops {
    shared: Arc<Shared>,
    queues: Vec<(nfqueue::Queue, Producer<PacketRecord>, Option<TapProducer>)>,
}

/// A packet's verdict, decided under the lock and sent after it.
#[derive(Clone, Copy)]
enum Decision {
    Payload(u32, Option<u32>),
    Plain(u32),
}

impl Datapath {
    /// Binds every queue in the calling thread's network namespace (an error here means nothing started) and
    /// returns the control handle and the loops, which run once [`Loops::run`] is called, until `stop` is set.
    pub fn open(&self, nat: Nat, stop: Arc<AtomicBool>) -> std::io::Result<(NatHandle, Loops)> {
        let mut queues = Vec::new();
        let mut rings = Vec::new();
        let mut taps = Vec::new();
        for n in self.first_queue..self.first_queue + self.queues.max(1) {
            let (producer, r) = ring::ring(self.ring_capacity);
            let tap = (self.tap_bytes > 0).then(|| tap::tap(self.tap_bytes, self.tap_snap));
            let tap = tap.map(|(p, t)| {
                taps.push(t);
                p
            });
            queues.push((Queue::open(n, &QueueOptions::default())?, producer, tap));
            rings.push(r);
        }
        let shared = Arc::new(Shared {
            nat: Mutex::new(nat),
            stop,
            wan_index: self.wan_index,
            malformed: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            queues: queues.len() as u16,
            stats: std::array::from_fn(|_| AtomicU64::new(0)),
            beats: queues.iter().map(|_| AtomicU64::new(0)).collect(),
            stalled: AtomicBool::new(false),
            rings,
            taps,
        });
        shared.publish(&shared.nat());
        info!(queues = queues.len(), first = self.first_queue, "NAT packet path ready");
        Ok((NatHandle(shared.clone()), Loops { shared, queues }))
    }
}

impl Loops {
    /// Runs one loop per queue, the first on the calling thread, until `stop` is set or a queue fails.
    pub fn run(self) -> std::io::Result<()> {
        let Loops { shared, mut queues } = self;
        let shared = &*shared;
        let (first, first_ring, first_tap) = queues.remove(0);
        let result = std::thread::scope(|s| {
            let mut others = Vec::new();
            for (i, (q, r, t)) in queues.into_iter().enumerate() {
                let name = format!("nat-q{}", q.number());
                let beat = &shared.beats[i + 1];
                others.push(
                    std::thread::Builder::new()
                        .name(name)
                        .spawn_scoped(s, move || run_queue(q, r, t, shared, beat, false)),
                );
            }
            let mine = run_queue(first, first_ring, first_tap, shared, &shared.beats[0], true);
            if mine.is_err() {
                // One queue failing stops them all: the rules would keep sending packets to a dead queue.
                shared.stop.store(true, Ordering::Relaxed);
            }
            let mut result = mine;
            for t in others {
                let r = match t {
                    Ok(handle) => handle.join().unwrap_or_else(|_| Err(std::io::Error::other("a NAT thread panicked"))),
                    Err(e) => Err(e),
                };
                if result.is_ok() {
                    result = r;
                }
            }
            result
        });
        info!("NAT packet path stopped");
        result
    }
}

/// One queue's loop. The first queue's (`expires`) also expires old mappings about once a second.
fn run_queue(
    mut q: Queue,
    mut records: Producer<PacketRecord>,
    mut tap: Option<TapProducer>,
    shared: &Shared,
    beat: &AtomicU64,
    expires: bool,
) -> std::io::Result<()> {
    let mut decisions: Vec<Decision> = Vec::with_capacity(64);
    let mut coalescer = Coalescer::new(COALESCE);
    tight_timer_slack();
    let mut last_expire = Time::ZERO;
    let mut malformed_seen = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.stalled.load(Ordering::Relaxed) {
            std::thread::sleep(std::time::Duration::from_millis(50));
            continue;
        }
        beat.fetch_add(1, Ordering::Relaxed);
        let n = match q.recv() {
            Ok(n) => n,
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        let now = Time::now();
        decisions.clear();
        let mut bytes = 0;
        if n > 0 {
            let recording = records.begin();
            let tapping = tap.as_mut().is_some_and(|t| t.begin());
            // One capture timestamp per batch: every packet of it had arrived by the receive, and a clock read per
            // packet would say only when it was processed.
            let now_us = if tapping { Time::now_us() } else { 0 };
            let mut nat = shared.nat();
            for i in 0..n {
                let p = q.packet(i);
                let before_routing = p.hook == HOOK_PRE_ROUTING;
                let direction = if before_routing && p.indev == shared.wan_index {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                };
                bytes += p.payload.len();
                let meta = PacketMeta {
                    direction,
                    csum_partial: p.skb_info & NFQA_SKB_CSUMNOTREADY != 0,
                    gso: p.skb_info & NFQA_SKB_GSO != 0,
                };
                if tapping && direction == Direction::Outbound {
                    // The device's view of its own packet: before the NAT rewrites its source.
                    tap.as_mut().map(|t| t.stage(p.payload));
                }
                let (verdict, record) = nat.translate(p.payload, meta, now);
                if recording {
                    records.push(record);
                }
                if tapping && let Some(t) = tap.as_mut() {
                    capture_copy(t, direction, verdict, &record, p.payload, now_us);
                }
                decisions.push(match verdict {
                    // Before routing, the translated packet goes round the hook again with our mark, which the
                    // rules exempt from conntrack; after routing it simply continues.
                    Verdict::Translated if before_routing => Decision::Payload(NF_REPEAT, Some(MARK)),
                    Verdict::Translated => Decision::Payload(NF_ACCEPT, None),
                    Verdict::Accept | Verdict::Local => Decision::Plain(NF_ACCEPT),
                    Verdict::Drop(_) => Decision::Plain(NF_DROP),
                });
            }
            shared.publish(&nat);
            drop(nat);
            records.publish();
            if let Some(t) = tap.as_mut() {
                t.publish();
            }
        }
        let mut sent = Ok(());
        for (i, d) in decisions.iter().enumerate() {
            let r = match *d {
                Decision::Payload(v, mark) => q.verdict_with_payload(i, v, mark),
                Decision::Plain(v) => {
                    let id = q.packet(i).id;
                    q.verdict(id, v)
                }
            };
            sent = sent.and(r);
        }
        if let Err(e) = sent.and(q.flush())
            && shared.send_errors.fetch_add(1, Ordering::Relaxed) == 0
        {
            warn!("NFQUEUE verdicts could not be sent (counted; logged once): {e}");
        }
        if q.malformed != malformed_seen {
            shared.malformed.fetch_add(q.malformed - malformed_seen, Ordering::Relaxed);
            malformed_seen = q.malformed;
        }
        let wait = coalescer.after_batch(n, bytes);
        if !wait.is_zero() {
            // Under heavy load only (see COALESCE): a short nap, so that the next receive brings a fuller batch.
            std::thread::sleep(wait);
        }
        if expires && now >= last_expire.plus_ms(1000) {
            last_expire = now;
            let mut nat = shared.nat();
            nat.expire(now);
            shared.publish(&nat);
        }
    }
    Ok(())
}

/// After `translate`: keeps the staged copy of an outbound packet as its sender's, and copies a packet that
/// reached a device (inbound, or hairpinned to another device) as it arrives there, translated. Packets to the
/// router itself are nobody's.
#[inline]
fn capture_copy(
    t: &mut TapProducer,
    direction: Direction,
    verdict: Verdict,
    record: &PacketRecord,
    packet: &[u8],
    now: u64,
) {
    if matches!(verdict, Verdict::Local) {
        return;
    }
    match direction {
        Direction::Outbound => {
            t.commit(now, record.device, true);
            if record.hairpin && matches!(verdict, Verdict::Translated) {
                t.copy(packet, now, record.remote, false);
            }
        }
        Direction::Inbound if matches!(verdict, Verdict::Translated) => t.copy(packet, now, record.device, false),
        Direction::Inbound => {}
    }
}
