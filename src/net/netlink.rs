//! A thin rtnetlink shell: read links, IPv4 addresses and routes of the current network namespace, and make the few
//! changes the LAN set-up needs. No policy here; `net::plan` decides, `net::setup` orders and journals.

use anyhow::{Context, Result};
use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, RouteMessageBuilder};
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    /// ARPHRD_ETHER: the only kind of link a LAN can be built from.
    pub ethernet: bool,
    /// `bridge`, `veth`, `bond`, ... as the kernel names it; `None` for plain hardware.
    pub kind: Option<String>,
    /// The bridge or bond this link is a port of.
    pub master: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr4 {
    pub index: u32,
    pub net: Ipv4Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    pub dst: Ipv4Net,
    pub oif: Option<u32>,
    pub gateway: Option<Ipv4Addr>,
    pub table: u32,
}

/// Everything the LAN plan needs to know about the namespace.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr4>,
    pub routes: Vec<Route4>,
}

impl Snapshot {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    pub fn link_by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
    pub fn addrs_of(&self, index: u32) -> impl Iterator<Item = &Addr4> {
        self.addrs.iter().filter(move |a| a.index == index)
    }
}

/// A handle on the rtnetlink connection; clones share it.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

/// rtnetlink errors carry the kernel's errno; "no such device/address" during teardown means already undone.
pub fn is_not_found(e: &rtnetlink::Error) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            let c = -m.raw_code();
            c == libc::ENODEV || c == libc::EADDRNOTAVAIL || c == libc::ESRCH || c == libc::ENOENT
        }
        _ => false,
    }
}

impl Netlink {
    /// Opens a netlink socket in the calling thread's network namespace; needs a tokio runtime.
    pub fn connect() -> Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection().context("cannot open a netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    pub async fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot { links: self.links().await?, addrs: self.addrs().await?, routes: self.routes().await? })
    }

    pub async fn links(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.context("cannot list network interfaces")?;
        Ok(msgs.iter().map(parse_link).collect())
    }

    pub async fn addrs(&self) -> Result<Vec<Addr4>> {
        let msgs: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await.context("cannot list addresses")?;
        Ok(msgs.iter().filter_map(parse_addr).collect())
    }

    pub async fn routes(&self) -> Result<Vec<Route4>> {
        let req = RouteMessageBuilder::<Ipv4Addr>::new().table_id(0).build();
        let msgs: Vec<RouteMessage> =
            self.handle.route().get(req).execute().try_collect().await.context("cannot list routes")?;
        Ok(msgs.iter().filter_map(parse_route).collect())
    }

    pub async fn create_bridge(&self, name: &str) -> Result<(), rtnetlink::Error> {
        // Created down; it goes up once its address is on, so DAD/ARP start from a complete config.
        let msg = LinkBridge::new(name).down().build();
        self.handle.link().add(msg).execute().await
    }

    pub async fn set_up(&self, index: u32, up: bool) -> Result<(), rtnetlink::Error> {
        let b = LinkUnspec::new_with_index(index);
        let msg = if up { b.up() } else { b.down() }.build();
        self.handle.link().set(msg).execute().await
    }

    pub async fn set_master(&self, index: u32, master: Option<u32>) -> Result<(), rtnetlink::Error> {
        let b = LinkUnspec::new_with_index(index);
        let msg = match master {
            Some(m) => b.controller(m),
            None => b.nocontroller(),
        }
        .build();
        self.handle.link().set(msg).execute().await
    }

    pub async fn delete_link(&self, index: u32) -> Result<(), rtnetlink::Error> {
        self.handle.link().del(index).execute().await
    }

    pub async fn add_addr(&self, index: u32, net: Ipv4Net) -> Result<(), rtnetlink::Error> {
        self.handle.address().add(index, IpAddr::V4(net.addr()), net.prefix_len()).execute().await
    }

    pub async fn del_addr(&self, index: u32, net: Ipv4Net) -> Result<(), rtnetlink::Error> {
        let msgs: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .set_address_filter(IpAddr::V4(net.addr()))
            .set_prefix_length_filter(net.prefix_len())
            .execute()
            .try_collect()
            .await?;
        for m in msgs {
            self.handle.address().del(m).execute().await?;
        }
        Ok(())
    }
}

fn parse_link(m: &LinkMessage) -> Link {
    let mut name = String::new();
    let mut kind = None;
    let mut master = None;
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => name = n.clone(),
            LinkAttribute::Controller(c) => master = Some(*c),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        kind = Some(match k {
                            InfoKind::Bridge => "bridge".to_owned(),
                            InfoKind::Veth => "veth".to_owned(),
                            other => format!("{other:?}").to_lowercase(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Link {
        index: m.header.index,
        name,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.flags.contains(LinkFlags::Loopback),
        ethernet: m.header.link_layer_type == LinkLayerType::Ether,
        kind,
        master,
    }
}

fn parse_addr(m: &AddressMessage) -> Option<Addr4> {
    if m.header.family != AddressFamily::Inet {
        return None;
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point links).
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(IpAddr::V4(v)) => Some(*v),
        _ => None,
    });
    let addr = local.or_else(|| {
        m.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
            _ => None,
        })
    })?;
    Some(Addr4 { index: m.header.index, net: Ipv4Net::new(addr, m.header.prefix_len).ok()? })
}

fn parse_route(m: &RouteMessage) -> Option<Route4> {
    if m.header.address_family != AddressFamily::Inet {
        return None;
    }
    if !matches!(
        m.header.kind,
        RouteType::Unicast | RouteType::Unreachable | RouteType::BlackHole | RouteType::Prohibit
    ) {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    let mut gateway = None;
    let mut table = u32::from(m.header.table);
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Table(t) => table = *t,
            _ => {}
        }
    }
    Some(Route4 { dst: Ipv4Net::new(dst, m.header.destination_prefix_length).ok()?, oif, gateway, table })
}
