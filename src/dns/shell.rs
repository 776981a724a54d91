//! The DNS socket shell: UDP and TCP port 53 on the router's LAN address (bound to the LAN interface, so nothing
//! arriving from the WAN reaches it), upstream queries from fresh sockets with random source ports (RFC 5452),
//! and the sans-IO `Dns` core in between.
//!
//! Two threads share the core behind one mutex. Client UDP datagrams are served by a thread that does nothing else:
//! it sleeps in `recvmmsg` on the socket itself, takes the lock for one batch, and sends the cached answers with one
//! `sendmmsg` (no event loop between the socket and the answer: an `epoll_wait` and a runtime's turn less per
//! wake-up). Everything else (upstream answers, TCP clients, lease events, the core's timers, the web UI's reads)
//! runs on an event loop of its own thread, which takes the lock for each event.

use super::resolvconf;
use super::{Action, ClientRef, Device, Dns, DnsConfig, Handled, LogEntry, QueryHandle, Transport};
use crate::hosts::{Change, Hosts, Update};
use crate::net::coalesce::{CoalescePolicy, Coalescer, tight_timer_slack};
use crate::net::mmsg::{RecvBatch, SendBatch};
use crate::types::Time;
use anyhow::{Context as _, Result, anyhow};
use parking_lot::{Mutex, MutexGuard};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::Interest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

const BATCH: usize = 64;
/// How long the UDP thread sleeps in a receive before it looks whether the server is stopping (a stop also wakes
/// it at once: `shutdown(SHUT_RD)` on the socket).
const RECV_TIMEOUT: Duration = Duration::from_secs(1);

/// Adaptive batching (`net::coalesce`): above 40k queries/s the UDP thread waits up to 150 us after a partial batch,
/// so that the next `recvmmsg` brings a fuller batch (more replies per GSO send). Below it every query is answered
/// at once.
const COALESCE: CoalescePolicy = CoalescePolicy {
    batch: BATCH,
    above_per_sec: 40_000,
    max_wait: Duration::from_micros(150),
    max_avg_bytes: u64::MAX,
};
/// Client TCP connections served at once; more are closed at once (a counted drop).
const MAX_TCP_CLIENTS: usize = 128;
const TCP_IDLE: Duration = Duration::from_secs(10);
/// An upstream socket never lives longer than this, whatever the core thinks.
const UPSTREAM_LIMIT: Duration = Duration::from_secs(10);

/// What the web UI can read: upstreams, counters, and each device's recent queries.
#[derive(Debug, Default, serde::Serialize)]
pub struct DnsView {
    pub upstreams: Vec<SocketAddr>,
    /// Each upstream's health, in `upstreams` order.
    pub health: Vec<crate::dns::core::UpstreamHealth>,
    /// The answer cache's capacity (entries).
    pub cache_size: usize,
    pub counters: crate::counters::Counters,
    /// Devices with a query log (the page below is `offset..offset + limit` of them, most recently active first).
    pub total_devices: usize,
    pub offset: usize,
    pub limit: usize,
    pub devices: Vec<DeviceQueries>,
}

/// Which devices' query logs a view carries.
#[derive(Debug, Clone, Copy, serde::Deserialize)]
#[serde(default)]
pub struct LogPage {
    /// One device only (`offset` and `limit` still apply: 0 and at least 1 to see it).
    pub device: Option<Device>,
    pub offset: usize,
    pub limit: usize,
}

impl LogPage {
    pub const MAX_LIMIT: usize = 256;
}

impl Default for LogPage {
    fn default() -> Self {
        LogPage { device: None, offset: 0, limit: 32 }
    }
}

#[derive(Debug, serde::Serialize)]
pub struct DeviceQueries {
    pub device: Device,
    pub queries: Vec<LogEntry>,
}

/// What the DNS server needs to run (`app::settings` builds it from the config and the LAN plan).
pub struct Settings {
    /// The core's settings; its `router_ip` is where the server listens.
    pub core: DnsConfig,
    /// The LAN interface the sockets are bound to.
    pub interface: String,
    /// Where the devices' UDP queries and answers go for their capture rings.
    pub capture: crate::capture::LocalFeed,
}

