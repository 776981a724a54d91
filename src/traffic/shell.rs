//! The traffic thread: every 100 ms (10 ms after each bucket ends, so the queues' last batches are in) it drains
//! every queue's record ring into the core, closes the bucket and broadcasts its tick; once a second it ages and
//! caps the history; every minute, and at shutdown, it writes a snapshot (on a thread of its own, so a slow disk
//! never delays a tick). The rest of the program reaches it through [`TrafficHandle`]: queries run on the thread
//! between ticks, and the live stream is a broadcast that drops a subscriber that falls behind.

use super::core::{DeviceSummary, Memory, RangeStats, Tick, TopEntry, Traffic, TrafficConfig};
use super::query::{SeriesQuery, StatsQuery, TopQuery, UsageQuery};
use crate::counters::Counters;
use crate::datapath::NatHandle;
use crate::datapath::ring::Reader;
use crate::hosts::{Change, Hosts, Update};
use crate::nat::PacketRecord;
use crate::types::Time;
use anyhow::{Result, anyhow};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Ticks a live subscriber may fall behind by before it is dropped (6.4 s).
pub const LIVE_CAPACITY: usize = 64;
/// How long after a bucket's end the thread closes it.
const GRACE_MS: u64 = 10;
const MAINTAIN_EVERY_MS: u64 = 1000;

pub struct Settings {
    pub core: TrafficConfig,
    /// The snapshot file (in the state directory).
    pub snapshot: PathBuf,
    pub snapshot_every: Duration,
}

type Job = Box<dyn FnOnce(&mut Traffic, &broadcast::Sender<Arc<Tick>>) + Send>;

/// The rest of the program's way to the traffic data. A stopped subsystem answers with empty values.
#[derive(Clone)]
pub struct TrafficHandle {
    jobs: mpsc::Sender<Job>,
}

/// A new live subscriber: the last minute of ticks, then every new one.
pub struct Live {
    pub backlog: Vec<Arc<Tick>>,
    pub ticks: broadcast::Receiver<Arc<Tick>>,
}

impl TrafficHandle {
    /// The handle of traffic accounting that is off: every query answers empty.
    pub fn disabled() -> TrafficHandle {
        let (jobs, _) = mpsc::channel(1);
        TrafficHandle { jobs }
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Traffic, &broadcast::Sender<Arc<Tick>>) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |t, live| {
            let _ = tx.send(f(t, live));
        });
        self.jobs.send(job).await.ok()?;
        rx.await.ok()
    }

    pub async fn series(&self, q: SeriesQuery) -> Vec<[u64; 2]> {
        self.run(move |t, _| t.series(&q.select, q.from_ms, q.step_ms, q.points)).await.unwrap_or_default()
    }

    pub async fn stats(&self, q: StatsQuery) -> RangeStats {
        self.run(move |t, _| t.range_stats(&q.select, q.from_ms, q.to_ms)).await.unwrap_or_default()
    }

    pub async fn top(&self, q: TopQuery) -> Vec<TopEntry> {
        self.run(move |t, _| match (q.device, q.remotes) {
            (None, true) => t.top_remotes(q.from_ms, q.to_ms, q.limit),
            _ => t.top(q.device, q.from_ms, q.to_ms, q.limit),
        })
        .await
        .unwrap_or_default()
    }

    pub async fn usage(&self, q: UsageQuery) -> Vec<(u64, [u64; 2])> {
        self.run(move |t, _| t.usage(q.device, q.from_ms, q.to_ms, q.step_ms)).await.unwrap_or_default()
    }

    pub async fn devices(&self) -> Vec<DeviceSummary> {
        self.run(|t, _| t.devices(Time::now().unix_ms())).await.unwrap_or_default()
    }

    pub async fn memory(&self) -> Memory {
        self.run(|t, _| t.memory()).await.unwrap_or_default()
    }

    pub async fn counters(&self) -> Counters {
        self.run(|t, live| {
            let mut c = t.counters();
            // Each live WebSocket (`/api/live`) holds one subscription.
            c.gauge("websocket_clients", live.receiver_count() as u64);
            c
        })
        .await
        .unwrap_or_default()
    }

    /// Subscribes to the live ticks (backlog and stream from the same instant: nothing missed or repeated).
    /// `None` once the subsystem has stopped.
    pub async fn live(&self) -> Option<Live> {
        self.run(|t, live| Live { backlog: t.backlog(), ticks: live.subscribe() }).await
    }
}

/// The handle and the subsystem's task. `nat` is filled once the NAT runs (its rings are read from then on).
pub fn start(
    settings: Settings,
    hosts: Hosts,
    nat: Arc<OnceLock<NatHandle>>,
    shutdown: CancellationToken,
) -> (TrafficHandle, impl Future<Output = Result<()>>) {
    let (jobs, rx) = mpsc::channel(32);
    (TrafficHandle { jobs }, serve(settings, hosts, nat, rx, shutdown))
}

async fn serve(
    settings: Settings,
    hosts: Hosts,
    nat: Arc<OnceLock<NatHandle>>,
    jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) -> Result<()> {
    crate::thread::on_own_thread("traffic", move || run(settings, hosts, nat, jobs, shutdown)).await
}

