//! Just enough of a stored IPv4 packet to filter a download and to summarize a line of the live view: addresses,
//! protocol, ports, TCP flags, the ICMP type and where the payload starts. Stored packets may be cut short (the
//! snap length) or be anything a device sent, so every read is bounds-checked and a short packet reads as what it
//! has.

use std::net::Ipv4Addr;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    /// TCP/UDP ports (0 when not known: another protocol, a later fragment, a cut header).
    pub sport: u16,
    pub dport: u16,
    /// TCP flags byte, or the ICMP type and code.
    pub tcp_flags: u8,
    pub icmp: Option<(u8, u8)>,
    /// Where the transport payload starts (TCP/UDP), if it is in the stored bytes.
    pub payload: Option<usize>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The headers of an IPv4 packet, or `None` when even its IP header is not there.
pub fn headers(b: &[u8]) -> Option<Headers> {
    if b.len() < 20 || b[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(b[0] & 15) * 4;
    if ihl < 20 {
        return None;
    }
    let mut h = Headers {
        src: Ipv4Addr::new(b[12], b[13], b[14], b[15]),
        dst: Ipv4Addr::new(b[16], b[17], b[18], b[19]),
        proto: b[9],
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp: None,
        payload: None,
    };
    let first_fragment = u16::from_be_bytes([b[6], b[7]]) & 0x1fff == 0;
    if !first_fragment {
        return Some(h);
    }
    match h.proto {
        TCP | UDP => {
            h.sport = u16_at(b, ihl).unwrap_or(0);
            h.dport = u16_at(b, ihl + 2).unwrap_or(0);
            if h.proto == TCP {
                h.tcp_flags = b.get(ihl + 13).copied().unwrap_or(0);
                let off = b.get(ihl + 12).map(|o| usize::from(o >> 4) * 4);
                h.payload = off.filter(|&o| o >= 20).map(|o| ihl + o).filter(|&p| p <= b.len());
            } else {
                h.payload = Some(ihl + 8).filter(|&p| p <= b.len());
            }
        }
        ICMP => h.icmp = Some((*b.get(ihl)?, b.get(ihl + 1).copied().unwrap_or(0))),
        _ => {}
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_a_tcp_syn_and_a_cut_udp_header() {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[9] = TCP;
        p[12..16].copy_from_slice(&[10, 0, 0, 5]);
        p[16..20].copy_from_slice(&[203, 0, 113, 1]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&443u16.to_be_bytes());
        p[32] = 5 << 4;
        p[33] = 0x02;
        let h = headers(&p).unwrap();
        assert_eq!((h.sport, h.dport, h.tcp_flags, h.payload), (40000, 443, 0x02, Some(40)));
        p[9] = UDP;
        let h = headers(&p[..23]).unwrap();
        assert_eq!((h.sport, h.dport, h.payload), (40000, 0, None));
        assert!(headers(&p[..19]).is_none());
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = headers(&b);
        }
    }
}
