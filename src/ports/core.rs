//! The ports subsystem's state (sans-IO): the admin's forwards (by device, so they follow its address), the
//! config file's, the apps' mappings (NAT-PMP, PCP, UPnP), and the rules between them and the router's own ports.
//! It decides; the shell feeds it the hosts table, the router's listening sockets, the NAT's ephemeral mappings and
//! the clock, saves `saved()` when `take_dirty()` says so, and hands `effective()` to the NAT when
//! `take_changed()` does.

use super::forward::{PortForward, Protocols};
use super::mapping::{Granted, MapError, MapRequest, Mapper, Origin, Transport};
use crate::types::{Mac, Time};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The bounds the rules keep.
#[derive(Debug, Clone)]
pub struct Limits {
    /// The ports the NAT maps onto (apps get ports only from here).
    pub nat_ports: (u16, u16),
    /// The router's own ephemeral ports: no forward and no mapping there.
    pub router_ports: (u16, u16),
    /// Most ports one forward's range may hold.
    pub max_range: u16,
    /// Most forwards the admin may make.
    pub max_forwards: usize,
    /// Most app mappings one device may hold (all protocols together).
    pub mappings_per_device: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            nat_ports: (1024, 60999),
            router_ports: (61000, 65535),
            max_range: 1024,
            max_forwards: 256,
            mappings_per_device: 32,
        }
    }
}

/// A forward the admin made: external ports `external_first..=external_last` to the device's `internal_port..`
/// (one to one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub id: u32,
    pub mac: Mac,
    pub protocols: Protocols,
    pub external_first: u16,
    pub external_last: u16,
    pub internal_port: u16,
    pub description: String,
}

/// What the admin asks for (a new forward, or an edit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardInput {
    pub mac: Mac,
    pub protocols: Protocols,
    pub external_first: u16,
    pub external_last: u16,
    pub internal_port: u16,
    pub description: String,
}

/// An app's mapping (NAT-PMP, PCP or UPnP), kept until `expires`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppMapping {
    pub origin: Origin,
    pub transport: Transport,
    pub ip: Ipv4Addr,
    pub mac: Option<Mac>,
    pub internal_port: u16,
    pub external_port: u16,
    pub expires: Time,
    pub description: String,
    #[serde(default)]
    pub nonce: [u8; 12],
}

/// What survives a restart (the shell writes it atomically, fsynced, before answering).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub next_id: u32,
    pub forwards: Vec<Forward>,
    pub mappings: Vec<AppMapping>,
    /// When the mapping table began (NAT-PMP and PCP epoch): kept, as the mappings are.
    pub epoch_start: Time,
}

/// Why the admin's change was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Clash(String),
    #[error("no forward {0}")]
    NotFound(u32),
}

/// A socket of the router's own, listening on the WAN address or on all addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Listener {
    pub transport: Transport,
    pub port: u16,
    pub address: std::net::IpAddr,
    pub process: Option<String>,
    pub pid: Option<u32>,
}

impl Listener {
    fn owner(&self) -> String {
        match (&self.process, self.pid) {
            (Some(p), Some(pid)) => format!(" ({p}, pid {pid})"),
            _ => String::new(),
        }
    }
}

/// A device as the hosts table knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub ip: Ipv4Addr,
    pub name: Option<String>,
}

pub struct Ports {
    limits: Limits,
    config: Vec<PortForward>,
    saved: Saved,
    devices: HashMap<Mac, Device>,
    by_ip: HashMap<Ipv4Addr, Mac>,
    listeners: Vec<Listener>,
    /// The NAT's ephemeral mappings: (transport, external port) -> the LAN address using it.
    nat_in_use: HashMap<(Transport, u16), Ipv4Addr>,
    external_ip: Option<Ipv4Addr>,
    rng: u64,
    dirty: bool,
    changed: bool,
}

/// The transports a forward's protocols cover.
pub(super) fn transports(p: Protocols) -> &'static [Transport] {
    match p {
        Protocols::Tcp => &[Transport::Tcp],
        Protocols::Udp => &[Transport::Udp],
        Protocols::Both => &[Transport::Tcp, Transport::Udp],
    }
}

