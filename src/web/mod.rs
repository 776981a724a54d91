//! The web UI: axum on the router's LAN address only (so it is closed to the WAN by construction).
//! For now it shows the LAN set-up; devices, traffic and ports arrive with their subsystems.

pub mod admin;
pub mod auth;
pub mod oui;
mod traffic;

use crate::dhcp::shell::DhcpHandle;
use crate::dns::shell::DnsHandle;
use anyhow::{Context as _, Result};
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::net::SocketAddr;
use tracing::info;

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
}

#[derive(Clone)]
struct Web {
    status: std::sync::Arc<Status>,
    handles: Handles,
}

/// Escapes text for HTML: interface names and, later, device-chosen host names are hostile input.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

async fn index(State(web): State<Web>) -> impl IntoResponse {
    let s = &web.status;
    let row = |k: &str, v: &str| format!("<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    let forwards = if s.port_forwards.is_empty() { "none".to_owned() } else { s.port_forwards.join(", ") };
    let dhcp = web.handles.dhcp.view().await;
    let devices: String = dhcp
        .leases
        .iter()
        .map(|l| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&l.mac.to_string()),
                l.ip,
                escape(l.hostname.as_deref().unwrap_or(""))
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html><head><meta charset=utf-8><title>Gatekeeper</title>\
         <style>body{{font-family:sans-serif;margin:2em}}th{{text-align:left;padding-right:1em}}</style></head>\
         <body><h1>Gatekeeper</h1><table>{}{}{}{}{}{}</table>\
         <h2>Devices</h2><table><tr><th>MAC</th><th>IP</th><th>Name</th></tr>{}</table></body></html>",
        row("LAN interface", &s.lan_interface),
        row("LAN ports", &s.lan_ports.join(", ")),
        row("Subnet", &s.subnet),
        row("Router", &s.router),
        row("WAN", s.wan.as_deref().unwrap_or("none")),
        row("Port forwards", &forwards),
        devices,
    ))
}

async fn api_status(State(web): State<Web>) -> Json<Status> {
    Json((*web.status).clone())
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

pub async fn serve(settings: Settings, handles: Handles, shutdown: tokio_util::sync::CancellationToken) -> Result<()> {
    let addr = settings.listen;
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("web UI cannot listen on {addr}"))?;
    info!("web UI on http://{addr}/");
    let app = Router::new()
        .route("/", get(index))
        .route("/api/status", get(api_status))
        .route("/api/dhcp", get(api_dhcp))
        .route("/api/dns", get(api_dns))
        .route("/api/nat", get(api_nat))
        .merge(traffic::routes())
        .with_state(Web { status: std::sync::Arc::new(settings.status), handles });
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(super::escape("<img src=x onerror='a'>&"), "&lt;img src=x onerror=&#39;a&#39;&gt;&amp;");
    }
}
