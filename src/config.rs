//! Configuration: defaults, then the TOML file, then the environment (`LAN`, `WAN`, `PORT_FORWARDING`, kept from
//! the original project), then command-line flags. Later sources override earlier ones field by field.
//! Every bad value is rejected with an error that names the value and says what is expected.

use crate::dhcp::lease::StaticLease;
use crate::dhcp::server::RelayPool;
use crate::ports::forward::{self, ForwardError};
pub use crate::ports::forward::{PortForward, Protocols};
use crate::types::Mac;
use ipnet::Ipv4Net;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

pub const DEFAULT_STATE_DIR: &str = "/var/lib/gatekeeper";
pub const DEFAULT_CONFIG_FILE: &str = "/etc/gatekeeper/gatekeeper.toml";
pub const DEFAULT_WEB_PORT: u16 = 1337;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// The resolved configuration the program runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Interfaces to use as the LAN; empty means auto-detect.
    pub lan: Vec<String>,
    /// The WAN interface; `None` means the default route's interface.
    pub wan: Option<String>,
    /// The LAN subnet; `None` means pick a free private /24.
    pub subnet: Option<Ipv4Net>,
    pub state_dir: PathBuf,
    pub web_port: u16,
    /// `[web] public_read`: the UI readable on the LAN without logging in (changes still need the admin).
    pub public_read: bool,
    /// `[web] metrics_public`: `/metrics` readable on the LAN without a token.
    pub metrics_public: bool,
    /// `[web] metrics_token`: the bearer token scrapers send for `/metrics`.
    pub metrics_token: Option<String>,
    pub port_forwards: Vec<PortForward>,
    pub dhcp: DhcpSettings,
    pub dns: DnsSettings,
    /// NAT packet queues (one thread each); `None`: one per CPU, at most `MAX_NAT_QUEUES`.
    pub nat_queues: Option<u16>,
    pub traffic: TrafficSettings,
    pub capture: CaptureSettings,
    pub ports: PortsSettings,
}

/// The `[ports]` section: the port mapping protocols apps use to ask for ports themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsSettings {
    pub natpmp: bool,
    pub pcp: bool,
    pub upnp: bool,
    /// The UPnP IGD's HTTP port on the router's LAN address.
    pub upnp_port: u16,
    /// Most app mappings one device may hold.
    pub mappings_per_device: usize,
}

impl Default for PortsSettings {
    fn default() -> Self {
        PortsSettings { natpmp: true, pcp: true, upnp: true, upnp_port: 5000, mappings_per_device: 32 }
    }
}

/// The `[capture]` section: every device's ring of recent packets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureSettings {
    /// Each device's ring, MiB; 0 turns capture off.
    pub ring_mb: usize,
    /// Bytes kept of each packet, 0 = all of it.
    pub snap: usize,
    /// Bytes kept of each packet over 1,500 bytes (a GSO aggregate of bulk TCP), 0 = as `snap`.
    pub large_snap: usize,
    /// Per device (by MAC): its own ring size (0 = not captured) and snap length.
    pub devices: Vec<(crate::types::Mac, Option<usize>, Option<usize>)>,
    /// All rings together at most, MiB (a new device's ring is refused, counted, beyond it).
    pub total_mb: usize,
}

impl Default for CaptureSettings {
    fn default() -> Self {
        CaptureSettings { ring_mb: 5, snap: 0, large_snap: 0, devices: Vec::new(), total_mb: 1024 }
    }
}

/// The `[traffic]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficSettings {
    /// Traffic accounting on (the default); off, nobody reads the packet path's records.
    pub enabled: bool,
    /// The 24 h history's memory cap, MiB.
    pub memory_mb: usize,
    /// How often the history is snapshotted to the state directory, seconds.
    pub snapshot_secs: u64,
}

impl Default for TrafficSettings {
    fn default() -> Self {
        TrafficSettings { enabled: true, memory_mb: 64, snapshot_secs: 60 }
    }
}

pub const MAX_NAT_QUEUES: u16 = 8;

impl Config {
    /// How many NAT queues to run.
    pub fn nat_queue_count(&self) -> u16 {
        self.nat_queues.unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            cpus.min(MAX_NAT_QUEUES as usize) as u16
        })
    }
}

