//! Explicit port forwards: what they are, their text forms (`PORT_FORWARDING`, the config file), and the rules a
//! set of them must keep. The sans-IO NAT executes them; the firewall keeps the router's own sockets off them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// A forward that cannot be used, with a message that names it and says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ForwardError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocols {
    Tcp,
    Udp,
    Both,
}

impl Protocols {
    pub fn overlaps(self, other: Protocols) -> bool {
        self == Protocols::Both || other == Protocols::Both || self == other
    }
}

impl fmt::Display for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocols::Tcp => "tcp",
            Protocols::Udp => "udp",
            Protocols::Both => "tcp+udp",
        })
    }
}

/// An explicit port forward: traffic to the WAN address on `external_port` goes to `internal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortForward {
    pub protocols: Protocols,
    pub external_port: u16,
    pub internal: SocketAddrV4,
}

impl fmt::Display for PortForward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} -> {}", self.external_port, self.protocols, self.internal)
    }
}

const FORWARD_FORMS: &str =
    "expected IP:PORT (e.g. 10.0.0.5:25565), optionally EXTERNAL_PORT=IP:PORT and a /tcp or /udp suffix";

/// Parses one `PORT_FORWARDING` entry: `IP:PORT`, `EXT=IP:PORT`, each optionally suffixed `/tcp` or `/udp`.
pub fn parse_port_forward(entry: &str) -> Result<PortForward, ForwardError> {
    let bad = |why: &str| ForwardError(format!("port forward {entry:?}: {why}; {FORWARD_FORMS}"));
    let (body, protocols) = match entry.rsplit_once('/') {
        Some((body, "tcp")) => (body, Protocols::Tcp),
        Some((body, "udp")) => (body, Protocols::Udp),
        Some((_, other)) => return Err(bad(&format!("unknown protocol {other:?} (use tcp or udp)"))),
        None => (entry, Protocols::Both),
    };
    let (external, target) = match body.split_once('=') {
        Some((ext, target)) => (Some(ext), target),
        None => (None, body),
    };
    let (ip, port) = target.rsplit_once(':').ok_or_else(|| bad("missing ':PORT'"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|_| bad(&format!("{ip:?} is not an IPv4 address")))?;
    let port = parse_port(port).map_err(|why| bad(&why))?;
    let external_port = match external {
        Some(ext) => parse_port(ext).map_err(|why| bad(&why))?,
        None => port,
    };
    let forward = PortForward { protocols, external_port, internal: SocketAddrV4::new(ip, port) };
    validate_forward_target(&forward).map_err(|why| bad(&why))?;
    Ok(forward)
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a port (1-65535)")),
        Ok(p) => Ok(p),
    }
}

fn validate_forward_target(f: &PortForward) -> Result<(), String> {
    let ip = *f.internal.ip();
    if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local() {
        return Err(format!("{ip} cannot be a LAN host"));
    }
    Ok(())
}

/// Parses the whole `PORT_FORWARDING` variable: entries separated by spaces, commas or newlines.
pub fn parse_port_forwards(value: &str) -> Result<Vec<PortForward>, ForwardError> {
    value.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()).map(parse_port_forward).collect()
}

/// Rejects two forwards claiming the same external port and protocol.
pub fn check_forward_conflicts(forwards: &[PortForward]) -> Result<(), ForwardError> {
    for (i, a) in forwards.iter().enumerate() {
        for b in &forwards[..i] {
            if a.external_port == b.external_port && a.protocols.overlaps(b.protocols) && a != b {
                return Err(ForwardError(format!(
                    "port forwards {b} and {a} both claim external port {}; each external port and protocol can go \
                     to one LAN host only",
                    a.external_port
                )));
            }
        }
    }
    Ok(())
}
