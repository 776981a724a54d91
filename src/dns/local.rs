//! The local zone (`NAME.lan` from DHCP leases and static hosts, the router's own names, PTR for the LAN subnet)
//! and the special-use names that must never leave the house (RFC 6761, 6303, 6762, 7686, 8375, 9476).
//!
//! Answers are written by hand straight into the reply buffer: the client's question bytes, then at most one
//! record whose owner is a pointer to the question (0xC00C), or an SOA in the authority section whose owner points
//! at the zone apex inside the question name.

use super::wire::{self, Query};
use ipnet::Ipv4Net;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// What a local name resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rdata {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// A wire name.
    Ptr(Vec<u8>),
    Soa,
}

/// The outcome for a local name: RCODE, the record (None: NODATA/NXDOMAIN with SOA), and where the zone apex
/// starts inside the question name (for the SOA owner).
struct Local {
    rcode: u8,
    rdata: Option<Rdata>,
    apex_at: usize,
}

#[derive(Debug, Clone)]
struct Host {
    name: Option<Vec<u8>>,
    mac: Option<crate::types::Mac>,
}

pub struct LocalZone {
    domain: Vec<u8>,
    router_ip: Ipv4Addr,
    router_names: Vec<Vec<u8>>,
    lan_subnet: Ipv4Net,
    ttl: u32,
    by_name: HashMap<Vec<u8>, Ipv4Addr>,
    by_ip: HashMap<Ipv4Addr, Host>,
    special: HashSet<Vec<u8>>,
    localhost: Vec<u8>,
}

