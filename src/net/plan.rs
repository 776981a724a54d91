//! Deciding the LAN and WAN from a snapshot of the namespace and the configuration. Pure: no netlink here.

use super::netlink::{Link, Snapshot};
use super::subnet::{self, SubnetError};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// The bridge that joins several LAN ports. The name marks it as ours, so a leftover one can be recognised.
pub const BRIDGE_NAME: &str = "gk-lan";

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// The interfaces that make up the LAN.
    pub ports: Vec<Link>,
    /// Set when several ports are joined: the LAN interface is then this bridge.
    pub bridge: Option<String>,
    pub wan: Option<Link>,
    pub subnet: Ipv4Net,
    pub router: Ipv4Addr,
}

impl Plan {
    /// The interface that carries the router's LAN address.
    pub fn lan_interface(&self) -> &str {
        self.bridge.as_deref().unwrap_or(&self.ports[0].name)
    }
    pub fn router_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.router, self.subnet.prefix_len()).expect("prefix from a valid net")
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error(
        "no LAN interface found: every interface {0} already has an IPv4 address, is the WAN, or is part of a \
         bridge/bond. Connect an unconfigured network interface for the LAN, or name one with --lan IFACE \
         (or LAN=\"eth1 eth2\"); its IPv4 addresses must be removed first"
    )]
    NoLanCandidate(String),
    #[error("interface {0:?} does not exist here; the interfaces are: {1}")]
    NoSuchInterface(String, String),
    #[error(
        "interface {name:?} already has the address {addr}; remove it (ip addr flush dev {name}) to use it as a LAN port"
    )]
    HasAddress { name: String, addr: Ipv4Net },
    #[error("interface {0:?} is the WAN (it carries the default route); choose another for the LAN or set --wan")]
    IsWan(String),
    #[error("interface {0:?} cannot be a LAN port: {1}")]
    Unsuitable(String, &'static str),
    #[error("{0}")]
    Subnet(#[from] SubnetError),
}

fn names(links: &[&Link]) -> String {
    let v: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    if v.is_empty() { "(none)".to_owned() } else { v.join(", ") }
}

/// Why a link cannot be a LAN port, if it cannot.
fn unsuitable(link: &Link) -> Option<&'static str> {
    if link.loopback {
        return Some("it is the loopback interface");
    }
    if !link.ethernet {
        return Some("it is not an Ethernet interface");
    }
    if link.master.is_some() {
        return Some("it is already a port of a bridge or bond");
    }
    if matches!(link.kind.as_deref(), Some("bridge" | "bond" | "team" | "vrf")) {
        return Some("it is a bridge, bond, team or VRF device");
    }
    None
}

/// What the user asked for (`app::settings::lan` fills it from the config); empty means "pick for me".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// LAN ports by name; none: every unconfigured Ethernet interface.
    pub lan: Vec<String>,
    /// The WAN interface; none: the one the default route leaves by.
    pub wan: Option<String>,
    /// The LAN subnet; none: a free private /24.
    pub subnet: Option<Ipv4Net>,
}

