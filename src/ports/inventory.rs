//! What every port of the WAN address is used for (`GET /api/ports`), and the forwards with their hits
//! (`GET /api/forwards`): built from the ports state, the router's listening sockets and a NAT snapshot. Pure; the
//! shell gathers the inputs and fills in remote names afterwards.

use super::core::{Forward, Ports, protocols_of as tp, transports};
use super::mapping::Transport;
use crate::nat::{MappingView, Protocol, Snapshot, TcpState};
use crate::types::{Mac, Time};
use serde::Serialize;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

/// Connections listed under one row (the rest are counted in `connections_total`).
pub const CONNECTIONS_PER_ROW: usize = 50;
/// Rows in one answer (`truncated` says when there were more).
pub const MAX_ROWS: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Service,
    Forward,
    App,
    Mapping,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceInfo {
    pub process: Option<String>,
    pub pid: Option<u32>,
    pub address: IpAddr,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardInfo {
    pub id: String,
    pub source: &'static str,
    pub device: Option<String>,
    pub mac: Option<Mac>,
    pub internal: Option<SocketAddrV4>,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct AppInfo {
    pub origin: super::mapping::Origin,
    pub device: Option<String>,
    pub mac: Option<Mac>,
    pub internal: SocketAddrV4,
    pub description: String,
    pub remaining_s: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MappingInfo {
    pub internal: SocketAddrV4,
    pub device: Option<String>,
    pub mac: Option<Mac>,
    pub idle_ms: Option<u64>,
    pub remaining_ms: Option<u64>,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub packets_out: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConnectionInfo {
    pub remote: SocketAddrV4,
    pub remote_name: Option<String>,
    pub state: Option<TcpState>,
    pub age_ms: u64,
    pub idle_ms: u64,
    pub remaining_ms: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Whose connection it is (for the remote's name, which is that device's own lookup); not shown.
    #[serde(skip)]
    pub device: Option<Mac>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub protocol: Transport,
    pub port: u16,
    pub kind: Kind,
    pub service: Option<ServiceInfo>,
    pub forward: Option<ForwardInfo>,
    pub app: Option<AppInfo>,
    pub mapping: Option<MappingInfo>,
    pub connections: Vec<ConnectionInfo>,
    pub connections_total: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortsView {
    pub wan_ip: Option<Ipv4Addr>,
    pub rows: Vec<Row>,
    pub truncated: bool,
    /// The port mapping protocols' requests answered and dropped (filled in by the shell).
    pub counters: crate::counters::Counters,
}

/// The NAT's protocol as a mapping's transport (ICMP has none).
pub(super) fn transport(p: Protocol) -> Option<Transport> {
    match p {
        Protocol::Tcp => Some(Transport::Tcp),
        Protocol::Udp => Some(Transport::Udp),
        Protocol::Icmp => None,
    }
}

/// The admin's forward covering `port` of `t`, if any.
fn forward_of(ports: &Ports, t: Transport, port: u16) -> Option<&Forward> {
    ports
        .forwards()
        .iter()
        .find(|f| (f.external_first..=f.external_last).contains(&port) && f.protocols.overlaps(tp(t)))
}

pub fn ports_view(ports: &Ports, nat: Option<&Snapshot>, wan_ip: Option<Ipv4Addr>, now: Time) -> PortsView {
    let name_of = |mac: Option<Mac>| mac.and_then(|m| ports.device(m)).and_then(|d| d.name.clone());
    let mut rows: Vec<Row> = Vec::new();
    let row = |protocol, port, kind| Row {
        protocol,
        port,
        kind,
        service: None,
        forward: None,
        app: None,
        mapping: None,
        connections: Vec::new(),
        connections_total: 0,
    };
    for l in ports.listeners() {
        let mut r = row(l.transport, l.port, Kind::Service);
        r.service = Some(ServiceInfo { process: l.process.clone(), pid: l.pid, address: l.address });
        rows.push(r);
    }
    // Connections by the mapping they belong to.
    let mut conns: HashMap<(Transport, u16), Vec<ConnectionInfo>> = HashMap::new();
    if let Some(s) = nat {
        for c in &s.connections {
            let Some(t) = transport(c.protocol) else { continue };
            conns.entry((t, c.external.port())).or_default().push(ConnectionInfo {
                remote: c.remote,
                remote_name: None,
                state: c.state,
                age_ms: c.age_ms,
                idle_ms: c.idle_ms,
                remaining_ms: c.remaining_ms,
                bytes_in: c.traffic.bytes_in,
                bytes_out: c.traffic.bytes_out,
                device: ports.mac_of(*c.internal.ip()),
            });
        }
    }
    let mut seen: std::collections::HashSet<(Transport, u16)> = std::collections::HashSet::new();
    let apps: HashMap<(Transport, u16), &super::core::AppMapping> =
        ports.mappings().iter().map(|m| ((m.transport, m.external_port), m)).collect();
    let mapped: Vec<&MappingView> = nat.map(|s| s.mappings.iter().collect()).unwrap_or_default();
    for m in mapped {
        let Some(t) = transport(m.protocol) else { continue };
        let port = m.external.port();
        seen.insert((t, port));
        let mac = ports.mac_of(*m.internal.ip());
        let mut r = if let Some(a) = apps.get(&(t, port)) {
            let mut r = row(t, port, Kind::App);
            r.app = Some(app_info(ports, a, now));
            r
        } else if m.forward {
            let mut r = row(t, port, Kind::Forward);
            r.forward = Some(match forward_of(ports, t, port) {
                Some(f) => ForwardInfo {
                    id: f.id.to_string(),
                    source: "api",
                    device: name_of(Some(f.mac)),
                    mac: Some(f.mac),
                    internal: Some(m.internal),
                    description: f.description.clone(),
                },
                None => config_info(ports, t, port, Some(m.internal), name_of(mac), mac),
            });
            r
        } else {
            let mut r = row(t, port, Kind::Mapping);
            r.mapping = Some(MappingInfo {
                internal: m.internal,
                device: name_of(mac),
                mac,
                idle_ms: m.idle_ms,
                remaining_ms: m.remaining_ms,
                bytes_in: m.traffic.bytes_in,
                bytes_out: m.traffic.bytes_out,
                packets_in: m.traffic.packets_in,
                packets_out: m.traffic.packets_out,
            });
            r
        };
        if let Some(mut c) = conns.remove(&(t, port)) {
            r.connections_total = c.len();
            c.sort_by_key(|c| c.idle_ms);
            c.truncate(CONNECTIONS_PER_ROW);
            r.connections = c;
        }
        rows.push(r);
    }
    // Forwards the NAT does not hold now (their device has no address, or there is no NAT yet), and app mappings
    // not yet applied: shown all the same, without traffic.
    for f in ports.forwards() {
        for p in f.external_first..=f.external_last {
            for &t in transports(f.protocols) {
                if seen.insert((t, p)) {
                    let mut r = row(t, p, Kind::Forward);
                    r.forward = Some(ForwardInfo {
                        id: f.id.to_string(),
                        source: "api",
                        device: name_of(Some(f.mac)),
                        mac: Some(f.mac),
                        internal: None,
                        description: f.description.clone(),
                    });
                    rows.push(r);
                }
            }
        }
    }
    for a in ports.mappings() {
        if seen.insert((a.transport, a.external_port)) {
            let mut r = row(a.transport, a.external_port, Kind::App);
            r.app = Some(app_info(ports, a, now));
            rows.push(r);
        }
    }
    for c in ports.config_forwards() {
        for &t in transports(c.protocols) {
            if seen.insert((t, c.external_port)) {
                let mut r = row(t, c.external_port, Kind::Forward);
                let mac = ports.mac_of(*c.internal.ip());
                r.forward = Some(config_info(ports, t, c.external_port, Some(c.internal), name_of(mac), mac));
                rows.push(r);
            }
        }
    }
    rows.sort_by_key(|r| (r.port, r.protocol, r.kind as u8));
    let truncated = rows.len() > MAX_ROWS;
    rows.truncate(MAX_ROWS);
    PortsView { wan_ip, rows, truncated, counters: crate::counters::Counters::new() }
}

fn config_info(
    ports: &Ports,
    t: Transport,
    port: u16,
    internal: Option<SocketAddrV4>,
    device: Option<String>,
    mac: Option<Mac>,
) -> ForwardInfo {
    let i = ports.config_forwards().iter().position(|c| c.external_port == port && c.protocols.overlaps(tp(t)));
    ForwardInfo {
        id: format!("config-{}", i.unwrap_or(0)),
        source: "config",
        device,
        mac,
        internal,
        description: String::new(),
    }
}

fn app_info(ports: &Ports, a: &super::core::AppMapping, now: Time) -> AppInfo {
    let mac = a.mac.or_else(|| ports.mac_of(a.ip));
    AppInfo {
        origin: a.origin,
        device: mac.and_then(|m| ports.device(m)).and_then(|d| d.name.clone()),
        mac,
        internal: SocketAddrV4::new(a.ip, a.internal_port),
        description: a.description.clone(),
        remaining_s: a.expires.ms_since(now).div_ceil(1000),
    }
}

/// A forward as the UI lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ForwardView {
    pub id: String,
    pub source: &'static str,
    pub mac: Option<Mac>,
    pub device: Option<String>,
    pub ip: Option<Ipv4Addr>,
    pub protocol: super::Protocols,
    pub external_first: u16,
    pub external_last: u16,
    pub internal_port: u16,
    pub description: String,
    pub active: bool,
    pub inactive_reason: Option<String>,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub connections: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ForwardsView {
    pub wan_ip: Option<Ipv4Addr>,
    pub forwards: Vec<ForwardView>,
}

/// Hits of the pinned mappings in `ports` of `protocols`, summed: (packets in, bytes in, packets out, bytes out,
/// connections).
fn hits(nat: Option<&Snapshot>, protocols: super::Protocols, a: u16, b: u16) -> [u64; 5] {
    let mut h = [0u64; 5];
    for m in nat.into_iter().flat_map(|s| &s.mappings) {
        let Some(t) = transport(m.protocol) else { continue };
        if m.forward && (a..=b).contains(&m.external.port()) && protocols.overlaps(tp(t)) {
            h[0] += m.traffic.packets_in;
            h[1] += m.traffic.bytes_in;
            h[2] += m.traffic.packets_out;
            h[3] += m.traffic.bytes_out;
            h[4] += u64::from(m.connections);
        }
    }
    h
}

/// `f` as shown, with its hits.
pub fn forward_view(ports: &Ports, f: &Forward, nat: Option<&Snapshot>) -> ForwardView {
    let d = ports.device(f.mac);
    let h = hits(nat, f.protocols, f.external_first, f.external_last);
    ForwardView {
        id: f.id.to_string(),
        source: "api",
        mac: Some(f.mac),
        device: d.and_then(|d| d.name.clone()),
        ip: d.map(|d| d.ip),
        protocol: f.protocols,
        external_first: f.external_first,
        external_last: f.external_last,
        internal_port: f.internal_port,
        description: f.description.clone(),
        active: d.is_some() && nat.is_some(),
        inactive_reason: match (d, nat) {
            (None, _) => Some("the device has no address now".into()),
            (_, None) => Some("the NAT is not running (no WAN address yet)".into()),
            _ => None,
        },
        packets_in: h[0],
        bytes_in: h[1],
        packets_out: h[2],
        bytes_out: h[3],
        connections: h[4],
    }
}

pub fn forwards_view(ports: &Ports, nat: Option<&Snapshot>, wan_ip: Option<Ipv4Addr>) -> ForwardsView {
    let mut forwards: Vec<ForwardView> = Vec::new();
    for (i, c) in ports.config_forwards().iter().enumerate() {
        let mac = ports.mac_of(*c.internal.ip());
        let h = hits(nat, c.protocols, c.external_port, c.external_port);
        forwards.push(ForwardView {
            id: format!("config-{i}"),
            source: "config",
            mac,
            device: mac.and_then(|m| ports.device(m)).and_then(|d| d.name.clone()),
            ip: Some(*c.internal.ip()),
            protocol: c.protocols,
            external_first: c.external_port,
            external_last: c.external_port,
            internal_port: c.internal.port(),
            description: String::new(),
            active: nat.is_some(),
            inactive_reason: nat.is_none().then(|| "the NAT is not running (no WAN address yet)".into()),
            packets_in: h[0],
            bytes_in: h[1],
            packets_out: h[2],
            bytes_out: h[3],
            connections: h[4],
        });
    }
    forwards.extend(ports.forwards().iter().map(|f| forward_view(ports, f, nat)));
    ForwardsView { wan_ip, forwards }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nat::{ConnectionView, Traffic};
    use crate::ports::core::{Device, ForwardInput, Limits, Listener, Saved};
    use crate::ports::mapping::{MapRequest, Mapper, Origin};

    const T0: Time = Time::from_unix_secs(1_800_000_000);
    const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 36);
    const MA: Mac = Mac([2, 0, 0, 0, 0, 1]);

    fn mapping(p: Protocol, int: SocketAddrV4, ext: u16, forward: bool) -> MappingView {
        MappingView {
            protocol: p,
            internal: int,
            external: SocketAddrV4::new(WAN, ext),
            forward,
            connections: 1,
            idle_ms: Some(5),
            remaining_ms: (!forward).then_some(1000),
            traffic: Traffic { packets_out: 2, bytes_out: 200, packets_in: 1, bytes_in: 100 },
        }
    }

    #[test]
    fn every_kind_of_use_is_a_row() {
        let mut p = Ports::new(Limits::default(), Vec::new(), Saved::default(), T0, 1);
        p.set_devices([(MA, Device { ip: A, name: Some("laptop".into()) })]);
        p.set_external_ip(Some(WAN));
        p.set_listeners(vec![Listener {
            transport: Transport::Tcp,
            port: 22,
            address: "0.0.0.0".parse().unwrap(),
            process: Some("sshd".into()),
            pid: Some(9),
        }]);
        let f = p
            .add_forward(ForwardInput {
                mac: MA,
                protocols: crate::ports::Protocols::Tcp,
                external_first: 8080,
                external_last: 8080,
                internal_port: 80,
                description: "web".into(),
            })
            .unwrap();
        let g = p
            .map(
                T0,
                &MapRequest {
                    origin: Origin::NatPmp,
                    client: A,
                    internal_ip: A,
                    transport: Transport::Udp,
                    internal_port: 5000,
                    external_port: 0,
                    any_port: true,
                    lifetime_secs: 100,
                    description: String::new(),
                    nonce: [0; 12],
                },
            )
            .unwrap();
        let snap = Snapshot {
            now_ms: T0.unix_ms(),
            total_mappings: 3,
            total_connections: 1,
            mappings: vec![
                mapping(Protocol::Tcp, SocketAddrV4::new(A, 80), 8080, true),
                mapping(Protocol::Udp, SocketAddrV4::new(A, 5000), g.external_port, true),
                mapping(Protocol::Tcp, SocketAddrV4::new(A, 40000), 40000, false),
            ],
            connections: vec![ConnectionView {
                protocol: Protocol::Tcp,
                internal: SocketAddrV4::new(A, 40000),
                external: SocketAddrV4::new(WAN, 40000),
                remote: "198.51.100.7:443".parse().unwrap(),
                state: Some(TcpState::Established),
                assured: true,
                age_ms: 10,
                idle_ms: 1,
                remaining_ms: 100,
                traffic: Traffic::default(),
            }],
        };
        let v = ports_view(&p, Some(&snap), Some(WAN), T0);
        let kinds: Vec<(u16, Kind)> = v.rows.iter().map(|r| (r.port, r.kind)).collect();
        assert_eq!(kinds, vec![(22, Kind::Service), (5000, Kind::App), (8080, Kind::Forward), (40000, Kind::Mapping)]);
        let m = &v.rows[3];
        assert_eq!(m.mapping.as_ref().unwrap().device.as_deref(), Some("laptop"));
        assert_eq!((m.connections_total, m.connections[0].state), (1, Some(TcpState::Established)));
        assert_eq!(v.rows[1].app.as_ref().unwrap().remaining_s, 100);
        let fv = forwards_view(&p, Some(&snap), Some(WAN));
        assert_eq!(fv.forwards[0].id, f.id.to_string());
        assert_eq!((fv.forwards[0].bytes_in, fv.forwards[0].active), (100, true));
        // Without the NAT, forwards and mappings still show.
        let v = ports_view(&p, None, None, T0);
        assert_eq!(v.rows.len(), 3);
    }
}
