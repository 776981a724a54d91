//! The port mapping protocols' IO: NAT-PMP and PCP on UDP 5351 of the router's LAN address, and UPnP IGD (SSDP
//! on 239.255.255.250:1900, joined on the LAN only; its description and control over HTTP on the LAN address).
//! Every request runs against the ports state on the ports task (`PortsHandle::with`), so the three protocols
//! and the admin never race. None of it is reachable from the WAN: the sockets are on the LAN address or the LAN's
//! multicast group, the firewall drops new connections from the WAN to the router, and the cores answer only
//! sources inside the LAN.

use super::shell::PortsHandle;
use super::{pmp, upnp};
use crate::counters::Counters;
use crate::types::Time;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// `[ports]`: which protocols are on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub natpmp: bool,
    pub pcp: bool,
    pub upnp: bool,
    pub upnp_port: u16,
    /// The web UI's port (UPnP's presentation URL).
    pub web_port: u16,
    /// The WAN interface (its byte counters are UPnP's GetTotalBytes*).
    pub wan_if: Option<String>,
}

const SSDP_GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
const SSDP_PORT: u16 = 1900;
/// NAT-PMP and PCP announcements go to all hosts of the LAN (RFC 6886 3.2.1, RFC 6887 14.1.3).
const ALL_HOSTS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 1), pmp::CLIENT_PORT);
/// How often SSDP's `ssdp:alive` is repeated (its CACHE-CONTROL max-age is longer).
const NOTIFY_EVERY: Duration = Duration::from_secs(600);

/// Requests answered and dropped, by protocol and reason (in `/api/ports`).
#[derive(Default)]
pub struct Stats(parking_lot::Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>);

impl Stats {
    fn count(&self, what: &'static str, protocol: &'static str, reason: &'static str) {
        *self.0.lock().entry((what, protocol, reason)).or_default() += 1;
    }

    pub fn counters(&self) -> Counters {
        let mut c = Counters::new();
        for (&(what, protocol, reason), &v) in self.0.lock().iter() {
            let labels: &[(&'static str, &str)] = if reason.is_empty() {
                &[("protocol", protocol)]
            } else {
                &[("protocol", protocol), ("reason", reason)]
            };
            c.push(what, labels, crate::counters::Kind::Counter, v);
        }
        c
    }
}

/// The running protocols (their tasks end at shutdown, or at `stop`).
pub struct Protocols {
    pmp: Option<Arc<UdpSocket>>,
    ssdp: Option<(Arc<UdpSocket>, upnp::UpnpConfig)>,
    tasks: Vec<JoinHandle<()>>,
    announcing: Option<JoinHandle<()>>,
    pub stats: Arc<Stats>,
}

fn udp_socket(addr: SocketAddrV4) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(addr).into())?;
    Ok(s.into())
}

/// SSDP's socket: port 1900 on all addresses (the group's datagrams are addressed to it), the group joined on the
/// LAN address's interface only, multicast sent from the LAN address.
fn ssdp_socket(router: Ipv4Addr) -> std::io::Result<std::net::UdpSocket> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SSDP_PORT)).into())?;
    s.join_multicast_v4(&SSDP_GROUP, &router)?;
    s.set_multicast_if_v4(&router)?;
    s.set_multicast_ttl_v4(2)?;
    s.set_multicast_loop_v4(false)?;
    Ok(s.into())
}