/// The rest of the program's way to the DNS server.
#[derive(Clone)]
pub struct DnsHandle {
    views: crate::views::Views<LogPage, DnsView>,
    names: crate::views::Views<NamesQuery, Names>,
}

/// Which names to look up: the ones `device` itself resolved for these addresses.
#[derive(Debug, Clone)]
pub struct NamesQuery {
    pub device: Device,
    pub remotes: Vec<IpAddr>,
}

/// One name (or none) per address asked, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names(pub Vec<Option<String>>);

/// Addresses one names query may ask at most (a view's worth).
pub const NAMES_MAX: usize = 4096;

impl DnsHandle {
    /// Upstreams, counters and one page of the devices' recent queries; empty once the server has stopped.
    pub async fn view(&self, page: LogPage) -> DnsView {
        self.views.get(page).await
    }

    /// The names that `device` looked up and got these addresses for (its own DNS answers), else `None` each:
    /// no reverse lookups of other people's addresses. At most [`NAMES_MAX`] addresses are looked up.
    pub async fn names(&self, device: Device, mut remotes: Vec<IpAddr>) -> Vec<Option<String>> {
        remotes.truncate(NAMES_MAX);
        let n = remotes.len();
        let mut names = self.names.get(NamesQuery { device, remotes }).await.0;
        names.resize(n, None);
        names
    }
}

/// The handle, and the server's task. `hosts` (published by DHCP) fills the `NAME.lan` zone.
pub fn start(
    settings: Settings,
    hosts: Hosts,
    shutdown: CancellationToken,
) -> (DnsHandle, impl Future<Output = Result<()>>) {
    let (views, queries) = crate::views::channel();
    let (names, name_queries) = crate::views::channel();
    (DnsHandle { views, names }, serve(settings, hosts, queries, name_queries, shutdown))
}

/// Upstreams from the config, else the machine's resolvers (never the router itself).
pub fn upstreams(configured: &[SocketAddr], router: Ipv4Addr) -> Vec<SocketAddr> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    let files: Vec<&std::path::Path> = resolvconf::SYSTEM_FILES.iter().map(std::path::Path::new).collect();
    resolvconf::system_upstreams(&files, &[IpAddr::V4(router)])
}

/// The client socket: blocking, for the UDP thread's receive (sends never block: `MSG_DONTWAIT`).
fn bind_udp(ip: Ipv4Addr, ifname: &str) -> Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.set_recv_buffer_size(4 << 20)?;
    s.set_send_buffer_size(4 << 20)?;
    s.set_read_timeout(Some(RECV_TIMEOUT))?;
    s.bind(&SocketAddrV4::new(ip, 53).into()).with_context(|| format!("cannot listen on {ip}:53 (UDP)"))?;
    Ok(s.into())
}

fn bind_tcp(ip: Ipv4Addr, ifname: &str) -> Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(ifname.as_bytes()))?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddrV4::new(ip, 53).into()).with_context(|| format!("cannot listen on {ip}:53 (TCP)"))?;
    s.listen(128)?;
    Ok(TcpListener::from_std(s.into())?)
}

/// Asks an upstream over UDP from a fresh socket: the kernel picks a random source port for each one (at
/// `connect`, no separate bind), and the connected socket only takes datagrams from that upstream. The query goes
/// out before the socket is registered for readiness, and the answer is read only once it is there: four system
/// calls besides socket and close, the fewest a fresh port per query allows.
async fn ask_udp(upstream: SocketAddr, query: Vec<u8>) -> Result<Vec<u8>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if upstream.is_ipv4() { Domain::IPV4 } else { Domain::IPV6 };
    let s: std::net::UdpSocket = Socket::new(domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?.into();
    s.connect(upstream)?;
    s.send(&query)?;
    // SAFETY: the AsyncFd owns the socket; its descriptor stays open and the same until the AsyncFd drops.
    let fd = unsafe { tokio::io::unix::AsyncFd::register_with_interest(s, Interest::READABLE) }
        .map_err(|e| anyhow!("cannot watch the upstream socket: {e}"))?;
    let mut buf = [0u8; 4096];
    loop {
        let mut ready = fd.readable().await?;
        if let Ok(n) = ready.try_io(|s| s.get_ref().recv(&mut buf)) {
            return Ok(buf[..n?].to_vec());
        }
    }
}

