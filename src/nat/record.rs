//! What the NAT tells the rest of the program about every packet it handles: a plain, fixed-size `Copy` record
//! (32 bytes), filled by [`Nat::translate`](super::Nat::translate) without allocating. The packet path pushes them
//! into per-queue rings (`datapath::ring`); traffic accounting and capture read them from there.
//!
//! The record is the device's view: `device` is the inside host's own address and port (before the source is
//! rewritten going up, after the destination is rewritten coming down), `remote` the other end as the device
//! addresses it. A hairpinned packet (one LAN host to another through the WAN address) is one record from the
//! sender's side: `device` the sender, `remote` the receiver's own LAN address and port, `way` up, `hairpin` set.
//! Packets that are not a device's (inbound to the router itself: `Local`) carry the addresses as they were.
//!
//! Bytes are IP bytes as they cross the wire. A GSO packet is counted as the segments the kernel cuts it into
//! after our verdict, each with its own IP and TCP/UDP header. NFQUEUE does not report the GSO segment size
//! (`gso_size`), so it is derived from the link MTU ([`NatConfig::mtu`](super::NatConfig::mtu)):
//! - TCP: the sender's `gso_size` is its MSS, which is the path MTU less the IP and TCP headers including options
//!   (1500 - 20 - 32 = 1448 with timestamps) whenever the path MTU is the link's, the common home case. The headers
//!   of the aggregate are those of every segment (the kernel copies them), so `segments = ceil(payload / (mtu -
//!   ip header - tcp header))`. A smaller MSS (clamping, a lower path MTU, a peer advertising less) means more
//!   segments than counted: bytes are then a lower bound, short by one header per uncounted segment (~3 %).
//! - UDP (`UDP_SEGMENT`): the application picks the datagram size, at most what fits the MTU; counting with the
//!   largest that fits gives the fewest segments, so again a lower bound of the headers (the payload is exact).

use super::Verdict;
use std::net::Ipv4Addr;

/// The transport protocol of a record (the IP protocol number is in [`PacketRecord::ip_proto`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    Tcp,
    Udp,
    Icmp,
    Other,
}

/// Which way a packet goes, seen from the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Way {
    /// Device -> remote (the NAT's outbound direction).
    Up,
    /// Remote -> device (inbound).
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PacketRecord {
    /// The `now_ms` given to `translate`.
    pub at_ms: u64,
    /// The inside host's own IPv4 address.
    pub device: Ipv4Addr,
    pub remote: Ipv4Addr,
    /// TCP/UDP port of the device; for ICMP echo the device's own identifier; else 0.
    pub device_port: u16,
    /// TCP/UDP port of the remote; 0 for ICMP and other protocols.
    pub remote_port: u16,
    /// IP bytes on the wire, every GSO segment's headers included.
    pub bytes: u32,
    /// Packets on the wire: 1, or the segments of a GSO packet.
    pub segments: u16,
    /// The IP protocol number (0 when the IP header could not be read).
    pub ip_proto: u8,
    pub protocol: L4,
    pub way: Way,
    pub hairpin: bool,
    pub verdict: Verdict,
}

impl PacketRecord {
    /// A record with nothing known yet.
    pub const EMPTY: PacketRecord = PacketRecord {
        at_ms: 0,
        device: Ipv4Addr::UNSPECIFIED,
        remote: Ipv4Addr::UNSPECIFIED,
        device_port: 0,
        remote_port: 0,
        bytes: 0,
        segments: 0,
        ip_proto: 0,
        protocol: L4::Other,
        way: Way::Up,
        hairpin: false,
        verdict: Verdict::Accept,
    };
}

impl Default for PacketRecord {
    fn default() -> Self {
        PacketRecord::EMPTY
    }
}

/// Wire bytes and segments of the datagram `total` bytes long with `headers` bytes of IP + L4 header, cut into
/// segments of at most `mtu` bytes each repeating the headers (GSO), or sent whole.
pub(super) fn wire_size(total: usize, headers: usize, gso: bool, mtu: u16) -> (u32, u16) {
    let per_segment = usize::from(mtu).saturating_sub(headers);
    if !gso || per_segment == 0 || total <= headers {
        return (total.min(u32::MAX as usize) as u32, 1);
    }
    let payload = total - headers;
    let segments = payload.div_ceil(per_segment);
    ((payload + segments * headers).min(u32::MAX as usize) as u32, segments.min(usize::from(u16::MAX)) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_is_small() {
        assert!(std::mem::size_of::<PacketRecord>() <= 32, "{}", std::mem::size_of::<PacketRecord>());
    }

    #[test]
    fn gso_sizes() {
        // One ordinary packet.
        assert_eq!(wire_size(1500, 52, false, 1500), (1500, 1));
        // 64 KB of TCP payload with timestamps (52 header bytes): 1448-byte segments.
        let payload: usize = 65_000;
        let segs = payload.div_ceil(1448);
        assert_eq!(wire_size(payload + 52, 52, true, 1500), ((payload + segs * 52) as u32, segs as u16));
        // A GSO packet that is really one segment.
        assert_eq!(wire_size(100, 52, true, 1500), (100, 1));
        // Nonsense MTU: counted whole.
        assert_eq!(wire_size(9000, 60, true, 40), (9000, 1));
    }
}
