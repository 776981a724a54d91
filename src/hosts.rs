//! The hosts table: every LAN device the router knows by address, from static leases (the config file and
//! `/etc/ethers`) and from DHCP leases. DHCP owns it and is its only writer ([`HostsWriter`]); DNS (the `NAME.lan`
//! zone), traffic, capture and the UI read it through [`Hosts`]: a snapshot, then every change in order.
//!
//! A static host is in the table from the start, leased or not, so its name resolves before it ever asks for an
//! address; when its lease ends it goes back to its static entry instead of disappearing.

use crate::types::Mac;
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use tokio::sync::broadcast;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A fixed address from the config file or /etc/ethers, not (or not yet) leased.
    Static,
    /// A DHCP lease (for a static host too, once it took its address).
    Lease,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub ip: Ipv4Addr,
    pub mac: Mac,
    /// Already sanitized (a valid DNS label), or none.
    pub name: Option<String>,
    pub source: Source,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The address now belongs to this host (new, or its name or MAC changed).
    Set(Host),
    /// Nobody holds the address any more.
    Removed(Ipv4Addr),
}

/// Changes kept for slow readers; one that falls further behind re-reads the whole table (see [`Subscription`]).
const BACKLOG: usize = 4096;

struct Inner {
    by_ip: RwLock<Table>,
}

struct Table {
    hosts: HashMap<Ipv4Addr, Host>,
    statics: HashMap<Ipv4Addr, Host>,
    /// Dropped with the writer, which ends every subscription.
    changes: Option<broadcast::Sender<Change>>,
}

impl Table {
    /// Sent under the write lock, so a subscriber's snapshot and its changes never disagree.
    fn send(&self, c: Change) {
        if let Some(tx) = &self.changes {
            let _ = tx.send(c); // no subscriber yet is fine
        }
    }
}

/// The read side; cheap to clone.
#[derive(Clone)]
pub struct Hosts(Arc<Inner>);

/// The write side, held by DHCP alone.
pub struct HostsWriter(Arc<Inner>);

pub fn table(statics: impl IntoIterator<Item = Host>) -> (HostsWriter, Hosts) {
    let (changes, _) = broadcast::channel(BACKLOG);
    let mut t = Table { hosts: HashMap::new(), statics: HashMap::new(), changes: Some(changes) };
    for mut h in statics {
        h.source = Source::Static;
        t.statics.insert(h.ip, h.clone());
        t.hosts.insert(h.ip, h);
    }
    let inner = Arc::new(Inner { by_ip: RwLock::new(t) });
    (HostsWriter(inner.clone()), Hosts(inner))
}

impl Inner {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.by_ip.read().unwrap_or_else(|e| e.into_inner())
    }
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.by_ip.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl HostsWriter {
    /// A lease was granted or renewed.
    pub fn leased(&self, ip: Ipv4Addr, mac: Mac, name: Option<String>) {
        let host = Host { ip, mac, name, source: Source::Lease };
        let mut t = self.0.write();
        if t.hosts.get(&ip) == Some(&host) {
            return; // a renewal that changes nothing
        }
        t.hosts.insert(ip, host.clone());
        t.send(Change::Set(host));
    }

    /// A lease was released or expired: a static host goes back to its static entry, any other is removed.
    pub fn ended(&self, ip: Ipv4Addr) {
        let mut t = self.0.write();
        let change = match t.statics.get(&ip).cloned() {
            Some(s) => {
                if t.hosts.get(&ip) == Some(&s) {
                    return;
                }
                t.hosts.insert(ip, s.clone());
                Change::Set(s)
            }
            None => {
                if t.hosts.remove(&ip).is_none() {
                    return;
                }
                Change::Removed(ip)
            }
        };
        t.send(change);
    }

    /// A static host (new, or its address or name changed): it takes its address now unless that is leased.
    pub fn set_static(&self, mut host: Host) {
        host.source = Source::Static;
        let mut t = self.0.write();
        let old: Vec<Ipv4Addr> =
            t.statics.values().filter(|h| h.mac == host.mac && h.ip != host.ip).map(|h| h.ip).collect();
        for ip in old {
            t.statics.remove(&ip);
            if t.hosts.get(&ip).is_some_and(|h| h.source == Source::Static) {
                t.hosts.remove(&ip);
                t.send(Change::Removed(ip));
            }
        }
        t.statics.insert(host.ip, host.clone());
        let leased = t.hosts.get(&host.ip).is_some_and(|h| h.source == Source::Lease && h.mac == host.mac);
        if !leased && t.hosts.get(&host.ip) != Some(&host) {
            t.hosts.insert(host.ip, host.clone());
            t.send(Change::Set(host));
        }
    }

    /// `mac` has no static address any more (its lease, if any, stays until it ends).
    pub fn remove_static(&self, mac: Mac) {
        let mut t = self.0.write();
        let ips: Vec<Ipv4Addr> = t.statics.values().filter(|h| h.mac == mac).map(|h| h.ip).collect();
        for ip in ips {
            t.statics.remove(&ip);
            if t.hosts.get(&ip).is_some_and(|h| h.source == Source::Static) {
                t.hosts.remove(&ip);
                t.send(Change::Removed(ip));
            }
        }
    }

    /// Every entry of `mac` (leased or static) is now named `name`.
    pub fn rename(&self, mac: Mac, name: Option<String>) {
        let mut t = self.0.write();
        for h in t.statics.values_mut().filter(|h| h.mac == mac) {
            h.name = name.clone();
        }
        let changed: Vec<Host> = t
            .hosts
            .values_mut()
            .filter(|h| h.mac == mac && h.name != name)
            .map(|h| {
                h.name = name.clone();
                h.clone()
            })
            .collect();
        for h in changed {
            t.send(Change::Set(h));
        }
    }

    pub fn reader(&self) -> Hosts {
        Hosts(self.0.clone())
    }
}

