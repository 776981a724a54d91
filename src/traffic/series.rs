//! One (device, remote) pair's history: its active 100 ms buckets, each the bytes and packets up and down, in a
//! byte-oriented variable-length code. Only active buckets are stored; a quiet pair costs nothing per bucket.
//!
//! # Entry format
//! One header byte `[dt:2][up:3][down:3]` (high bits first), then the time delta, then up, then down.
//! - `dt`: 0 = the next bucket (+1); 1 = +2..=257 in one byte; 2 = +258..=65,793 in two bytes (LE);
//!   3 = a LEB128 varint of the whole delta.
//! - a direction's class: 0 = nothing; 1 = the same bytes and packets as the previous non-empty value of that
//!   direction (periodic traffic, ACK streams); 2 = one packet of 20..=275 bytes, in one byte (`bytes - 20`);
//!   3 = one packet of up to 65,535 bytes, in two bytes; 4 = 2..=257 packets in one byte, then bytes as a
//!   varint; 5 = packets and bytes as varints; 6 = 2..=257 packets in one byte, then how many bytes short of
//!   that many full 1,500-byte packets they are (a varint: 0 for a bucket of full-size segments, the usual case
//!   of a download); 7 = 2..=257 packets, then the bytes beyond that many 52-byte packets (an IP and TCP header
//!   with timestamps: an ACK stream). The encoder takes the shortest class that fits.
//!
//! A DNS query and its answer cost 3 bytes, a packet each way of a keepalive 1 to 5, a bulk bucket 5 to 7.
//!
//! # Blocks
//! Entries go into blocks of about [`BLOCK_BYTES`]; each block carries the decoder's state at its start (the
//! bucket before its first entry, and the two "previous" values), so it decodes on its own: a range query skips
//! whole blocks by their last bucket, the oldest history goes block by block, and a snapshot frame holds one block.
//! The last block grows in steps of an eighth (not doubling), so at most ~12% of a block is slack.

/// What crossed in one direction in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub bytes: u64,
    pub packets: u32,
}

impl Flow {
    pub const ZERO: Flow = Flow { bytes: 0, packets: 0 };

    pub fn is_empty(&self) -> bool {
        self.bytes == 0 && self.packets == 0
    }

    pub fn add(&mut self, bytes: u64, packets: u32) {
        self.bytes = self.bytes.saturating_add(bytes);
        self.packets = self.packets.saturating_add(packets);
    }

    pub fn merge(&mut self, o: Flow) {
        self.add(o.bytes, o.packets);
    }
}

/// One active bucket: `at` is its index (Unix ms / 100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub at: u64,
    pub up: Flow,
    pub down: Flow,
}

/// A block is sealed once its entries reach this many bytes.
pub const BLOCK_BYTES: usize = 4096;

/// A self-contained run of entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// The bucket before the first entry: the first entry's delta counts from here.
    pub start: u64,
    /// The bucket of the last entry (`start` while empty).
    pub last: u64,
    /// The "previous" values (up, down) the first entry may refer to.
    pub prev: [Flow; 2],
    pub count: u32,
    pub data: Vec<u8>,
}

/// Encoder/decoder state: where the previous entry was and its last non-empty values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State {
    at: u64,
    prev: [Flow; 2],
}

impl Block {
    fn new(start: u64, prev: [Flow; 2]) -> Block {
        Block { start, last: start, prev, count: 0, data: Vec::new() }
    }

    /// The entries, oldest first. Stops quietly at the first malformed entry (a block restored from a snapshot is
    /// checked with [`Block::validate`] first, so that never happens to a block in use).
    pub fn iter(&self) -> BlockIter<'_> {
        BlockIter { data: &self.data, pos: 0, state: State { at: self.start, prev: self.prev }, left: self.count }
    }

    /// Whether every entry decodes, in time order, to exactly `count` entries ending at `last`.
    pub fn validate(&self) -> bool {
        let mut it = self.iter();
        let mut n = 0u32;
        let mut at = self.start;
        for b in it.by_ref() {
            if b.at <= at {
                return false;
            }
            at = b.at;
            n += 1;
        }
        n == self.count && it.pos == self.data.len() && at == self.last
    }

    fn heap_bytes(&self) -> usize {
        self.data.capacity()
    }
}

pub struct BlockIter<'a> {
    data: &'a [u8],
    pos: usize,
    state: State,
    left: u32,
}

