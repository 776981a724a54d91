//! The NAT's state: mappings (internal endpoint <-> external port) and the connections (sessions) through them.
//!
//! - Mappings and sessions live in slabs (`Vec` + free list) and are linked by `u32` indices, so the packet path
//!   never allocates once a flow exists.
//! - Indexes: `by_internal` (proto, internal ip, internal port) -> mapping; `by_external` is a flat array indexed by
//!   (proto, external port) -> mapping (it doubles as the port allocator's "used" map); `by_session`
//!   (proto, external port, remote ip, remote port) -> session. A session is found from both directions by the same
//!   key (outbound: after the mapping gave the external port; inbound: straight from the packet), so sharding by
//!   (proto, external port) keeps both directions of a flow on one shard.
//! - Only outbound packets create state; an ephemeral mapping lives exactly as long as it has a session (so its
//!   lifetime is the latest expiry of its sessions, which only outbound packets push forward). Forward mappings are
//!   pinned.
//! - `live_maps` / `live_sessions` list the live entries densely (each entry knows its position; removal moves the
//!   last one into the hole), so a page of the tables is read in O(page) at any offset (`Nat::view`). Removals
//!   reorder them: a reader paging through a table that changes meanwhile may see an entry twice or miss one.
//! - Allocation: the slabs, free lists and dense lists are allocated up front for the configured bounds
//!   (`Table::new`; untouched capacity costs no memory), so creating state does not allocate there. The hash
//!   indexes grow on demand: made for the bounds up front (twice the bounds, to be exact, see below) they spread a
//!   home's few thousand flows over megabytes, and lookups with 10,000 flows took 2x as long (cache and TLB
//!   misses; `benches/translate.rs`). They stop growing for good once their capacity is twice the most entries
//!   they have held: hashbrown cleans tombstones by an in-place rehash while at most half its capacity is in use,
//!   and doubles otherwise, so after the tables first fill up each index doubles at most once more and then the
//!   packet path never allocates (`tests/nat_alloc.rs` measures that steady state).
//! - Expiry and eviction: each session sits in the list of its timeout class, kept in expiry order (refresh = move
//!   to the tail), so `expire` pops heads. Each ephemeral mapping sits in one of two LRU lists per protocol (ordered by
//!   last outbound packet): "protected" when it carries an established TCP connection or a UDP flow that has seen a
//!   reply, else "unprotected". Eviction takes unprotected first (oldest first), then protected.

use super::{Protocol, TcpState};
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};

pub const NONE: u32 = u32::MAX;

/// Refreshes closer together than this do not move an entry in its list (see `Table::set_class`).
pub const LAZY_MS: u64 = 1000;

/// A small seeded multiply-rotate hasher (FxHash-style, with a per-table random seed and a final mix so that
/// keys a LAN host picks cannot be lined up into one bucket chain without knowing the seed).
#[derive(Clone, Copy)]
pub struct SeededHasher(u64);

const K: u64 = 0xf135_7aea_2e62_a9c5;

impl Hasher for SeededHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0 ^ i).wrapping_mul(K).rotate_left(26);
    }
    #[inline]
    fn write_u128(&mut self, i: u128) {
        self.write_u64(i as u64);
        self.write_u64((i >> 64) as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        let x = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^ (x >> 32)
    }
}

#[derive(Clone, Copy)]
pub struct Seeded(u64);

impl BuildHasher for Seeded {
    type Hasher = SeededHasher;
    #[inline]
    fn build_hasher(&self) -> SeededHasher {
        SeededHasher(self.0)
    }
}

pub type FastMap<K, V> = HashMap<K, V, Seeded>;

#[inline]
pub fn internal_key(proto: Protocol, ip: u32, port: u16) -> u64 {
    (proto as u64) << 48 | u64::from(ip) << 16 | u64::from(port)
}

#[inline]
pub fn session_key(proto: Protocol, ext_port: u16, remote_ip: u32, remote_port: u16) -> u128 {
    (proto as u128) << 64 | u128::from(ext_port) << 48 | u128::from(remote_ip) << 16 | u128::from(remote_port)
}

