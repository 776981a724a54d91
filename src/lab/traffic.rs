//! Busy simulated devices for `gatekeeper lab`.
//!
//! Why: an idle lab shows a newcomer empty tables and flat charts. With this, each device behaves roughly like its
//! kind within seconds of getting its lease: the laptop and phone browse (small files every few seconds) and look
//! names up, the tv streams and now and then downloads 1-10 MB, the camera, speaker and printer chat with their
//! "cloud" in small UDP datagrams, and most devices ping the internet now and then. All of it has jitter, and all
//! of it together stays light (a few hundred KB/s, a small fraction of a core).
//!
//! Everything stays between lab namespaces. The servers run on threads inside `wan`: an HTTP/1.1 server on
//! [`WAN_ADDR`]:[`HTTP_PORT`] with generated files ([`FILES`]) and a UDP sink on [`WAN_ADDR`]:[`UDP_PORT`] that
//! acknowledges each datagram. Each device is a thread inside its own client namespace, so that its traffic uses
//! the route, resolver and NAT of the gateway like a real device's. A failure (the gateway still starting, a lease
//! not yet bound) is counted and the activity tried again a few seconds later; nothing here ends the lab.
//!
//! Only the `lab` command starts it (not with `--quiet`); the end-to-end tests build quiet labs.

use super::upstream::udp_query;
use super::{Lab, RecordType, WAN_ADDR, build_query, cached_name, enter_netns, uncached_name};
use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use std::collections::BTreeSet;
use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The HTTP server's port in `wan`.
pub const HTTP_PORT: u16 = 80;
/// The UDP sink's port in `wan` (CoAP's, what IoT devices talk).
pub const UDP_PORT: u16 = 5683;
/// The files the HTTP server offers: path and size. The content is generated, nothing is read from disk.
pub const FILES: [(&str, usize); 4] = [("/10k", 10_000), ("/100k", 100_000), ("/1m", 1_000_000), ("/10m", 10_000_000)];
/// Every activity first runs within this long after start, so that the UI shows traffic within seconds.
pub const FIRST_WITHIN: Duration = Duration::from_secs(3);
/// A failed activity is tried again after 2-4 s (not a whole period later).
pub const RETRY: Duration = Duration::from_secs(3);

/// How often threads blocked on a socket look at the stop flag.
const POLL: Duration = Duration::from_millis(250);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head the server reads.
const MAX_HEAD: usize = 8192;

/// The size of the file at `path`, if the server has one there.
pub fn file_size(path: &str) -> Option<usize> {
    FILES.iter().find(|(p, _)| *p == path).map(|(_, n)| *n)
}

/// Why the server refused a request: the status it answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    BadRequest = 400,
    MethodNotAllowed = 405,
    VersionNotSupported = 505,
}

/// The path of an HTTP/1.x `GET` (or `HEAD`) request, from its head (everything before the blank line, or more).
pub fn parse_request(head: &[u8]) -> std::result::Result<(&str, bool), Refusal> {
    let line_end = head.windows(2).position(|w| w == b"\r\n").unwrap_or(head.len());
    let line = std::str::from_utf8(&head[..line_end]).map_err(|_| Refusal::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    if !version.starts_with("HTTP/") {
        return Err(Refusal::BadRequest);
    }
    if version != "HTTP/1.1" && version != "HTTP/1.0" {
        return Err(Refusal::VersionNotSupported);
    }
    if !target.starts_with('/') {
        return Err(Refusal::BadRequest);
    }
    let path = target.split('?').next().unwrap_or(target);
    match method {
        "GET" => Ok((path, true)),
        "HEAD" => Ok((path, false)),
        _ => Err(Refusal::MethodNotAllowed),
    }
}

/// Status code and `Content-Length` of a response head, if it is one.
pub fn parse_response_head(head: &[u8]) -> Option<(u16, Option<usize>)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let status = lines.next()?.strip_prefix("HTTP/1.")?.get(2..)?.split(' ').next()?.parse().ok()?;
    let length = lines.find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse().ok()).flatten()
    });
    Some((status, length))
}

