//! One device's packet ring, sans IO: whole packet records in a fixed byte buffer, the oldest evicted first to make
//! room, never a partial record. A record is a 16-byte header (time in microseconds, original length, stored
//! length, direction and origin) and the stored bytes; it wraps around the buffer's end as one byte stream.
//! Writing copies into memory allocated once, so the packet path never allocates for it.

/// Bytes of a record's header.
pub const HEADER: usize = 16;

/// Which way a packet went, as the device sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the device.
    Out,
    /// To the device.
    In,
}

/// Where a packet was seen: crossing the NAT, or an exchange with the router itself (DNS, DHCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Nat,
    Dns,
    Dhcp,
}

/// One stored packet, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub time_us: u64,
    /// Its length on the wire (a GSO aggregate: the whole aggregate).
    pub len: u32,
    pub direction: Direction,
    pub origin: Origin,
    /// The stored bytes: all of them, or the first `snap` bytes.
    pub data: Vec<u8>,
}

pub struct Ring {
    buf: Box<[u8]>,
    /// Where the oldest record starts, and bytes held (both in stream positions modulo the capacity).
    head: usize,
    used: usize,
    records: usize,
    newest_us: u64,
    /// Records evicted to make room, and packets refused because one record would not fit at all.
    pub evicted: u64,
    pub too_big: u64,
}

