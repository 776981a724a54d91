//! `/metrics` end to end: the real gateway in a lab, scraped on the router's LAN address. Without the token it answers
//! 401; with it, `promtool check metrics` accepts the text, and the counters move as a device leases an address
//! (udhcpc), resolves a name through the router (dig, knotd upstream) and sends traffic through the NAT.

mod common;

use common::{config_file, spawn_in, start_ready, state_dir};
use gatekeeper::lab::{DhcpClient, WAN_ADDR, field, test_zone};
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "scrape-me-0123456789";
const URL: &str = "http://10.0.0.1:1337/metrics";

/// One sample's value: `name{labels}` (labels as written, in order) or `name` alone.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == series).then(|| v.parse().ok())?
    })
}

fn promtool(text: &str) -> (bool, String) {
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    p.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = p.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn metrics_pass_promtool_and_move_with_dhcp_dns_and_traffic() {
    let lab = common::lab(1);
    let _knot = lab.start_knot(WAN_ADDR, &format!("{}\nserver IN A {WAN_ADDR}\n", test_zone())).unwrap();
    let cfg = config_file(
        &lab,
        "gatekeeper.toml",
        &format!("[dns]\nupstreams = [\"{WAN_ADDR}:53\"]\n[web]\nmetrics_token = \"{TOKEN}\"\n"),
    );
    let state = state_dir(&lab, "state");
    let mut gw =
        start_ready(&lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], "gw.log");
    gw.wait_for_log("NAT on", Duration::from_secs(20)).unwrap();
    let ns = lab.client(1);
    // Scraped from `gw` itself (where the UI's LAN address is local), so the first scrape comes before the
    // device has an address.
    let gw_ns = lab.gw();
    let scrape = || {
        lab.run(&gw_ns, &["curl", "-sf", "-m5", "-H", &format!("Authorization: Bearer {TOKEN}"), URL])
            .unwrap_or_else(|e| panic!("GET /metrics: {e:#}"))
    };
    // Without the token, or with a wrong one: 401.
    for auth in ["", "Authorization: Bearer wrong-token-0123456789"] {
        let mut args = vec!["curl", "-s", "-m5", "-o", "/dev/null", "-w", "%{http_code}"];
        if !auth.is_empty() {
            args.extend(["-H", auth]);
        }
        args.push(URL);
        assert_eq!(lab.run(&gw_ns, &args).unwrap(), "401");
    }
    let before = scrape();
    let (ok, said) = promtool(&before);
    assert!(ok, "promtool check metrics: {said}");

    let mut c = lab.dhcp_client(1, DhcpClient::Udhcpc, Some("laptop")).unwrap();
    field(&c.wait_event(0, &["bound"], Duration::from_secs(30)).unwrap(), "ip").unwrap();
    let mac = lab.client_mac(1).unwrap();
    let answer = lab.run(&ns, &["dig", "+short", "@10.0.0.1", "server.test", "A"]).unwrap();
    assert_eq!(answer.trim(), WAN_ADDR);
    spawn_in(&ns, || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..50 {
            u.send_to(&[0u8; 1000], (WAN_ADDR, 5683)).unwrap();
        }
    })
    .join()
    .unwrap();

    let up = format!("gatekeeper_device_bytes_total{{device=\"{mac}\",name=\"laptop\",direction=\"up\"}}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let after = loop {
        let t = scrape();
        if sample(&t, &up).unwrap_or(0.0) >= 50_000.0 || Instant::now() > deadline {
            break t;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let (ok, said) = promtool(&after);
    assert!(ok, "promtool check metrics: {said}");
    let grew = |series: &str, by: f64| {
        let (b, a) = (sample(&before, series).unwrap_or(0.0), sample(&after, series));
        assert!(a.is_some_and(|a| a >= b + by), "{series}: {b} -> {a:?}\n{after}");
    };
    grew("gatekeeper_dhcp_sent_total{type=\"ack\"}", 1.0);
    grew("gatekeeper_dhcp_received_total{type=\"discover\"}", 1.0);
    grew("gatekeeper_dhcp_leases{state=\"active\"}", 1.0);
    grew("gatekeeper_dns_queries_total", 1.0);
    grew("gatekeeper_dns_cache_misses_total", 1.0);
    grew("gatekeeper_dns_answers_total{rcode=\"noerror\"}", 1.0);
    grew("gatekeeper_dns_upstream_latency_seconds_count", 1.0);
    grew("gatekeeper_dns_upstream_latency_seconds_bucket{le=\"+Inf\"}", 1.0);
    grew("gatekeeper_nat_translated_total", 50.0);
    grew(&up, 50_000.0);
    assert!(sample(&after, "gatekeeper_process_resident_memory_bytes").unwrap() > 1e6, "{after}");
    assert!(sample(&after, "gatekeeper_nat_connections").unwrap() >= 1.0, "{after}");
    gw.terminate(Duration::from_secs(10)).unwrap();
}
