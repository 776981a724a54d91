//! The capture thread: it drains the packet path's taps and the DNS and DHCP shells' feed (every millisecond
//! while packets flow, backing off to 20 ms when idle) into the devices' rings (`core`), follows the hosts table,
//! and answers the rest of the program through [`CaptureHandle`]: status, snapshots for downloads (a memory copy
//! of one ring; the packet path never waits for it, its taps buffer meanwhile), pause, resume, clear, forget, and
//! the live view's lines for devices someone watches, at most [`LIVE_PER_SEC`] a second each.

use super::core::{CaptureConfig, Captures, Key, Status};
use super::ring::{Direction, Origin, Snapshot};
use super::summary::{self, Line};
use crate::counters::Counters;
use crate::datapath::NatHandle;
use crate::datapath::tap::TapReader;
use crate::hosts::{Change, Hosts, Update};
use crate::types::{Mac, Time};
use anyhow::Result;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Lines of the live view per device and second, at most; the rest are counted in the next line's `skipped`.
pub const LIVE_PER_SEC: u32 = 50;
/// Lines a live subscriber may fall behind by before it misses some (it is told how many).
const LIVE_CAPACITY: usize = 256;
/// Packets the DNS and DHCP shells may queue for the thread before they are dropped (counted).
const FEED_CAPACITY: usize = 16_384;
const BUSY_POLL: Duration = Duration::from_millis(1);
const IDLE_POLL: Duration = Duration::from_millis(20);

pub struct Settings {
    pub core: CaptureConfig,
}

/// A packet the router itself exchanged with a device.
struct Local {
    key: Key,
    time_us: u64,
    dir: Direction,
    origin: Origin,
    packet: Vec<u8>,
}

/// How the DNS and DHCP shells hand their exchanges with devices to capture: never waits (a full queue drops
/// the packet, counted). Cheap to clone; the feed of capture that is off does nothing.
#[derive(Clone)]
pub struct LocalFeed {
    tx: Option<mpsc::Sender<Local>>,
    dropped: Arc<AtomicU64>,
}

/// The thread's end of the feed.
pub struct FeedReceiver {
    rx: mpsc::Receiver<Local>,
    dropped: Arc<AtomicU64>,
}

pub fn feed() -> (LocalFeed, FeedReceiver) {
    let (tx, rx) = mpsc::channel(FEED_CAPACITY);
    let dropped = Arc::new(AtomicU64::new(0));
    (LocalFeed { tx: Some(tx), dropped: dropped.clone() }, FeedReceiver { rx, dropped })
}

impl LocalFeed {
    pub fn off() -> LocalFeed {
        LocalFeed { tx: None, dropped: Arc::new(AtomicU64::new(0)) }
    }

    pub fn is_on(&self) -> bool {
        self.tx.as_ref().is_some_and(|t| !t.is_closed())
    }