impl Drop for HostsWriter {
    fn drop(&mut self) {
        self.0.write().changes = None;
    }
}

/// A reader's place in the stream of changes.
pub struct Subscription {
    hosts: Hosts,
    rx: broadcast::Receiver<Change>,
}

/// What a reader gets next.
#[derive(Debug)]
pub enum Update {
    Change(Change),
    /// The reader fell behind: this is the whole table now; replace what it had.
    Resync(Vec<Host>),
    /// The writer is gone (DHCP stopped).
    Closed,
}

impl Hosts {
    pub fn all(&self) -> Vec<Host> {
        self.0.read().hosts.values().cloned().collect()
    }

    pub fn get(&self, ip: Ipv4Addr) -> Option<Host> {
        self.0.read().hosts.get(&ip).cloned()
    }

    /// The MAC that holds `ip`, if any: how traffic and capture turn an address into a device.
    pub fn mac_of(&self, ip: Ipv4Addr) -> Option<Mac> {
        self.0.read().hosts.get(&ip).map(|h| h.mac)
    }

    /// The table now, and every change after it.
    pub fn subscribe(&self) -> (Vec<Host>, Subscription) {
        let t = self.0.read();
        // Without a writer, a receiver whose sender is gone at once: the subscription reports `Closed`.
        let rx = t.changes.as_ref().map_or_else(|| broadcast::channel(1).1, |tx| tx.subscribe());
        let now = t.hosts.values().cloned().collect();
        drop(t);
        (now, Subscription { hosts: self.clone(), rx })
    }
}

impl Subscription {
    pub async fn next(&mut self) -> Update {
        match self.rx.recv().await {
            Ok(c) => Update::Change(c),
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Changes after this snapshot are still queued (subscribe again under the read lock).
                let (all, fresh) = self.hosts.subscribe();
                self.rx = fresh.rx;
                Update::Resync(all)
            }
            Err(broadcast::error::RecvError::Closed) => Update::Closed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, n])
    }
    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }
    fn static_host(n: u8, name: &str) -> Host {
        Host { ip: ip(n), mac: mac(n), name: Some(name.into()), source: Source::Static }
    }

    #[tokio::test]
    async fn statics_are_there_from_the_start_and_come_back_when_their_lease_ends() {
        let (w, hosts) = table([static_host(5, "printer")]);
        let (now, mut sub) = hosts.subscribe();
        assert_eq!(now, vec![static_host(5, "printer")]);
        w.leased(ip(5), mac(5), Some("printer".into()));
        w.leased(ip(9), mac(9), Some("laptop".into()));
        w.leased(ip(9), mac(9), Some("laptop".into())); // renewal: no change
        w.ended(ip(9));
        w.ended(ip(5));
        w.ended(ip(7)); // never held: no change
        let mut seen = Vec::new();
        for _ in 0..4 {
            match sub.next().await {
                Update::Change(c) => seen.push(c),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            seen,
            vec![
                Change::Set(Host { source: Source::Lease, ..static_host(5, "printer") }),
                Change::Set(Host { ip: ip(9), mac: mac(9), name: Some("laptop".into()), source: Source::Lease }),
                Change::Removed(ip(9)),
                Change::Set(static_host(5, "printer")),
            ]
        );
        assert_eq!(hosts.mac_of(ip(5)), Some(mac(5)));
        assert_eq!(hosts.get(ip(9)), None);
        drop(w);
        assert!(matches!(sub.next().await, Update::Closed));
    }

    #[test]
    fn statics_made_moved_renamed_and_removed_at_run_time() {
        let (w, hosts) = table([]);
        w.leased(ip(9), mac(9), Some("laptop".into()));
        // Pinning its leased address keeps the lease entry; a name reaches both.
        w.set_static(Host { ip: ip(9), mac: mac(9), name: None, source: Source::Static });
        assert_eq!(hosts.get(ip(9)).map(|h| h.source), Some(Source::Lease));
        w.rename(mac(9), Some("work".into()));
        assert_eq!(hosts.get(ip(9)).and_then(|h| h.name), Some("work".into()));
        w.ended(ip(9));
        assert_eq!(
            hosts.get(ip(9)),
            Some(Host { ip: ip(9), mac: mac(9), name: Some("work".into()), source: Source::Static })
        );
        // Moved: the old static entry goes, the new one is there at once.
        w.set_static(Host { ip: ip(20), mac: mac(9), name: Some("work".into()), source: Source::Static });
        assert_eq!(hosts.get(ip(9)), None);
        assert_eq!(hosts.mac_of(ip(20)), Some(mac(9)));
        w.remove_static(mac(9));
        assert!(hosts.all().is_empty());
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_the_whole_table() {
        let (w, hosts) = table([]);
        let (_, mut sub) = hosts.subscribe();
        for n in 0..(BACKLOG + 10) {
            let a = Ipv4Addr::from(0x0a00_0000 + n as u32);
            w.leased(a, mac(1), None);
        }
        match sub.next().await {
            Update::Resync(all) => assert_eq!(all.len(), BACKLOG + 10),
            other => panic!("{other:?}"),
        }
        w.ended(Ipv4Addr::from(0x0a00_0000));
        assert!(matches!(sub.next().await, Update::Change(Change::Removed(_))));
    }
}
