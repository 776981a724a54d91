//! Adaptive batching, like a NIC's interrupt moderation: above a rate threshold a receive loop waits a little after
//! a partial batch instead of going back to sleep on its socket, so that the next receive brings a fuller batch
//! (fewer wake-ups and system calls per packet). Below the threshold every packet is handled at once, so a quiet
//! network sees no added latency. Used by the DNS loop and by every NFQUEUE loop.

use std::time::{Duration, Instant};

/// How a loop batches: the batch it reads at most, the rate above which it waits, the longest wait.
#[derive(Clone, Copy, Debug)]
pub struct CoalescePolicy {
    pub batch: usize,
    /// Packets (or queries) per second above which a partial batch is followed by a wait.
    pub above_per_sec: u64,
    /// The longest wait: what it adds to a packet's latency under that load.
    pub max_wait: Duration,
    /// Wait only while the average item is at most this many bytes: for big packets (64 KB GSO) the per-byte
    /// copies dominate, a wake-up is cheap beside them, and a wait only adds latency (it slows one TCP stream).
    pub max_avg_bytes: u64,
}

/// Tracks the recent rate (over 10 ms windows) to decide whether to wait for a fuller batch.
pub struct Coalescer {
    policy: CoalescePolicy,
    window_start: Instant,
    window_count: u64,
    window_bytes: u64,
    rate: u64,
    avg_bytes: u64,
}

impl Coalescer {
    pub fn new(policy: CoalescePolicy) -> Self {
        Coalescer { policy, window_start: Instant::now(), window_count: 0, window_bytes: 0, rate: 0, avg_bytes: 0 }
    }

    /// Whether the recent rate is in the batching range (then replies may wait for their batch's end too); below
    /// it, each item is best finished at once.
    pub fn batching(&self) -> bool {
        let p = &self.policy;
        self.rate >= p.above_per_sec && self.avg_bytes <= p.max_avg_bytes
    }

    /// Counts `n` items of `bytes` in all just received; returns how long to wait before the next receive (zero:
    /// don't).
    pub fn after_batch(&mut self, n: usize, bytes: usize) -> Duration {
        self.after_batch_at(n, bytes, Instant::now())
    }

    fn after_batch_at(&mut self, n: usize, bytes: usize, now: Instant) -> Duration {
        self.window_count += n as u64;
        self.window_bytes += bytes as u64;
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= Duration::from_millis(10) {
            self.rate = self.window_count * 1_000_000 / elapsed.as_micros().max(1) as u64;
            self.avg_bytes = self.window_bytes / self.window_count.max(1);
            self.window_start = now;
            self.window_count = 0;
            self.window_bytes = 0;
        }
        let p = &self.policy;
        if n >= p.batch || self.rate < p.above_per_sec || self.rate == 0 || self.avg_bytes > p.max_avg_bytes {
            return Duration::ZERO;
        }
        // Long enough for about half a batch to arrive at the current rate.
        Duration::from_micros((p.batch as u64 / 2) * 1_000_000 / self.rate).min(p.max_wait)
    }
}

/// Keeps the kernel from stretching the calling thread's short naps (its default timer slack is 50 us).
pub fn tight_timer_slack() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 5_000u64, 0u64, 0u64, 0u64) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: CoalescePolicy =
        CoalescePolicy { batch: 64, above_per_sec: 40_000, max_wait: Duration::from_micros(150), max_avg_bytes: 1500 };

    /// Feeds `per_ms` items of `size` bytes every millisecond, in ten partial batches, for 30 ms; returns the
    /// last wait asked for.
    fn steady_sized(c: &mut Coalescer, start: Instant, per_ms: usize, size: usize) -> Duration {
        let mut wait = Duration::ZERO;
        for us in (100..=30_000u64).step_by(100) {
            wait = c.after_batch_at(per_ms / 10, per_ms / 10 * size, start + Duration::from_micros(us));
        }
        wait
    }

    fn steady(c: &mut Coalescer, start: Instant, per_ms: usize) -> Duration {
        steady_sized(c, start, per_ms, 100)
    }

    #[test]
    fn a_quiet_loop_never_waits() {
        let start = Instant::now();
        let mut c = Coalescer::new(POLICY);
        c.window_start = start;
        assert_eq!(steady(&mut c, start, 10), Duration::ZERO); // 10k/s
        assert_eq!(c.rate, 10_000);
        assert!(!c.batching());
    }

    #[test]
    fn a_busy_loop_waits_for_half_a_batch_but_never_longer_than_the_cap() {
        let start = Instant::now();
        let mut c = Coalescer::new(POLICY);
        c.window_start = start;
        // 320k/s: half a batch (32) arrives in 100 us.
        assert_eq!(steady(&mut c, start, 320), Duration::from_micros(100));
        assert!(c.batching());
        let mut c = Coalescer::new(POLICY);
        c.window_start = start;
        // 50k/s: half a batch takes 640 us; capped.
        assert_eq!(steady(&mut c, start, 50), Duration::from_micros(150));
        // A full batch is read on at once.
        assert_eq!(c.after_batch_at(64, 6400, start + Duration::from_millis(31)), Duration::ZERO);
    }

    #[test]
    fn big_packets_are_never_held_back() {
        let start = Instant::now();
        let mut c = Coalescer::new(POLICY);
        c.window_start = start;
        // 100k/s of 9,000-byte packets on average (GSO data beside small ACKs).
        assert_eq!(steady_sized(&mut c, start, 100, 9000), Duration::ZERO);
        assert!(!c.batching());
        assert_eq!(steady_sized(&mut c, start + Duration::from_millis(30), 100, 1000), Duration::from_micros(150));
    }
}
