//! The packet path: classify, look up or create state, rewrite in place with incremental checksums.
//!
//! Semantics (RFC 4787, 5382, 5508, 7857):
//! - Endpoint-independent mapping: (proto, internal ip, internal port) -> one external port on the WAN address,
//!   whatever the remote. The source port is kept when it lies in `port_range` and is free, else a free port is
//!   taken from a random start in the range. ICMP echo identifiers act as ports (kept when free, whatever their
//!   value). One external port never serves two internal endpoints (per protocol): `by_external` is the allocator.
//! - Endpoint-independent filtering: while a mapping lives, any remote may send to its external port and reaches
//!   the internal endpoint (TCP SYNs included, RFC 5382). Inbound packets never create or extend state; only
//!   outbound packets do (RFC 4787 REQ-6: outbound refresh only).
//! - Inbound packets to the WAN address that match no mapping or forward are `Local`: the router's own connections
//!   share the address and the engine cannot tell them apart from unsolicited traffic; the shell's WAN policy does.
//! - Timeouts are per connection (mapping + remote endpoint): TCP established 2 h 4 min, other TCP states
//!   (SYN sent, SYN-ACK seen, FIN or RST seen, picked up mid-stream) 4 min, UDP 5 min, ICMP 60 s, counted from the
//!   last outbound packet. A mapping lives while any of its connections does.
//! - Hairpinning: a LAN packet to WAN:port with a mapping behind it is translated both ways at once: source to the
//!   sender's own mapping (created if needed), destination to the internal endpoint (RFC 4787 REQ-9). LAN packets to
//!   the WAN address with no mapping behind are `Accept`ed untouched (they are for the router).
//! - ICMP errors (destination unreachable incl. fragmentation needed, time exceeded, parameter problem) are
//!   translated with their embedded datagram: inbound errors about an outbound flow get the outer destination and
//!   embedded source rewritten to the internal endpoint; outbound errors from a LAN host about an inbound packet get
//!   the outer source and embedded destination rewritten to the external endpoint. Embedded IP, embedded L4 (when
//!   present in the quote) and the ICMP checksum are updated incrementally. PMTUD's MTU field is untouched.
//! - Non-first fragments are dropped (`Fragment`) and counted; first fragments are translated by their L4 header
//!   (the L4 checksum update is incremental, so it stays right for the whole datagram). With `CT --notrack` the
//!   kernel's defragmenter (nf_defrag_ipv4) runs before the queue, so fragments should not reach us at all.

use super::checksum::{Delta, complete_l4_checksum, pseudo_l4_checksum};
use super::record::wire_size;
use super::table::{
    Class, NONE, Removed, T_DATA_OUT, T_EST, T_FIN_IN, T_FIN_OUT, T_RST, T_SYN_IN, T_SYN_OUT, T_SYNACK, Table,
    internal_key, session_key, tcp_state,
};
use super::wire::*;
use super::*;
use crate::ports::forward::Protocols;
use crate::types::Time;

pub struct Nat {
    cfg: NatConfig,
    wan: u32,
    router: u32,
    lan_net: u32,
    lan_mask: u32,
    range: (u16, u16),
    t: Table,
    stats: Stats,
    rng: u64,
}

/// New addresses/ports for one IP datagram and its L4 header. For ICMP echo either port means the identifier.
#[derive(Clone, Copy, Default)]
struct Rw {
    src_ip: Option<u32>,
    src_port: Option<u16>,
    dst_ip: Option<u32>,
    dst_port: Option<u16>,
}

#[inline]
fn set16(pkt: &mut [u8], at: usize, new: u16, d: &mut Delta) -> bool {
    let old = be16(pkt, at);
    if old == new {
        return false;
    }
    put16(pkt, at, new);
    d.word(old, new);
    true
}

/// The state of a packet's TCP/UDP checksum as the kernel handed it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Csum {
    /// Complete: updated incrementally (RFC 1624).
    Complete,
    /// CHECKSUM_PARTIAL, one segment: the kernel will send it as we return it, so it gets its full checksum.
    Partial,
    /// CHECKSUM_PARTIAL and GSO: the kernel splits it and derives each segment's checksum from the
    /// pseudo-header sum in the field, which we recompute for the new addresses (no pass over the payload).
    PartialGso,
}

impl Csum {
    pub(super) fn of(meta: &PacketMeta) -> Csum {
        match (meta.csum_partial, meta.gso) {
            (false, _) => Csum::Complete,
            (true, false) => Csum::Partial,
            (true, true) => Csum::PartialGso,
        }
    }
}

/// Rewrites a TCP/UDP packet, keeping its checksum in the state the kernel expects (see `Csum`).
fn rewrite_l4(pkt: &mut [u8], ip: &Ipv4, rw: &Rw, csum: Csum) {
    apply(pkt, ip, rw, csum == Csum::Complete);
    match csum {
        Csum::Complete => {}
        Csum::Partial => {
            complete_l4_checksum(pkt);
        }
        Csum::PartialGso => {
            pseudo_l4_checksum(pkt);
        }
    }
}

