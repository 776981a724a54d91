//! The sans-IO DHCPv4 server (RFC 2131, RFC 2132): fed request bytes, their source and the time, it returns the
//! reply bytes, where to send them, and what to persist and announce. No sockets, clocks or threads in here.
//!
//! Contract with the shell: for each `Outcome`, persist `records` durably (in order) BEFORE sending `reply`, so a
//! lease is on disk before its ACK leaves; then publish `events`. Call `expire(now)` at `next_expiry()` (and once
//! right after `new`, which may restore leases that expired while the program was down).

use super::hostname;
use super::lease::{Lease, LeaseEvent, Record, StaticLease};
use super::options::{self, ReplySpec};
use super::pool::Pool;
use super::wire::{self, Request};
use crate::labels::labelled_enum;
use crate::types::{Mac, Time};
use dhcproto::v4::MessageType;
use ipnet::Ipv4Net;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

/// How long an OFFER reserves its address for the client (RFC 2131 4.3.1: "the server SHOULD reserve").
pub const OFFER_SECS: u64 = 60;
/// How long a declined address stays out of the pool.
pub const DECLINE_SECS: u64 = 600;
/// Home-router default lease: 12 hours.
pub const DEFAULT_LEASE_SECS: u32 = 43_200;
pub const MIN_LEASE_SECS: u32 = 10;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct DhcpConfigError(pub String);

/// A subnet served through a DHCP relay (its `giaddr` lies in `subnet`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPool {
    pub subnet: Ipv4Net,
    /// Inclusive dynamic range inside `subnet`.
    pub range: (Ipv4Addr, Ipv4Addr),
    /// Option 3; `None` means the relay's own address (giaddr), the usual router of a relayed subnet.
    pub router: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// The router's LAN address: server identifier, default router and (unless `dns` says otherwise) DNS server.
    pub server_ip: Ipv4Addr,
    pub subnet: Ipv4Net,
    /// Dynamic pool, inclusive, inside `subnet`. `server_ip`, the network and broadcast addresses and static
    /// addresses are never handed out from it even when inside.
    pub range: (Ipv4Addr, Ipv4Addr),
    pub lease_secs: u32,
    /// Option 6; empty means `[server_ip]`.
    pub dns: Vec<Ipv4Addr>,
    /// Option 15; empty means not sent.
    pub domain: String,
    pub static_leases: Vec<StaticLease>,
    pub relay_pools: Vec<RelayPool>,
}

impl DhcpConfig {
    /// Sensible home defaults: 12 h leases, domain "lan", DNS = the router, and as dynamic range the larger run
    /// of host addresses on either side of `server_ip` (e.g. .2-.254 for a router at .1 of a /24).
    pub fn new(server_ip: Ipv4Addr, subnet: Ipv4Net) -> DhcpConfig {
        let (first, last) = host_bounds(subnet);
        let s = u32::from(server_ip);
        let range = if s < first || s > last {
            (first, last)
        } else if last - s >= s - first {
            (s.saturating_add(1).min(last), last)
        } else {
            (first, s.saturating_sub(1).max(first))
        };
        DhcpConfig {
            server_ip,
            subnet,
            range: (range.0.into(), range.1.into()),
            lease_secs: DEFAULT_LEASE_SECS,
            dns: Vec::new(),
            domain: crate::types::LOCAL_DOMAIN.into(),
            static_leases: Vec::new(),
            relay_pools: Vec::new(),
        }
    }

    /// Checks the configuration; every error names the value and says what is expected.
    pub fn validate(&self) -> Result<(), DhcpConfigError> {
        let err = |m: String| Err(DhcpConfigError(m));
        if !self.subnet.contains(&self.server_ip) {
            return err(format!("DHCP server address {} is not inside the LAN subnet {}", self.server_ip, self.subnet));
        }
        check_range("LAN", self.subnet, self.range)?;
        if self.lease_secs < MIN_LEASE_SECS {
            return err(format!(
                "DHCP lease time {} s is too short; expected at least {MIN_LEASE_SECS} s",
                self.lease_secs
            ));
        }
        if self.domain.len() > 253 {
            return err(format!("DHCP domain {:?} is longer than 253 bytes", self.domain));
        }
        if self.dns.len() > 16 {
            return err("more than 16 DNS servers for DHCP option 6".into());
        }
        let mut nets = vec![self.subnet];
        for r in &self.relay_pools {
            check_range("relay", r.subnet, r.range)?;
            if let Some(n) = nets.iter().find(|n| n.contains(&r.subnet.network()) || r.subnet.contains(&n.network())) {
                return err(format!("relay subnet {} overlaps subnet {n}; each pool needs its own subnet", r.subnet));
            }
            nets.push(r.subnet);
        }
        let (mut ips, mut macs) = (HashSet::new(), HashSet::new());
        for s in &self.static_leases {
            let mac = s.mac;
            if !nets.iter().any(|n| n.contains(&s.ip)) {
                return err(format!("static lease {mac} -> {}: address outside every DHCP subnet", s.ip));
            }
            if s.ip == self.server_ip {
                return err(format!("static lease {mac} -> {}: that is the router's own address", s.ip));
            }
            if !ips.insert(s.ip) {
                return err(format!("static address {} is given to more than one MAC", s.ip));
            }
            if !macs.insert(s.mac) {
                return err(format!("MAC {mac} has more than one static lease"));
            }
        }
        Ok(())
    }
}

