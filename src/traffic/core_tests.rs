use super::*;
use crate::nat::L4;

const T0: u64 = 1_800_000_000_000; // a Unix ms, on a bucket boundary

fn lan(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, n)
}
fn wan(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(203, 0, 113, n)
}
fn mac(n: u8) -> Mac {
    Mac([2, 0, 0, 0, 0, n])
}

fn rec(at_ms: u64, device: Ipv4Addr, remote: Ipv4Addr, way: Way, bytes: u32) -> PacketRecord {
    PacketRecord {
        at_ms,
        device,
        remote,
        device_port: 40000,
        remote_port: 53,
        bytes,
        segments: 1,
        ip_proto: 17,
        protocol: L4::Udp,
        way,
        hairpin: false,
        verdict: Verdict::Translated,
    }
}

fn all() -> Select {
    Select { device: None, remote: None }
}

fn sum(v: &[[u64; 2]]) -> [u64; 2] {
    v.iter().fold([0, 0], |a, x| [a[0] + x[0], a[1] + x[1]])
}

#[test]
fn a_pairs_history_sums_to_exactly_what_crossed() {
    let mut t = Traffic::new(TrafficConfig::default());
    t.set_host(lan(5), mac(5));
    // k = 7 datagrams of 100 bytes of payload up (+ 28 header bytes each), replies of 300 down, 40 ms apart.
    for i in 0..7u64 {
        t.ingest(&rec(T0 + i * 40, lan(5), wan(1), Way::Up, 128));
        t.ingest(&rec(T0 + i * 40 + 3, lan(5), wan(1), Way::Down, 328));
    }
    t.advance(T0 + 10_000);
    let d = Some(Device::Mac(mac(5)));
    let s = t.series(&Select { device: d, remote: Some(wan(1)) }, T0, 100, 10);
    assert_eq!(sum(&s), [7 * 128, 7 * 328]);
    // 40 ms apart: buckets 0..=2 hold 3, 2 (+ the 3rd's reply at 83 ms), 2.
    assert_eq!(s[0], [3 * 128, 3 * 328]);
    // Another step gives the same totals.
    assert_eq!(sum(&t.series(&all(), T0 - 5000, 1000, 20)), [7 * 128, 7 * 328]);
    let st = t.range_stats(&Select { device: d, remote: None }, T0, T0 + 1000);
    assert_eq!((st.totals.up_packets, st.totals.down_packets), (7, 7));
    assert_eq!(st.totals.up_bytes, 7 * 128);
    assert_eq!(st.active_ms, 300);
    assert_eq!(st.peak_down_bps, 3 * 328 * 10);
    assert_eq!(st.peak_down_at, Some(T0));
    let devs = t.devices(T0 + 500);
    assert_eq!(devs.len(), 1);
    assert_eq!(devs[0].device, Device::Mac(mac(5)));
    assert_eq!(devs[0].ip, Some(lan(5)));
    assert_eq!(devs[0].last_second, [7 * 128, 7 * 328]);
    assert_eq!(devs[0].last_hour, [7 * 128, 7 * 328]);
    assert_eq!(devs[0].total.up_packets, 7);
    assert_eq!(t.devices(T0 + 5000)[0].last_second, [0, 0]);
}

#[test]
fn a_device_keeps_one_history_when_its_address_changes() {
    let mut t = Traffic::new(TrafficConfig::default());
    t.set_host(lan(5), mac(5));
    t.ingest(&rec(T0, lan(5), wan(1), Way::Up, 100));
    t.remove_host(lan(5));
    t.set_host(lan(9), mac(5));
    t.ingest(&rec(T0 + 200, lan(9), wan(1), Way::Up, 50));
    // An address nobody leased is counted under itself.
    t.ingest(&rec(T0 + 300, lan(77), wan(1), Way::Up, 10));
    t.advance(T0 + 1000);
    let devs = t.devices(T0 + 1000);
    assert_eq!(devs.len(), 2);
    let d = devs.iter().find(|d| d.device == Device::Mac(mac(5))).unwrap();
    assert_eq!(d.total.up_bytes, 150);
    assert_eq!(d.ip, Some(lan(9)), "its address now");
    assert!(devs.iter().any(|d| d.device == Device::Ip(IpAddr::V4(lan(77)))));
    let s = t.series(&Select { device: Some(Device::Mac(mac(5))), remote: None }, T0, 100, 10);
    assert_eq!(s[0], [100, 0]);
    assert_eq!(s[2], [50, 0]);
}

