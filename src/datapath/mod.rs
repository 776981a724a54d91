//! The packet path: NFQUEUE sockets, batched receive and verdicts, one packet loop per queue.
//!
//! Each queue has a thread of its own: receive a batch, translate every packet in place under the one lock of
//! the shared NAT table, then queue the verdicts and send them with one `sendmsg`, with no lock held across a
//! system call. The rules spread flows over the queues by port, every packet of a flow through the same queue
//! (`net::firewall`), so one host's flows use every core without reordering; the table is shared because a
//! reply can arrive on another queue than its request. Nothing here allocates or logs per
//! packet. The UI reads the NAT tables by sending a request that the first queue's loop answers between batches.

pub mod nfqueue;

use crate::nat::{Direction, Nat, PacketMeta, Snapshot, Verdict};
use crate::net::coalesce::{CoalescePolicy, Coalescer, tight_timer_slack};
use crate::net::firewall::MARK;
use nfqueue::{
    HOOK_PRE_ROUTING, NF_ACCEPT, NF_DROP, NF_REPEAT, NFQA_SKB_CSUMNOTREADY, NFQA_SKB_GSO, Queue, QueueOptions,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
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

/// What the rest of the program can ask the packet loop.
pub enum Request {
    /// The web UI's view of the NAT.
    Snapshot(tokio::sync::oneshot::Sender<NatView>),
    /// The WAN link's address changed (see `app::follow_wan_address`); answered once the NAT uses it.
    SetWanIp(std::net::Ipv4Addr, tokio::sync::oneshot::Sender<()>),
}

#[derive(Debug, Default, serde::Serialize)]
pub struct NatView {
    pub snapshot: Option<Snapshot>,
    pub stats: serde_json::Value,
    pub queues: u16,
    /// Queue messages that could not be parsed, over all queues.
    pub queue_malformed: u64,
    /// Verdict sends the kernel refused, over all queues.
    pub verdict_send_errors: u64,
}

pub struct Datapath {
    pub first_queue: u16,
    pub queues: u16,
    /// The WAN interface's index: packets queued before routing arrived from the WAN or (hairpinning) the LAN.
    pub wan_index: u32,
}

/// What every queue's loop shares.
struct Shared {
    nat: Mutex<Nat>,
    stop: Arc<AtomicBool>,
    wan_index: u32,
    start: Instant,
    malformed: AtomicU64,
    send_errors: AtomicU64,
    queues: u16,
}

impl Shared {
    fn nat(&self) -> std::sync::MutexGuard<'_, Nat> {
        // A panic on another queue's thread must not take this one down: the table itself stays consistent
        // (every update is a whole insert or remove).
        self.nat.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A packet's verdict, decided under the lock and sent after it.
#[derive(Clone, Copy)]
enum Decision {
    Payload(u32, Option<u32>),
    Plain(u32),
}

impl Datapath {
    /// Binds every queue (an error here means nothing started), then runs one loop per queue, the first on the
    /// calling thread, until `stop` is set.
    pub fn run(&self, nat: Nat, stop: Arc<AtomicBool>, requests: mpsc::Receiver<Request>) -> std::io::Result<()> {
        let mut queues = Vec::new();
        for n in self.first_queue..self.first_queue + self.queues.max(1) {
            queues.push(Queue::open(n, &QueueOptions::default())?);
        }
        let shared = Shared {
            nat: Mutex::new(nat),
            stop,
            wan_index: self.wan_index,
            start: Instant::now(),
            malformed: AtomicU64::new(0),
            send_errors: AtomicU64::new(0),
            queues: queues.len() as u16,
        };
        info!(queues = queues.len(), first = self.first_queue, "NAT packet path ready");
        let first = queues.remove(0);
        let result = std::thread::scope(|s| {
            let mut others = Vec::new();
            for q in queues {
                let name = format!("nat-q{}", q.number());
                let shared = &shared;
                others.push(std::thread::Builder::new().name(name).spawn_scoped(s, move || run_queue(q, shared, None)));
            }
            let mine = run_queue(first, &shared, Some(&requests));
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

/// One queue's loop. The loop given `requests` also expires old mappings and answers the UI.
fn run_queue(mut q: Queue, shared: &Shared, requests: Option<&mpsc::Receiver<Request>>) -> std::io::Result<()> {
    let mut decisions: Vec<Decision> = Vec::with_capacity(64);
    let mut coalescer = Coalescer::new(COALESCE);
    tight_timer_slack();
    let mut last_expire = 0u64;
    let mut malformed_seen = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match q.recv() {
            Ok(n) => n,
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(e);
            }
        };
        let now = shared.start.elapsed().as_millis() as u64;
        decisions.clear();
        let mut bytes = 0;
        if n > 0 {
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
                decisions.push(match nat.translate(p.payload, meta, now) {
                    // Before routing, the translated packet goes round the hook again with our mark, which the
                    // rules exempt from conntrack; after routing it simply continues.
                    Verdict::Translated if before_routing => Decision::Payload(NF_REPEAT, Some(MARK)),
                    Verdict::Translated => Decision::Payload(NF_ACCEPT, None),
                    Verdict::Accept | Verdict::Local => Decision::Plain(NF_ACCEPT),
                    Verdict::Drop(_) => Decision::Plain(NF_DROP),
                });
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
        let Some(requests) = requests else { continue };
        if now >= last_expire + 1000 {
            last_expire = now;
            shared.nat().expire(now);
        }
        while let Ok(req) = requests.try_recv() {
            match req {
                Request::Snapshot(reply) => {
                    let nat = shared.nat();
                    let _ = reply.send(NatView {
                        snapshot: Some(nat.snapshot(now)),
                        stats: serde_json::to_value(nat.stats()).unwrap_or_default(),
                        queues: shared.queues,
                        queue_malformed: shared.malformed.load(Ordering::Relaxed),
                        verdict_send_errors: shared.send_errors.load(Ordering::Relaxed),
                    });
                }
                Request::SetWanIp(ip, done) => {
                    shared.nat().set_wan_ip(ip);
                    let _ = done.send(());
                }
            }
        }
    }
    Ok(())
}
