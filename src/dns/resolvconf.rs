//! The machine's own resolvers, as upstreams when the config names none: `/etc/resolv.conf`, skipping loopback stub
//! resolvers (systemd-resolved's 127.0.0.53) in favour of the servers behind them, unless nothing else exists.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

/// `nameserver` addresses of a resolv.conf, in order (zone ids of link-local IPv6 are not supported and skipped).
pub fn parse(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()?.parse().ok()).flatten()
        })
        .collect()
}

/// Picks upstreams from the given resolv.conf files (the first is the main one; the others are consulted when it
/// lists only loopback stubs). `exclude` holds our own addresses: answering ourselves would loop.
pub fn system_upstreams(files: &[&Path], exclude: &[IpAddr]) -> Vec<SocketAddr> {
    let mut loopback = Vec::new();
    for f in files {
        let Ok(text) = std::fs::read_to_string(f) else { continue };
        let all: Vec<IpAddr> = parse(&text).into_iter().filter(|ip| !exclude.contains(ip)).collect();
        let real: Vec<SocketAddr> =
            all.iter().filter(|ip| !ip.is_loopback()).map(|ip| SocketAddr::new(*ip, 53)).collect();
        if !real.is_empty() {
            return real;
        }
        loopback.extend(all.into_iter().map(|ip| SocketAddr::new(ip, 53)));
    }
    loopback.dedup();
    loopback
}

/// The files `system_upstreams` reads on a real machine.
pub const SYSTEM_FILES: [&str; 2] = ["/etc/resolv.conf", "/run/systemd/resolve/resolv.conf"];

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("gk-resolv-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn parses_nameservers() {
        let t = "# comment\nsearch lan\nnameserver 192.0.2.1\nnameserver  2001:db8::1 \nnameserver fe80::1%eth0\noptions edns0\n";
        assert_eq!(parse(t), vec!["192.0.2.1".parse::<IpAddr>().unwrap(), "2001:db8::1".parse().unwrap()]);
    }

    #[test]
    fn skips_stub_resolvers_when_the_real_ones_are_known() {
        let stub = tmp("stub", "nameserver 127.0.0.53\n");
        let real = tmp("real", "nameserver 192.0.2.53\n");
        assert_eq!(system_upstreams(&[&stub, &real], &[]), vec!["192.0.2.53:53".parse().unwrap()]);
        // Only a stub exists: better than nothing.
        assert_eq!(system_upstreams(&[&stub, Path::new("/nonexistent")], &[]), vec!["127.0.0.53:53".parse().unwrap()]);
        // Never ourselves.
        let ours = tmp("ours", "nameserver 10.0.0.1\nnameserver 192.0.2.9\n");
        assert_eq!(system_upstreams(&[&ours], &["10.0.0.1".parse().unwrap()]), vec!["192.0.2.9:53".parse().unwrap()]);
        for p in [stub, real, ours] {
            std::fs::remove_file(p).unwrap();
        }
    }
}