#[test]
fn one_tick_per_bucket_with_devices_and_remotes() {
    let mut t = Traffic::new(TrafficConfig::default());
    t.set_host(lan(5), mac(5));
    t.advance(T0);
    t.ingest(&rec(T0 + 10, lan(5), wan(1), Way::Up, 100));
    t.ingest(&rec(T0 + 20, lan(5), wan(2), Way::Down, 200));
    t.ingest(&rec(T0 + 30, lan(6), wan(2), Way::Down, 5));
    assert!(t.take_ticks().is_empty(), "the bucket is still open");
    t.advance(T0 + 100);
    let ticks = t.take_ticks();
    assert_eq!(ticks.len(), 1);
    let tick = &ticks[0];
    assert_eq!(tick.at_ms, T0);
    assert_eq!(tick.devices.len(), 2);
    let me = tick.devices.iter().find(|d| d.device == Device::Mac(mac(5))).unwrap();
    assert_eq!((me.up, me.down), (100, 200));
    assert_eq!(tick.remotes.len(), 3);
    // Quiet buckets still tick, empty.
    t.advance(T0 + 450);
    let quiet = t.take_ticks();
    assert_eq!(quiet.iter().map(|t| t.at_ms).collect::<Vec<_>>(), vec![T0 + 100, T0 + 200, T0 + 300]);
    assert!(quiet.iter().all(|t| t.devices.is_empty()));
    // A record of a later bucket closes the open one itself.
    t.ingest(&rec(T0 + 620, lan(5), wan(1), Way::Up, 1));
    assert_eq!(t.take_ticks().iter().map(|t| t.at_ms).collect::<Vec<_>>(), vec![T0 + 400, T0 + 500]);
    // A late record (its bucket closed) counts into the open bucket.
    t.ingest(&rec(T0 + 150, lan(5), wan(1), Way::Up, 7));
    assert_eq!(t.stats().late, 1);
    t.advance(T0 + 700);
    let last = t.take_ticks();
    assert_eq!(last[0].devices[0].up, 8);
    assert_eq!(t.backlog().len(), 7);
    // A jump of the clock: the open bucket's tick, then a minute of empty ticks at most.
    t.advance(T0 + 3_600_000);
    assert_eq!(t.take_ticks().len(), 1 + BACKLOG_TICKS);
    assert_eq!(t.backlog().len(), BACKLOG_TICKS);
}

#[test]
fn drops_and_local_packets_are_counted_apart() {
    let mut t = Traffic::new(TrafficConfig::default());
    let mut r = rec(T0, lan(5), wan(1), Way::Up, 100);
    r.verdict = Verdict::Drop(DropReason::NoMapping);
    t.ingest(&r);
    r.verdict = Verdict::Local;
    t.ingest(&r);
    t.advance(T0 + 1000);
    assert!(t.devices(T0).is_empty());
    assert_eq!(t.stats().dropped[&DropReason::NoMapping], (1, 100));
    assert_eq!(t.stats().local, 1);
    let c = t.counters();
    assert_eq!(c.get("dropped_bytes", &[("reason", "no_mapping")]), Some(100));
}

#[test]
fn hairpinned_packets_count_for_both_devices() {
    let mut t = Traffic::new(TrafficConfig::default());
    let mut r = rec(T0, lan(5), lan(6), Way::Up, 100);
    r.hairpin = true;
    t.ingest(&r);
    t.advance(T0 + 100);
    let s6 = t.series(&Select { device: Some(Device::Ip(lan(6).into())), remote: Some(lan(5)) }, T0, 100, 1);
    assert_eq!(s6[0], [0, 100]);
    let s5 = t.series(&Select { device: Some(Device::Ip(lan(5).into())), remote: Some(lan(6)) }, T0, 100, 1);
    assert_eq!(s5[0], [100, 0]);
}

#[test]
fn gso_records_count_their_segments() {
    let mut t = Traffic::new(TrafficConfig::default());
    let mut r = rec(T0, lan(5), wan(1), Way::Down, 65_000);
    r.segments = 45;
    t.ingest(&r);
    t.advance(T0 + 100);
    let st = t.range_stats(&all(), T0, T0 + 100);
    assert_eq!((st.totals.down_bytes, st.totals.down_packets), (65_000, 45));
}