/// The end of the head (the index after `\r\n\r\n`), once it is all there.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads from `conn` into `buf` until a whole request or response head is there (at most [`MAX_HEAD`] bytes);
/// returns where the head ends and how much was read (the rest is the body's start).
fn read_head(conn: &mut TcpStream, buf: &mut [u8]) -> Result<(usize, usize)> {
    let mut len = 0;
    loop {
        let n = conn.read(&mut buf[len..])?;
        anyhow::ensure!(n > 0, "closed before the head ended");
        len += n;
        if let Some(end) = head_end(&buf[..len]) {
            return Ok((end, len));
        }
        anyhow::ensure!(len < MAX_HEAD.min(buf.len()), "head over {MAX_HEAD} bytes");
    }
}

/// What a device does now and then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// GET one of these paths (picked at random) from the HTTP server.
    Fetch(&'static [&'static str]),
    /// A DNS lookup of a lab name at the device's resolver.
    Lookup,
    /// One ICMP echo to [`WAN_ADDR`].
    Ping,
    /// `burst` UDP datagrams of `size` bytes to the sink, which acknowledges each.
    Telemetry { size: usize, burst: u8 },
}

/// Small pages, mostly 10 KB.
const BROWSE: Action = Action::Fetch(&["/10k", "/10k", "/10k", "/100k"]);
/// Audio or video in chunks.
const STREAM: Action = Action::Fetch(&["/100k"]);
/// An update, a film: 1 or 10 MB.
const DOWNLOAD: Action = Action::Fetch(&["/1m", "/10m"]);
const PATCH: Action = Action::Fetch(&["/1m"]);

/// An action and its mean period; each turn comes after 0.5-1.5 periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    pub action: Action,
    pub every: Duration,
}

/// What a device named `name` does, by its role (`laptop`, `phone`, `tv`, ...; anything else browses lightly).
pub fn behaviour(name: &str) -> Vec<Activity> {
    use Action::{Lookup, Ping, Telemetry};
    let plan: &[(Action, u64)] = match name {
        "laptop" => &[(BROWSE, 4), (Lookup, 3), (Ping, 15), (PATCH, 30)],
        "phone" => &[(BROWSE, 6), (Lookup, 5), (Ping, 20)],
        "tablet" => &[(BROWSE, 8), (Lookup, 6), (STREAM, 12)],
        "tv" => &[(DOWNLOAD, 45), (STREAM, 10), (Lookup, 10), (Ping, 30)],
        "console" => &[(Telemetry { size: 80, burst: 5 }, 2), (Ping, 10), (Lookup, 10), (PATCH, 40)],
        "printer" => &[(Telemetry { size: 200, burst: 1 }, 6), (Lookup, 30)],
        "speaker" => &[(STREAM, 8), (Telemetry { size: 120, burst: 1 }, 4), (Lookup, 15)],
        "camera" => &[(Telemetry { size: 1000, burst: 4 }, 3), (Ping, 20), (Lookup, 30)],
        _ => &[(BROWSE, 10), (Lookup, 8), (Ping, 30)],
    };
    plan.iter().map(|&(action, secs)| Activity { action, every: Duration::from_secs(secs) }).collect()
}

/// When each of a device's activities runs next, as time since the device started: sans-IO, so it is testable.
pub struct Schedule {
    plan: Vec<Activity>,
    due: Vec<Duration>,
    rng: StdRng,
}

impl Schedule {
    /// Every activity's first turn comes within [`FIRST_WITHIN`] (or its period, if shorter).
    pub fn new(plan: Vec<Activity>, seed: u64) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed);
        let due = plan.iter().map(|a| a.every.min(FIRST_WITHIN).mul_f64(rng.random_range(0.0..1.0))).collect();
        Schedule { plan, due, rng }
    }

    /// The earliest due activity and when it is due; its next turn is set 0.5-1.5 periods after that, or after `now`
    /// if that is later (a device that fell behind, say during a long timeout, catches up by one turn, not a burst).
    pub fn next(&mut self, now: Duration) -> (Duration, Activity, usize) {
        let (i, at) = self.due.iter().copied().enumerate().min_by_key(|&(_, d)| d).expect("an empty plan");
        let period = self.plan[i].every.mul_f64(self.rng.random_range(0.5..1.5));
        self.due[i] = at.max(now) + period;
        (at, self.plan[i], i)
    }

    /// Activity `i` failed at `now`: its next turn comes after 0.67-1.33 [`RETRY`], if that is sooner.
    pub fn retry(&mut self, i: usize, now: Duration) {
        let soon = now + RETRY.mul_f64(self.rng.random_range(0.67..1.33));
        self.due[i] = self.due[i].min(soon);
    }
}

