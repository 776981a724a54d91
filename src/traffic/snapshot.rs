//! The traffic history on disk: a snapshot written whole (atomically, by the shell) every minute and at shutdown,
//! read back at start.
//!
//! The file is the state log's framing (`state::log`: an 8-byte magic, then `[len][crc][payload]` frames) with one
//! self-contained frame per item: a header, one per device (identity, first/last seen, totals, hourly and
//! per-minute totals), one per history block (which pair, and the block as stored, see `series`). A truncated or
//! corrupt file gives back every frame before the damage; a frame that does not decode, or a block that does not
//! validate, is skipped and counted. Nothing in a snapshot can make restoring panic or allocate more than the
//! file's size.

use super::core::{DeviceState, Totals, Traffic};
use super::series::{Block, Flow};
use crate::state::bytes::ByteReader;
use crate::state::log::{parse_frames, push_frame};
use crate::types::{Device, Mac};
use std::net::{IpAddr, Ipv6Addr};

pub const MAGIC: &[u8; 8] = b"GKTRAF01";

const TAG_HEADER: u8 = 1;
const TAG_DEVICE: u8 = 2;
const TAG_BLOCK: u8 = 3;

/// What [`Traffic::restore`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    pub devices: usize,
    pub blocks: usize,
    pub buckets: u64,
    /// Frames whose CRC was right but whose content was not (skipped).
    pub skipped: usize,
    /// Bytes at the end that were not whole frames (a torn or corrupt tail), 0 for a sound file.
    pub torn_bytes: usize,
    /// When the snapshot was taken (Unix ms), if its header survived.
    pub saved_at_ms: Option<u64>,
}

fn put_u32(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_le_bytes());
}
fn put_flow(o: &mut Vec<u8>, f: Flow) {
    put_u64(o, f.bytes);
    put_u32(o, f.packets);
}
fn put_device(o: &mut Vec<u8>, d: &Device) {
    match d {
        Device::Mac(m) => {
            o.push(0);
            o.extend_from_slice(&m.0);
        }
        Device::Ip(IpAddr::V4(a)) => {
            o.push(1);
            o.extend_from_slice(&a.octets());
        }
        Device::Ip(IpAddr::V6(a)) => {
            o.push(2);
            o.extend_from_slice(&a.octets());
        }
    }
}

fn flow(r: &mut ByteReader<'_>) -> Option<Flow> {
    Some(Flow { bytes: r.u64()?, packets: r.u32()? })
}

