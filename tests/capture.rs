//! Retroactive capture end to end: the real gateway in a lab, a device's TCP connection and DNS lookup, its ring
//! downloaded as pcapng and pcap and read back by Wireshark's own tools (`capinfos`, `tshark`) with the device's
//! own addresses; windows and filters; a ring filled far past its size; pause, clear, and a download of a device
//! that is forgotten while it streams.

mod common;

use common::{config_file, start_ready, state_dir};
use gatekeeper::lab::{DhcpClient, Lab, WAN_ADDR, field, test_zone};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const UI: &str = "http://10.0.0.1:1337";

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn lease(lab: &Lab, i: usize, name: &str) -> (gatekeeper::lab::ClientRun, String) {
    let mut c = lab.dhcp_client(i, DhcpClient::Udhcpc, Some(name)).unwrap();
    let ip = field(&c.wait_event(0, &["bound"], Duration::from_secs(30)).unwrap(), "ip").unwrap().to_owned();
    (c, ip)
}

fn start_gateway(lab: &Lab, extra: &str) -> gatekeeper::lab::Proc {
    let cfg = config_file(lab, "gatekeeper.toml", &format!("[dns]\nupstreams = [\"{WAN_ADDR}:53\"]\n{extra}"));
    let state = state_dir(lab, "state");
    let mut gw =
        start_ready(lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], "gw.log");
    gw.wait_for_log("packet capture reads the packet path's taps", Duration::from_secs(20)).unwrap();
    gw
}

/// Downloads `path` from `ns` into the lab directory as `name`; returns the file and curl's HTTP status.
fn download(lab: &Lab, ns: &str, cookie: &str, path: &str, name: &str) -> (PathBuf, String) {
    let file = lab.dir().join(name);
    let out = lab
        .run(
            ns,
            &[
                "curl",
                "-s",
                "-m60",
                "-o",
                file.to_str().unwrap(),
                "-w",
                "%{http_code}",
                "-H",
                cookie,
                &format!("{UI}{path}"),
            ],
        )
        .unwrap();
    (file, out)
}