/// What flowed so far, from both ends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Served by the HTTP server in `wan`: requests, body bytes.
    pub http_requests: u64,
    pub http_bytes: u64,
    /// The addresses HTTP requests came from: the gateway's WAN address only, if the NAT does its job.
    pub http_peers: BTreeSet<IpAddr>,
    /// Datagrams the UDP sink received, and from where.
    pub udp_datagrams: u64,
    pub udp_peers: BTreeSet<IpAddr>,
    /// Completed by the devices: whole files and their bytes, answered lookups, answered pings, acknowledgements.
    pub fetches: u64,
    pub fetched_bytes: u64,
    pub lookups: u64,
    pub pings: u64,
    pub acks: u64,
    /// Activities that failed (and were retried).
    pub failures: u64,
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} fetches ({:.1} MB), {} lookups, {} pings, {} datagrams ({} acknowledged), {} failures",
            self.fetches,
            self.fetched_bytes as f64 / 1e6,
            self.lookups,
            self.pings,
            self.udp_datagrams,
            self.acks,
            self.failures
        )
    }
}

#[derive(Default)]
struct Counters {
    http_requests: AtomicU64,
    http_bytes: AtomicU64,
    udp_datagrams: AtomicU64,
    fetches: AtomicU64,
    fetched_bytes: AtomicU64,
    lookups: AtomicU64,
    pings: AtomicU64,
    acks: AtomicU64,
    failures: AtomicU64,
    http_peers: Mutex<BTreeSet<IpAddr>>,
    udp_peers: Mutex<BTreeSet<IpAddr>>,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// What every thread of a generator shares: the counters, and a stop flag that also wakes sleepers.
#[derive(Default)]
struct Shared {
    counters: Counters,
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Shared {
    fn stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps until `t` or until stopped; false if stopped.
    fn sleep_until(&self, t: Instant) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let now = Instant::now();
            if *stopped {
                return false;
            }
            if now >= t {
                return true;
            }
            stopped = self.wake.wait_timeout(stopped, t - now).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    fn stats(&self) -> Stats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let set = |s: &Mutex<BTreeSet<IpAddr>>| s.lock().unwrap_or_else(|e| e.into_inner()).clone();
        Stats {
            http_requests: get(&c.http_requests),
            http_bytes: get(&c.http_bytes),
            http_peers: set(&c.http_peers),
            udp_datagrams: get(&c.udp_datagrams),
            udp_peers: set(&c.udp_peers),
            fetches: get(&c.fetches),
            fetched_bytes: get(&c.fetched_bytes),
            lookups: get(&c.lookups),
            pings: get(&c.pings),
            acks: get(&c.acks),
            failures: get(&c.failures),
        }
    }
}

/// The running servers and devices. [`Generator::stop`] or dropping it ends every thread (within a few seconds:
/// a device may be in the middle of a timeout); do that before the lab is removed.
pub struct Generator {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Generator {
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Stops and joins every thread; returns the totals.
    pub fn stop(mut self) -> Stats {
        self.halt();
        self.stats()
    }

