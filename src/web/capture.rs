//! The capture API: a device's ring as pcapng or pcap (`GET /api/devices/MAC/capture.pcapng?from=&to=&remote=
//! &port=&proto=`, `.pcap`), its status (`GET /api/devices/MAC/capture`), pause, resume and clear (`POST` with
//! `{"action": ...}`, admin), the counters (`GET /api/capture`), and its live packets (`/api/devices/MAC/packets`, WebSocket). All of it needs the
//! admin's session even when the UI is readable without one (`session::private`).
//!
//! A download copies the ring once (the capture thread's memcpy; the packet path's taps buffer meanwhile), then
//! encodes and sends that copy in chunks from a blocking task: the capture goes on, and a device forgotten
//! meanwhile only frees its ring, not the copy being sent. At most [`DOWNLOADS`] run at once.

use super::Web;
use super::devices::mac_of;
use crate::capture::filter::Filter;
use crate::capture::pcap::{self, About, Format};
use crate::types::{Device, Mac};
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, LazyLock};
use tokio::sync::{Semaphore, broadcast::error::RecvError};

/// Downloads encoding at once (each holds one ring's copy, 5 MiB by default).
pub const DOWNLOADS: usize = 4;
static SLOTS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(DOWNLOADS)));

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/api/capture", get(counters))
        .route("/api/devices/{mac}/capture", get(status).post(change))
        .route("/api/devices/{mac}/{file}", get(download_or_live))
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": message.into() }))).into_response()
}

fn off() -> Response {
    error(StatusCode::SERVICE_UNAVAILABLE, "packet capture is off ([capture] ring_mb = 0) or not running")
}

/// `GET /api/capture`: packets stored, refused (unknown device, off, paused, over the memory budget), rings and
/// their memory, the DNS/DHCP feed's drops. The packet path's tap drops are in `/api/nat`.
async fn counters(State(web): State<Web>) -> Response {
    Json(serde_json::json!({ "counters": web.handles.capture.counters().await })).into_response()
}

async fn status(State(web): State<Web>, Path(mac): Path<String>) -> Response {
    let mac = match mac_of(&mac) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    match web.handles.capture.status(mac).await {
        Some(s) => Json(s).into_response(),
        None => off(),
    }
}

#[derive(serde::Deserialize)]
struct Change {
    action: String,
}

/// `POST /api/devices/MAC/capture {"action": "pause" | "resume" | "clear"}`: the status after it.
async fn change(
    State(web): State<Web>,
    Path(mac): Path<String>,
    body: Result<Json<Change>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let mac = match mac_of(&mac) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    let expected = "expected JSON {\"action\": \"pause\", \"resume\" or \"clear\"}";
    let Ok(Json(body)) = body else { return error(StatusCode::BAD_REQUEST, expected) };
    let c = &web.handles.capture;
    let done = match body.action.as_str() {
        "pause" => c.set_paused(mac, true).await,
        "resume" => c.set_paused(mac, false).await,
        "clear" => c.clear(mac).await,
        _ => return error(StatusCode::BAD_REQUEST, expected),
    };
    match done {
        Some(s) => {
            tracing::info!(%mac, action = %body.action, "capture changed by the admin");
            Json(s).into_response()
        }
        None => off(),
    }
}

async fn download_or_live(
    State(web): State<Web>,
    Path((mac, file)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let mac = match mac_of(&mac) {
        Ok(m) => m,
        Err(r) => return *r,
    };
    match (file.as_str(), ws) {
        ("packets", Ok(ws)) => {
            let capture = web.handles.capture.clone();
            let dns = web.handles.dns.clone();
            ws.on_upgrade(move |socket| live(socket, capture, dns, mac))
        }
        ("packets", Err(_)) => error(StatusCode::BAD_REQUEST, "the live packet view is a WebSocket"),
        ("capture.pcapng", _) => send(&web, mac, Format::PcapNg, query.as_deref().unwrap_or("")).await,
        ("capture.pcap", _) => send(&web, mac, Format::Pcap, query.as_deref().unwrap_or("")).await,
        _ => error(StatusCode::NOT_FOUND, "expected capture.pcapng, capture.pcap, capture or packets"),
    }
}

/// The query string's pairs, percent-decoded (as axum's `Query` would, but keeping repeats and order).
fn pairs(query: &str) -> Result<Vec<(String, String)>, String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).map_err(|e| format!("bad query string: {e}"))
}