/// `tshark -r file` with these fields, one line per packet (tab-separated), for packets matching `filter`.
fn tshark(file: &Path, filter: &str, fields: &[&str]) -> Vec<String> {
    let mut args = vec!["-r", file.to_str().unwrap(), "-T", "fields", "-E", "separator=/t"];
    if !filter.is_empty() {
        args.extend(["-Y", filter]);
    }
    for f in fields {
        args.extend(["-e", f]);
    }
    let out = std::process::Command::new("tshark").args(&args).output().expect("tshark");
    assert!(out.status.success(), "tshark {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
}

/// `capinfos` of the file: its report (it fails on a damaged file).
fn capinfos(file: &Path) -> String {
    let out = std::process::Command::new("capinfos").arg(file).output().expect("capinfos");
    assert!(out.status.success(), "capinfos {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn capinfos_count(report: &str) -> u64 {
    let line = report.lines().find(|l| l.starts_with("Number of packets")).expect("a packet count");
    let n = line.split(':').nth(1).unwrap().trim().replace(' ', "");
    // capinfos may print "12 k" for thousands.
    match n.strip_suffix('k') {
        Some(k) => k.parse::<u64>().unwrap() * 1000,
        None => n.parse().unwrap(),
    }
}

fn status(lab: &Lab, ns: &str, mac: &str) -> serde_json::Value {
    serde_json::from_str(&common::api_get(lab, ns, &format!("/api/devices/{mac}/capture"))).unwrap()
}

/// A TCP echo server on the remote, until `stop`.
fn tcp_echo(lab: &Lab, stop: Arc<AtomicBool>) {
    common::tcp_echo(&lab.wan(), std::net::SocketAddrV4::new(REMOTE, 7000), stop);
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn a_devices_handshake_and_dns_lookup_download_as_pcapng_that_tshark_reads_with_its_own_addresses() {
    let lab = common::lab(2);
    let zone = format!("{}\nserver IN A {REMOTE}\n", test_zone());
    let _knot = lab.start_knot(WAN_ADDR, &zone).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    tcp_echo(&lab, stop.clone());
    let mut gw = start_gateway(&lab, "");
    let (_c1, ip) = lease(&lab, 1, "laptop");
    let (_c2, _) = lease(&lab, 2, "viewer");
    let mac = lab.client_mac(1).unwrap();
    let (dev, viewer) = (lab.client(1), lab.client(2));
    let ip: Ipv4Addr = ip.parse().unwrap();

    // The device looks the server up (through the router's DNS, which asks knotd), then, a moment later,
    // connects to it.
    let answer = lab.run(&dev, &["dig", "+short", "@10.0.0.1", "server.test", "A"]).unwrap();
    assert_eq!(answer.trim(), REMOTE.to_string());
    std::thread::sleep(Duration::from_millis(300));
    let t_tcp = unix_ms();
    let port = lab
        .in_netns(&dev, || {
            let mut c = TcpStream::connect_timeout(&(REMOTE, 7000).into(), Duration::from_secs(3)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            c.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.local_addr().unwrap().port()
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    let (cookie, csrf) = common::admin(&lab, &viewer);
    let (file, code) = download(&lab, &viewer, &cookie, &format!("/api/devices/{mac}/capture.pcapng"), "all.pcapng");
    assert_eq!(code, "200");
    let info = capinfos(&file);
    assert!(info.contains("pcapng"), "{info}");
    // The section comment names the device.
    assert!(info.contains("laptop") && info.contains(&mac), "{info}");

    // The three-way handshake, as the device saw it: its own address both ways (not the WAN address).
    let syn = format!("tcp.port == {port} && tcp.flags.syn == 1");
    let hs = tshark(&file, &syn, &["ip.src", "ip.dst", "tcp.flags.ack"]);
    assert_eq!(hs, vec![format!("{ip}\t{REMOTE}\t0"), format!("{REMOTE}\t{ip}\t1")], "SYN, SYN-ACK");
    let third = tshark(&file, &format!("tcp.port == {port} && tcp.flags == 0x010"), &["ip.src", "ip.dst"]);
    assert_eq!(third.first(), Some(&format!("{ip}\t{REMOTE}")), "the handshake's ACK");
    let data = tshark(&file, &format!("tcp.port == {port} && tcp.len == 5"), &["ip.src", "tcp.payload"]);
    assert_eq!(data, vec![format!("{ip}\t68656c6c6f"), format!("{REMOTE}\t68656c6c6f")], "hello and its echo");
    // The DNS query and its answer, between the device and the router, with a comment saying so.
    let dns = tshark(&file, "dns.qry.name == \"server.test\"", &["ip.src", "ip.dst", "dns.flags.response", "dns.a"]);
    assert_eq!(
        dns,
        vec![format!("{ip}\t10.0.0.1\t0\t"), format!("10.0.0.1\t{ip}\t1\t{REMOTE}")],
        "the DNS query and answer"
    );
    let comments = tshark(&file, "dns", &["frame.comment"]);
    assert!(comments.iter().all(|c| c.contains("DNS server")), "{comments:?}");
    // The device's DHCP exchange is in its ring too (its REQUEST and the router's ACK, at least).
    let dhcp = tshark(&file, "dhcp", &["dhcp.option.dhcp"]);
    assert!(dhcp.iter().any(|t| t == "3") && dhcp.iter().any(|t| t == "5"), "{dhcp:?}");
    // Every packet read back whole: their count is the ring's.
    let all = tshark(&file, "", &["frame.number"]).len() as u64;
    assert_eq!(all, status(&lab, &viewer, &mac)["packets"].as_u64().unwrap());

    // A window from just before the connection: the TCP packets, not the earlier DNS lookup.
    let q = format!("/api/devices/{mac}/capture.pcapng?from={}&to={}", t_tcp - 50, unix_ms());
    let (windowed, code) = download(&lab, &viewer, &cookie, &q, "window.pcapng");
    assert_eq!(code, "200");
    assert!(tshark(&windowed, "dns.qry.name == \"server.test\"", &["frame.number"]).is_empty());
    assert_eq!(tshark(&windowed, &syn, &["frame.number"]).len(), 2);
    // `remote=`: only packets to or from that address.
    let q = format!("/api/devices/{mac}/capture.pcap?remote={REMOTE}");
    let (remote, code) = download(&lab, &viewer, &cookie, &q, "remote.pcap");
    assert_eq!(code, "200");
    capinfos(&remote);
    let addrs = tshark(&remote, "", &["ip.src", "ip.dst"]);
    assert!(addrs.len() >= 8, "{addrs:?}");
    assert!(addrs.iter().all(|a| a.contains(&REMOTE.to_string())), "{addrs:?}");
    // Bad parameters and ids are refused with a reason.
    for (q, want) in [("?port=99999", "port"), ("?proto=sctp", "proto"), ("?from=9&to=1", "after"), ("?x=1", "unknown")]
    {
        let (f, code) = download(&lab, &viewer, &cookie, &format!("/api/devices/{mac}/capture.pcapng{q}"), "bad");
        let body = std::fs::read_to_string(f).unwrap();
        assert!(code == "400" && body.contains(want), "{q}: {code} {body}");
    }
    let (f, code) = download(&lab, &viewer, &cookie, "/api/devices/not-a-mac/capture.pcapng", "bad");
    assert!(code == "400" && std::fs::read_to_string(f).unwrap().contains("not a MAC"), "{code}");
    // Without a session: 401, also for reads when the UI is otherwise readable.
    let (_, code) = download(&lab, &viewer, "X-None: 1", &format!("/api/devices/{mac}/capture.pcapng"), "nosession");
    assert_eq!(code, "401");

    // Pause: nothing new is kept; resume; clear empties the ring (admin only: the CSRF token is needed).
    let post = |action: &str, token: &str| {
        let body = format!("{{\"action\":\"{action}\"}}");
        let url = format!("{UI}/api/devices/{mac}/capture");
        let csrf = format!("X-CSRF-Token: {token}");
        let args = ["curl", "-s", "-m5", "-o", "/dev/null", "-w", "%{http_code}", "-H", &cookie, "-H", &csrf];
        let args: Vec<&str> =
            args.into_iter().chain(["-H", "Content-Type: application/json", "-d", &body, &url]).collect();
        lab.run(&viewer, &args).unwrap()
    };
    assert_eq!(post("pause", "wrong"), "403");
    assert_eq!(post("pause", &csrf), "200");
    let before = status(&lab, &viewer, &mac)["packets"].as_u64().unwrap();
    lab.run(&dev, &["dig", "+short", "@10.0.0.1", "h1.test", "A"]).unwrap();
    let s = status(&lab, &viewer, &mac);
    assert_eq!((s["paused"].as_bool(), s["packets"].as_u64()), (Some(true), Some(before)));
    assert_eq!(post("resume", &csrf), "200");
    lab.run(&dev, &["dig", "+short", "@10.0.0.1", "h2.test", "A"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&lab, &viewer, &mac)["packets"].as_u64().unwrap() < before + 2 {
        assert!(Instant::now() < deadline, "packets after resume");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(post("clear", &csrf), "200");
    assert!(status(&lab, &viewer, &mac)["packets"].as_u64().unwrap() <= 2, "cleared");

    stop.store(true, Ordering::Relaxed);
    gw.terminate(Duration::from_secs(10)).unwrap();
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_ring_filled_far_past_its_size_keeps_the_newest_and_a_forgotten_devices_download_ends_cleanly() {
    let lab = common::lab(2);
    let _knot = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // An echo server for numbered datagrams.
    let s = stop.clone();
    common::spawn_in(&lab.wan(), move || {
        let u = UdpSocket::bind((REMOTE, 7001)).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 2000];
        while !s.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = u.recv_from(&mut b) {
                let _ = u.send_to(&b[..n], peer);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    let mut gw = start_gateway(&lab, "");
    let (_c1, _) = lease(&lab, 1, "busy");
    let (_c2, _) = lease(&lab, 2, "viewer");
    let mac = lab.client_mac(1).unwrap();
    let (dev, viewer) = (lab.client(1), lab.client(2));

    // 12,000 round trips of 1,200-byte datagrams, numbered: ~29 MB through a 5 MiB ring.
    const N: u32 = 12_000;
    lab.in_netns(&dev, || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 2000];
        for i in 0..N {
            let mut p = vec![0u8; 1200];
            p[..4].copy_from_slice(&i.to_be_bytes());
            u.send_to(&p, (REMOTE, 7001)).unwrap();
            let _ = u.recv(&mut b);
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let s = status(&lab, &viewer, &mac);
    let (ring, used, packets) =
        (s["ring_bytes"].as_u64().unwrap(), s["used_bytes"].as_u64().unwrap(), s["packets"].as_u64().unwrap());
    assert_eq!(ring, 5 << 20);
    assert!(used <= ring && used > ring - 2000, "{s}");
    assert!(s["evicted"].as_u64().unwrap() > 10_000, "{s}");

    let (cookie, csrf) = common::admin(&lab, &viewer);
    let (file, code) = download(&lab, &viewer, &cookie, &format!("/api/devices/{mac}/capture.pcapng"), "full.pcapng");
    assert_eq!(code, "200");
    let info = capinfos(&file);
    let seqs: Vec<u32> = tshark(&file, "udp.port == 7001 && ip.src == 203.0.113.1", &["data.data"])
        .iter()
        .map(|d| u32::from_str_radix(&d[..8], 16).unwrap())
        .collect();
    let total = tshark(&file, "", &["frame.number"]).len() as u64;
    // Every packet in the ring read back, the newest kept, the oldest gone, in order.
    assert_eq!((total, capinfos_count(&info)), (packets, packets), "{info}");
    assert_eq!(seqs.last(), Some(&(N - 1)), "the newest echo is kept");
    assert!(seqs[0] > N / 2, "the oldest are gone: first kept {}", seqs[0]);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
    println!("ring {ring} B holds {packets} packets ({used} B with headers), echoes {}..{}", seqs[0], N - 1);

    // A slow download (curl limited to 1 MB/s: ~6 s), and the device forgotten 1 s into it: the download still
    // ends whole (it sends the copy taken when it began) and the ring is freed.
    let out = lab.dir().join("slow.pcapng");
    let url = format!("{UI}/api/devices/{mac}/capture.pcapng");
    let slow = lab
        .cmd(&viewer, "curl")
        .args([
            "-s",
            "-m60",
            "--limit-rate",
            "1M",
            "-o",
            out.to_str().unwrap(),
            "-w",
            "%{http_code}",
            "-H",
            &cookie,
            &url,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let forget = lab
        .run(
            &viewer,
            &[
                "curl",
                "-s",
                "-m5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-X",
                "DELETE",
                "-H",
                &cookie,
                "-H",
                &format!("X-CSRF-Token: {csrf}"),
                &format!("{UI}/api/leases/{mac}"),
            ],
        )
        .unwrap();
    assert_eq!(forget, "200");
    let s = status(&lab, &viewer, &mac);
    assert_eq!((s["packets"].as_u64(), s["used_bytes"].as_u64()), (Some(0), Some(0)), "freed: {s}");
    let done = slow.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&done.stdout), "200");
    assert_eq!(capinfos_count(&capinfos(&out)), packets, "the whole snapshot arrived");

    stop.store(true, Ordering::Relaxed);
    gw.terminate(Duration::from_secs(10)).unwrap();
    let log = gw.log();
    assert!(!log.contains("panicked"), "{log}");
}