    fn halt(&mut self) {
        self.shared.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts the servers in `wan` and one thread per device, `(name, client index)`, in `lab.client(index)`; the
/// devices send their DNS queries to `resolver` (the gateway's LAN address, what DHCP gives them).
pub fn start(lab: &Lab, resolver: Ipv4Addr, devices: &[(String, usize)]) -> Result<Generator> {
    let mut generator = Generator { shared: Arc::default(), threads: Vec::new() };
    let wan_ip: Ipv4Addr = WAN_ADDR.parse()?;
    let shared = generator.shared.clone();
    let http = spawn_in(&lab.wan(), "lab-http", move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddrV4::new(wan_ip, HTTP_PORT).into())?;
        s.listen(64)?;
        // Linux's accept(2) honours SO_RCVTIMEO: the loop looks at the stop flag between waits.
        s.set_read_timeout(Some(POLL))?;
        Ok(move || http_server(s.into(), &shared))
    })?;
    generator.threads.push(http);
    let shared = generator.shared.clone();
    let udp = spawn_in(&lab.wan(), "lab-udp", move || {
        let s = UdpSocket::bind((wan_ip, UDP_PORT))?;
        s.set_read_timeout(Some(POLL))?;
        Ok(move || udp_sink(&s, &shared))
    })?;
    generator.threads.push(udp);
    for (name, i) in devices {
        let shared = generator.shared.clone();
        let device_name = name.clone();
        let t = spawn_in(&lab.client(*i), &format!("lab-{name}"), move || {
            let device = Device::open(device_name, resolver)?;
            Ok(move || device.run(&shared))
        })?;
        generator.threads.push(t);
    }
    Ok(generator)
}

/// Spawns a thread that enters `ns`, runs `setup` there (its error is returned here), then the function it returns.
fn spawn_in<F: FnOnce()>(
    ns: &str,
    name: &str,
    setup: impl FnOnce() -> Result<F> + Send + 'static,
) -> Result<JoinHandle<()>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let ns_owned = ns.to_owned();
    let thread = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let run = enter_netns(&ns_owned).and_then(|()| setup());
        match run {
            Ok(run) => {
                let _ = tx.send(Ok(()));
                run();
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    })?;
    let ready = rx.recv().unwrap_or_else(|_| Err(anyhow::anyhow!("{name} panicked while starting")));
    if let Err(e) = ready {
        let _ = thread.join();
        return Err(e.context(format!("{name} in {ns}")));
    }
    Ok(thread)
}

fn http_server(listener: std::net::TcpListener, shared: &Arc<Shared>) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !shared.stopped() {
        match listener.accept() {
            Ok((conn, peer)) => {
                shared.counters.http_peers.lock().unwrap_or_else(|e| e.into_inner()).insert(peer.ip());
                let shared = shared.clone();
                let t = std::thread::Builder::new().name("lab-http-conn".into()).spawn(move || {
                    // A client that goes away mid-answer is no error of the server's.
                    let _ = serve(conn, &shared);
                });
                connections.extend(t.ok());
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // A connection reset before it was accepted, say; never fatal.
            Err(_) => std::thread::sleep(POLL),
        }
        connections.retain(|t| !t.is_finished());
    }
    for t in connections {
        let _ = t.join();
    }
}

/// Generated file content: printable, the same for every file.
static CONTENT: [u8; 16384] = {
    let mut b = [0u8; 16384];
    let mut i = 0;
    while i < b.len() {
        b[i] = if i % 64 == 63 { b'\n' } else { b'a' + (i % 26) as u8 };
        i += 1;
    }
    b
};

/// Answers one request on `conn`, then closes it.
fn serve(mut conn: TcpStream, shared: &Shared) -> Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_HEAD];
    let (end, _) = read_head(&mut conn, &mut buf)?;
    let (status, size, body) = match parse_request(&buf[..end]) {
        Ok((path, body)) => match file_size(path) {
            Some(size) => (200, size, body),
            None => (404, 0, false),
        },
        Err(r) => (r as u16, 0, false),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        505 => "HTTP Version Not Supported",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: gatekeeper-lab\r\nContent-Type: text/plain\r\n\
         Content-Length: {size}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes())?;
    add(&shared.counters.http_requests, 1);
    let mut left = if body { size } else { 0 };
    while left > 0 && !shared.stopped() {
        let n = left.min(CONTENT.len());
        conn.write_all(&CONTENT[..n])?;
        add(&shared.counters.http_bytes, n as u64);
        left -= n;
    }
    Ok(())
}

