//! The answer cache: upstream wire answers keyed by lowercased question (+ DO bit), bounded, LRU-evicted.
//!
//! Entries live in a slab with an intrusive doubly linked LRU list, so a hit (lookup, move to front) allocates
//! nothing. Lookups borrow the key as `&[u8]` from a stack buffer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

const NIL: u32 = u32::MAX;

/// A stored answer, ready to replay.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The upstream message without its OPT RR: header (id and flags patched on replay), question (replaced by the
    /// client's bytes of the same length), then the RRs exactly as received.
    pub wire: Vec<u8>,
    /// (offset of a TTL field in `wire`, its stored value) for every RR.
    pub ttls: Vec<(u16, u32)>,
    pub stored_ms: u64,
    pub expires_ms: u64,
    pub rcode: u8,
    /// The question name, lowercased, presentation form (for the query log and the name map).
    pub name: Arc<str>,
    /// A and AAAA addresses in the answer section.
    pub ips: Arc<[IpAddr]>,
}

struct Slot {
    key: Box<[u8]>,
    entry: Entry,
    prev: u32,
    next: u32,
}

pub struct Cache {
    map: HashMap<Box<[u8]>, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
    cap: usize,
    pub evictions: u64,
}

impl Cache {
    pub fn new(cap: usize) -> Cache {
        let cap = cap.max(1);
        Cache {
            map: HashMap::with_capacity(cap.min(1 << 16)),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            cap,
            evictions: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    fn unlink(&mut self, i: u32) {
        let (p, n) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        if p == NIL {
            self.head = n
        } else {
            self.slots[p as usize].next = n
        }
        if n == NIL { self.tail = p } else { self.slots[n as usize].prev = p }
    }

    fn push_front(&mut self, i: u32) {
        let s = &mut self.slots[i as usize];
        s.prev = NIL;
        s.next = self.head;
        if self.head != NIL {
            self.slots[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    /// A live entry (not expired at `now_ms`), marked most recently used. An expired one is removed.
    #[inline]
    pub fn get(&mut self, key: &[u8], now_ms: u64) -> Option<&Entry> {
        let i = *self.map.get(key)?;
        if now_ms >= self.slots[i as usize].entry.expires_ms {
            self.remove(key);
            return None;
        }
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
        Some(&self.slots[i as usize].entry)
    }

    pub fn remove(&mut self, key: &[u8]) {
        if let Some(i) = self.map.remove(key) {
            self.unlink(i);
            let s = &mut self.slots[i as usize];
            s.key = Box::default();
            s.entry.wire = Vec::new();
            s.entry.ttls = Vec::new();
            self.free.push(i);
        }
    }

    pub fn insert(&mut self, key: &[u8], entry: Entry) {
        if let Some(&i) = self.map.get(key) {
            self.slots[i as usize].entry = entry;
            self.unlink(i);
            self.push_front(i);
            return;
        }
        while self.map.len() >= self.cap && self.tail != NIL {
            let t = self.tail as usize;
            let k = std::mem::take(&mut self.slots[t].key);
            self.remove(&k);
            self.evictions += 1;
        }
        let slot = Slot { key: key.into(), entry, prev: NIL, next: NIL };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(key.into(), i);
        self.push_front(i);
    }
}