async fn ask_tcp(upstream: SocketAddr, query: Vec<u8>) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect(upstream).await?;
    let mut msg = Vec::with_capacity(query.len() + 2);
    msg.extend_from_slice(&(query.len() as u16).to_be_bytes());
    msg.extend_from_slice(&query);
    s.write_all(&msg).await?;
    let len = s.read_u16().await? as usize;
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// One client TCP connection: length-prefixed queries in, answers out, closed when idle.
async fn serve_tcp(
    stream: TcpStream,
    client: ClientRef,
    to_core: mpsc::Sender<(ClientRef, Vec<u8>)>,
    mut answers: mpsc::Receiver<Vec<u8>>,
    closed: mpsc::UnboundedSender<u64>,
) {
    let (mut rd, mut wr) = stream.into_split();
    let reader = async {
        loop {
            let len = match tokio::time::timeout(TCP_IDLE, rd.read_u16()).await {
                Ok(Ok(l)) => l as usize,
                _ => return,
            };
            let mut q = vec![0u8; len];
            // A length that the client never fills (oversized claims) ends at the idle timeout.
            if !matches!(tokio::time::timeout(TCP_IDLE, rd.read_exact(&mut q)).await, Ok(Ok(_))) {
                return;
            }
            if to_core.send((client, q)).await.is_err() {
                return;
            }
        }
    };
    let writer = async {
        while let Some(a) = answers.recv().await {
            let mut msg = Vec::with_capacity(a.len() + 2);
            msg.extend_from_slice(&(a.len().min(u16::MAX as usize) as u16).to_be_bytes());
            msg.extend_from_slice(&a);
            if wr.write_all(&msg).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {},
        _ = writer => {},
    }
    let _ = closed.send(client.conn);
}

/// Runs the DNS server on its own thread until `shutdown`.
async fn serve(
    settings: Settings,
    hosts: Hosts,
    views: crate::views::ViewRequests<LogPage, DnsView>,
    names: crate::views::ViewRequests<NamesQuery, Names>,
    shutdown: CancellationToken,
) -> Result<()> {
    let (done_tx, done_rx) = oneshot::channel();
    let upstream_rt = tokio::runtime::Handle::current();
    std::thread::Builder::new().name("dns".into()).spawn(move || {
        let result = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                tokio::task::LocalSet::new().block_on(&rt, run(settings, hosts, views, names, shutdown, upstream_rt))
            });
        let _ = done_tx.send(result);
    })?;
    done_rx.await.unwrap_or_else(|_| Err(anyhow!("the DNS thread panicked")))
}

struct Shell {
    /// The client socket (the UDP thread receives on it; replies leave from both threads, under the lock).
    udp: Arc<std::net::UdpSocket>,
    /// UDP replies wait here until they are flushed: under load at the end of a batch, one `sendmmsg` (and GSO) for
    /// all of them; below the batching rate after each reply.
    out: SendBatch,
    inflight: HashMap<QueryHandle, AbortHandle>,
    conns: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    responses: mpsc::UnboundedSender<(QueryHandle, Result<Vec<u8>>)>,
    send_failures: u64,
    capture: crate::capture::LocalFeed,
    router: Ipv4Addr,
    /// Upstream queries run on the program's main (multi-threaded) runtime, not on this thread: their socket,
    /// connect, send, readiness and close cost more than the rest of a cache miss, and on another core they run
    /// beside the client loop (uncached answers/s 26k -> 40k in bench/dns.sh; the answers come back by channel).
    upstream_rt: tokio::runtime::Handle,
}