#[test]
fn top_lists_remotes_of_a_device_and_devices_of_all() {
    let mut t = Traffic::new(TrafficConfig::default());
    for (i, n) in [(1u8, 500u32), (2, 100), (3, 900)] {
        t.ingest(&rec(T0 + u64::from(i), lan(5), wan(i), Way::Down, n));
    }
    t.ingest(&rec(T0 + 5, lan(6), wan(1), Way::Up, 50));
    t.advance(T0 + 200);
    let d5 = Some(Device::Ip(lan(5).into()));
    let top = t.top(d5, T0, T0 + 1000, 2);
    assert_eq!(top.iter().map(|e| e.remote.unwrap()).collect::<Vec<_>>(), vec![wan(3), wan(1)]);
    let devs = t.top(None, T0, T0 + 1000, 10);
    assert_eq!(devs[0].device, d5);
    assert_eq!(devs[0].totals.down_bytes, 1500);
    assert_eq!(devs[1].totals.up_bytes, 50);
}

#[test]
fn history_ages_out_after_a_day_but_hourly_totals_stay() {
    let mut t = Traffic::new(TrafficConfig::default());
    t.ingest(&rec(T0, lan(5), wan(1), Way::Up, 100));
    t.ingest(&rec(T0 + 2 * HOUR_MS, lan(5), wan(1), Way::Up, 10));
    t.advance(T0 + 2 * HOUR_MS + 100);
    t.maintain(T0 + HISTORY_MS + HOUR_MS);
    assert_eq!(t.stats().expired_buckets, 1);
    assert_eq!(sum(&t.series(&all(), T0 - 1000, 10 * 60_000, 1000)), [10, 0]);
    let d = Some(Device::Ip(lan(5).into()));
    let daily = t.usage(d, T0 - HISTORY_MS, T0 + 2 * HISTORY_MS, 24 * HOUR_MS);
    assert_eq!(daily.iter().map(|(_, v)| v[0]).sum::<u64>(), 110);
    let hourly = t.usage(d, 0, u64::MAX, HOUR_MS);
    assert_eq!(hourly.len(), 2);
    // Past the day the per-minute totals (last hour, last day) are empty; the 90-day totals are not.
    t.maintain(T0 + 3 * HISTORY_MS);
    let s = &t.devices(T0 + 3 * HISTORY_MS)[0];
    assert_eq!(s.last_day, [0, 0]);
    assert_eq!(t.usage(d, 0, u64::MAX, HOUR_MS).len(), 2);
    assert_eq!(t.memory().pairs, 0, "an emptied pair is freed");
    t.maintain(T0 + LONG_MS + 3 * HOUR_MS);
    assert!(t.usage(d, 0, u64::MAX, HOUR_MS).is_empty());
}

#[test]
fn the_memory_cap_evicts_the_oldest_buckets_first() {
    let cap = 200_000;
    let mut t = Traffic::new(TrafficConfig { memory_bytes: cap });
    // 40 pairs, a bucket each every 300 ms for 20 minutes: well over 200 kB.
    let mut at = T0;
    while at < T0 + 20 * MINUTE_MS {
        for r in 0..40u8 {
            t.ingest(&rec(at + u64::from(r), lan(5), wan(r), Way::Down, 1000 + u32::from(r)));
        }
        at += 300;
        if at % MINUTE_MS < 300 {
            t.maintain(at);
        }
    }
    t.advance(at);
    t.maintain(at);
    let m = t.memory();
    assert!(m.history_bytes <= cap, "{m:?}");
    assert!(t.stats().evicted_buckets > 0);
    assert!(m.complete_from_ms > T0, "the stats say from when the history is complete");
    // What is left is the newest: everything after `complete_from` is there, nothing before.
    let kept = t.series(&all(), T0, 60_000, 21);
    let first_full = ((m.complete_from_ms - T0) / 60_000 + 1) as usize;
    assert!(kept[..first_full.saturating_sub(1)].iter().all(|v| v[1] == 0), "{kept:?}");
    let per_minute = 200 * 40 * 1000 + 40 * 39 / 2 * 200;
    assert_eq!(kept[19][1], per_minute as u64, "the last full minute is whole");
    assert!(m.bytes_per_bucket < 8.0, "{m:?}");
}