pub fn filter_of(query: &str) -> Result<Filter, String> {
    let p = pairs(query)?;
    Filter::from_pairs(p.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

async fn send(web: &Web, mac: Mac, format: Format, query: &str) -> Response {
    let filter = match filter_of(query) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Ok(slot) = SLOTS.clone().try_acquire_owned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("{DOWNLOADS} captures are downloading; try again soon"));
    };
    let Some(taken) = web.handles.capture.take(mac).await else {
        return match web.handles.capture.status(mac).await {
            None => off(),
            Some(s) if !s.enabled => error(StatusCode::NOT_FOUND, format!("{mac} is not captured (its ring_mb is 0)")),
            Some(_) => error(StatusCode::NOT_FOUND, format!("nothing captured for {mac} yet")),
        };
    };
    let name = web.handles.hosts.all().into_iter().find(|h| h.mac == mac).and_then(|h| h.name);
    let about = About { mac, name, ip: taken.ip };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        pcap::write(format, &about, &taken.snapshot, &filter, |chunk| tx.blocking_send(Ok(chunk)).is_ok());
    });
    let (ext, mime) = match format {
        Format::PcapNg => ("pcapng", "application/x-pcapng"),
        Format::Pcap => ("pcap", "application/vnd.tcpdump.pcap"),
    };
    let file = format!("attachment; filename=\"{}.{ext}\"", mac.to_string().replace(':', "-"));
    let body = Body::from_stream(tokio_stream_of(rx));
    ([(header::CONTENT_TYPE, mime.to_string()), (header::CONTENT_DISPOSITION, file)], body).into_response()
}

fn tokio_stream_of<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Streams the device's lines as JSON text messages, with the remote's name from the device's own lookups
/// (asked once per new remote).
async fn live(
    mut socket: WebSocket,
    capture: crate::capture::CaptureHandle,
    dns: crate::dns::shell::DnsHandle,
    mac: Mac,
) {
    let Some(mut lines) = capture.live(mac).await else {
        let frame = axum::extract::ws::CloseFrame { code: 1011, reason: "packet capture is off".into() };
        let _ = socket.send(Message::Close(Some(frame))).await;
        return;
    };
    let mut names: HashMap<std::net::Ipv4Addr, Option<String>> = HashMap::new();
    let mut lost = 0;
    loop {
        tokio::select! {
            l = lines.recv() => match l {
                Ok(l) => {
                    let mut line = (*l).clone();
                    line.skipped += std::mem::take(&mut lost);
                    if !names.contains_key(&line.remote) {
                        if names.len() > 4096 {
                            names.clear();
                        }
                        let n = dns.names(Device::Mac(mac), vec![IpAddr::V4(line.remote)]).await;
                        names.insert(line.remote, n.into_iter().next().flatten());
                    }
                    line.name = names.get(&line.remote).cloned().flatten();
                    let text = serde_json::to_string(&line).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(n)) => lost += n,
                Err(RecvError::Closed) => return,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn query_strings() {
        let f = filter_of("from=1&to=2&remote=203.0.113.1&proto=udp&port=53").unwrap();
        assert_eq!((f.from_ms, f.to_ms, f.port), (Some(1), Some(2), Some(53)));
        assert!(filter_of("remote=203.0.113.1%00").unwrap_err().contains("remote"));
        assert!(filter_of("").unwrap() == Filter::default());
    }

    proptest! {
        /// Any query string (percent escapes, repeats, junk) and any device id: a filter or a reason, a MAC or a
        /// 400, never a panic.
        #[test]
        fn any_query_and_device_id(q in "[a-z=&%0-9A-F.:+ \\x00-\\x7f]{0,80}", id in "\\PC{0,40}") {
            let _ = filter_of(&q);
            if let Err(r) = mac_of(&id) {
                let r = *r;
                prop_assert_eq!(r.status(), StatusCode::BAD_REQUEST);
            }
        }
    }
}