pub(super) fn protocols_of(t: Transport) -> Protocols {
    match t {
        Transport::Tcp => Protocols::Tcp,
        Transport::Udp => Protocols::Udp,
    }
}

fn range_text(a: u16, b: u16) -> String {
    if a == b { a.to_string() } else { format!("{a}-{b}") }
}

/// A description as kept: at most 256 bytes, no control characters (it is shown, as text, in the UI).
pub fn clean_description(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > 256 {
            break;
        }
        out.push(c);
    }
    out.trim().to_owned()
}

impl Ports {
    /// `saved` as read back (mappings that lapsed while the router was down are dropped at the first `expire`).
    pub fn new(limits: Limits, config: Vec<PortForward>, mut saved: Saved, now: Time, seed: u64) -> Ports {
        if saved.epoch_start == Time::ZERO {
            saved.epoch_start = now;
        }
        Ports {
            limits,
            config,
            saved,
            devices: HashMap::new(),
            by_ip: HashMap::new(),
            listeners: Vec::new(),
            nat_in_use: HashMap::new(),
            external_ip: None,
            rng: seed | 1,
            dirty: false,
            changed: true,
        }
    }

    pub fn saved(&self) -> &Saved {
        &self.saved
    }

    pub fn config_forwards(&self) -> &[PortForward] {
        &self.config
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// True once after a change that must be saved.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// True once after a change of what the NAT must forward.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    pub fn device(&self, mac: Mac) -> Option<&Device> {
        self.devices.get(&mac)
    }

    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.by_ip.get(&ip).copied()
    }

    /// The hosts table now. A forward follows its device to a new address.
    pub fn set_devices(&mut self, devices: impl IntoIterator<Item = (Mac, Device)>) {
        let devices: HashMap<Mac, Device> = devices.into_iter().collect();
        if devices != self.devices {
            let moved = self.saved.forwards.iter().any(|f| self.devices.get(&f.mac) != devices.get(&f.mac));
            self.by_ip = devices.iter().map(|(m, d)| (d.ip, *m)).collect();
            self.devices = devices;
            self.changed |= moved;
        }
    }

    pub fn set_listeners(&mut self, listeners: Vec<Listener>) {
        self.listeners = listeners;
    }

    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    pub fn set_nat_in_use(&mut self, in_use: HashMap<(Transport, u16), Ipv4Addr>) {
        self.nat_in_use = in_use;
    }

    pub fn set_external_ip(&mut self, ip: Option<Ipv4Addr>) {
        self.external_ip = ip;
    }

    /// Drops the app mappings whose lifetime is over.
    pub fn expire(&mut self, now: Time) {
        let before = self.saved.mappings.len();
        self.saved.mappings.retain(|m| m.expires > now);
        if self.saved.mappings.len() != before {
            self.dirty = true;
            self.changed = true;
        }
    }

    /// When the next app mapping lapses.
    pub fn next_expiry(&self) -> Option<Time> {
        self.saved.mappings.iter().map(|m| m.expires).min()
    }

    /// What the NAT forwards: the config's forwards, the admin's (for devices that have an address now, ranges
    /// one port each), and the apps' mappings.
    pub fn effective(&self) -> Vec<PortForward> {
        let mut out: Vec<PortForward> = self.effective_forwards_only().collect();
        for m in &self.saved.mappings {
            out.push(PortForward {
                protocols: protocols_of(m.transport),
                external_port: m.external_port,
                internal: SocketAddrV4::new(m.ip, m.internal_port),
            });
        }
        out
    }

    pub fn forwards(&self) -> &[Forward] {
        &self.saved.forwards
    }

    pub fn mappings(&self) -> &[AppMapping] {
        &self.saved.mappings
    }

    fn check_input(&self, f: &ForwardInput) -> Result<(), Refusal> {
        let bad = |s: String| Err(Refusal::Invalid(s));
        if f.external_first == 0 || f.external_last == 0 || f.internal_port == 0 {
            return bad("ports are 1-65535".into());
        }
        if f.external_first > f.external_last {
            return bad(format!("the range {}-{} runs backwards", f.external_first, f.external_last));
        }
        let span = f.external_last - f.external_first;
        if span >= self.limits.max_range {
            return bad(format!("a forward holds at most {} ports", self.limits.max_range));
        }
        if u32::from(f.internal_port) + u32::from(span) > 65535 {
            return bad(format!(
                "internal ports {}-{} run past 65535",
                f.internal_port,
                u32::from(f.internal_port) + u32::from(span)
            ));
        }
        Ok(())
    }

    /// Why `transport` port `port` cannot be forwarded by the admin (skipping forward `except`), if it cannot.
    fn forward_clash(&self, f: &ForwardInput, except: Option<u32>) -> Option<String> {
        let (a, b) = (f.external_first, f.external_last);
        let (lo, hi) = self.limits.router_ports;
        if a <= hi && b >= lo {
            return Some(format!(
                "ports {lo}-{hi} are the router's own ephemeral range (its own connections use them); \
                 forward ports below {lo}"
            ));
        }
        for c in &self.config {
            if (a..=b).contains(&c.external_port) && c.protocols.overlaps(f.protocols) {
                return Some(format!(
                    "port {}/{} is already forwarded to {} by the config file",
                    c.external_port, c.protocols, c.internal
                ));
            }
        }
        for o in self.saved.forwards.iter().filter(|o| Some(o.id) != except) {
            if a <= o.external_last && b >= o.external_first && o.protocols.overlaps(f.protocols) {
                let to = self.devices.get(&o.mac).and_then(|d| d.name.clone()).unwrap_or_else(|| o.mac.to_string());
                return Some(format!(
                    "ports {}/{} clash with forward {} ({}/{} to {to})",
                    range_text(a, b),
                    f.protocols,
                    o.id,
                    range_text(o.external_first, o.external_last),
                    o.protocols
                ));
            }
        }
        // One LAN port takes one forward: the NAT sends a LAN endpoint's replies through one external port.
        let (ia, ib) = (f.internal_port, f.internal_port + (b - a));
        for o in self.saved.forwards.iter().filter(|o| Some(o.id) != except && o.mac == f.mac) {
            let (oa, ob) = (o.internal_port, o.internal_port + (o.external_last - o.external_first));
            if ia <= ob && ib >= oa && o.protocols.overlaps(f.protocols) {
                return Some(format!(
                    "the device's port {}/{} already receives forward {} (external {}); a LAN port takes one forward",
                    range_text(ia.max(oa), ib.min(ob)),
                    f.protocols,
                    o.id,
                    range_text(o.external_first, o.external_last)
                ));
            }
        }
        if let Some(d) = self.devices.get(&f.mac) {
            for c in &self.config {
                if *c.internal.ip() == d.ip
                    && (ia..=ib).contains(&c.internal.port())
                    && c.protocols.overlaps(f.protocols)
                {
                    return Some(format!(
                        "the device's port {}/{} already receives the config file's forward of port {}",
                        c.internal.port(),
                        c.protocols,
                        c.external_port
                    ));
                }
            }
        }
        for l in &self.listeners {
            if (a..=b).contains(&l.port) && transports(f.protocols).contains(&l.transport) {
                return Some(format!(
                    "the router itself listens on {} port {} ({}){}",
                    match l.transport {
                        Transport::Tcp => "TCP",
                        Transport::Udp => "UDP",
                    },
                    l.port,
                    l.address,
                    l.owner()
                ));
            }
        }
        None
    }

    /// A new forward; app mappings on its ports give way (the admin's word counts more than an app's).
    pub fn add_forward(&mut self, f: ForwardInput) -> Result<Forward, Refusal> {
        self.check_input(&f)?;
        if self.saved.forwards.len() >= self.limits.max_forwards {
            return Err(Refusal::Invalid(format!("at most {} forwards", self.limits.max_forwards)));
        }
        if let Some(why) = self.forward_clash(&f, None) {
            return Err(Refusal::Clash(why));
        }
        self.saved.next_id = self.saved.next_id.max(1);
        let id = self.saved.next_id;
        self.saved.next_id += 1;
        let fwd = self.make(id, f);
        self.saved.forwards.push(fwd.clone());
        Ok(fwd)
    }

    pub fn update_forward(&mut self, id: u32, f: ForwardInput) -> Result<Forward, Refusal> {
        self.check_input(&f)?;
        let i = self.saved.forwards.iter().position(|o| o.id == id).ok_or(Refusal::NotFound(id))?;
        if let Some(why) = self.forward_clash(&f, Some(id)) {
            return Err(Refusal::Clash(why));
        }
        let fwd = self.make(id, f);
        self.saved.forwards[i] = fwd.clone();
        Ok(fwd)
    }

    pub fn remove_forward(&mut self, id: u32) -> Result<(), Refusal> {
        let i = self.saved.forwards.iter().position(|o| o.id == id).ok_or(Refusal::NotFound(id))?;
        self.saved.forwards.remove(i);
        self.dirty = true;
        self.changed = true;
        Ok(())
    }

    fn make(&mut self, id: u32, f: ForwardInput) -> Forward {
        let fwd = Forward {
            id,
            mac: f.mac,
            protocols: f.protocols,
            external_first: f.external_first,
            external_last: f.external_last,
            internal_port: f.internal_port,
            description: clean_description(&f.description),
        };
        let (a, b) = (fwd.external_first, fwd.external_last);
        self.saved
            .mappings
            .retain(|m| !((a..=b).contains(&m.external_port) && transports(fwd.protocols).contains(&m.transport)));
        self.dirty = true;
        self.changed = true;
        fwd
    }

    /// Why an app of `client` may not have external port `port`, if it may not.
    fn port_taken(&self, t: Transport, port: u16, client: Ipv4Addr) -> Option<String> {
        let (lo, hi) = self.limits.nat_ports;
        if !(lo..=hi).contains(&port) {
            return Some(format!("outside the ports the router maps ({lo}-{hi})"));
        }
        let p = protocols_of(t);
        if self.config.iter().any(|c| c.external_port == port && c.protocols.overlaps(p)) {
            return Some("forwarded by the config file".into());
        }
        if self
            .saved
            .forwards
            .iter()
            .any(|f| (f.external_first..=f.external_last).contains(&port) && f.protocols.overlaps(p))
        {
            return Some("forwarded by the admin".into());
        }
        if self.listeners.iter().any(|l| l.port == port && l.transport == t) {
            return Some("the router itself listens on it".into());
        }
        if self.saved.mappings.iter().any(|m| m.transport == t && m.external_port == port) {
            return Some("mapped already".into());
        }
        if self.nat_in_use.get(&(t, port)).is_some_and(|ip| *ip != client) {
            return Some("in use by another device's connections".into());
        }
        None
    }

    /// Why `ip:port` cannot take a new mapping, if it cannot: it already receives a forward or a mapping (the NAT
    /// sends a LAN endpoint's replies through one external port).
    fn internal_taken(&self, t: Transport, ip: Ipv4Addr, port: u16) -> Option<String> {
        let p = protocols_of(t);
        let forwarded = self
            .effective_forwards_only()
            .any(|f| *f.internal.ip() == ip && f.internal.port() == port && f.protocols.overlaps(p));
        if forwarded {
            return Some(format!("{ip}:{port} already receives a forward"));
        }
        if self.saved.mappings.iter().any(|m| m.transport == t && m.ip == ip && m.internal_port == port) {
            return Some(format!("{ip}:{port} already has a mapping"));
        }
        None
    }

    /// The config's and the admin's forwards as the NAT gets them (without the apps' mappings).
    fn effective_forwards_only(&self) -> impl Iterator<Item = PortForward> + '_ {
        let admin = self.saved.forwards.iter().filter_map(|f| self.devices.get(&f.mac).map(|d| (f, d.ip))).flat_map(
            |(f, ip)| {
                (f.external_first..=f.external_last).map(move |p| PortForward {
                    protocols: f.protocols,
                    external_port: p,
                    internal: SocketAddrV4::new(ip, f.internal_port + (p - f.external_first)),
                })
            },
        );
        self.config.iter().copied().chain(admin)
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: port picks need no more.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn free_port(&mut self, t: Transport, client: Ipv4Addr) -> Option<u16> {
        let (lo, hi) = self.limits.nat_ports;
        let span = u64::from(hi - lo) + 1;
        for _ in 0..64 {
            let p = lo + (self.next_rand() % span) as u16;
            if self.port_taken(t, p, client).is_none() {
                return Some(p);
            }
        }
        (lo..=hi).find(|&p| self.port_taken(t, p, client).is_none())
    }

    fn granted(&self, m: &AppMapping, now: Time) -> Granted {
        Granted {
            origin: m.origin,
            transport: m.transport,
            internal_ip: m.ip,
            internal_port: m.internal_port,
            external_ip: self.external_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
            external_port: m.external_port,
            lifetime_secs: (m.expires.ms_since(now).div_ceil(1000)).min(u64::from(u32::MAX)) as u32,
            description: m.description.clone(),
            nonce: m.nonce,
        }
    }

    /// App mappings made by `origin`, in a stable order (external port, then transport).
    fn of_origin(&self, origin: Origin) -> Vec<&AppMapping> {
        let mut v: Vec<&AppMapping> = self.saved.mappings.iter().filter(|m| m.origin == origin).collect();
        v.sort_by_key(|m| (m.external_port, m.transport));
        v
    }
}

