//! End-to-end DNS: the gateway forwards to a knotd upstream in `wan`, caches, serves NAME.lan, and stays quiet on
//! the WAN side. Clients are dig/kdig in LAN namespaces.

mod common;

use common::*;
use gatekeeper::lab::{DhcpClient, Lab, Proc, WAN_ADDR, WAN_ADDR2, field, test_zone};
use std::time::{Duration, Instant};

fn start_dns(lab: &Lab, upstreams: &[&str]) -> Proc {
    let list: Vec<String> = upstreams.iter().map(|u| format!("\"{u}:53\"")).collect();
    let cfg = config_file(lab, "gatekeeper.toml", &format!("[dns]\nupstreams = [{}]\n", list.join(", ")));
    let state = state_dir(lab, "state");
    let mut gw =
        start_ready(lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], "gw.log");
    gw.wait_for_log("DNS server ready", Duration::from_secs(20)).unwrap();
    gw
}

/// A LAN client with a fixed address (no DHCP needed for plain DNS tests).
fn address_client(lab: &Lab, i: usize) {
    lab.run(&lab.client(i), &["ip", "addr", "add", &format!("10.0.0.{}/24", 10 + i), "dev", "eth0"]).unwrap();
}

fn dig(lab: &Lab, ns: &str, args: &[&str]) -> String {
    try_dig(lab, ns, args).unwrap()
}

fn try_dig(lab: &Lab, ns: &str, args: &[&str]) -> anyhow::Result<String> {
    let mut full = vec!["dig", "+tries=1", "+time=3"];
    full.extend_from_slice(args);
    lab.run(ns, &full)
}

/// The answer section of `dig +noall +answer`, with TTLs removed, sorted: the content to compare.
fn content(answer: &str) -> Vec<String> {
    let mut v: Vec<String> = answer
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mut kept = vec![f[0].to_lowercase()];
            kept.extend(f[2..].iter().map(|s| s.to_string()));
            kept.join(" ")
        })
        .collect();
    v.sort();
    v
}

fn ttl(answer: &str) -> u32 {
    answer.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|t| t.parse().ok()).unwrap_or(0)
}

/// Held by a test while its flood runs: a flood's sender spins a core, and two at once on a 2-core machine (the
/// test harness runs tests in parallel) leave the servers under test too little CPU to keep up, so their sockets
/// overflow and the tests would measure that instead.
static ONE_FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A steady UDP query flood from a LAN namespace: queries evenly spaced (a spin, not bursts), answers read and
/// thrown away by a second thread so that the socket never fills. `stop` returns (sent/s, answered/s).
struct Flood {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<(f64, f64)>,
}

