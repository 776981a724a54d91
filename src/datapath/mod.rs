//! The packet path: NFQUEUE sockets, batched receive and verdicts, the per-queue packet loop.
//!
//! One thread per queue: receive a batch, translate each packet in place, queue its verdict, send all verdicts
//! with one `send`. Nothing here allocates, locks or logs per packet. The UI reads the NAT tables by sending a
//! request that the loop answers between batches.

pub mod nfqueue;

use crate::nat::{Direction, Nat, PacketMeta, Snapshot, Verdict};
use crate::net::firewall::MARK;
use nfqueue::{
    HOOK_PRE_ROUTING, NF_ACCEPT, NF_DROP, NF_REPEAT, NFQA_SKB_CSUMNOTREADY, NFQA_SKB_GSO, Queue, QueueOptions,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;
use tracing::{info, warn};

/// What the web UI can ask the packet loop.
pub enum Request {
    Snapshot(tokio::sync::oneshot::Sender<NatView>),
}

#[derive(Debug, Default, serde::Serialize)]
pub struct NatView {
    pub snapshot: Option<Snapshot>,
    pub stats: serde_json::Value,
    pub queue_malformed: u64,
}

pub struct Datapath {
    pub queue: u16,
    /// The WAN interface's index: packets queued before routing arrived from the WAN or (hairpinning) the LAN.
    pub wan_index: u32,
}

impl Datapath {
    /// Runs the loop on the calling thread until `stop` is set. The queue is bound before this returns an error.
    pub fn run(&self, mut nat: Nat, stop: Arc<AtomicBool>, requests: mpsc::Receiver<Request>) -> std::io::Result<()> {
        let mut q = Queue::open(self.queue, &QueueOptions::default())?;
        info!(queue = self.queue, "NAT packet path ready");
        let start = Instant::now();
        let mut last_expire = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let n = q.recv()?;
            let now = start.elapsed().as_millis() as u64;
            for i in 0..n {
                let p = q.packet(i);
                let (id, before_routing) = (p.id, p.hook == HOOK_PRE_ROUTING);
                let direction =
                    if before_routing && p.indev == self.wan_index { Direction::Inbound } else { Direction::Outbound };
                let meta = PacketMeta {
                    direction,
                    csum_partial: p.skb_info & NFQA_SKB_CSUMNOTREADY != 0,
                    gso: p.skb_info & NFQA_SKB_GSO != 0,
                };
                match nat.translate(p.payload, meta, now) {
                    // Before routing, the translated packet goes round the hook again with our mark, which the
                    // rules exempt from conntrack; after routing it simply continues.
                    Verdict::Translated if before_routing => q.verdict_with_payload(i, NF_REPEAT, Some(MARK)),
                    Verdict::Translated => q.verdict_with_payload(i, NF_ACCEPT, None),
                    Verdict::Accept | Verdict::Local => q.verdict(id, NF_ACCEPT),
                    Verdict::Drop(_) => q.verdict(id, NF_DROP),
                }
            }
            if let Err(e) = q.flush() {
                warn!("NFQUEUE verdicts could not be sent: {e}");
            }
            if now >= last_expire + 1000 {
                last_expire = now;
                nat.expire(now);
            }
            while let Ok(req) = requests.try_recv() {
                match req {
                    Request::Snapshot(reply) => {
                        let _ = reply.send(NatView {
                            snapshot: Some(nat.snapshot(now)),
                            stats: serde_json::to_value(nat.stats()).unwrap_or_default(),
                            queue_malformed: q.malformed,
                        });
                    }
                }
            }
        }
        info!(queue = self.queue, "NAT packet path stopped");
        Ok(())
    }
}
