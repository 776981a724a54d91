//! IPv4 + UDP packets for the router's own exchanges with a device (its DNS queries and answers, its DHCP
//! messages): those never cross the NAT, so the DNS and DHCP shells, which see only the datagrams, have them
//! framed here with the addresses and ports they really had, and correct lengths and checksums, for the
//! device's ring.

use crate::nat::checksum::{fold, pseudo_header, sum};
use std::net::Ipv4Addr;

/// A UDP datagram in an IPv4 packet (TTL 64, don't fragment); the payload is cut at 65,507 bytes.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(65_507)];
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = !fold(sum(&p[..20], 0));
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    let acc = pseudo_header(u32::from(src), u32::from(dst), 17, udp_len);
    let mut c = !fold(sum(&p[20..], acc));
    if c == 0 {
        c = 0xffff; // UDP: zero means "no checksum"
    }
    p[26..28].copy_from_slice(&c.to_be_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify() {
        let p = udp(Ipv4Addr::new(10, 0, 0, 5), 5353, Ipv4Addr::new(10, 0, 0, 1), 53, b"hello");
        assert_eq!(p.len(), 33);
        assert_eq!(fold(sum(&p[..20], 0)), 0xffff, "IP header sums to all ones");
        let acc = pseudo_header(0x0a00_0005, 0x0a00_0001, 17, 13);
        assert_eq!(fold(sum(&p[20..], acc)), 0xffff, "UDP checksum verifies");
    }
}