impl BlockIter<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from(self.byte()?) | u16::from(self.byte()?) << 8)
    }

    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn flow(&mut self, class: u8, dir: usize) -> Option<Flow> {
        let f = match class {
            0 => return Some(Flow::ZERO),
            1 => self.state.prev[dir],
            2 => Flow { bytes: 20 + u64::from(self.byte()?), packets: 1 },
            3 => Flow { bytes: u64::from(self.u16()?), packets: 1 },
            4 => {
                let packets = 2 + u32::from(self.byte()?);
                Flow { bytes: self.varint()?, packets }
            }
            5 => {
                let packets = u32::try_from(self.varint()?).ok()?;
                Flow { bytes: self.varint()?, packets }
            }
            6 => {
                let packets = 2 + u32::from(self.byte()?);
                Flow { bytes: (u64::from(packets) * FULL).checked_sub(self.varint()?)?, packets }
            }
            7 => {
                let packets = 2 + u32::from(self.byte()?);
                Flow { bytes: (u64::from(packets) * ACK).checked_add(self.varint()?)?, packets }
            }
            _ => return None,
        };
        self.state.prev[dir] = f;
        Some(f)
    }

    fn entry(&mut self) -> Option<Bucket> {
        let h = self.byte()?;
        let delta = match h >> 6 {
            0 => 1,
            1 => 2 + u64::from(self.byte()?),
            2 => 258 + u64::from(self.u16()?),
            _ => self.varint()?.max(1),
        };
        let up = self.flow((h >> 3) & 7, 0)?;
        let down = self.flow(h & 7, 1)?;
        self.state.at = self.state.at.checked_add(delta)?;
        Some(Bucket { at: self.state.at, up, down })
    }
}

impl Iterator for BlockIter<'_> {
    type Item = Bucket;
    fn next(&mut self) -> Option<Bucket> {
        if self.left == 0 {
            return None;
        }
        let e = self.entry();
        match e {
            Some(_) => self.left -= 1,
            None => self.left = 0,
        }
        e
    }
}

/// A full-size packet on an Ethernet link (the MTU), and a bare TCP segment with timestamps (an ACK).
const FULL: u64 = 1500;
const ACK: u64 = 52;

fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `f`'s fields and returns its class.
fn put_flow(out: &mut Vec<u8>, f: Flow, prev: &mut Flow) -> u8 {
    if f.is_empty() {
        return 0;
    }
    let class = if f == *prev {
        1
    } else if f.packets == 1 && (20..=275).contains(&f.bytes) {
        out.push((f.bytes - 20) as u8);
        2
    } else if f.packets == 1 && f.bytes <= 0xffff {
        out.extend_from_slice(&(f.bytes as u16).to_le_bytes());
        3
    } else if (2..=257).contains(&f.packets) {
        out.push((f.packets - 2) as u8);
        let p = u64::from(f.packets);
        // The shortest of: bytes short of full packets (6), bytes past ACK-sized ones (7), the bytes (4).
        let short = (p * FULL).checked_sub(f.bytes);
        let over = f.bytes.checked_sub(p * ACK);
        let plain = varint_len(f.bytes);
        match (short, over) {
            (Some(v), _) if varint_len(v) < plain && over.is_none_or(|o| varint_len(v) <= varint_len(o)) => {
                put_varint(out, v);
                6
            }
            (_, Some(v)) if varint_len(v) < plain => {
                put_varint(out, v);
                7
            }
            _ => {
                put_varint(out, f.bytes);
                4
            }
        }
    } else {
        put_varint(out, u64::from(f.packets));
        put_varint(out, f.bytes);
        5
    };
    *prev = f;
    class
}

/// A pair's whole history, oldest block first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    blocks: Vec<Block>,
    /// Encoder state after the last entry.
    tail: Option<State>,
}

/// What [`Series::trim_before`] removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    pub buckets: u64,
    pub bytes: usize,
}

impl Series {
    pub fn new() -> Series {
        Series::default()
    }

