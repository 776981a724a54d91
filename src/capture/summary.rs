//! One line of the live packet view: the remote end, the protocol and a short summary such as `TCP SYN :443`,
//! `DNS A example.test` or `ICMP echo request`. Made only for devices someone is watching, within the view's rate
//! cap. Names from packets are hostile: the DNS name is escaped (`dns::wire::name_to_string`) and cut short, and
//! the page renders all of it as text.

use super::packet::{self, Headers};
use serde::Serialize;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    pub time_us: u64,
    pub dir: &'static str,
    pub remote: Ipv4Addr,
    /// The remote's name from the device's own lookups (filled in by the web layer).
    pub name: Option<String>,
    pub proto: &'static str,
    pub len: u32,
    pub summary: String,
    pub origin: &'static str,
    /// Lines left out just before this one by the rate cap.
    pub skipped: u64,
}

fn dns_type(t: u16) -> String {
    match t {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        t => format!("TYPE{t}"),
    }
}

/// `DNS A example.test`, `DNS answer A example.test (2)`, or `DNS` when the message does not parse.
fn dns(m: &[u8]) -> String {
    let parsed = (|| {
        let flags = u16::from_be_bytes([*m.get(2)?, *m.get(3)?]);
        let answers = u16::from_be_bytes([*m.get(6)?, *m.get(7)?]);
        let end = crate::dns::wire::skip_name(m, 12).ok()?;
        let qtype = u16::from_be_bytes([*m.get(end)?, *m.get(end + 1)?]);
        let mut name = crate::dns::wire::name_to_string(&m[12..end]);
        if name.len() > 80 {
            name.truncate(80);
            name.push('…');
        }
        let t = dns_type(qtype);
        Some(if flags & 0x8000 == 0 {
            format!("DNS {t} {name}")
        } else {
            let rcode = flags & 15;
            let outcome = match rcode {
                0 => format!("({answers})"),
                3 => "NXDOMAIN".into(),
                2 => "SERVFAIL".into(),
                5 => "REFUSED".into(),
                n => format!("rcode {n}"),
            };
            format!("DNS answer {t} {name} {outcome}")
        })
    })();
    parsed.unwrap_or_else(|| "DNS".into())
}

fn dhcp(m: &[u8]) -> String {
    let kind = (|| {
        if m.get(236..240)? != [99, 130, 83, 99] {
            return None;
        }
        let mut at = 240;
        loop {
            let code = *m.get(at)?;
            if code == 255 {
                return None;
            }
            if code == 0 {
                at += 1;
                continue;
            }
            let len = usize::from(*m.get(at + 1)?);
            if code == 53 {
                return m.get(at + 2).copied();
            }
            at += 2 + len;
        }
    })();
    let name = match kind {
        Some(1) => "DISCOVER",
        Some(2) => "OFFER",
        Some(3) => "REQUEST",
        Some(4) => "DECLINE",
        Some(5) => "ACK",
        Some(6) => "NAK",
        Some(7) => "RELEASE",
        Some(8) => "INFORM",
        _ => "",
    };
    if name.is_empty() { "DHCP".into() } else { format!("DHCP {name}") }
}

fn tcp_flags(f: u8) -> String {
    let names = [(0x02, "SYN"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH"), (0x10, "ACK")];
    let v: Vec<&str> = names.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    v.join(" ")
}

fn icmp(t: u8, code: u8) -> String {
    match t {
        0 => "ICMP echo reply".into(),
        8 => "ICMP echo request".into(),
        3 => format!("ICMP unreachable (code {code})"),
        11 => "ICMP time exceeded".into(),
        t => format!("ICMP type {t}"),
    }
}

/// The line for a stored packet that went `up` (from the device) or down.
pub fn line(data: &[u8], len: u32, up: bool, time_us: u64, origin: &'static str) -> Line {
    let h: Option<Headers> = packet::headers(data);
    let (remote, remote_port) = match h {
        Some(h) if up => (h.dst, h.dport),
        Some(h) => (h.src, h.sport),
        None => (Ipv4Addr::UNSPECIFIED, 0),
    };
    let (proto, summary) = match h {
        None => ("?", "not an IPv4 packet".to_string()),
        Some(h) => {
            let payload = h.payload.and_then(|p| data.get(p..)).unwrap_or(&[]);
            match h.proto {
                packet::TCP => ("TCP", format!("TCP {} :{remote_port}", tcp_flags(h.tcp_flags)).replace("  ", " ")),
                packet::UDP if h.sport == 53 || h.dport == 53 => ("DNS", dns(payload)),
                packet::UDP if [67, 68].contains(&h.sport) && [67, 68].contains(&h.dport) => ("DHCP", dhcp(payload)),
                packet::UDP => ("UDP", format!("UDP :{remote_port}")),
                packet::ICMP => ("ICMP", h.icmp.map_or("ICMP".into(), |(t, c)| icmp(t, c))),
                p => ("IP", format!("IP protocol {p}")),
            }
        }
    };
    Line { time_us, dir: if up { "out" } else { "in" }, remote, name: None, proto, len, summary, origin, skipped: 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        crate::capture::frame::udp(src.into(), sport, dst.into(), dport, payload)
    }

    #[test]
    fn summaries() {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend(crate::dns::wire::wire_name("example.test"));
        q.extend([0, 1, 0, 1]);
        let p = udp([10, 0, 0, 5], 5000, [10, 0, 0, 1], 53, &q);
        let l = line(&p, p.len() as u32, true, 1, "dns");
        assert_eq!((l.remote, l.proto, l.summary.as_str()), (Ipv4Addr::new(10, 0, 0, 1), "DNS", "DNS A example.test"));
        q[2] = 0x81;
        q[7] = 1;
        let p = udp([10, 0, 0, 1], 53, [10, 0, 0, 5], 5000, &q);
        assert_eq!(line(&p, 0, false, 1, "dns").summary, "DNS answer A example.test (1)");
        let mut syn = vec![0u8; 40];
        syn[0] = 0x45;
        syn[9] = 6;
        syn[16..20].copy_from_slice(&[203, 0, 113, 1]);
        syn[22..24].copy_from_slice(&443u16.to_be_bytes());
        syn[32] = 0x50;
        syn[33] = 0x02;
        assert_eq!(line(&syn, 40, true, 1, "nat").summary, "TCP SYN :443");
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..400), up in any::<bool>()) {
            let _ = line(&b, 0, up, 0, "nat");
        }
    }
}
