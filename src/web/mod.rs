//! The web UI: axum on the router's LAN address only (so it is closed to the WAN by construction), the embedded
//! front end (`web/`, see `assets`), and the JSON API it reads. Every route is behind `session::guard`.

pub mod admin;
mod assets;
pub mod auth;
mod capture;
mod devices;
mod dnslog;
pub mod metrics;
pub mod oui;
mod ports;
mod session;
mod traffic;

use crate::dhcp::shell::DhcpHandle;
use crate::dns::shell::DnsHandle;
use anyhow::{Context as _, Result};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::net::SocketAddr;
use tracing::{info, warn};

/// The LAN set-up as the UI shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub lan_interface: String,
    pub lan_ports: Vec<String>,
    pub subnet: String,
    pub router: String,
    pub wan: Option<String>,
    pub port_forwards: Vec<String>,
}

/// Where the UI listens and what it shows of the set-up (`app::settings::web`).
pub struct Settings {
    pub listen: SocketAddr,
    pub status: Status,
    /// `[web] public_read`: reading without logging in (changes always need the admin).
    pub public_read: bool,
    /// Where the sessions are kept across restarts.
    pub state_dir: std::path::PathBuf,
    /// Who may read `/metrics`.
    pub metrics: metrics::Access,
}

/// The subsystems the UI reads, through their handles.
#[derive(Clone)]
pub struct Handles {
    pub dhcp: DhcpHandle,
    pub dns: DnsHandle,
    /// Empty without a WAN, and until the WAN has an address (the NAT starts then).
    pub nat: std::sync::Arc<std::sync::OnceLock<crate::datapath::NatHandle>>,
    pub hosts: crate::hosts::Hosts,
    pub traffic: crate::traffic::shell::TrafficHandle,
    pub capture: crate::capture::CaptureHandle,
    pub ports: crate::ports::PortsHandle,
}

#[derive(Clone)]
struct Web {
    status: std::sync::Arc<Status>,
    handles: Handles,
    sessions: session::Sessions,
    metrics: std::sync::Arc<metrics::Access>,
}

/// The LAN and WAN set-up, the WAN's address now, and the DNS upstreams.
async fn api_status(State(web): State<Web>) -> impl IntoResponse {
    let wan_address = web.handles.nat.get().map(|n| n.wan_ip().to_string());
    let page = crate::dns::shell::LogPage { device: None, offset: 0, limit: 0 };
    let upstreams: Vec<String> = web.handles.dns.view(page).await.upstreams.iter().map(|u| u.to_string()).collect();
    let mut v = serde_json::to_value(&*web.status).unwrap_or_default();
    v["wan_address"] = serde_json::json!(wan_address);
    v["upstreams"] = serde_json::json!(upstreams);
    v["version"] = serde_json::json!(env!("CARGO_PKG_VERSION"));
    Json(v)
}

/// The DHCP server's leases and counters; empty if it is not running.
async fn api_dhcp(State(web): State<Web>) -> impl IntoResponse {
    Json(web.handles.dhcp.view().await)
}

#[derive(serde::Deserialize)]
struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// The NAT's counters and a page of its mappings and connections (what every WAN port is used for):
/// `/api/nat?offset=0&limit=1000` (limit at most 10,000). Never waits for the packet path's batches.
async fn api_nat(State(web): State<Web>, Query(page): Query<Page>) -> impl IntoResponse {
    let Some(nat) = web.handles.nat.get() else { return Json(crate::datapath::NatView::default()) };
    let (offset, limit) = (page.offset.unwrap_or(0), page.limit.unwrap_or(crate::datapath::VIEW_LIMIT));
    Json(nat.view(offset, limit))
}

/// Per-device DNS query logs and the resolver's counters.
async fn api_dns(State(web): State<Web>, page: Query<crate::dns::shell::LogPage>) -> impl IntoResponse {
    Json(web.handles.dns.view(page.0).await)
}

/// What every answer carries: a CSP that allows only our own script and styles (no inline script, so text that
/// became markup somewhere still could not run), no framing, no sniffing, no referrer; API answers are not cached.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if api && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

pub async fn serve(
    settings: Settings,
    admin_hash: String,
    handles: Handles,
    shutdown: tokio_util::sync::CancellationToken,
) -> Result<()> {
    let addr = settings.listen;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("web UI cannot listen on {addr}"))?;
    info!("web UI on http://{addr}/");
    if !assets::built() {
        warn!("this binary has no web UI assets (run scripts/web.sh, then build again); the API works");
    }
    let sessions = session::Sessions::new(admin_hash, Some(&settings.state_dir), settings.public_read);
    let web = Web {
        status: std::sync::Arc::new(settings.status),
        handles,
        sessions: sessions.clone(),
        metrics: std::sync::Arc::new(settings.metrics),
    };
    let app = Router::new()
        .route("/", get(assets::page))
        .route("/devices/{device}", get(assets::page))
        .route("/network", get(assets::page))
        .route("/leases", get(assets::page))
        .route("/dns", get(assets::page))
        .route("/ports", get(assets::page))
        .route("/login", get(assets::page))
        .route("/assets/{*file}", get(assets::asset))
        .route("/api/status", get(api_status))
        .route("/api/dhcp", get(api_dhcp))
        .route("/api/dns", get(api_dns))
        .route("/api/nat", get(api_nat))
        .route("/metrics", get(metrics::metrics))
        .merge(traffic::routes())
        .merge(session::routes())
        .merge(devices::routes())
        .merge(capture::routes())
        .merge(dnslog::routes())
        .merge(ports::routes())
        .layer(axum::middleware::from_fn_with_state(web.clone(), session::guard))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(web);
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    sessions.save();
    Ok(())
}
