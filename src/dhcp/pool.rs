//! One address pool (the LAN's, or a relayed subnet's): its subnet, its dynamic range and the set of free addresses.
//!
//! Free addresses live in an ordered set, so taking one is O(log n) whatever the number of leases held.
//! Invariant kept by the server: an address of the range is in `free` iff it is not leased, offered, declined,
//! static, the server's own address, or the subnet's network/broadcast address.

use ipnet::Ipv4Net;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct Pool {
    pub subnet: Ipv4Net,
    /// Inclusive bounds of the dynamic range.
    pub start: u32,
    pub end: u32,
    /// Option 3 for this pool's clients.
    pub router: Ipv4Addr,
    free: BTreeSet<u32>,
}

impl Pool {
    /// A pool whose whole range is free except the addresses `reserved` says no to.
    pub fn new(
        subnet: Ipv4Net,
        range: (Ipv4Addr, Ipv4Addr),
        router: Ipv4Addr,
        reserved: impl Fn(Ipv4Addr) -> bool,
    ) -> Pool {
        let (start, end) = (u32::from(range.0), u32::from(range.1));
        let mut pool = Pool { subnet, start, end, router, free: BTreeSet::new() };
        pool.free = (start..=end).filter(|&a| pool.usable(a.into()) && !reserved(a.into())).collect();
        pool
    }

    pub fn in_range(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&u32::from(ip))
    }

    /// In the range and not the subnet's network or broadcast address.
    pub fn usable(&self, ip: Ipv4Addr) -> bool {
        self.in_range(ip)
            && (self.subnet.prefix_len() >= 31 || (ip != self.subnet.network() && ip != self.subnet.broadcast()))
    }

    pub fn is_free(&self, ip: Ipv4Addr) -> bool {
        self.free.contains(&u32::from(ip))
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Takes `ip` out of the free set; false if it was not free.
    pub fn take(&mut self, ip: Ipv4Addr) -> bool {
        self.free.remove(&u32::from(ip))
    }

    /// Puts `ip` back into the free set if it belongs there (the caller vouches it is not static or declined).
    pub fn put(&mut self, ip: Ipv4Addr) {
        if self.usable(ip) {
            self.free.insert(ip.into());
        }
    }

    /// Takes a free address, starting the search at a point derived from `seed` so that a client tends to get the
    /// same address from one run to the next, and clients spread over the range.
    pub fn take_any(&mut self, seed: &[u8]) -> Option<Ipv4Addr> {
        let span = u64::from(self.end - self.start) + 1;
        let from = self.start + (fnv1a(seed) % span) as u32;
        let ip = self.free.range(from..).next().or_else(|| self.free.iter().next()).copied()?;
        self.free.remove(&ip);
        Some(ip.into())
    }
}

fn fnv1a(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| (h ^ u64::from(x)).wrapping_mul(0x100000001b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_reserved_network_and_broadcast() {
        let net: Ipv4Net = "10.0.0.0/29".parse().unwrap();
        let mut p = Pool::new(net, ([10, 0, 0, 0].into(), [10, 0, 0, 7].into()), [10, 0, 0, 1].into(), |ip| {
            ip == Ipv4Addr::new(10, 0, 0, 1)
        });
        assert_eq!(p.free_count(), 5);
        let mut got = Vec::new();
        while let Some(ip) = p.take_any(b"x") {
            got.push(ip);
        }
        got.sort();
        assert_eq!(got, (2..=6).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect::<Vec<_>>());
        p.put([10, 0, 0, 7].into()); // broadcast never becomes free
        assert!(p.take_any(b"x").is_none());
        p.put([10, 0, 0, 4].into());
        assert!(p.is_free([10, 0, 0, 4].into()));
        assert!(p.take([10, 0, 0, 4].into()));
        assert!(!p.take([10, 0, 0, 4].into()));
    }
}