impl Ring {
    /// A ring of `bytes` capacity (allocated now, once).
    pub fn new(bytes: usize) -> Ring {
        Ring {
            buf: vec![0; bytes].into_boxed_slice(),
            head: 0,
            used: 0,
            records: 0,
            newest_us: 0,
            evicted: 0,
            too_big: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Bytes held now (headers included): never more than the capacity.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    fn copy_in(&mut self, at: usize, bytes: &[u8]) {
        let cap = self.buf.len();
        let at = at % cap;
        let first = bytes.len().min(cap - at);
        self.buf[at..at + first].copy_from_slice(&bytes[..first]);
        self.buf[..bytes.len() - first].copy_from_slice(&bytes[first..]);
    }

    fn copy_out(&self, at: usize, out: &mut [u8]) {
        let cap = self.buf.len();
        let at = at % cap;
        let first = out.len().min(cap - at);
        out[..first].copy_from_slice(&self.buf[at..at + first]);
        let n = out.len() - first;
        out[first..].copy_from_slice(&self.buf[..n]);
    }

    fn header_at(&self, at: usize) -> [u8; HEADER] {
        let mut h = [0; HEADER];
        self.copy_out(at, &mut h);
        h
    }

    fn stored_len(h: &[u8; HEADER]) -> usize {
        u32::from_le_bytes([h[12], h[13], h[14], h[15]]) as usize & 0x00ff_ffff
    }

    /// Drops the oldest record.
    fn evict(&mut self) {
        let h = self.header_at(self.head);
        let n = HEADER + Self::stored_len(&h);
        self.head = (self.head + n) % self.buf.len();
        self.used -= n;
        self.records -= 1;
        self.evicted += 1;
    }

    /// Stores a packet (its first `snap` bytes at most; 0 = all), evicting the oldest records to make room.
    /// Returns false (counted in `too_big`) when even an empty ring could not hold it.
    pub fn push(&mut self, time_us: u64, direction: Direction, origin: Origin, packet: &[u8], snap: usize) -> bool {
        self.push_cut(time_us, direction, origin, packet, packet.len() as u32, snap)
    }

    /// As `push`, for bytes that may already be the first part of a packet `len` bytes long.
    pub fn push_cut(
        &mut self,
        time_us: u64,
        direction: Direction,
        origin: Origin,
        packet: &[u8],
        len: u32,
        snap: usize,
    ) -> bool {
        let stored = if snap == 0 { packet.len() } else { packet.len().min(snap) };
        let need = HEADER + stored;
        if need > self.buf.len() || stored > 0x00ff_ffff {
            self.too_big += 1;
            return false;
        }
        while self.buf.len() - self.used < need {
            self.evict();
        }
        let mut h = [0u8; HEADER];
        h[..8].copy_from_slice(&time_us.to_le_bytes());
        h[8..12].copy_from_slice(&len.max(stored as u32).to_le_bytes());
        let flags: u32 = (matches!(direction, Direction::In) as u32) << 24
            | (match origin {
                Origin::Nat => 0,
                Origin::Dns => 1,
                Origin::Dhcp => 2,
            }) << 25;
        h[12..16].copy_from_slice(&(stored as u32 | flags).to_le_bytes());
        let at = self.head + self.used;
        self.copy_in(at, &h);
        self.copy_in(at + HEADER, &packet[..stored]);
        self.used += need;
        self.records += 1;
        self.newest_us = time_us;
        true
    }

    /// Every record from oldest to newest, decoded, each in a `Vec` of its own (tests and small rings).
    pub fn packets(&self) -> Vec<Packet> {
        let snap = self.snapshot();
        snap.iter()
            .map(|p| Packet {
                time_us: p.time_us,
                len: p.len,
                direction: p.direction,
                origin: p.origin,
                data: p.data.to_vec(),
            })
            .collect()
    }

    /// A copy of every record, oldest first, in one buffer: taken at once (a memory copy of what the ring
    /// holds), read at leisure while the ring goes on being written.
    pub fn snapshot(&self) -> Snapshot {
        let mut bytes = vec![0; self.used];
        self.copy_out(self.head, &mut bytes);
        Snapshot { bytes, records: self.records }
    }

    /// The oldest and newest records' times, if any.
    pub fn span_us(&self) -> Option<(u64, u64)> {
        if self.records == 0 {
            return None;
        }
        let first = u64::from_le_bytes(self.header_at(self.head)[..8].try_into().expect("8 bytes"));
        Some((first, self.newest_us))
    }

    /// Forgets every record (the admin cleared the ring).
    pub fn clear(&mut self) {
        self.head = 0;
        self.used = 0;
        self.records = 0;
        self.newest_us = 0;
    }
}

/// A ring's records copied out in order (see [`Ring::snapshot`]).
pub struct Snapshot {
    bytes: Vec<u8>,
    records: usize,
}

/// One record of a snapshot.
#[derive(Debug, Clone, Copy)]
pub struct PacketRef<'a> {
    pub time_us: u64,
    pub len: u32,
    pub direction: Direction,
    pub origin: Origin,
    pub data: &'a [u8],
}

impl Snapshot {
    pub fn len(&self) -> usize {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// Bytes held (headers included).
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = PacketRef<'_>> + '_ {
        let mut at = 0;
        std::iter::from_fn(move || {
            let h: &[u8; HEADER] = self.bytes.get(at..at + HEADER)?.try_into().ok()?;
            let stored = Ring::stored_len(h);
            let flags = u32::from_le_bytes([h[12], h[13], h[14], h[15]]) >> 24;
            let data = self.bytes.get(at + HEADER..at + HEADER + stored)?;
            at += HEADER + stored;
            Some(PacketRef {
                time_us: u64::from_le_bytes(h[..8].try_into().expect("8 bytes")),
                len: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
                direction: if flags & 1 == 1 { Direction::In } else { Direction::Out },
                origin: match (flags >> 1) & 3 {
                    1 => Origin::Dns,
                    2 => Origin::Dhcp,
                    _ => Origin::Nat,
                },
                data,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_the_newest_whole_records_and_their_metadata() {
        let mut r = Ring::new(100);
        assert!(r.push(1, Direction::Out, Origin::Nat, &[1; 30], 0));
        assert!(r.push(2, Direction::In, Origin::Dns, &[2; 30], 0));
        // 46 + 46 = 92 used; the third needs 46: the first goes.
        assert!(r.push(3, Direction::Out, Origin::Dhcp, &[3; 30], 0));
        let p = r.packets();
        assert_eq!(p.iter().map(|p| p.time_us).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!((p[0].direction, p[0].origin, p[0].data.clone()), (Direction::In, Origin::Dns, vec![2; 30]));
        assert_eq!((p[1].direction, p[1].origin), (Direction::Out, Origin::Dhcp));
        assert_eq!((r.evicted, r.used()), (1, 92));
        // A snap length keeps the first bytes and the original length.
        assert!(r.push(4, Direction::Out, Origin::Nat, &[4; 60], 10));
        let last = r.packets().pop().unwrap();
        assert_eq!((last.len, last.data.len()), (60, 10));
        // Larger than the whole ring: refused and counted, nothing lost.
        let before = r.packets();
        assert!(!r.push(5, Direction::Out, Origin::Nat, &[5; 90], 0));
        assert_eq!((r.too_big, r.packets()), (1, before));
        r.clear();
        assert!(r.is_empty() && r.packets().is_empty());
    }

    proptest! {
        /// Against a model (a list of what fits, newest last): the ring holds exactly the newest packets whose
        /// records fit in its capacity, byte for byte, and never more than its capacity.
        #[test]
        fn holds_exactly_the_newest_that_fit(
            cap in 16usize..400,
            packets in proptest::collection::vec((0usize..120, 0usize..3), 0..200),
        ) {
            let mut r = Ring::new(cap);
            let mut model: std::collections::VecDeque<(u64, Vec<u8>)> = Default::default();
            for (i, (len, snap)) in packets.into_iter().enumerate() {
                let data: Vec<u8> = (0..len).map(|b| (b + i) as u8).collect();
                let snap = [0, 8, 64][snap];
                let stored = if snap == 0 { len } else { len.min(snap) };
                let ok = r.push(i as u64, Direction::Out, Origin::Nat, &data, snap);
                prop_assert_eq!(ok, HEADER + stored <= cap);
                if ok {
                    model.push_back((i as u64, data[..stored].to_vec()));
                    while model.iter().map(|(_, d)| HEADER + d.len()).sum::<usize>() > cap {
                        model.pop_front();
                    }
                }
                prop_assert!(r.used() <= cap);
            }
            let got: Vec<(u64, Vec<u8>)> = r.packets().into_iter().map(|p| (p.time_us, p.data)).collect();
            prop_assert_eq!(got, model.into_iter().collect::<Vec<_>>());
        }
    }
}
