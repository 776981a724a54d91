//! End-to-end NAT: LAN hosts reach the pretend internet through Gatekeeper's userspace NAT, which is full cone,
//! hairpins, forwards ports, translates ICMP errors, and never lets a LAN address out, even when killed.

mod common;

use common::*;
use gatekeeper::lab::{Lab, Proc};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Starts the gateway in `gw` (with `extra` arguments) and waits until its log says `ready`.
fn spawn_gateway(lab: &Lab, extra: &[&str], env: &[(&str, &str)], log: &str, ready: &str) -> Proc {
    let state = state_dir(lab, "state");
    let mut c = lab.cmd(&lab.gw(), binary());
    c.args(["run", "--netns", &lab.gw(), "--state-dir", state.to_str().unwrap()]).env("GATEKEEPER_LOG", "debug");
    // Several queues whatever the machine: a reply can arrive on another queue than its request.
    c.args(["--nat-queues", "2"]).args(extra);
    for (k, v) in env {
        c.env(k, v);
    }
    let mut gw = Proc::spawn(c, &lab.dir().join(log)).unwrap();
    gw.wait_for_log(ready, Duration::from_secs(20)).unwrap();
    gw
}

fn start(lab: &Lab, env: &[(&str, &str)], log: &str) -> Proc {
    spawn_gateway(lab, &[], env, log, "NAT packet path ready")
}

/// Serves one TCP connection on the LAN host in `ns` at 10.0.0.11:`internal`, connects to it from `wan` through
/// the forward at `wan_ip`:`external`; returns what the WAN side read and the peer the LAN server saw.
fn through_forward(lab: &Lab, ns: &str, wan_ip: [u8; 4], external: u16, internal: u16) -> (String, SocketAddr) {
    let server = spawn_in(ns, move || {
        let l = TcpListener::bind(("10.0.0.11", internal)).unwrap();
        let (mut c, peer) = l.accept().unwrap();
        c.write_all(b"served").unwrap();
        peer
    });
    std::thread::sleep(Duration::from_millis(100));
    let got = lab
        .in_netns(&lab.wan(), move || {
            let to = SocketAddr::from((wan_ip, external));
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(3)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        })
        .unwrap();
    (got, server.join().unwrap())
}

/// LAN client `i` at 10.0.0.(10+i) with the gateway as default route.
fn client(lab: &Lab, i: usize) -> String {
    let ns = lab.client(i);
    lab.run(&ns, &["ip", "addr", "add", &format!("10.0.0.{}/24", 10 + i), "dev", "eth0"]).unwrap();
    lab.run(&ns, &["ip", "route", "add", "default", "via", "10.0.0.1"]).unwrap();
    ns
}

