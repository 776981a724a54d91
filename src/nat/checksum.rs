//! Internet checksum (RFC 1071) and its incremental update (RFC 1624, equation 3).
//!
//! Sums are kept unfolded in a `u64` with end-around carry; 2^64 - 1 is a multiple of 2^16 - 1, so folding at the
//! end gives the same one's-complement 16-bit sum as summing 16-bit words.

use super::wire::{self, PROTO_TCP, PROTO_UDP};

/// One's-complement sum of `data` read as big-endian 16-bit words (an odd last byte padded with zero), added to `acc`.
pub fn sum(data: &[u8], acc: u64) -> u64 {
    let mut s = acc;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (t, carry) = s.overflowing_add(w);
        s = t + u64::from(carry);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let w = u64::from_be_bytes(tail);
    let (t, carry) = s.overflowing_add(w);
    t + u64::from(carry)
}

/// Folds a wide sum to 16 bits (one's complement, end-around carry).
pub fn fold(mut s: u64) -> u16 {
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff_ffff) + (s >> 32);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// The pseudo-header sum of TCP/UDP over IPv4 (RFC 793 / RFC 768).
pub fn pseudo_header(src: u32, dst: u32, proto: u8, l4_len: usize) -> u64 {
    u64::from(src >> 16)
        + u64::from(src & 0xffff)
        + u64::from(dst >> 16)
        + u64::from(dst & 0xffff)
        + u64::from(proto)
        + l4_len as u64
}

/// Accumulated changes of 16-bit words, to apply to any checksum that covers them (RFC 1624 eqn. 3:
/// `HC' = ~(~HC + ~m + m')`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(pub u64);

impl Delta {
    #[inline]
    pub fn word(&mut self, old: u16, new: u16) {
        self.0 += u64::from(!old) + u64::from(new);
    }
    #[inline]
    pub fn addr(&mut self, old: u32, new: u32) {
        self.word((old >> 16) as u16, (new >> 16) as u16);
        self.word(old as u16, new as u16);
    }
    #[inline]
    pub fn add(&mut self, other: Delta) {
        self.0 += other.0;
    }
    /// The checksum `csum` updated for these changes.
    #[inline]
    pub fn apply(self, csum: u16) -> u16 {
        !fold(u64::from(!csum) + self.0)
    }
}

/// Computes the full TCP or UDP checksum of an IPv4 packet in place (pseudo-header with the packet's current
/// addresses + the whole segment), as needed for packets handed over with `CHECKSUM_PARTIAL` (whose checksum field
/// holds only the pseudo-header sum). A computed UDP checksum of 0 is sent as 0xffff. Returns false, leaving the
/// packet untouched, if it is not an unfragmented TCP or UDP packet or is malformed.
pub fn complete_l4_checksum(packet: &mut [u8]) -> bool {
    let Some((ip, len, at)) = l4_checksum_field(packet) else { return false };
    packet[at] = 0;
    packet[at + 1] = 0;
    let l4 = ip.l4_off();
    let s = sum(&packet[l4..l4 + len], pseudo_header(ip.src, ip.dst, ip.proto, len));
    let mut c = !fold(s);
    if ip.proto == PROTO_UDP && c == 0 {
        c = 0xffff;
    }
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Where the TCP/UDP checksum field is and how long the segment is (TCP: to the end of the IP packet; UDP: its
/// length field), for an unfragmented, well-formed TCP or UDP packet.
fn l4_checksum_field(packet: &[u8]) -> Option<(wire::Ipv4, usize, usize)> {
    let ip = wire::Ipv4::parse(packet).ok()?;
    if ip.is_fragment() {
        return None;
    }
    let l4 = ip.l4_off();
    match ip.proto {
        PROTO_TCP if ip.l4_len() >= 20 => Some((ip, ip.l4_len(), l4 + 16)),
        PROTO_UDP if ip.l4_len() >= 8 => {
            let ulen = usize::from(u16::from_be_bytes([packet[l4 + 4], packet[l4 + 5]]));
            (ulen >= 8 && ulen <= ip.l4_len()).then_some((ip, ulen, l4 + 6))
        }
        _ => None,
    }
}

/// Writes the pseudo-header sum (not complemented, as Linux keeps it for CHECKSUM_PARTIAL) for the packet's
/// current addresses into its TCP/UDP checksum field. Returns false, leaving the packet untouched, as
/// `complete_l4_checksum` does.
pub fn pseudo_l4_checksum(packet: &mut [u8]) -> bool {
    let Some((ip, len, at)) = l4_checksum_field(packet) else { return false };
    let c = fold(pseudo_header(ip.src, ip.dst, ip.proto, len));
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_be_bytes([c[0], 0]) };
            s += u32::from(w);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn wide_sum_matches_naive() {
        let mut x: u32 = 12345;
        for len in 0..200 {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x = x.wrapping_mul(1664525).wrapping_add(1013904223);
                    (x >> 24) as u8
                })
                .collect();
            assert_eq!(fold(sum(&data, 0)), naive(&data), "len {len}");
            let ff = vec![0xffu8; len];
            assert_eq!(fold(sum(&ff, 0)), naive(&ff), "ff len {len}");
        }
    }

    #[test]
    fn rfc1624_incremental_matches_recompute() {
        let mut data = [0x45u8, 0x00, 0x00, 0x54, 0x12, 0x34, 0x40, 0x00, 0x40, 0x01, 0, 0, 10, 0, 0, 5, 8, 8, 8, 8];
        let c = !fold(sum(&data, 0));
        data[10..12].copy_from_slice(&c.to_be_bytes());
        let mut d = Delta::default();
        d.addr(0x0a00_0005, 0xcb00_7101);
        let c2 = d.apply(c);
        data[12..16].copy_from_slice(&0xcb00_7101u32.to_be_bytes());
        data[10..12].copy_from_slice(&c2.to_be_bytes());
        assert_eq!(fold(sum(&data, 0)), 0xffff);
    }
}
