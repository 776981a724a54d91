//! Sans-IO NAT engine: full-cone (endpoint-independent mapping and filtering) NAPT of IPv4 TCP, UDP and ICMP onto
//! one WAN address, with hairpinning, ICMP error translation, TCP state tracking, bounded tables and port forwards.
//!
//! The shell hands every queued packet to [`Nat::translate`] with its direction and the current monotonic time, and
//! acts on the [`Verdict`]; it calls [`Nat::expire`] about once a second. See `engine.rs` for the semantics.

pub(crate) mod checksum;
mod engine;
pub mod record;
mod table;
pub mod wire;

#[cfg(test)]
mod tests;

pub use checksum::complete_l4_checksum;
pub use engine::Nat;
pub use record::{L4, PacketRecord, Way};

use crate::labels::labelled_enum;
use crate::ports::forward::PortForward;
use serde::Serialize;
use serde::ser::SerializeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// The NAT's settings. Build with [`NatConfig::new`] and adjust fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    pub wan_ip: Ipv4Addr,
    /// Who is "inside": outbound packets from other sources are dropped (never leak an unknown address).
    pub lan_subnet: ipnet::Ipv4Net,
    /// The router's own LAN address: traffic to or from it is local and never translated.
    pub router_lan_ip: Ipv4Addr,
    /// External ports for ephemeral TCP/UDP mappings and for ICMP identifiers that must be changed. A source port
    /// outside this range is never kept (so a LAN host cannot take e.g. port 22 of the WAN address). Keep it
    /// disjoint from the router's own ephemeral ports (`net.ipv4.ip_local_port_range`, or reserve it with
    /// `ip_local_reserved_ports`): a mapping on a port the router also uses takes the replies.
    pub port_range: (u16, u16),
    /// Ephemeral mappings held at most, all protocols together (forwards are not counted).
    pub max_mappings: usize,
    /// Connections (sessions: mapping + remote endpoint) held at most, all protocols together. Each ephemeral
    /// mapping has at least one, so this also bounds mappings.
    pub max_connections: usize,
    pub forwards: Vec<PortForward>,
    pub tcp_established_secs: u64,
    pub tcp_transitory_secs: u64,
    pub udp_secs: u64,
    pub icmp_secs: u64,
    /// The links' MTU, used to count a GSO packet as the segments it becomes on the wire (see `record`).
    pub mtu: u16,
}

