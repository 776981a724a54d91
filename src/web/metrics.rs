//! `GET /metrics`: every subsystem's counters in the Prometheus text format, on the LAN address like the rest of
//! the UI. Readable without a session only with `[web] metrics_public = true`; otherwise with
//! `Authorization: Bearer <[web] metrics_token>` (or the admin's session). Names are `gatekeeper_<subsystem>_...`
//! (see `counters::prometheus`). Where node_exporter names the same thing: `gatekeeper_nat_connections` is what
//! `node_nf_conntrack_entries` counts for the kernel's NAT, and `gatekeeper_process_resident_memory_bytes` is the
//! client libraries' `process_resident_memory_bytes`.

use super::Web;
use crate::counters::{Counters, escape_label, prometheus};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write as _;

/// Per-device series at most (the busiest devices), so a LAN full of short-lived devices cannot blow up a
/// monitoring system's cardinality.
pub const MAX_DEVICES: usize = 256;

/// Who may read `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub public: bool,
    pub token: Option<String>,
}

impl Access {
    fn allows(&self, headers: &HeaderMap) -> bool {
        if self.public {
            return true;
        }
        let Some(want) = &self.token else { return false };
        let got =
            headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        // Compared in constant time: the token is a secret.
        got.is_some_and(|g| {
            g.len() == want.len() && g.bytes().zip(want.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
        })
    }
}

/// The metrics answer; `session` says the admin's session came with the request.
pub(super) async fn metrics(State(web): State<Web>, headers: HeaderMap) -> Response {
    if !(web.metrics.allows(&headers) || web.sessions.has_session(&headers)) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "metrics need Authorization: Bearer <[web] metrics_token> (or [web] metrics_public = true)\n",
        )
            .into_response();
    }
    let h = &web.handles;
    let mut out = String::with_capacity(32 * 1024);
    if let Some(nat) = h.nat.get() {
        prometheus(&mut out, "nat", &nat.counters());
    }
    let dhcp = h.dhcp.view().await;
    let mut leases = Counters::new();
    let now = crate::types::Time::now().unix_secs();
    let active = dhcp.leases.iter().filter(|l| l.expires > now).count() as u64;
    leases
        .push("leases", &[("state", "active")], crate::counters::Kind::Gauge, active)
        .push("leases", &[("state", "expired")], crate::counters::Kind::Gauge, dhcp.leases.len() as u64 - active)
        .push("leases", &[("state", "static")], crate::counters::Kind::Gauge, dhcp.config_statics.len() as u64)
        .gauge("free_addresses", dhcp.free_addresses as u64);
    leases.extend(dhcp.counters);
    prometheus(&mut out, "dhcp", &leases);
    let page = crate::dns::shell::LogPage { device: None, offset: 0, limit: 0 };
    prometheus(&mut out, "dns", &h.dns.view(page).await.counters);
    prometheus(&mut out, "traffic", &h.traffic.counters().await);
    prometheus(&mut out, "capture", &h.capture.counters().await);
    if let Some(p) = h.ports.view().await {
        prometheus(&mut out, "ports", &p.counters);
    }
    devices(&mut out, &web).await;
    process(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}

/// Bytes and packets per device (labelled by MAC and name), the busiest `MAX_DEVICES`.
async fn devices(out: &mut String, web: &Web) {
    let mut list = web.handles.traffic.devices().await;
    list.sort_by_key(|d| std::cmp::Reverse(d.total.up_bytes + d.total.down_bytes));
    list.truncate(MAX_DEVICES);
    let series = [
        ("gatekeeper_device_bytes_total", "Bytes a device sent (up) and received (down) through the NAT."),
        ("gatekeeper_device_packets_total", "Packets a device sent (up) and received (down) through the NAT."),
    ];
    // Names from one read of the hosts table.
    let names: std::collections::HashMap<crate::types::Mac, String> =
        web.handles.hosts.all().into_iter().filter_map(|h| Some((h.mac, h.name?))).collect();
    for (i, (name, help)) in series.iter().enumerate() {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for d in &list {
            let mac = d.device.to_string();
            let label = match d.device {
                crate::types::Device::Mac(m) => names.get(&m).map(String::as_str),
                crate::types::Device::Ip(_) => None,
            };
            let name_label = escape_label(label.unwrap_or(""));
            let (up, down) = if i == 0 {
                (d.total.up_bytes, d.total.down_bytes)
            } else {
                (d.total.up_packets, d.total.down_packets)
            };
            for (dir, v) in [("up", up), ("down", down)] {
                let _ = writeln!(
                    out,
                    "{name}{{device=\"{}\",name=\"{name_label}\",direction=\"{dir}\"}} {v}",
                    escape_label(&mac)
                );
            }
        }
    }
}

/// The process's memory, from /proc/self/statm (pages).
fn process(out: &mut String) {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let mut f = statm.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
    let (size, resident) = (f.next().unwrap_or(0), f.next().unwrap_or(0));
    // SAFETY: sysconf only reads a system constant.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let _ = writeln!(
        out,
        "# HELP gatekeeper_process_resident_memory_bytes Resident memory of the gatekeeper process.\n\
         # TYPE gatekeeper_process_resident_memory_bytes gauge\n\
         gatekeeper_process_resident_memory_bytes {}\n\
         # HELP gatekeeper_process_virtual_memory_bytes Virtual memory of the gatekeeper process.\n\
         # TYPE gatekeeper_process_virtual_memory_bytes gauge\n\
         gatekeeper_process_virtual_memory_bytes {}",
        resident * page,
        size * page
    );
}
