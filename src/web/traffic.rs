//! The traffic API: devices, series (JSON and CSV), top lists, stats, long-term usage, and the live WebSocket.
//! Parameters are checked by `traffic::query` (400 naming the parameter); names of remotes are the ones the device
//! itself resolved (DNS), never a reverse lookup.

use super::Web;
use crate::hosts::Source;
use crate::traffic::core::{DeviceSummary, Tick, Totals};
use crate::traffic::query::{self, BadParam, Params};
use crate::types::{Device, Mac, Time};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr};
use tokio::sync::broadcast::error::RecvError;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/api/devices", get(devices))
        .route("/api/traffic", get(series))
        .route("/api/traffic/top", get(top))
        .route("/api/traffic/stats", get(stats))
        .route("/api/traffic/usage", get(usage))
        .route("/api/traffic/status", get(status))
        .route("/api/live", get(live))
}

impl IntoResponse for BadParam {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(serde_json::json!({ "error": self.to_string(), "param": self.param })))
            .into_response()
    }
}

fn now() -> u64 {
    Time::now().unix_ms()
}

#[derive(Serialize)]
struct UpDown {
    up: u64,
    down: u64,
}

impl From<[u64; 2]> for UpDown {
    fn from(v: [u64; 2]) -> Self {
        UpDown { up: v[0], down: v[1] }
    }
}

#[derive(Serialize)]
struct DeviceRow {
    device: Device,
    mac: Option<String>,
    /// The MAC's registered vendor (IEEE OUI), none for a locally administered (random) address.
    vendor: Option<&'static str>,
    ip: Option<Ipv4Addr>,
    hostname: Option<String>,
    /// The name the admin gave it.
    name: Option<String>,
    /// `lease`, `static`, or none (seen in traffic only).
    lease: Option<Source>,
    /// `dynamic`, `static` (a fixed address, leased or not), `expired` (a MAC seen before, no lease now), or none
    /// (an address without a lease).
    lease_state: Option<&'static str>,
    first_seen_ms: Option<u64>,
    last_seen_ms: Option<u64>,
    last_second: UpDown,
    last_hour: UpDown,
    last_day: UpDown,
    total: Totals,
}

/// Every device seen: in traffic, or in the hosts table (leases and static hosts), one row each.
async fn devices(State(web): State<Web>) -> impl IntoResponse {
    let seen = web.handles.traffic.devices().await;
    let hosts = web.handles.hosts.all();
    let dhcp = web.handles.dhcp.view().await;
    let fixed = |m: &Mac| dhcp.config_statics.iter().any(|s| s.mac == *m) || dhcp.notes.statics().any(|(x, _)| x == *m);
    let state = |mac: Option<Mac>, h: Option<&crate::hosts::Host>| match (mac, h) {
        (Some(m), _) if fixed(&m) => Some("static"),
        (_, Some(h)) if h.source == Source::Static => Some("static"),
        (_, Some(_)) => Some("dynamic"),
        (Some(_), None) => Some("expired"),
        (None, None) => None,
    };
    let mut rows: Vec<DeviceRow> = Vec::new();
    let host_of = |d: &DeviceSummary| match d.device {
        Device::Mac(m) => hosts.iter().find(|h| h.mac == m),
        Device::Ip(IpAddr::V4(ip)) => hosts.iter().find(|h| h.ip == ip),
        Device::Ip(IpAddr::V6(_)) => None,
    };
    for d in &seen {
        let h = host_of(d);
        let mac = match d.device {
            Device::Mac(m) => Some(m),
            Device::Ip(_) => h.map(|h| h.mac),
        };
        rows.push(DeviceRow {
            device: d.device,
            mac: mac.map(|m| m.to_string()),
            vendor: match d.device {
                Device::Mac(m) => super::oui::vendor(&m),
                Device::Ip(_) => h.and_then(|h| super::oui::vendor(&h.mac)),
            },
            ip: d.ip.or(h.map(|h| h.ip)),
            hostname: h.and_then(|h| h.name.clone()),
            name: mac.and_then(|m| dhcp.notes.name(&m).map(str::to_owned)),
            lease: h.map(|h| h.source),
            lease_state: state(mac, h),
            first_seen_ms: Some(d.first_seen_ms),
            last_seen_ms: Some(d.last_seen_ms),
            last_second: d.last_second.into(),
            last_hour: d.last_hour.into(),
            last_day: d.last_day.into(),
            total: d.total,
        });
    }
    for h in &hosts {
        if seen.iter().any(|d| d.device == Device::Mac(h.mac)) {
            continue;
        }
        rows.push(DeviceRow {
            device: Device::Mac(h.mac),
            mac: Some(h.mac.to_string()),
            vendor: super::oui::vendor(&h.mac),
            ip: Some(h.ip),
            hostname: h.name.clone(),
            name: dhcp.notes.name(&h.mac).map(str::to_owned),
            lease: Some(h.source),
            lease_state: state(Some(h.mac), Some(h)),
            first_seen_ms: None,
            last_seen_ms: None,
            last_second: [0, 0].into(),
            last_hour: [0, 0].into(),
            last_day: [0, 0].into(),
            total: Totals::default(),
        });
    }
    Json(serde_json::json!({ "devices": rows }))
}