pub fn plan(snap: &Snapshot, cfg: &Wanted) -> Result<Plan, PlanError> {
    let all: Vec<&Link> = snap.links.iter().collect();
    let find =
        |name: &str| snap.link(name).cloned().ok_or_else(|| PlanError::NoSuchInterface(name.to_owned(), names(&all)));

    let wan = match &cfg.wan {
        Some(name) => Some(find(name)?),
        None => snap
            .routes
            .iter()
            .filter(|r| r.dst.prefix_len() == 0 && r.table == 254)
            .find_map(|r| r.oif.and_then(|i| snap.link_by_index(i)).cloned()),
    };
    let is_wan = |l: &Link| wan.as_ref().is_some_and(|w| w.index == l.index);

    let ports: Vec<Link> = if cfg.lan.is_empty() {
        snap.links
            .iter()
            .filter(|l| !is_wan(l) && unsuitable(l).is_none() && snap.addrs_of(l.index).next().is_none())
            .cloned()
            .collect()
    } else {
        let mut ports = Vec::new();
        for name in &cfg.lan {
            let link = find(name)?;
            if is_wan(&link) {
                return Err(PlanError::IsWan(name.clone()));
            }
            if let Some(why) = unsuitable(&link) {
                return Err(PlanError::Unsuitable(name.clone(), why));
            }
            if let Some(a) = snap.addrs_of(link.index).next() {
                return Err(PlanError::HasAddress { name: name.clone(), addr: a.net });
            }
            ports.push(link);
        }
        ports
    };
    if ports.is_empty() {
        let others: Vec<&Link> = all.iter().copied().filter(|l| !l.loopback).collect();
        return Err(PlanError::NoLanCandidate(format!("({})", names(&others))));
    }

    let in_use: Vec<Ipv4Net> = snap
        .addrs
        .iter()
        .map(|a| a.net.trunc())
        .chain(snap.routes.iter().map(|r| r.dst).filter(|d| d.prefix_len() > 0))
        .collect();
    let subnet = subnet::choose(cfg.subnet, 24, &in_use)?;
    let bridge = (ports.len() > 1).then(|| BRIDGE_NAME.to_owned());
    Ok(Plan { ports, bridge, wan, subnet, router: subnet::router_address(&subnet) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::netlink::{Addr4, Route4};

    fn link(index: u32, name: &str) -> Link {
        Link {
            index,
            name: name.into(),
            up: true,
            loopback: name == "lo",
            ethernet: name != "lo" && name != "wg0",
            kind: None,
            master: None,
        }
    }

    fn snap() -> Snapshot {
        Snapshot {
            links: vec![link(1, "lo"), link(2, "eth0"), link(3, "eth1"), link(4, "eth2"), link(5, "wg0")],
            addrs: vec![
                Addr4 { index: 1, net: "127.0.0.1/8".parse().unwrap() },
                Addr4 { index: 2, net: "10.0.0.17/24".parse().unwrap() },
            ],
            routes: vec![
                Route4 {
                    dst: "0.0.0.0/0".parse().unwrap(),
                    oif: Some(2),
                    gateway: Some([10, 0, 0, 1].into()),
                    table: 254,
                },
                Route4 { dst: "10.0.0.0/24".parse().unwrap(), oif: Some(2), gateway: None, table: 254 },
            ],
        }
    }

    fn cfg() -> Wanted {
        Wanted::default()
    }

    #[test]
    fn auto_detects_unconfigured_ethernet_and_bridges_them() {
        let p = plan(&snap(), &cfg()).unwrap();
        assert_eq!(p.ports.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(), ["eth1", "eth2"]);
        assert_eq!(p.bridge.as_deref(), Some(BRIDGE_NAME));
        assert_eq!(p.wan.unwrap().name, "eth0");
        assert_eq!(p.subnet.to_string(), "10.0.1.0/24", "10.0.0.0/24 is the WAN's");
        assert_eq!(p.router, Ipv4Addr::new(10, 0, 1, 1));
    }

    #[test]
    fn one_port_needs_no_bridge() {
        let mut c = cfg();
        c.lan = vec!["eth2".into()];
        let p = plan(&snap(), &c).unwrap();
        assert_eq!(p.bridge, None);
        assert_eq!(p.lan_interface(), "eth2");
    }

    #[test]
    fn never_the_wan() {
        let mut s = snap();
        s.addrs.clear(); // even an address-less WAN is not a LAN candidate
        let p = plan(&s, &cfg()).unwrap();
        assert!(p.ports.iter().all(|l| l.name != "eth0"));
        let mut c = cfg();
        c.lan = vec!["eth0".into()];
        assert_eq!(plan(&snap(), &c), Err(PlanError::IsWan("eth0".into())));
    }

    #[test]
    fn explicit_wan_without_default_route() {
        let mut s = snap();
        s.routes.retain(|r| r.dst.prefix_len() != 0);
        let p = plan(&s, &cfg()).unwrap();
        assert_eq!(p.wan, None);
        let mut c = cfg();
        c.wan = Some("eth2".into());
        let p = plan(&s, &c).unwrap();
        assert_eq!(p.wan.unwrap().name, "eth2");
        assert_eq!(p.ports.len(), 1, "eth1 only: eth0 has an address, eth2 is the WAN");
    }

    #[test]
    fn no_candidate_is_a_clear_error() {
        let mut s = snap();
        s.addrs.push(Addr4 { index: 3, net: "192.168.9.1/24".parse().unwrap() });
        s.links[3].master = Some(9);
        let e = plan(&s, &cfg()).unwrap_err();
        assert!(matches!(e, PlanError::NoLanCandidate(_)));
        let msg = e.to_string();
        assert!(msg.contains("--lan") && msg.contains("eth1") && msg.contains("eth0"), "{msg}");
    }

    #[test]
    fn explicit_lan_is_checked() {
        let mut c = cfg();
        c.lan = vec!["eth9".into()];
        assert!(matches!(plan(&snap(), &c), Err(PlanError::NoSuchInterface(n, _)) if n == "eth9"));
        c.lan = vec!["wg0".into()];
        assert!(matches!(plan(&snap(), &c), Err(PlanError::Unsuitable(..))));
        let mut s = snap();
        s.addrs.push(Addr4 { index: 3, net: "192.168.9.1/24".parse().unwrap() });
        c.lan = vec!["eth1".into()];
        assert!(matches!(plan(&s, &c), Err(PlanError::HasAddress { .. })));
    }

    #[test]
    fn requested_subnet_must_be_free() {
        let mut c = cfg();
        c.subnet = Some("10.0.0.0/16".parse().unwrap());
        assert!(matches!(plan(&snap(), &c), Err(PlanError::Subnet(SubnetError::Overlaps { .. }))));
    }
}
