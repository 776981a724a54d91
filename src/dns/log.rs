//! Per-device query log (a bounded ring each) and the (device, remote IP) -> name map, for the traffic views.
//!
//! Recording a query allocates nothing once a device's ring is full and its name map has grown: names and answer
//! lists are shared `Arc`s taken from the cache entry, and the name map is two bounded generations that swap
//! (the older one is cleared, keeping its memory), which approximates LRU at O(1).

use super::wire;
pub use crate::types::Device;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

/// One logged query, as the rest of the program reads it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogEntry {
    pub unix_ms: u64,
    pub name: String,
    pub qtype: String,
    pub rcode: String,
    pub latency_ms: u64,
    pub answers: Vec<IpAddr>,
    pub cached: bool,
}

/// Remote addresses remembered per device (both generations together).
pub const NAMES_PER_DEVICE: usize = 2048;

#[derive(Debug, Clone)]
pub struct Logged {
    pub unix_ms: u64,
    pub name: Arc<str>,
    pub qtype: u16,
    pub rcode: u16,
    pub latency_ms: u32,
    pub answers: Arc<[IpAddr]>,
    pub cached: bool,
}

struct DeviceLog {
    ring: VecDeque<Logged>,
    names: HashMap<IpAddr, Arc<str>>,
    old_names: HashMap<IpAddr, Arc<str>>,
    last_used: u64,
}

pub struct QueryLog {
    devices: HashMap<Device, DeviceLog>,
    per_device: usize,
    max_devices: usize,
    clock: u64,
}

impl QueryLog {
    pub fn new(per_device: usize, max_devices: usize) -> QueryLog {
        QueryLog { devices: HashMap::new(), per_device: per_device.max(1), max_devices: max_devices.max(1), clock: 0 }
    }

    fn device(&mut self, d: &Device) -> &mut DeviceLog {
        self.clock += 1;
        if !self.devices.contains_key(d) {
            if self.devices.len() >= self.max_devices {
                // Least recently used device out: O(devices), only when a new device appears.
                if let Some(old) = self.devices.iter().min_by_key(|(_, l)| l.last_used).map(|(k, _)| *k) {
                    self.devices.remove(&old);
                }
            }
            self.devices.insert(
                *d,
                DeviceLog {
                    ring: VecDeque::with_capacity(self.per_device),
                    names: HashMap::new(),
                    old_names: HashMap::new(),
                    last_used: 0,
                },
            );
        }
        let l = self.devices.get_mut(d).expect("inserted above");
        l.last_used = self.clock;
        l
    }

    /// Records a query and, for A/AAAA answers, which name each answer address came from.
    pub fn record(&mut self, d: &Device, e: Logged) {
        let per_device = self.per_device;
        let l = self.device(d);
        if matches!(e.qtype, wire::TYPE_A | wire::TYPE_AAAA) {
            for ip in e.answers.iter() {
                if let Some(n) = l.names.get_mut(ip) {
                    if !Arc::ptr_eq(n, &e.name) {
                        *n = e.name.clone();
                    }
                    continue;
                }
                if l.names.len() >= NAMES_PER_DEVICE / 2 {
                    std::mem::swap(&mut l.names, &mut l.old_names);
                    l.names.clear();
                }
                l.old_names.remove(ip);
                l.names.insert(*ip, e.name.clone());
            }
        }
        if l.ring.len() >= per_device {
            l.ring.pop_front();
        }
        l.ring.push_back(e);
    }

    pub fn entries(&self, d: &Device) -> Vec<LogEntry> {
        let Some(l) = self.devices.get(d) else { return Vec::new() };
        l.ring
            .iter()
            .map(|e| LogEntry {
                unix_ms: e.unix_ms,
                name: e.name.to_string(),
                qtype: type_name(e.qtype),
                rcode: rcode_name(e.rcode),
                latency_ms: u64::from(e.latency_ms),
                answers: e.answers.to_vec(),
                cached: e.cached,
            })
            .collect()
    }

    pub fn devices(&self) -> Vec<Device> {
        let mut v: Vec<(&Device, u64)> = self.devices.iter().map(|(d, l)| (d, l.last_used)).collect();
        v.sort_by_key(|&(_, t)| std::cmp::Reverse(t));
        v.into_iter().map(|(d, _)| *d).collect()
    }

    pub fn name_for(&self, d: &Device, remote: IpAddr) -> Option<&str> {
        let l = self.devices.get(d)?;
        l.names.get(&remote).or_else(|| l.old_names.get(&remote)).map(|n| &**n)
    }
}

pub fn type_name(t: u16) -> String {
    let s = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        43 => "DS",
        46 => "RRSIG",
        47 => "NSEC",
        48 => "DNSKEY",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        257 => "CAA",
        _ => return format!("TYPE{t}"),
    };
    s.to_string()
}

pub fn rcode_name(r: u16) -> String {
    let s = match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        _ => return format!("RCODE{r}"),
    };
    s.to_string()
}
