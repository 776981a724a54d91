//! The DHCP socket shell: UDP port 67 on the LAN interface, the sans-IO `Server`, and the group-commit lease store.
//!
//! Per batch of received packets: every packet goes through `Server::handle`; replies that need no persisted record
//! (OFFER, NAK, INFORM) leave at once; the records of the others are submitted to the committer as one batch and
//! their replies (ACKs) leave only when that batch is fsynced. Later batches are handled while a sync is in flight,
//! so one fsync covers everything that arrived meanwhile.

use super::devices::{Edit, EditReply, Notes};
use super::hostname::sanitize;
use super::lease::{LeaseEvent, Record, StaticLease};
use super::server::{CLIENT_PORT, Destination, DhcpConfig, DropReason, Reply, SERVER_PORT, Server};
use super::store::{Committer, Durable, LeaseStore};
use crate::hosts::{Hosts, HostsWriter};
use crate::types::Time;
use anyhow::{Context as _, Result, anyhow};
use futures::stream::{FuturesOrdered, StreamExt};
use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

const BATCH: usize = 256;
const DROP_REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the DHCP server needs to run (`app::settings` builds it from the config and the LAN plan).
pub struct Settings {
    pub server: DhcpConfig,
    /// The LAN interface: the socket is bound to it, so the WAN never reaches the server.
    pub interface: String,
    pub state_dir: std::path::PathBuf,
    /// Where the devices' DHCP messages go for their capture rings.
    pub capture: crate::capture::LocalFeed,
}

/// The rest of the program's way to the DHCP server: its view on request, and the hosts table it publishes.
#[derive(Clone)]
pub struct DhcpHandle {
    views: crate::views::Views<(), DhcpView>,
    edits: crate::views::Views<Edit, EditReply>,
    pub hosts: Hosts,
}

impl DhcpHandle {
    /// The current leases and counters; empty once the server has stopped.
    pub async fn view(&self) -> DhcpView {
        self.views.get(()).await
    }

    /// An admin's change (a name, a static address, forgetting a device): done and on disk, or why not.
    pub async fn edit(&self, edit: Edit) -> Result<(), String> {
        self.edits.get(edit).await.0
    }
}

/// The handle, and the server's task (run it until `shutdown`). The hosts table starts with the static hosts, so
/// they resolve before the server has even opened its lease log.
pub fn start(settings: Settings, shutdown: CancellationToken) -> (DhcpHandle, impl Future<Output = Result<()>>) {
    let notes = Notes::load(&settings.state_dir);
    let empty = Notes::default();
    // `base` is the configuration as the file gave it; the server runs it with the admin's static addresses added.
    let base = settings.server.clone();
    let server = with_notes(base.clone(), notes.as_ref().unwrap_or(&empty));
    let label = |s: &StaticLease| {
        let n = notes.as_ref().ok().and_then(|n| n.label(&s.mac));
        n.or_else(|| s.hostname.as_deref().and_then(|h| sanitize(h.as_bytes())))
    };
    let statics = server.static_leases.iter().map(|s| crate::hosts::Host {
        ip: s.ip,
        mac: s.mac,
        name: label(s),
        source: crate::hosts::Source::Static,
    });
    let (writer, hosts) = crate::hosts::table(statics);
    let (views, queries) = crate::views::channel();
    let (edits, edit_queries) = crate::views::channel();
    let settings = Settings { server, ..settings };
    let task = async move {
        let notes = notes?;
        serve(settings, base, notes, writer, queries, edit_queries, shutdown).await
    };
    (DhcpHandle { views, edits, hosts }, task)
}

/// The configuration with the admin's static addresses (from the UI) added after the config file's; one that
/// clashes with the file (same MAC or address) or no longer fits the subnet is skipped, with a warning.
fn with_notes(mut cfg: DhcpConfig, notes: &Notes) -> DhcpConfig {
    for (mac, ip) in notes.statics() {
        let clash = cfg.static_leases.iter().any(|s| s.mac == mac || s.ip == ip);
        if clash || !cfg.subnet.contains(&ip) || ip == cfg.server_ip {
            warn!(%mac, %ip, "the static address given in the UI clashes with the config or the subnet; not used");
            continue;
        }
        cfg.static_leases.push(StaticLease { mac, ip, hostname: notes.name(&mac).map(str::to_owned) });
    }
    cfg
}