/// The special-use zones answered NXDOMAIN (or NODATA at their apex) locally, as dotted names.
pub fn special_zones() -> Vec<String> {
    let mut z: Vec<String> = [
        "invalid",
        "local",
        "onion",
        "alt",
        "home.arpa",
        "0.in-addr.arpa",
        "10.in-addr.arpa",
        "127.in-addr.arpa",
        "254.169.in-addr.arpa",
        "168.192.in-addr.arpa",
        "2.0.192.in-addr.arpa",
        "100.51.198.in-addr.arpa",
        "113.0.203.in-addr.arpa",
        "255.255.255.255.in-addr.arpa",
        "c.f.ip6.arpa",
        "d.f.ip6.arpa",
        "8.e.f.ip6.arpa",
        "9.e.f.ip6.arpa",
        "a.e.f.ip6.arpa",
        "b.e.f.ip6.arpa",
        "8.b.d.0.1.0.0.2.ip6.arpa",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    z.extend((16..=31).map(|n| format!("{n}.172.in-addr.arpa")));
    z.extend((64..=127).map(|n| format!("{n}.100.in-addr.arpa")));
    let zeros = "0.".repeat(31);
    z.push(format!("{zeros}0.ip6.arpa")); // ::
    z.push(format!("1.{zeros}ip6.arpa")); // ::1
    z
}

fn valid_label(l: &[u8]) -> bool {
    !l.is_empty() && l.len() <= 63 && l.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

impl LocalZone {
    pub fn new(domain: &str, router_ip: Ipv4Addr, router_names: &[String], lan_subnet: Ipv4Net, ttl: u32) -> Self {
        LocalZone {
            domain: wire::wire_name(domain),
            router_ip,
            router_names: router_names
                .iter()
                .map(|n| n.to_ascii_lowercase().into_bytes())
                .filter(|n| valid_label(n))
                .collect(),
            lan_subnet,
            ttl,
            by_name: HashMap::new(),
            by_ip: HashMap::new(),
            special: special_zones().iter().map(|z| wire::wire_name(z)).collect(),
            localhost: wire::wire_name("localhost"),
        }
    }

    /// Adds or replaces the host at `ip`. A name that is not a plain label (letters, digits, '-', '_') is ignored;
    /// the newest holder of a name wins it.
    pub fn set_host(&mut self, name: Option<&str>, ip: Ipv4Addr, mac: Option<crate::types::Mac>) {
        self.remove_host(ip);
        let name = name.map(|n| n.to_ascii_lowercase().into_bytes()).filter(|n| valid_label(n));
        if let Some(n) = &name
            && let Some(old_ip) = self.by_name.insert(n.clone(), ip)
            && let Some(h) = self.by_ip.get_mut(&old_ip)
        {
            h.name = None;
        }
        self.by_ip.insert(ip, Host { name, mac });
    }

    pub fn remove_host(&mut self, ip: Ipv4Addr) {
        if let Some(h) = self.by_ip.remove(&ip)
            && let Some(n) = h.name
            && self.by_name.get(&n) == Some(&ip)
        {
            self.by_name.remove(&n);
        }
    }

    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<crate::types::Mac> {
        self.by_ip.get(&ip).and_then(|h| h.mac)
    }

    fn host_name(&self, label: &[u8]) -> Vec<u8> {
        let mut w = Vec::with_capacity(label.len() + 1 + self.domain.len());
        w.push(label.len() as u8);
        w.extend_from_slice(label);
        w.extend_from_slice(&self.domain);
        w
    }

    /// Resolves a lowercased wire name if it is ours to answer; None means: forward it.
    fn resolve(&self, name: &[u8], qtype: u16) -> Option<Local> {
        let answer = |rdata: Rdata, want: &[u16], apex_at: usize| {
            let ok = want.contains(&qtype) || qtype == wire::TYPE_ANY;
            Local { rcode: wire::RCODE_NOERROR, rdata: ok.then_some(rdata), apex_at }
        };
        let nx = |apex_at: usize| Local { rcode: wire::RCODE_NXDOMAIN, rdata: None, apex_at };
        let starts: smallvec_like::Starts = smallvec_like::Starts::of(name);
        let labels = starts.as_slice();

        // The local domain.
        if let Some(k) = labels.iter().position(|&s| name[s..] == self.domain[..]) {
            let apex_at = labels[k];
            return Some(match k {
                0 => answer(Rdata::Soa, &[wire::TYPE_SOA], apex_at),
                1 => {
                    let label = &name[1..apex_at];
                    let ip = if self.router_names.iter().any(|r| r[..] == *label) {
                        Some(self.router_ip)
                    } else {
                        self.by_name.get(label).copied()
                    };
                    match ip {
                        Some(ip) => answer(Rdata::A(ip), &[wire::TYPE_A], apex_at),
                        None => nx(apex_at),
                    }
                }
                _ => nx(apex_at),
            });
        }
        // localhost and below (RFC 6761 6.3).
        if let Some(k) = labels.iter().position(|&s| name[s..] == self.localhost[..]) {
            let apex_at = labels[k];
            let l = match qtype {
                wire::TYPE_AAAA => answer(Rdata::Aaaa(Ipv6Addr::LOCALHOST), &[wire::TYPE_AAAA], apex_at),
                _ => answer(Rdata::A(Ipv4Addr::LOCALHOST), &[wire::TYPE_A], apex_at),
            };
            return Some(l);
        }
        // Reverse names of single IPv4 addresses: the LAN subnet's are ours, 127.0.0.1 is localhost.
        if labels.len() == 6 && name[labels[4]..] == *b"\x07in-addr\x04arpa\x00" {
            let mut o = [0u8; 4];
            let parsed = (0..4).all(|i| {
                let l = &name[labels[i] + 1..labels[i + 1]];
                let v = std::str::from_utf8(l).ok().and_then(|s| s.parse::<u8>().ok());
                v.map(|v| o[3 - i] = v).is_some() && (l.len() == 1 || l[0] != b'0')
            });
            let ip = Ipv4Addr::from(o);
            if parsed && (self.lan_subnet.contains(&ip) || ip == self.router_ip || ip.is_loopback()) {
                let apex_at = self.special_apex(name, labels).unwrap_or(labels[1]);
                let target = if ip == self.router_ip {
                    self.router_names.first().map(|r| self.host_name(r))
                } else if ip == Ipv4Addr::LOCALHOST {
                    Some(self.localhost.clone())
                } else {
                    self.by_ip.get(&ip).and_then(|h| h.name.as_ref()).map(|n| self.host_name(n))
                };
                return Some(match target {
                    Some(t) => answer(Rdata::Ptr(t), &[wire::TYPE_PTR], apex_at),
                    None => nx(apex_at),
                });
            }
        }
        let apex_at = self.special_apex(name, labels)?;
        Some(if apex_at == 0 { answer(Rdata::Soa, &[wire::TYPE_SOA], 0) } else { nx(apex_at) })
    }

    fn special_apex(&self, name: &[u8], labels: &[usize]) -> Option<usize> {
        // The longest match is the most specific zone; any match means local.
        labels.iter().copied().find(|&s| self.special.contains(&name[s..]))
    }

    /// Answers `q` locally into `reply` if its name is local or special-use; returns (rcode, answer addresses).
    /// `name` is the lowercased wire name from the key.
    pub fn answer(&self, msg: &[u8], q: &Query, name: &[u8], reply: &mut Vec<u8>) -> Option<(u8, Option<IpAddr>)> {
        let l = self.resolve(name, q.qtype)?;
        let class_ok = q.qclass == wire::CLASS_IN || q.qclass == 255;
        let rdata = l.rdata.filter(|_| class_ok);
        reply.clear();
        reply.extend_from_slice(&msg[..wire::HEADER_LEN]);
        reply[2] = wire::F2_QR | wire::F2_AA | (msg[2] & wire::F2_RD);
        reply[3] = wire::F3_RA | (msg[3] & wire::F3_CD) | l.rcode;
        let (an, ns) = if rdata.is_some() { (1, 0) } else { (0, 1) };
        reply[4..12].copy_from_slice(&[0, 1, 0, an, 0, ns, 0, q.edns.is_some() as u8]);
        reply.extend_from_slice(q.question(msg));
        let apex_ptr = (0xc000 | (wire::HEADER_LEN + l.apex_at) as u16).to_be_bytes();
        let mut ip = None;
        let rr = |reply: &mut Vec<u8>, owner: &[u8], rtype: u16, ttl: u32| {
            reply.extend_from_slice(owner);
            reply.extend_from_slice(&rtype.to_be_bytes());
            reply.extend_from_slice(&wire::CLASS_IN.to_be_bytes());
            reply.extend_from_slice(&ttl.to_be_bytes());
            reply.extend_from_slice(&[0, 0]); // RDLENGTH, patched
            reply.len()
        };
        let close = |reply: &mut Vec<u8>, at: usize| {
            let len = (reply.len() - at) as u16;
            wire::put16(reply, at - 2, len);
        };
        match rdata {
            Some(Rdata::A(a)) => {
                let at = rr(reply, &[0xc0, 0x0c], wire::TYPE_A, self.ttl);
                reply.extend_from_slice(&a.octets());
                close(reply, at);
                ip = Some(IpAddr::V4(a));
            }
            Some(Rdata::Aaaa(a)) => {
                let at = rr(reply, &[0xc0, 0x0c], wire::TYPE_AAAA, self.ttl);
                reply.extend_from_slice(&a.octets());
                close(reply, at);
                ip = Some(IpAddr::V6(a));
            }
            Some(Rdata::Ptr(t)) => {
                let at = rr(reply, &[0xc0, 0x0c], wire::TYPE_PTR, self.ttl);
                reply.extend_from_slice(&t);
                close(reply, at);
            }
            Some(Rdata::Soa) => {
                let at = rr(reply, &[0xc0, 0x0c], wire::TYPE_SOA, self.ttl);
                self.soa_rdata(reply, apex_ptr);
                close(reply, at);
            }
            None => {
                let at = rr(reply, &apex_ptr, wire::TYPE_SOA, self.ttl);
                self.soa_rdata(reply, apex_ptr);
                close(reply, at);
            }
        }
        if let Some(e) = q.edns {
            push_opt(reply, e.dnssec_ok, 0);
        }
        Some((l.rcode, ip))
    }

    /// MNAME = the apex, RNAME = hostmaster.<apex>, then serial, refresh, retry, expire, minimum (= our TTL).
    fn soa_rdata(&self, reply: &mut Vec<u8>, apex_ptr: [u8; 2]) {
        reply.extend_from_slice(&apex_ptr);
        reply.extend_from_slice(b"\x0ahostmaster");
        reply.extend_from_slice(&apex_ptr);
        for v in [1u32, 3600, 600, 86400, self.ttl] {
            reply.extend_from_slice(&v.to_be_bytes());
        }
    }
}

/// Appends our OPT RR (payload 1232, DO echoed, extended RCODE bits `ext`).
pub fn push_opt(reply: &mut Vec<u8>, dnssec_ok: bool, ext: u8) {
    let p = wire::EDNS_PAYLOAD.to_be_bytes();
    reply.extend_from_slice(&[0, 0, 41, p[0], p[1], ext, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
}

/// Label offsets of a name without allocating (a name has at most 127 labels).
mod smallvec_like {
    pub struct Starts {
        v: [usize; 128],
        n: usize,
    }
    impl Starts {
        pub fn of(name: &[u8]) -> Starts {
            let mut s = Starts { v: [0; 128], n: 0 };
            for at in super::wire::label_starts(name) {
                if s.n < s.v.len() {
                    s.v[s.n] = at;
                    s.n += 1;
                }
            }
            s
        }
        pub fn as_slice(&self) -> &[usize] {
            &self.v[..self.n]
        }
    }
}