#[inline]
pub fn ext_index(proto: Protocol, port: u16) -> usize {
    proto as usize * 65536 + usize::from(port)
}

#[derive(Clone, Copy, Debug)]
pub struct Links {
    pub prev: u32,
    pub next: u32,
}

impl Default for Links {
    fn default() -> Self {
        Links { prev: NONE, next: NONE }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct List {
    pub head: u32,
    pub tail: u32,
    pub len: u32,
}

impl Default for List {
    fn default() -> Self {
        List { head: NONE, tail: NONE, len: 0 }
    }
}

fn push_back<T>(slab: &mut [T], list: &mut List, i: u32, l: fn(&mut T) -> &mut Links) {
    *l(&mut slab[i as usize]) = Links { prev: list.tail, next: NONE };
    if list.tail == NONE {
        list.head = i;
    } else {
        l(&mut slab[list.tail as usize]).next = i;
    }
    list.tail = i;
    list.len += 1;
}

/// Inserts `i` after `after` (NONE: at the head).
fn insert_after<T>(slab: &mut [T], list: &mut List, after: u32, i: u32, l: fn(&mut T) -> &mut Links) {
    if after == list.tail {
        return push_back(slab, list, i, l);
    }
    let next = if after == NONE { list.head } else { l(&mut slab[after as usize]).next };
    *l(&mut slab[i as usize]) = Links { prev: after, next };
    l(&mut slab[next as usize]).prev = i;
    if after == NONE {
        list.head = i;
    } else {
        l(&mut slab[after as usize]).next = i;
    }
    list.len += 1;
}

fn unlink<T>(slab: &mut [T], list: &mut List, i: u32, l: fn(&mut T) -> &mut Links) {
    let Links { prev, next } = *l(&mut slab[i as usize]);
    if prev == NONE {
        list.head = next;
    } else {
        l(&mut slab[prev as usize]).next = next;
    }
    if next == NONE {
        list.tail = prev;
    } else {
        l(&mut slab[next as usize]).prev = prev;
    }
    *l(&mut slab[i as usize]) = Links::default();
    list.len -= 1;
}

/// A session's timeout class; each has its own expiry-ordered list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Class {
    TcpEstablished = 0,
    TcpTransitory = 1,
    Udp = 2,
    /// A UDP flow that has seen a reply: same timeout as `Udp`, but evicted only after every unreplied flow.
    UdpAssured = 3,
    Icmp = 4,
}

pub const CLASSES: usize = 5;

impl Class {
    pub fn protected(self) -> bool {
        matches!(self, Class::TcpEstablished | Class::UdpAssured)
    }
}

// TCP flags seen on a session.
pub const T_SYN_OUT: u8 = 1;
pub const T_SYN_IN: u8 = 2;
pub const T_SYNACK: u8 = 4;
pub const T_EST: u8 = 8;
pub const T_FIN_OUT: u8 = 16;
pub const T_FIN_IN: u8 = 32;
pub const T_RST: u8 = 64;
/// Picked up mid-stream (no SYN seen) by an outbound packet; an inbound one then makes it established.
pub const T_DATA_OUT: u8 = 128;

pub fn tcp_state(bits: u8) -> TcpState {
    if bits & T_RST != 0 {
        TcpState::Closed
    } else if bits & (T_FIN_OUT | T_FIN_IN) != 0 {
        TcpState::Closing
    } else if bits & T_EST != 0 {
        TcpState::Established
    } else if bits & T_SYNACK != 0 || bits & T_SYN_IN != 0 {
        TcpState::SynReceived
    } else if bits & T_SYN_OUT != 0 {
        TcpState::SynSent
    } else {
        TcpState::Midstream
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Counters {
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub key: u128,
    pub proto: Protocol,
    pub mapping: u32,
    pub remote_ip: u32,
    pub remote_port: u16,
    pub class: Class,
    pub tcp: u8,
    pub live: bool,
    pub created_ms: u64,
    pub last_out_ms: u64,
    pub last_in_ms: u64,
    pub expires_ms: u64,
    /// The expiry it had when last placed in its class list (the list is sorted by this; `expires_ms` is at most
    /// `LAZY_MS` later, see `set_class`).
    pub pos_ms: u64,
    pub counters: Counters,
    pub lru: Links,
    pub sib: Links,
    /// Position in `Table::live_sessions`.
    pub dense: u32,
}

#[derive(Clone, Debug)]
pub struct Mapping {
    pub proto: Protocol,
    pub int_ip: u32,
    pub int_port: u16,
    pub ext_port: u16,
    pub pinned: bool,
    pub live: bool,
    /// Which LRU list it is in (protected or not); meaningless when pinned.
    pub in_protected: bool,
    pub sessions: u32,
    pub protected_sessions: u32,
    pub last_out_ms: u64,
    pub last_in_ms: u64,
    /// Upper bound of its sessions' expiries (pinned: unused).
    pub expires_ms: u64,
    /// When it was last moved to its LRU list's tail.
    pub moved_ms: u64,
    pub counters: Counters,
    pub lru: Links,
    pub sessions_list: List,
    /// Position in `Table::live_maps`.
    pub dense: u32,
}

fn session_lru(s: &mut Session) -> &mut Links {
    &mut s.lru
}
fn session_sib(s: &mut Session) -> &mut Links {
    &mut s.sib
}
fn mapping_lru(m: &mut Mapping) -> &mut Links {
    &mut m.lru
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Removed {
    pub sessions: usize,
    pub mappings: usize,
}

pub struct Table {
    pub maps: Vec<Mapping>,
    free_maps: Vec<u32>,
    pub sessions: Vec<Session>,
    free_sessions: Vec<u32>,
    /// Indexes of the live mappings and sessions, densely (see the module's notes).
    pub live_maps: Vec<u32>,
    pub live_sessions: Vec<u32>,
    pub by_internal: FastMap<u64, u32>,
    pub by_session: FastMap<u128, u32>,
    /// (proto, external port) -> mapping index or NONE.
    /// Mapping index + 1, 0 = free (so the 768 KiB array is zero-allocated lazily).
    pub by_external: Vec<u32>,
    pub classes: [List; CLASSES],
    /// [proto][protected]
    map_lru: [[List; 2]; 3],
    pub ephemeral: usize,
    pub session_count: usize,
    pub timeouts_ms: [u64; CLASSES],
}

impl Table {
    /// A table with room for `maps` mappings (forwards included) and `sessions` sessions in its slabs, allocated
    /// now; the hash indexes grow as needed (see the module's notes).
    pub fn new(seed: u64, timeouts_ms: [u64; CLASSES], maps: usize, sessions: usize) -> Table {
        let h = Seeded(seed ^ 0x5851_f42d_4c95_7f2d);
        let hs = Seeded(h.0.rotate_left(17) ^ 0x2545_f491_4f6c_dd1d);
        Table {
            maps: Vec::with_capacity(maps),
            free_maps: Vec::with_capacity(maps),
            sessions: Vec::with_capacity(sessions),
            free_sessions: Vec::with_capacity(sessions),
            live_maps: Vec::with_capacity(maps),
            live_sessions: Vec::with_capacity(sessions),
            by_internal: HashMap::with_hasher(h),
            by_session: HashMap::with_hasher(hs),
            by_external: vec![0; 3 * 65536],
            classes: Default::default(),
            map_lru: Default::default(),
            ephemeral: 0,
            session_count: 0,
            timeouts_ms,
        }
    }

    /// Room for `n` mappings in all, made now so that adding them later allocates nothing.
    pub fn reserve_mappings(&mut self, n: usize) {
        let extra = n.saturating_sub(self.maps.len());
        self.maps.reserve(extra);
        self.free_maps.reserve(n.saturating_sub(self.free_maps.len()));
        self.live_maps.reserve(n.saturating_sub(self.live_maps.len()));
    }

    #[inline]
    pub fn mapping_by_external(&self, proto: Protocol, port: u16) -> Option<u32> {
        self.by_external[ext_index(proto, port)].checked_sub(1)
    }

    /// A mapping that still has a session that has not expired (or is pinned): `expire` may lag behind the clock.
    #[inline]
    pub fn mapping_alive(&self, m: u32, now: u64) -> bool {
        let m = &self.maps[m as usize];
        m.pinned || m.expires_ms > now
    }

    #[allow(clippy::too_many_arguments)]
    pub fn add_mapping(
        &mut self,
        proto: Protocol,
        int_ip: u32,
        int_port: u16,
        ext_port: u16,
        pinned: bool,
        index_internal: bool,
        now: u64,
    ) -> u32 {
        let m = Mapping {
            proto,
            int_ip,
            int_port,
            ext_port,
            pinned,
            live: true,
            in_protected: false,
            sessions: 0,
            protected_sessions: 0,
            last_out_ms: now,
            last_in_ms: 0,
            expires_ms: now,
            moved_ms: now,
            counters: Counters::default(),
            lru: Links::default(),
            sessions_list: List::default(),
            dense: self.live_maps.len() as u32,
        };
        let i = match self.free_maps.pop() {
            Some(i) => {
                self.maps[i as usize] = m;
                i
            }
            None => {
                self.maps.push(m);
                (self.maps.len() - 1) as u32
            }
        };
        self.live_maps.push(i);
        if index_internal {
            self.by_internal.insert(internal_key(proto, int_ip, int_port), i);
        }
        self.by_external[ext_index(proto, ext_port)] = i + 1;
        if !pinned {
            self.ephemeral += 1;
            push_back(&mut self.maps, &mut self.map_lru[proto as usize][0], i, mapping_lru);
        }
        i
    }

    /// Outbound activity on a mapping: most recently used.
    #[inline]
    pub fn touch_mapping(&mut self, m: u32, now: u64) {
        let mp = &mut self.maps[m as usize];
        mp.last_out_ms = now;
        if mp.pinned || now.saturating_sub(mp.moved_ms) < LAZY_MS {
            return;
        }
        mp.moved_ms = now;
        let list = &mut self.map_lru[mp.proto as usize][usize::from(mp.in_protected)];
        if list.tail != m {
            unlink(&mut self.maps, list, m, mapping_lru);
            push_back(&mut self.maps, list, m, mapping_lru);
        }
    }

    fn set_protected(&mut self, m: u32, protected: bool) {
        let mp = &mut self.maps[m as usize];
        if mp.pinned || mp.in_protected == protected {
            return;
        }
        let p = mp.proto as usize;
        let old = usize::from(mp.in_protected);
        mp.in_protected = protected;
        let [a, b] = &mut self.map_lru[p];
        let (from, to) = if old == 0 { (a, b) } else { (b, a) };
        unlink(&mut self.maps, from, m, mapping_lru);
        push_back(&mut self.maps, to, m, mapping_lru);
    }

    pub fn add_session(&mut self, m: u32, remote_ip: u32, remote_port: u16, class: Class, tcp: u8, now: u64) -> u32 {
        let (proto, ext) = (self.maps[m as usize].proto, self.maps[m as usize].ext_port);
        let key = session_key(proto, ext, remote_ip, remote_port);
        let s = Session {
            key,
            proto,
            mapping: m,
            remote_ip,
            remote_port,
            class,
            tcp,
            live: true,
            created_ms: now,
            last_out_ms: now,
            last_in_ms: 0,
            expires_ms: now + self.timeouts_ms[class as usize],
            pos_ms: now + self.timeouts_ms[class as usize],
            counters: Counters::default(),
            lru: Links::default(),
            sib: Links::default(),
            dense: self.live_sessions.len() as u32,
        };
        let i = match self.free_sessions.pop() {
            Some(i) => {
                self.sessions[i as usize] = s;
                i
            }
            None => {
                self.sessions.push(s);
                (self.sessions.len() - 1) as u32
            }
        };
        self.live_sessions.push(i);
        self.by_session.insert(key, i);
        push_back(&mut self.sessions, &mut self.classes[class as usize], i, session_lru);
        let mp = &mut self.maps[m as usize];
        mp.sessions += 1;
        mp.expires_ms = mp.expires_ms.max(now + self.timeouts_ms[class as usize]);
        push_back(&mut self.sessions, &mut self.maps[m as usize].sessions_list, i, session_sib);
        self.session_count += 1;
        if class.protected() {
            self.protected_delta(m, true);
        }
        i
    }

    fn protected_delta(&mut self, m: u32, up: bool) {
        let mp = &mut self.maps[m as usize];
        if up {
            mp.protected_sessions += 1;
            if mp.protected_sessions == 1 {
                self.set_protected(m, true);
            }
        } else {
            mp.protected_sessions -= 1;
            if mp.protected_sessions == 0 {
                self.set_protected(m, false);
            }
        }
    }

    /// Puts a session in `class` with a new expiry. Outbound activity sets the expiry to now + timeout and moves the
    /// session to its list's tail; inbound activity never extends it (`min`) and re-sorts it if the class changed.
    pub fn set_class(&mut self, s: u32, class: Class, now: u64, outbound: bool) {
        let t = self.timeouts_ms[class as usize];
        let sess = &mut self.sessions[s as usize];
        let old = sess.class;
        let m = sess.mapping;
        let expires = if outbound { now + t } else { sess.expires_ms.min(now + t) };
        sess.expires_ms = expires;
        sess.class = class;
        if old == class && (!outbound || expires < sess.pos_ms + LAZY_MS) {
            // Same class, refreshed by less than LAZY_MS since it was placed: leave it where it is (saves touching
            // list neighbours on every packet). `expire` may then remove it up to LAZY_MS late; lookups use the
            // exact `expires_ms`.
            if outbound {
                let mp = &mut self.maps[m as usize];
                mp.expires_ms = mp.expires_ms.max(expires);
            }
            return;
        }
        sess.pos_ms = expires;
        unlink(&mut self.sessions, &mut self.classes[old as usize], s, session_lru);
        if outbound {
            push_back(&mut self.sessions, &mut self.classes[class as usize], s, session_lru);
        } else {
            // Walk back a bounded number of steps to keep the list (nearly) sorted by expiry.
            let mut after = self.classes[class as usize].tail;
            let mut steps = 0;
            while after != NONE && steps < 64 && self.sessions[after as usize].expires_ms > expires {
                after = self.sessions[after as usize].lru.prev;
                steps += 1;
            }
            insert_after(&mut self.sessions, &mut self.classes[class as usize], after, s, session_lru);
        }
        let mp = &mut self.maps[m as usize];
        if outbound {
            mp.expires_ms = mp.expires_ms.max(expires);
        }
        if old.protected() != class.protected() {
            self.protected_delta(m, class.protected());
        }
    }

    pub fn remove_session(&mut self, s: u32, removed: &mut Removed) {
        let (key, class, m) = {
            let sess = &mut self.sessions[s as usize];
            if !sess.live {
                return;
            }
            sess.live = false;
            (sess.key, sess.class, sess.mapping)
        };
        self.by_session.remove(&key);
        unlink(&mut self.sessions, &mut self.classes[class as usize], s, session_lru);
        let mut list = self.maps[m as usize].sessions_list;
        unlink(&mut self.sessions, &mut list, s, session_sib);
        self.maps[m as usize].sessions_list = list;
        self.maps[m as usize].sessions -= 1;
        if class.protected() {
            self.protected_delta(m, false);
        }
        let at = self.sessions[s as usize].dense;
        self.live_sessions.swap_remove(at as usize);
        if let Some(&moved) = self.live_sessions.get(at as usize) {
            self.sessions[moved as usize].dense = at;
        }
        self.free_sessions.push(s);
        self.session_count -= 1;
        removed.sessions += 1;
        let mp = &self.maps[m as usize];
        if mp.sessions == 0 && !mp.pinned {
            self.remove_mapping(m, removed);
        }
    }

    /// Removes a mapping and all its sessions.
    pub fn remove_mapping(&mut self, m: u32, removed: &mut Removed) {
        if !self.maps[m as usize].live {
            return;
        }
        // Unpin first so that removing the last session does not recurse into here.
        let pinned = self.maps[m as usize].pinned;
        self.maps[m as usize].pinned = true;
        while self.maps[m as usize].sessions_list.head != NONE {
            let s = self.maps[m as usize].sessions_list.head;
            self.remove_session(s, removed);
        }
        let mp = &mut self.maps[m as usize];
        mp.live = false;
        let (proto, ip, port, ext, prot) = (mp.proto, mp.int_ip, mp.int_port, mp.ext_port, mp.in_protected);
        let ik = internal_key(proto, ip, port);
        if self.by_internal.get(&ik) == Some(&m) {
            self.by_internal.remove(&ik);
        }
        let e = ext_index(proto, ext);
        if self.by_external[e] == m + 1 {
            self.by_external[e] = 0;
        }
        if !pinned {
            unlink(&mut self.maps, &mut self.map_lru[proto as usize][usize::from(prot)], m, mapping_lru);
            self.ephemeral -= 1;
        }
        let at = self.maps[m as usize].dense;
        self.live_maps.swap_remove(at as usize);
        if let Some(&moved) = self.live_maps.get(at as usize) {
            self.maps[moved as usize].dense = at;
        }
        self.free_maps.push(m);
        removed.mappings += 1;
    }

    /// The ephemeral mapping to evict: least recently used unprotected one (of `proto`, or of any protocol), else the
    /// least recently used protected one.
    pub fn eviction_victim(&self, proto: Option<Protocol>) -> Option<u32> {
        for prot in 0..2 {
            let mut best: Option<u32> = None;
            for p in 0..3 {
                if proto.is_some_and(|want| want as usize != p) {
                    continue;
                }
                let h = self.map_lru[p][prot].head;
                if h != NONE
                    && best.is_none_or(|b| self.maps[h as usize].last_out_ms < self.maps[b as usize].last_out_ms)
                {
                    best = Some(h);
                }
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }

    /// The session to evict when the session table is full: of the unprotected classes, the one closest to its
    /// expiry; if none, the protected one closest to expiry.
    pub fn session_victim(&self) -> Option<u32> {
        let pick = |classes: &[Class]| {
            classes
                .iter()
                .map(|&c| self.classes[c as usize].head)
                .filter(|&h| h != NONE)
                .min_by_key(|&h| self.sessions[h as usize].expires_ms)
        };
        pick(&[Class::TcpTransitory, Class::Udp, Class::Icmp])
            .or_else(|| pick(&[Class::TcpEstablished, Class::UdpAssured]))
    }

    /// Removes every session whose expiry has come (and ephemeral mappings left without a session).
    pub fn expire(&mut self, now: u64, removed: &mut Removed) {
        for c in 0..CLASSES {
            loop {
                let h = self.classes[c].head;
                if h == NONE || self.sessions[h as usize].expires_ms > now {
                    break;
                }
                self.remove_session(h, removed);
            }
        }
    }

    /// A free external port for `proto`: the preferred one if free and allowed, else from a random start in
    /// `range`, the next free one.
    pub fn free_port(&self, proto: Protocol, preferred: Option<u16>, range: (u16, u16), random: u64) -> Option<u16> {
        if let Some(p) = preferred
            && self.by_external[ext_index(proto, p)] == 0
        {
            return Some(p);
        }
        let (lo, hi) = (range.0.min(range.1), range.0.max(range.1));
        let n = u32::from(hi) - u32::from(lo) + 1;
        let start = (random % u64::from(n)) as u32;
        let base = proto as usize * 65536;
        let slots = &self.by_external[base + usize::from(lo)..=base + usize::from(hi)];
        let start = start as usize;
        let found = slots[start..]
            .iter()
            .position(|&x| x == 0)
            .map(|i| start + i)
            .or_else(|| slots[..start].iter().position(|&x| x == 0));
        found.map(|i| lo + i as u16)
    }
}