/// The UPnP device's UUID: stable for this machine and LAN address (from /etc/machine-id), so control points
/// that remember the gateway find it again after a restart.
fn device_uuid(router: Ipv4Addr) -> String {
    let id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default();
    let mut h: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for b in id.trim().bytes().chain(router.octets()) {
        h = (h ^ u128::from(b)).wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    let x = format!("{h:032x}");
    format!("{}-{}-4{}-a{}-{}", &x[0..8], &x[8..12], &x[13..16], &x[17..20], &x[20..32])
}

fn link_stats(wan_if: Option<&str>, started: std::time::Instant) -> upnp::soap::LinkStats {
    let read = |what: &str| {
        wan_if
            .and_then(|i| std::fs::read_to_string(format!("/sys/class/net/{i}/statistics/{what}")).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    upnp::soap::LinkStats {
        bytes_sent: read("tx_bytes"),
        bytes_received: read("rx_bytes"),
        packets_sent: read("tx_packets"),
        packets_received: read("rx_packets"),
        uptime_secs: started.elapsed().as_secs(),
        // The WAN's link speed in bit/s (Mb/s in sysfs; unknown, -1, on virtual links).
        max_bit_rate_up: read("../speed").min(u64::from(u32::MAX / 1_000_000)) as u32 * 1_000_000,
        max_bit_rate_down: read("../speed").min(u64::from(u32::MAX / 1_000_000)) as u32 * 1_000_000,
    }
}

pub fn start(s: &super::shell::Settings, handle: PortsHandle, shutdown: CancellationToken) -> Protocols {
    let stats = Arc::new(Stats::default());
    let p = &s.protocols;
    let mut out = Protocols { pmp: None, ssdp: None, tasks: Vec::new(), announcing: None, stats: stats.clone() };
    if p.natpmp || p.pcp {
        let cfg = pmp::PmpConfig { natpmp: p.natpmp, pcp: p.pcp, router: s.router, lan: s.lan };
        match udp_socket(SocketAddrV4::new(s.router, pmp::PORT)).and_then(|u| {
            let u = UdpSocket::from_std(u)?;
            u.set_multicast_loop_v4(false)?;
            Ok(u)
        }) {
            Ok(sock) => {
                let sock = Arc::new(sock);
                out.pmp = Some(sock.clone());
                out.tasks.push(tokio::spawn(serve_pmp(sock, cfg, handle.clone(), stats.clone(), shutdown.clone())));
                info!(address = %s.router, natpmp = p.natpmp, pcp = p.pcp, "NAT-PMP/PCP on UDP {}", pmp::PORT);
            }
            Err(e) => warn!("NAT-PMP/PCP off: cannot listen on {}:{}: {e}", s.router, pmp::PORT),
        }
    }
    if p.upnp {
        let cfg = upnp::UpnpConfig {
            enabled: true,
            router: s.router,
            lan: s.lan,
            http_port: p.upnp_port,
            uuid: device_uuid(s.router),
            server: format!("Linux UPnP/1.1 gatekeeper/{}", env!("CARGO_PKG_VERSION")),
            // Grows with every start (UDA 1.1 BOOTID), 31 bits.
            boot_id: (Time::now().unix_secs() & 0x7fff_ffff) as u32,
            presentation_url: Some(format!("http://{}:{}/", s.router, p.web_port)),
        };
        let ssdp = ssdp_socket(s.router).and_then(UdpSocket::from_std);
        let http = std::net::TcpListener::bind(SocketAddrV4::new(s.router, p.upnp_port))
            .and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            })
            .and_then(tokio::net::TcpListener::from_std);
        match (ssdp, http) {
            (Ok(ssdp), Ok(http)) => {
                let ssdp = Arc::new(ssdp);
                out.ssdp = Some((ssdp.clone(), cfg.clone()));
                out.tasks.push(tokio::spawn(serve_ssdp(ssdp, cfg.clone(), stats.clone(), shutdown.clone())));
                let web = Http {
                    cfg: Arc::new(cfg),
                    handle,
                    stats: stats.clone(),
                    wan_if: p.wan_if.clone(),
                    started: std::time::Instant::now(),
                };
                out.tasks.push(tokio::spawn(serve_http(http, web, shutdown)));
                info!(address = %s.router, port = p.upnp_port, "UPnP IGD on");
            }
            (Err(e), _) => warn!("UPnP off: cannot listen for SSDP on UDP {SSDP_PORT}: {e}"),
            (_, Err(e)) => warn!("UPnP off: cannot listen on {}:{}: {e}", s.router, p.upnp_port),
        }
    }
    out
}

impl Protocols {
    /// Tells the LAN the external address and epoch (NAT-PMP, 10 times at doubling intervals from 250 ms, as
    /// RFC 6886 3.2.1 asks) and that mapping state begins (PCP ANNOUNCE), and sends SSDP's alive.
    pub async fn announce(&mut self, epoch_start: Time, wan: Option<Ipv4Addr>, now: Time) {
        if let Some((sock, cfg)) = &self.ssdp {
            for m in upnp::ssdp::notify_alive(cfg) {
                let _ = sock.send_to(&m, SocketAddrV4::new(SSDP_GROUP, SSDP_PORT)).await;
            }
        }
        let Some(sock) = self.pmp.clone() else { return };
        if let Some(old) = self.announcing.take() {
            old.abort();
        }
        let epoch = (now.ms_since(epoch_start) / 1000) as u32;
        let router = match sock.local_addr() {
            Ok(SocketAddr::V4(a)) => *a.ip(),
            _ => return,
        };
        self.announcing = Some(tokio::spawn(async move {
            let mut wait = Duration::from_millis(250);
            for i in 0..10u32 {
                // The epoch moves on between repeats, as the clients expect.
                let e = epoch + (i > 0) as u32 * (250 * ((1 << i) - 1) / 1000);
                if let Some(ip) = wan {
                    let _ = sock.send_to(&pmp::natpmp_announcement(e, ip), ALL_HOSTS).await;
                }
                if i == 0 {
                    let _ = sock.send_to(&pmp::pcp_announce(e, router), ALL_HOSTS).await;
                }
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }));
    }

    pub async fn stop(mut self) {
        if let Some((sock, cfg)) = &self.ssdp {
            for m in upnp::ssdp::notify_byebye(cfg) {
                let _ = sock.send_to(&m, SocketAddrV4::new(SSDP_GROUP, SSDP_PORT)).await;
            }
        }
        if let Some(a) = self.announcing.take() {
            a.abort();
        }
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

async fn serve_pmp(
    sock: Arc<UdpSocket>,
    cfg: pmp::PmpConfig,
    handle: PortsHandle,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    let cfg = Arc::new(cfg);
    // Bigger than any valid request (PCP's 1,100 bytes), so an oversized one is seen as such.
    let mut buf = vec![0u8; 2048];
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => { debug!("NAT-PMP/PCP receive: {e}"); continue }
            },
        };
        let SocketAddr::V4(from) = from else { continue };
        let data = buf[..n].to_vec();
        let c = cfg.clone();
        let Some(outcome) = handle.with(move |p, now| pmp::handle(&c, p, now, from, &data)).await else { return };
        let protocol = if buf.first() == Some(&0) { "natpmp" } else { "pcp" };
        match outcome {
            pmp::Outcome::Answer(a) => {
                stats.count("answered", protocol, "");
                let _ = sock.send_to(&a, from).await;
            }
            pmp::Outcome::Drop(d) => stats.count("dropped", protocol, d.label()),
        }
    }
}

async fn serve_ssdp(sock: Arc<UdpSocket>, cfg: upnp::UpnpConfig, stats: Arc<Stats>, shutdown: CancellationToken) {
    let mut buf = vec![0u8; 4096];
    let mut notify = tokio::time::interval(NOTIFY_EVERY);
    notify.tick().await;
    loop {
        let (n, from) = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = notify.tick() => {
                for m in upnp::ssdp::notify_alive(&cfg) {
                    let _ = sock.send_to(&m, SocketAddrV4::new(SSDP_GROUP, SSDP_PORT)).await;
                }
                continue;
            }
            r = sock.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => { debug!("SSDP receive: {e}"); continue }
            },
        };
        let SocketAddr::V4(from) = from else { continue };
        match upnp::ssdp::handle(&cfg, from, &buf[..n]) {
            upnp::ssdp::SsdpOutcome::Replies(rs) => {
                stats.count("answered", "ssdp", "");
                for r in rs {
                    let _ = sock.send_to(&r, from).await;
                }
            }
            upnp::ssdp::SsdpOutcome::Drop(d) => stats.count("dropped", "ssdp", d.label()),
        }
    }
}