impl Shell {
    fn reply(&mut self, to: ClientRef, bytes: &[u8]) {
        match to.transport {
            Transport::Udp => match to.addr {
                SocketAddr::V4(a) => {
                    if self.capture.is_on() {
                        let key = crate::capture::core::Key::Ip(*a.ip());
                        let origin = crate::capture::ring::Origin::Dns;
                        self.capture.udp(key, origin, false, (self.router, 53), (*a.ip(), a.port()), bytes);
                    }
                    if self.out.is_full() {
                        self.flush();
                    }
                    self.out.slot(a).extend_from_slice(bytes);
                    self.out.commit();
                }
                // The UDP socket is IPv4 (the router's LAN address): no client can have another address.
                SocketAddr::V6(_) => self.send_failures += 1,
            },
            Transport::Tcp => {
                let ok = self.conns.get(&to.conn).is_some_and(|c| c.try_send(bytes.to_vec()).is_ok());
                if !ok {
                    self.send_failures += 1;
                }
            }
        }
    }

    /// Sends the queued UDP replies.
    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.send_failures += self.out.flush(self.udp.as_raw_fd()) as u64;
        }
    }

    fn dispatch(&mut self, actions: &mut Vec<Action>) {
        for a in actions.drain(..) {
            match a {
                Action::Reply { to, bytes } => self.reply(to, &bytes),
                Action::Query { handle, upstream, transport, bytes } => {
                    let tx = self.responses.clone();
                    let task = self.upstream_rt.spawn(async move {
                        let answer = match transport {
                            Transport::Udp => tokio::time::timeout(UPSTREAM_LIMIT, ask_udp(upstream, bytes)).await,
                            Transport::Tcp => tokio::time::timeout(UPSTREAM_LIMIT, ask_tcp(upstream, bytes)).await,
                        };
                        let _ = tx.send((handle, answer.unwrap_or_else(|_| Err(anyhow!("no answer")))));
                    });
                    self.inflight.insert(handle, task.abort_handle());
                }
                Action::Cancel { handle } => {
                    if let Some(t) = self.inflight.remove(&handle) {
                        t.abort();
                    }
                }
            }
        }
    }
}

/// Keeps the local zone equal to the hosts table; `known` is every address the zone has from it.
fn apply_hosts(dns: &mut Dns, known: &mut HashSet<Ipv4Addr>, update: Update) {
    match update {
        Update::Change(Change::Set(h)) => {
            dns.set_host(h.name.as_deref(), h.ip, Some(h.mac));
            known.insert(h.ip);
        }
        Update::Change(Change::Removed(ip)) => {
            dns.remove_host(ip);
            known.remove(&ip);
        }
        Update::Resync(all) => {
            let now: HashSet<Ipv4Addr> = all.iter().map(|h| h.ip).collect();
            for gone in known.difference(&now) {
                dns.remove_host(*gone);
            }
            for h in all {
                dns.set_host(h.name.as_deref(), h.ip, Some(h.mac));
            }
            *known = now;
        }
        Update::Closed => {}
    }
}

/// Copies one page only: every device's whole log (1,024 devices x 200 entries) would hold the lock, and with it
/// the UDP thread, for the whole copy.
fn view(dns: &Dns, page: &LogPage) -> DnsView {
    let devices = match page.device {
        Some(d) => vec![d],
        None => dns.devices(),
    };
    let total_devices = devices.len();
    let limit = page.limit.min(LogPage::MAX_LIMIT);
    DnsView {
        upstreams: dns.upstreams().to_vec(),
        health: dns.health().to_vec(),
        cache_size: dns.cache_capacity(),
        counters: dns.counters(),
        total_devices,
        offset: page.offset,
        limit,
        devices: devices
            .into_iter()
            .skip(page.offset)
            .take(limit)
            .map(|d| DeviceQueries { queries: dns.query_log(&d), device: d })
            .collect(),
    }
}

/// What both threads touch, behind one mutex: the core, the reply path, and the deadline the event loop's timer is
/// armed for (the UDP thread tells the loop when a batch moved the core's next deadline).
struct Shared {
    dns: Dns,
    shell: Shell,
    armed_for: Option<Time>,
}

