//! Checked, zero-copy views of the IPv4, TCP, UDP and ICMP headers the NAT rewrites.
//!
//! `Ipv4::parse` checks the header once (version, IHL, total length against the buffer); afterwards the offsets it
//! returns are in bounds. L4 accessors check the length they need before reading. Nothing here panics on any input.

use super::DropReason;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAM_PROBLEM: u8 = 12;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub use crate::bytes::{be16, be32, put16, put32};

/// A checked IPv4 header at offset `off` of a buffer. `end` is where the datagram ends (offset + total length, or
/// the buffer's end for an embedded datagram in an ICMP error, which is usually cut short).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4 {
    pub off: usize,
    pub ihl: usize,
    pub end: usize,
    pub proto: u8,
    pub src: u32,
    pub dst: u32,
    /// Flags and fragment offset field.
    pub frag: u16,
}

impl Ipv4 {
    /// An outer packet: the buffer holds the datagram from its first byte; total length must fit the buffer
    /// (trailing bytes past it are ignored, never touched).
    pub fn parse(b: &[u8]) -> Result<Ipv4, DropReason> {
        if b.len() < 20 {
            return Err(DropReason::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(DropReason::Malformed);
        }
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let total = usize::from(be16(b, 2));
        if ihl < 20 || total < ihl {
            return Err(DropReason::Malformed);
        }
        if total > b.len() {
            return Err(DropReason::Truncated);
        }
        Ok(Ipv4 { off: 0, ihl, end: total, proto: b[9], src: be32(b, 12), dst: be32(b, 16), frag: be16(b, 6) })
    }

    /// A datagram embedded in an ICMP error at `off`, running at most to `limit`: the header must be whole; the
    /// payload may be cut short (RFC 792 guarantees only 8 bytes of it).
    pub fn parse_embedded(b: &[u8], off: usize, limit: usize) -> Option<Ipv4> {
        let h = b.get(off..limit)?;
        if h.len() < 20 || h[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(h[0] & 0x0f) * 4;
        if ihl < 20 || ihl > h.len() {
            return None;
        }
        let total = usize::from(be16(h, 2));
        let end = off + total.clamp(ihl, h.len());
        Some(Ipv4 { off, ihl, end, proto: h[9], src: be32(h, 12), dst: be32(h, 16), frag: be16(h, 6) })
    }

    #[inline]
    pub fn l4_off(&self) -> usize {
        self.off + self.ihl
    }
    #[inline]
    pub fn l4_len(&self) -> usize {
        self.end - self.l4_off()
    }
    /// Fragment offset non-zero: no L4 header in this fragment.
    #[inline]
    pub fn is_later_fragment(&self) -> bool {
        self.frag & 0x1fff != 0
    }
    /// Any fragment (more-fragments set or offset non-zero).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.frag & 0x3fff != 0
    }
}