fn bind(ifname: &str) -> Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_broadcast(true)?;
    // Only the LAN: broadcasts from the WAN never reach this socket.
    s.bind_device(Some(ifname.as_bytes())).with_context(|| format!("cannot bind the DHCP socket to {ifname}"))?;
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a c_int on our own socket. As root SO_RCVBUFFORCE passes net.core.rmem_max.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &size as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT).into())
        .context("cannot listen on UDP port 67 (is another DHCP server running?)")?;
    Ok(UdpSocket::from_std(s.into())?)
}

/// Puts `ip -> mac` in the ARP table, so a unicast reply reaches a client that has no address yet (RFC 2131 4.1).
fn set_arp(sock: &UdpSocket, ifname: &str, ip: Ipv4Addr, mac: crate::types::Mac) -> bool {
    // SAFETY: arpreq is plain old data; zeroed is a valid value.
    let mut req: libc::arpreq = unsafe { std::mem::zeroed() };
    let pa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in fits in sockaddr (both 16 bytes).
    req.arp_pa = unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(pa) };
    req.arp_ha.sa_family = libc::ARPHRD_ETHER;
    for (d, s) in req.arp_ha.sa_data.iter_mut().zip(mac.0) {
        *d = s as libc::c_char;
    }
    req.arp_flags = libc::ATF_COM;
    for (d, s) in req.arp_dev.iter_mut().zip(ifname.bytes().take(15)) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCSARP with a fully initialised arpreq on our socket.
    unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSARP, &req) == 0 }
}

struct Shell {
    sock: UdpSocket,
    ifname: String,
    hosts: HostsWriter,
    arp_failures: u64,
    send_failures: u64,
    /// What the admin said about devices, and the configuration without it (its static leases are the config
    /// file's and /etc/ethers', read-only here).
    notes: Notes,
    base: DhcpConfig,
    state_dir: std::path::PathBuf,
    capture: crate::capture::LocalFeed,
}

/// The client's hardware address in a DHCP message (Ethernet only), for its capture ring.
fn chaddr(m: &[u8]) -> Option<crate::types::Mac> {
    (m.len() >= 34 && m[1] == 1 && m[2] == 6).then(|| crate::types::Mac(m[28..34].try_into().expect("6 bytes")))
}

impl Shell {
    /// A message to or from a device, into its capture ring, as it was on the wire (a broadcast's address is the
    /// broadcast address).
    fn capture(&self, m: &[u8], from_device: bool, device: SocketAddrV4) {
        if !self.capture.is_on() {
            return;
        }
        let Some(mac) = chaddr(m) else { return };
        let router = (self.base.server_ip, SERVER_PORT);
        let dev = (*device.ip(), device.port());
        let (src, dst) = if from_device {
            let to = if device.ip().is_unspecified() { Ipv4Addr::BROADCAST } else { self.base.server_ip };
            (dev, (to, SERVER_PORT))
        } else {
            (router, dev)
        };
        let key = crate::capture::core::Key::Mac(mac);
        self.capture.udp(key, crate::capture::ring::Origin::Dhcp, from_device, src, dst, m);
    }

