//! The real packet path in a lab namespace (our rules, NFQUEUE, the NAT, run in this process): every packet's
//! record arrives through the control handle's ring readers with the right device, remote, ports and way, for
//! TCP, UDP and ICMP both ways and for hairpinning; a ring nobody drains counts drops and traffic goes on.

mod common;

use gatekeeper::datapath::{Datapath, NatHandle};
use gatekeeper::lab::Lab;
use gatekeeper::nat::{L4, Nat, NatConfig, PacketRecord, Verdict, Way};
use gatekeeper::net::firewall::{self, Rules};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 11);
const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 12);
const WAN_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
/// Small, so that the second part fills it quickly.
const RING: usize = 1024;

/// The LAN (a bridge over both client ports, as the gateway makes it), the rules, and the packet path running
/// on a thread in `gw`; returns its handle.
fn gateway(lab: &Lab, stop: Arc<AtomicBool>) -> NatHandle {
    let gw = lab.gw();
    for cmd in [
        "ip link add brlan type bridge",
        "ip link set gw-lan1 master brlan",
        "ip link set gw-lan2 master brlan",
        "ip link set brlan up",
        "ip addr add 10.0.0.1/24 dev brlan",
        "sysctl -qw net.ipv4.ip_forward=1",
        "sysctl -qw net.ipv4.conf.brlan.accept_local=1",
    ] {
        lab.run(&gw, &cmd.split(' ').collect::<Vec<_>>()).unwrap();
    }
    // Hairpinning across the bridge needs bridged frames kept out of iptables (only there with br_netfilter).
    let _ = lab.run(&gw, &["sysctl", "-qw", "net.bridge.bridge-nf-call-iptables=0"]);
    for (i, ip) in [(1, A), (2, B)] {
        let ns = lab.client(i);
        lab.run(&ns, &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]).unwrap();
        lab.run(&ns, &["ip", "route", "add", "default", "via", "10.0.0.1"]).unwrap();
    }
    let rules = Rules {
        lan_if: "brlan".into(),
        wan_if: "gwwan".into(),
        lan_subnet: "10.0.0.0/24".parse().unwrap(),
        wan_ip: WAN_IP,
        router_lan_ip: Ipv4Addr::new(10, 0, 0, 1),
        queue_first: 0,
        queue_count: 2,
        router_ports: (61000, 65535),
        forwards: Vec::new(),
    };
    firewall::restore_with(lab.cmd(&gw, "iptables-restore"), &rules.script()).unwrap();
    let wan_index: u32 = lab.run(&gw, &["cat", "/sys/class/net/gwwan/ifindex"]).unwrap().trim().parse().unwrap();
    let mut cfg = NatConfig::new(WAN_IP, rules.lan_subnet, rules.router_lan_ip);
    cfg.port_range = (1024, 60999);
    let datapath = Datapath {
        first_queue: 0,
        queues: 2,
        wan_index,
        ring_capacity: RING,
        tap_bytes: 0,
        tap_snap: Default::default(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    common::spawn_in(&gw, move || {
        let (handle, loops) = datapath.open(Nat::new(cfg, 1), stop).unwrap();
        tx.send(handle).unwrap();
        loops.run().unwrap();
    });
    rx.recv_timeout(Duration::from_secs(10)).unwrap()
}

/// TCP (7000) and UDP (7001) echo servers on the remote; the UDP one also reports the peers it saw.
fn echo_servers(lab: &Lab, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<SocketAddr>>> {
    let peers = Arc::new(Mutex::new(Vec::new()));
    common::tcp_echo(&lab.wan(), std::net::SocketAddrV4::new(REMOTE, 7000), stop.clone());
    let p = peers.clone();
    common::spawn_in(&lab.wan(), move || {
        let u = UdpSocket::bind((REMOTE, 7001)).unwrap();
        u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut b = [0u8; 1500];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = u.recv_from(&mut b) {
                p.lock().unwrap().push(peer);
                let _ = u.send_to(&b[..n], peer);
            }
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    peers
}

/// Drains both queues' rings into one list while `draining` is set (the readers stay attached either way).
fn collect(handle: &NatHandle, draining: Arc<AtomicBool>, stop: Arc<AtomicBool>) -> Arc<Mutex<Vec<PacketRecord>>> {
    let mut readers: Vec<_> = (0..2).map(|q| handle.records(q).expect("a reader per queue")).collect();
    assert!(handle.records(0).is_none(), "one reader per ring");
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if draining.load(Ordering::Relaxed) {
                let mut g = g.lock().unwrap();
                for r in &mut readers {
                    r.drain(|rec| g.push(rec));
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    got
}

/// Waits until a record matching `f` has arrived.
fn wait_for(got: &Mutex<Vec<PacketRecord>>, what: &str, f: impl Fn(&PacketRecord) -> bool) -> PacketRecord {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(r) = got.lock().unwrap().iter().find(|r| f(r)) {
            return *r;
        }
        assert!(Instant::now() < deadline, "no record for {what}: {:#?}", got.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn is(r: &PacketRecord, protocol: L4, way: Way, device: Ipv4Addr, remote: Ipv4Addr) -> bool {
    r.protocol == protocol && r.way == way && r.device == device && r.remote == remote
}

#[test]
fn records_arrive_through_the_rings_and_a_full_ring_counts_drops_without_stalling_traffic() {
    let lab = common::lab(2);
    let stop = Arc::new(AtomicBool::new(false));
    let handle = gateway(&lab, stop.clone());
    let peers = echo_servers(&lab, stop.clone());
    let draining = Arc::new(AtomicBool::new(true));
    let got = collect(&handle, draining.clone(), stop.clone());
    let (a, b) = (lab.client(1), lab.client(2));

    // TCP from A: connect, send, read the echo.
    let tcp_port = lab
        .in_netns(&a, || {
            let mut c = TcpStream::connect_timeout(&(REMOTE, 7000).into(), Duration::from_secs(3)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            c.write_all(b"hello").unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            c.local_addr().unwrap().port()
        })
        .unwrap();
    for way in [Way::Up, Way::Down] {
        let r = wait_for(&got, "TCP", |r| is(r, L4::Tcp, way, A, REMOTE) && r.device_port == tcp_port);
        assert_eq!((r.remote_port, r.verdict, r.hairpin, r.segments), (7000, Verdict::Translated, false, 1));
    }
    // The data segment: 5 bytes of payload, IP and TCP headers (with timestamps) around them.
    let data = wait_for(&got, "TCP data", |r| is(r, L4::Tcp, Way::Up, A, REMOTE) && r.bytes == 20 + 32 + 5);
    assert_eq!(data.ip_proto, 6);

    // UDP from B: a 100-byte datagram and its echo, 128 bytes each on the wire.
    let b_port = lab
        .in_netns(&b, || {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            u.send_to(&[9; 100], (REMOTE, 7001)).unwrap();
            let mut buf = [0u8; 200];
            assert_eq!(u.recv(&mut buf).unwrap(), 100);
            u.local_addr().unwrap().port()
        })
        .unwrap();
    for way in [Way::Up, Way::Down] {
        let r = wait_for(&got, "UDP", |r| is(r, L4::Udp, way, B, REMOTE) && r.device_port == b_port);
        assert_eq!((r.remote_port, r.bytes, r.verdict), (7001, 128, Verdict::Translated));
    }
    // The WAN port B's mapping got (the echo server saw it): A sends to it through the WAN address (hairpin).
    let ext = peers.lock().unwrap().iter().find(|p| p.ip() == std::net::IpAddr::V4(WAN_IP)).unwrap().port();
    let hairpin_rx = common::spawn_in(&b, move || {
        let u = UdpSocket::bind(("0.0.0.0", b_port)).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut buf = [0u8; 64];
        u.recv_from(&mut buf).ok()
    });
    std::thread::sleep(Duration::from_millis(100));
    let a_port = lab
        .in_netns(&a, move || {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.send_to(b"through the wan address", (WAN_IP, ext)).unwrap();
            u.local_addr().unwrap().port()
        })
        .unwrap();
    let (n, from) = hairpin_rx.join().unwrap().expect("B got the hairpinned datagram");
    assert_eq!((n, from.ip()), (23, std::net::IpAddr::V4(WAN_IP)), "from A's mapping on the WAN address");
    let r = wait_for(&got, "hairpin", |r| r.hairpin);
    assert!(is(&r, L4::Udp, Way::Up, A, B), "{r:?}");
    assert_eq!((r.device_port, r.remote_port, r.verdict), (a_port, b_port, Verdict::Translated));

    // ICMP echo from A, both ways, by its identifier.
    lab.run(&a, &["ping", "-c2", "-i0.2", "-W2", &REMOTE.to_string()]).unwrap();
    let up = wait_for(&got, "ICMP up", |r| is(r, L4::Icmp, Way::Up, A, REMOTE));
    let down = wait_for(&got, "ICMP down", |r| is(r, L4::Icmp, Way::Down, A, REMOTE));
    assert_eq!((up.device_port, down.device_port, up.remote_port), (up.device_port, up.device_port, 0));
    assert_eq!((up.bytes, down.bytes), (84, 84), "ping's 56 bytes of data, ICMP and IP headers");
    let dropped = |h: &NatHandle| h.counters().get("ring_dropped", &[]).unwrap();
    assert_eq!(dropped(&handle), 0, "a drained ring drops nothing");

    // Stop draining (the readers stay attached): the rings fill, the records beyond are counted, and traffic
    // carries on at full speed.
    draining.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(50));
    let flood = lab.run(&a, &["ping", "-f", "-c", "3000", "-w", "20", &REMOTE.to_string()]).unwrap();
    assert!(flood.contains("3000 received"), "every echo came back: {flood}");
    lab.in_netns(&a, || {
        let mut c = TcpStream::connect_timeout(&(REMOTE, 7000).into(), Duration::from_secs(3)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"still").unwrap();
        let mut buf = [0u8; 5];
        c.read_exact(&mut buf).unwrap();
    })
    .unwrap();
    let lost = dropped(&handle);
    assert!(lost >= 6000 - 2 * RING as u64, "at least what did not fit was counted: {lost}");
    let per_queue: Vec<u64> =
        (0..2).map(|q| handle.counters().get("ring_dropped", &[("queue", &q.to_string())]).unwrap()).collect();
    assert_eq!(per_queue.iter().sum::<u64>(), lost, "per queue: {per_queue:?}");
    // Drained again, the ring holds at most its capacity of what came meanwhile.
    let before = got.lock().unwrap().len();
    draining.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(200));
    let after = got.lock().unwrap().len();
    assert!(after - before <= 2 * RING, "{before} -> {after}");
    let c = handle.counters();
    assert!(c.get("translated", &[]).unwrap() > 6000, "{c:?}");
    assert_eq!(c.get("verdict_send_errors", &[]), Some(0));

    stop.store(true, Ordering::Relaxed);
    handle.stop();
    std::thread::sleep(Duration::from_millis(300));
}