impl Flood {
    fn start(ns: &str, from: &'static str, every: Duration, query: fn(u64) -> Vec<u8>) -> Flood {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flood_stop = stop.clone();
        let path = std::path::Path::new("/run/netns").join(ns);
        let thread = std::thread::spawn(move || {
            let f = std::fs::File::open(&path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let s = std::net::UdpSocket::bind((from, 0)).unwrap();
            s.connect("10.0.0.1:53").unwrap();
            let r = s.try_clone().unwrap();
            r.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
            let reader_stop = flood_stop.clone();
            let reader = std::thread::spawn(move || {
                let (mut buf, mut answers) = ([0u8; 512], 0u64);
                while !reader_stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if r.recv(&mut buf).is_ok() {
                        answers += 1;
                    }
                }
                answers
            });
            let (start, mut sent, mut next) = (Instant::now(), 0u64, Instant::now());
            while !flood_stop.load(std::sync::atomic::Ordering::Relaxed) {
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
                next += every;
                if s.send(&query(sent)).is_ok() {
                    sent += 1;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            (sent as f64 / secs, reader.join().unwrap() as f64 / secs)
        });
        Flood { stop, thread }
    }

    fn stop(self) -> (f64, f64) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn answers_match_the_upstream_over_udp_and_tcp() {
    let lab = lab(1);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let _gw = start_dns(&lab, &[WAN_ADDR]);
    address_client(&lab, 1);
    let lan = lab.client(1);
    for (name, qtype) in [
        ("www.test", "A"),
        ("www.test", "AAAA"),
        ("test", "MX"),
        ("test", "TXT"),
        ("_sip._udp.test", "SRV"),
        ("a.test", "A"),
        ("test", "NS"),
        ("long.test", "TXT"),
    ] {
        let upstream = dig(&lab, &lab.wan(), &["+noall", "+answer", &format!("@{WAN_ADDR}"), name, qtype]);
        let via_gw = dig(&lab, &lan, &["+noall", "+answer", "@10.0.0.1", name, qtype]);
        assert!(!upstream.trim().is_empty(), "{name} {qtype} exists upstream");
        assert_eq!(content(&via_gw), content(&upstream), "{name} {qtype}");
        let tcp = dig(&lab, &lan, &["+tcp", "+noall", "+answer", "@10.0.0.1", name, qtype]);
        assert_eq!(content(&tcp), content(&upstream), "{name} {qtype} over TCP");
        let kdig = lab.run(&lan, &["kdig", "+noall", "+answer", "@10.0.0.1", name, qtype]).unwrap();
        assert_eq!(content(&kdig).len(), content(&upstream).len(), "{name} {qtype} with kdig");
    }
    // The CNAME chain arrives whole: a -> b -> c -> address.
    let chain = dig(&lab, &lan, &["+noall", "+answer", "@10.0.0.1", "a.test", "A"]);
    assert_eq!(content(&chain).len(), 3, "{chain}");
    // Over 512 bytes without EDNS: truncated over UDP (dig then retries over TCP by itself).
    let trunc = dig(&lab, &lan, &["+noedns", "+ignore", "@10.0.0.1", "long.test", "TXT"]);
    assert!(trunc.contains(" tc"), "{trunc}");
}

#[test]
fn cache_counts_ttls_down_and_keeps_negative_answers() {
    let lab = lab(1);
    let mut knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let _gw = start_dns(&lab, &[WAN_ADDR]);
    address_client(&lab, 1);
    let lan = lab.client(1);
    let first = dig(&lab, &lan, &["+noall", "+answer", "@10.0.0.1", "www.test", "A"]);
    std::thread::sleep(Duration::from_millis(2100));
    let second = dig(&lab, &lan, &["+noall", "+answer", "@10.0.0.1", "WwW.TeSt", "A"]);
    assert!(ttl(&second) + 2 <= ttl(&first), "TTL counts down: {first} / {second}");
    assert!(second.starts_with("WwW.TeSt."), "the question's case is kept: {second}");
    let nx = dig(&lab, &lan, &["@10.0.0.1", "missing.test", "A"]);
    assert!(nx.contains("status: NXDOMAIN") && nx.contains("SOA"), "{nx}");
    // With the upstream gone, cached answers (positive and negative) still come, from the cache.
    knot.stop().unwrap();
    let cached = dig(&lab, &lan, &["+noall", "+answer", "@10.0.0.1", "www.test", "A"]);
    assert_eq!(content(&cached), content(&first));
    let nx = dig(&lab, &lan, &["@10.0.0.1", "missing.test", "A"]);
    assert!(nx.contains("status: NXDOMAIN"), "negative answer cached: {nx}");
}

#[test]
fn every_upstream_down_gives_servfail_within_5_s_and_failover_works() {
    let lab = lab(1);
    let mut first = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let mut second = lab.start_knot(WAN_ADDR2, &test_zone()).unwrap();
    let _gw = start_dns(&lab, &[WAN_ADDR, WAN_ADDR2]);
    address_client(&lab, 1);
    let lan = lab.client(1);
    // The first upstream silent (stopped but its address still there): the second answers.
    first.pause();
    let out = dig(&lab, &lan, &["+time=8", "@10.0.0.1", "www.test", "A"]);
    assert!(out.contains("status: NOERROR") && out.contains("192.0.2.10"), "{out}");
    second.kill().unwrap();
    first.kill().unwrap();
    let t = Instant::now();
    let out = dig(&lab, &lan, &["+time=10", "@10.0.0.1", "u1.uncached.test", "A"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
    assert!(t.elapsed() < Duration::from_secs(5), "SERVFAIL after {:?}", t.elapsed());
}

#[test]
fn an_ethers_host_resolves_as_name_lan_before_it_takes_a_lease() {
    let lab = lab(2);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    // The gateway's `/etc/ethers` and `/etc/hosts` are files of the lab's (the config names them): the machine's
    // own stay untouched.
    let mac = lab.client_mac(1).unwrap();
    let ethers = lab.dir().join("ethers");
    let hosts = lab.dir().join("hosts");
    std::fs::write(&ethers, format!("# static hosts\n{mac} printer\n")).unwrap();
    std::fs::write(&hosts, "10.0.0.77 printer\n").unwrap();
    let cfg = config_file(
        &lab,
        "gatekeeper.toml",
        &format!(
            "[dns]\nupstreams = [\"{WAN_ADDR}:53\"]\n[dhcp]\nethers = \"{}\"\nhosts = \"{}\"\n",
            ethers.display(),
            hosts.display()
        ),
    );
    let state = state_dir(&lab, "state");
    let mut gw =
        start_ready(&lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], "gw.log");
    gw.wait_for_log("DNS server ready", Duration::from_secs(20)).unwrap();
    address_client(&lab, 2);
    let other = lab.client(2);
    // Nobody has asked for a lease yet.
    assert_eq!(dig(&lab, &other, &["+short", "@10.0.0.1", "printer.lan", "A"]).trim(), "10.0.0.77", "{}", gw.log());
    assert_eq!(dig(&lab, &other, &["+short", "@10.0.0.1", "-x", "10.0.0.77"]).trim(), "printer.lan.");
    // It takes its lease, at its static address, and gives it back: the name stays (it is static).
    let mut printer = lab.dhcp_client(1, DhcpClient::Udhcpc, None).unwrap();
    let bound = printer.wait_event(0, &["bound"], Duration::from_secs(30)).unwrap();
    assert_eq!(field(&bound, "ip"), Some("10.0.0.77"), "{bound}");
    printer.release(&lab).unwrap();
    gw.wait_for_log("Released(", Duration::from_secs(10)).unwrap();
    assert_eq!(dig(&lab, &other, &["+short", "@10.0.0.1", "printer.lan", "A"]).trim(), "10.0.0.77");
}

#[test]
fn dhcp_host_names_resolve_as_name_lan_with_ptr() {
    let lab = lab(2);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let mut gw = start_dns(&lab, &[WAN_ADDR]);
    let mut laptop = lab.dhcp_client(1, DhcpClient::Udhcpc, Some("laptop")).unwrap();
    let ip = field(&laptop.wait_event(0, &["bound"], Duration::from_secs(30)).unwrap(), "ip").unwrap().to_owned();
    address_client(&lab, 2);
    let other = lab.client(2);
    // The lease reaches the local zone at once.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut a = String::new();
    while Instant::now() < deadline {
        a = dig(&lab, &other, &["+short", "@10.0.0.1", "laptop.lan", "A"]);
        if a.trim() == ip {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(a.trim(), ip, "{}", gw.log());
    let ptr = dig(&lab, &other, &["+short", "@10.0.0.1", "-x", &ip]);
    assert_eq!(ptr.trim(), "laptop.lan.");
    assert_eq!(dig(&lab, &other, &["+short", "@10.0.0.1", "gatekeeper.lan"]).trim(), "10.0.0.1");
    let nx = dig(&lab, &other, &["@10.0.0.1", "nosuch.lan"]);
    assert!(nx.contains("status: NXDOMAIN"), "{nx}");
    // Names below .lan and private reverse zones never go upstream: knot would say REFUSED/NXDOMAIN otherwise.
    let rev = dig(&lab, &other, &["@10.0.0.1", "-x", "192.168.77.5"]);
    assert!(rev.contains("status: NXDOMAIN"), "{rev}");
    // The query log knows the device by its MAC.
    let api = common::api_get(&lab, &other, "/api/dns");
    assert!(api.contains("laptop.lan"), "{api}");
    laptop.release(&lab).unwrap();
    gw.wait_for_log("Released(", Duration::from_secs(10)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && !dig(&lab, &other, &["@10.0.0.1", "laptop.lan"]).contains("NXDOMAIN") {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dig(&lab, &other, &["@10.0.0.1", "laptop.lan"]).contains("NXDOMAIN"), "released names go away");
}

#[test]
fn nothing_answers_on_the_wan_side() {
    let lab = lab(1);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let _gw = start_dns(&lab, &[WAN_ADDR]);
    let wan = lab.wan();
    let udp = lab.run(&wan, &["dig", "+tries=1", "+time=2", "@203.0.113.2", "www.test"]);
    assert!(udp.is_err() || udp.as_ref().unwrap().contains("timed out"), "{udp:?}");
    let tcp = lab.run(&wan, &["dig", "+tcp", "+tries=1", "+time=2", "@203.0.113.2", "www.test"]);
    assert!(tcp.is_err() || !tcp.as_ref().unwrap().contains("status:"), "{tcp:?}");
    // Even routed straight at the LAN address from the WAN side, nothing answers.
    lab.run(&wan, &["ip", "route", "add", "10.0.0.0/24", "via", "203.0.113.2"]).unwrap();
    let direct = lab.run(&wan, &["dig", "+tries=1", "+time=2", "@10.0.0.1", "www.test"]);
    assert!(direct.is_err() || direct.as_ref().unwrap().contains("timed out"), "{direct:?}");
}

#[test]
fn malformed_queries_get_formerr_notimp_or_nothing_and_service_goes_on() {
    let lab = lab(1);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let mut gw = start_dns(&lab, &[WAN_ADDR]);
    address_client(&lab, 1);
    let lan = lab.client(1);
    let rcodes = lab
        .in_netns(&lan, || {
            let s = std::net::UdpSocket::bind("10.0.0.11:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let valid = gatekeeper::lab::build_query(0x1234, "www.test", gatekeeper::lab::RecordType::A);
            let mut cases: Vec<Vec<u8>> = vec![valid[..5].to_vec(), valid[..12].to_vec(), valid[..20].to_vec()];
            let mut qd0 = valid.clone();
            qd0[5] = 0; // QDCOUNT 0
            cases.push(qd0);
            let mut qd2 = valid.clone();
            qd2[5] = 2; // QDCOUNT 2
            cases.push(qd2);
            let mut opcode = valid.clone();
            opcode[2] |= 5 << 3; // UPDATE
            cases.push(opcode);
            // A compression pointer pointing at itself in the question.
            let mut looped = valid[..12].to_vec();
            looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            cases.push(looped);
            let mut out = Vec::new();
            for c in &cases {
                s.send_to(c, "10.0.0.1:53").unwrap();
                let mut buf = [0u8; 512];
                out.push(s.recv(&mut buf).ok().map(|n| if n >= 4 { buf[3] & 0x0f } else { 255 }));
            }
            out
        })
        .unwrap();
    // Too short for a header: nothing. Readable header but bad question: FORMERR (1). UPDATE: NOTIMP (4).
    assert_eq!(rcodes[0], None, "{rcodes:?}");
    assert!(rcodes[1..5].iter().all(|r| *r == Some(1)), "{rcodes:?}");
    assert_eq!(rcodes[5], Some(4), "{rcodes:?}");
    assert_eq!(rcodes[6], Some(1), "{rcodes:?}");
    // TCP: a length prefix that promises more than comes, then silence: the server drops the connection.
    lab.run(&lan, &["sh", "-c", "printf '\\377\\377abc' | timeout 15 nc -q 12 10.0.0.1 53 > /dev/null; true"]).unwrap();
    let ok = dig(&lab, &lan, &["+short", "@10.0.0.1", "www.test"]);
    assert!(!ok.trim().is_empty(), "still serving");
    assert!(gw.try_status().is_none(), "{}", gw.log());
}

/// A flood of cached queries far above the adaptive-batching threshold (40k/s) must not starve the rest of the
/// server: while it lasts, a name that needs the upstream and a TCP query are answered in well under a second.
#[test]
fn a_flood_of_cached_queries_does_not_starve_upstream_answers_or_tcp() {
    let _one_flood = ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab(1);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let mut gw = start_dns(&lab, &[WAN_ADDR]);
    address_client(&lab, 1);
    let lan = lab.client(1);
    assert!(!dig(&lab, &lan, &["+short", "@10.0.0.1", "h1.test"]).trim().is_empty(), "warm the flood's name");
    // 60k/s: above the batching threshold, so the server keeps batching, and below what it answers, so nothing is
    // dropped for overload and a lost answer could only mean starvation.
    let flood = Flood::start(&lan, "10.0.0.11", Duration::from_nanos(16_667), |_| {
        gatekeeper::lab::build_query(0x4242, "h1.test", gatekeeper::lab::RecordType::A)
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let drops_before = lab.udp_rcvbuf_errors(&lab.gw()).unwrap();
    let upstream = try_dig(&lab, &lan, &["+short", "@10.0.0.1", "h3.test"]).unwrap_or_else(|e| {
        // Starvation, or the query itself lost in a full socket buffer (the server could not keep up: then the
        // test's premise failed, and this says so).
        let drops = lab.udp_rcvbuf_errors(&lab.gw()).unwrap() - drops_before;
        panic!(
            "no answer to h3.test during the flood ({drops} datagrams dropped at the server's socket meanwhile): {e}"
        )
    });
    let upstream_took = t.elapsed();
    let t = Instant::now();
    let tcp = dig(&lab, &lan, &["+short", "+tcp", "@10.0.0.1", "h2.test"]);
    let tcp_took = t.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let (sent_rate, answered_rate) = flood.stop();
    assert!(answered_rate > 40_000.0, "the flood must be above the batching threshold: {answered_rate:.0} answers/s");
    eprintln!(
        "flood: {sent_rate:.0} sent/s, {answered_rate:.0} answered/s; upstream {upstream_took:?}, tcp {tcp_took:?}"
    );
    assert!(upstream.trim() == "198.18.0.4", "upstream answer during the flood: {upstream:?}");
    assert!(upstream_took < Duration::from_secs(1), "upstream answer took {upstream_took:?}");
    assert!(tcp.trim() == "198.18.0.3", "TCP answer during the flood: {tcp:?}");
    assert!(tcp_took < Duration::from_secs(1), "TCP answer took {tcp_took:?}");
    assert!(gw.try_status().is_none(), "{}", gw.log());
}

#[test]
fn an_uncached_flood_leaves_dhcp_and_the_web_ui_responsive() {
    // Upstream queries run on the program's main runtime, beside DHCP and the web UI: a flood of cache misses must
    // not hold those up.
    let _one_flood = ONE_FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let lab = lab(2);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let mut gw = start_dns(&lab, &[WAN_ADDR]);
    address_client(&lab, 1);
    // 10k unique names/s: every one a cache miss forwarded to knotd.
    let flood = Flood::start(&lab.client(1), "10.0.0.11", Duration::from_micros(100), |i| {
        gatekeeper::lab::build_query(
            i as u16,
            &gatekeeper::lab::uncached_name(i as usize),
            gatekeeper::lab::RecordType::A,
        )
    });
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut client = lab.dhcp_client(2, DhcpClient::Udhcpc, None).unwrap();
    let bound = client.wait_event(0, &["bound"], Duration::from_secs(10));
    let bind_took = t.elapsed();
    let t = Instant::now();
    let status = lab.run(&lab.client(2), &["curl", "-sf", "-m5", "http://10.0.0.1:1337/api/session"]);
    let ui_took = t.elapsed();
    let (sent_rate, answered_rate) = flood.stop();
    eprintln!(
        "flood: {sent_rate:.0} sent/s, {answered_rate:.0} answered/s; DHCP bound in {bind_took:?}, UI {ui_took:?}"
    );
    assert!(answered_rate > 1_000.0, "the flood must reach the upstream: {answered_rate:.0} answers/s");
    assert!(bound.is_ok(), "no DHCP lease during the flood: {:?}\n{}", bound.err(), gw.log());
    assert!(bind_took < Duration::from_secs(3), "DHCP took {bind_took:?} during the flood");
    assert!(status.is_ok_and(|s| s.contains('{')), "web UI during the flood");
    assert!(ui_took < Duration::from_secs(2), "web UI took {ui_took:?} during the flood");
    assert!(gw.try_status().is_none(), "{}", gw.log());
}