impl Mapper for Ports {
    fn external_ip(&self) -> Option<Ipv4Addr> {
        self.external_ip
    }

    fn epoch_secs(&self, now: Time) -> u32 {
        (now.ms_since(self.saved.epoch_start) / 1000).min(u64::from(u32::MAX)) as u32
    }

    fn map(&mut self, now: Time, req: &MapRequest) -> Result<Granted, MapError> {
        if req.internal_ip != req.client {
            return Err(MapError::NotAuthorized(format!(
                "{} may map ports only to itself, not to {}",
                req.client, req.internal_ip
            )));
        }
        if self.external_ip.is_none() {
            return Err(MapError::NoWan);
        }
        let expires = now.plus_ms(u64::from(req.lifetime_secs) * 1000);
        // A renewal: UPnP names a mapping by its external port, NAT-PMP and PCP by the internal one.
        let same = |m: &AppMapping| {
            m.origin == req.origin
                && m.ip == req.client
                && m.transport == req.transport
                && match req.origin {
                    Origin::Upnp => m.external_port == req.external_port && m.internal_port == req.internal_port,
                    _ => m.internal_port == req.internal_port,
                }
        };
        if let Some(i) = self.saved.mappings.iter().position(same) {
            if !req.any_port && req.external_port != 0 && self.saved.mappings[i].external_port != req.external_port {
                return Err(MapError::Conflict {
                    port: req.external_port,
                    why: format!("the internal port is mapped from {}", self.saved.mappings[i].external_port),
                });
            }
            // A renewal keeps its external port.
            let m = &mut self.saved.mappings[i];
            if req.origin == Origin::Pcp && m.nonce != req.nonce {
                return Err(MapError::NotAuthorized("the mapping belongs to another PCP client (nonce)".into()));
            }
            m.expires = expires;
            if !req.description.is_empty() {
                m.description = clean_description(&req.description);
            }
            self.dirty = true;
            let m = self.saved.mappings[i].clone();
            return Ok(self.granted(&m, now));
        }
        if let Some(why) = self.internal_taken(req.transport, req.client, req.internal_port) {
            return Err(if req.any_port {
                MapError::NoResources(why)
            } else {
                MapError::Conflict { port: req.external_port, why }
            });
        }
        let held = self.saved.mappings.iter().filter(|m| m.ip == req.client).count();
        if held >= self.limits.mappings_per_device {
            return Err(MapError::Quota(self.limits.mappings_per_device));
        }
        let wish = if req.external_port != 0 { req.external_port } else { req.internal_port };
        let port = match self.port_taken(req.transport, wish, req.client) {
            None => wish,
            Some(why) if !req.any_port => return Err(MapError::Conflict { port: wish, why }),
            Some(_) => self
                .free_port(req.transport, req.client)
                .ok_or_else(|| MapError::NoResources("no free external port".into()))?,
        };
        let m = AppMapping {
            origin: req.origin,
            transport: req.transport,
            ip: req.client,
            mac: self.mac_of(req.client),
            internal_port: req.internal_port,
            external_port: port,
            expires,
            description: clean_description(&req.description),
            nonce: req.nonce,
        };
        let g = self.granted(&m, now);
        self.saved.mappings.push(m);
        self.dirty = true;
        self.changed = true;
        Ok(g)
    }