fn udp_sink(sock: &UdpSocket, shared: &Shared) {
    let mut buf = [0u8; 2048];
    while !shared.stopped() {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else { continue };
        add(&shared.counters.udp_datagrams, 1);
        shared.counters.udp_peers.lock().unwrap_or_else(|e| e.into_inner()).insert(peer.ip());
        let _ = sock.send_to(format!("ack {n}").as_bytes(), peer);
    }
}

/// A simulated device: its thread lives in its namespace, with a UDP socket (one long-lived flow, like an IoT
/// device's) and a raw ICMP socket for pings.
struct Device {
    name: String,
    resolver: SocketAddr,
    udp: UdpSocket,
    icmp: socket2::Socket,
    ping_id: u16,
    ping_seq: u16,
    rng: StdRng,
}

impl Device {
    fn open(name: String, resolver: Ipv4Addr) -> Result<Device> {
        let udp = UdpSocket::bind("0.0.0.0:0")?;
        udp.set_read_timeout(Some(Duration::from_millis(500)))?;
        let icmp = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::ICMPV4))
            .context("raw ICMP socket")?;
        icmp.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut rng = StdRng::seed_from_u64(rand::random());
        Ok(Device { name, resolver: (resolver, 53).into(), udp, icmp, ping_id: rng.random(), ping_seq: 0, rng })
    }

    fn run(mut self, shared: &Shared) {
        let mut schedule = Schedule::new(behaviour(&self.name), self.rng.random());
        let start = Instant::now();
        loop {
            let (at, activity, i) = schedule.next(start.elapsed());
            if !shared.sleep_until(start + at) {
                return;
            }
            if let Err(e) = self.act(activity.action, shared) {
                add(&shared.counters.failures, 1);
                tracing::debug!("lab device {}: {:?}: {e:#}", self.name, activity.action);
                schedule.retry(i, start.elapsed());
            }
        }
    }

    fn act(&mut self, action: Action, shared: &Shared) -> Result<()> {
        let c = &shared.counters;
        match action {
            Action::Fetch(paths) => {
                let path = paths[self.rng.random_range(0..paths.len())];
                let bytes = self.fetch(path, shared)?;
                add(&c.fetches, 1);
                add(&c.fetched_bytes, bytes);
            }
            Action::Lookup => {
                let name = match self.rng.random_range(0..10) {
                    0..3 => "www.test".to_owned(),
                    3 => "mail.test".to_owned(),
                    4..8 => cached_name(self.rng.random_range(0..super::CACHED_NAMES)),
                    _ => uncached_name(self.rng.random::<u32>() as usize),
                };
                let query = build_query(self.rng.random(), &name, RecordType::A);
                udp_query(self.resolver, &query, Duration::from_secs(2))?;
                add(&c.lookups, 1);
            }
            Action::Ping => {
                self.ping()?;
                add(&c.pings, 1);
            }
            Action::Telemetry { size, burst } => {
                let sink = SocketAddr::from((WAN_ADDR.parse::<Ipv4Addr>()?, UDP_PORT));
                let mut msg = format!("{} telemetry {}", self.name, self.rng.random::<u32>()).into_bytes();
                msg.resize(size.max(msg.len()), b'.');
                for _ in 0..burst {
                    self.udp.send_to(&msg, sink)?;
                }
                let mut buf = [0u8; 64];
                let mut acked = 0;
                // Late acknowledgements of an earlier burst count too.
                while acked < burst {
                    match self.udp.recv(&mut buf) {
                        Ok(_) => acked += 1,
                        Err(_) if acked > 0 => break,
                        Err(e) => return Err(e).context("no acknowledgement"),
                    }
                }
                add(&c.acks, u64::from(acked));
            }
        }
        Ok(())
    }

    /// GETs `path` over a new connection and reads the whole body; returns its length.
    fn fetch(&self, path: &str, shared: &Shared) -> Result<u64> {
        let server = SocketAddr::from((WAN_ADDR.parse::<Ipv4Addr>()?, HTTP_PORT));
        let mut conn = TcpStream::connect_timeout(&server, CONNECT_TIMEOUT)?;
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: www.test\r\nUser-Agent: lab-{}\r\nConnection: close\r\n\r\n",
            self.name
        );
        conn.write_all(request.as_bytes())?;
        let mut buf = vec![0u8; 65536];
        let (end, len) = read_head(&mut conn, &mut buf)?;
        let (status, length) = parse_response_head(&buf[..end]).context("not an HTTP response")?;
        anyhow::ensure!(status == 200, "{path}: status {status}");
        let length = length.context("no Content-Length")? as u64;
        let mut got = (len - end) as u64;
        while got < length {
            anyhow::ensure!(!shared.stopped(), "stopped");
            let n = conn.read(&mut buf)?;
            anyhow::ensure!(n > 0, "{path}: closed after {got} of {length} bytes");
            got += n as u64;
        }
        Ok(got)
    }

    /// One echo request to [`WAN_ADDR`]; waits up to a second for its reply.
    fn ping(&mut self) -> Result<()> {
        self.ping_seq = self.ping_seq.wrapping_add(1);
        let packet = echo_request(self.ping_id, self.ping_seq, self.name.as_bytes());
        let to = SocketAddr::from((WAN_ADDR.parse::<Ipv4Addr>()?, 0));
        self.icmp.send_to(&packet, &to.into())?;
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 1500];
        while Instant::now() < deadline {
            let Ok(n) = self.icmp.recv(&mut buf) else { continue };
            // SAFETY: recv initialised the first n bytes.
            let got = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
            if is_echo_reply(got, self.ping_id, self.ping_seq) {
                return Ok(());
            }
        }
        anyhow::bail!("no echo reply from {WAN_ADDR}")
    }
}