    /// Appends bucket `at` (later than every bucket already in; an earlier or equal one is ignored and `false`
    /// returned, which the caller avoids by construction).
    pub fn push(&mut self, at: u64, up: Flow, down: Flow) -> bool {
        if up.is_empty() && down.is_empty() {
            return true;
        }
        let state = match self.tail {
            Some(s) if at <= s.at => return false,
            Some(s) => s,
            None => State { at: at - 1, prev: [Flow::ZERO; 2] },
        };
        let need_block = match self.blocks.last() {
            None => true,
            Some(b) => b.data.len() >= BLOCK_BYTES,
        };
        if need_block {
            if let Some(b) = self.blocks.last_mut() {
                b.data.shrink_to_fit();
            }
            self.blocks.push(Block::new(state.at, state.prev));
        }
        let block = self.blocks.last_mut().expect("pushed above");
        let mut prev = state.prev;
        // The longest entry: header, a 10-byte varint delta, two flows of two 5- and 10-byte varints.
        const MAX_ENTRY: usize = 1 + 10 + 2 * 15;
        if block.data.capacity() - block.data.len() < MAX_ENTRY {
            // Grow by an eighth: a doubling Vec would average a quarter of every block as slack.
            block.data.reserve_exact((block.data.len() / 8).max(32).max(MAX_ENTRY));
        }
        let out = &mut block.data;
        let head = out.len();
        out.push(0);
        let delta = at - state.at;
        let dt = match delta {
            1 => 0u8,
            2..=257 => {
                out.push((delta - 2) as u8);
                1
            }
            258..=65_793 => {
                out.extend_from_slice(&((delta - 258) as u16).to_le_bytes());
                2
            }
            _ => {
                put_varint(out, delta);
                3
            }
        };
        let cu = put_flow(out, up, &mut prev[0]);
        let cd = put_flow(out, down, &mut prev[1]);
        out[head] = dt << 6 | cu << 3 | cd;
        block.count += 1;
        block.last = at;
        self.tail = Some(State { at, prev });
        true
    }