/// `GET /api/traffic?device=&remote=&from=&to=&step=[&format=csv]`
async fn series(State(web): State<Web>, Query(p): Query<Params>) -> Result<Response, BadParam> {
    let q = query::series(&p, now())?;
    let values = web.handles.traffic.series(q).await;
    let times = (0..values.len()).map(|i| q.from_ms + i as u64 * q.step_ms);
    if q.csv {
        let mut body = String::with_capacity(32 * (values.len() + 1));
        body.push_str("time_ms,up_bytes,down_bytes\n");
        for (t, v) in times.zip(&values) {
            use std::fmt::Write;
            let _ = writeln!(body, "{t},{},{}", v[0], v[1]);
        }
        let who = q.select.device.map_or("all".to_owned(), |d| d.to_string().replace(':', "-"));
        let remote = q.select.remote.map_or(String::new(), |r| format!("-{r}"));
        let name = format!("traffic-{who}{remote}-{}.csv", q.from_ms);
        return Ok((
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
            ],
            body,
        )
            .into_response());
    }
    let series: Vec<[u64; 3]> = times.zip(&values).map(|(t, v)| [t, v[0], v[1]]).collect();
    Ok(Json(serde_json::json!({ "from": q.from_ms, "to": q.to_ms, "step": q.step_ms, "series": series }))
        .into_response())
}

#[derive(Serialize)]
struct TopRow {
    #[serde(skip_serializing_if = "Option::is_none")]
    remote: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<Device>,
    /// The remote's name as the device resolved it, or the device's host name.
    name: Option<String>,
    #[serde(flatten)]
    totals: Totals,
}

/// `GET /api/traffic/top?device=&from=&to=&limit=`: a device's remotes, or (`all`) the devices, busiest first.
async fn top(State(web): State<Web>, Query(p): Query<Params>) -> Result<impl IntoResponse, BadParam> {
    let q = query::top(&p, now())?;
    let rows = web.handles.traffic.top(q).await;
    let names: Vec<Option<String>> = match q.device {
        Some(d) => {
            let remotes = rows.iter().filter_map(|r| r.remote).map(IpAddr::V4).collect();
            web.handles.dns.names(d, remotes).await
        }
        None => {
            let hosts = web.handles.hosts.all();
            rows.iter()
                .map(|r| match r.device {
                    Some(Device::Mac(m)) => hosts.iter().find(|h| h.mac == m).and_then(|h| h.name.clone()),
                    _ => None,
                })
                .collect()
        }
    };
    let out: Vec<TopRow> = rows
        .into_iter()
        .zip(names)
        .map(|(r, name)| TopRow { remote: r.remote, device: r.device, name, totals: r.totals })
        .collect();
    Ok(Json(serde_json::json!({ "from": q.from_ms, "to": q.to_ms, "top": out })))
}

/// `GET /api/traffic/stats?device=&remote=&from=&to=` (at most 25 h).
async fn stats(State(web): State<Web>, Query(p): Query<Params>) -> Result<impl IntoResponse, BadParam> {
    let q = query::stats(&p, now())?;
    Ok(Json(web.handles.traffic.stats(q).await))
}

/// `GET /api/traffic/usage?device=&from=&to=&step=hour|day`: long-term totals (90 days).
async fn usage(State(web): State<Web>, Query(p): Query<Params>) -> Result<impl IntoResponse, BadParam> {
    let q = query::usage(&p, now())?;
    let series: Vec<[u64; 3]> = web.handles.traffic.usage(q).await.into_iter().map(|(t, v)| [t, v[0], v[1]]).collect();
    Ok(Json(serde_json::json!({ "from": q.from_ms, "to": q.to_ms, "step": q.step_ms, "series": series })))
}

/// The history's memory and the accounting's counters.
async fn status(State(web): State<Web>) -> impl IntoResponse {
    let t = &web.handles.traffic;
    Json(serde_json::json!({ "memory": t.memory().await, "counters": t.counters().await }))
}

/// One tick as a live subscriber sees it: every device, and the remotes of the subscribed one.
fn tick_json(t: &Tick, device: Option<Device>) -> String {
    #[derive(Serialize)]
    struct Remote {
        remote: Ipv4Addr,
        up: u64,
        down: u64,
    }
    let remotes: Vec<Remote> = match device {
        Some(d) => t
            .remotes
            .iter()
            .filter(|r| r.device == d)
            .map(|r| Remote { remote: r.remote, up: r.up, down: r.down })
            .collect(),
        None => Vec::new(),
    };
    serde_json::json!({ "t": t.at_ms, "devices": t.devices, "remotes": remotes }).to_string()
}

/// WebSocket `GET /api/live?device=MAC|all`: the last minute of ticks, then one every 100 ms. A client that falls
/// behind by more than the stream's buffer is disconnected (it may reconnect), never waited for.
async fn live(State(web): State<Web>, Query(p): Query<Params>, ws: WebSocketUpgrade) -> Result<Response, BadParam> {
    let device = query::device(&p, true)?;
    let traffic = web.handles.traffic.clone();
    Ok(ws.on_upgrade(move |socket| stream(socket, traffic, device)))
}

async fn stream(mut socket: WebSocket, traffic: crate::traffic::shell::TrafficHandle, device: Option<Device>) {
    let Some(mut live) = traffic.live().await else {
        let _ = socket.send(Message::Close(None)).await;
        return;
    };
    for t in &live.backlog {
        if socket.send(Message::Text(tick_json(t, device).into())).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            t = live.ticks.recv() => match t {
                Ok(t) => {
                    if socket.send(Message::Text(tick_json(&t, device).into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let why = format!("too slow: {n} ticks behind; reconnect");
                    let frame = axum::extract::ws::CloseFrame { code: 1008, reason: why.into() };
                    let _ = socket.send(Message::Close(Some(frame))).await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