/// Loads the snapshot, if any; a damaged one is reported, kept aside as `<name>.bad`, and what it held restored.
fn restore(core: &mut Traffic, path: &std::path::Path) {
    let data = match std::fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            warn!("cannot read the traffic snapshot {} (starting without history): {e}", path.display());
            return;
        }
    };
    let r = core.restore(&data);
    if r.torn_bytes > 0 || r.skipped > 0 {
        let bad = path.with_extension("bad");
        let _ = std::fs::copy(path, &bad);
        warn!(
            torn_bytes = r.torn_bytes,
            skipped = r.skipped,
            devices = r.devices,
            buckets = r.buckets,
            "the traffic snapshot {} is damaged: restored what it held before the damage (a copy is in {})",
            path.display(),
            bad.display()
        );
    } else {
        info!(devices = r.devices, buckets = r.buckets, "traffic history restored from {}", path.display());
    }
}

fn apply_hosts(core: &mut Traffic, u: Update) {
    match u {
        Update::Change(Change::Set(h)) => core.set_host(h.ip, h.mac),
        Update::Change(Change::Removed(ip)) => core.remove_host(ip),
        Update::Resync(all) => core.set_hosts(all.into_iter().map(|h| (h.ip, h.mac))),
        Update::Closed => {}
    }
}

/// Writes snapshots off the traffic thread, one at a time.
struct Writer {
    path: PathBuf,
    busy: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    fn write(&mut self, data: Vec<u8>) {
        if self.busy.as_ref().is_some_and(|h| !h.is_finished()) {
            // The previous one is still on its way to the disk: skip this one, the next comes in a minute.
            return;
        }
        let path = self.path.clone();
        self.busy = std::thread::Builder::new()
            .name("traffic-snap".into())
            .spawn(move || {
                if let Err(e) = crate::state::write_atomic(&path, &data) {
                    warn!("cannot write the traffic snapshot: {e:#}");
                }
            })
            .ok();
    }

    fn finish(&mut self) {
        if let Some(h) = self.busy.take() {
            let _ = h.join();
        }
    }
}

async fn run(
    settings: Settings,
    hosts: Hosts,
    nat: Arc<OnceLock<NatHandle>>,
    mut jobs: mpsc::Receiver<Job>,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut core = Traffic::new(settings.core);
    restore(&mut core, &settings.snapshot);
    let (now_hosts, mut host_changes) = hosts.subscribe();
    apply_hosts(&mut core, Update::Resync(now_hosts));
    let mut hosts_open = true;
    let (live, _) = broadcast::channel::<Arc<Tick>>(LIVE_CAPACITY);
    let mut readers: Vec<Reader<PacketRecord>> = Vec::new();
    let mut writer = Writer { path: settings.snapshot.clone(), busy: None };
    let snapshot_every = settings.snapshot_every.as_millis() as u64;
    let start = Time::now().unix_ms();
    let (mut last_maintain, mut last_snapshot) = (start, start);
    core.maintain(start);
    info!("traffic accounting ready");

    let drain = |core: &mut Traffic, readers: &mut Vec<Reader<PacketRecord>>| {
        for r in readers.iter_mut() {
            r.drain(|rec| core.ingest(&rec));
        }
    };
    loop {
        let now = Time::now().unix_ms();
        let next = (now / super::BUCKET_MS + 1) * super::BUCKET_MS + GRACE_MS;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(next - now)) => {
                if readers.is_empty()
                    && let Some(n) = nat.get()
                {
                    readers = (0..usize::from(n.queues())).filter_map(|q| n.records(q)).collect();
                    if !readers.is_empty() {
                        info!(queues = readers.len(), "traffic accounting reads the packet path's records");
                    }
                }
                drain(&mut core, &mut readers);
                let now = Time::now().unix_ms();
                core.advance(now);
                for t in core.take_ticks() {
                    let _ = live.send(t); // nobody listening is fine
                }
                if now >= last_maintain + MAINTAIN_EVERY_MS {
                    last_maintain = now;
                    core.maintain(now);
                }
                if now >= last_snapshot + snapshot_every {
                    last_snapshot = now;
                    writer.write(core.snapshot(now));
                }
            }
            u = host_changes.next(), if hosts_open => {
                if matches!(u, Update::Closed) {
                    hosts_open = false;
                }
                apply_hosts(&mut core, u);
            }
            Some(job) = jobs.recv() => job(&mut core, &live),
        }
    }
    // What the queues published last, then the final snapshot, written before the program goes on to exit.
    drain(&mut core, &mut readers);
    let now = Time::now().unix_ms();
    core.advance(now + super::BUCKET_MS);
    writer.finish();
    let data = core.snapshot(now);
    crate::state::write_atomic(&settings.snapshot, &data)
        .map_err(|e| anyhow!("cannot write the traffic snapshot at shutdown: {e:#}"))?;
    info!(bytes = data.len(), "traffic snapshot written");
    Ok(())
}
