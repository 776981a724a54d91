//! Static leases from `/etc/ethers` (ethers(5)), with host names resolved through `/etc/hosts`.
//!
//! `/etc/ethers`: one `MAC ADDRESS-OR-HOSTNAME` per line; `#` starts a comment; the MAC is six groups of one or two
//! hex digits (any case) separated all by `:` or all by `-`. An IPv4 address gives a static lease with no host name;
//! a host name is resolved by the caller (normally through [`parse_hosts`] of `/etc/hosts`) and gives a static lease
//! named after the name's first label, lowercased (`printer.lan` -> `printer`). A bad line is skipped with a warning
//! (`line N: why`); it never fails the file. Later lines that repeat a MAC or an address already given are skipped
//! with a warning (the first one wins, like a lookup in these files).

use super::lease::StaticLease;
use crate::types::Mac;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// Parses `aa:bb:cc:dd:ee:ff`, `AA-BB-CC-DD-EE-FF` or `8:0:20:1:2:3`.
pub fn parse_mac(s: &str) -> Option<Mac> {
    Mac::parse(s)
}

fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(a, _)| a)
}

/// A host name as in RFC 1123: dot-separated labels of letters, digits and '-', not starting or ending with '-',
/// at most 63 bytes each and 253 in all, and not all digits (that is a malformed address).
fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && !name.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && name.trim_end_matches('.').split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn unusable(ip: Ipv4Addr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("0.0.0.0 cannot be leased")
    } else if ip.is_broadcast() {
        Some("the broadcast address cannot be leased")
    } else if ip.is_multicast() {
        Some("a multicast address cannot be leased")
    } else if ip.is_loopback() {
        Some("a loopback address cannot be leased")
    } else {
        None
    }
}

/// Parses `/etc/ethers` text. `resolve` maps a host name (as written) to its address. Returns the static leases in
/// file order and the warnings (`line N: why`).
pub fn parse_ethers(text: &str, resolve: impl Fn(&str) -> Option<Ipv4Addr>) -> (Vec<StaticLease>, Vec<String>) {
    let mut leases: Vec<StaticLease> = Vec::new();
    let mut warnings = Vec::new();
    let mut by_mac: HashMap<Mac, usize> = HashMap::new();
    let mut by_ip: HashMap<Ipv4Addr, usize> = HashMap::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let fields: Vec<&str> = strip_comment(raw).split_whitespace().collect();
        let (mac_s, what) = match fields[..] {
            [] => continue,
            [m] => {
                warnings.push(format!("line {n}: '{m}' has no address or host name after it"));
                continue;
            }
            [m, w] => (m, w),
            [m, w, ..] => {
                warnings.push(format!("line {n}: extra fields after '{m} {w}' ignored"));
                (m, w)
            }
        };
        let Some(mac) = parse_mac(mac_s) else {
            warnings.push(format!("line {n}: '{mac_s}' is not a MAC address (like aa:bb:cc:dd:ee:ff)"));
            continue;
        };
        if mac.0[0] & 1 != 0 || mac == Mac([0; 6]) {
            warnings.push(format!("line {n}: {mac_s} is not a device's address (multicast or zero)"));
            continue;
        }
        let (ip, hostname) = if let Ok(ip) = what.parse::<Ipv4Addr>() {
            (ip, None)
        } else if !valid_hostname(what) {
            warnings.push(format!("line {n}: '{what}' is neither an IPv4 address nor a valid host name"));
            continue;
        } else {
            match resolve(what) {
                Some(ip) => {
                    let label = what.split('.').next().unwrap_or(what).to_ascii_lowercase();
                    (ip, Some(label))
                }
                None => {
                    warnings.push(format!("line {n}: host name '{what}' has no IPv4 address (not in /etc/hosts?)"));
                    continue;
                }
            }
        };
        if let Some(why) = unusable(ip) {
            warnings.push(format!("line {n}: {ip}: {why}"));
            continue;
        }
        if let Some(&j) = by_mac.get(&mac) {
            warnings.push(format!("line {n}: {mac_s} already has {} (an earlier line); skipped", leases[j].ip));
            continue;
        }
        if by_ip.contains_key(&ip) {
            warnings.push(format!("line {n}: {ip} is already given to another MAC by an earlier line; skipped"));
            continue;
        }
        by_mac.insert(mac, leases.len());
        by_ip.insert(ip, leases.len());
        leases.push(StaticLease { mac, ip, hostname });
    }
    (leases, warnings)
}

/// Parses `/etc/hosts` text into lowercased name -> IPv4 address (IPv6 lines are ignored; the first line naming a
/// host wins, as in a lookup). Malformed lines are ignored.
pub fn parse_hosts(text: &str) -> HashMap<String, Ipv4Addr> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let mut fields = strip_comment(line).split_whitespace();
        let Some(Ok(ip)) = fields.next().map(str::parse::<Ipv4Addr>) else { continue };
        for name in fields {
            map.entry(name.to_ascii_lowercase()).or_insert(ip);
        }
    }
    map
}

