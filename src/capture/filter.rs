//! A download's window and filters, from its query string: `from` and `to` (Unix ms, either end open),
//! `remote=IP` (either address of the packet), `port=N` (either port), `proto=tcp|udp|icmp`. Anything else, or a
//! value that does not parse, is an error that says which parameter and what was expected.

use super::packet::{self, Headers};
use super::ring::PacketRef;
use std::net::Ipv4Addr;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub from_ms: Option<u64>,
    pub to_ms: Option<u64>,
    pub remote: Option<Ipv4Addr>,
    pub port: Option<u16>,
    pub proto: Option<u8>,
}

impl Filter {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Filter, String> {
        let mut f = Filter::default();
        for (k, v) in pairs {
            let shown: String = v.chars().take(40).collect();
            let bad = |what: &str| format!("{k}={shown:?} is not {what}");
            match k {
                "from" => f.from_ms = Some(v.parse().map_err(|_| bad("a time (Unix milliseconds)"))?),
                "to" => f.to_ms = Some(v.parse().map_err(|_| bad("a time (Unix milliseconds)"))?),
                "remote" => f.remote = Some(v.parse().map_err(|_| bad("an IPv4 address"))?),
                "port" => f.port = Some(v.parse().map_err(|_| bad("a port (0-65535)"))?),
                "proto" => {
                    f.proto = Some(match v.to_ascii_lowercase().as_str() {
                        "tcp" => packet::TCP,
                        "udp" => packet::UDP,
                        "icmp" => packet::ICMP,
                        _ => return Err(bad("a protocol (tcp, udp or icmp)")),
                    })
                }
                _ => {
                    let k: String = k.chars().take(40).collect();
                    return Err(format!("unknown parameter {k:?}; expected from, to, remote, port or proto"));
                }
            }
        }
        if let (Some(a), Some(b)) = (f.from_ms, f.to_ms)
            && a > b
        {
            return Err(format!("from={a} is after to={b}"));
        }
        Ok(f)
    }

    /// Whether only the window is set (no need to read the packets' headers).
    fn window_only(&self) -> bool {
        self.remote.is_none() && self.port.is_none() && self.proto.is_none()
    }

    pub fn matches(&self, p: &PacketRef<'_>) -> bool {
        let ms = p.time_us / 1000;
        if self.from_ms.is_some_and(|f| ms < f) || self.to_ms.is_some_and(|t| ms > t) {
            return false;
        }
        if self.window_only() {
            return true;
        }
        let Some(h) = packet::headers(p.data) else { return false };
        self.matches_headers(&h)
    }

    fn matches_headers(&self, h: &Headers) -> bool {
        self.remote.is_none_or(|r| h.src == r || h.dst == r)
            && self.port.is_none_or(|n| h.sport == n || h.dport == n)
            && self.proto.is_none_or(|p| h.proto == p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_refuses_with_reasons() {
        let f = Filter::from_pairs([("from", "5"), ("remote", "203.0.113.1"), ("proto", "TCP"), ("port", "443")]);
        assert_eq!(
            f.unwrap(),
            Filter {
                from_ms: Some(5),
                to_ms: None,
                remote: Some(Ipv4Addr::new(203, 0, 113, 1)),
                port: Some(443),
                proto: Some(packet::TCP)
            }
        );
        assert!(Filter::from_pairs([("port", "70000")]).unwrap_err().contains("port"));
        assert!(Filter::from_pairs([("remote", "::1")]).unwrap_err().contains("IPv4"));
        assert!(Filter::from_pairs([("x", "1")]).unwrap_err().contains("unknown parameter"));
        assert!(Filter::from_pairs([("from", "9"), ("to", "3")]).unwrap_err().contains("after"));
    }

    proptest! {
        /// Any query: a filter or an error of bounded length that names the parameter, never a panic.
        #[test]
        fn any_query_parses_or_says_why(pairs in proptest::collection::vec(("\\PC{0,12}", "\\PC{0,60}"), 0..6)) {
            match Filter::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
                Ok(_) => {}
                Err(e) => prop_assert!(!e.is_empty() && e.len() < 400, "{e}"),
            }
        }

        /// Any stored bytes, any filter: an answer, never a panic.
        #[test]
        fn matching_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64), port in any::<u16>()) {
            let f = Filter { port: Some(port), ..Filter::default() };
            let p = PacketRef { time_us: 0, len: 0, direction: super::super::ring::Direction::Out,
                origin: super::super::ring::Origin::Nat, data: &data };
            let _ = f.matches(&p);
        }
    }
}
