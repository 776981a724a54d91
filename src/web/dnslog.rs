//! The DNS pages' data: the query log of one device or of all, searchable, and the resolver's health (cache,
//! hit rate, each upstream). Query names are whatever a device asked: text for the UI, never markup.

use super::Web;
use crate::dns::shell::LogPage;
use crate::traffic::query::{self, BadParam, Params};
use crate::types::Device;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::net::IpAddr;

/// Entries one answer carries at most.
const MAX_ENTRIES: usize = 2000;

pub fn routes() -> Router<Web> {
    Router::new().route("/api/dns/log", get(log)).route("/api/dns/stats", get(stats))
}

#[derive(Serialize)]
struct Entry {
    device: Device,
    device_name: Option<String>,
    unix_ms: u64,
    name: String,
    qtype: String,
    rcode: String,
    latency_ms: u64,
    answers: Vec<IpAddr>,
    cached: bool,
}

/// `GET /api/dns/log?device=MAC|IP|all&q=TEXT&limit=N`: newest first; `q` matches the name, type, answer code,
/// an answer's address or the device (case-insensitive).
async fn log(State(web): State<Web>, Query(p): Query<Params>) -> Result<impl IntoResponse, BadParam> {
    let device = query::device(&p, true)?;
    let limit = match p.get("limit") {
        None => 200,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_ENTRIES).contains(&n) => n,
            _ => return Err(BadParam { param: "limit", message: format!("must be 1 to {MAX_ENTRIES}, not {s:?}") }),
        },
    };
    let needle = p.get("q").map(|q| q.trim().to_lowercase()).filter(|q| !q.is_empty());
    if needle.as_ref().is_some_and(|q| q.len() > 255) {
        return Err(BadParam { param: "q", message: "at most 255 bytes".into() });
    }
    let page = LogPage { device, offset: 0, limit: LogPage::MAX_LIMIT };
    let view = web.handles.dns.view(page).await;
    let notes = web.handles.dhcp.view().await.notes;
    let hosts = web.handles.hosts.all();
    let name_of = |d: &Device| -> Option<String> {
        match d {
            Device::Mac(m) => notes
                .name(m)
                .map(str::to_owned)
                .or_else(|| hosts.iter().find(|h| h.mac == *m).and_then(|h| h.name.clone())),
            Device::Ip(IpAddr::V4(ip)) => hosts.iter().find(|h| h.ip == *ip).and_then(|h| h.name.clone()),
            Device::Ip(_) => None,
        }
    };
    let mut entries = Vec::new();
    for d in view.devices {
        let device_name = name_of(&d.device);
        let who = format!("{} {}", d.device, device_name.as_deref().unwrap_or("")).to_lowercase();
        for q in d.queries {
            if let Some(n) = &needle {
                let hit = q.name.to_lowercase().contains(n.as_str())
                    || q.qtype.to_lowercase() == *n
                    || q.rcode.to_lowercase() == *n
                    || q.answers.iter().any(|a| a.to_string().contains(n.as_str()))
                    || who.contains(n.as_str());
                if !hit {
                    continue;
                }
            }
            entries.push(Entry {
                device: d.device,
                device_name: device_name.clone(),
                unix_ms: q.unix_ms,
                name: q.name,
                qtype: q.qtype,
                rcode: q.rcode,
                latency_ms: q.latency_ms,
                answers: q.answers,
                cached: q.cached,
            });
        }
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.unix_ms));
    entries.truncate(limit);
    Ok(Json(serde_json::json!({ "entries": entries })))
}

/// `GET /api/dns/stats`: the cache (entries, capacity, hits, misses, hit rate) and every upstream's health.
async fn stats(State(web): State<Web>) -> impl IntoResponse {
    let v = web.handles.dns.view(LogPage { device: None, offset: 0, limit: 0 }).await;
    let counter = |name: &str| v.counters.get(name, &[]).unwrap_or(0);
    let (hits, misses) = (counter("cache_hits"), counter("cache_misses"));
    let upstreams: Vec<serde_json::Value> = v
        .upstreams
        .iter()
        .zip(&v.health)
        .map(|(a, h)| {
            serde_json::json!({
                "address": a.to_string(),
                "sent": h.sent,
                "answered": h.answered,
                "missed": h.missed,
                "latency_ms": h.latency_ms.map(|l| (l * 10.0).round() / 10.0),
                "last_answer_ms": h.last_answer_ms,
                "healthy": h.healthy(),
            })
        })
        .collect();
    Json(serde_json::json!({
        "cache_entries": counter("cache_entries"),
        "cache_size": v.cache_size,
        "queries": counter("queries"),
        "local": counter("local"),
        "hits": hits,
        "misses": misses,
        "hit_rate": if hits + misses > 0 { hits as f64 / (hits + misses) as f64 } else { 0.0 },
        "upstreams": upstreams,
    }))
}