    /// A UDP exchange of the router with the device `key`: `from_device` is its direction, the addresses and
    /// ports are the real ones (framed by `frame::udp`).
    #[allow(clippy::too_many_arguments)]
    pub fn udp(
        &self,
        key: Key,
        origin: Origin,
        from_device: bool,
        src: (Ipv4Addr, u16),
        dst: (Ipv4Addr, u16),
        payload: &[u8],
    ) {
        let Some(tx) = &self.tx else { return };
        let packet = super::frame::udp(src.0, src.1, dst.0, dst.1, payload);
        let dir = if from_device { Direction::Out } else { Direction::In };
        let l = Local { key, time_us: Time::now_us(), dir, origin, packet };
        if tx.try_send(l).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct LiveFeed {
    tx: broadcast::Sender<Arc<Line>>,
    window_us: u64,
    sent: u32,
    skipped: u64,
}

struct State {
    core: Captures,
    live: HashMap<Mac, LiveFeed>,
    feed_dropped: Arc<AtomicU64>,
}

impl State {
    fn push(&mut self, key: Key, time_us: u64, dir: Direction, origin: Origin, data: &[u8], len: u32) {
        let Some(mac) = self.core.push(key, time_us, dir, origin, data, len) else { return };
        if self.live.is_empty() {
            return;
        }
        let Some(feed) = self.live.get_mut(&mac) else { return };
        if feed.tx.receiver_count() == 0 {
            self.live.remove(&mac);
            return;
        }
        if time_us >= feed.window_us + 1_000_000 {
            feed.window_us = time_us;
            feed.sent = 0;
        }
        if feed.sent >= LIVE_PER_SEC {
            feed.skipped += 1;
            return;
        }
        feed.sent += 1;
        let origin = match origin {
            Origin::Nat => "nat",
            Origin::Dns => "dns",
            Origin::Dhcp => "dhcp",
        };
        let mut line = summary::line(data, len, dir == Direction::Out, time_us, origin);
        line.skipped = std::mem::take(&mut feed.skipped);
        let _ = feed.tx.send(Arc::new(line));
    }
}

type Job = Box<dyn FnOnce(&mut State) + Send>;

/// The rest of the program's way to the captures. A stopped (or disabled) subsystem answers `None`.
#[derive(Clone)]
pub struct CaptureHandle {
    jobs: mpsc::Sender<Job>,
}

/// A download's material: the ring's copy, and the device's address now.
pub struct Taken {
    pub snapshot: Snapshot,
    pub ip: Option<Ipv4Addr>,
}

impl CaptureHandle {
    pub fn disabled() -> CaptureHandle {
        let (jobs, _) = mpsc::channel(1);
        CaptureHandle { jobs }
    }

    async fn run<T: Send + 'static>(&self, f: impl FnOnce(&mut State) -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |s| {
            let _ = tx.send(f(s));
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }

    pub async fn status(&self, mac: Mac) -> Option<Status> {
        self.run(move |s| s.core.status(&mac)).await
    }

    /// A copy of the device's ring as it is now (None: capture is off, or the device has no ring).
    pub async fn take(&self, mac: Mac) -> Option<Taken> {
        self.run(move |s| {
            let ip = s.core.ip_of(&mac);
            s.core.snapshot(&mac).map(|snapshot| Taken { snapshot, ip })
        })
        .await
        .flatten()
    }

    pub async fn set_paused(&self, mac: Mac, paused: bool) -> Option<Status> {
        self.run(move |s| {
            s.core.set_paused(mac, paused);
            s.core.status(&mac)
        })
        .await
    }

    pub async fn clear(&self, mac: Mac) -> Option<Status> {
        self.run(move |s| {
            s.core.clear(&mac);
            s.core.status(&mac)
        })
        .await
    }

    /// The device was forgotten: its ring is freed.
    pub async fn forget(&self, mac: Mac) {
        self.run(move |s| {
            s.core.forget(&mac);
            s.live.remove(&mac);
        })
        .await;
    }

    /// The device's live lines from now on.
    pub async fn live(&self, mac: Mac) -> Option<broadcast::Receiver<Arc<Line>>> {
        self.run(move |s| {
            let f = s.live.entry(mac).or_insert_with(|| LiveFeed {
                tx: broadcast::channel(LIVE_CAPACITY).0,
                window_us: 0,
                sent: 0,
                skipped: 0,
            });
            f.tx.subscribe()
        })
        .await
    }

    pub async fn counters(&self) -> Counters {
        self.run(|s| {
            let mut c = s.core.counters();
            c.counter("feed_dropped", s.feed_dropped.load(Ordering::Relaxed));
            c
        })
        .await
        .unwrap_or_default()
    }
}

/// The handle and the subsystem's task. `nat` is filled once the NAT runs (its taps are read from then on).
pub fn start(
    settings: Settings,
    hosts: Hosts,
    nat: Arc<OnceLock<NatHandle>>,
    feed: FeedReceiver,
    shutdown: CancellationToken,
) -> (CaptureHandle, impl Future<Output = Result<()>>) {
    let (jobs, rx) = mpsc::channel(32);
    let task = crate::thread::on_own_thread("capture", move || run(settings, hosts, nat, rx, feed, shutdown));
    (CaptureHandle { jobs }, task)
}

fn apply_hosts(core: &mut Captures, u: Update) {
    match u {
        Update::Change(Change::Set(h)) => core.set_host(h.ip, h.mac),
        Update::Change(Change::Removed(ip)) => core.remove_host(ip),
        Update::Resync(all) => core.set_hosts(all.into_iter().map(|h| (h.ip, h.mac))),
        Update::Closed => {}
    }
}

fn drain(state: &mut State, taps: &mut [TapReader]) -> usize {
    let mut n = 0;
    for t in taps.iter_mut() {
        n += t.drain(|e| {
            let dir = if e.up { Direction::Out } else { Direction::In };
            state.push(Key::Ip(e.device), e.time_us, dir, Origin::Nat, e.data, e.len);
        });
    }
    n
}

async fn run(
    settings: Settings,
    hosts: Hosts,
    nat: Arc<OnceLock<NatHandle>>,
    mut jobs: mpsc::Receiver<Job>,
    feed: FeedReceiver,
    shutdown: CancellationToken,
) -> Result<()> {
    let FeedReceiver { rx: mut locals, dropped } = feed;
    let mut state = State { core: Captures::new(settings.core), live: HashMap::new(), feed_dropped: dropped };
    let (now_hosts, mut host_changes) = hosts.subscribe();
    apply_hosts(&mut state.core, Update::Resync(now_hosts));
    let mut hosts_open = true;
    let mut taps: Vec<TapReader> = Vec::new();
    let mut wait = IDLE_POLL;
    info!("packet capture ready");
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(job) = jobs.recv() => job(&mut state),
            u = host_changes.next(), if hosts_open => {
                if matches!(u, Update::Closed) {
                    hosts_open = false;
                }
                apply_hosts(&mut state.core, u);
            }
            _ = tokio::time::sleep(wait) => {
                if taps.is_empty()
                    && let Some(n) = nat.get()
                {
                    taps = (0..usize::from(n.queues())).filter_map(|q| n.tap(q)).collect();
                    if !taps.is_empty() {
                        info!(queues = taps.len(), "packet capture reads the packet path's taps");
                    }
                }
                // The feed is read here too, never awaited: a DNS flood then costs one wake-up per poll, not one
                // per packet (bench/dns: CPU per cached answer 1.8 -> 4.1 us when each one woke this thread).
                let mut n = drain(&mut state, &mut taps);
                while let Ok(l) = locals.try_recv() {
                    let len = l.packet.len() as u32;
                    state.push(l.key, l.time_us, l.dir, l.origin, &l.packet, len);
                    n += 1;
                }
                wait = if n > 0 { BUSY_POLL } else { (wait * 2).min(IDLE_POLL) };
            }
        }
    }
    let c = state.core.counters();
    let get = |n: &str| c.get(n, &[]).unwrap_or(0);
    info!(
        stored = get("stored"),
        unknown_device = get("unknown_device"),
        rings = get("rings"),
        ring_memory_bytes = get("ring_memory_bytes"),
        "packet capture stopped"
    );
    Ok(())
}