/// Reads `ethers` (a missing file is no static lease, silently) and resolves its host names in `hosts` (a missing
/// file resolves nothing). Warnings are prefixed with the file's path.
pub fn read_static_leases(ethers: &Path, hosts: &Path) -> (Vec<StaticLease>, Vec<String>) {
    let ethers_text = match std::fs::read_to_string(ethers) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (Vec::new(), Vec::new()),
        Err(e) => return (Vec::new(), vec![format!("{}: cannot read: {e}", ethers.display())]),
    };
    let mut warnings = Vec::new();
    let hosts_map = match std::fs::read_to_string(hosts) {
        Ok(t) => parse_hosts(&t),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                warnings.push(format!("{}: cannot read: {e}", hosts.display()));
            }
            HashMap::new()
        }
    };
    let (leases, w) = parse_ethers(&ethers_text, |name| hosts_map.get(&name.to_ascii_lowercase()).copied());
    warnings.extend(w.into_iter().map(|w| format!("{}: {w}", ethers.display())));
    (leases, warnings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        let m = Mac([0xaa, 0xbb, 0xcc, 0x0d, 0xee, 0xff]);
        assert_eq!(parse_mac("aa:bb:cc:0d:ee:ff"), Some(m));
        assert_eq!(parse_mac("AA-BB-CC-0D-EE-FF"), Some(m));
        assert_eq!(parse_mac("aa:BB:cc:d:ee:ff"), Some(m));
        assert_eq!(parse_mac("8:0:20:1:2:3"), Some(Mac([8, 0, 0x20, 1, 2, 3])));
        for bad in [
            "",
            "aa:bb:cc:dd:ee",
            "aa:bb:cc:dd:ee:ff:00",
            "aa:bb-cc:dd:ee:ff",
            "aa::cc:dd:ee:ff",
            "aab:b:cc:dd:ee:f",
            "gg:bb:cc:dd:ee:ff",
            "+a:bb:cc:dd:ee:ff",
            "aabbccddeeff",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }

    #[test]
    fn hosts_file() {
        let h = parse_hosts(
            "127.0.0.1 localhost\n# 10.0.0.1 commented\n10.0.0.5   Printer printer.lan  # office\n\
             ::1 localhost ip6-localhost\n10.0.0.6 printer other\nnot-an-ip foo\n\n",
        );
        assert_eq!(h.get("printer"), Some(&Ipv4Addr::new(10, 0, 0, 5)), "first wins, lowercased");
        assert_eq!(h.get("printer.lan"), Some(&Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(h.get("other"), Some(&Ipv4Addr::new(10, 0, 0, 6)));
        assert_eq!(h.get("localhost"), Some(&Ipv4Addr::LOCALHOST));
        assert_eq!(h.get("ip6-localhost"), None);
        assert_eq!(h.get("foo"), None);
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn ethers_file() {
        let text = "\
# static leases
aa:bb:cc:dd:ee:01 10.0.0.10
AA-BB-CC-DD-EE-02   Printer.lan   # resolved through hosts
aa:bb:cc:dd:ee:03 nas extra-field

aa:bb:cc:dd:ee:04
zz:bb:cc:dd:ee:05 10.0.0.11
aa:bb:cc:dd:ee:06 unknown-host
aa:bb:cc:dd:ee:07 10.0.0.256
aa:bb:cc:dd:ee:08 bad_name!
aa:bb:cc:dd:ee:01 10.0.0.12
aa:bb:cc:dd:ee:09 10.0.0.10
01:00:5e:00:00:01 10.0.0.13
aa:bb:cc:dd:ee:0a 255.255.255.255
aa:bb:cc:dd:ee:0b 127.0.0.1
   aa:bb:cc:dd:ee:0c	10.0.0.14	
";
        let hosts = parse_hosts("10.0.0.20 printer.lan printer\n10.0.0.21 nas\n");
        let (leases, warnings) = parse_ethers(text, |n| hosts.get(&n.to_ascii_lowercase()).copied());
        let mac = |b: u8| Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, b]);
        assert_eq!(
            leases,
            vec![
                StaticLease { mac: mac(1), ip: Ipv4Addr::new(10, 0, 0, 10), hostname: None },
                StaticLease { mac: mac(2), ip: Ipv4Addr::new(10, 0, 0, 20), hostname: Some("printer".into()) },
                StaticLease { mac: mac(3), ip: Ipv4Addr::new(10, 0, 0, 21), hostname: Some("nas".into()) },
                StaticLease { mac: mac(0x0c), ip: Ipv4Addr::new(10, 0, 0, 14), hostname: None },
            ]
        );
        let lines: Vec<&str> = warnings.iter().map(|w| w.split(':').next().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "line 4", "line 6", "line 7", "line 8", "line 9", "line 10", "line 11", "line 12", "line 13",
                "line 14", "line 15"
            ],
            "{warnings:#?}"
        );
        assert!(warnings[0].contains("extra fields"), "{}", warnings[0]);
        assert!(warnings[3].contains("not in /etc/hosts"), "{}", warnings[3]);
        assert!(warnings[4].contains("neither an IPv4 address"), "{}", warnings[4]);
    }

    #[test]
    fn files_missing_or_present() {
        let dir = std::env::temp_dir().join(format!("gk-ethers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (e, h) = (dir.join("ethers"), dir.join("hosts"));
        assert_eq!(read_static_leases(&e, &h), (vec![], vec![]));
        std::fs::write(&e, "aa:bb:cc:dd:ee:01 tv\naa:bb:cc:dd:ee:02 ghost\n").unwrap();
        let (l, w) = read_static_leases(&e, &h);
        assert!(l.is_empty());
        assert_eq!(w.len(), 2);
        assert!(w[0].starts_with(&format!("{}: line 1:", e.display())), "{w:?}");
        std::fs::write(&h, "10.1.2.3 TV\n").unwrap();
        let (l, w) = read_static_leases(&e, &h);
        assert_eq!(
            l,
            vec![StaticLease {
                mac: Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 1]),
                ip: Ipv4Addr::new(10, 1, 2, 3),
                hostname: Some("tv".into())
            }]
        );
        assert_eq!(w.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
