//! Traffic accounting end to end: the real gateway in a lab, real packets through its NAT, the history read back
//! through the HTTP API (JSON and CSV) and the live WebSocket, across restarts (SIGTERM and `kill -9`) and an
//! address change of the device.

mod common;

use common::{config_file, start_ready, state_dir};
use gatekeeper::lab::{DhcpClient, Lab, field};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn get(lab: &Lab, ns: &str, path: &str) -> String {
    common::api_get(lab, ns, path)
}

fn json(lab: &Lab, ns: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(lab, ns, path)).unwrap()
}

/// A UDP server in `wan` answering every datagram with `reply` bytes, until `stop`.
fn udp_responder(lab: &Lab, reply: usize, stop: Arc<AtomicBool>) {
    common::spawn_in(&lab.wan(), move || {
        let u = UdpSocket::bind((REMOTE, 7001)).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 2000];
        let answer = vec![7u8; reply];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((_, peer)) = u.recv_from(&mut b) {
                let _ = u.send_to(&answer, peer);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
}

/// Sends `k` datagrams of `size` bytes from client `i` and waits for each answer.
fn send_udp(lab: &Lab, i: usize, k: usize, size: usize) {
    lab.in_netns(&lab.client(i), move || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut b = [0u8; 2000];
        for _ in 0..k {
            u.send_to(&vec![1u8; size], (REMOTE, 7001)).unwrap();
            u.recv(&mut b).expect("an answer");
        }
    })
    .unwrap();
}

/// The pair's bytes `[up, down]` summed over its history (JSON), waiting until they reach `want` (the last
/// bucket closes 100 ms after the packet) or 5 s pass.
fn pair_bytes(lab: &Lab, ns: &str, mac: &str, from: u64, want: [u64; 2]) -> [u64; 2] {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let q = format!("/api/traffic?device={mac}&remote={REMOTE}&from={from}&to={}&step=100", unix_ms() + 1000);
        let v = json(lab, ns, &q);
        let s = v["series"].as_array().unwrap();
        let got = s.iter().fold([0, 0], |a, p| [a[0] + p[1].as_u64().unwrap(), a[1] + p[2].as_u64().unwrap()]);
        if got == want || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn csv_bytes(lab: &Lab, ns: &str, mac: &str, from: u64) -> [u64; 2] {
    let q =
        format!("/api/traffic?device={mac}&remote={REMOTE}&from={from}&to={}&step=100&format=csv", unix_ms() + 1000);
    let text = get(lab, ns, &q);
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("time_ms,up_bytes,down_bytes"));
    lines.fold([0, 0], |a, l| {
        let f: Vec<u64> = l.split(',').map(|x| x.parse().unwrap()).collect();
        [a[0] + f[1], a[1] + f[2]]
    })
}

fn lease(lab: &Lab, i: usize, name: &str) -> (gatekeeper::lab::ClientRun, String) {
    let mut c = lab.dhcp_client(i, DhcpClient::Udhcpc, Some(name)).unwrap();
    let ip = field(&c.wait_event(0, &["bound"], Duration::from_secs(30)).unwrap(), "ip").unwrap().to_owned();
    (c, ip)
}

#[test]
fn a_pairs_history_is_exact_survives_restarts_and_follows_the_device_to_a_new_address() {
    let lab = common::lab(2);
    let stop = Arc::new(AtomicBool::new(false));
    udp_responder(&lab, 300, stop.clone());
    let mac = lab.client_mac(1).unwrap();
    let state = state_dir(&lab, "state");
    let plain = config_file(&lab, "plain.toml", "[traffic]\nsnapshot_secs = 1\n");
    let args = |cfg: &std::path::Path| {
        vec![
            "--state-dir".to_owned(),
            state.to_str().unwrap().to_owned(),
            "--config".into(),
            cfg.to_str().unwrap().into(),
        ]
    };
    let start = |cfg: &std::path::Path, log: &str| {
        let a = args(cfg);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut gw = start_ready(&lab, &a, log);
        gw.wait_for_log("traffic accounting reads", Duration::from_secs(20)).unwrap();
        gw
    };
    let mut gw = start(&plain, "gw1.log");
    let t0 = unix_ms();
    let (c1, ip1) = lease(&lab, 1, "laptop");
    let (_c2, _) = lease(&lab, 2, "viewer");
    let viewer = lab.client(2);

    // N = 10 x 100 bytes of payload up in k = 10 datagrams, 10 x 300 back: IP bytes are payload + 28 each.
    send_udp(&lab, 1, 10, 100);
    let want = [10 * 128, 10 * 328];
    assert_eq!(pair_bytes(&lab, &viewer, &mac, t0, want), want, "{}", gw.log());
    assert_eq!(csv_bytes(&lab, &viewer, &mac, t0), want, "CSV carries the same numbers");
    let stats =
        json(&lab, &viewer, &format!("/api/traffic/stats?device={mac}&remote={REMOTE}&from={t0}&to={}", unix_ms()));
    assert_eq!((stats["up_packets"].as_u64(), stats["down_packets"].as_u64()), (Some(10), Some(10)), "{stats}");
    let devices = json(&lab, &viewer, "/api/devices");
    let me = devices["devices"].as_array().unwrap().iter().find(|d| d["device"] == mac.as_str()).unwrap().clone();
    assert_eq!(me["hostname"], "laptop");
    assert_eq!(me["ip"], ip1.as_str());
    assert_eq!(me["last_hour"]["up"].as_u64().unwrap(), want[0], "{me}");
    let top = json(&lab, &viewer, &format!("/api/traffic/top?device={mac}&from={t0}"));
    assert_eq!(top["top"][0]["remote"], REMOTE.to_string(), "{top}");

    // SIGTERM: the shutdown snapshot keeps everything. The device comes back at another address (a static lease
    // now), and its history is one.
    assert!(gw.terminate(Duration::from_secs(10)).unwrap().success(), "{}", gw.log());
    drop(c1);
    lab.run(&lab.client(1), &["ip", "-4", "addr", "flush", "dev", "eth0"]).unwrap();
    let moved = config_file(
        &lab,
        "moved.toml",
        &format!(
            "[traffic]\nsnapshot_secs = 1\n[[dhcp.static]]\nmac = \"{mac}\"\nip = \"10.0.0.50\"\nname = \"laptop\"\n"
        ),
    );
    let mut gw = start(&moved, "gw2.log");
    let (c1, ip2) = lease(&lab, 1, "laptop");
    assert_eq!(ip2, "10.0.0.50");
    assert_ne!(ip1, ip2);
    assert_eq!(pair_bytes(&lab, &viewer, &mac, t0, want), want, "restored after SIGTERM: {}", gw.log());
    send_udp(&lab, 1, 5, 100);
    let want2 = [want[0] + 5 * 128, want[1] + 5 * 328];
    assert_eq!(pair_bytes(&lab, &viewer, &mac, t0, want2), want2, "one history across addresses");

    // kill -9 after a snapshot interval: nothing older than the interval is lost.
    std::thread::sleep(Duration::from_millis(2500));
    gw.kill9().unwrap();
    let mut gw = start(&moved, "gw3.log");
    assert_eq!(pair_bytes(&lab, &viewer, &mac, t0, want2), want2, "restored after kill -9: {}", gw.log());
    drop(c1);
    stop.store(true, Ordering::Relaxed);
    let _ = gw.terminate(Duration::from_secs(10));
}

/// A minimal WebSocket client (RFC 6455): the handshake, then the server's unmasked text frames.
struct Ws(TcpStream);

impl Ws {
    fn connect(path: &str, session: &str) -> Ws {
        let mut s = TcpStream::connect(("10.0.0.1", 1337)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 10.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: gk_session={session}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            s.read_exact(&mut b).unwrap();
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Ws(s)
    }

    fn next_text(&mut self) -> String {
        loop {
            let mut h = [0u8; 2];
            self.0.read_exact(&mut h).unwrap();
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.0.read_exact(&mut l).unwrap();
                    u16::from_be_bytes(l) as usize
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.0.read_exact(&mut l).unwrap();
                    u64::from_be_bytes(l) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.0.read_exact(&mut payload).unwrap();
            match h[0] & 0x0f {
                1 => return String::from_utf8(payload).unwrap(),
                8 => panic!("closed by the server: {}", String::from_utf8_lossy(&payload)),
                _ => {}
            }
        }
    }
}

#[test]
fn live_ticks_arrive_within_150_ms_and_a_download_counts_its_headers() {
    let lab = common::lab(2);
    let stop = Arc::new(AtomicBool::new(false));
    udp_responder(&lab, 10, stop.clone());
    // A download server in `wan`: D bytes to whoever connects.
    const D: usize = 20 << 20;
    let s = stop.clone();
    common::spawn_in(&lab.wan(), move || {
        let l = TcpListener::bind((REMOTE, 8000)).unwrap();
        l.set_nonblocking(true).unwrap();
        while !s.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    let chunk = vec![5u8; 1 << 16];
                    for _ in 0..D / chunk.len() {
                        c.write_all(&chunk).unwrap();
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let state = state_dir(&lab, "state");
    let mut gw = start_ready(&lab, &["--state-dir", state.to_str().unwrap()], "gw.log");
    gw.wait_for_log("traffic accounting reads", Duration::from_secs(20)).unwrap();
    let (_c1, _) = lease(&lab, 1, "sender");
    let (_c2, _) = lease(&lab, 2, "viewer");
    let mac = lab.client_mac(1).unwrap();

    // The live stream, from the viewer's namespace: the time from sending a datagram to the first tick that
    // carries the sender's bytes, over 100 datagrams.
    let (tx, rx) = std::sync::mpsc::channel::<Instant>();
    let m = mac.clone();
    let cookie = common::login(&lab.client(2), &state);
    let watcher = common::spawn_in(&lab.client(2), move || {
        let mut ws = Ws::connect(&format!("/api/live?device={m}"), &cookie);
        let mut latencies = Vec::new();
        while latencies.len() < 100 {
            let sent = match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(t) => t,
                Err(_) => break,
            };
            loop {
                let text = ws.next_text();
                let tick: serde_json::Value = serde_json::from_str(&text).unwrap();
                let mine = tick["devices"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|d| d["device"] == m.as_str() && d["up"].as_u64() > Some(0));
                if mine {
                    latencies.push(sent.elapsed());
                    assert!(
                        tick["remotes"].as_array().unwrap().iter().any(|r| r["remote"] == REMOTE.to_string()),
                        "{tick}"
                    );
                    break;
                }
            }
        }
        latencies
    });
    std::thread::sleep(Duration::from_millis(500));
    lab.in_netns(&lab.client(1), move || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        u.connect((REMOTE, 7001)).unwrap();
        for _ in 0..100 {
            let at = Instant::now();
            u.send(b"tick").unwrap();
            tx.send(at).unwrap();
            // Far enough apart that each datagram has ticks of its own.
            std::thread::sleep(Duration::from_millis(250));
        }
    })
    .unwrap();
    let mut lat = watcher.join().unwrap();
    assert_eq!(lat.len(), 100, "a tick for every datagram: {}", gw.log());
    lat.sort();
    let (p50, p99) = (lat[49], lat[98]);
    println!("live tick latency over 100 datagrams: p50 {p50:?}, p99 {p99:?}, max {:?}", lat[99]);
    assert!(p99 <= Duration::from_millis(150), "p99 {p99:?}");

    // A TCP download of D bytes: its history is the payload plus a TCP/IP header (52 bytes with timestamps) per
    // segment of at most 1448 bytes, within 1%.
    let t0 = unix_ms();
    let got = lab
        .in_netns(&lab.client(1), || {
            let mut c = TcpStream::connect((REMOTE, 8000)).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            while n < D {
                let r = c.read(&mut buf).unwrap();
                assert!(r > 0);
                n += r;
            }
            n
        })
        .unwrap();
    assert_eq!(got, D);
    std::thread::sleep(Duration::from_millis(500));
    let stats = json(
        &lab,
        &lab.client(2),
        &format!("/api/traffic/stats?device={mac}&remote={REMOTE}&from={t0}&to={}", unix_ms()),
    );
    let down = stats["down_bytes"].as_u64().unwrap() as f64;
    let expected = (D + D.div_ceil(1448) * 52) as f64;
    println!(
        "download of {D} bytes: {down} bytes down in the history, {expected} expected ({:+.3}%)",
        (down / expected - 1.0) * 100.0
    );
    let why = || {
        let q = |p: &str| get(&lab, &lab.client(2), p);
        format!(
            "{stats}\n{}\n{}\n{}",
            q(&format!("/api/traffic/top?device={mac}")),
            q("/api/traffic/status"),
            q("/api/nat?limit=5")
        )
    };
    assert!((down / expected - 1.0).abs() < 0.01, "{}", why());
    assert!(stats["up_bytes"].as_u64().unwrap() > 0, "the ACKs");
    stop.store(true, Ordering::Relaxed);
    let _ = gw.terminate(Duration::from_secs(10));
}
