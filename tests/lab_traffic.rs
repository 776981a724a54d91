//! The lab's traffic generator (what `gatekeeper lab` starts unless `--quiet`): devices in LAN namespaces reach the
//! servers in `wan` through the gateway's DHCP, DNS and NAT, and stop cleanly.

mod common;

use common::*;
use gatekeeper::lab::{DhcpClient, WAN_ADDR, test_zone, traffic};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Waits up to 15 s for the generator's stats to satisfy `ok`; returns them.
fn wait_for(generator: &traffic::Generator, what: &str, ok: impl Fn(&traffic::Stats) -> bool) -> traffic::Stats {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = generator.stats();
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "no {what} within 15 s: {s:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn devices_fetch_look_up_ping_and_chat_through_the_gateway() {
    let lab = lab(2);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let cfg = config_file(&lab, "gatekeeper.toml", &format!("[dns]\nupstreams = [\"{WAN_ADDR}:53\"]\n"));
    let state = state_dir(&lab, "state");
    let mut gw =
        start_ready(&lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], "gw.log");
    gw.wait_for_log("DHCP server ready", Duration::from_secs(20)).unwrap();
    let devices = [("laptop".to_owned(), 1), ("camera".to_owned(), 2)];
    // Started before the devices have addresses: the first turns fail, are counted, and come again soon.
    let generator = traffic::start(&lab, "10.0.0.1".parse().unwrap(), &devices).unwrap();
    let mut clients: Vec<_> =
        devices.iter().map(|(name, i)| lab.dhcp_client(*i, DhcpClient::Udhcpc, Some(name)).unwrap()).collect();
    for c in &mut clients {
        c.wait_event(0, &["bound"], Duration::from_secs(20)).unwrap();
    }

    let stats =
        wait_for(&generator, "every kind of traffic", |s| s.fetches > 0 && s.lookups > 0 && s.pings > 0 && s.acks > 0);
    // The servers in wan saw the devices only as the gateway's WAN address: the traffic crossed the NAT.
    let wan: IpAddr = "203.0.113.2".parse().unwrap();
    assert!(stats.http_requests >= stats.fetches && stats.http_bytes >= stats.fetched_bytes, "{stats:?}");
    assert_eq!(stats.http_peers.iter().collect::<Vec<_>>(), [&wan], "{stats:?}");
    assert!(stats.udp_datagrams > 0, "{stats:?}");
    assert_eq!(stats.udp_peers.iter().collect::<Vec<_>>(), [&wan], "{stats:?}");
    // ... and the web UI's numbers moved.
    let nat = common::api_get(&lab, &lab.client(1), "/api/nat");
    let nat: serde_json::Value = serde_json::from_str(&nat).unwrap();
    assert!(counter(&nat["counters"], "translated", &[]).unwrap() > 0, "{nat}");
    assert!(counter(&nat["counters"], "mappings_created", &[]).unwrap() >= 2, "{nat}");

    // The gateway dies and comes back: the devices count their failures and carry on.
    gw.kill9().unwrap();
    let failures = wait_for(&generator, "failures while the gateway is dead", |s| s.failures > stats.failures);
    let mut gw =
        start_ready(&lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], "gw-again.log");
    wait_for(&generator, "traffic after the restart", |s| s.fetches > failures.fetches && s.lookups > failures.lookups);

    let stopping = Instant::now();
    let total = generator.stop();
    eprintln!("traffic: {total}");
    assert!(stopping.elapsed() < Duration::from_secs(6), "stopping took {:?}", stopping.elapsed());
    assert!(total.fetches >= stats.fetches, "{total:?}");
    // Every thread it started has ended (their names start with `lab-`).
    let threads: Vec<String> = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("lab-"))
        .collect();
    assert!(threads.is_empty(), "threads left: {threads:?}");
    assert!(gw.terminate(Duration::from_secs(10)).unwrap().success(), "{}", gw.log());
}
