//! The capture tap: a lock-free single-producer single-consumer ring of variable-length packet copies, one per
//! queue, beside the record ring (`ring`). The packet loop copies a device's packet into it as the device sees it
//! (before translation going up, after it coming down) and publishes once per batch; the capture thread moves
//! the copies into the devices' own rings (`capture`). The producer never waits or allocates: a copy that does
//! not fit is dropped and counted. Copies are made only while a reader is attached (checked once per batch).
//!
//! An entry is a 24-byte header and the stored bytes, padded to 8 bytes, never split across the buffer's end:
//! where the rest of the buffer is too short, a zero length word tells the reader to go on from the start.
//! Positions are free-running byte counters; `tail - head` is the fill level.
//!
//! Copying is two steps so that an outbound packet can be copied before the NAT rewrites it and kept only once
//! the NAT has said whose it is: [`TapProducer::stage`] copies into the free space, [`TapProducer::commit`]
//! writes its header and keeps it; a staged copy that is not committed is overwritten by the next.

use std::cell::UnsafeCell;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

pub const ENTRY_HEADER: usize = 24;

/// Packets longer than this are "large" for [`Snap::large`]: GSO aggregates (bulk TCP), never an ordinary packet
/// of a 1,500-byte link.
pub const LARGE: usize = 1500;

/// How much of each packet the tap copies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snap {
    /// Bytes of any packet (0 = all).
    pub all: usize,
    /// Bytes of a packet longer than [`LARGE`] (0 = as `all`): bulk transfers keep their headers, not their
    /// payload, so they cost the packet path little and a ring holds far more of their time.
    pub large: usize,
}

impl Snap {
    #[inline]
    pub fn stored(&self, len: usize) -> usize {
        let mut n = len;
        if self.all > 0 {
            n = n.min(self.all);
        }
        if self.large > 0 && len > LARGE {
            n = n.min(self.large);
        }
        n
    }
}

#[repr(align(64))]
struct Padded<T>(T);

struct Inner {
    buf: Box<[UnsafeCell<u8>]>,
    mask: usize,
    tail: Padded<AtomicUsize>,
    head: Padded<AtomicUsize>,
    dropped: Padded<AtomicU64>,
    attached: AtomicBool,
}

// SAFETY: bytes in [head, tail) as published belong to the reader, the rest to the producer; the Release stores
// and Acquire loads of `head` and `tail` order the accesses, as in `ring`.
unsafe impl Sync for Inner {}
unsafe impl Send for Inner {}

/// One copy, as the reader sees it.
#[derive(Debug, Clone, Copy)]
pub struct TapEntry<'a> {
    pub time_us: u64,
    /// The device's own address (the inside host).
    pub device: Ipv4Addr,
    /// The packet's length; `data` may be shorter (the snap length).
    pub len: u32,
    /// From the device (true) or to it.
    pub up: bool,
    pub data: &'a [u8],
}

pub struct TapProducer {
    inner: Arc<Inner>,
    tail: usize,
    head: usize,
    dropped: u64,
    enabled: bool,
    /// The staged copy: where its entry starts (after any wrap padding), its stored and original lengths.
    staged: Option<(usize, usize, u32)>,
    pub snap: Snap,
}

pub struct Tap {
    inner: Arc<Inner>,
}

pub struct TapReader {
    inner: Arc<Inner>,
    head: usize,
}

/// A tap of `bytes` capacity (rounded up to a power of two, at least 4 KiB).
pub fn tap(bytes: usize, snap: Snap) -> (TapProducer, Tap) {
    let cap = bytes.max(4096).next_power_of_two();
    let inner = Arc::new(Inner {
        buf: (0..cap).map(|_| UnsafeCell::new(0)).collect(),
        mask: cap - 1,
        tail: Padded(AtomicUsize::new(0)),
        head: Padded(AtomicUsize::new(0)),
        dropped: Padded(AtomicU64::new(0)),
        attached: AtomicBool::new(false),
    });
    let p = TapProducer { inner: inner.clone(), tail: 0, head: 0, dropped: 0, enabled: false, staged: None, snap };
    (p, Tap { inner })
}

fn padded(n: usize) -> usize {
    (n + 7) & !7
}

impl Inner {
    fn cap(&self) -> usize {
        self.mask + 1
    }

    /// SAFETY: the caller owns `[at, at + bytes.len())` (see the impl's comment) and it does not cross the end.
    unsafe fn write(&self, at: usize, bytes: &[u8]) {
        // An empty copy may start at the very end (an entry of only a header that fills the buffer).
        if bytes.is_empty() {
            return;
        }
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.buf[at].get(), bytes.len()) }
    }

    /// SAFETY: as `write`.
    unsafe fn slice(&self, at: usize, len: usize) -> &[u8] {
        unsafe { std::slice::from_raw_parts(self.buf[at].get() as *const u8, len) }
    }
}