fn host_bounds(subnet: Ipv4Net) -> (u32, u32) {
    let (n, b) = (u32::from(subnet.network()), u32::from(subnet.broadcast()));
    if subnet.prefix_len() >= 31 { (n, b) } else { (n + 1, b - 1) }
}

fn check_range(what: &str, subnet: Ipv4Net, (a, b): (Ipv4Addr, Ipv4Addr)) -> Result<(), DhcpConfigError> {
    if !subnet.contains(&a) || !subnet.contains(&b) || u32::from(a) > u32::from(b) {
        return Err(DhcpConfigError(format!(
            "{what} DHCP range {a}-{b} must be inside {subnet}, lowest address first"
        )));
    }
    Ok(())
}

labelled_enum! {
    /// Why a packet got no reply. The shell counts these; `as_str` labels are stable (metrics, logs).
    pub enum DropReason {
        /// Shorter than the 240-byte BOOTP header + magic cookie.
        Truncated => "truncated",
        BadMagic => "bad_magic",
        /// op is not BOOTREQUEST (1).
        NotBootRequest => "not_boot_request",
        /// htype is not Ethernet (1).
        BadHtype => "bad_htype",
        /// hlen is not 6.
        BadHlen => "bad_hlen",
        /// An option runs past its area, a bad option overload, or a wrong length for a fixed-size option.
        BadOptions => "bad_options",
        NoMessageType => "no_message_type",
        /// A message type a server does not take (OFFER, ACK, unknown numbers, ...).
        BadMessageType => "bad_message_type",
        /// Empty or longer than 255 bytes.
        BadClientId => "bad_client_id",
        /// giaddr is set but no pool's subnet contains it.
        NoPoolForRelay => "no_pool_for_relay",
        /// The client chose, or talks to, another server (server identifier not ours).
        NotForUs => "not_for_us",
        PoolExhausted => "pool_exhausted",
        /// INIT-REBOOT from a client we have no record of: RFC 2131 4.3.2 says stay silent.
        UnknownClient => "unknown_client",
        /// RELEASE/DECLINE of an address the client does not hold.
        UnknownLease => "unknown_lease",
        /// A REQUEST/DECLINE without the address it must carry.
        BadRequest => "bad_request",
        /// Encoding the reply failed (should not happen).
        EncodeFailed => "encode_failed",
    }
}

/// Counters: messages received by type, replies sent by type, lease expiries, drops by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub discover: u64,
    pub request: u64,
    pub decline: u64,
    pub release: u64,
    pub inform: u64,
    pub offer: u64,
    pub ack: u64,
    pub nak: u64,
    pub expired: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
    /// (reason, count) for every reason, zeros included, in `DropReason::ALL` order.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.dropped(r)))
    }

    /// The counters in the program's one shape: `received{type}`, `sent{type}`, `expired`, `dropped{reason}`.
    pub fn counters(&self) -> crate::counters::Counters {
        let mut c = crate::counters::Counters::new();
        for (t, n) in [
            ("discover", self.discover),
            ("request", self.request),
            ("decline", self.decline),
            ("release", self.release),
            ("inform", self.inform),
        ] {
            c.labelled("received", "type", t, n);
        }
        for (t, n) in [("offer", self.offer), ("ack", self.ack), ("nak", self.nak)] {
            c.labelled("sent", "type", t, n);
        }
        c.counter("expired", self.expired);
        for (r, n) in self.drops() {
            c.labelled("dropped", "reason", r.as_str(), n);
        }
        c
    }
}

/// Where the shell sends a reply (RFC 2131 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// 255.255.255.255:68 on the LAN interface.
    Broadcast,
    /// A routable address: the relay's giaddr:67, or the client's ciaddr:68.
    Unicast(SocketAddrV4),
    /// Unicast to `ip`:68 (yiaddr) at link-layer address `mac`: the client has no address yet, so it cannot answer
    /// ARP; the shell installs a neighbour entry ip -> mac first (or, if it cannot, broadcasts).
    Hardware { ip: Ipv4Addr, mac: Mac },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub bytes: Vec<u8>,
    pub to: Destination,
    /// OFFER, ACK or NAK.
    pub kind: MessageType,
}

