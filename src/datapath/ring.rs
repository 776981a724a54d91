//! A lock-free single-producer single-consumer ring of fixed-size `Copy` records, one per queue: the packet loop
//! writes a record per packet and publishes them once per batch; a reader (traffic accounting, capture) takes them
//! at its own pace. The producer never waits: when the ring is full, the record is dropped and counted.
//!
//! - Capacity is a power of two; positions are free-running `usize` counters, the slot is `position & mask`, so
//!   `tail - head` is the fill level even across wrap-around.
//! - The producer writes slots, then publishes `tail` with `Release`; the reader loads `tail` with `Acquire` before
//!   reading those slots. The reader publishes `head` with `Release` after reading; the producer loads `head` with
//!   `Acquire` (only when its cached copy says the ring is full) before writing over them.
//! - Records are written only while a reader is attached ([`Ring::subscribe`]; at most one at a time, as SPSC
//!   requires). With nobody reading, a full ring would count every packet as a drop, which says nothing, and the
//!   writes would be wasted; the producer looks at the flag once per batch ([`Producer::begin`]). A new reader
//!   starts at the producer's published position (older records are skipped).

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Keeps the producer's and the reader's counters on cache lines of their own.
#[repr(align(64))]
struct Padded<T>(T);

struct Inner<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// Next position the producer writes, as last published.
    tail: Padded<AtomicUsize>,
    /// Next position the reader reads, as last published.
    head: Padded<AtomicUsize>,
    /// Records dropped because the ring was full (written by the producer only).
    dropped: Padded<AtomicU64>,
    attached: AtomicBool,
}

// SAFETY: a slot is only ever accessed by the producer (positions in [head + capacity - ..., tail), not yet
// published) or by the one reader (positions in [head, tail) as published); the Acquire/Release pairs on `head`
// and `tail` order those accesses. `T: Send` values move between the two threads.
unsafe impl<T: Send> Sync for Inner<T> {}
unsafe impl<T: Send> Send for Inner<T> {}

/// The producer's end: one per ring, owned by the queue's thread.
pub struct Producer<T> {
    inner: Arc<Inner<T>>,
    tail: usize,
    /// The reader's position as last seen: the ring has at least `capacity - (tail - head)` free slots.
    head: usize,
    dropped: u64,
    enabled: bool,
}

/// The shared side of a ring: where a reader subscribes and its drop count is read.
pub struct Ring<T> {
    inner: Arc<Inner<T>>,
}

/// The consumer's end. At most one exists per ring at a time; dropping it stops the records.
pub struct Reader<T> {
    inner: Arc<Inner<T>>,
    head: usize,
}

/// A ring of `capacity` slots (rounded up to a power of two, at least 2).
pub fn ring<T: Copy + Send>(capacity: usize) -> (Producer<T>, Ring<T>) {
    let cap = capacity.max(2).next_power_of_two();
    let slots = (0..cap).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let inner = Arc::new(Inner {
        slots,
        mask: cap - 1,
        tail: Padded(AtomicUsize::new(0)),
        head: Padded(AtomicUsize::new(0)),
        dropped: Padded(AtomicU64::new(0)),
        attached: AtomicBool::new(false),
    });
    (Producer { inner: inner.clone(), tail: 0, head: 0, dropped: 0, enabled: false }, Ring { inner })
}

impl<T: Copy + Send> Producer<T> {
    /// At the start of a batch: whether a reader is attached, i.e. whether `push` writes anything.
    #[inline]
    pub fn begin(&mut self) -> bool {
        self.enabled = self.inner.attached.load(Ordering::Acquire);
        self.enabled
    }

    /// Writes `v` into the next slot (not yet visible to the reader: see `publish`). Never waits: when the ring is
    /// full, `v` is dropped and counted. Returns whether it was written.
    #[inline]
    pub fn push(&mut self, v: T) -> bool {
        if !self.enabled {
            return false;
        }
        let mask = self.inner.mask;
        if self.tail.wrapping_sub(self.head) > mask {
            self.head = self.inner.head.0.load(Ordering::Acquire);
            if self.tail.wrapping_sub(self.head) > mask {
                self.dropped += 1;
                return false;
            }
        }
        // SAFETY: the slot at `tail` is free: the reader has published a head past its previous use (loaded with
        // Acquire above or earlier), and it cannot read it before we publish a tail past it.
        unsafe { (*self.inner.slots[self.tail & mask].get()).write(v) };
        self.tail = self.tail.wrapping_add(1);
        true
    }

    /// Makes every record pushed so far visible to the reader, and the drop count to everyone.
    #[inline]
    pub fn publish(&mut self) {
        self.inner.tail.0.store(self.tail, Ordering::Release);
        self.inner.dropped.0.store(self.dropped, Ordering::Relaxed);
    }
}

impl<T: Copy + Send> Ring<T> {
    /// The reader, unless one is attached already. It sees the records published from now on.
    pub fn subscribe(&self) -> Option<Reader<T>> {
        self.inner.attached.compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed).ok()?;
        // Only the reader writes `head`, and there is none but this one now.
        let head = self.inner.tail.0.load(Ordering::Acquire);
        self.inner.head.0.store(head, Ordering::Release);
        Some(Reader { inner: self.inner.clone(), head })
    }

    /// Records dropped because the ring was full, as of the producer's last publish.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.0.load(Ordering::Relaxed)
    }

    pub fn capacity(&self) -> usize {
        self.inner.mask + 1
    }
}