impl TapProducer {
    /// At the start of a batch: whether a reader is attached, i.e. whether copies are made.
    #[inline]
    pub fn begin(&mut self) -> bool {
        self.enabled = self.inner.attached.load(Ordering::Acquire);
        self.staged = None;
        self.enabled
    }

    /// Copies `packet` (its first `snap` bytes) into the free space, replacing any copy staged and not committed.
    /// Returns false (the copy dropped and counted) when the ring has no room.
    #[inline]
    pub fn stage(&mut self, packet: &[u8]) -> bool {
        self.staged = None;
        if !self.enabled {
            return false;
        }
        let stored = self.snap.stored(packet.len());
        let need = padded(ENTRY_HEADER + stored);
        let cap = self.inner.cap();
        let offset = self.tail & self.inner.mask;
        // A wrap: skip to the start (the reader sees the zero length word there).
        let skip = if offset + need > cap { cap - offset } else { 0 };
        if need + skip + 8 > cap || !self.room(need + skip) {
            self.dropped += 1;
            return false;
        }
        let at = if skip > 0 { 0 } else { offset };
        // SAFETY: `room` checked these bytes are free; they are not published until `publish`.
        unsafe { self.inner.write(at + ENTRY_HEADER, &packet[..stored]) };
        self.staged = Some((skip, stored, packet.len().min(u32::MAX as usize) as u32));
        true
    }

    fn room(&mut self, n: usize) -> bool {
        let cap = self.inner.cap();
        if cap - self.tail.wrapping_sub(self.head) >= n {
            return true;
        }
        self.head = self.inner.head.0.load(Ordering::Acquire);
        cap - self.tail.wrapping_sub(self.head) >= n
    }

    /// Keeps the staged copy, as `device`'s packet, `up` from it or down to it, seen at `time_us`.
    #[inline]
    pub fn commit(&mut self, time_us: u64, device: Ipv4Addr, up: bool) {
        let Some((skip, stored, len)) = self.staged.take() else { return };
        let offset = self.tail & self.inner.mask;
        if skip > 0 {
            // SAFETY: owned by the producer (checked in `stage`); at least 8 bytes to the end (entries are padded).
            unsafe { self.inner.write(offset, &0u32.to_le_bytes()) };
            self.tail = self.tail.wrapping_add(skip);
        }
        let at = self.tail & self.inner.mask;
        let total = padded(ENTRY_HEADER + stored) as u32;
        let mut h = [0u8; ENTRY_HEADER];
        h[0..4].copy_from_slice(&total.to_le_bytes());
        h[4..8].copy_from_slice(&len.to_le_bytes());
        h[8..16].copy_from_slice(&time_us.to_le_bytes());
        h[16..20].copy_from_slice(&device.octets());
        h[20..24].copy_from_slice(&((stored as u32) << 1 | up as u32).to_le_bytes());
        // SAFETY: as in `stage`.
        unsafe { self.inner.write(at, &h) };
        self.tail = self.tail.wrapping_add(total as usize);
    }

    /// Stages and commits in one step (a packet whose owner is known already).
    #[inline]
    pub fn copy(&mut self, packet: &[u8], time_us: u64, device: Ipv4Addr, up: bool) {
        if self.stage(packet) {
            self.commit(time_us, device, up);
        }
    }

    /// Makes the committed copies visible to the reader.
    #[inline]
    pub fn publish(&mut self) {
        if !self.enabled {
            return;
        }
        self.inner.tail.0.store(self.tail, Ordering::Release);
        self.inner.dropped.0.store(self.dropped, Ordering::Relaxed);
    }
}

impl Tap {
    /// The reader, unless one is attached already; it sees the copies published from now on.
    pub fn subscribe(&self) -> Option<TapReader> {
        self.inner.attached.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).ok()?;
        let head = self.inner.tail.0.load(Ordering::Acquire);
        self.inner.head.0.store(head, Ordering::Release);
        Some(TapReader { inner: self.inner.clone(), head })
    }

    /// Copies dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.0.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.inner.cap()
    }
}

impl TapReader {
    /// Hands every published copy to `f`, oldest first, then frees their space; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(TapEntry<'_>)) -> usize {
        let tail = self.inner.tail.0.load(Ordering::Acquire);
        let mut n = 0;
        while self.head != tail {
            let at = self.head & self.inner.mask;
            // SAFETY: [head, tail) was published by the producer and is not written again before we publish head.
            let h = unsafe { self.inner.slice(at, 4) };
            let total = u32::from_le_bytes(h.try_into().expect("4 bytes")) as usize;
            if total == 0 {
                self.head = self.head.wrapping_add(self.inner.cap() - at);
                continue;
            }
            // SAFETY: as above; a committed entry never crosses the end.
            let e = unsafe { self.inner.slice(at, total) };
            let word = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().expect("4 bytes"));
            let flags = word(20);
            let stored = (flags >> 1) as usize;
            f(TapEntry {
                time_us: u64::from_le_bytes(e[8..16].try_into().expect("8 bytes")),
                device: Ipv4Addr::new(e[16], e[17], e[18], e[19]),
                len: word(4),
                up: flags & 1 == 1,
                data: &e[ENTRY_HEADER..ENTRY_HEADER + stored],
            });
            self.head = self.head.wrapping_add(total);
            n += 1;
        }
        self.inner.head.0.store(self.head, Ordering::Release);
        n
    }
}

