//! Every device's ring, sans IO: packets come in with the device's address (from the packet path's taps) or its
//! MAC (DHCP), are stored in that device's [`Ring`] as its settings say (ring size, 0 = not captured; snap
//! length; paused), and the admin pauses, resumes, clears and downloads them. A device is its MAC: its address is
//! looked up in the hosts table's copy kept here, so a device keeps its ring across address changes. A ring is
//! allocated on the device's first packet and freed when the device is forgotten; all rings together stay under
//! a total budget (a new ring beyond it is refused and counted).

use super::ring::{Direction, Origin, Ring, Snapshot};
use crate::counters::Counters;
use crate::types::Mac;
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Debug, Clone)]
pub struct CaptureConfig {
    /// Each device's ring, bytes (0 = capture off).
    pub ring_bytes: usize,
    /// Bytes kept of each packet (0 = all).
    pub snap: usize,
    /// Per device: its ring size and snap length, where they differ from the defaults.
    pub devices: HashMap<Mac, (Option<usize>, Option<usize>)>,
    pub total_bytes: usize,
}

/// Whose packet it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Ip(Ipv4Addr),
    Mac(Mac),
}

struct Device {
    ring: Ring,
    snap: usize,
    paused: bool,
}

/// A device's capture, as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Status {
    pub enabled: bool,
    pub paused: bool,
    pub ring_bytes: usize,
    pub used_bytes: usize,
    pub packets: usize,
    pub evicted: u64,
    pub oldest_us: Option<u64>,
    pub newest_us: Option<u64>,
    pub snap: usize,
}

#[derive(Default)]
struct Stats {
    stored: u64,
    unknown_device: u64,
    not_captured: u64,
    paused: u64,
    over_budget: u64,
    too_big: u64,
}

pub struct Captures {
    cfg: CaptureConfig,
    devices: HashMap<Mac, Device>,
    /// Paused before the device's ring existed (or while it did not).
    paused: std::collections::HashSet<Mac>,
    by_ip: HashMap<Ipv4Addr, Mac>,
    /// The last address looked up and its device: packets come in runs of one device's (a batch of a flow), so
    /// most skip the table.
    last: Option<(Ipv4Addr, Mac)>,
    memory: usize,
    stats: Stats,
}

impl Captures {
    pub fn new(cfg: CaptureConfig) -> Captures {
        Captures {
            cfg,
            devices: HashMap::new(),
            paused: Default::default(),
            by_ip: HashMap::new(),
            last: None,
            memory: 0,
            stats: Stats::default(),
        }
    }

    pub fn set_host(&mut self, ip: Ipv4Addr, mac: Mac) {
        self.by_ip.insert(ip, mac);
        self.last = None;
    }

    /// The address is nobody's now (a lease ended): the device keeps its ring, it is just not found by this address.
    pub fn remove_host(&mut self, ip: Ipv4Addr) {
        self.by_ip.remove(&ip);
        self.last = None;
    }