/// For a record: source and destination port (for ICMP echo both are the identifier; else 0 where there are
/// none), and the length of the IP + L4 headers every GSO segment repeats.
fn record_ports(pkt: &[u8], ip: &Ipv4) -> (u16, u16, usize) {
    let l4 = ip.l4_off();
    let len = ip.l4_len();
    if ip.is_later_fragment() {
        return (0, 0, ip.ihl);
    }
    match ip.proto {
        PROTO_TCP if len >= 20 => {
            let doff = usize::from(pkt[l4 + 12] >> 4) * 4;
            (be16(pkt, l4), be16(pkt, l4 + 2), ip.ihl + doff.clamp(20, len))
        }
        PROTO_UDP if len >= 8 => (be16(pkt, l4), be16(pkt, l4 + 2), ip.ihl + 8),
        PROTO_ICMP if len >= 8 && matches!(pkt[l4], ICMP_ECHO_REQUEST | ICMP_ECHO_REPLY) => {
            let id = be16(pkt, l4 + 4);
            (id, id, ip.ihl + 8)
        }
        _ => (0, 0, ip.ihl),
    }
}

/// Protocol, source port, destination port and TCP flags of a TCP or UDP packet whose header is all there.
fn ports(pkt: &[u8], ip: &Ipv4) -> Result<(Protocol, u16, u16, u8), DropReason> {
    let (proto, need) = if ip.proto == PROTO_TCP { (Protocol::Tcp, 20) } else { (Protocol::Udp, 8) };
    if ip.l4_len() < need {
        return Err(DropReason::Truncated);
    }
    let l4 = ip.l4_off();
    let flags = if proto == Protocol::Tcp { pkt[l4 + 13] } else { 0 };
    Ok((proto, be16(pkt, l4), be16(pkt, l4 + 2), flags))
}

/// Rewrites the datagram `ip` (outer or embedded in an ICMP error) per `rw`, updating the IP header checksum and,
/// when `update_l4` and present, the L4 checksum. Returns the change of every 16-bit word it wrote, for an enclosing
/// ICMP checksum.
fn apply(pkt: &mut [u8], ip: &Ipv4, rw: &Rw, update_l4: bool) -> Delta {
    let o = ip.off;
    let mut all = Delta::default();
    let mut addr = Delta::default();
    let mut changed = false;
    for (at, new) in [(o + 12, rw.src_ip), (o + 16, rw.dst_ip)] {
        if let Some(new) = new {
            let old = be32(pkt, at);
            if old != new {
                put32(pkt, at, new);
                addr.addr(old, new);
                changed = true;
            }
        }
    }
    if changed {
        all.add(addr);
        let c = be16(pkt, o + 10);
        set16(pkt, o + 10, addr.apply(c), &mut all);
    }
    let l4 = ip.l4_off();
    let avail = ip.end - l4;
    match ip.proto {
        PROTO_TCP | PROTO_UDP => {
            let mut ports = Delta::default();
            let mut pchanged = false;
            if let Some(p) = rw.src_port
                && avail >= 2
            {
                pchanged |= set16(pkt, l4, p, &mut ports);
            }
            if let Some(p) = rw.dst_port
                && avail >= 4
            {
                pchanged |= set16(pkt, l4 + 2, p, &mut ports);
            }
            all.add(ports);
            let at = if ip.proto == PROTO_TCP { l4 + 16 } else { l4 + 6 };
            if update_l4 && (changed || pchanged) && avail >= at - l4 + 2 {
                let old = be16(pkt, at);
                if ip.proto == PROTO_TCP || old != 0 {
                    let mut d = addr;
                    d.add(ports);
                    let mut new = d.apply(old);
                    if ip.proto == PROTO_UDP && new == 0 {
                        new = 0xffff;
                    }
                    set16(pkt, at, new, &mut all);
                }
            }
        }
        PROTO_ICMP => {
            if let Some(id) = rw.src_port.or(rw.dst_port)
                && avail >= 6
            {
                let mut d = Delta::default();
                if set16(pkt, l4 + 4, id, &mut d) {
                    all.add(d);
                    let c = be16(pkt, l4 + 2);
                    set16(pkt, l4 + 2, d.apply(c), &mut all);
                }
            }
        }
        _ => {}
    }
    all
}

/// Up to `limit` entries of `all` from `offset`.
fn page(all: &[u32], offset: usize, limit: usize) -> &[u32] {
    let from = offset.min(all.len());
    &all[from..from + limit.min(all.len() - from)]
}