impl<T: Copy + Send> Reader<T> {
    /// The oldest published record, if any.
    pub fn pop(&mut self) -> Option<T> {
        let tail = self.inner.tail.0.load(Ordering::Acquire);
        if self.head == tail {
            return None;
        }
        let v = self.read(self.head);
        self.head = self.head.wrapping_add(1);
        self.inner.head.0.store(self.head, Ordering::Release);
        Some(v)
    }

    /// Hands every published record to `f`, oldest first, freeing their slots at the end; returns how many.
    pub fn drain(&mut self, mut f: impl FnMut(T)) -> usize {
        let tail = self.inner.tail.0.load(Ordering::Acquire);
        let n = tail.wrapping_sub(self.head);
        for _ in 0..n {
            f(self.read(self.head));
            self.head = self.head.wrapping_add(1);
        }
        self.inner.head.0.store(self.head, Ordering::Release);
        n
    }

    /// Records published and not read yet.
    pub fn len(&self) -> usize {
        self.inner.tail.0.load(Ordering::Acquire).wrapping_sub(self.head)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Records dropped because the ring was full (see [`Ring::dropped`]).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.0.load(Ordering::Relaxed)
    }

    #[inline]
    fn read(&self, pos: usize) -> T {
        // SAFETY: `pos` lies in [head, tail) as published by the producer (Acquire above): the slot was written
        // before that publish, and the producer does not write it again until we publish a head past it.
        unsafe { (*self.inner.slots[pos & self.inner.mask].get()).assume_init_read() }
    }
}

impl<T> Drop for Reader<T> {
    fn drop(&mut self) {
        self.inner.attached.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(cap: usize) -> (Producer<u64>, Ring<u64>, Reader<u64>) {
        let (p, r) = ring(cap);
        let reader = r.subscribe().unwrap();
        (p, r, reader)
    }

    #[test]
    fn records_come_out_in_order_once_published() {
        let (mut p, _r, mut c) = attached(8);
        assert!(p.begin());
        for i in 0..5 {
            assert!(p.push(i));
        }
        assert_eq!(c.pop(), None, "nothing is visible before publish");
        p.publish();
        assert_eq!(c.len(), 5);
        assert_eq!(c.pop(), Some(0));
        let mut got = Vec::new();
        assert_eq!(c.drain(|v| got.push(v)), 4);
        assert_eq!(got, [1, 2, 3, 4]);
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn wraps_around_many_times() {
        let (mut p, r, mut c) = attached(4);
        assert_eq!(r.capacity(), 4);
        let mut next = 0;
        for round in 0..1000u64 {
            p.begin();
            let n = round % 4 + 1;
            for k in 0..n {
                assert!(p.push(round * 10 + k));
            }
            p.publish();
            for k in 0..n {
                assert_eq!(c.pop(), Some(round * 10 + k));
                next += 1;
            }
        }
        assert_eq!(next, 2500);
        assert_eq!(c.dropped(), 0);
    }

    #[test]
    fn a_full_ring_drops_and_counts_without_waiting() {
        let (mut p, r, mut c) = attached(4);
        p.begin();
        for i in 0..10 {
            assert_eq!(p.push(i), i < 4, "record {i}");
        }
        p.publish();
        assert_eq!(r.dropped(), 6);
        assert_eq!(c.dropped(), 6);
        // Reading frees room; the oldest survive.
        assert_eq!(c.pop(), Some(0));
        assert!(p.push(10));
        assert!(!p.push(11));
        p.publish();
        let mut got = Vec::new();
        c.drain(|v| got.push(v));
        assert_eq!(got, [1, 2, 3, 10]);
        assert_eq!(r.dropped(), 7);
    }

    #[test]
    fn no_records_without_a_reader_and_one_reader_at_a_time() {
        let (mut p, r) = ring::<u64>(4);
        assert!(!p.begin());
        for i in 0..100 {
            assert!(!p.push(i));
        }
        p.publish();
        assert_eq!(r.dropped(), 0, "not counted: nobody reads");
        let mut c = r.subscribe().unwrap();
        assert!(r.subscribe().is_none(), "single consumer");
        assert!(p.begin());
        p.push(1);
        p.publish();
        drop(c);
        assert!(!p.begin(), "the reader left");
        p.push(2);
        p.publish();
        // A new reader starts after what was published before it came.
        c = r.subscribe().unwrap();
        assert!(p.begin());
        p.push(3);
        p.publish();
        assert_eq!(c.pop(), Some(3));
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn two_threads_stress() {
        const N: u64 = 2_000_000;
        let (mut p, r, mut c) = attached(256);
        let producer = std::thread::spawn(move || {
            let mut written = 0u64;
            let mut i = 0;
            while i < N {
                p.begin();
                // Batches of up to 64, as the packet loop writes them.
                for _ in 0..64.min(N - i) {
                    written += u64::from(p.push(i));
                    i += 1;
                }
                p.publish();
                if i % 4096 == 0 {
                    std::thread::yield_now();
                }
            }
            written
        });
        let mut last: Option<u64> = None;
        let mut got = 0u64;
        loop {
            let n = c.drain(|v| {
                assert!(last.is_none_or(|l| v > l), "in order, no duplicates: {v} after {last:?}");
                last = Some(v);
                got += 1;
            });
            if n == 0 && producer.is_finished() && c.is_empty() {
                break;
            }
        }
        let written = producer.join().unwrap();
        assert_eq!(got, written, "every record written was read");
        assert_eq!(written + r.dropped(), N, "and every other one counted");
    }
}