/// The result of a handled packet. Persist `records` (in order) before sending `reply`, then publish `events`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    pub reply: Option<Reply>,
    pub records: Vec<Record>,
    pub events: Vec<LeaseEvent>,
}

#[derive(Debug, Clone, Copy)]
struct Offer {
    ip: Ipv4Addr,
    until: u64,
}

/// The server state: pools, leases, offers, quarantined addresses.
#[derive(Debug)]
pub struct Server {
    cfg: DhcpConfig,
    /// `pools[0]` is the LAN's; then one per relay pool, in config order.
    pools: Vec<Pool>,
    statics: HashMap<Mac, StaticLease>,
    static_ips: HashSet<Ipv4Addr>,
    leases: HashMap<Vec<u8>, Lease>,
    offers: HashMap<Vec<u8>, Offer>,
    /// Which client holds an address, by lease or by offer.
    owner: HashMap<Ipv4Addr, Vec<u8>>,
    lease_expiry: BTreeSet<(u64, Ipv4Addr)>,
    offer_expiry: BTreeSet<(u64, Ipv4Addr)>,
    declined: HashMap<Ipv4Addr, u64>,
    decline_expiry: BTreeSet<(u64, Ipv4Addr)>,
    /// A client's address before it released it or it expired: given back to it when still free. Kept both ways
    /// (one last holder per address), so it is bounded by the number of addresses.
    previous: HashMap<Vec<u8>, Ipv4Addr>,
    previous_by_ip: HashMap<Ipv4Addr, Vec<u8>>,
    /// Per pool, the last relay address (giaddr) seen.
    relay_seen: Vec<Ipv4Addr>,
    stats: Stats,
}

impl Server {
    /// Builds the server and restores the store's state: `leases` (the replayed table) and `declined` addresses
    /// with their quarantine end. Leases that no longer fit the configuration (address outside every subnet or
    /// dynamic range, the router's address, another MAC's static address, a MAC whose static address differs)
    /// are dropped; they disappear from `leases()` and so from the next compaction. Expired leases are kept so
    /// that the first `expire(now)` reports them.
    pub fn new(
        cfg: DhcpConfig,
        leases: Vec<Lease>,
        declined: Vec<(Ipv4Addr, u64)>,
        now: Time,
    ) -> Result<Server, DhcpConfigError> {
        let now = now.unix_secs();
        cfg.validate()?;
        let statics: HashMap<Mac, StaticLease> = cfg.static_leases.iter().map(|s| (s.mac, s.clone())).collect();
        let static_ips: HashSet<Ipv4Addr> = statics.values().map(|s| s.ip).collect();
        let reserved = |ip: Ipv4Addr| ip == cfg.server_ip || static_ips.contains(&ip);
        let mut pools = vec![Pool::new(cfg.subnet, cfg.range, cfg.server_ip, reserved)];
        for r in &cfg.relay_pools {
            // Router `None` = giaddr, filled in per reply; the pool keeps unspecified as the marker.
            pools.push(Pool::new(r.subnet, r.range, r.router.unwrap_or(Ipv4Addr::UNSPECIFIED), reserved));
        }
        let n_pools = pools.len();
        let mut s = Server {
            cfg,
            pools,
            statics,
            static_ips,
            leases: HashMap::new(),
            offers: HashMap::new(),
            owner: HashMap::new(),
            lease_expiry: BTreeSet::new(),
            offer_expiry: BTreeSet::new(),
            declined: HashMap::new(),
            decline_expiry: BTreeSet::new(),
            previous: HashMap::new(),
            previous_by_ip: HashMap::new(),
            relay_seen: vec![Ipv4Addr::UNSPECIFIED; n_pools],
            stats: Stats::default(),
        };
        for (ip, until) in declined {
            if until > now && s.pool_of(ip).is_some() && !s.declined.contains_key(&ip) {
                s.declined.insert(ip, until);
                s.decline_expiry.insert((until, ip));
                s.take_from_pool(ip);
            }
        }
        for lease in leases {
            if !s.restorable(&lease) {
                continue;
            }
            // A later lease for the same client or address replaces the earlier one.
            s.remove_lease(&lease.client_id.clone());
            if let Some(other) = s.owner.get(&lease.ip).cloned() {
                s.remove_lease(&other);
            }
            s.insert_lease(lease);
        }
        Ok(s)
    }

    fn restorable(&self, l: &Lease) -> bool {
        if l.client_id.is_empty() || l.client_id.len() > wire::MAX_CLIENT_ID || l.ip == self.cfg.server_ip {
            return false;
        }
        if let Some(st) = self.statics.get(&l.mac) {
            return st.ip == l.ip;
        }
        !self.static_ips.contains(&l.ip) && !self.declined.contains_key(&l.ip) && self.pool_of(l.ip).is_some()
    }