    fn unmap_internal(
        &mut self,
        _now: Time,
        origin: Origin,
        client: Ipv4Addr,
        transport: Transport,
        internal_port: u16,
        nonce: Option<[u8; 12]>,
    ) -> Result<usize, MapError> {
        let hit = |m: &AppMapping| {
            m.origin == origin
                && m.ip == client
                && m.transport == transport
                && (internal_port == 0 || m.internal_port == internal_port)
        };
        if let Some(n) = nonce
            && self.saved.mappings.iter().any(|m| hit(m) && m.nonce != n)
        {
            return Err(MapError::NoSuchEntry);
        }
        let before = self.saved.mappings.len();
        self.saved.mappings.retain(|m| !hit(m));
        let removed = before - self.saved.mappings.len();
        if removed > 0 {
            self.dirty = true;
            self.changed = true;
        }
        Ok(removed)
    }

    fn unmap_external(
        &mut self,
        _now: Time,
        client: Ipv4Addr,
        transport: Transport,
        external_port: u16,
    ) -> Result<(), MapError> {
        let i = self
            .saved
            .mappings
            .iter()
            .position(|m| m.origin == Origin::Upnp && m.transport == transport && m.external_port == external_port)
            .ok_or(MapError::NoSuchEntry)?;
        if self.saved.mappings[i].ip != client {
            return Err(MapError::NotAuthorized(format!("the mapping of port {external_port} is another device's")));
        }
        self.saved.mappings.remove(i);
        self.dirty = true;
        self.changed = true;
        Ok(())
    }