fn protos(p: Protocols) -> &'static [Protocol] {
    match p {
        Protocols::Tcp => &[Protocol::Tcp],
        Protocols::Udp => &[Protocol::Udp],
        Protocols::Both => &[Protocol::Tcp, Protocol::Udp],
    }
}

fn tcp_out(mut b: u8, f: u8) -> u8 {
    if f & TCP_SYN != 0 {
        if b & (T_RST | T_FIN_OUT | T_FIN_IN) != 0 {
            b = 0; // a new connection on the same 4-tuple
        }
        b |= if f & TCP_ACK != 0 { T_SYNACK | T_SYN_IN | T_SYN_OUT } else { T_SYN_OUT };
    } else if b & T_SYNACK != 0 && f & TCP_ACK != 0 {
        b |= T_EST;
    } else if b & (T_SYN_OUT | T_SYN_IN | T_SYNACK) == 0 {
        b |= T_DATA_OUT;
    }
    if f & TCP_FIN != 0 {
        b |= T_FIN_OUT;
    }
    if f & TCP_RST != 0 {
        b |= T_RST;
    }
    b
}

fn tcp_in(mut b: u8, f: u8) -> u8 {
    if f & TCP_SYN != 0 {
        b |= if f & TCP_ACK != 0 { T_SYNACK | T_SYN_IN } else { T_SYN_IN };
    } else if (b & T_SYNACK != 0 && f & TCP_ACK != 0) || (b & T_DATA_OUT != 0 && f & TCP_RST == 0) {
        b |= T_EST;
    }
    if f & TCP_FIN != 0 {
        b |= T_FIN_IN;
    }
    if f & TCP_RST != 0 {
        b |= T_RST;
    }
    b
}

fn tcp_class(b: u8) -> Class {
    if tcp_state(b) == TcpState::Established { Class::TcpEstablished } else { Class::TcpTransitory }
}

impl Nat {
    pub fn new(cfg: NatConfig, seed: u64) -> Nat {
        let s = |secs: u64| secs.saturating_mul(1000);
        let timeouts = [
            s(cfg.tcp_established_secs),
            s(cfg.tcp_transitory_secs),
            s(cfg.udp_secs),
            s(cfg.udp_secs),
            s(cfg.icmp_secs),
        ];
        let forwards = cfg.forwards.clone();
        let (a, b) = cfg.port_range;
        let mut nat = Nat {
            wan: u32::from(cfg.wan_ip),
            router: u32::from(cfg.router_lan_ip),
            lan_net: u32::from(cfg.lan_subnet.network()),
            lan_mask: u32::from(cfg.lan_subnet.netmask()),
            range: (a.min(b), a.max(b)),
            // Room for every ephemeral mapping and both protocols of every forward (see `Table::new`).
            t: Table::new(
                seed,
                timeouts,
                cfg.max_mappings.max(1).saturating_add(2 * forwards.len()),
                cfg.max_connections.max(1),
            ),
            stats: Stats::default(),
            rng: seed ^ 0x6a09_e667_f3bc_c909,
            cfg,
        };
        nat.set_forwards(forwards);
        nat
    }

