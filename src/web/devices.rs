//! The admin's changes to devices and leases: names, static addresses, forgetting. DHCP owns them
//! (`dhcp::devices`); this is only their HTTP face. Every change is behind a session and its CSRF token
//! (`session::guard`).

use super::Web;
use crate::dhcp::devices::{Edit, clean_name};
use crate::types::{Mac, Time};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/api/devices/{mac}", put(rename))
        .route("/api/leases", get(leases))
        .route("/api/leases/{mac}", put(pin).delete(forget))
}

fn bad(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

pub(super) fn mac_of(raw: &str) -> Result<Mac, Box<Response>> {
    let shown: String = raw.chars().take(40).collect();
    raw.parse().map_err(|_| Box::new(bad(format!("{shown:?} is not a MAC address (aa:bb:cc:dd:ee:ff)"))))
}

async fn run(web: &Web, edit: Edit) -> Response {
    match web.handles.dhcp.edit(edit).await {
        Ok(()) => Json(serde_json::json!({ "ok": true })).into_response(),
        Err(e) => bad(e),
    }
}

#[derive(Deserialize)]
struct Rename {
    name: Option<String>,
}

/// `PUT /api/devices/MAC {"name": "..."}` (empty or null clears it).
async fn rename(
    State(web): State<Web>,
    Path(mac): Path<String>,
    body: Result<Json<Rename>, JsonRejection>,
) -> Response {
    let mac = match mac_of(&mac) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let Ok(Json(body)) = body else { return bad("expected JSON {\"name\": \"...\"}") };
    let name = match clean_name(body.name.as_deref().unwrap_or("")) {
        Ok(n) => n,
        Err(e) => return bad(e),
    };
    run(&web, Edit::Rename { mac, name }).await
}

#[derive(Deserialize)]
struct Pin {
    #[serde(default)]
    ip: Option<Ipv4Addr>,
    #[serde(default)]
    name: Option<String>,
}

/// `PUT /api/leases/MAC {"ip": "10.0.0.50" | null, "name"?: "..."}`: a static address (null: the one it has).
async fn pin(State(web): State<Web>, Path(mac): Path<String>, body: Result<Json<Pin>, JsonRejection>) -> Response {
    let mac = match mac_of(&mac) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let Ok(Json(body)) = body else { return bad("expected JSON {\"ip\": \"10.0.0.50\" or null, \"name\": \"...\"}") };
    let name = match body.name.as_deref().map(clean_name).transpose() {
        Ok(n) => n,
        Err(e) => return bad(e),
    };
    run(&web, Edit::Pin { mac, ip: body.ip, name }).await
}

/// `DELETE /api/leases/MAC`: ends its lease and forgets its name and static address.
async fn forget(State(web): State<Web>, Path(mac): Path<String>) -> Response {
    match mac_of(&mac) {
        Ok(mac) => {
            let r = run(&web, Edit::Forget { mac }).await;
            if r.status().is_success() {
                // Its captured packets go with it (a download already under way keeps its copy).
                web.handles.capture.forget(mac).await;
            }
            r
        }
        Err(r) => *r,
    }
}

#[derive(Serialize)]
struct LeaseRow {
    mac: Mac,
    ip: Ipv4Addr,
    hostname: Option<String>,
    name: Option<String>,
    /// `dynamic` or `static`.
    kind: &'static str,
    /// `lease` (a dynamic lease), `ui` (made static here), `config` (config file or /etc/ethers: read-only).
    origin: &'static str,
    expires_ms: Option<u64>,
    /// Whether the lease is current (a static address not taken, or a lease past its end, is not).
    active: bool,
}

/// `GET /api/leases`: every lease and static address, by address.
async fn leases(State(web): State<Web>) -> impl IntoResponse {
    let v = web.handles.dhcp.view().await;
    let now = Time::now().unix_secs();
    let mut rows: Vec<LeaseRow> = Vec::new();
    let ui: Vec<(Mac, Ipv4Addr)> = v.notes.statics().collect();
    for l in &v.leases {
        let from_config = v.config_statics.iter().any(|s| s.mac == l.mac);
        let from_ui = ui.iter().any(|(m, _)| *m == l.mac);
        rows.push(LeaseRow {
            mac: l.mac,
            ip: l.ip,
            hostname: l.hostname.clone(),
            name: v.notes.name(&l.mac).map(str::to_owned),
            kind: if from_config || from_ui { "static" } else { "dynamic" },
            origin: if from_config {
                "config"
            } else if from_ui {
                "ui"
            } else {
                "lease"
            },
            expires_ms: Some(l.expires * 1000),
            active: l.expires > now,
        });
    }
    let statics = v.config_statics.iter().map(|s| (s.mac, s.ip, s.hostname.clone(), "config"));
    let statics = statics.chain(ui.iter().map(|(m, ip)| (*m, *ip, None, "ui")));
    for (mac, ip, hostname, origin) in statics {
        if rows.iter().any(|r| r.mac == mac) {
            continue;
        }
        let name = v.notes.name(&mac).map(str::to_owned);
        rows.push(LeaseRow { mac, ip, hostname, name, kind: "static", origin, expires_ms: None, active: false });
    }
    rows.sort_by_key(|r| r.ip);
    Json(serde_json::json!({ "leases": rows, "subnet": v.subnet, "range": v.range }))
}