    fn by_external(&self, now: Time, origin: Origin, transport: Transport, external_port: u16) -> Option<Granted> {
        let m = self
            .saved
            .mappings
            .iter()
            .find(|m| m.origin == origin && m.transport == transport && m.external_port == external_port)?;
        Some(self.granted(m, now))
    }

    fn nth(&self, now: Time, origin: Origin, index: usize) -> Option<Granted> {
        self.of_origin(origin).get(index).map(|m| self.granted(m, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 36);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 37);
    const MA: Mac = Mac([2, 0, 0, 0, 0, 1]);
    const MB: Mac = Mac([2, 0, 0, 0, 0, 2]);
    const T0: Time = Time::from_unix_secs(1_800_000_000);

    fn ports() -> Ports {
        let config = vec![crate::ports::forward::parse_port_forward("25565=10.0.0.40:25565/tcp").unwrap()];
        let mut p = Ports::new(Limits::default(), config, Saved::default(), T0, 7);
        p.set_devices([(MA, Device { ip: A, name: Some("laptop".into()) }), (MB, Device { ip: B, name: None })]);
        p.set_external_ip(Some(Ipv4Addr::new(203, 0, 113, 2)));
        p.set_listeners(vec![Listener {
            transport: Transport::Tcp,
            port: 22,
            address: "0.0.0.0".parse().unwrap(),
            process: Some("sshd".into()),
            pid: Some(99),
        }]);
        p
    }

    fn input(a: u16, b: u16, to: u16, protocols: Protocols) -> ForwardInput {
        ForwardInput {
            mac: MA,
            protocols,
            external_first: a,
            external_last: b,
            internal_port: to,
            description: "web\u{7}server".into(),
        }
    }

    fn req(client: Ipv4Addr, internal: Ipv4Addr, port: u16, ext: u16, any: bool) -> MapRequest {
        MapRequest {
            origin: Origin::Upnp,
            client,
            internal_ip: internal,
            transport: Transport::Udp,
            internal_port: port,
            external_port: ext,
            any_port: any,
            lifetime_secs: 60,
            description: "app".into(),
            nonce: [0; 12],
        }
    }

    #[test]
    fn forwards_follow_their_device_and_expand_ranges() {
        let mut p = ports();
        let f = p.add_forward(input(8080, 8082, 80, Protocols::Tcp)).unwrap();
        assert_eq!((f.id, f.description.as_str()), (1, "webserver"));
        assert!(p.take_dirty() && p.take_changed());
        let eff = p.effective();
        assert_eq!(eff.len(), 4);
        assert_eq!(eff[3].internal, SocketAddrV4::new(A, 82));
        // The device moves: the forward goes with it.
        p.set_devices([(MA, Device { ip: Ipv4Addr::new(10, 0, 0, 99), name: None })]);
        assert!(p.take_changed());
        assert_eq!(*p.effective()[1].internal.ip(), Ipv4Addr::new(10, 0, 0, 99));
        // Gone from the hosts table: kept, but forwards nothing.
        p.set_devices([]);
        assert_eq!(p.effective().len(), 1);
        assert_eq!(p.forwards().len(), 1);
    }

    #[test]
    fn clashes_say_which() {
        let mut p = ports();
        p.add_forward(input(8080, 8090, 80, Protocols::Both)).unwrap();
        let e = p.add_forward(input(8085, 8085, 80, Protocols::Udp)).unwrap_err().to_string();
        assert!(e.contains("forward 1") && e.contains("laptop"), "{e}");
        let e = p.add_forward(input(25565, 25565, 1, Protocols::Tcp)).unwrap_err().to_string();
        assert!(e.contains("config file"), "{e}");
        // UDP on the config's TCP port is free.
        p.add_forward(input(25565, 25565, 1, Protocols::Udp)).unwrap();
        let e = p.add_forward(input(22, 22, 22, Protocols::Tcp)).unwrap_err().to_string();
        assert!(e.contains("listens on TCP port 22") && e.contains("sshd, pid 99"), "{e}");
        let e = p.add_forward(input(60990, 61010, 1, Protocols::Udp)).unwrap_err().to_string();
        assert!(e.contains("ephemeral range"), "{e}");
        assert!(matches!(p.add_forward(input(9000, 8000, 1, Protocols::Udp)), Err(Refusal::Invalid(_))));
        assert!(matches!(p.add_forward(input(1, 2000, 1, Protocols::Udp)), Err(Refusal::Invalid(_))));
        assert!(matches!(p.add_forward(input(100, 101, 65535, Protocols::Udp)), Err(Refusal::Invalid(_))));
        // One LAN port, one forward.
        let e = p.add_forward(input(9100, 9100, 85, Protocols::Tcp)).unwrap_err().to_string();
        assert!(e.contains("already receives forward 1"), "{e}");
        // An edit may keep its own ports.
        p.update_forward(1, input(8080, 8091, 81, Protocols::Both)).unwrap();
        assert_eq!(p.update_forward(7, input(1, 1, 1, Protocols::Tcp)), Err(Refusal::NotFound(7)));
        p.remove_forward(1).unwrap();
        p.add_forward(input(8085, 8085, 80, Protocols::Udp)).unwrap();
    }

    #[test]
    fn apps_map_only_themselves_and_only_free_ports() {
        let mut p = ports();
        let e = p.map(T0, &req(A, B, 5000, 0, true)).unwrap_err();
        assert!(matches!(e, MapError::NotAuthorized(_)));
        let g = p.map(T0, &req(A, A, 5000, 0, true)).unwrap();
        assert_eq!((g.external_port, g.lifetime_secs), (5000, 60));
        // Renewal: same port, new lifetime.
        let g2 = p.map(T0.plus_ms(30_000), &req(A, A, 5000, 5000, true)).unwrap();
        assert_eq!((g2.external_port, g2.lifetime_secs), (5000, 60));
        // Another device asking for the same port: refused, or another port.
        assert!(matches!(p.map(T0, &req(B, B, 5000, 0, false)), Err(MapError::Conflict { port: 5000, .. })));
        let g3 = p.map(T0, &req(B, B, 5000, 0, true)).unwrap();
        assert_ne!(g3.external_port, 5000);
        assert!((1024..=60999).contains(&g3.external_port));
        // Ports held by the router or a forward.
        assert!(matches!(p.map(T0, &req(A, A, 61001, 61001, false)), Err(MapError::Conflict { .. })));
        p.add_forward(input(7000, 7000, 7000, Protocols::Udp)).unwrap();
        assert!(matches!(p.map(T0, &req(A, A, 7000, 7000, false)), Err(MapError::Conflict { .. })));
        // Someone else's connection holds a port in the NAT.
        p.set_nat_in_use(HashMap::from([((Transport::Udp, 7100), B)]));
        assert!(matches!(p.map(T0, &req(A, A, 7100, 7100, false)), Err(MapError::Conflict { .. })));
        assert!(p.map(T0, &req(B, B, 7100, 7100, false)).is_ok());
        // B's 7100 already takes a mapping: a second one onto it would get B's replies wrong.
        assert!(matches!(p.map(T0, &req(B, B, 7100, 7101, false)), Err(MapError::Conflict { .. })));
        // So does a forwarded LAN port.
        assert!(matches!(p.map(T0, &req(A, A, 7000, 7200, true)), Err(MapError::NoResources(_))));
        assert_eq!(p.effective().iter().filter(|f| f.internal.port() == 5000).count(), 2);
        // Lapse.
        p.take_changed();
        p.expire(T0.plus_ms(91_000));
        assert!(p.take_changed());
        assert!(p.mappings().is_empty());
    }

    #[test]
    fn per_device_cap_and_deletes() {
        let mut p = ports();
        for i in 0..32 {
            p.map(T0, &req(A, A, 2000 + i, 0, true)).unwrap();
        }
        assert_eq!(p.map(T0, &req(A, A, 3000, 0, true)), Err(MapError::Quota(32)));
        assert_eq!(
            p.unmap_external(T0, B, Transport::Udp, 2000),
            Err(MapError::NotAuthorized("the mapping of port 2000 is another device's".into()))
        );
        p.unmap_external(T0, A, Transport::Udp, 2000).unwrap();
        assert_eq!(p.unmap_external(T0, A, Transport::Udp, 2000), Err(MapError::NoSuchEntry));
        assert_eq!(p.nth(T0, Origin::Upnp, 0).unwrap().external_port, 2001);
        assert!(p.nth(T0, Origin::Upnp, 31).is_none());
        assert_eq!(p.unmap_internal(T0, Origin::Upnp, A, Transport::Udp, 0, None), Ok(31));
    }

    #[test]
    fn pcp_nonce_guards_its_mapping() {
        let mut p = ports();
        let mut r = req(A, A, 5000, 0, true);
        r.origin = Origin::Pcp;
        r.nonce = [1; 12];
        p.map(T0, &r).unwrap();
        let mut other = r.clone();
        other.nonce = [2; 12];
        assert!(matches!(p.map(T0, &other), Err(MapError::NotAuthorized(_))));
        assert_eq!(
            p.unmap_internal(T0, Origin::Pcp, A, Transport::Udp, 5000, Some([2; 12])),
            Err(MapError::NoSuchEntry)
        );
        assert_eq!(p.unmap_internal(T0, Origin::Pcp, A, Transport::Udp, 5000, Some([1; 12])), Ok(1));
    }

    #[test]
    fn a_forward_displaces_app_mappings() {
        let mut p = ports();
        p.map(T0, &req(A, A, 6000, 6000, false)).unwrap();
        p.add_forward(input(6000, 6000, 80, Protocols::Udp)).unwrap();
        assert!(p.mappings().is_empty());
    }
}
