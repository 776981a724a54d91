//! The ports subsystem's IO: one task owns `core::Ports` and is the only one to change it. It follows the hosts
//! table (forwards follow their device), reads the router's listening sockets (sock_diag), saves the forwards and
//! mappings to `STATE/ports.json` (atomically, fsynced, before a change is answered), hands the NAT what it must
//! forward, lets mappings lapse, and serves the port mapping protocols (`proto`).

use super::core::{ForwardInput, Limits, Listener, Ports, Refusal, Saved};
use super::inventory::{self, ForwardView, ForwardsView, PortsView};
use super::mapping::Transport;
use crate::datapath::NatHandle;
use crate::dns::shell::DnsHandle;
use crate::hosts::Hosts;
use crate::types::{Device, Mac, Time};
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub const STATE_FILE: &str = "ports.json";
/// How often the listening sockets are read again (and before every change of a forward).
const LISTENERS_EVERY: Duration = Duration::from_secs(10);
/// How many NAT mappings the ports view and the "in use" check read at most.
const NAT_VIEW: usize = crate::datapath::VIEW_MAX;

pub struct Settings {
    pub state_dir: PathBuf,
    pub limits: Limits,
    pub config_forwards: Vec<super::PortForward>,
    pub router: Ipv4Addr,
    pub lan: ipnet::Ipv4Net,
    pub protocols: super::proto::Settings,
}

/// Work of a protocol's request, run on the ports task; what it returns sends the answer, once the change is
/// saved and in the NAT (a client told "mapped" or "deleted" can rely on it at once).
pub(super) type Job = Box<dyn FnOnce(&mut Ports, Time) -> Box<dyn FnOnce() + Send> + Send>;

pub(super) enum Request {
    Forwards(oneshot::Sender<ForwardsView>),
    Add(ForwardInput, oneshot::Sender<Result<ForwardView, Refusal>>),
    Update(u32, ForwardInput, oneshot::Sender<Result<ForwardView, Refusal>>),
    Remove(u32, oneshot::Sender<Result<(), Refusal>>),
    View(oneshot::Sender<PortsView>),
    /// A port mapping protocol's request, run against the state (see `proto`).
    Map(Job),
}

/// The ports subsystem's handle: forwards and the ports view for the web UI.
#[derive(Clone)]
pub struct PortsHandle {
    tx: mpsc::Sender<Request>,
}

impl PortsHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn forwards(&self) -> Option<ForwardsView> {
        self.ask(Request::Forwards).await
    }

    pub async fn add(&self, f: ForwardInput) -> Option<Result<ForwardView, Refusal>> {
        self.ask(|tx| Request::Add(f, tx)).await
    }

    pub async fn update(&self, id: u32, f: ForwardInput) -> Option<Result<ForwardView, Refusal>> {
        self.ask(|tx| Request::Update(id, f, tx)).await
    }

    pub async fn remove(&self, id: u32) -> Option<Result<(), Refusal>> {
        self.ask(|tx| Request::Remove(id, tx)).await
    }

    pub async fn view(&self) -> Option<PortsView> {
        self.ask(Request::View).await
    }

    /// Runs `f` on the ports state (the protocols' requests); `None` once the subsystem has stopped.
    pub(super) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ports, Time) -> T + Send + 'static,
    ) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |p: &mut Ports, now: Time| {
            let out = f(p, now);
            Box::new(move || {
                let _ = tx.send(out);
            })
        });
        self.tx.send(Request::Map(job)).await.ok()?;
        rx.await.ok()
    }
}

fn load(path: &std::path::Path) -> Result<Saved> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{} is not a ports file", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The router's sockets that listen on the WAN address or on all addresses (and are not bound to another
/// interface, as DHCP's is to the LAN), with their processes.
fn read_listeners(wan: Option<Ipv4Addr>, wan_if: Option<&str>) -> Vec<Listener> {
    let wan_index = wan_if.and_then(|n| std::ffi::CString::new(n).ok()).map(|n| {
        // SAFETY: a valid NUL-terminated name; the call only reads it.
        unsafe { libc::if_nametoindex(n.as_ptr()) }
    });
    let all = match crate::net::sockdiag::listening() {
        Ok(l) => l,
        Err(e) => {
            warn!("cannot read the listening sockets (sock_diag): {e}");
            return Vec::new();
        }
    };
    let on_wan = |a: &IpAddr| match a {
        IpAddr::V4(v4) => v4.is_unspecified() || Some(*v4) == wan,
        IpAddr::V6(v6) => v6.is_unspecified() || v6.to_ipv4_mapped().is_some_and(|v4| Some(v4) == wan),
    };
    let mut wanted: Vec<_> = all
        .into_iter()
        .filter(|l| on_wan(&l.address) && (l.interface == 0 || Some(l.interface) == wan_index))
        .collect();
    wanted.sort_by_key(|l| (l.port, l.proto == crate::net::sockdiag::Proto::Udp));
    wanted.dedup_by_key(|l| (l.port, l.proto, l.inode));
    let owners = crate::net::sockdiag::owners(&wanted.iter().map(|l| l.inode).collect::<Vec<_>>());
    wanted
        .into_iter()
        .map(|l| {
            let owner = owners.get(&l.inode);
            Listener {
                transport: match l.proto {
                    crate::net::sockdiag::Proto::Tcp => Transport::Tcp,
                    crate::net::sockdiag::Proto::Udp => Transport::Udp,
                },
                port: l.port,
                address: l.address,
                process: owner.map(|o| o.0.clone()),
                pid: owner.map(|o| o.1),
            }
        })
        .collect()
}