impl NatConfig {
    pub fn new(wan_ip: Ipv4Addr, lan_subnet: ipnet::Ipv4Net, router_lan_ip: Ipv4Addr) -> Self {
        NatConfig {
            wan_ip,
            lan_subnet,
            router_lan_ip,
            port_range: (1024, 65535),
            max_mappings: 65_536,
            max_connections: 131_072,
            forwards: Vec::new(),
            tcp_established_secs: 7440,
            tcp_transitory_secs: 240,
            udp_secs: 300,
            icmp_secs: 60,
            mtu: 1500,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Arrived from the LAN, routed to the WAN (queued after routing). Also LAN packets to the WAN address
    /// (hairpinning), which the shell must queue before routing so the rewritten destination gets routed.
    Outbound,
    /// Arrived on the WAN interface, before routing.
    Inbound,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub direction: Direction,
    /// The kernel left the TCP/UDP checksum incomplete (CHECKSUM_PARTIAL: the field holds the pseudo-header sum).
    pub csum_partial: bool,
    /// A GSO packet (many segments' worth, split by the kernel after our verdict). With `csum_partial`, its
    /// checksum field must keep holding the pseudo-header sum: the kernel derives every segment's checksum from it
    /// when it splits the packet (a full sum over the whole packet would be wasted for TCP and wrong for UDP).
    pub gso: bool,
}

impl PacketMeta {
    pub const fn new(direction: Direction) -> Self {
        PacketMeta { direction, csum_partial: false, gso: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten in place (the buffer's length is unchanged): send the modified packet back.
    Translated,
    /// Not modified and fine to pass as is (e.g. LAN-to-router traffic that should never have been queued).
    Accept,
    /// Addressed to the router itself and not part of any mapping/forward (inbound); the shell applies its WAN
    /// policy (accept replies to the router's own connections, drop the rest).
    Local,
    Drop(DropReason),
}

labelled_enum! {
    /// Why a packet was dropped. `as_str` labels are stable (metrics, logs).
    pub enum DropReason {
        /// Not IPv4, bad IHL, total length shorter than the header, or an unusable ICMP error.
        Malformed => "malformed",
        /// Shorter than its headers say (total length past the buffer, L4 header cut).
        Truncated => "truncated",
        /// A non-first fragment (no L4 header to translate by).
        Fragment => "fragment",
        /// Outbound packet that needs a mapping which does not exist and that may not create one (ICMP error about
        /// an unknown flow, TCP RST or echo reply without a mapping).
        NoMapping => "no_mapping",
        /// No external port could be found even after eviction.
        TableFull => "table_full",
        /// Outbound protocol or ICMP type the NAT does not translate (never sent out with a private source).
        UnsupportedProtocol => "unsupported_protocol",
        /// Outbound from a source outside the LAN subnet.
        NotInside => "not_inside",
        /// Inbound from or to an inside address (spoofed, or an attempt to route past the NAT).
        Martian => "martian",
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp = 0,
    Udp = 1,
    Icmp = 2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// SYN sent from inside, no answer yet.
    SynSent,
    /// SYN from outside answered, or SYN-ACK seen, handshake not finished.
    SynReceived,
    Established,
    /// FIN seen (either way).
    Closing,
    /// RST seen.
    Closed,
    /// Picked up without a SYN (e.g. after a restart), not yet seen both ways.
    Midstream,
}

/// Counters. Serializes with `drops` as a map from reason label to count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub translated: u64,
    pub accepted: u64,
    pub local: u64,
    pub dropped: u64,
    pub hairpinned: u64,
    pub icmp_errors_translated: u64,
    /// Ephemeral mappings and connections now.
    pub mappings: u64,
    pub connections: u64,
    pub mappings_created: u64,
    pub connections_created: u64,
    /// Removed to make room (not expired).
    pub mappings_evicted: u64,
    pub connections_evicted: u64,
    pub connections_expired: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    pub fn dropped_for(&self, r: DropReason) -> u64 {
        self.drops[r.index()]
    }
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.dropped_for(r)))
    }

    /// Every field as one array (the order of `from_array`), for a mirror in atomics that readers load without the
    /// NAT's lock (`datapath`).
    pub fn to_array(&self) -> [u64; STATS_LEN] {
        let mut a = [0; STATS_LEN];
        a[..STATS_FIELDS].copy_from_slice(&[
            self.translated,
            self.accepted,
            self.local,
            self.dropped,
            self.hairpinned,
            self.icmp_errors_translated,
            self.mappings,
            self.connections,
            self.mappings_created,
            self.connections_created,
            self.mappings_evicted,
            self.connections_evicted,
            self.connections_expired,
        ]);
        a[STATS_FIELDS..].copy_from_slice(&self.drops);
        a
    }

    pub fn from_array(a: &[u64; STATS_LEN]) -> Stats {
        let mut drops = [0; DropReason::ALL.len()];
        drops.copy_from_slice(&a[STATS_FIELDS..]);
        Stats {
            translated: a[0],
            accepted: a[1],
            local: a[2],
            dropped: a[3],
            hairpinned: a[4],
            icmp_errors_translated: a[5],
            mappings: a[6],
            connections: a[7],
            mappings_created: a[8],
            connections_created: a[9],
            mappings_evicted: a[10],
            connections_evicted: a[11],
            connections_expired: a[12],
            drops,
        }
    }

    /// As [`crate::counters::Counters`]: `dropped` once per reason (labelled), `mappings` and `connections` gauges.
    pub fn counters(&self) -> crate::counters::Counters {
        let mut c = crate::counters::Counters::new();
        c.counter("translated", self.translated)
            .counter("accepted", self.accepted)
            .counter("local", self.local)
            .counter("hairpinned", self.hairpinned)
            .counter("icmp_errors_translated", self.icmp_errors_translated)
            .gauge("mappings", self.mappings)
            .gauge("connections", self.connections)
            .counter("mappings_created", self.mappings_created)
            .counter("connections_created", self.connections_created)
            .counter("mappings_evicted", self.mappings_evicted)
            .counter("connections_evicted", self.connections_evicted)
            .counter("connections_expired", self.connections_expired);
        for (r, n) in self.drops() {
            c.labelled("dropped", "reason", r.as_str(), n);
        }
        c
    }
}

/// The plain fields of [`Stats`], then one per drop reason.
const STATS_FIELDS: usize = 13;
pub const STATS_LEN: usize = STATS_FIELDS + DropReason::ALL.len();

impl Serialize for Stats {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Drops<'a>(&'a Stats);
        impl Serialize for Drops<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut m = s.serialize_map(Some(DropReason::ALL.len()))?;
                for (r, n) in self.0.drops() {
                    m.serialize_entry(r.as_str(), &n)?;
                }
                m.end()
            }
        }
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("translated", &self.translated)?;
        m.serialize_entry("accepted", &self.accepted)?;
        m.serialize_entry("local", &self.local)?;
        m.serialize_entry("dropped", &self.dropped)?;
        m.serialize_entry("hairpinned", &self.hairpinned)?;
        m.serialize_entry("icmp_errors_translated", &self.icmp_errors_translated)?;
        m.serialize_entry("mappings", &self.mappings)?;
        m.serialize_entry("connections", &self.connections)?;
        m.serialize_entry("mappings_created", &self.mappings_created)?;
        m.serialize_entry("connections_created", &self.connections_created)?;
        m.serialize_entry("mappings_evicted", &self.mappings_evicted)?;
        m.serialize_entry("connections_evicted", &self.connections_evicted)?;
        m.serialize_entry("connections_expired", &self.connections_expired)?;
        m.serialize_entry("drops", &Drops(self))?;
        m.end()
    }
}