/// The `[dns]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsSettings {
    /// Upstream servers; empty: the machine's resolvers (`/etc/resolv.conf`).
    pub upstreams: Vec<SocketAddr>,
    /// Cached answers held at most.
    pub cache_size: usize,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings { upstreams: Vec::new(), cache_size: 10_000 }
    }
}

/// Parses an upstream DNS server: `IP` or `IP:PORT` (IPv6 as `[addr]:port`).
pub fn parse_upstream(s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        ConfigError(format!(
            "DNS upstream {s:?} is not an address; expected IP or IP:PORT, e.g. 9.9.9.9 or [2620:fe::fe]:53"
        ))
    })
}

/// The `[dhcp]` section; what it leaves out is derived from the LAN subnet when the LAN is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSettings {
    /// Dynamic range, inclusive; `None`: the larger side of the subnet around the router.
    pub range: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Lease time in seconds; `None`: 12 hours.
    pub lease_secs: Option<u32>,
    pub static_leases: Vec<StaticLease>,
    /// `/etc/ethers`-style static leases, host names resolved through `hosts`; a missing file is fine.
    pub ethers: PathBuf,
    pub hosts: PathBuf,
    /// Subnets served through DHCP relays.
    pub relays: Vec<RelayPool>,
}

impl Default for DhcpSettings {
    fn default() -> Self {
        DhcpSettings {
            range: None,
            lease_secs: None,
            static_leases: Vec::new(),
            ethers: PathBuf::from("/etc/ethers"),
            hosts: PathBuf::from("/etc/hosts"),
            relays: Vec::new(),
        }
    }
}

impl From<ForwardError> for ConfigError {
    fn from(e: ForwardError) -> ConfigError {
        ConfigError(e.0)
    }
}

/// Parses one `PORT_FORWARDING` entry (see [`forward::parse_port_forward`]).
pub fn parse_port_forward(entry: &str) -> Result<PortForward, ConfigError> {
    Ok(forward::parse_port_forward(entry)?)
}

/// Parses the whole `PORT_FORWARDING` variable (see [`forward::parse_port_forwards`]).
pub fn parse_port_forwards(value: &str) -> Result<Vec<PortForward>, ConfigError> {
    Ok(forward::parse_port_forwards(value)?)
}

/// Interface names as the kernel accepts them (IFNAMSIZ - 1 bytes, no '/', ':' or whitespace).
pub fn validate_ifname(name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        err(format!("{name:?} is not a valid interface name (1-15 characters, no '/', ':' or spaces)"))
    }
}

/// A LAN subnet: a private-use-sized IPv4 network with room for the router and clients.
pub fn parse_subnet(value: &str) -> Result<Ipv4Net, ConfigError> {
    let net: Ipv4Net = value.parse().map_err(|_| {
        ConfigError(format!("subnet {value:?} is not an IPv4 CIDR; expected something like 10.0.0.0/24"))
    })?;
    if !(8..=30).contains(&net.prefix_len()) {
        return err(format!(
            "subnet {value:?} has prefix length /{}; expected /8 to /30 so that the router and clients fit",
            net.prefix_len()
        ));
    }
    let net = net.trunc();
    let first = net.network();
    if first.is_loopback() || first.is_multicast() || first.is_unspecified() || first.octets()[0] >= 240 {
        return err(format!("subnet {value:?} is not usable for a LAN; use a private range such as 10.0.0.0/24"));
    }
    Ok(net)
}