/// An ICMP echo request (type 8) with its checksum.
fn echo_request(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    let sum = internet_checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// RFC 1071.
fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether `packet` (IPv4 header included, as a raw socket reads it) is the echo reply to `id`/`seq`.
fn is_echo_reply(packet: &[u8], id: u16, seq: u16) -> bool {
    let Some(icmp) = packet.first().and_then(|&b| packet.get(usize::from(b & 0x0f) * 4..)) else { return false };
    icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() && icmp[6..8] == seq.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_parsed() {
        assert_eq!(parse_request(b"GET /10k HTTP/1.1\r\nHost: www.test\r\n\r\n"), Ok(("/10k", true)));
        assert_eq!(parse_request(b"HEAD /1m?x=1 HTTP/1.0\r\n\r\n"), Ok(("/1m", false)));
        assert_eq!(parse_request(b"POST /10k HTTP/1.1\r\n\r\n"), Err(Refusal::MethodNotAllowed));
        assert_eq!(parse_request(b"GET /10k HTTP/2\r\n\r\n"), Err(Refusal::VersionNotSupported));
        assert_eq!(parse_request(b"GET http://x/ HTTP/1.1\r\n\r\n"), Err(Refusal::BadRequest));
        assert_eq!(parse_request(b"GET /10k\r\n\r\n"), Err(Refusal::BadRequest));
        assert_eq!(parse_request(b"GET  /10k HTTP/1.1\r\n\r\n"), Err(Refusal::BadRequest));
        assert_eq!(parse_request(b"\xff\xfe /x HTTP/1.1\r\n\r\n"), Err(Refusal::BadRequest));
        assert_eq!(parse_request(b""), Err(Refusal::BadRequest));
    }

    #[test]
    fn responses_are_parsed() {
        let head = b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 10000\r\n\r\n";
        assert_eq!(parse_response_head(head), Some((200, Some(10_000))));
        assert_eq!(parse_response_head(b"HTTP/1.0 404 Not Found\r\n\r\n"), Some((404, None)));
        assert_eq!(parse_response_head(b"SSH-2.0-x\r\n\r\n"), None);
        assert_eq!(head_end(head), Some(head.len()));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
    }

    #[test]
    fn files_have_their_sizes() {
        assert_eq!(file_size("/10k"), Some(10_000));
        assert_eq!(file_size("/10m"), Some(10_000_000));
        assert_eq!(file_size("/"), None);
        // Every path a device fetches exists.
        for name in ["laptop", "phone", "tv", "printer", "tablet", "console", "speaker", "camera", "device9"] {
            for a in behaviour(name) {
                if let Action::Fetch(paths) = a.action {
                    assert!(paths.iter().all(|p| file_size(p).is_some()), "{name}: {paths:?}");
                }
            }
        }
        let Action::Fetch(big) = DOWNLOAD else { unreachable!() };
        assert!(big.iter().all(|p| (1_000_000..=10_000_000).contains(&file_size(p).unwrap())));
    }

    #[test]
    fn roles_differ_and_iot_devices_chat() {
        let telemetry = |name: &str| behaviour(name).iter().any(|a| matches!(a.action, Action::Telemetry { .. }));
        assert!(telemetry("camera") && telemetry("speaker") && telemetry("printer"));
        assert!(!telemetry("laptop"));
        assert!(behaviour("tv").iter().any(|a| a.action == DOWNLOAD));
        assert_eq!(behaviour("device9"), behaviour("device12"));
    }

    #[test]
    fn schedule_starts_soon_and_keeps_the_mean_rate() {
        let plan = behaviour("laptop");
        let mut s = Schedule::new(plan.clone(), 7);
        let mut first = vec![None; plan.len()];
        let mut count = vec![0u32; plan.len()];
        let hour = Duration::from_secs(3600);
        loop {
            // On time: each turn runs when it is due.
            let at = s.earliest();
            if at > hour {
                break;
            }
            let (at2, a, i) = s.next(at);
            assert_eq!((at2, a), (at, plan[i]));
            first[i].get_or_insert(at);
            count[i] += 1;
        }
        for (i, a) in plan.iter().enumerate() {
            assert!(first[i].unwrap() <= FIRST_WITHIN, "{a:?} first at {:?}", first[i]);
            let expected = hour.as_secs_f64() / a.every.as_secs_f64();
            let got = f64::from(count[i]);
            assert!((got - expected).abs() < expected * 0.1, "{a:?}: {got} turns in an hour, expected ~{expected}");
        }
    }

    impl Schedule {
        fn earliest(&self) -> Duration {
            self.due.iter().copied().min().unwrap()
        }
    }

    #[test]
    fn a_device_that_fell_behind_catches_up_by_one_turn_and_failures_retry_soon() {
        let mut s = Schedule::new(behaviour("phone"), 1);
        // Stuck for a minute (a long timeout): every activity is overdue.
        let now = Duration::from_secs(60);
        let mut turns = 0;
        while s.earliest() <= now {
            s.next(now);
            turns += 1;
        }
        assert_eq!(turns, 3, "one turn per activity, not a burst of the missed ones");
        assert!(s.due.iter().all(|d| *d >= now + Duration::from_secs(2)), "{:?}", s.due);
        // The ping (every 20 s) fails: tried again within 2-4 s instead of 10-30 s.
        let ping = s.plan.iter().position(|a| a.action == Action::Ping).unwrap();
        s.retry(ping, now);
        let retry_at = s.due[ping] - now;
        assert!((RETRY.mul_f64(0.66)..=RETRY.mul_f64(1.34)).contains(&retry_at), "{retry_at:?}");
        // A retry never postpones a turn that was due sooner.
        let before = s.due[ping];
        s.retry(ping, now + Duration::from_secs(30));
        assert_eq!(s.due[ping], before);
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let p = echo_request(0x1234, 7, b"laptop");
        assert_eq!(internet_checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(&p[..2], &[8, 0]);
        let mut reply = vec![0x45u8; 20];
        reply.extend_from_slice(&p);
        reply[20] = 0;
        assert!(is_echo_reply(&reply, 0x1234, 7));
        assert!(!is_echo_reply(&reply, 0x1234, 8));
        assert!(!is_echo_reply(&reply[..24], 0x1234, 7));
        assert!(!is_echo_reply(&[], 1, 1));
    }
}