    /// Every stored bucket in `[from, to)`, oldest first.
    pub fn range(&self, from: u64, to: u64) -> impl Iterator<Item = Bucket> + '_ {
        // Blocks are in time order: skip those that end before `from`.
        let first = self.blocks.partition_point(|b| b.last < from);
        self.blocks[first..]
            .iter()
            .take_while(move |b| b.start < to)
            .flat_map(|b| b.iter())
            .skip_while(move |b| b.at < from)
            .take_while(move |b| b.at < to)
    }

    /// Forgets every bucket before `cutoff`.
    pub fn trim_before(&mut self, cutoff: u64) -> Trimmed {
        let mut t = Trimmed::default();
        let whole = self.blocks.partition_point(|b| b.last < cutoff);
        for b in self.blocks.drain(..whole) {
            t.buckets += u64::from(b.count);
            t.bytes += b.heap_bytes();
        }
        if let Some(b) = self.blocks.first_mut()
            && b.start + 1 < cutoff
        {
            // Cut inside the block: decode up to the first entry at or after `cutoff`, keep the state there.
            let mut it = b.iter();
            let mut cut = (0usize, State { at: b.start, prev: b.prev }, 0u32);
            loop {
                let (pos, state) = (it.pos, it.state);
                match it.next() {
                    Some(e) if e.at < cutoff => cut.2 += 1,
                    _ => {
                        cut.0 = pos;
                        cut.1 = state;
                        break;
                    }
                }
            }
            let (pos, state, n) = cut;
            if n > 0 {
                b.data.drain(..pos);
                b.start = state.at;
                b.prev = state.prev;
                b.count -= n;
                t.buckets += u64::from(n);
                t.bytes += pos;
                b.data.shrink_to_fit();
            }
        }
        if self.blocks.is_empty() {
            // Nothing left: the next push starts afresh.
            self.tail = None;
        }
        t
    }

    /// Heap bytes held (blocks' data and the block list itself).
    pub fn heap_bytes(&self) -> usize {
        self.blocks.iter().map(Block::heap_bytes).sum::<usize>() + self.blocks.capacity() * size_of::<Block>()
    }

    pub fn buckets(&self) -> u64 {
        self.blocks.iter().map(|b| u64::from(b.count)).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The oldest bucket held.
    pub fn first(&self) -> Option<u64> {
        self.blocks.first().and_then(|b| b.iter().next()).map(|e| e.at)
    }

    pub fn last(&self) -> Option<u64> {
        self.tail.map(|s| s.at)
    }

    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Appends a block from a snapshot: refused (false) unless it is valid and later than what is held.
    pub fn restore_block(&mut self, b: Block) -> bool {
        if b.count == 0 || !b.validate() || self.tail.is_some_and(|s| b.start < s.at) {
            return false;
        }
        let end = b.iter().fold(State { at: b.start, prev: b.prev }, |mut s, e| {
            s.at = e.at;
            if !e.up.is_empty() {
                s.prev[0] = e.up;
            }
            if !e.down.is_empty() {
                s.prev[1] = e.down;
            }
            s
        });
        self.tail = Some(end);
        let mut b = b;
        b.data.shrink_to_fit();
        self.blocks.push(b);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn f(bytes: u64, packets: u32) -> Flow {
        Flow { bytes, packets }
    }

    #[test]
    fn small_and_periodic_traffic_is_a_few_bytes_a_bucket() {
        let mut s = Series::new();
        // A DNS query and its answer: header + one byte each.
        s.push(1000, f(70, 1), f(120, 1));
        assert_eq!(s.blocks()[0].data.len(), 3);
        // The same again 5 s later: the delta's byte, the rest "same as before".
        s.push(1050, f(70, 1), f(120, 1));
        assert_eq!(s.blocks()[0].data.len(), 3 + 2);
        // A 1500-byte packet in the next bucket.
        s.push(1051, Flow::ZERO, f(1500, 1));
        assert_eq!(s.blocks()[0].data.len(), 5 + 3);
        let got: Vec<Bucket> = s.range(0, u64::MAX).collect();
        assert_eq!(
            got,
            vec![
                Bucket { at: 1000, up: f(70, 1), down: f(120, 1) },
                Bucket { at: 1050, up: f(70, 1), down: f(120, 1) },
                Bucket { at: 1051, up: Flow::ZERO, down: f(1500, 1) },
            ]
        );
        assert!(!s.push(1051, f(1, 1), Flow::ZERO), "not after the last");
    }

    #[test]
    fn full_size_segments_and_ack_streams_are_short() {
        let mut s = Series::new();
        // 20 full-size segments down, 10 ACKs up: header, then 2 bytes each way.
        s.push(1, f(10 * 52, 10), f(20 * 1500, 20));
        assert_eq!(s.blocks()[0].data.len(), 5);
        // A partial last segment: 200 bytes short of full.
        s.push(2, f(10 * 52 + 12, 10), f(20 * 1500 - 200, 20));
        assert_eq!(s.blocks()[0].data.len(), 5 + 1 + 2 + 3);
        let got: Vec<Bucket> = s.range(0, 10).collect();
        assert_eq!(got[1].down, f(29_800, 20));
        assert_eq!(got[1].up, f(532, 10));
        assert_eq!((varint_len(0), varint_len(127), varint_len(128), varint_len(u64::MAX)), (1, 1, 2, 10));
    }

    #[test]
    fn ranges_and_trimming() {
        let mut s = Series::new();
        for i in 0..10_000u64 {
            s.push(i * 3 + 1, f(100 + i % 7, 1), f(2000 + i, 2));
        }
        assert!(s.blocks().len() > 3, "{} blocks", s.blocks().len());
        let mid: Vec<u64> = s.range(3001, 3010).map(|b| b.at).collect();
        assert_eq!(mid, vec![3001, 3004, 3007]);
        let t = s.trim_before(15_000);
        assert_eq!(t.buckets, 5000);
        assert_eq!(s.first(), Some(15_001));
        assert_eq!(s.buckets(), 5000);
        // Decoding after the cut still gives the right values (the "previous" state moved with it).
        let b = s.range(15_001, 15_002).next().unwrap();
        assert_eq!(b, Bucket { at: 15_001, up: f(100 + 5000 % 7, 1), down: f(7000, 2) });
        s.push(40_000, f(1, 1), Flow::ZERO);
        assert_eq!(s.last(), Some(40_000));
        assert_eq!(s.trim_before(u64::MAX).buckets, 5001);
        assert!(s.is_empty());
        assert!(s.push(5, f(1, 1), Flow::ZERO), "an emptied series starts afresh");
    }

    proptest! {
        #[test]
        fn every_sequence_round_trips(entries in proptest::collection::vec(
            (1u64..100_000, 0u64..3_000_000, 0u32..3000, 0u64..3_000_000, 0u32..3000), 1..400),
            cut in 0u64..5_000_000) {
            let mut s = Series::new();
            let mut at = 0;
            let mut want = Vec::new();
            for (dt, ub, up, db, dp) in entries {
                at += dt;
                let (u, d) = (f(ub, up), f(db, dp));
                s.push(at, u, d);
                if !(u.is_empty() && d.is_empty()) {
                    want.push(Bucket { at, up: u, down: d });
                }
            }
            let got: Vec<Bucket> = s.range(0, u64::MAX).collect();
            prop_assert_eq!(&got, &want);
            for b in s.blocks() {
                prop_assert!(b.validate());
            }
            s.trim_before(cut);
            let kept: Vec<Bucket> = want.iter().copied().filter(|b| b.at >= cut).collect();
            prop_assert_eq!(s.range(0, u64::MAX).collect::<Vec<_>>(), kept);
        }

        #[test]
        fn junk_blocks_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), count in 0u32..100) {
            let b = Block { start: 5, last: 9, prev: [f(1, 1), f(2, 2)], count, data };
            let _ = b.validate();
            let _: Vec<Bucket> = b.iter().collect();
            let mut s = Series::new();
            let _ = s.restore_block(b);
        }
    }
}