    pub fn config(&self) -> &DhcpConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The bound leases (offers excluded), in no particular order: for compaction and the UI.
    pub fn leases(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn lease(&self, client_id: &[u8]) -> Option<&Lease> {
        self.leases.get(client_id)
    }

    pub fn lease_by_ip(&self, ip: Ipv4Addr) -> Option<&Lease> {
        self.owner.get(&ip).and_then(|c| self.leases.get(c)).filter(|l| l.ip == ip)
    }

    /// Quarantined addresses and when they come back: for the store's compaction.
    pub fn declined(&self) -> impl Iterator<Item = (Ipv4Addr, u64)> + '_ {
        self.declined.iter().map(|(&ip, &until)| (ip, until))
    }

    /// Free addresses left in the LAN pool (pool 0).
    pub fn free_addresses(&self) -> usize {
        self.pools[0].free_count()
    }

    /// When `expire` next has something to do: the earliest lease expiry, offer timeout or quarantine end.
    pub fn next_expiry(&self) -> Option<Time> {
        [&self.lease_expiry, &self.offer_expiry, &self.decline_expiry]
            .iter()
            .filter_map(|set| set.first().map(|&(t, _)| t))
            .min()
            .map(Time::from_unix_secs)
    }

    /// The admin forgot the device `mac`: its leases end (as if released) and its old address is not kept for it.
    pub fn forget(&mut self, mac: Mac) -> Vec<(Record, LeaseEvent)> {
        let cids: Vec<Vec<u8>> = self.leases.values().filter(|l| l.mac == mac).map(|l| l.client_id.clone()).collect();
        let mut out = Vec::new();
        for cid in cids {
            if let Some(l) = self.remove_lease(&cid) {
                self.forget_previous(&cid);
                out.push((Record::Released { client_id: cid, ip: l.ip }, LeaseEvent::Released(l)));
            }
        }
        out
    }

    /// The same server under a new configuration (the admin changed a static lease): leases, quarantines and
    /// counters carry over; leases that no longer fit (an address now another MAC's static one, say) end, as
    /// (Released record, Released event) pairs. Pending offers are dropped (the client asks again).
    pub fn reconfigure(&mut self, cfg: DhcpConfig, now: Time) -> Result<Vec<(Record, LeaseEvent)>, DhcpConfigError> {
        let old: Vec<Lease> = self.leases.values().cloned().collect();
        let declined: Vec<(Ipv4Addr, u64)> = self.declined().collect();
        let mut next = Server::new(cfg, old.clone(), declined, now)?;
        next.stats = std::mem::take(&mut self.stats);
        let ended = old
            .into_iter()
            .filter(|l| next.leases.get(&l.client_id).is_none_or(|n| n.ip != l.ip))
            .map(|l| (Record::Released { client_id: l.client_id.clone(), ip: l.ip }, LeaseEvent::Released(l)))
            .collect();
        *self = next;
        Ok(ended)
    }

    /// Ends what is due at `now`: expired leases come back as (Released record, Expired event) pairs; timed-out
    /// offers and quarantines are cleared silently.
    pub fn expire(&mut self, now: Time) -> Vec<(Record, LeaseEvent)> {
        let now = now.unix_secs();
        self.reap(now);
        let mut out = Vec::new();
        while let Some(&(t, ip)) = self.lease_expiry.first() {
            if t > now {
                break;
            }
            self.lease_expiry.pop_first();
            let Some(cid) = self.owner.get(&ip).cloned() else {
                continue;
            };
            if let Some(l) = self.remove_lease(&cid) {
                self.stats.expired += 1;
                out.push((Record::Released { client_id: l.client_id.clone(), ip: l.ip }, LeaseEvent::Expired(l)));
            }
        }
        out
    }

    /// Handles one datagram that arrived on the server port. `from` is its source (a relay, or a client's address
    /// or 0.0.0.0:68).
    pub fn handle(&mut self, packet: &[u8], from: SocketAddrV4, now: Time) -> Result<Outcome, DropReason> {
        let result = self.handle_inner(packet, from, now.unix_secs());
        match &result {
            Ok(o) => match o.reply.as_ref().map(|r| r.kind) {
                Some(MessageType::Offer) => self.stats.offer += 1,
                Some(MessageType::Ack) => self.stats.ack += 1,
                Some(MessageType::Nak) => self.stats.nak += 1,
                _ => {}
            },
            Err(r) => self.stats.drops[r.index()] += 1,
        }
        result
    }

