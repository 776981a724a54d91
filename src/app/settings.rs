//! The one place where the configuration and the LAN plan become each subsystem's settings. The subsystems never
//! read `Config`; `config` never reads theirs.

use crate::config::{Config, ConfigError};
use crate::dhcp::server::DhcpConfig;
use crate::dns::DnsConfig;
use crate::net::plan::Plan;
use crate::types::LOCAL_DOMAIN;
use tracing::warn;

/// Which interfaces and subnet the LAN should use.
pub fn lan(config: &Config) -> crate::net::plan::Wanted {
    crate::net::plan::Wanted { lan: config.lan.clone(), wan: config.wan.clone(), subnet: config.subnet }
}

/// The DHCP server: the `[dhcp]` settings on the planned subnet, with the static leases of `/etc/ethers` after the
/// config file's (the config file wins for the same MAC or address).
pub fn dhcp(config: &Config, lan: &Plan) -> Result<crate::dhcp::shell::Settings, ConfigError> {
    let settings = &config.dhcp;
    let mut cfg = DhcpConfig::new(lan.router, lan.subnet);
    cfg.domain = LOCAL_DOMAIN.into();
    if let Some(r) = settings.range {
        cfg.range = r;
    }
    if let Some(l) = settings.lease_secs {
        cfg.lease_secs = l;
    }
    cfg.static_leases = settings.static_leases.clone();
    let (from_ethers, warnings) = crate::dhcp::ethers::read_static_leases(&settings.ethers, &settings.hosts);
    for w in warnings {
        warn!("{}: {w}", settings.ethers.display());
    }
    for s in from_ethers {
        if !cfg.static_leases.iter().any(|c| c.mac == s.mac || c.ip == s.ip) {
            cfg.static_leases.push(s);
        }
    }
    cfg.relay_pools = settings.relays.clone();
    cfg.validate().map_err(|e| ConfigError(format!("DHCP: {e}")))?;
    Ok(crate::dhcp::shell::Settings {
        server: cfg,
        interface: lan.lan_interface().to_owned(),
        state_dir: config.state_dir.clone(),
        capture: crate::capture::LocalFeed::off(),
    })
}

/// The DNS server on the router's LAN address, forwarding to the configured upstreams or the machine's own.
pub fn dns(config: &Config, lan: &Plan) -> crate::dns::shell::Settings {
    let upstreams = crate::dns::shell::upstreams(&config.dns.upstreams, lan.router);
    let mut cfg = DnsConfig::new(lan.router, lan.subnet, upstreams);
    cfg.domain = LOCAL_DOMAIN.into();
    cfg.cache_entries = config.dns.cache_size;
    crate::dns::shell::Settings {
        core: cfg,
        interface: lan.lan_interface().to_owned(),
        capture: crate::capture::LocalFeed::off(),
    }
}

/// The web UI: where it listens (the LAN address only, so it is closed to the WAN), and what it shows of the set-up.
pub fn web(config: &Config, lan: &Plan) -> crate::web::Settings {
    crate::web::Settings {
        listen: std::net::SocketAddr::from((lan.router, config.web_port)),
        status: crate::web::Status {
            lan_interface: lan.lan_interface().to_owned(),
            lan_ports: lan.ports.iter().map(|p| p.name.clone()).collect(),
            subnet: lan.subnet.to_string(),
            router: lan.router.to_string(),
            wan: lan.wan.as_ref().map(|w| w.name.clone()),
            port_forwards: config.port_forwards.iter().map(|f| f.to_string()).collect(),
        },
        public_read: config.public_read,
        metrics: crate::web::metrics::Access { public: config.metrics_public, token: config.metrics_token.clone() },
        state_dir: config.state_dir.clone(),
    }
}

/// The NAT on the WAN address it has now; its ephemeral ports stay clear of the router's own (`app::ROUTER_PORTS`).
pub fn nat(config: &Config, lan: &Plan, wan_ip: std::net::Ipv4Addr) -> crate::nat::NatConfig {
    let mut cfg = crate::nat::NatConfig::new(wan_ip, lan.subnet, lan.router);
    cfg.port_range = super::NAT_PORTS;
    cfg.forwards = config.port_forwards.clone();
    cfg
}

/// Bytes of each NAT queue's capture tap: at 1 Gbit/s, 64 ms of packets for the capture thread to fall behind
/// by (it drains every millisecond while they flow).
pub const CAPTURE_TAP_BYTES: usize = 8 << 20;

/// Capture: on when any device has a ring.
pub fn capture_on(config: &Config) -> bool {
    let c = &config.capture;
    c.ring_mb > 0 || c.devices.iter().any(|(_, r, _)| r.is_some_and(|r| r > 0))
}

/// The packet path's taps: none when capture is off; their snap length the longest any device keeps, and the
/// large packets' (`[capture] large_snap`).
pub fn capture_tap(config: &Config) -> (usize, crate::datapath::tap::Snap) {
    let c = &config.capture;
    if !capture_on(config) {
        return (0, Default::default());
    }
    let snaps = std::iter::once(c.snap).chain(c.devices.iter().map(|(_, _, s)| s.unwrap_or(c.snap)));
    let all = if snaps.clone().any(|s| s == 0) { 0 } else { snaps.max().unwrap_or(0) };
    (CAPTURE_TAP_BYTES, crate::datapath::tap::Snap { all, large: c.large_snap })
}

pub fn capture(config: &Config) -> crate::capture::shell::Settings {
    let c = &config.capture;
    crate::capture::shell::Settings {
        core: crate::capture::core::CaptureConfig {
            ring_bytes: c.ring_mb << 20,
            snap: c.snap,
            devices: c.devices.iter().map(|(m, r, s)| (*m, (r.map(|r| r << 20), *s))).collect(),
            total_bytes: c.total_mb << 20,
        },
    }
}

/// Traffic accounting: the history's memory cap, and its snapshot in the state directory.
pub fn traffic(config: &Config) -> crate::traffic::shell::Settings {
    crate::traffic::shell::Settings {
        core: crate::traffic::TrafficConfig { memory_bytes: config.traffic.memory_mb << 20 },
        snapshot: config.state_dir.join("traffic.snap"),
        snapshot_every: std::time::Duration::from_secs(config.traffic.snapshot_secs),
    }
}

/// The ports subsystem: forwards and the port mapping protocols on the router's LAN address.
pub fn ports(config: &Config, lan: &Plan) -> crate::ports::shell::Settings {
    let p = &config.ports;
    crate::ports::shell::Settings {
        state_dir: config.state_dir.clone(),
        limits: crate::ports::core::Limits {
            nat_ports: super::NAT_PORTS,
            router_ports: super::ROUTER_PORTS,
            mappings_per_device: p.mappings_per_device,
            ..Default::default()
        },
        config_forwards: config.port_forwards.clone(),
        router: lan.router,
        lan: lan.subnet,
        protocols: crate::ports::proto::Settings {
            natpmp: p.natpmp,
            pcp: p.pcp,
            upnp: p.upnp,
            upnp_port: p.upnp_port,
            web_port: config.web_port,
            wan_if: lan.wan.as_ref().map(|w| w.name.clone()),
        },
    }
}