#[test]
fn snapshot_round_trips_and_survives_truncation_at_every_offset() {
    let mut t = Traffic::new(TrafficConfig::default());
    t.set_host(lan(5), mac(5));
    for i in 0..3000u64 {
        t.ingest(&rec(T0 + i * 150, lan(5), wan((i % 5) as u8), Way::Up, 60 + (i % 3) as u32));
        t.ingest(&rec(T0 + i * 150 + 1, lan(6), wan(1), Way::Down, 1500));
    }
    t.advance(T0 + 3000 * 150 + 100);
    t.maintain(T0 + 3000 * 150 + 100);
    let snap = t.snapshot(T0 + 500_000);
    let mut u = Traffic::new(TrafficConfig::default());
    let r = u.restore(&snap);
    assert_eq!((r.skipped, r.torn_bytes, r.saved_at_ms), (0, 0, Some(T0 + 500_000)));
    assert_eq!(r.devices, 2);
    let want = t.series(&all(), T0, 1000, 500);
    assert_eq!(u.series(&all(), T0, 1000, 500), want);
    // (The last second is not in a snapshot: a restart loses it anyway.)
    let later = T0 + 3000 * 150 + 5000;
    assert_eq!(u.devices(later), t.devices(later));
    u.maintain(T0 + 500_000);
    assert_eq!(u.memory().buckets, t.memory().buckets);
    // Truncated anywhere: whatever whole frames remain, never a panic, never more than was there.
    let total = sum(&want);
    let mut before = 0;
    for cut in 0..snap.len() {
        let mut v = Traffic::new(TrafficConfig::default());
        let r = v.restore(&snap[..cut]);
        assert_eq!(r.skipped, 0, "cut at {cut}");
        let got = sum(&v.series(&all(), T0, 1000, 500));
        assert!(got[0] <= total[0] && got[1] <= total[1], "cut at {cut}");
        assert!(r.buckets >= before, "a longer prefix restores at least as much (cut at {cut})");
        before = r.buckets;
    }
    assert!(before > 0 && before < t.memory().buckets);
    // Garbage is not a snapshot, and restoring it is harmless.
    let mut w = Traffic::new(TrafficConfig::default());
    assert_eq!(w.restore(b"not a snapshot at all").torn_bytes, 21);
    assert!(w.devices(T0).is_empty());
}

#[test]
fn corrupt_frames_are_skipped() {
    let mut t = Traffic::new(TrafficConfig::default());
    t.ingest(&rec(T0, lan(5), wan(1), Way::Up, 100));
    t.advance(T0 + 100);
    let mut snap = t.snapshot(T0);
    // A frame with a good CRC and a bad body: an unknown tag.
    crate::state::log::push_frame(&mut snap, |o| o.extend_from_slice(&[99, 1, 2, 3]));
    let mut u = Traffic::new(TrafficConfig::default());
    let r = u.restore(&snap);
    assert_eq!(r.skipped, 1);
    assert_eq!(sum(&u.series(&all(), T0, 100, 1)), [100, 0]);
}

#[test]
fn top_of_all_devices_agrees_with_the_buckets_over_any_range() {
    let mut t = Traffic::new(TrafficConfig::default());
    // Three devices over five minutes, the last record still in the open bucket.
    let mut at = T0 + 37;
    let mut n = 0u32;
    while at < T0 + 5 * MINUTE_MS {
        n += 1;
        t.ingest(&rec(
            at,
            lan(1 + (n % 3) as u8),
            wan((n % 7) as u8),
            if n.is_multiple_of(2) { Way::Up } else { Way::Down },
            40 + n % 500,
        ));
        at += 173;
        if n.is_multiple_of(50) {
            t.maintain(at);
        }
    }
    for (from, to) in [
        (T0, T0 + 5 * MINUTE_MS),
        (T0 + 12_345, T0 + 4 * MINUTE_MS + 999),
        (T0 + MINUTE_MS, T0 + 3 * MINUTE_MS),
        (T0 - 7 * MINUTE_MS, T0 + 9 * MINUTE_MS),
        (T0 + 100, T0 + 50_000),
    ] {
        let top = t.top(None, from, to, 10);
        for d in 1..=3u8 {
            let dev = Device::Ip(lan(d).into());
            let want = t.range_stats(&Select { device: Some(dev), remote: None }, from, to).totals;
            let got = top.iter().find(|e| e.device == Some(dev)).map_or(Totals::default(), |e| e.totals);
            assert_eq!(got, want, "device {d}, {from}..{to}");
        }
    }
}