    fn handle_inner(&mut self, packet: &[u8], from: SocketAddrV4, now: u64) -> Result<Outcome, DropReason> {
        let req = wire::parse(packet)?;
        let kind = MessageType::from(req.msg_type);
        match kind {
            MessageType::Discover => self.stats.discover += 1,
            MessageType::Request => self.stats.request += 1,
            MessageType::Decline => self.stats.decline += 1,
            MessageType::Release => self.stats.release += 1,
            MessageType::Inform => self.stats.inform += 1,
            _ => return Err(DropReason::BadMessageType),
        }
        self.reap(now);
        let link = self.link(&req)?;
        if !req.giaddr.is_unspecified() {
            self.relay_seen[link] = req.giaddr;
        }
        let cid: Vec<u8> = match &req.client_id {
            Some(id) => id.to_vec(),
            None => [&[1u8][..], &req.mac.0[..]].concat(),
        };
        match kind {
            MessageType::Discover => self.discover(&req, link, cid, now),
            MessageType::Request => self.request(&req, link, cid, now),
            MessageType::Decline => self.decline(&req, cid, now),
            MessageType::Release => self.release(&req, cid),
            _ => self.inform(&req, link, from, &cid),
        }
    }

    /// The pool of the client's link: the relay's (giaddr), else the one whose subnet holds ciaddr, else the LAN's.
    fn link(&self, req: &Request<'_>) -> Result<usize, DropReason> {
        if !req.giaddr.is_unspecified() {
            return self.pools.iter().position(|p| p.subnet.contains(&req.giaddr)).ok_or(DropReason::NoPoolForRelay);
        }
        if !req.ciaddr.is_unspecified()
            && let Some(i) = self.pools.iter().position(|p| p.subnet.contains(&req.ciaddr))
        {
            return Ok(i);
        }
        Ok(0)
    }

    fn discover(&mut self, req: &Request<'_>, link: usize, cid: Vec<u8>, now: u64) -> Result<Outcome, DropReason> {
        let subnet = self.pools[link].subnet;
        let ip = if let Some(st) = self.static_for(&req.mac, link) {
            st.ip
        } else if let Some(l) = self.leases.get(&cid).filter(|l| subnet.contains(&l.ip)) {
            l.ip
        } else {
            let ip = match self.offers.get(&cid) {
                Some(o) if subnet.contains(&o.ip) => o.ip,
                _ => self.allocate(req, link, &cid)?,
            };
            self.set_offer(cid.clone(), ip, now.saturating_add(OFFER_SECS));
            ip
        };
        let hostname = self.hostname_for(req, &cid);
        let bytes = self.encode(
            req,
            link,
            MessageType::Offer,
            Ipv4Addr::UNSPECIFIED,
            ip,
            Some(self.cfg.lease_secs),
            hostname.as_deref(),
        )?;
        Ok(Outcome { reply: Some(self.reply(req, bytes, MessageType::Offer, ip)), ..Outcome::default() })
    }

    /// A new address for a client without lease or offer: the one it asks for, its previous one, or any.
    fn allocate(&mut self, req: &Request<'_>, link: usize, cid: &[u8]) -> Result<Ipv4Addr, DropReason> {
        let pool = &mut self.pools[link];
        for want in [req.requested_ip, self.previous.get(cid).copied()].into_iter().flatten() {
            if pool.take(want) {
                return Ok(want);
            }
        }
        pool.take_any(cid).ok_or(DropReason::PoolExhausted)
    }

    fn request(&mut self, req: &Request<'_>, link: usize, cid: Vec<u8>, now: u64) -> Result<Outcome, DropReason> {
        let subnet = self.pools[link].subnet;
        if let Some(sid) = req.server_id {
            // SELECTING: the client answers one OFFER, naming its server.
            if sid != self.cfg.server_ip {
                self.remove_offer(&cid);
                return Err(DropReason::NotForUs);
            }
            let ip =
                req.requested_ip.or(Some(req.ciaddr).filter(|c| !c.is_unspecified())).ok_or(DropReason::BadRequest)?;
            if subnet.contains(&ip) && self.may_bind(&cid, &req.mac, ip, link) {
                self.ack(req, link, cid, ip, now)
            } else {
                self.nak(req, link, "requested address not available")
            }
        } else if req.ciaddr.is_unspecified() {
            // INIT-REBOOT: the client checks the address it remembers.
            let ip = req.requested_ip.ok_or(DropReason::BadRequest)?;
            if !subnet.contains(&ip) {
                return self.nak(req, link, "wrong network");
            }
            let known = match self.static_for(&req.mac, link) {
                Some(st) => Some(st.ip),
                None => self.leases.get(&cid).map(|l| l.ip).or(self.offers.get(&cid).map(|o| o.ip)),
            };
            match known {
                Some(k) if k == ip => self.ack(req, link, cid, ip, now),
                Some(_) => self.nak(req, link, "not your address"),
                None if self.owner.contains_key(&ip) || self.static_ips.contains(&ip) || ip == self.cfg.server_ip => {
                    self.nak(req, link, "address in use")
                }
                None => Err(DropReason::UnknownClient),
            }
        } else {
            // RENEWING (unicast) or REBINDING (broadcast): extend the lease on ciaddr. A client we lost track of
            // gets its address back if it is free.
            let ip = req.ciaddr;
            if subnet.contains(&ip) && self.may_bind(&cid, &req.mac, ip, link) {
                self.ack(req, link, cid, ip, now)
            } else {
                self.nak(req, link, "address not available")
            }
        }
    }