fn device(r: &mut ByteReader<'_>) -> Option<Device> {
    Some(match r.u8()? {
        0 => Device::Mac(Mac(r.array()?)),
        1 => Device::Ip(IpAddr::V4(r.ipv4()?)),
        2 => Device::Ip(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
        _ => return None,
    })
}

fn put_slots(o: &mut Vec<u8>, slots: &std::collections::VecDeque<(u64, [Flow; 2])>) {
    put_u32(o, slots.len() as u32);
    for (t, v) in slots {
        put_u64(o, *t);
        put_flow(o, v[0]);
        put_flow(o, v[1]);
    }
}

fn read_slots(r: &mut ByteReader<'_>) -> Option<std::collections::VecDeque<(u64, [Flow; 2])>> {
    let n = r.count(8 + 24)?;
    let mut v = std::collections::VecDeque::with_capacity(n);
    for _ in 0..n {
        let t = r.u64()?;
        let f = [flow(r)?, flow(r)?];
        if v.back().is_some_and(|&(last, _)| last >= t) {
            return None;
        }
        v.push_back((t, f));
    }
    Some(v)
}

impl Traffic {
    /// The whole history as a snapshot file's bytes (the open bucket is not in it: at most 100 ms).
    pub fn snapshot(&self, now_ms: u64) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        push_frame(&mut out, |o| {
            o.push(TAG_HEADER);
            put_u64(o, now_ms);
            put_u64(o, self.complete_from);
        });
        for d in &self.devices {
            push_frame(&mut out, |o| {
                o.push(TAG_DEVICE);
                put_device(o, &d.id);
                put_u64(o, d.first_seen_ms);
                put_u64(o, d.last_seen_ms);
                match d.ip {
                    Some(ip) => {
                        o.push(1);
                        o.extend_from_slice(&ip.octets());
                    }
                    None => o.push(0),
                }
                let t = &d.total;
                for v in [t.up_bytes, t.down_bytes, t.up_packets, t.down_packets] {
                    put_u64(o, v);
                }
                put_slots(o, &d.hours);
                put_slots(o, &d.minutes);
            });
        }
        for p in self.pairs.iter().flatten() {
            let id = self.devices[p.device as usize].id;
            for b in p.series.blocks() {
                push_frame(&mut out, |o| {
                    o.push(TAG_BLOCK);
                    put_device(o, &id);
                    o.extend_from_slice(&p.remote.octets());
                    put_u64(o, b.start);
                    put_u64(o, b.last);
                    put_flow(o, b.prev[0]);
                    put_flow(o, b.prev[1]);
                    put_u32(o, b.count);
                    put_u32(o, b.data.len() as u32);
                    o.extend_from_slice(&b.data);
                });
            }
        }
        out
    }

    /// Loads a snapshot into a fresh core (before any record). Whatever is damaged is skipped and reported.
    pub fn restore(&mut self, data: &[u8]) -> Restored {
        let mut r = Restored::default();
        if !data.starts_with(MAGIC) {
            r.torn_bytes = data.len();
            return r;
        }
        let end = parse_frames(data, MAGIC.len(), |payload| {
            if self.restore_frame(payload, &mut r).is_none() {
                r.skipped += 1;
            }
        });
        r.torn_bytes = data.len() - end;
        r
    }

    fn restore_frame(&mut self, payload: &[u8], r: &mut Restored) -> Option<()> {
        let mut rd = ByteReader::new(payload);
        match rd.u8()? {
            TAG_HEADER => {
                r.saved_at_ms = Some(rd.u64()?);
                self.complete_from = self.complete_from.max(rd.u64()?);
            }
            TAG_DEVICE => {
                let id = device(&mut rd)?;
                let first_seen_ms = rd.u64()?;
                let last_seen_ms = rd.u64()?;
                let ip = match rd.u8()? {
                    0 => None,
                    1 => Some(rd.ipv4()?),
                    _ => return None,
                };
                let total = Totals {
                    up_bytes: rd.u64()?,
                    down_bytes: rd.u64()?,
                    up_packets: rd.u64()?,
                    down_packets: rd.u64()?,
                };
                let hours = read_slots(&mut rd)?;
                let minutes = read_slots(&mut rd)?;
                let i = match self.device_ids.get(&id) {
                    Some(&i) => i as usize,
                    None => {
                        self.devices.push(DeviceState::new(id, first_seen_ms));
                        self.device_ids.insert(id, (self.devices.len() - 1) as u32);
                        self.devices.len() - 1
                    }
                };
                let d = &mut self.devices[i];
                d.first_seen_ms = first_seen_ms;
                d.last_seen_ms = last_seen_ms;
                d.ip = ip;
                d.total = total;
                d.hours = hours;
                d.minutes = minutes;
                r.devices += 1;
            }
            TAG_BLOCK => {
                let id = device(&mut rd)?;
                let remote = rd.ipv4()?;
                let start = rd.u64()?;
                let last = rd.u64()?;
                let prev = [flow(&mut rd)?, flow(&mut rd)?];
                let count = rd.u32()?;
                let len = rd.u32()? as usize;
                let data = rd.take(len)?.to_vec();
                let block = Block { start, last, prev, count, data };
                let d = match self.device_ids.get(&id) {
                    Some(&i) => i,
                    None => {
                        self.devices.push(DeviceState::new(id, 0));
                        let i = (self.devices.len() - 1) as u32;
                        self.device_ids.insert(id, i);
                        i
                    }
                };
                let p = self.pair_index(d, remote);
                let pair = self.pairs[p as usize].as_mut()?;
                if !pair.series.restore_block(block) {
                    return None;
                }
                r.blocks += 1;
                r.buckets += u64::from(count);
            }
            _ => return None,
        }
        Some(())
    }
}