    pub fn set_hosts(&mut self, all: impl IntoIterator<Item = (Ipv4Addr, Mac)>) {
        self.by_ip = all.into_iter().collect();
        self.last = None;
    }

    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.by_ip.get(&ip).copied()
    }

    /// The device's address now (a scan: asked once per download).
    pub fn ip_of(&self, mac: &Mac) -> Option<Ipv4Addr> {
        self.by_ip.iter().find(|(_, m)| *m == mac).map(|(ip, _)| *ip)
    }

    fn settings(&self, mac: &Mac) -> (usize, usize) {
        let (ring, snap) = self.cfg.devices.get(mac).copied().unwrap_or_default();
        (ring.unwrap_or(self.cfg.ring_bytes), snap.unwrap_or(self.cfg.snap))
    }

    /// Stores a packet (`data`, the first bytes of one `len` bytes long) for the device `key` names; returns the
    /// device when it was stored.
    pub fn push(
        &mut self,
        key: Key,
        time_us: u64,
        dir: Direction,
        origin: Origin,
        data: &[u8],
        len: u32,
    ) -> Option<Mac> {
        let mac = match key {
            Key::Mac(m) => m,
            Key::Ip(ip) => match self.last {
                Some((last, m)) if last == ip => m,
                _ => match self.by_ip.get(&ip) {
                    Some(m) => {
                        self.last = Some((ip, *m));
                        *m
                    }
                    None => {
                        self.stats.unknown_device += 1;
                        return None;
                    }
                },
            },
        };
        if let Some(d) = self.devices.get_mut(&mac) {
            return Self::store(&mut self.stats, d, mac, time_us, dir, origin, data, len);
        }
        let (bytes, snap) = self.settings(&mac);
        if bytes == 0 {
            self.stats.not_captured += 1;
            return None;
        }
        if self.memory + bytes > self.cfg.total_bytes {
            self.stats.over_budget += 1;
            return None;
        }
        self.memory += bytes;
        let paused = self.paused.contains(&mac);
        let d = self.devices.entry(mac).or_insert(Device { ring: Ring::new(bytes), snap, paused });
        Self::store(&mut self.stats, d, mac, time_us, dir, origin, data, len)
    }

    #[allow(clippy::too_many_arguments)]
    fn store(
        stats: &mut Stats,
        d: &mut Device,
        mac: Mac,
        time_us: u64,
        dir: Direction,
        origin: Origin,
        data: &[u8],
        len: u32,
    ) -> Option<Mac> {
        if d.paused {
            stats.paused += 1;
            return None;
        }
        if d.ring.push_cut(time_us, dir, origin, data, len, d.snap) {
            stats.stored += 1;
            Some(mac)
        } else {
            stats.too_big += 1;
            None
        }
    }

    pub fn status(&self, mac: &Mac) -> Status {
        let (bytes, snap) = self.settings(mac);
        let paused = self.paused.contains(mac);
        let Some(d) = self.devices.get(mac) else {
            return Status { enabled: bytes > 0, paused, ring_bytes: bytes, snap, ..Status::default() };
        };
        let span = d.ring.span_us();
        Status {
            enabled: true,
            paused: d.paused,
            ring_bytes: d.ring.capacity(),
            used_bytes: d.ring.used(),
            packets: d.ring.len(),
            evicted: d.ring.evicted,
            oldest_us: span.map(|s| s.0),
            newest_us: span.map(|s| s.1),
            snap: d.snap,
        }
    }

    /// A copy of the device's ring now, if it has one.
    pub fn snapshot(&self, mac: &Mac) -> Option<Snapshot> {
        self.devices.get(mac).map(|d| d.ring.snapshot())
    }

    pub fn set_paused(&mut self, mac: Mac, paused: bool) {
        if paused {
            self.paused.insert(mac);
        } else {
            self.paused.remove(&mac);
        }
        if let Some(d) = self.devices.get_mut(&mac) {
            d.paused = paused;
        }
    }

    pub fn clear(&mut self, mac: &Mac) {
        if let Some(d) = self.devices.get_mut(mac) {
            d.ring.clear();
        }
    }

    /// The device is gone for good: its ring is freed.
    pub fn forget(&mut self, mac: &Mac) {
        if let Some(d) = self.devices.remove(mac) {
            self.memory -= d.ring.capacity();
        }
        self.paused.remove(mac);
    }

    /// Bytes allocated for rings now.
    pub fn memory(&self) -> usize {
        self.memory
    }

    pub fn counters(&self) -> Counters {
        let s = &self.stats;
        let mut c = Counters::default();
        c.counter("stored", s.stored)
            .counter("unknown_device", s.unknown_device)
            .counter("not_captured", s.not_captured)
            .counter("paused", s.paused)
            .counter("over_budget", s.over_budget)
            .counter("too_big", s.too_big)
            .gauge("rings", self.devices.len() as u64)
            .gauge("ring_memory_bytes", self.memory as u64);
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ring: usize, total: usize) -> CaptureConfig {
        CaptureConfig { ring_bytes: ring, snap: 0, devices: HashMap::new(), total_bytes: total }
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 5);

    #[test]
    fn packets_find_their_device_by_address_and_the_ring_follows_the_mac() {
        let mac: Mac = "02:00:00:00:00:05".parse().unwrap();
        let mut c = Captures::new(cfg(1000, 10_000));
        assert_eq!(c.push(Key::Ip(A), 1, Direction::Out, Origin::Nat, &[1; 10], 10), None, "unknown yet");
        c.set_host(A, mac);
        assert_eq!(c.push(Key::Ip(A), 2, Direction::Out, Origin::Nat, &[1; 10], 10), Some(mac));
        // A new address: same ring.
        c.remove_host(A);
        c.set_host(Ipv4Addr::new(10, 0, 0, 9), mac);
        c.push(Key::Ip(Ipv4Addr::new(10, 0, 0, 9)), 3, Direction::In, Origin::Nat, &[2; 10], 10);
        c.push(Key::Mac(mac), 4, Direction::In, Origin::Dhcp, &[3; 10], 10);
        let s = c.status(&mac);
        assert_eq!((s.packets, s.oldest_us, s.newest_us, c.memory()), (3, Some(2), Some(4), 1000));
        c.set_paused(mac, true);
        assert_eq!(c.push(Key::Mac(mac), 5, Direction::In, Origin::Nat, &[3; 10], 10), None);
        c.set_paused(mac, false);
        c.clear(&mac);
        assert_eq!(c.status(&mac).packets, 0);
        c.forget(&mac);
        assert_eq!((c.memory(), c.status(&mac).packets), (0, 0));
    }

    #[test]
    fn per_device_settings_and_the_total_budget() {
        let a: Mac = "02:00:00:00:00:01".parse().unwrap();
        let b: Mac = "02:00:00:00:00:02".parse().unwrap();
        let off: Mac = "02:00:00:00:00:03".parse().unwrap();
        let mut cfg = cfg(600, 1000);
        cfg.devices.insert(off, (Some(0), None));
        cfg.devices.insert(b, (None, Some(64)));
        let mut c = Captures::new(cfg);
        assert!(c.push(Key::Mac(off), 1, Direction::Out, Origin::Nat, &[0; 10], 10).is_none());
        assert!(c.push(Key::Mac(a), 1, Direction::Out, Origin::Nat, &[0; 10], 10).is_some());
        // b would take the total to 1200 > 1000.
        assert!(c.push(Key::Mac(b), 1, Direction::Out, Origin::Nat, &[0; 100], 100).is_none());
        c.forget(&a);
        assert!(c.push(Key::Mac(b), 1, Direction::Out, Origin::Nat, &[0; 100], 100).is_some());
        let p = c.snapshot(&b).unwrap();
        let p = p.iter().next().unwrap();
        assert_eq!((p.len, p.data.len()), (100, 64));
        let counters = format!("{:?}", c.counters());
        assert!(counters.contains("over_budget"), "{counters}");
    }
}