    pub fn config(&self) -> &NatConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn next_rand(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[inline]
    fn inside(&self, ip: u32) -> bool {
        ip & self.lan_mask == self.lan_net
    }

    /// Replaces the port forwards. Forwards are pinned mappings: never expire, never evicted; an ephemeral mapping
    /// holding a forward's external port or internal endpoint is removed (with its connections). A forward already
    /// in place stays as it is (its connections and counters too), so a change to one forward (or an app's mapping
    /// coming and going) disturbs no other. If two forwards claim one external port and protocol, the first wins;
    /// if two forwards target one LAN endpoint, inbound works on both but replies and outbound connections from
    /// that endpoint use the first one's external port.
    pub fn set_forwards(&mut self, forwards: Vec<PortForward>) {
        let mut r = Removed::default();
        let wanted: std::collections::HashSet<(Protocol, u16, u32, u16)> = forwards
            .iter()
            .flat_map(|f| {
                let (ip, port) = (u32::from(*f.internal.ip()), f.internal.port());
                protos(f.protocols).iter().map(move |&p| (p, f.external_port, ip, port))
            })
            .collect();
        let mut kept = std::collections::HashSet::new();
        for m in 0..self.t.maps.len() as u32 {
            let mp = &self.t.maps[m as usize];
            if !(mp.live && mp.pinned) {
                continue;
            }
            let key = (mp.proto, mp.ext_port, mp.int_ip, mp.int_port);
            if wanted.contains(&key) {
                kept.insert(key);
            } else {
                self.t.remove_mapping(m, &mut r);
            }
        }
        // Growing here (the control path) keeps the packet path's "no allocation" (see `Table::new`).
        self.t.reserve_mappings(self.cfg.max_mappings.max(1).saturating_add(wanted.len()));
        for f in &forwards {
            let (ip, port) = (u32::from(*f.internal.ip()), f.internal.port());
            for &proto in protos(f.protocols) {
                if kept.contains(&(proto, f.external_port, ip, port)) {
                    continue;
                }
                if let Some(m) = self.t.mapping_by_external(proto, f.external_port) {
                    if self.t.maps[m as usize].pinned {
                        continue;
                    }
                    self.t.remove_mapping(m, &mut r);
                }
                let mut index_internal = true;
                if let Some(&m) = self.t.by_internal.get(&internal_key(proto, ip, port)) {
                    if self.t.maps[m as usize].pinned {
                        index_internal = false;
                    } else {
                        self.t.remove_mapping(m, &mut r);
                    }
                }
                self.t.add_mapping(proto, ip, port, f.external_port, true, index_internal, 0);
            }
        }
        self.cfg.forwards = forwards;
        self.refresh_counts();
    }

    /// The address the NAT translates to.
    pub fn wan_ip(&self) -> std::net::Ipv4Addr {
        self.cfg.wan_ip
    }

    /// The WAN link got a new address (a DHCP lease on the WAN changed, say). Mappings and port forwards keep their
    /// ports and go on under the new address: a LAN host's next packet leaves from it, and replies to it are
    /// translated back; the remote ends of connections made under the old address see a new one (TCP breaks, as on
    /// any router; UDP flows carry on). Packets to the old address are no longer ours.
    pub fn set_wan_ip(&mut self, ip: std::net::Ipv4Addr) {
        self.wan = u32::from(ip);
        self.cfg.wan_ip = ip;
    }

    /// Drops expired connections (and the mappings left without one). Call about once a second. Returns how many
    /// connections and mappings were removed.
    pub fn expire(&mut self, now: Time) -> usize {
        let now_ms = now.unix_ms();
        let mut r = Removed::default();
        self.t.expire(now_ms, &mut r);
        self.stats.connections_expired += r.sessions as u64;
        self.refresh_counts();
        r.sessions + r.mappings
    }

    fn refresh_counts(&mut self) {
        self.stats.mappings = self.t.ephemeral as u64;
        self.stats.connections = self.t.session_count as u64;
    }

    /// Translates one IPv4 packet (starting at the IP header) in place, at `now` (which never goes back).
    /// Returns the verdict and the packet's record (see `record`); allocates nothing.
    pub fn translate(&mut self, packet: &mut [u8], meta: PacketMeta, now: Time) -> (Verdict, PacketRecord) {
        let now_ms = now.unix_ms();
        let up = meta.direction == Direction::Outbound;
        let mut rec = PacketRecord {
            at_ms: now_ms,
            way: if up { Way::Up } else { Way::Down },
            bytes: packet.len().min(u32::MAX as usize) as u32,
            segments: 1,
            ..PacketRecord::EMPTY
        };
        let v = match Ipv4::parse(packet) {
            Err(r) => Verdict::Drop(r),
            Ok(ip) => {
                let (sport, dport, headers) = record_ports(packet, &ip);
                let to_wan = ip.dst == self.wan;
                let v = match meta.direction {
                    Direction::Outbound => self.outbound(packet, ip, Csum::of(&meta), now_ms),
                    Direction::Inbound => self.inbound(packet, ip, Csum::of(&meta), now_ms),
                };
                (rec.bytes, rec.segments) = wire_size(ip.end, headers, meta.gso, self.cfg.mtu);
                rec.ip_proto = ip.proto;
                rec.protocol = match ip.proto {
                    PROTO_TCP => L4::Tcp,
                    PROTO_UDP => L4::Udp,
                    PROTO_ICMP => L4::Icmp,
                    _ => L4::Other,
                };
                let icmp = ip.proto == PROTO_ICMP;
                // The source never changes coming down, nor the destination going up (but for hairpinning): the
                // side that may have been rewritten is read back from the packet.
                let (_, post_dport, _) = record_ports(packet, &ip);
                let post_dst = be32(packet, 16);
                if up {
                    rec.hairpin = to_wan && v == Verdict::Translated;
                    rec.device = ip.src.into();
                    rec.device_port = sport;
                    (rec.remote, rec.remote_port) =
                        if rec.hairpin { (post_dst.into(), post_dport) } else { (ip.dst.into(), dport) };
                } else {
                    rec.device = post_dst.into();
                    rec.device_port = post_dport;
                    rec.remote = ip.src.into();
                    rec.remote_port = sport;
                }
                if icmp {
                    rec.remote_port = 0;
                }
                v
            }
        };
        match v {
            Verdict::Translated => self.stats.translated += 1,
            Verdict::Accept => self.stats.accepted += 1,
            Verdict::Local => self.stats.local += 1,
            Verdict::Drop(r) => {
                self.stats.dropped += 1;
                self.stats.drops[r.index()] += 1;
            }
        }
        rec.verdict = v;
        (v, rec)
    }

    fn outbound(&mut self, pkt: &mut [u8], ip: Ipv4, csum: Csum, now: u64) -> Verdict {
        let (src, dst) = (ip.src, ip.dst);
        if src == self.router || dst == self.router {
            return Verdict::Accept;
        }
        if !self.inside(src) {
            return Verdict::Drop(DropReason::NotInside);
        }
        let hairpin = dst == self.wan;
        if !hairpin && self.inside(dst) {
            return Verdict::Accept;
        }
        if ip.is_later_fragment() {
            return Verdict::Drop(DropReason::Fragment);
        }
        let l4 = ip.l4_off();
        let bytes = ip.end as u64;
        match ip.proto {
            PROTO_TCP | PROTO_UDP => {
                let (proto, sport, dport, flags) = match ports(pkt, &ip) {
                    Ok(p) => p,
                    Err(r) => return Verdict::Drop(r),
                };
                if hairpin {
                    return self.hairpin(pkt, ip, proto, sport, dport, flags, csum, now);
                }
                let ext = match self.outbound_flow(proto, src, sport, dst, dport, flags, bytes, now) {
                    Ok(e) => e,
                    Err(r) => return Verdict::Drop(r),
                };
                let rw = Rw { src_ip: Some(self.wan), src_port: Some(ext), ..Rw::default() };
                rewrite_l4(pkt, &ip, &rw, csum);
                Verdict::Translated
            }
            PROTO_ICMP => {
                if ip.l4_len() < 8 {
                    return Verdict::Drop(DropReason::Truncated);
                }
                match pkt[l4] {
                    ICMP_ECHO_REQUEST if hairpin => Verdict::Accept,
                    ICMP_ECHO_REQUEST => {
                        let id = be16(pkt, l4 + 4);
                        let ext = match self.outbound_flow(Protocol::Icmp, src, id, dst, 0, 0, bytes, now) {
                            Ok(e) => e,
                            Err(r) => return Verdict::Drop(r),
                        };
                        let rw = Rw { src_ip: Some(self.wan), src_port: Some(ext), ..Rw::default() };
                        apply(pkt, &ip, &rw, true);
                        Verdict::Translated
                    }
                    ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM => self.outbound_error(pkt, ip, now),
                    _ if hairpin => Verdict::Accept,
                    _ => Verdict::Drop(DropReason::UnsupportedProtocol),
                }
            }
            _ if hairpin => Verdict::Accept,
            _ => Verdict::Drop(DropReason::UnsupportedProtocol),
        }
    }

    /// The external port for an outbound packet, creating or refreshing its mapping and connection.
    #[allow(clippy::too_many_arguments)]
    fn outbound_flow(
        &mut self,
        proto: Protocol,
        int_ip: u32,
        int_port: u16,
        rip: u32,
        rport: u16,
        flags: u8,
        bytes: u64,
        now: u64,
    ) -> Result<u16, DropReason> {
        let ik = internal_key(proto, int_ip, int_port);
        if let Some(&m) = self.t.by_internal.get(&ik) {
            let ext = self.t.maps[m as usize].ext_port;
            if let Some(&s) = self.t.by_session.get(&session_key(proto, ext, rip, rport)) {
                self.session_out(s, flags, bytes, now);
                self.mapping_out(m, bytes, now);
                return Ok(ext);
            }
            if proto == Protocol::Tcp && flags & TCP_RST != 0 {
                // A reset creates no connection.
                self.mapping_out(m, bytes, now);
                return Ok(ext);
            }
        } else if proto == Protocol::Tcp && flags & TCP_RST != 0 {
            return Err(DropReason::NoMapping);
        }
        // A new connection.
        if self.t.session_count >= self.cfg.max_connections.max(1)
            && let Some(v) = self.t.session_victim()
        {
            self.evict(|t, r| t.remove_session(v, r), now, v);
        }
        let m = match self.t.by_internal.get(&ik) {
            Some(&m) => m,
            None => self.new_mapping(proto, int_ip, int_port, now)?,
        };
        let (class, tcp) = match proto {
            Protocol::Tcp => {
                let b = tcp_out(0, flags);
                (tcp_class(b), b)
            }
            Protocol::Udp => (Class::Udp, 0),
            Protocol::Icmp => (Class::Icmp, 0),
        };
        let s = self.t.add_session(m, rip, rport, class, tcp, now);
        let c = &mut self.t.sessions[s as usize].counters;
        c.packets_out += 1;
        c.bytes_out += bytes;
        self.stats.connections_created += 1;
        self.mapping_out(m, bytes, now);
        self.refresh_counts();
        Ok(self.t.maps[m as usize].ext_port)
    }

    /// Removes a session (`victim`) or mapping to make room, counting it as expired if its time had come anyway.
    fn evict(&mut self, f: impl FnOnce(&mut Table, &mut Removed), now: u64, session: u32) {
        let expired = session != NONE && self.t.sessions[session as usize].expires_ms <= now;
        let mut r = Removed::default();
        f(&mut self.t, &mut r);
        if expired {
            self.stats.connections_expired += r.sessions as u64;
        } else {
            self.stats.connections_evicted += r.sessions as u64;
            self.stats.mappings_evicted += r.mappings as u64;
        }
    }

    fn new_mapping(&mut self, proto: Protocol, ip: u32, port: u16, now: u64) -> Result<u32, DropReason> {
        if self.t.ephemeral >= self.cfg.max_mappings.max(1)
            && let Some(v) = self.t.eviction_victim(None)
        {
            self.evict(|t, r| t.remove_mapping(v, r), now, NONE);
        }
        let preferred = match proto {
            Protocol::Icmp => Some(port),
            _ if (self.range.0..=self.range.1).contains(&port) => Some(port),
            _ => None,
        };
        for _ in 0..4 {
            let r = self.next_rand();
            if let Some(p) = self.t.free_port(proto, preferred, self.range, r) {
                self.stats.mappings_created += 1;
                return Ok(self.t.add_mapping(proto, ip, port, p, false, true, now));
            }
            // Every port of the range is taken: evict the least valuable mapping of this protocol.
            match self.t.eviction_victim(Some(proto)) {
                Some(v) => self.evict(|t, r| t.remove_mapping(v, r), now, NONE),
                None => break,
            }
        }
        Err(DropReason::TableFull)
    }

    #[inline]
    fn mapping_out(&mut self, m: u32, bytes: u64, now: u64) {
        let c = &mut self.t.maps[m as usize].counters;
        c.packets_out += 1;
        c.bytes_out += bytes;
        self.t.touch_mapping(m, now);
    }

    #[inline]
    fn session_out(&mut self, s: u32, flags: u8, bytes: u64, now: u64) {
        let sess = &mut self.t.sessions[s as usize];
        let expired = sess.expires_ms <= now;
        sess.counters.packets_out += 1;
        sess.counters.bytes_out += bytes;
        sess.last_out_ms = now;
        let class = match sess.proto {
            Protocol::Tcp => {
                let b = tcp_out(if expired { 0 } else { sess.tcp }, flags);
                sess.tcp = b;
                tcp_class(b)
            }
            Protocol::Udp if expired => Class::Udp,
            _ => sess.class,
        };
        self.t.set_class(s, class, now, true);
    }

    /// Inbound activity on a mapping (and its connection with `rip:rport`, if any): counters and TCP state only;
    /// never creates state, never extends an expiry.
    fn inbound_flow(&mut self, m: u32, rip: u32, rport: u16, flags: u8, bytes: u64, now: u64) {
        let mp = &mut self.t.maps[m as usize];
        mp.counters.packets_in += 1;
        mp.counters.bytes_in += bytes;
        mp.last_in_ms = now;
        let (proto, ext) = (mp.proto, mp.ext_port);
        let Some(&s) = self.t.by_session.get(&session_key(proto, ext, rip, rport)) else { return };
        let sess = &mut self.t.sessions[s as usize];
        if sess.expires_ms <= now {
            return;
        }
        sess.counters.packets_in += 1;
        sess.counters.bytes_in += bytes;
        sess.last_in_ms = now;
        let class = match proto {
            Protocol::Tcp => {
                sess.tcp = tcp_in(sess.tcp, flags);
                tcp_class(sess.tcp)
            }
            Protocol::Udp => Class::UdpAssured,
            Protocol::Icmp => Class::Icmp,
        };
        if class != sess.class {
            self.t.set_class(s, class, now, false);
        }
    }

    fn live_external(&self, proto: Protocol, port: u16, now: u64) -> Option<u32> {
        self.t.mapping_by_external(proto, port).filter(|&m| self.t.mapping_alive(m, now))
    }

    #[allow(clippy::too_many_arguments)]
    fn hairpin(
        &mut self,
        pkt: &mut [u8],
        ip: Ipv4,
        proto: Protocol,
        sport: u16,
        dport: u16,
        flags: u8,
        csum: Csum,
        now: u64,
    ) -> Verdict {
        if self.live_external(proto, dport, now).is_none() {
            return Verdict::Accept; // to the router's own WAN address
        }
        let bytes = ip.end as u64;
        let ext = match self.outbound_flow(proto, ip.src, sport, self.wan, dport, flags, bytes, now) {
            Ok(e) => e,
            Err(r) => return Verdict::Drop(r),
        };
        // Creating the sender's mapping may have evicted the target's.
        let Some(dm) = self.live_external(proto, dport, now) else { return Verdict::Drop(DropReason::NoMapping) };
        self.inbound_flow(dm, self.wan, ext, flags, bytes, now);
        let (tip, tport) = (self.t.maps[dm as usize].int_ip, self.t.maps[dm as usize].int_port);
        let rw = Rw { src_ip: Some(self.wan), src_port: Some(ext), dst_ip: Some(tip), dst_port: Some(tport) };
        rewrite_l4(pkt, &ip, &rw, csum);
        self.stats.hairpinned += 1;
        Verdict::Translated
    }

    fn inbound(&mut self, pkt: &mut [u8], ip: Ipv4, csum: Csum, now: u64) -> Verdict {
        if self.inside(ip.src) || ip.src == self.router || self.inside(ip.dst) || ip.dst == self.router {
            return Verdict::Drop(DropReason::Martian);
        }
        if ip.dst != self.wan {
            return Verdict::Local; // broadcast, multicast, an address the WAN link is about to get, ...
        }
        if ip.is_later_fragment() {
            return Verdict::Drop(DropReason::Fragment);
        }
        let l4 = ip.l4_off();
        let bytes = ip.end as u64;
        match ip.proto {
            PROTO_TCP | PROTO_UDP => {
                let (proto, sport, dport, flags) = match ports(pkt, &ip) {
                    Ok(p) => p,
                    Err(r) => return Verdict::Drop(r),
                };
                let Some(m) = self.live_external(proto, dport, now) else { return Verdict::Local };
                self.inbound_flow(m, ip.src, sport, flags, bytes, now);
                let mp = &self.t.maps[m as usize];
                let rw = Rw { dst_ip: Some(mp.int_ip), dst_port: Some(mp.int_port), ..Rw::default() };
                rewrite_l4(pkt, &ip, &rw, csum);
                Verdict::Translated
            }
            PROTO_ICMP => {
                if ip.l4_len() < 8 {
                    return Verdict::Drop(DropReason::Truncated);
                }
                match pkt[l4] {
                    ICMP_ECHO_REPLY => {
                        let id = be16(pkt, l4 + 4);
                        let Some(m) = self.live_external(Protocol::Icmp, id, now) else { return Verdict::Local };
                        self.inbound_flow(m, ip.src, 0, 0, bytes, now);
                        let mp = &self.t.maps[m as usize];
                        let rw = Rw { dst_ip: Some(mp.int_ip), dst_port: Some(mp.int_port), ..Rw::default() };
                        apply(pkt, &ip, &rw, true);
                        Verdict::Translated
                    }
                    ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAM_PROBLEM => self.inbound_error(pkt, ip, now),
                    _ => Verdict::Local,
                }
            }
            _ => Verdict::Local,
        }
    }

    /// The datagram quoted by an ICMP error, with enough of its L4 header for ports / the echo identifier.
    fn quoted(pkt: &[u8], ip: &Ipv4) -> Option<(Ipv4, Protocol)> {
        let e = Ipv4::parse_embedded(pkt, ip.l4_off() + 8, ip.end)?;
        if e.is_later_fragment() || e.l4_len() < 8 {
            return None;
        }
        let proto = match e.proto {
            PROTO_TCP => Protocol::Tcp,
            PROTO_UDP => Protocol::Udp,
            PROTO_ICMP => Protocol::Icmp,
            _ => return None,
        };
        Some((e, proto))
    }

    /// Rewrites the quoted datagram and then the outer header, keeping the ICMP checksum right.
    fn apply_error(&mut self, pkt: &mut [u8], ip: &Ipv4, e: &Ipv4, inner: Rw, outer: Rw) -> Verdict {
        let d = apply(pkt, e, &inner, true);
        let at = ip.l4_off() + 2;
        let c = be16(pkt, at);
        put16(pkt, at, d.apply(c));
        apply(pkt, ip, &outer, false);
        self.stats.icmp_errors_translated += 1;
        Verdict::Translated
    }

    /// An error from the WAN about a packet we sent out: the quote starts WAN:external -> remote.
    fn inbound_error(&mut self, pkt: &mut [u8], ip: Ipv4, now: u64) -> Verdict {
        let Some((e, proto)) = Self::quoted(pkt, &ip) else { return Verdict::Local };
        if e.src != self.wan {
            return Verdict::Local;
        }
        let el4 = e.l4_off();
        let ext = match proto {
            Protocol::Icmp if pkt[el4] == ICMP_ECHO_REQUEST => be16(pkt, el4 + 4),
            Protocol::Icmp => return Verdict::Local,
            _ => be16(pkt, el4),
        };
        let Some(m) = self.live_external(proto, ext, now) else { return Verdict::Local };
        let mp = &mut self.t.maps[m as usize];
        mp.counters.packets_in += 1;
        mp.counters.bytes_in += ip.end as u64;
        let (iip, iport) = (mp.int_ip, mp.int_port);
        let inner = Rw { src_ip: Some(iip), src_port: Some(iport), ..Rw::default() };
        let outer = Rw { dst_ip: Some(iip), ..Rw::default() };
        self.apply_error(pkt, &ip, &e, inner, outer)
    }

    /// An error from a LAN host about a packet it received through us: the quote ends at its internal endpoint.
    /// To the WAN address, it is about a hairpinned packet: both endpoints of the quote are translated.
    fn outbound_error(&mut self, pkt: &mut [u8], ip: Ipv4, _now: u64) -> Verdict {
        let hairpin = ip.dst == self.wan;
        let Some((e, proto)) = Self::quoted(pkt, &ip) else {
            return if hairpin { Verdict::Accept } else { Verdict::Drop(DropReason::Malformed) };
        };
        if proto == Protocol::Icmp {
            // Echo requests from outside are answered by the router; no LAN host can have received one through us.
            return if hairpin { Verdict::Accept } else { Verdict::Drop(DropReason::NoMapping) };
        }
        let el4 = e.l4_off();
        let (qsport, qdport) = (be16(pkt, el4), be16(pkt, el4 + 2));
        let mut outer = Rw { src_ip: Some(self.wan), ..Rw::default() };
        let mut inner = Rw::default();
        if hairpin {
            // The quote is WAN:sender's external port -> this host: map the quoted source back to the sender.
            let sender = if e.src == self.wan { self.t.mapping_by_external(proto, qsport) } else { None };
            let Some(a) = sender else { return Verdict::Accept };
            let a = &self.t.maps[a as usize];
            inner.src_ip = Some(a.int_ip);
            inner.src_port = Some(a.int_port);
            outer.dst_ip = Some(a.int_ip);
        }
        let Some(&m) = self.t.by_internal.get(&internal_key(proto, e.dst, qdport)) else {
            return if hairpin { Verdict::Accept } else { Verdict::Drop(DropReason::NoMapping) };
        };
        let mp = &mut self.t.maps[m as usize];
        mp.counters.packets_out += 1;
        mp.counters.bytes_out += ip.end as u64;
        inner.dst_ip = Some(self.wan);
        inner.dst_port = Some(mp.ext_port);
        self.apply_error(pkt, &ip, &e, inner, outer)
    }

    /// A read-only copy of the tables.
    pub fn snapshot(&self, now: Time) -> Snapshot {
        self.view(now, 0, usize::MAX)
    }

    /// A page of the tables: up to `limit` mappings and up to `limit` connections, each from position `offset`
    /// of its table, in O(limit) (the tables keep their live entries densely, see `table`; the order is stable
    /// only while nothing is removed).
    pub fn view(&self, now: Time, offset: usize, limit: usize) -> Snapshot {
        let now_ms = now.unix_ms();
        let wan = self.cfg.wan_ip;
        let ep = |ip: u32, port: u16| SocketAddrV4::new(ip.into(), port);
        let traffic = |c: &super::table::Counters| Traffic {
            packets_out: c.packets_out,
            bytes_out: c.bytes_out,
            packets_in: c.packets_in,
            bytes_in: c.bytes_in,
        };
        let mappings = page(&self.t.live_maps, offset, limit)
            .iter()
            .map(|&i| {
                let m = &self.t.maps[i as usize];
                let seen = m.counters.packets_out + m.counters.packets_in > 0;
                MappingView {
                    protocol: m.proto,
                    internal: ep(m.int_ip, m.int_port),
                    external: SocketAddrV4::new(wan, m.ext_port),
                    forward: m.pinned,
                    connections: m.sessions,
                    idle_ms: seen.then(|| now_ms.saturating_sub(m.last_out_ms.max(m.last_in_ms))),
                    remaining_ms: (!m.pinned).then(|| m.expires_ms.saturating_sub(now_ms)),
                    traffic: traffic(&m.counters),
                }
            })
            .collect();
        let connections = page(&self.t.live_sessions, offset, limit)
            .iter()
            .map(|&i| {
                let s = &self.t.sessions[i as usize];
                let m = &self.t.maps[s.mapping as usize];
                ConnectionView {
                    protocol: s.proto,
                    internal: ep(m.int_ip, m.int_port),
                    external: SocketAddrV4::new(wan, m.ext_port),
                    remote: ep(s.remote_ip, s.remote_port),
                    state: (s.proto == Protocol::Tcp).then(|| tcp_state(s.tcp)),
                    assured: s.class.protected() || s.counters.packets_in > 0,
                    age_ms: now_ms.saturating_sub(s.created_ms),
                    idle_ms: now_ms.saturating_sub(s.last_out_ms.max(s.last_in_ms)),
                    remaining_ms: s.expires_ms.saturating_sub(now_ms),
                    traffic: traffic(&s.counters),
                }
            })
            .collect();
        Snapshot {
            now_ms,
            total_mappings: self.t.live_maps.len(),
            total_connections: self.t.live_sessions.len(),
            mappings,
            connections,
        }
    }
}