/// parking_lot's mutex for its fair unlock: under a flood the UDP thread could otherwise take the lock back right
/// after each batch, before the event loop's thread has woken up to take it, and upstream answers and TCP would
/// wait without bound. A panic while the lock is held ends the server anyway (the thread that panicked reports
/// it), so there is no poisoning to handle.
type Locked = Arc<Mutex<Shared>>;

/// The UDP thread: sleeps in `recvmmsg` on the client socket, answers each batch under the lock, until `stop`.
fn serve_udp(sock: Arc<std::net::UdpSocket>, shared: Locked, stop: CancellationToken, rearm: Arc<Notify>) {
    tight_timer_slack();
    let fd = sock.as_raw_fd();
    let mut rb = RecvBatch::new(BATCH, 4096);
    let mut coalescer = Coalescer::new(COALESCE);
    let mut reply = Vec::with_capacity(4096);
    let mut actions = Vec::new();
    while !stop.is_cancelled() {
        let n = match rb.recv_wait(fd) {
            // The stop shuts the socket down for reading, which wakes the receive with an empty datagram.
            _ if stop.is_cancelled() => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted) => continue,
            Err(e) => {
                warn!("DNS receive failed: {e}");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let now = Time::now();
        // Below the batching rate each reply leaves as soon as it is made, as a server that answers one query per
        // system call would do: the first of a few queries that came together does not wait for the others' (p50
        // at 20k/s: 0.069 -> 0.068 ms, level with dnsmasq and Unbound, for ~1 us more CPU per answer). Above it,
        // one `sendmmsg` per batch.
        let at_once = !coalescer.batching();
        {
            let mut guard = shared.lock();
            let Shared { dns, shell, armed_for } = &mut *guard;
            for i in 0..n {
                let (query, from) = rb.get(i);
                let client = ClientRef { addr: SocketAddr::V4(from), transport: Transport::Udp, conn: 0 };
                if shell.capture.is_on() {
                    let key = crate::capture::core::Key::Ip(*from.ip());
                    let origin = crate::capture::ring::Origin::Dns;
                    shell.capture.udp(key, origin, true, (*from.ip(), from.port()), (shell.router, 53), query);
                }
                if let Handled::Replied = dns.handle_query(query, client, now, &mut reply, &mut actions) {
                    shell.reply(client, &reply);
                    if at_once {
                        shell.flush();
                    }
                }
            }
            shell.dispatch(&mut actions);
            shell.flush();
            // A cache miss set a new deadline (retry, SERVFAIL): the loop's timer must be armed for it.
            if dns.next_timeout() != *armed_for {
                rearm.notify_one();
            }
            // Hands the lock straight to the event loop if it is waiting (as fast as a plain unlock if not).
            MutexGuard::unlock_fair(guard);
        }
        let wait = coalescer.after_batch(n, 0);
        if !wait.is_zero() {
            // Under heavy load only (see COALESCE): a short nap, then the next receive brings a fuller batch.
            std::thread::sleep(wait);
        }
    }
}

async fn run(
    settings: Settings,
    hosts: Hosts,
    mut views: crate::views::ViewRequests<LogPage, DnsView>,
    mut names: crate::views::ViewRequests<NamesQuery, Names>,
    shutdown: CancellationToken,
    upstream_rt: tokio::runtime::Handle,
) -> Result<()> {
    let Settings { core: cfg, interface: ifname, capture } = settings;
    let router = cfg.router_ip;
    let ups = cfg.upstreams.clone();
    if ups.is_empty() {
        warn!("no DNS upstream (none configured, none in /etc/resolv.conf): only local names will resolve");
    }
    let mut dns = Dns::new(cfg, u64::from_ne_bytes(rand_seed()));
    // Static hosts and current leases, then every change: names resolve before their device takes a lease.
    let (now_hosts, mut host_changes) = hosts.subscribe();
    let mut known = HashSet::new();
    apply_hosts(&mut dns, &mut known, Update::Resync(now_hosts));
    let mut hosts_open = true;

    let udp = Arc::new(bind_udp(router, &ifname)?);
    let tcp = bind_tcp(router, &ifname)?;
    let upstream_list: Vec<String> = ups.iter().map(|u| u.to_string()).collect();

    let (responses, mut response_rx) = mpsc::unbounded_channel();
    let (tcp_tx, mut tcp_rx) = mpsc::channel::<(ClientRef, Vec<u8>)>(1024);
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel::<u64>();
    let shell = Shell {
        udp: udp.clone(),
        out: SendBatch::new(BATCH),
        inflight: HashMap::new(),
        conns: HashMap::new(),
        responses,
        send_failures: 0,
        capture,
        router,
        upstream_rt,
    };
    let shared: Locked = Arc::new(Mutex::new(Shared { dns, shell, armed_for: None }));
    let rearm = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    // Dropped by the UDP thread when it ends, also by a panic: the loop then stops the server with an error.
    let (udp_alive, mut udp_ended) = oneshot::channel::<()>();
    let udp_thread = {
        let (udp, shared, stop, rearm) = (udp.clone(), shared.clone(), stop.clone(), rearm.clone());
        std::thread::Builder::new().name("dns-udp".into()).spawn(move || {
            let _alive = udp_alive;
            serve_udp(udp, shared, stop, rearm);
        })?
    };
    info!(address = %router, upstreams = %upstream_list.join(","), "DNS server ready");

    let mut next_conn = 1u64;
    let mut tcp_refused = 0u64;
    let mut reply = Vec::with_capacity(4096);
    let mut actions = Vec::new();
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);

    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            _ = &mut udp_ended => break Err(anyhow!("the DNS UDP thread stopped")),
            _ = rearm.notified() => {}
            Some(first) = response_rx.recv() => {
                // Every upstream answer already waiting is taken in this turn, so their replies leave together
                // (at the flush after this `select!`).
                let mut guard = shared.lock();
                let Shared { dns, shell, .. } = &mut *guard;
                let mut next = Some(first);
                let mut taken = 0;
                while let Some((handle, answer)) = next {
                    shell.inflight.remove(&handle);
                    match answer {
                        Ok(bytes) => dns.handle_response(handle, &bytes, Time::now(), &mut actions),
                        Err(e) => {
                            debug!(?handle, "upstream query failed: {e:#}");
                            dns.handle_failure(handle, Time::now(), &mut actions)
                        }
                    }
                    shell.dispatch(&mut actions);
                    taken += 1;
                    next = if taken < BATCH { response_rx.try_recv().ok() } else { None };
                }
            }
            Some((client, query)) = tcp_rx.recv() => {
                let mut guard = shared.lock();
                let Shared { dns, shell, .. } = &mut *guard;
                if let Handled::Replied = dns.handle_query(&query, client, Time::now(), &mut reply, &mut actions) {
                    shell.reply(client, &reply);
                }
                shell.dispatch(&mut actions);
            }
            accepted = tcp.accept() => {
                let Ok((stream, addr)) = accepted else { continue };
                let mut guard = shared.lock();
                if guard.shell.conns.len() >= MAX_TCP_CLIENTS {
                    tcp_refused += 1;
                    if tcp_refused == 1 {
                        warn!("too many DNS-over-TCP clients; closing new ones (counted)");
                    }
                    continue;
                }
                let client = ClientRef { addr, transport: Transport::Tcp, conn: next_conn };
                next_conn += 1;
                let (atx, arx) = mpsc::channel(64);
                guard.shell.conns.insert(client.conn, atx);
                tokio::task::spawn_local(serve_tcp(stream, client, tcp_tx.clone(), arx, closed_tx.clone()));
            }
            Some(conn) = closed_rx.recv() => { shared.lock().shell.conns.remove(&conn); }
            update = host_changes.next(), if hosts_open => {
                hosts_open = !matches!(update, Update::Closed);
                apply_hosts(&mut shared.lock().dns, &mut known, update);
            }
            Some((page, req)) = views.recv() => { let _ = req.send(view(&shared.lock().dns, &page)); }
            Some((q, req)) = names.recv() => {
                let dns = &shared.lock().dns;
                let _ = req.send(Names(q.remotes.iter().map(|r| dns.name_for(&q.device, *r).map(str::to_owned)).collect()));
            }
            _ = &mut timer => {
                // A fired sleep stays ready: park it far away until the core asks again.
                timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
                let mut guard = shared.lock();
                let Shared { dns, shell, armed_for } = &mut *guard;
                *armed_for = None;
                dns.handle_timeout(Time::now(), &mut actions);
                shell.dispatch(&mut actions);
            }
        }
        // Replies queued by any branch above (SERVFAIL at a deadline, TCP-triggered answers to UDP waiters), and
        // the core's timer (upstream retries, SERVFAIL deadlines) re-armed when its deadline moved. No lock is
        // held across an await.
        let mut guard = shared.lock();
        let Shared { dns, shell, armed_for } = &mut *guard;
        shell.flush();
        let next = dns.next_timeout();
        if next != *armed_for {
            *armed_for = next;
            let wait = next.map_or(Duration::from_secs(3600), |t| Duration::from_millis(t.ms_since(Time::now())));
            timer.as_mut().reset(tokio::time::Instant::now() + wait);
        }
    };
    stop.cancel();
    // Wakes the UDP thread out of its receive at once (`net::mmsg` tests that it does).
    // SAFETY: shutdown(2) on a descriptor the Arc keeps open.
    unsafe { libc::shutdown(udp.as_raw_fd(), libc::SHUT_RD) };
    let _ = tokio::task::spawn_blocking(move || udp_thread.join()).await;
    let mut guard = shared.lock();
    for (_, t) in guard.shell.inflight.drain() {
        t.abort();
    }
    info!(send_failures = guard.shell.send_failures, tcp_refused, "DNS server stopped");
    result
}