    /// May `cid` (with `mac`, on `link`) hold `ip`? Its static address, or an address it holds, or a free one.
    fn may_bind(&self, cid: &[u8], mac: &Mac, ip: Ipv4Addr, link: usize) -> bool {
        if let Some(st) = self.static_for(mac, link) {
            return st.ip == ip;
        }
        if ip == self.cfg.server_ip || self.static_ips.contains(&ip) {
            return false;
        }
        match self.owner.get(&ip) {
            Some(o) => o == cid,
            None => self.pools[link].is_free(ip),
        }
    }

    fn ack(
        &mut self,
        req: &Request<'_>,
        link: usize,
        cid: Vec<u8>,
        ip: Ipv4Addr,
        now: u64,
    ) -> Result<Outcome, DropReason> {
        let hostname = self.hostname_for(req, &cid);
        let bytes =
            self.encode(req, link, MessageType::Ack, req.ciaddr, ip, Some(self.cfg.lease_secs), hostname.as_deref())?;
        let mut out = Outcome::default();
        // Another client holding this address can only be one sharing our MAC's static address: it loses it.
        if let Some(other) = self.owner.get(&ip).filter(|o| **o != cid).cloned() {
            self.remove_offer(&other);
            if let Some(l) = self.remove_lease(&other) {
                out.records.push(Record::Released { client_id: l.client_id.clone(), ip: l.ip });
                out.events.push(LeaseEvent::Released(l));
            }
        }
        self.remove_offer(&cid);
        let previous = self.remove_lease(&cid);
        self.take_from_pool(ip);
        let lease = Lease {
            client_id: cid,
            mac: req.mac,
            ip,
            hostname,
            expires: now.saturating_add(u64::from(self.cfg.lease_secs)),
        };
        self.forget_previous(&lease.client_id);
        self.insert_lease(lease.clone());
        out.records.push(Record::Bound(lease.clone()));
        out.events.push(match previous {
            Some(p) if p.ip == ip => LeaseEvent::Renewed(lease),
            _ => LeaseEvent::Granted(lease),
        });
        out.reply = Some(self.reply(req, bytes, MessageType::Ack, ip));
        Ok(out)
    }

    fn nak(&mut self, req: &Request<'_>, link: usize, why: &str) -> Result<Outcome, DropReason> {
        let bytes =
            self.encode(req, link, MessageType::Nak, Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, None, Some(why))?;
        let to = match req.giaddr {
            g if g.is_unspecified() => Destination::Broadcast,
            g => Destination::Unicast(SocketAddrV4::new(g, SERVER_PORT)),
        };
        Ok(Outcome { reply: Some(Reply { bytes, to, kind: MessageType::Nak }), ..Outcome::default() })
    }

    fn decline(&mut self, req: &Request<'_>, cid: Vec<u8>, now: u64) -> Result<Outcome, DropReason> {
        if req.server_id.is_some_and(|s| s != self.cfg.server_ip) {
            return Err(DropReason::NotForUs);
        }
        let ip = req.requested_ip.ok_or(DropReason::BadRequest)?;
        if self.owner.get(&ip) != Some(&cid) {
            return Err(DropReason::UnknownLease);
        }
        let until = now.saturating_add(DECLINE_SECS);
        // Quarantine first, so that giving the address up does not put it back in the pool.
        if let Some(old) = self.declined.insert(ip, until) {
            self.decline_expiry.remove(&(old, ip));
        }
        self.decline_expiry.insert((until, ip));
        self.remove_offer(&cid);
        let mut out = Outcome::default();
        if self.leases.get(&cid).is_some_and(|l| l.ip == ip)
            && let Some(l) = self.remove_lease(&cid)
        {
            out.records.push(Record::Released { client_id: l.client_id.clone(), ip });
            out.events.push(LeaseEvent::Released(l));
        }
        self.forget_previous(&cid);
        out.records.push(Record::Declined { ip, until });
        Ok(out)
    }

    fn release(&mut self, req: &Request<'_>, cid: Vec<u8>) -> Result<Outcome, DropReason> {
        if req.server_id.is_some_and(|s| s != self.cfg.server_ip) {
            return Err(DropReason::NotForUs);
        }
        if self.leases.get(&cid).is_none_or(|l| l.ip != req.ciaddr) {
            return Err(DropReason::UnknownLease);
        }
        let l = self.remove_lease(&cid).ok_or(DropReason::UnknownLease)?;
        Ok(Outcome {
            reply: None,
            records: vec![Record::Released { client_id: l.client_id.clone(), ip: l.ip }],
            events: vec![LeaseEvent::Released(l)],
        })
    }