    async fn send(&mut self, reply: Reply) {
        let to = match reply.to {
            Destination::Broadcast => SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT),
            Destination::Unicast(a) => a,
            Destination::Hardware { ip, mac } => {
                if set_arp(&self.sock, &self.ifname, ip, mac) {
                    SocketAddrV4::new(ip, CLIENT_PORT)
                } else {
                    self.arp_failures += 1;
                    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
                }
            }
        };
        self.capture(&reply.bytes, false, to);
        // A UDP send almost never blocks: try it directly before involving the reactor.
        let sent = match self.sock.try_send_to(&reply.bytes, to.into()) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.sock.send_to(&reply.bytes, to).await,
            other => other,
        };
        if let Err(e) = sent {
            self.send_failures += 1;
            if self.send_failures == 1 {
                warn!("sending a DHCP reply to {to} failed: {e} (further failures are counted)");
            }
        }
    }

    fn publish(&self, events: Vec<LeaseEvent>) {
        for e in events {
            debug!(event = ?e, "lease");
            match e {
                LeaseEvent::Granted(l) | LeaseEvent::Renewed(l) => {
                    let name = self.notes.label(&l.mac).or(l.hostname);
                    self.hosts.leased(l.ip, l.mac, name)
                }
                LeaseEvent::Released(l) | LeaseEvent::Expired(l) => self.hosts.ended(l.ip),
            }
        }
    }
}

/// What the rest of the program (web UI) can read about the DHCP server. Built on request only: copying every
/// lease on a timer would stall the packet loop when the table is large.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct DhcpView {
    pub leases: Vec<super::lease::Lease>,
    pub free_addresses: usize,
    /// Messages by type, drops by reason, and the shell's own failures.
    pub counters: crate::counters::Counters,
    /// Static leases from the config file and /etc/ethers (read-only in the UI).
    pub config_statics: Vec<StaticLease>,
    /// Names and static addresses given in the UI.
    pub notes: Notes,
    pub subnet: Option<ipnet::Ipv4Net>,
    /// The dynamic range, inclusive.
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
}

fn view(server: &Server, shell: &Shell) -> DhcpView {
    let mut counters = server.stats().counters();
    counters
        .counter("arp_failures", shell.arp_failures)
        .counter("send_failures", shell.send_failures)
        .gauge("leases", server.leases().count() as u64)
        .gauge("free_addresses", server.free_addresses() as u64);
    let mut leases: Vec<_> = server.leases().cloned().collect();
    leases.sort_by_key(|l| l.ip);
    DhcpView {
        leases,
        free_addresses: server.free_addresses(),
        counters,
        config_statics: shell.base.static_leases.clone(),
        notes: shell.notes.clone(),
        subnet: Some(server.config().subnet),
        range: Some(server.config().range),
    }
}