/// Bytes and packets through a mapping or connection. "out": from the LAN host to the WAN; "in": to the LAN host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingView {
    pub protocol: Protocol,
    /// The LAN endpoint (for ICMP the port is the echo identifier).
    pub internal: SocketAddrV4,
    /// WAN address and external port (identifier).
    pub external: SocketAddrV4,
    /// A port forward (never expires).
    pub forward: bool,
    pub connections: u32,
    /// Milliseconds since the last packet either way (`None`: none yet).
    pub idle_ms: Option<u64>,
    /// Milliseconds until it expires if no outbound packet refreshes it (`None` for forwards).
    pub remaining_ms: Option<u64>,
    /// All traffic through the mapping, including inbound packets from remotes without a connection (EIF).
    pub traffic: Traffic,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionView {
    pub protocol: Protocol,
    pub internal: SocketAddrV4,
    pub external: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// TCP only.
    pub state: Option<TcpState>,
    /// The remote has answered (UDP/ICMP), or the TCP connection is established.
    pub assured: bool,
    /// Milliseconds since it was created.
    pub age_ms: u64,
    pub idle_ms: u64,
    pub remaining_ms: u64,
    pub traffic: Traffic,
}

/// A read-only copy of the tables, or of one page of them ([`Nat::view`]), for the ports view.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub now_ms: u64,
    /// Mappings (forwards included) and connections in the tables, of which these are a page.
    pub total_mappings: usize,
    pub total_connections: usize,
    pub mappings: Vec<MappingView>,
    pub connections: Vec<ConnectionView>,
}