fn rand_seed() -> [u8; 8] {
    let mut b = [0u8; 8];
    // getrandom(2) never fails for 8 bytes once the pool is initialised; fall back to the clock if it does.
    // SAFETY: writes at most 8 bytes into b.
    if unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) } != 8 {
        b = Time::now().unix_ms().to_ne_bytes();
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn the_view_carries_one_page_of_devices() {
        let cfg = DnsConfig::new(Ipv4Addr::new(10, 0, 0, 1), "10.0.0.0/24".parse().unwrap(), vec![]);
        let mut dns = Dns::new(cfg, 1);
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.add_query(Query::query(Name::from_ascii("gatekeeper.lan.").unwrap(), RecordType::A));
        let q = m.to_vec().unwrap();
        let (mut reply, mut actions) = (Vec::new(), Vec::new());
        for n in 0..5u8 {
            let addr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 10 + n), 5000));
            let from = ClientRef { addr, transport: Transport::Udp, conn: 0 };
            let _ = dns.handle_query(&q, from, Time::from_unix_ms(1000 + u64::from(n)), &mut reply, &mut actions);
        }
        let v = view(&dns, &LogPage { device: None, offset: 1, limit: 2 });
        assert_eq!((v.total_devices, v.devices.len(), v.offset, v.limit), (5, 2, 1, 2));
        // Most recently active first: .14, then .13 (skipped), .12, .11.
        assert_eq!(v.devices[0].device.to_string(), "10.0.0.13");
        assert_eq!(v.devices[0].queries.len(), 1);
        let one: Device = "10.0.0.10".parse().unwrap();
        let v = view(&dns, &LogPage { device: Some(one), ..LogPage::default() });
        assert_eq!((v.total_devices, v.devices.len()), (1, 1));
        assert_eq!(v.devices[0].device, one);
        let v = view(&dns, &LogPage { limit: 100_000, ..LogPage::default() });
        assert_eq!((v.devices.len(), v.limit), (5, LogPage::MAX_LIMIT));
        assert!(view(&dns, &LogPage { offset: 9, ..LogPage::default() }).devices.is_empty());
    }
}