    fn inform(
        &mut self,
        req: &Request<'_>,
        link: usize,
        from: SocketAddrV4,
        cid: &[u8],
    ) -> Result<Outcome, DropReason> {
        let hostname = self.leases.get(cid).and_then(|l| l.hostname.clone());
        let bytes =
            self.encode(req, link, MessageType::Ack, req.ciaddr, Ipv4Addr::UNSPECIFIED, None, hostname.as_deref())?;
        // RFC 2131 4.3.5: straight to ciaddr (through the relay if relayed); if a client left ciaddr empty, to the
        // packet's source address, else broadcast.
        let to = if !req.giaddr.is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(req.giaddr, SERVER_PORT))
        } else if !req.ciaddr.is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(req.ciaddr, CLIENT_PORT))
        } else if !from.ip().is_unspecified() && !from.ip().is_broadcast() {
            Destination::Unicast(SocketAddrV4::new(*from.ip(), CLIENT_PORT))
        } else {
            Destination::Broadcast
        };
        Ok(Outcome { reply: Some(Reply { bytes, to, kind: MessageType::Ack }), ..Outcome::default() })
    }

    /// Destination of an OFFER/ACK (RFC 2131 4.1).
    fn reply(&self, req: &Request<'_>, bytes: Vec<u8>, kind: MessageType, yiaddr: Ipv4Addr) -> Reply {
        let to = if !req.giaddr.is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(req.giaddr, SERVER_PORT))
        } else if !req.ciaddr.is_unspecified() {
            Destination::Unicast(SocketAddrV4::new(req.ciaddr, CLIENT_PORT))
        } else if req.broadcast_flag() || yiaddr.is_unspecified() {
            Destination::Broadcast
        } else {
            Destination::Hardware { ip: yiaddr, mac: req.mac }
        };
        Reply { bytes, to, kind }
    }

    #[allow(clippy::too_many_arguments)]
    fn encode(
        &self,
        req: &Request<'_>,
        link: usize,
        kind: MessageType,
        ciaddr: Ipv4Addr,
        yiaddr: Ipv4Addr,
        lease_secs: Option<u32>,
        text: Option<&str>,
    ) -> Result<Vec<u8>, DropReason> {
        let pool = &self.pools[link];
        // A relay pool without a configured router: the relay's address, from this packet or the last one seen.
        let router = [pool.router, req.giaddr, self.relay_seen[link]].into_iter().find(|r| !r.is_unspecified());
        let (hostname, message) = if kind == MessageType::Nak { (None, text) } else { (text, None) };
        options::encode(
            &self.cfg,
            pool.subnet,
            router,
            req,
            ReplySpec { kind, ciaddr, yiaddr, lease_secs, hostname, message },
        )
    }

    /// The name a lease gets: the static lease's, else what the client sends now (FQDN first, RFC 4702), else
    /// what it sent before.
    fn hostname_for(&self, req: &Request<'_>, cid: &[u8]) -> Option<String> {
        if let Some(h) = self
            .statics
            .get(&req.mac)
            .and_then(|s| s.hostname.as_deref())
            .and_then(|h| hostname::sanitize(h.as_bytes()))
        {
            return Some(h);
        }
        req.fqdn
            .as_deref()
            .and_then(hostname::from_fqdn)
            .or_else(|| req.hostname.as_deref().and_then(hostname::sanitize))
            .or_else(|| self.leases.get(cid).and_then(|l| l.hostname.clone()))
    }

    fn static_for(&self, mac: &Mac, link: usize) -> Option<&StaticLease> {
        self.statics.get(mac).filter(|s| self.pools[link].subnet.contains(&s.ip))
    }

    /// The pool whose dynamic range holds `ip`.
    fn pool_of(&self, ip: Ipv4Addr) -> Option<usize> {
        if let Some(i) = self.pools.iter().position(|p| p.in_range(ip)) {
            return Some(i);
        }
        // Static addresses outside the ranges still belong to a subnet.
        self.static_ips.contains(&ip).then(|| self.pools.iter().position(|p| p.subnet.contains(&ip))).flatten()
    }

    fn take_from_pool(&mut self, ip: Ipv4Addr) {
        if let Some(i) = self.pools.iter().position(|p| p.in_range(ip)) {
            self.pools[i].take(ip);
        }
    }

    /// `ip` is no longer held: back to its pool unless static, quarantined or the router's.
    fn free_ip(&mut self, ip: Ipv4Addr) {
        self.owner.remove(&ip);
        if ip == self.cfg.server_ip || self.static_ips.contains(&ip) || self.declined.contains_key(&ip) {
            return;
        }
        if let Some(i) = self.pools.iter().position(|p| p.in_range(ip)) {
            self.pools[i].put(ip);
        }
    }

    fn insert_lease(&mut self, l: Lease) {
        self.take_from_pool(l.ip);
        self.owner.insert(l.ip, l.client_id.clone());
        self.lease_expiry.insert((l.expires, l.ip));
        self.leases.insert(l.client_id.clone(), l);
    }

    fn remove_lease(&mut self, cid: &[u8]) -> Option<Lease> {
        let l = self.leases.remove(cid)?;
        self.lease_expiry.remove(&(l.expires, l.ip));
        if self.owner.get(&l.ip).is_some_and(|o| o.as_slice() == cid) {
            self.free_ip(l.ip);
        }
        self.remember_previous(cid.to_vec(), l.ip);
        Some(l)
    }

    fn set_offer(&mut self, cid: Vec<u8>, ip: Ipv4Addr, until: u64) {
        if let Some(old) = self.offers.get(&cid).copied() {
            self.offer_expiry.remove(&(old.until, old.ip));
            if old.ip != ip {
                self.remove_offer(&cid);
            }
        }
        self.owner.insert(ip, cid.clone());
        self.offer_expiry.insert((until, ip));
        self.offers.insert(cid, Offer { ip, until });
    }

    fn remove_offer(&mut self, cid: &[u8]) {
        let Some(o) = self.offers.remove(cid) else { return };
        self.offer_expiry.remove(&(o.until, o.ip));
        let leased_here = self.leases.get(cid).is_some_and(|l| l.ip == o.ip);
        if !leased_here && self.owner.get(&o.ip).is_some_and(|c| c.as_slice() == cid) {
            self.free_ip(o.ip);
        }
    }

    fn remember_previous(&mut self, cid: Vec<u8>, ip: Ipv4Addr) {
        self.forget_previous(&cid);
        if let Some(old) = self.previous_by_ip.insert(ip, cid.clone()) {
            self.previous.remove(&old);
        }
        self.previous.insert(cid, ip);
    }

    fn forget_previous(&mut self, cid: &[u8]) {
        if let Some(ip) = self.previous.remove(cid) {
            self.previous_by_ip.remove(&ip);
        }
    }

    /// Clears timed-out offers and quarantines.
    fn reap(&mut self, now: u64) {
        while let Some(&(t, ip)) = self.offer_expiry.first() {
            if t > now {
                break;
            }
            self.offer_expiry.pop_first();
            if let Some(cid) = self.owner.get(&ip).cloned()
                && self.offers.get(&cid).is_some_and(|o| o.ip == ip && o.until == t)
            {
                self.remove_offer(&cid);
            }
        }
        while let Some(&(t, ip)) = self.decline_expiry.first() {
            if t > now {
                break;
            }
            self.decline_expiry.pop_first();
            if self.declined.get(&ip) == Some(&t) {
                self.declined.remove(&ip);
                if !self.owner.contains_key(&ip) {
                    self.free_ip(ip);
                }
            }
        }
    }
}