/// Echo servers in `wan` on 203.0.113.1: TCP 7000 and UDP 7001. Returns the peers they saw.
struct Echo {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Echo {
    fn start(lab: &Lab, ip: &'static str) -> Echo {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (s1, p1) = (stop.clone(), peers.clone());
        let tcp = spawn_in(&lab.wan(), move || {
            let l = TcpListener::bind((ip, 7000)).unwrap();
            l.set_nonblocking(true).unwrap();
            while !s1.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((mut c, peer)) => {
                        p1.lock().unwrap().push(peer);
                        // A thread per connection: a long-lived one must not hold up the others.
                        std::thread::spawn(move || {
                            c.set_nonblocking(false).unwrap();
                            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                            let mut b = [0u8; 64];
                            if let Ok(n) = c.read(&mut b) {
                                let _ = c.write_all(&b[..n]);
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        let (s2, p2) = (stop.clone(), peers.clone());
        let udp = spawn_in(&lab.wan(), move || {
            let u = UdpSocket::bind((ip, 7001)).unwrap();
            u.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut b = [0u8; 1500];
            while !s2.load(Ordering::SeqCst) {
                if let Ok((n, peer)) = u.recv_from(&mut b) {
                    p2.lock().unwrap().push(peer);
                    let _ = u.send_to(&b[..n], peer);
                }
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        Echo { stop, peers, threads: vec![tcp, udp] }
    }

    fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_echo(lab: &Lab, ns: &str, local_port: u16) -> String {
    lab.in_netns(ns, move || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        if local_port != 0 {
            s.bind(&SocketAddr::from(([0, 0, 0, 0], local_port)).into()).unwrap();
        }
        s.connect_timeout(&SocketAddr::from(([203, 0, 113, 1], 7000)).into(), Duration::from_secs(3)).unwrap();
        let mut c: TcpStream = s.into();
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"hello").unwrap();
        let mut b = [0u8; 16];
        let n = c.read(&mut b).unwrap();
        String::from_utf8_lossy(&b[..n]).into_owned()
    })
    .unwrap()
}

fn udp_echo(lab: &Lab, ns: &str, local_port: u16) -> Option<String> {
    lab.in_netns(ns, move || {
        let u = UdpSocket::bind(("0.0.0.0", local_port)).unwrap();
        u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        u.send_to(b"ping", "203.0.113.1:7001").unwrap();
        let mut b = [0u8; 16];
        u.recv(&mut b).ok().map(|n| String::from_utf8_lossy(&b[..n]).into_owned())
    })
    .unwrap()
}

#[test]
fn ping_tcp_and_udp_from_two_lan_hosts_leave_with_the_wan_address() {
    let lab = lab(2);
    let _gw = start(&lab, &[], "gw.log");
    let echo = Echo::start(&lab, "203.0.113.1");
    for i in 1..=2 {
        let ns = client(&lab, i);
        lab.run(&ns, &["ping", "-c2", "-i0.2", "-W2", "203.0.113.1"]).unwrap();
        assert_eq!(tcp_echo(&lab, &ns, 0), "hello");
        assert_eq!(udp_echo(&lab, &ns, 0).as_deref(), Some("ping"));
    }
    let peers = echo.peers();
    assert_eq!(peers.len(), 4);
    assert!(peers.iter().all(|p| p.ip().to_string() == "203.0.113.2"), "only the WAN address is seen: {peers:?}");
}

#[test]
fn two_hosts_with_the_same_source_port_both_work() {
    let lab = lab(2);
    let _gw = start(&lab, &[], "gw.log");
    let echo = Echo::start(&lab, "203.0.113.1");
    let (a, b) = (client(&lab, 1), client(&lab, 2));
    assert_eq!(udp_echo(&lab, &a, 40000).as_deref(), Some("ping"));
    assert_eq!(udp_echo(&lab, &b, 40000).as_deref(), Some("ping"));
    assert_eq!(tcp_echo(&lab, &a, 40001), "hello");
    assert_eq!(tcp_echo(&lab, &b, 40001), "hello");
    let ports: Vec<u16> = echo.peers().iter().map(|p| p.port()).collect();
    assert_eq!(ports[0], 40000, "the first keeps its port: {ports:?}");
    assert_ne!(ports[0], ports[1], "the second gets another: {ports:?}");
    assert_eq!(ports[2], 40001, "{ports:?}");
    assert_ne!(ports[2], ports[3], "{ports:?}");
}

#[test]
fn port_forwarding_lets_a_wan_host_reach_a_lan_server() {
    let lab = lab(1);
    // 62000 lies among the router's own ports (61000-65535), whose replies otherwise skip the NAT.
    let _gw = start(&lab, &[("PORT_FORWARDING", "10.0.0.11:8080 62000=10.0.0.11:8082/tcp")], "gw.log");
    let ns = client(&lab, 1);
    for (external, internal) in [(8080, 8080), (62000, 8082)] {
        let (got, peer) = through_forward(&lab, &ns, [203, 0, 113, 2], external, internal);
        assert_eq!(got, "served", "through external port {external}");
        assert_eq!(peer.ip().to_string(), "203.0.113.1", "the LAN server sees the real client");
    }
    // The router's own sockets keep off the forwarded port among theirs.
    let reserved = lab.run(&lab.gw(), &["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"]).unwrap();
    assert_eq!(reserved.trim(), "62000");
    // Other ports stay closed from the WAN, the router's own included.
    for port in [8081, 61500] {
        let closed = lab.in_netns(&lab.wan(), move || {
            let to = std::net::SocketAddr::from(([203, 0, 113, 2], port));
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_err()
        });
        assert!(closed.unwrap(), "port {port} is closed");
    }
}

#[test]
fn the_nat_follows_a_new_wan_address() {
    let lab = lab(1);
    let mut gw = start(&lab, &[("PORT_FORWARDING", "10.0.0.11:8080")], "gw.log");
    let echo = Echo::start(&lab, "203.0.113.1");
    let ns = client(&lab, 1);
    assert_eq!(udp_echo(&lab, &ns, 0).as_deref(), Some("ping"));
    // The ISP hands out another address (removing the old one also removes the default route through it).
    let g = lab.gw();
    lab.run(&g, &["ip", "addr", "del", "203.0.113.2/24", "dev", "gwwan"]).unwrap();
    lab.run(&g, &["ip", "addr", "add", "203.0.113.9/24", "dev", "gwwan"]).unwrap();
    lab.run(&g, &["ip", "route", "replace", "default", "via", "203.0.113.1"]).unwrap();
    gw.wait_for_log("the WAN address changed", Duration::from_secs(10)).unwrap();
    // The firewall names the new address and no longer the old one.
    let rules = lab.run(&g, &["iptables-save"]).unwrap();
    assert!(rules.contains("203.0.113.9/32") && !rules.contains("203.0.113.2/32"), "{rules}");
    // Connections leave from the new address, replies come back, the forward answers on it.
    assert_eq!(udp_echo(&lab, &ns, 0).as_deref(), Some("ping"));
    assert_eq!(tcp_echo(&lab, &ns, 0), "hello");
    let peers = echo.peers();
    assert_eq!(peers.first().map(|p| p.ip().to_string()).as_deref(), Some("203.0.113.2"), "{peers:?}");
    assert!(peers[1..].iter().all(|p| p.ip().to_string() == "203.0.113.9"), "after the change: {peers:?}");
    let (got, peer) = through_forward(&lab, &ns, [203, 0, 113, 9], 8080, 8080);
    assert_eq!(got, "served");
    assert_eq!(peer.ip().to_string(), "203.0.113.1");
}

#[test]
fn a_wan_without_an_address_forwards_nothing_until_it_gets_one() {
    let lab = lab(1);
    let g = lab.gw();
    // The WAN's DHCP client has not got its lease yet when the gateway starts.
    lab.run(&g, &["ip", "addr", "del", "203.0.113.2/24", "dev", "gwwan"]).unwrap();
    // No default route any more either: the WAN is named.
    let mut gw = spawn_gateway(&lab, &["--wan", "gwwan"], &[], "gw.log", "LAN ready");
    let forwarding = || lab.run(&g, &["cat", "/proc/sys/net/ipv4/ip_forward"]).unwrap().trim().to_owned();
    assert_eq!(forwarding(), "0", "no NAT yet, so no forwarding");
    assert!(gw.log().contains("no IPv4 address yet"), "{}", gw.log());
    let echo = Echo::start(&lab, "203.0.113.1");
    let ns = client(&lab, 1);
    // The lease comes: the NAT starts, then forwarding.
    lab.run(&g, &["ip", "addr", "add", "203.0.113.2/24", "dev", "gwwan"]).unwrap();
    lab.run(&g, &["ip", "route", "replace", "default", "via", "203.0.113.1"]).unwrap();
    gw.wait_for_log("NAT and forwarding on", Duration::from_secs(10)).unwrap();
    assert_eq!(forwarding(), "1");
    assert_eq!(udp_echo(&lab, &ns, 0).as_deref(), Some("ping"));
    assert_eq!(tcp_echo(&lab, &ns, 0), "hello");
    let peers = echo.peers();
    assert!(peers.iter().all(|p| p.ip().to_string() == "203.0.113.2"), "{peers:?}");
    let nat = common::api_get(&lab, &ns, "/api/nat");
    assert!(nat.contains("\"queues\":2"), "the web UI sees the NAT started late: {nat}");
}

#[test]
fn icmp_errors_come_back_to_the_lan_host() {
    let lab = lab(1);
    let _gw = start(&lab, &[], "gw.log");
    let ns = client(&lab, 1);
    // A UDP probe to a closed port: the port-unreachable error reaches the sender's socket.
    let refused = lab
        .in_netns(&ns, || {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.connect("203.0.113.1:9").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            u.send(b"x").unwrap();
            let mut b = [0u8; 8];
            u.recv(&mut b).unwrap_err().kind()
        })
        .unwrap();
    assert_eq!(refused, std::io::ErrorKind::ConnectionRefused);
    let tr = lab.run(&ns, &["traceroute", "-n", "-q1", "-w2", "203.0.113.1"]).unwrap();
    assert!(tr.lines().last().unwrap().contains("203.0.113.1"), "traceroute reaches the end: {tr}");
}

#[test]
fn nothing_leaves_untranslated_even_when_the_gateway_is_killed_under_load() {
    let lab = lab(1);
    let mut gw = start(&lab, &[], "first.log");
    let _echo = Echo::start(&lab, "203.0.113.1");
    let ns = client(&lab, 1);
    let pcap = lab.dir().join("wan.pcap");
    let mut dump = lab.cmd(&lab.wan(), "tcpdump");
    dump.args(["-i", "wan0", "-n", "-U", "-w", pcap.to_str().unwrap(), "ip"]);
    let mut dump = Proc::spawn(dump, &lab.dir().join("tcpdump.log")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // Load: a UDP stream from the LAN host for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let sender = spawn_in(&ns, move || {
        let u = UdpSocket::bind("0.0.0.0:0").unwrap();
        let mut sent = 0u64;
        while !s.load(Ordering::SeqCst) {
            let _ = u.send_to(&[7u8; 200], "203.0.113.1:7001");
            sent += 1;
            if sent.is_multiple_of(64) {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        sent
    });
    std::thread::sleep(Duration::from_secs(1));
    gw.kill9().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(udp_echo(&lab, &ns, 0), None, "with the gateway dead nothing passes (fail closed)");
    let mut gw2 = start(&lab, &[], "second.log");
    // The echo server also answers the load, and one probe can drop in its full socket: a few tries.
    let echoed = (0..5).find_map(|_| udp_echo(&lab, &ns, 0));
    assert_eq!(echoed.as_deref(), Some("ping"), "after the restart traffic flows again");
    let rules = lab.run(&lab.gw(), &["iptables-save"]).unwrap();
    assert_eq!(rules.matches("-j GK-LAN").count(), 1, "the killed run's rules were replaced, not doubled:\n{rules}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    let sent = sender.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    dump.signal(libc::SIGINT);
    dump.wait_timeout(Duration::from_secs(5)).unwrap();
    let all = lab.run(&lab.wan(), &["tcpdump", "-n", "-r", pcap.to_str().unwrap()]).unwrap();
    let leaked = lab.run(&lab.wan(), &["tcpdump", "-n", "-r", pcap.to_str().unwrap(), "net", "10.0.0.0/8"]).unwrap();
    assert!(all.lines().count() > 1000, "the capture saw the load ({sent} sent): {} packets", all.lines().count());
    assert!(leaked.trim().is_empty(), "LAN addresses on the WAN:\n{leaked}");
    // A normal exit takes every rule of ours away.
    gw2.terminate(Duration::from_secs(10)).unwrap();
    let left = lab.run(&lab.gw(), &["iptables-save"]).unwrap();
    assert!(!left.contains("GK-"), "rules left after the exit:\n{left}");
}

fn turnserver(lab: &Lab) -> Proc {
    let mut c = lab.cmd(&lab.wan(), "turnserver");
    c.args([
        "-n",
        "--listening-ip=203.0.113.1",
        "--listening-ip=203.0.113.3",
        "--relay-ip=203.0.113.1",
        "--no-tls",
        "--no-dtls",
        "--no-cli",
    ]);
    let p = Proc::spawn(c, &lab.dir().join("turnserver.log")).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    p
}

fn natdiscovery(lab: &Lab, ns: &str, args: &[&str]) -> String {
    let mut c = lab.cmd(ns, "turnutils_natdiscovery");
    c.args(args).arg("203.0.113.1");
    let out = c.output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn rfc5780_full_cone_where_the_kernel_masquerade_filters_by_address_and_port() {
    // Gatekeeper: endpoint-independent mapping and filtering.
    let lab = lab(1);
    let _gw = start(&lab, &[], "gw.log");
    let _turn = turnserver(&lab);
    let ns = client(&lab, 1);
    let out = natdiscovery(&lab, &ns, &["-m", "-f"]);
    assert!(out.contains("NAT with Endpoint Independent Mapping"), "{out}");
    assert!(out.contains("NAT with Endpoint Independent Filtering"), "{out}");
    // Hairpinning: the client's request to its own mapped address comes back to it through the NAT.
    let hairpin = natdiscovery(&lab, &ns, &["-H"]);
    assert!(hairpin.contains("successful hairpinning"), "{hairpin}");

    // The kernel's masquerade in the same topology, for contrast.
    let lab2 = common::lab(1);
    let gw = lab2.gw();
    lab2.run(&gw, &["ip", "addr", "add", "10.0.0.1/24", "dev", "gw-lan1"]).unwrap();
    lab2.run(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]).unwrap();
    lab2.run(&gw, &["nft", "add table ip nat; add chain ip nat post { type nat hook postrouting priority 100 ; }; add rule ip nat post oifname gwwan masquerade"]).unwrap();
    let _turn2 = turnserver(&lab2);
    let ns2 = client(&lab2, 1);
    let kernel = natdiscovery(&lab2, &ns2, &["-m", "-f"]);
    assert!(kernel.contains("NAT with Endpoint Independent Mapping"), "{kernel}");
    assert!(kernel.contains("Address and Port Dependent Filtering"), "{kernel}");
    let kernel_hairpin = natdiscovery(&lab2, &ns2, &["-H"]);
    assert!(!kernel_hairpin.contains("successful hairpinning"), "{kernel_hairpin}");
}

/// An IPv4+UDP datagram from `src:sport` to `dst:dport` (checksum 0: allowed for UDP over IPv4).
fn udp_datagram(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    let mut sum = 0u32;
    for i in (0..20).step_by(2) {
        sum += u32::from(u16::from_be_bytes([p[i], p[i + 1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..22].copy_from_slice(&sport.to_be_bytes());
    p[22..24].copy_from_slice(&dport.to_be_bytes());
    p[24..26].copy_from_slice(&8u16.to_be_bytes());
    p
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").parse().unwrap()
}

#[test]
fn a_flood_of_100000_flows_keeps_memory_bounded_and_established_flows_working() {
    let lab = lab(2);
    let gw = start(&lab, &[], "gw.log");
    let _echo = Echo::start(&lab, "203.0.113.1");
    let (a, b) = (client(&lab, 1), client(&lab, 2));
    // An established TCP connection from host a, opened before the flood and used after it.
    let (to_conn, conn_rx) = std::sync::mpsc::channel::<&'static [u8]>();
    let (from_conn, conn_tx) = std::sync::mpsc::channel::<String>();
    let conn = spawn_in(&a, move || {
        let mut c = TcpStream::connect_timeout(&"203.0.113.1:7000".parse().unwrap(), Duration::from_secs(3)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let msg = conn_rx.recv().unwrap();
        c.write_all(msg).unwrap();
        let mut buf = [0u8; 16];
        let n = c.read(&mut buf).unwrap_or(0);
        from_conn.send(String::from_utf8_lossy(&buf[..n]).into_owned()).unwrap();
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kb(gw.pid());
    // 100,000 new flows from host b: 50,000 source ports from each of two LAN addresses (more mappings than the
    // table holds: 65,536).
    lab.in_netns(&b, || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::RAW, Some(socket2::Protocol::from(255)))
            .unwrap();
        s.set_header_included_v4(true).unwrap();
        let to: socket2::SockAddr = SocketAddr::from(([203, 0, 113, 1], 0)).into();
        for i in 0..100_000u32 {
            let sport = 1024 + (i % 50_000) as u16;
            let src = [10, 0, 0, 12 + (i / 50_000) as u8];
            let p = udp_datagram(src, sport, [203, 0, 113, 1], 20_000);
            let _ = s.send_to(&p, &to);
            if i % 256 == 0 {
                std::thread::sleep(Duration::from_micros(500));
            }
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let api = common::api_get(&lab, &a, "/api/nat");
    let view: serde_json::Value = serde_json::from_str(&api).unwrap();
    let stats = &view["counters"];
    assert!(counter(stats, "mappings", &[]).unwrap() <= 65_536, "{stats}");
    // The external port space (1024-60999 on one address) runs out first: the oldest mappings give way.
    assert!(counter(stats, "mappings_created", &[]).unwrap() > 55_000, "the flood reached the NAT: {stats}");
    assert!(counter(stats, "mappings_evicted", &[]).unwrap() > 0, "the table filled and evicted: {stats}");
    // The old connection still works, and so do new ones.
    to_conn.send(b"still here").unwrap();
    assert_eq!(conn_tx.recv_timeout(Duration::from_secs(6)).unwrap(), "still here");
    conn.join().unwrap();
    assert_eq!(tcp_echo(&lab, &a, 0), "hello");
    let after = rss_kb(gw.pid());
    assert!(after < before + 150_000, "memory stays bounded: {before} kB -> {after} kB");
}

#[test]
fn bulk_tcp_with_gso_flows_with_correct_checksums() {
    let lab = lab(1);
    let _gw = start(&lab, &[], "gw.log");
    let ns = client(&lab, 1);
    let mut server = lab.cmd(&lab.wan(), "iperf3");
    server.args(["-s", "-1", "-B", "203.0.113.1"]);
    let _server = Proc::spawn(server, &lab.dir().join("iperf3-server.log")).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    lab.run(&lab.wan(), &["nstat", "-n"]).unwrap();
    let out = lab.run(&ns, &["iperf3", "-c", "203.0.113.1", "-t", "3", "-J"]).unwrap();
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let bps = report["end"]["sum_received"]["bits_per_second"].as_f64().unwrap();
    assert!(bps > 100e6, "TCP through the NAT: {:.0} Mbit/s", bps / 1e6);
    let nstat = lab.run(&lab.wan(), &["nstat", "-az", "TcpInCsumErrors", "UdpInCsumErrors"]).unwrap();
    for line in nstat.lines().filter(|l| l.contains("CsumErrors")) {
        assert_eq!(line.split_whitespace().nth(1), Some("0"), "checksum errors at the receiver: {nstat}");
    }
}

/// UDP GSO (one send of many equal datagrams, split by the kernel only after our verdict) through the NAT both
/// ways: the LAN host sends GSO bursts out, the WAN host echoes them back as GSO bursts. Every datagram arrives
/// whole and the receivers count no checksum errors. A GSO packet's checksum field must hold the pseudo-header
/// sum of the new addresses: the kernel derives each segment's checksum from it (a full sum breaks every one).
#[test]
fn udp_gso_bursts_cross_the_nat_both_ways_with_correct_checksums() {
    use gatekeeper::net::mmsg::{RecvBatch, SendBatch};
    use std::os::fd::AsRawFd;
    const ROUNDS: usize = 20;
    const PER_ROUND: usize = 40;
    const LEN: usize = 1000;
    let lab = lab(1);
    let _gw = start(&lab, &[], "gw.log");
    let ns = client(&lab, 1);
    for n in [lab.wan(), ns.clone()] {
        lab.run(&n, &["nstat", "-n"]).unwrap();
    }
    let wan_path = std::path::Path::new("/run/netns").join(lab.wan());
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // The echo: every datagram back to where it came from, a whole batch per GSO send when lengths match.
    let echo = std::thread::spawn(move || -> (usize, bool) {
        let f = std::fs::File::open(&wan_path).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = UdpSocket::bind("203.0.113.1:7100").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        let (mut rb, mut sb) = (RecvBatch::new(64, 2048), SendBatch::new(64));
        let mut echoed = 0;
        while !stop2.load(Ordering::Relaxed) {
            let Ok(n) = rb.recv(s.as_raw_fd()) else {
                std::thread::sleep(Duration::from_millis(1));
                continue;
            };
            for i in 0..n {
                let (bytes, from) = rb.get(i);
                sb.slot(from).extend_from_slice(bytes);
                sb.commit();
            }
            assert_eq!(sb.flush(s.as_raw_fd()), 0);
            echoed += n;
        }
        (echoed, sb.gso_enabled())
    });
    let sent_ok = lab
        .in_netns(&ns, move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
            let to: std::net::SocketAddrV4 = "203.0.113.1:7100".parse().unwrap();
            let mut sb = SendBatch::new(64);
            let mut rb = RecvBatch::new(64, 2048);
            let mut seen = vec![false; ROUNDS * PER_ROUND];
            for round in 0..ROUNDS {
                for k in 0..PER_ROUND {
                    let seq = (round * PER_ROUND + k) as u32;
                    let d = sb.slot(to);
                    d.extend_from_slice(&seq.to_be_bytes());
                    d.extend((4..LEN).map(|j| (j as u32 ^ seq) as u8));
                    sb.commit();
                }
                assert_eq!(sb.flush(s.as_raw_fd()), 0);
                // Each round's echoes are read before the next round: a receive buffer never overflows.
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                let want = (round + 1) * PER_ROUND;
                while seen.iter().filter(|s| **s).count() < want && std::time::Instant::now() < deadline {
                    // recvmmsg here never waits (MSG_DONTWAIT): wait for readability with a blocking peek.
                    let mut probe = [0u8; 1];
                    if s.peek(&mut probe).is_err() {
                        continue;
                    }
                    let Ok(n) = rb.recv(s.as_raw_fd()) else { continue };
                    for i in 0..n {
                        let (bytes, from) = rb.get(i);
                        assert_eq!(from, to, "echo from the WAN host");
                        assert_eq!(bytes.len(), LEN, "a whole datagram");
                        let seq = u32::from_be_bytes(bytes[..4].try_into().unwrap());
                        let pattern = bytes[4..].iter().enumerate().all(|(j, &b)| b == ((j as u32 + 4) ^ seq) as u8);
                        assert!(pattern, "content of datagram {seq}");
                        seen[seq as usize] = true;
                    }
                }
            }
            (seen.iter().filter(|s| **s).count(), sb.gso_enabled())
        })
        .unwrap();
    stop.store(true, Ordering::Relaxed);
    let (echoed, echo_gso) = echo.join().unwrap();
    assert!(sent_ok.1 && echo_gso, "both ends sent with GSO (the kernel took UDP_SEGMENT)");
    assert_eq!(echoed, ROUNDS * PER_ROUND, "every datagram reached the WAN host");
    assert_eq!(sent_ok.0, ROUNDS * PER_ROUND, "every echo came back to the LAN host");
    for n in [lab.wan(), ns] {
        let nstat = lab.run(&n, &["nstat", "-az", "UdpInCsumErrors"]).unwrap();
        for line in nstat.lines().filter(|l| l.contains("CsumErrors")) {
            assert_eq!(line.split_whitespace().nth(1), Some("0"), "checksum errors in {n}: {nstat}");
        }
    }
}