/// `/etc/gatekeeper/gatekeeper.toml`. Unknown keys are errors so that typos do not pass silently.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub lan: Option<Vec<String>>,
    pub wan: Option<String>,
    pub subnet: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub web_port: Option<u16>,
    #[serde(default)]
    pub forward: Vec<FileForward>,
    pub dhcp: Option<FileDhcp>,
    pub dns: Option<FileDns>,
    pub nat: Option<FileNat>,
    pub traffic: Option<FileTraffic>,
    pub capture: Option<FileCapture>,
    pub web: Option<FileWeb>,
    pub ports: Option<FilePorts>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilePorts {
    pub natpmp: Option<bool>,
    pub pcp: Option<bool>,
    pub upnp: Option<bool>,
    pub upnp_port: Option<u16>,
    pub mappings_per_device: Option<usize>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileCapture {
    pub ring_mb: Option<usize>,
    pub snap: Option<usize>,
    pub large_snap: Option<usize>,
    pub total_mb: Option<usize>,
    /// `[capture.device."aa:bb:cc:dd:ee:ff"] ring_mb = 1, snap = 128`
    #[serde(default)]
    pub device: std::collections::BTreeMap<String, FileCaptureDevice>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileCaptureDevice {
    pub ring_mb: Option<usize>,
    pub snap: Option<usize>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileWeb {
    pub public_read: Option<bool>,
    pub metrics_public: Option<bool>,
    pub metrics_token: Option<String>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileTraffic {
    pub enabled: Option<bool>,
    pub memory_mb: Option<usize>,
    pub snapshot_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileNat {
    pub queues: Option<u16>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileDns {
    #[serde(default)]
    pub upstreams: Vec<String>,
    pub cache_size: Option<usize>,
}

#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileDhcp {
    /// `["10.0.0.100", "10.0.0.200"]`
    pub range: Option<[Ipv4Addr; 2]>,
    /// Seconds.
    pub lease_time: Option<u32>,
    pub ethers: Option<PathBuf>,
    pub hosts: Option<PathBuf>,
    #[serde(default, rename = "static")]
    pub statics: Vec<FileStatic>,
    #[serde(default)]
    pub relay: Vec<FileRelay>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileStatic {
    pub mac: String,
    pub ip: Ipv4Addr,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileRelay {
    pub subnet: String,
    pub range: Option<[Ipv4Addr; 2]>,
    pub router: Option<Ipv4Addr>,
}

impl FileDhcp {
    fn settings(&self) -> Result<DhcpSettings, ConfigError> {
        let mut out =
            DhcpSettings { range: self.range.map(|[a, b]| (a, b)), lease_secs: self.lease_time, ..Default::default() };
        if let Some(p) = &self.ethers {
            out.ethers = p.clone();
        }
        if let Some(p) = &self.hosts {
            out.hosts = p.clone();
        }
        for s in &self.statics {
            let mac = Mac::parse(&s.mac).ok_or_else(|| {
                ConfigError(format!(
                    "config file [[dhcp.static]]: {:?} is not a MAC address; expected six hex pairs like \
                     aa:bb:cc:dd:ee:ff",
                    s.mac
                ))
            })?;
            let hostname = match &s.name {
                Some(n) => Some(crate::dhcp::hostname::sanitize(n.as_bytes()).ok_or_else(|| {
                    ConfigError(format!("config file [[dhcp.static]]: {n:?} is not a usable host name"))
                })?),
                None => None,
            };
            out.static_leases.push(StaticLease { mac, ip: s.ip, hostname });
        }
        for r in &self.relay {
            let subnet: Ipv4Net = r.subnet.parse().map_err(|_| {
                ConfigError(format!(
                    "config file [[dhcp.relay]]: subnet {:?} is not an IPv4 CIDR; expected e.g. 10.77.0.0/16",
                    r.subnet
                ))
            })?;
            let subnet = subnet.trunc();
            let range = match r.range {
                Some([a, b]) => (a, b),
                None => {
                    let first = u32::from(subnet.network()) + 1;
                    let last = u32::from(subnet.broadcast()).saturating_sub(1).max(first);
                    (first.into(), last.into())
                }
            };
            out.relays.push(RelayPool { subnet, range, router: r.router });
        }
        Ok(out)
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileForward {
    /// External (WAN) port; defaults to the port of `to`.
    pub port: Option<u16>,
    /// LAN target, `IP:PORT`.
    pub to: String,
    #[serde(default = "both")]
    pub protocol: Protocols,
}

fn both() -> Protocols {
    Protocols::Both
}

impl FileConfig {
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError(format!("config file {}: {e}", origin.display())))
    }

    /// Reads `path` if given (it must exist), else the default file if present.
    pub fn load(path: Option<&Path>) -> Result<Option<Self>, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_FILE), false),
        };
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
            Err(e) => err(format!("cannot read config file {}: {e}", path.display())),
        }
    }

    fn forwards(&self) -> Result<Vec<PortForward>, ConfigError> {
        self.forward
            .iter()
            .map(|f| {
                let target = match f.port {
                    Some(p) => format!("{p}={}", f.to),
                    None => f.to.clone(),
                };
                let mut pf =
                    parse_port_forward(&target).map_err(|e| ConfigError(format!("config file [[forward]]: {e}")))?;
                pf.protocols = f.protocol;
                Ok(pf)
            })
            .collect()
    }
}

/// The original project's environment variables.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct EnvConfig {
    pub lan: Option<String>,
    pub wan: Option<String>,
    pub port_forwarding: Option<String>,
}

impl EnvConfig {
    pub fn from_vars(vars: &HashMap<String, String>) -> Self {
        let get = |k: &str| vars.get(k).filter(|v| !v.trim().is_empty()).cloned();
        EnvConfig { lan: get("LAN"), wan: get("WAN"), port_forwarding: get("PORT_FORWARDING") }
    }

    pub fn from_process() -> Self {
        Self::from_vars(&std::env::vars().collect())
    }
}

/// What the command line said; `None`/empty means "not given".
#[derive(Debug, Default, Clone, PartialEq)]
pub struct FlagConfig {
    pub lan: Vec<String>,
    pub wan: Option<String>,
    pub subnet: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub web_port: Option<u16>,
    pub nat_queues: Option<u16>,
}

/// Merges the sources: flags > environment > file > defaults. Port forwards from the file and the environment add up.
pub fn resolve(file: Option<FileConfig>, env: &EnvConfig, flags: &FlagConfig) -> Result<Config, ConfigError> {
    let file = file.unwrap_or_default();

    let env_lan = env.lan.as_ref().map(|v| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
    let lan = if !flags.lan.is_empty() {
        flags.lan.clone()
    } else if let Some(l) = env_lan {
        l
    } else {
        file.lan.clone().unwrap_or_default()
    };
    for name in &lan {
        validate_ifname(name).map_err(|e| ConfigError(format!("LAN interface: {e}")))?;
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = lan.iter().find(|n| !seen.insert(*n)) {
        return err(format!("LAN interface {dup:?} is listed twice"));
    }

    let wan = flags.wan.clone().or_else(|| env.wan.as_ref().map(|w| w.trim().to_owned())).or(file.wan.clone());
    if let Some(w) = &wan {
        validate_ifname(w).map_err(|e| ConfigError(format!("WAN interface: {e}")))?;
        if lan.contains(w) {
            return err(format!("interface {w:?} is given as both LAN and WAN; it can only be one of them"));
        }
    }

    let subnet = match flags.subnet.as_ref().or(file.subnet.as_ref()) {
        Some(s) => Some(parse_subnet(s)?),
        None => None,
    };

    let state_dir =
        flags.state_dir.clone().or(file.state_dir.clone()).unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let web_port = flags.web_port.or(file.web_port).unwrap_or(DEFAULT_WEB_PORT);
    if web_port == 0 {
        return err("web port 0 is not a port; expected 1-65535");
    }

    let mut port_forwards = file.forwards()?;
    if let Some(pf) = &env.port_forwarding {
        port_forwards.extend(parse_port_forwards(pf).map_err(|e| ConfigError(format!("PORT_FORWARDING: {e}")))?);
    }
    let mut seen = std::collections::HashSet::new();
    port_forwards.retain(|f| seen.insert(*f));
    forward::check_forward_conflicts(&port_forwards)?;

    let dhcp = match &file.dhcp {
        Some(d) => d.settings()?,
        None => DhcpSettings::default(),
    };

    let mut dns = DnsSettings::default();
    if let Some(d) = &file.dns {
        dns.upstreams = d.upstreams.iter().map(|u| parse_upstream(u)).collect::<Result<_, _>>()?;
        if let Some(n) = d.cache_size {
            if n == 0 {
                return err("DNS cache_size 0 is not a size; expected at least 1 (entries)");
            }
            dns.cache_size = n;
        }
    }

    let nat_queues = flags.nat_queues.or(file.nat.as_ref().and_then(|n| n.queues));
    if let Some(q) = nat_queues
        && !(1..=MAX_NAT_QUEUES).contains(&q)
    {
        return err(format!("NAT queues {q} is out of range; expected 1-{MAX_NAT_QUEUES}"));
    }

    let mut traffic = TrafficSettings::default();
    if let Some(t) = &file.traffic {
        traffic.enabled = t.enabled.unwrap_or(true);
        if let Some(m) = t.memory_mb {
            if !(1..=65_536).contains(&m) {
                return err(format!("traffic memory_mb {m} is out of range; expected 1-65536 (MiB)"));
            }
            traffic.memory_mb = m;
        }
        if let Some(s) = t.snapshot_secs {
            if !(1..=86_400).contains(&s) {
                return err(format!("traffic snapshot_secs {s} is out of range; expected 1-86400 (seconds)"));
            }
            traffic.snapshot_secs = s;
        }
    }

    let capture = match &file.capture {
        Some(c) => capture_settings(c)?,
        None => CaptureSettings::default(),
    };

    let mut ports = PortsSettings::default();
    if let Some(p) = &file.ports {
        ports.natpmp = p.natpmp.unwrap_or(ports.natpmp);
        ports.pcp = p.pcp.unwrap_or(ports.pcp);
        ports.upnp = p.upnp.unwrap_or(ports.upnp);
        if let Some(port) = p.upnp_port {
            if port == 0 || port == web_port || port == 53 || port == 67 {
                return err(format!(
                    "ports upnp_port {port} cannot be used; expected a free TCP port of the router (not the web UI's)"
                ));
            }
            ports.upnp_port = port;
        }
        if let Some(n) = p.mappings_per_device {
            if !(1..=1024).contains(&n) {
                return err(format!("ports mappings_per_device {n} is out of range; expected 1-1024"));
            }
            ports.mappings_per_device = n;
        }
    }

    let public_read = file.web.as_ref().and_then(|w| w.public_read).unwrap_or(false);
    let metrics_public = file.web.as_ref().and_then(|w| w.metrics_public).unwrap_or(false);
    let metrics_token = file.web.as_ref().and_then(|w| w.metrics_token.clone());
    if let Some(t) = &metrics_token
        && (t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()))
    {
        return err("web metrics_token must be at least 16 printable characters without spaces");
    }
    Ok(Config {
        lan,
        wan,
        subnet,
        state_dir,
        web_port,
        public_read,
        metrics_public,
        metrics_token,
        port_forwards,
        dhcp,
        dns,
        nat_queues,
        traffic,
        capture,
        ports,
    })
}

fn capture_settings(c: &FileCapture) -> Result<CaptureSettings, ConfigError> {
    let ring = |what: &str, m: usize| {
        if m > 1024 {
            return err(format!("{what} ring_mb {m} is out of range; expected 0-1024 (MiB, 0 = off)"));
        }
        Ok(m)
    };
    let snap = |what: &str, n: usize| {
        if n != 0 && !(64..=262_144).contains(&n) {
            return err(format!("{what} {n} is out of range; expected 0 (whole packets) or 64-262144 (bytes)"));
        }
        Ok(n)
    };
    let mut s = CaptureSettings::default();
    if let Some(m) = c.ring_mb {
        s.ring_mb = ring("capture", m)?;
    }
    if let Some(n) = c.snap {
        s.snap = snap("capture snap", n)?;
    }
    if let Some(n) = c.large_snap {
        s.large_snap = snap("capture large_snap", n)?;
    }
    if let Some(t) = c.total_mb {
        if !(1..=65_536).contains(&t) {
            return err(format!("capture total_mb {t} is out of range; expected 1-65536 (MiB)"));
        }
        s.total_mb = t;
    }
    for (mac, d) in &c.device {
        let what = format!("capture.device.\"{mac}\"");
        let m: crate::types::Mac = mac
            .parse()
            .map_err(|_| ConfigError(format!("{what}: {mac:?} is not a MAC address; expected aa:bb:cc:dd:ee:ff")))?;
        let r = d.ring_mb.map(|m| ring(&what, m)).transpose()?;
        let n = d.snap.map(|n| snap(&format!("{what} snap"), n)).transpose()?;
        s.devices.push((m, r, n));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvConfig {
        EnvConfig::from_vars(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    fn file(text: &str) -> FileConfig {
        FileConfig::parse(text, Path::new("test.toml")).unwrap()
    }

    #[test]
    fn defaults() {
        let c = resolve(None, &EnvConfig::default(), &FlagConfig::default()).unwrap();
        assert!(c.lan.is_empty());
        assert_eq!(c.wan, None);
        assert_eq!(c.subnet, None);
        assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
        assert_eq!(c.web_port, 1337);
        assert!(c.port_forwards.is_empty());
    }

    #[test]
    fn flags_override_env_override_file() {
        let f = file(
            r#"lan = ["f1"]
               wan = "fw"
               subnet = "10.1.0.0/24"
               state_dir = "/file/state"
               web_port = 8080"#,
        );
        let e = env(&[("LAN", "e1 e2"), ("WAN", "ew")]);
        let c = resolve(Some(f), &e, &FlagConfig::default()).unwrap();
        assert_eq!(c.lan, vec!["e1", "e2"]);
        assert_eq!(c.wan.as_deref(), Some("ew"));
        assert_eq!(c.subnet, Some("10.1.0.0/24".parse().unwrap()));
        assert_eq!(c.state_dir, PathBuf::from("/file/state"));
        assert_eq!(c.web_port, 8080);

        let flags = FlagConfig {
            lan: vec!["x1".into()],
            wan: Some("xw".into()),
            subnet: Some("192.168.5.0/24".into()),
            state_dir: Some("/flag".into()),
            web_port: Some(9000),
            nat_queues: Some(2),
        };
        let f = file(
            r#"lan = ["f1"]
                       wan = "fw""#,
        );
        let c = resolve(Some(f), &e, &flags).unwrap();
        assert_eq!(c.lan, vec!["x1"]);
        assert_eq!(c.wan.as_deref(), Some("xw"));
        assert_eq!(c.subnet, Some("192.168.5.0/24".parse().unwrap()));
        assert_eq!(c.state_dir, PathBuf::from("/flag"));
        assert_eq!(c.web_port, 9000);
        assert_eq!(c.nat_queues, Some(2));
    }

    #[test]
    fn nat_queues_from_the_file_bounded_and_defaulting_to_the_cpus() {
        let c = resolve(Some(file("[nat]\nqueues = 3")), &env(&[]), &FlagConfig::default()).unwrap();
        assert_eq!(c.nat_queue_count(), 3);
        let e = resolve(Some(file("[nat]\nqueues = 0")), &env(&[]), &FlagConfig::default()).unwrap_err();
        assert!(e.0.contains("NAT queues 0"), "{e}");
        let c = resolve(None, &env(&[]), &FlagConfig::default()).unwrap();
        assert!((1..=MAX_NAT_QUEUES).contains(&c.nat_queue_count()));
    }

    #[test]
    fn file_used_when_nothing_else() {
        let c =
            resolve(Some(file(r#"lan = ["eth1", "eth2"]"#)), &env(&[("LAN", "  ")]), &FlagConfig::default()).unwrap();
        assert_eq!(c.lan, vec!["eth1", "eth2"], "a blank LAN variable counts as unset");
    }

    #[test]
    fn lan_and_wan_must_differ() {
        let e = resolve(None, &env(&[("LAN", "eth0 eth1"), ("WAN", "eth0")]), &FlagConfig::default()).unwrap_err();
        assert!(e.0.contains("both LAN and WAN"), "{e}");
        let e = resolve(None, &env(&[("LAN", "eth1 eth1")]), &FlagConfig::default()).unwrap_err();
        assert!(e.0.contains("twice"), "{e}");
    }

    #[test]
    fn bad_interface_names() {
        for bad in ["", "this-name-is-too-long", "a/b", "a:b", ".."] {
            let flags = FlagConfig { lan: vec![bad.into()], ..Default::default() };
            let e = resolve(None, &EnvConfig::default(), &flags).unwrap_err();
            assert!(e.0.contains("not a valid interface name"), "{bad}: {e}");
        }
    }

    #[test]
    fn subnets() {
        assert_eq!(parse_subnet("10.0.0.0/24").unwrap(), "10.0.0.0/24".parse::<Ipv4Net>().unwrap());
        assert_eq!(parse_subnet("10.0.0.77/24").unwrap(), "10.0.0.0/24".parse::<Ipv4Net>().unwrap());
        for bad in ["10.0.0.0", "10.0.0.0/31", "10.0.0.0/33", "10.0.0.0/4", "127.0.0.0/24", "224.0.0.0/24", "x"] {
            let e = parse_subnet(bad).unwrap_err();
            assert!(e.0.contains(bad), "error for {bad} must name it: {e}");
        }
    }

    #[test]
    fn port_forwarding_variable() {
        let fw = parse_port_forwards("10.0.0.5:25565 10.0.0.7:51820").unwrap();
        assert_eq!(
            fw,
            vec![
                PortForward {
                    protocols: Protocols::Both,
                    external_port: 25565,
                    internal: "10.0.0.5:25565".parse().unwrap()
                },
                PortForward {
                    protocols: Protocols::Both,
                    external_port: 51820,
                    internal: "10.0.0.7:51820".parse().unwrap()
                },
            ]
        );
        let fw = parse_port_forwards("8080=10.0.0.5:80/tcp,\n 53=10.0.0.6:53/udp").unwrap();
        assert_eq!(fw[0].external_port, 8080);
        assert_eq!(fw[0].internal.port(), 80);
        assert_eq!(fw[0].protocols, Protocols::Tcp);
        assert_eq!(fw[1].protocols, Protocols::Udp);
        assert!(parse_port_forwards("   ").unwrap().is_empty());
    }

    #[test]
    fn port_forwarding_bad_inputs_name_the_value() {
        for bad in [
            "10.0.0.5",
            "10.0.0.5:",
            "10.0.0.5:0",
            "10.0.0.5:65536",
            "10.0.0.5:http",
            "10.0.0:80",
            "host.lan:80",
            "[::1]:80",
            "0.0.0.0:80",
            "127.0.0.1:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "10.0.0.5:80/sctp",
            "0=10.0.0.5:80",
            "x=10.0.0.5:80",
        ] {
            let e = parse_port_forwards(&format!("10.0.0.9:22 {bad}")).unwrap_err();
            assert!(e.0.contains(&format!("{bad:?}")), "error must quote {bad:?}: {e}");
            assert!(e.0.contains("expected"), "error must say what is expected: {e}");
        }
    }

    #[test]
    fn port_forward_conflicts() {
        let e =
            resolve(None, &env(&[("PORT_FORWARDING", "10.0.0.5:80 10.0.0.6:80")]), &FlagConfig::default()).unwrap_err();
        assert!(e.0.contains("external port 80"), "{e}");
        // Different protocols on one port are fine; exact duplicates collapse.
        let c = resolve(
            None,
            &env(&[("PORT_FORWARDING", "10.0.0.5:80/tcp 10.0.0.6:80/udp 10.0.0.6:80/udp")]),
            &FlagConfig::default(),
        )
        .unwrap();
        assert_eq!(c.port_forwards.len(), 2);
    }

    #[test]
    fn forwards_from_file_and_env_add_up() {
        let f = file(
            r#"[[forward]]
               to = "10.0.0.5:25565"
               [[forward]]
               port = 2222
               to = "10.0.0.8:22"
               protocol = "tcp""#,
        );
        let c = resolve(Some(f), &env(&[("PORT_FORWARDING", "10.0.0.7:51820/udp")]), &FlagConfig::default()).unwrap();
        assert_eq!(c.port_forwards.len(), 3);
        assert_eq!(c.port_forwards[1].external_port, 2222);
        assert_eq!(c.port_forwards[1].protocols, Protocols::Tcp);
        assert_eq!(c.port_forwards[2].internal, "10.0.0.7:51820".parse().unwrap());
    }

    #[test]
    fn dhcp_section() {
        let f = file(
            r#"[dhcp]
               range = ["10.0.0.100", "10.0.0.199"]
               lease_time = 3600
               ethers = "/nonexistent/ethers"
               [[dhcp.static]]
               mac = "AA-bb-cc-dd-ee-01"
               ip = "10.0.0.50"
               name = "Printer"
               [[dhcp.relay]]
               subnet = "10.77.0.0/16""#,
        );
        let c = resolve(Some(f), &EnvConfig::default(), &FlagConfig::default()).unwrap();
        assert_eq!(c.dhcp.range, Some(([10, 0, 0, 100].into(), [10, 0, 0, 199].into())));
        assert_eq!(c.dhcp.lease_secs, Some(3600));
        assert_eq!(c.dhcp.ethers, PathBuf::from("/nonexistent/ethers"));
        assert_eq!(c.dhcp.static_leases[0].mac, Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01]));
        assert_eq!(c.dhcp.static_leases[0].hostname.as_deref(), Some("printer"));
        assert_eq!(c.dhcp.relays[0].range, ([10, 77, 0, 1].into(), [10, 77, 255, 254].into()));

        let bad = file("[[dhcp.static]]\nmac = \"aa:bb\"\nip = \"10.0.0.5\"");
        let e = resolve(Some(bad), &EnvConfig::default(), &FlagConfig::default()).unwrap_err();
        assert!(e.0.contains("\"aa:bb\"") && e.0.contains("expected"), "{e}");
        let e = FileConfig::parse("[dhcp]\nrange = [\"10.0.0.300\", \"10.0.0.5\"]", Path::new("x")).unwrap_err();
        assert!(e.0.contains("range"), "{e}");
    }

    #[test]
    fn dns_section() {
        let f = file("[dns]\nupstreams = [\"9.9.9.9\", \"203.0.113.1:5353\", \"[2620:fe::fe]:53\"]\ncache_size = 500");
        let c = resolve(Some(f), &EnvConfig::default(), &FlagConfig::default()).unwrap();
        assert_eq!(c.dns.upstreams[0], "9.9.9.9:53".parse().unwrap());
        assert_eq!(c.dns.upstreams[1], "203.0.113.1:5353".parse().unwrap());
        assert_eq!(c.dns.upstreams[2], "[2620:fe::fe]:53".parse().unwrap());
        assert_eq!(c.dns.cache_size, 500);
        assert_eq!(c.traffic, TrafficSettings::default());
        let t = resolve(
            Some(file("[traffic]\nmemory_mb = 8\nsnapshot_secs = 2")),
            &EnvConfig::default(),
            &FlagConfig::default(),
        );
        assert_eq!(t.unwrap().traffic, TrafficSettings { enabled: true, memory_mb: 8, snapshot_secs: 2 });
        let e = resolve(Some(file("[traffic]\nmemory_mb = 0")), &EnvConfig::default(), &FlagConfig::default());
        assert!(e.unwrap_err().to_string().contains("memory_mb"));
        let e =
            resolve(Some(file("[dns]\nupstreams = [\"dns.google\"]")), &EnvConfig::default(), &FlagConfig::default())
                .unwrap_err();
        assert!(e.0.contains("\"dns.google\"") && e.0.contains("expected"), "{e}");
    }

    #[test]
    fn file_errors_are_clear() {
        let e = FileConfig::parse("lan = \"eth1\"", Path::new("/etc/x.toml")).unwrap_err();
        assert!(e.0.contains("/etc/x.toml"), "{e}");
        let e = FileConfig::parse("lna = [\"eth1\"]", Path::new("x.toml")).unwrap_err();
        assert!(e.0.contains("lna"), "unknown keys are named: {e}");
        let e = FileConfig::load(Some(Path::new("/nonexistent/gk.toml"))).unwrap_err();
        assert!(e.0.contains("/nonexistent/gk.toml"), "{e}");
        let bad_fw = file("[[forward]]\nto = \"10.0.0.5\"");
        let e = resolve(Some(bad_fw), &EnvConfig::default(), &FlagConfig::default()).unwrap_err();
        assert!(e.0.contains("[[forward]]") && e.0.contains("10.0.0.5"), "{e}");
    }
}