#[cfg(test)]
impl Server {
    /// Checks the cross-structure invariants (tests only).
    pub(crate) fn check_invariants(&self) {
        let free = |ip: Ipv4Addr| self.pools.iter().any(|p| p.is_free(ip));
        for (cid, l) in &self.leases {
            assert_eq!(&l.client_id, cid);
            assert_eq!(self.owner.get(&l.ip), Some(cid), "lease {l:?}");
            assert!(self.lease_expiry.contains(&(l.expires, l.ip)));
            assert!(!free(l.ip));
        }
        for (cid, o) in &self.offers {
            assert_eq!(self.owner.get(&o.ip), Some(cid));
            assert!(self.offer_expiry.contains(&(o.until, o.ip)));
            assert!(!free(o.ip) && !self.static_ips.contains(&o.ip));
        }
        for (ip, cid) in &self.owner {
            let held =
                self.leases.get(cid).is_some_and(|l| l.ip == *ip) || self.offers.get(cid).is_some_and(|o| o.ip == *ip);
            assert!(held, "owner entry {ip} without lease or offer");
        }
        assert_eq!(self.lease_expiry.len(), self.leases.len());
        assert_eq!(self.offer_expiry.len(), self.offers.len());
        assert_eq!(self.decline_expiry.len(), self.declined.len());
        assert_eq!(self.previous.len(), self.previous_by_ip.len());
        for (i, p) in self.pools.iter().enumerate() {
            for a in p.start..=p.end {
                let ip = Ipv4Addr::from(a);
                let should = p.usable(ip)
                    && !self.owner.contains_key(&ip)
                    && !self.declined.contains_key(&ip)
                    && !self.static_ips.contains(&ip)
                    && ip != self.cfg.server_ip;
                assert_eq!(p.is_free(ip), should, "pool {i} address {ip}");
            }
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
