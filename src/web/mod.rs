//! The web UI: axum on the router's LAN address only (so it is closed to the WAN by construction).
//! For now it shows the LAN set-up; devices, traffic and ports arrive with their subsystems.

use crate::app::Context;
use anyhow::{Context as _, Result};
use axum::extract::{Query, State};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::net::SocketAddr;
use tracing::info;

#[derive(Serialize)]
struct Status {
    lan_interface: String,
    lan_ports: Vec<String>,
    subnet: String,
    router: String,
    wan: Option<String>,
    port_forwards: Vec<String>,
}

fn status(ctx: &Context) -> Status {
    Status {
        lan_interface: ctx.lan.lan_interface().to_owned(),
        lan_ports: ctx.lan.ports.iter().map(|p| p.name.clone()).collect(),
        subnet: ctx.lan.subnet.to_string(),
        router: ctx.lan.router.to_string(),
        wan: ctx.lan.wan.as_ref().map(|w| w.name.clone()),
        port_forwards: ctx.config.port_forwards.iter().map(|f| f.to_string()).collect(),
    }
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

async fn index(State(ctx): State<Context>) -> impl IntoResponse {
    let s = status(&ctx);
    let row = |k: &str, v: &str| format!("<tr><th>{}</th><td>{}</td></tr>", escape(k), escape(v));
    let forwards = if s.port_forwards.is_empty() { "none".to_owned() } else { s.port_forwards.join(", ") };
    let dhcp = dhcp_view(&ctx).await;
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

async fn api_status(State(ctx): State<Context>) -> Json<Status> {
    Json(status(&ctx))
}

/// The DHCP server's current view; empty if it is not running.
async fn dhcp_view(ctx: &Context) -> crate::dhcp::shell::DhcpView {
    let (tx, rx) = tokio::sync::oneshot::channel();
    if ctx.dhcp.send(tx).await.is_err() {
        return Default::default();
    }
    rx.await.unwrap_or_default()
}

async fn api_dhcp(State(ctx): State<Context>) -> impl IntoResponse {
    Json(dhcp_view(&ctx).await)
}

#[derive(serde::Deserialize)]
struct Page {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// The NAT's counters and a page of its mappings and connections (what every WAN port is used for):
/// `/api/nat?offset=0&limit=1000` (limit at most 10,000). Never waits for the packet path's batches.
async fn api_nat(State(ctx): State<Context>, Query(page): Query<Page>) -> impl IntoResponse {
    let Some(nat) = ctx.nat.get() else { return Json(crate::datapath::NatView::default()) };
    let (offset, limit) = (page.offset.unwrap_or(0), page.limit.unwrap_or(crate::datapath::VIEW_LIMIT));
    Json(nat.view(offset, limit))
}

/// Per-device DNS query logs and the resolver's counters.
async fn api_dns(State(ctx): State<Context>) -> impl IntoResponse {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let view = match ctx.dns.send(tx).await {
        Ok(()) => rx.await.unwrap_or_default(),
        Err(_) => Default::default(),
    };
    Json(view)
}


pub async fn serve(ctx: Context) -> Result<()> {
    let addr = SocketAddr::from((ctx.lan.router, ctx.config.web_port));
    let listener =
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("web UI cannot listen on {addr}"))?;
    info!("web UI on http://{addr}/");
    let shutdown = ctx.shutdown.clone();
    let app = Router::new()
        .route("/", get(index))
        .route("/api/status", get(api_status))
        .route("/api/dhcp", get(api_dhcp))
        .route("/api/dns", get(api_dns))
        .route("/api/nat", get(api_nat))
        .with_state(ctx);
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