#[derive(Clone)]
struct Http {
    cfg: Arc<upnp::UpnpConfig>,
    handle: PortsHandle,
    stats: Arc<Stats>,
    wan_if: Option<String>,
    started: std::time::Instant,
}

fn xml(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "text/xml; charset=\"utf-8\"")], body).into_response()
}

async fn serve_http(listener: tokio::net::TcpListener, web: Http, shutdown: CancellationToken) {
    let app = axum::Router::new()
        .route(upnp::ROOT_DESC_PATH, get(root_desc))
        .route("/{file}", get(scpd))
        .route("/ctl/{service}", post(control))
        .layer(DefaultBodyLimit::max(upnp::soap::MAX_BODY))
        .with_state(web);
    let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await;
    if let Err(e) = served {
        warn!("UPnP HTTP server stopped: {e}");
    }
}

fn lan_only(web: &Http, peer: SocketAddr) -> Option<Ipv4Addr> {
    match peer {
        SocketAddr::V4(a) if web.cfg.lan.contains(a.ip()) => Some(*a.ip()),
        _ => None,
    }
}

async fn root_desc(State(web): State<Http>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    if lan_only(&web, peer).is_none() {
        web.stats.count("dropped", "upnp_http", "not_lan");
        return StatusCode::FORBIDDEN.into_response();
    }
    xml(StatusCode::OK, upnp::description::root_description(&web.cfg))
}

async fn scpd(
    State(web): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(file): Path<String>,
) -> Response {
    if lan_only(&web, peer).is_none() {
        return StatusCode::FORBIDDEN.into_response();
    }
    match upnp::description::scpd(&format!("/{file}")) {
        Some(doc) => xml(StatusCode::OK, doc.to_owned()),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn control(
    State(web): State<Http>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(service): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(client) = lan_only(&web, peer) else {
        web.stats.count("dropped", "soap", "not_lan");
        return StatusCode::FORBIDDEN.into_response();
    };
    let action = headers.get("soapaction").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = format!("/ctl/{service}");
    let cfg = web.cfg.clone();
    let stats = link_stats(web.wan_if.as_deref(), web.started);
    let body = body.to_vec();
    let reply = web
        .handle
        .with(move |p, now| upnp::soap::handle(&cfg, p, &stats, now, client, &path, action.as_deref(), &body))
        .await;
    match reply {
        Some(r) => {
            let what = if r.status == 200 { "answered" } else { "faulted" };
            web.stats.count(what, "soap", "");
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            xml(status, r.body)
        }
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