impl Shell {
    /// Applies an admin's change: the notes file is written (atomically, fsynced) before this returns; leases it
    /// ends come back to be persisted and published like any other.
    fn edit(&mut self, server: &mut Server, edit: Edit) -> Result<Vec<(Record, LeaseEvent)>, String> {
        let mac = match &edit {
            Edit::Rename { mac, .. } | Edit::Pin { mac, .. } | Edit::Forget { mac } => *mac,
        };
        let forget = matches!(edit, Edit::Forget { .. });
        let from_config = self.base.static_leases.iter().find(|s| s.mac == mac);
        let mut notes = self.notes.clone();
        let note = notes.devices.entry(mac).or_default();
        let mut statics_changed = false;
        match edit {
            Edit::Rename { name, .. } => note.name = name,
            Edit::Pin { ip, name, .. } => {
                if let Some(s) = from_config {
                    return Err(format!("{mac} has its static address {} in the config file; change it there", s.ip));
                }
                let ip = match ip.or(note.ip).or_else(|| server.leases().find(|l| l.mac == mac).map(|l| l.ip)) {
                    Some(ip) => ip,
                    None => return Err(format!("{mac} has no lease to make static; give it an address")),
                };
                let cfg = &self.base;
                if !cfg.subnet.contains(&ip) || ip == cfg.subnet.network() || ip == cfg.subnet.broadcast() {
                    return Err(format!("{ip} is not a host address of the LAN ({})", cfg.subnet));
                }
                if ip == cfg.server_ip {
                    return Err(format!("{ip} is the router's own address"));
                }
                if let Some(s) = self.base.static_leases.iter().find(|s| s.ip == ip) {
                    return Err(format!("{ip} is {}'s static address (config file)", s.mac));
                }
                if let Some((other, _)) = self.notes.statics().find(|(m, i)| *i == ip && *m != mac) {
                    return Err(format!("{ip} is already {other}'s static address"));
                }
                if let Some(l) = server.lease_by_ip(ip).filter(|l| l.mac != mac) {
                    return Err(format!("{ip} is leased to {} now; pick another address or forget that device", l.mac));
                }
                statics_changed = note.ip != Some(ip);
                note.ip = Some(ip);
                if let Some(n) = name {
                    note.name = n;
                }
            }
            Edit::Forget { .. } => {
                if from_config.is_some() {
                    return Err(format!("{mac} is a static lease of the config file; remove it there"));
                }
                statics_changed = note.ip.is_some();
                notes.devices.remove(&mac);
            }
        }
        notes.tidy();
        if notes.devices.len() > super::devices::MAX_DEVICES {
            return Err(format!("at most {} devices can have a name or address", super::devices::MAX_DEVICES));
        }
        let mut ended = Vec::new();
        if statics_changed {
            let cfg = with_notes(self.base.clone(), &notes);
            ended = server.reconfigure(cfg, Time::now()).map_err(|e| e.0)?;
        }
        notes.save(&self.state_dir).map_err(|e| format!("cannot save the change: {e:#}"))?;
        self.notes = notes;
        if forget {
            ended.extend(server.forget(mac));
        }
        // The hosts table: the device's name (the admin's, else its own or the config file's) and, when it
        // changed, its static entry. A config file's static entry is never touched here.
        let own = server.leases().find(|l| l.mac == mac).and_then(|l| l.hostname.clone());
        let configured = from_config.and_then(|s| s.hostname.as_deref()).and_then(|h| sanitize(h.as_bytes()));
        let label = self.notes.label(&mac).or(own).or(configured);
        if statics_changed {
            match self.notes.devices.get(&mac).and_then(|n| n.ip) {
                Some(ip) => self.hosts.set_static(crate::hosts::Host {
                    ip,
                    mac,
                    name: label.clone(),
                    source: crate::hosts::Source::Static,
                }),
                None => self.hosts.remove_static(mac),
            }
        }
        self.hosts.rename(mac, label);
        Ok(ended)
    }
}

type Held = Vec<(Option<Reply>, Vec<LeaseEvent>)>;

/// Replies and events held back until their records are durable. One function, so one future type for the queue.
async fn after_sync(durable: Durable, held: Held) -> (Result<()>, Held) {
    (durable.await, held)
}