struct Shell {
    ports: Ports,
    path: PathBuf,
    nat: Arc<OnceLock<NatHandle>>,
    applied: bool,
    wan: Option<Ipv4Addr>,
    wan_if: Option<String>,
}

impl Shell {
    fn nat(&self) -> Option<&NatHandle> {
        self.nat.get()
    }

    fn snapshot(&self) -> Option<crate::nat::Snapshot> {
        self.nat().map(|n| n.view(0, NAT_VIEW).tables)
    }

    /// Saves (fsynced) and applies what changed. A save that fails is logged and tried again at the next change;
    /// the answer to the change then says it was not kept.
    async fn commit(&mut self) -> Result<()> {
        let mut result = Ok(());
        if self.ports.take_dirty() {
            let data = serde_json::to_vec_pretty(self.ports.saved())?;
            let path = self.path.clone();
            let saved = tokio::task::spawn_blocking(move || crate::state::write_atomic(&path, &data)).await?;
            if let Err(e) = saved {
                warn!("cannot save the port forwards and mappings: {e:#}");
                // Marked dirty again so the next change tries again.
                result = Err(e);
            }
        }
        let changed = self.ports.take_changed();
        if let Some(nat) = self.nat.get()
            && (changed || !self.applied)
        {
            let effective = self.ports.effective();
            debug!(forwards = effective.len(), "forwards handed to the NAT");
            nat.set_forwards(effective);
            self.applied = true;
        }
        result
    }

    async fn refresh_listeners(&mut self) {
        let (wan, wan_if) = (self.wan, self.wan_if.clone());
        if let Ok(l) = tokio::task::spawn_blocking(move || read_listeners(wan, wan_if.as_deref())).await {
            self.ports.set_listeners(l);
        }
    }

    /// The NAT's ephemeral mappings, for the "is this port free" check of the protocols.
    fn refresh_nat_in_use(&mut self) {
        let Some(s) = self.snapshot() else { return };
        let in_use: HashMap<(Transport, u16), Ipv4Addr> = s
            .mappings
            .iter()
            .filter(|m| !m.forward)
            .filter_map(|m| Some(((inventory::transport(m.protocol)?, m.external.port()), *m.internal.ip())))
            .collect();
        self.ports.set_nat_in_use(in_use);
    }

    fn follow_wan(&mut self) -> bool {
        let now = self.nat().map(|n| n.wan_ip());
        let changed = now != self.wan;
        self.wan = now;
        self.ports.set_external_ip(now);
        changed
    }

    async fn change(
        &mut self,
        f: impl FnOnce(&mut Ports) -> Result<super::core::Forward, Refusal>,
    ) -> Result<ForwardView, Refusal> {
        self.refresh_listeners().await;
        let fwd = f(&mut self.ports)?;
        self.commit().await.map_err(|e| Refusal::Invalid(format!("not saved: {e:#}")))?;
        let snap = self.snapshot();
        Ok(inventory::forward_view(&self.ports, &fwd, snap.as_ref()))
    }
}

fn devices(hosts: &Hosts) -> Vec<(Mac, super::core::Device)> {
    hosts.all().into_iter().map(|h| (h.mac, super::core::Device { ip: h.ip, name: h.name })).collect()
}