impl Drop for TapReader {
    fn drop(&mut self) {
        self.inner.attached.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(r: &mut TapReader) -> Vec<(u64, Ipv4Addr, u32, bool, Vec<u8>)> {
        let mut v = Vec::new();
        r.drain(|e| v.push((e.time_us, e.device, e.len, e.up, e.data.to_vec())));
        v
    }

    #[test]
    fn nothing_is_copied_without_a_reader_and_staged_copies_need_a_commit() {
        let (mut p, t) = tap(4096, Snap::default());
        assert!(!p.begin());
        assert!(!p.stage(&[1; 10]));
        let mut r = t.subscribe().unwrap();
        assert!(t.subscribe().is_none(), "one reader at a time");
        p.begin();
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        assert!(p.stage(&[1; 10]));
        assert!(p.stage(&[2; 12])); // replaces the first, never committed
        p.commit(7, ip, true);
        p.copy(&[3; 5], 8, ip, false);
        assert!(collect(&mut r).is_empty(), "not published yet");
        p.publish();
        assert_eq!(collect(&mut r), vec![(7, ip, 12, true, vec![2; 12]), (8, ip, 5, false, vec![3; 5])]);
    }

    #[test]
    fn a_full_ring_drops_and_counts_and_snap_cuts() {
        let (mut p, t) = tap(4096, Snap { all: 100, large: 0 });
        let mut r = t.subscribe().unwrap();
        p.begin();
        let ip = Ipv4Addr::new(10, 0, 0, 5);
        let mut kept = 0;
        for i in 0..100 {
            if p.stage(&[i as u8; 1000]) {
                p.commit(i, ip, true);
                kept += 1;
            }
        }
        p.publish();
        // 124 bytes -> 128 per entry: 32 fit in 4096.
        assert_eq!((kept, t.dropped()), (32, 68));
        let got = collect(&mut r);
        assert!(got.iter().all(|(_, _, len, _, d)| *len == 1000 && d.len() == 100));
    }

    #[test]
    fn an_empty_copy_that_ends_the_buffer() {
        // Found by the property test below: 4072 + 24 bytes end exactly at the buffer's end.
        let (mut p, t) = tap(4096, Snap::default());
        let mut r = t.subscribe().unwrap();
        p.begin();
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        p.copy(&[7; 4048], 1, ip, true); // 4072 bytes with its header
        p.copy(&[], 2, ip, true); // 24 bytes: 4072..4096
        p.publish();
        let got = collect(&mut r);
        assert_eq!(got.iter().map(|g| g.4.len()).collect::<Vec<_>>(), vec![4048, 0]);
    }

    #[test]
    fn large_packets_have_their_own_snap() {
        let s = Snap { all: 0, large: 128 };
        assert_eq!((s.stored(1500), s.stored(1501), s.stored(64_000)), (1500, 128, 128));
        let s = Snap { all: 100, large: 128 };
        assert_eq!((s.stored(60), s.stored(1000), s.stored(64_000)), (60, 100, 100));
        assert_eq!(Snap::default().stored(64_000), 64_000);
    }

    proptest! {
        /// Whatever the sizes and the reader's pace, the reader gets exactly the committed copies that fit, in
        /// order, byte for byte, across wrap-arounds.
        #[test]
        fn copies_arrive_in_order_across_wraps(
            ops in proptest::collection::vec((0usize..1500, any::<bool>(), any::<bool>()), 1..400),
        ) {
            let (mut p, t) = tap(8192, Snap::default());
            let mut r = t.subscribe().unwrap();
            let mut expected = Vec::new();
            let mut got = Vec::new();
            p.begin();
            for (i, (len, commit, drain)) in ops.into_iter().enumerate() {
                let data: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                if p.stage(&data) && commit {
                    p.commit(i as u64, Ipv4Addr::new(10, 0, 0, 1), i % 2 == 0);
                    expected.push((i as u64, Ipv4Addr::new(10, 0, 0, 1), len as u32, i % 2 == 0, data));
                }
                if drain {
                    p.publish();
                    got.extend(collect(&mut r));
                    p.begin();
                }
            }
            p.publish();
            got.extend(collect(&mut r));
            prop_assert_eq!(got, expected);
        }
    }
}