async fn serve(
    settings: Settings,
    base: DhcpConfig,
    notes: Notes,
    hosts: HostsWriter,
    mut queries: crate::views::ViewRequests<(), DhcpView>,
    mut edits: crate::views::ViewRequests<Edit, EditReply>,
    shutdown: CancellationToken,
) -> Result<()> {
    let Settings { server: cfg, interface: ifname, state_dir, capture } = settings;
    let now = Time::now();
    let (store, loaded) = LeaseStore::open(&state_dir, now.unix_secs())?;
    if loaded.torn_bytes_dropped > 0 {
        warn!(bytes = loaded.torn_bytes_dropped, "the lease log ended in a torn write (a crash mid-write); ignored it");
    }
    let committer = Committer::start(store, &loaded)?;
    let mut server = Server::new(cfg, loaded.leases, loaded.declined, now).map_err(|e| anyhow!("DHCP: {}", e.0))?;
    for l in server.leases() {
        hosts.leased(l.ip, l.mac, notes.label(&l.mac).or(l.hostname.clone()));
    }
    let sock = bind(&ifname)?;
    info!(
        interface = %ifname,
        leases = server.leases().count(),
        free = server.free_addresses(),
        range = %format!("{}-{}", server.config().range.0, server.config().range.1),
        "DHCP server ready"
    );
    let mut shell = Shell { sock, ifname, hosts, arp_failures: 0, send_failures: 0, notes, base, state_dir, capture };
    let mut waiting = FuturesOrdered::new();
    let mut buf = vec![0u8; 4096];
    let mut reported: HashSet<DropReason> = HashSet::new();
    let mut last_report = tokio::time::Instant::now();
    let mut last_totals: Vec<(DropReason, u64)> = Vec::new();

    // One timer for housekeeping (expiry, the UI view, drop reports), re-armed rather than re-created per packet.
    let tick = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(tick);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            ready = shell.sock.readable() => {
                ready?;
                let now = Time::now();
                let mut records = Vec::new();
                let mut held = Vec::new();
                for _ in 0..BATCH {
                    let (n, from) = match shell.sock.try_recv_from(&mut buf) {
                        Ok(r) => r,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => { warn!("DHCP receive failed: {e}"); break }
                    };
                    let SocketAddr::V4(from) = from else { continue };
                    shell.capture(&buf[..n], true, from);
                    match server.handle(&buf[..n], from, now) {
                        Ok(out) if out.records.is_empty() => {
                            if let Some(r) = out.reply { shell.send(r).await; }
                            shell.publish(out.events);
                        }
                        Ok(out) => {
                            records.extend(out.records);
                            held.push((out.reply, out.events));
                        }
                        Err(reason) => {
                            if reported.insert(reason) {
                                warn!(%reason, %from, "dropped a DHCP packet (each reason is logged once; totals every minute)");
                            }
                        }
                    }
                }
                if !records.is_empty() {
                    waiting.push_back(after_sync(committer.submit(records), held));
                }
            }
            Some((result, held)) = waiting.next() => {
                match result {
                    Ok(()) => for (reply, evs) in held {
                        if let Some(r) = reply { shell.send(r).await; }
                        shell.publish(evs);
                    },
                    Err(e) => error!("leases could not be stored, their ACKs are withheld: {e:#}"),
                }
            }
            Some(((), reply)) = queries.recv() => {
                let _ = reply.send(view(&server, &shell));
            }
            Some((edit, reply)) = edits.recv() => {
                info!(?edit, "admin change");
                let result = shell.edit(&mut server, edit).map(|ended| {
                    let (records, evs): (Vec<Record>, Vec<LeaseEvent>) = ended.into_iter().unzip();
                    if !records.is_empty() {
                        waiting.push_back(after_sync(committer.submit(records), vec![(None, evs)]));
                    }
                });
                let _ = reply.send(EditReply(result));
            }
            _ = &mut tick => {
                // Expired leases: persisted as released, published as expired.
                let now = Time::now();
                if server.next_expiry().is_some_and(|t| t <= now) {
                    let (records, evs): (Vec<Record>, Vec<LeaseEvent>) = server.expire(now).into_iter().unzip();
                    if !records.is_empty() {
                        waiting.push_back(after_sync(committer.submit(records), vec![(None, evs)]));
                    }
                }
                tick.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }

        if last_report.elapsed() >= DROP_REPORT_EVERY {
            last_report = tokio::time::Instant::now();
            let totals: Vec<(DropReason, u64)> = server.stats().drops().collect();
            if totals != last_totals {
                let summary: Vec<String> = totals.iter().map(|(r, n)| format!("{r}={n}")).collect();
                info!(
                    arp_failures = shell.arp_failures,
                    send_failures = shell.send_failures,
                    "DHCP drops so far: {}",
                    summary.join(" ")
                );
                last_totals = totals;
            }
        }
    }
    // Whatever was acknowledged is already durable; wait for in-flight syncs, then stop the store thread.
    while let Some((result, held)) = waiting.next().await {
        if result.is_ok() {
            for (reply, evs) in held {
                if let Some(r) = reply {
                    shell.send(r).await;
                }
                shell.publish(evs);
            }
        }
    }
    let st = committer.stats();
    committer.shutdown()?;
    info!(
        commits = st.commits,
        records = st.records,
        largest_batch = st.largest_batch,
        compactions = st.compactions,
        "DHCP server stopped"
    );
    Ok(())
}