/// Starts the subsystem: its handle, and the task to await (it ends at `shutdown`).
pub fn start(
    settings: Settings,
    hosts: Hosts,
    nat: Arc<OnceLock<NatHandle>>,
    dns: DnsHandle,
    shutdown: CancellationToken,
) -> Result<(PortsHandle, impl Future<Output = Result<()>>)> {
    let path = settings.state_dir.join(STATE_FILE);
    let saved = load(&path)?;
    let now = Time::now();
    info!(forwards = saved.forwards.len(), mappings = saved.mappings.len(), "port forwards and mappings loaded");
    let ports = Ports::new(settings.limits.clone(), settings.config_forwards.clone(), saved, now, rand::random());
    let (tx, rx) = mpsc::channel(64);
    let handle = PortsHandle { tx };
    let protocols = super::proto::start(&settings, handle.clone(), shutdown.clone());
    let wan_if = settings.protocols.wan_if.clone();
    let shell = Shell { ports, path, nat, applied: false, wan: None, wan_if };
    Ok((handle, run(shell, rx, hosts, dns, protocols, shutdown)))
}

async fn run(
    mut s: Shell,
    mut rx: mpsc::Receiver<Request>,
    hosts: Hosts,
    dns: DnsHandle,
    mut protocols: super::proto::Protocols,
    shutdown: CancellationToken,
) -> Result<()> {
    let (_, mut sub) = hosts.subscribe();
    s.ports.set_devices(devices(&hosts));
    s.follow_wan();
    s.ports.expire(Time::now());
    s.refresh_listeners().await;
    let _ = s.commit().await;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut listeners_at = tokio::time::Instant::now();
    protocols.announce(s.ports.saved().epoch_start, s.wan, Time::now()).await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                let now = Time::now();
                s.ports.expire(now);
                if s.follow_wan() {
                    protocols.announce(s.ports.saved().epoch_start, s.wan, now).await;
                }
                if listeners_at.elapsed() >= LISTENERS_EVERY {
                    s.refresh_listeners().await;
                    listeners_at = tokio::time::Instant::now();
                }
                let _ = s.commit().await;
            }
            u = sub.next() => {
                if matches!(u, crate::hosts::Update::Closed) {
                    // DHCP stopped (shutdown): nothing more will change.
                    sub = hosts.subscribe().1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                s.ports.set_devices(devices(&hosts));
                let _ = s.commit().await;
            }
            req = rx.recv() => {
                let Some(req) = req else { break };
                match req {
                    Request::Forwards(tx) => {
                        let snap = s.snapshot();
                        let _ = tx.send(inventory::forwards_view(&s.ports, snap.as_ref(), s.wan));
                    }
                    Request::Add(f, tx) => {
                        let r = s.change(|p| p.add_forward(f)).await;
                        if let Ok(v) = &r {
                            info!(id = %v.id, first = v.external_first, last = v.external_last, "forward added");
                        }
                        let _ = tx.send(r);
                    }
                    Request::Update(id, f, tx) => {
                        let r = s.change(|p| p.update_forward(id, f)).await;
                        let _ = tx.send(r);
                    }
                    Request::Remove(id, tx) => {
                        let r = match s.ports.remove_forward(id) {
                            Ok(()) => s.commit().await.map_err(|e| Refusal::Invalid(format!("not saved: {e:#}"))),
                            Err(e) => Err(e),
                        };
                        if r.is_ok() {
                            info!(id, "forward removed");
                        }
                        let _ = tx.send(r);
                    }
                    Request::View(tx) => {
                        s.refresh_listeners().await;
                        let snap = s.snapshot();
                        let mut view = inventory::ports_view(&s.ports, snap.as_ref(), s.wan, Time::now());
                        view.counters = protocols.stats.counters();
                        let dns = dns.clone();
                        // Remote names are the devices' own lookups; asked off this task.
                        tokio::spawn(async move {
                            let _ = tx.send(with_names(view, &dns).await);
                        });
                    }
                    Request::Map(job) => {
                        s.refresh_nat_in_use();
                        let now = Time::now();
                        s.ports.expire(now);
                        let answer = job(&mut s.ports, now);
                        let _ = s.commit().await;
                        answer();
                    }
                }
            }
        }
    }
    protocols.stop().await;
    Ok(())
}

/// Fills in each connection's remote name from its device's DNS lookups.
async fn with_names(mut view: PortsView, dns: &DnsHandle) -> PortsView {
    let mut by_device: HashMap<Mac, Vec<(usize, usize)>> = HashMap::new();
    for (r, row) in view.rows.iter().enumerate() {
        for (c, conn) in row.connections.iter().enumerate() {
            if let Some(mac) = conn.device {
                by_device.entry(mac).or_default().push((r, c));
            }
        }
    }
    for (mac, at) in by_device {
        let remotes = at.iter().map(|&(r, c)| IpAddr::V4(*view.rows[r].connections[c].remote.ip())).collect();
        let names = dns.names(Device::Mac(mac), remotes).await;
        for ((r, c), name) in at.into_iter().zip(names) {
            view.rows[r].connections[c].remote_name = name;
        }
    }
    view
}
