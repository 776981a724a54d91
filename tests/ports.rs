//! Ports end to end: the real gateway in a lab. Forwards made through the API reach a LAN server from `wan`,
//! survive a restart and a `kill -9` and are gone when deleted; clashes are refused with their reason. Apps get
//! mappings with natpmpc, upnpc and a PCP MAP request built here; mappings lapse, survive a restart, and a new WAN
//! address is announced; mapping another device is refused; nothing answers from the WAN. The ports view shows a
//! service of the router, a forward, an app mapping, a full-cone mapping and a live TCP connection. Malformed
//! protocol requests are refused or counted, never a crash.

mod common;

use common::{config_file, spawn_in, start_ready, state_dir};
use gatekeeper::lab::{DhcpClient, Lab, Proc, field};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const UI: &str = "http://10.0.0.1:1337";
const GW_WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

fn lease(lab: &Lab, i: usize, name: &str) -> (gatekeeper::lab::ClientRun, Ipv4Addr) {
    let mut c = lab.dhcp_client(i, DhcpClient::Udhcpc, Some(name)).unwrap();
    let ip = field(&c.wait_event(0, &["bound"], Duration::from_secs(30)).unwrap(), "ip").unwrap().parse().unwrap();
    (c, ip)
}

fn start_gateway(lab: &Lab, log: &str) -> Proc {
    let cfg =
        config_file(lab, "gatekeeper.toml", "[[forward]]\nport = 2222\nto = \"10.0.0.200:22\"\nprotocol = \"tcp\"\n");
    let state = state_dir(lab, "state");
    let mut gw = start_ready(lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], log);
    gw.wait_for_log("NAT on", Duration::from_secs(20)).unwrap();
    gw.wait_for_log("port forwards and mappings loaded", Duration::from_secs(20)).unwrap();
    gw
}

/// `METHOD path` with a JSON body, as the admin: (HTTP status, body).
fn call(lab: &Lab, ns: &str, auth: &(String, String), method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let csrf = format!("X-CSRF-Token: {}", auth.1);
    let url = format!("{UI}{path}");
    let mut args = vec!["curl", "-s", "-m10", "-X", method, "-H", &auth.0, "-H", &csrf, "-w", "\n%{http_code}"];
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "-d", b]);
    }
    args.push(&url);
    let out = lab.run(ns, &args).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_owned())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// Sends `msg` to `addr` over TCP from namespace `ns` and returns what comes back (an error if nothing does).
fn tcp_round_trip(ns: &str, addr: SocketAddrV4, msg: &'static [u8]) -> Result<Vec<u8>, String> {
    spawn_in(ns, move || -> Result<Vec<u8>, String> {
        let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(msg).map_err(|e| e.to_string())?;
        let mut b = vec![0u8; 64];
        let n = s.read(&mut b).map_err(|e| e.to_string())?;
        b.truncate(n);
        Ok(b)
    })
    .join()
    .unwrap()
}

/// Waits (up to 5 s) for `addr` to echo from `ns`.
fn reaches(ns: &str, addr: SocketAddrV4) -> bool {
    let until = Instant::now() + Duration::from_secs(5);
    loop {
        if tcp_round_trip(ns, addr, b"hello").as_deref() == Ok(b"hello") {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn echo_on_lan(lab: &Lab, i: usize, ip: Ipv4Addr, port: u16, stop: Arc<AtomicBool>) {
    common::tcp_echo(&lab.client(i), SocketAddrV4::new(ip, port), stop);
    std::thread::sleep(Duration::from_millis(100));
}

fn forward_body(mac: &str, protocol: &str, first: u16, last: u16, to: u16) -> String {
    serde_json::json!({ "mac": mac, "protocol": protocol, "external_first": first, "external_last": last,
                        "internal_port": to, "description": "<b>web</b>" })
    .to_string()
}

#[test]
fn a_forward_made_through_the_api_reaches_a_lan_server_survives_restart_and_kill_9_and_goes_when_deleted() {
    let lab = common::lab(2);
    let mut gw = start_gateway(&lab, "gw.log");
    let (_c1, server_ip) = lease(&lab, 1, "server");
    let (_c2, other_ip) = lease(&lab, 2, "other");
    let mac = lab.client_mac(1).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    echo_on_lan(&lab, 1, server_ip, 8000, stop.clone());
    echo_on_lan(&lab, 1, server_ip, 8001, stop.clone());
    echo_on_lan(&lab, 2, other_ip, 8000, stop.clone());
    // A service of the router's own on its WAN address.
    let mut nc = lab.cmd(&lab.gw(), "nc").args(["-lk", "203.0.113.2", "2200"]).spawn().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let lan = lab.client(2);
    let auth = common::admin(&lab, &lan);

    let (code, body) =
        call(&lab, &lan, &auth, "POST", "/api/forwards", Some(&forward_body(&mac, "tcp", 8080, 8080, 8000)));
    assert_eq!(code, 201, "{body}");
    let f = json(&body);
    let id = f["id"].as_str().unwrap().to_owned();
    assert_eq!((f["ip"].as_str(), f["device"].as_str()), (Some(server_ip.to_string().as_str()), Some("server")));
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 8080)), "the forward reaches the LAN server from wan");
    // Hairpinning: another LAN device through the WAN address.
    assert!(reaches(&lan, SocketAddrV4::new(GW_WAN, 8080)), "hairpinned through the forward");

    // Clashes, each with its reason.
    for (body, status, why) in [
        (forward_body(&mac, "both", 8080, 8080, 9), 409, "clash with forward"),
        (forward_body(&mac, "tcp", 2190, 2210, 2190), 409, "the router itself listens on TCP port 2200"),
        (forward_body(&mac, "udp", 61500, 61500, 1), 409, "ephemeral range"),
        (forward_body(&mac, "tcp", 2222, 2222, 22), 409, "config file"),
        (forward_body(&mac, "tcp", 9191, 9191, 8000), 409, "already receives forward"),
        (forward_body(&mac, "tcp", 9000, 8000, 1), 400, "runs backwards"),
        (forward_body("nonsense", "tcp", 9000, 9000, 1), 400, "not a MAC"),
    ] {
        let (code, text) = call(&lab, &lan, &auth, "POST", "/api/forwards", Some(&body));
        assert_eq!(code, status, "{body}: {text}");
        assert!(text.contains(why), "{body}: {text}");
        if why.contains("2200") {
            assert!(text.contains(&format!("nc, pid {}", nc.id())), "{text}");
        }
    }
    let (code, text) = call(&lab, &lan, &auth, "DELETE", "/api/forwards/config-0", None);
    assert_eq!(code, 403, "{text}");
    // Without the CSRF token nothing changes.
    let bad = (auth.0.clone(), "wrong".to_owned());
    assert_eq!(call(&lab, &lan, &bad, "DELETE", &format!("/api/forwards/{id}"), None).0, 403);

    // Hits, and the config's forward listed read-only.
    let fw = json(&call(&lab, &lan, &auth, "GET", "/api/forwards", None).1);
    let list = fw["forwards"].as_array().unwrap();
    assert!(list.iter().any(|f| f["source"] == "config" && f["external_first"] == 2222), "{fw}");
    let ours = list.iter().find(|f| f["id"] == id.as_str()).unwrap();
    assert!(ours["packets_in"].as_u64().unwrap() >= 3 && ours["bytes_in"].as_u64().unwrap() > 0, "{ours}");
    assert_eq!(ours["description"], "<b>web</b>");

    // An edit applies at once: the forward now also takes 8081.
    let (code, body) = call(
        &lab,
        &lan,
        &auth,
        "PUT",
        &format!("/api/forwards/{id}"),
        Some(&forward_body(&mac, "tcp", 8080, 8081, 8000)),
    );
    assert_eq!(code, 200, "{body}");
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 8080)));

    // Restart.
    gw.terminate(Duration::from_secs(10)).unwrap();
    let mut gw = start_gateway(&lab, "gw2.log");
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 8080)), "the forward came back after a restart");

    // kill -9 right after the answer: what was acknowledged is kept.
    let auth = common::admin(&lab, &lan);
    let mac2 = lab.client_mac(2).unwrap();
    let (code, body) =
        call(&lab, &lan, &auth, "POST", "/api/forwards", Some(&forward_body(&mac2, "tcp", 9090, 9090, 8000)));
    assert_eq!(code, 201, "{body}");
    let id2 = json(&body)["id"].as_str().unwrap().to_owned();
    gw.kill9().unwrap();
    // The crashed run's rules and addresses are recovered by the next start.
    let mut gw = start_gateway(&lab, "gw3.log");
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 9090)), "the forward made before kill -9 is there");
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 8081)), "and the edited one");

    // Deleted: gone from wan.
    let auth = common::admin(&lab, &lan);
    for i in [&id, &id2] {
        let (code, text) = call(&lab, &lan, &auth, "DELETE", &format!("/api/forwards/{i}"), None);
        assert_eq!(code, 204, "{text}");
    }
    assert!(
        tcp_round_trip(&lab.wan(), SocketAddrV4::new(GW_WAN, 8080), b"hello").is_err(),
        "deleted forward still works"
    );
    assert!(tcp_round_trip(&lab.wan(), SocketAddrV4::new(GW_WAN, 9090), b"hello").is_err());
    let fw = json(&call(&lab, &lan, &auth, "GET", "/api/forwards", None).1);
    assert_eq!(fw["forwards"].as_array().unwrap().len(), 1, "{fw}");
    stop.store(true, Ordering::Relaxed);
    let _ = nc.kill();
    let _ = nc.wait();
    gw.terminate(Duration::from_secs(10)).unwrap();
}

/// A PCP MAP request (RFC 6887 11.1): version 2, opcode 1, lifetime, the client's address (IPv4-mapped), then
/// nonce, protocol, internal port, suggested external port and address.
fn pcp_map(client: Ipv4Addr, nonce: [u8; 12], proto: u8, internal: u16, external: u16, lifetime: u32) -> Vec<u8> {
    let mut p = vec![2u8, 1, 0, 0];
    p.extend(lifetime.to_be_bytes());
    p.extend([0u8; 10]);
    p.extend([0xff, 0xff]);
    p.extend(client.octets());
    p.extend(nonce);
    p.extend([proto, 0, 0, 0]);
    p.extend(internal.to_be_bytes());
    p.extend(external.to_be_bytes());
    p.extend([0u8; 10]);
    p.extend([0xff, 0xff, 0, 0, 0, 0]);
    p
}

/// Sends `msg` to `to` over UDP from `ns`; the answer within `wait`, if any.
fn udp_ask(ns: &str, to: SocketAddrV4, msg: Vec<u8>, wait: Duration) -> Option<Vec<u8>> {
    spawn_in(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.send_to(&msg, to).unwrap();
        let mut b = vec![0u8; 2048];
        s.recv_from(&mut b).ok().map(|(n, _)| b[..n].to_vec())
    })
    .join()
    .unwrap()
}

fn ports_view(lab: &Lab, ns: &str, auth: &(String, String)) -> serde_json::Value {
    let (code, body) = call(lab, ns, auth, "GET", "/api/ports", None);
    assert_eq!(code, 200, "{body}");
    json(&body)
}

fn row<'a>(view: &'a serde_json::Value, kind: &str, port: u16) -> Option<&'a serde_json::Value> {
    view["rows"].as_array().unwrap().iter().find(|r| r["kind"] == kind && r["port"] == port)
}

#[test]
fn apps_map_ports_with_natpmpc_upnpc_and_pcp_and_the_ports_view_shows_every_use() {
    let lab = common::lab(2);
    let mut gw = start_gateway(&lab, "gw.log");
    let (_c1, ip1) = lease(&lab, 1, "console");
    let (_c2, ip2) = lease(&lab, 2, "laptop");
    let (lan1, lan2) = (lab.client(1), lab.client(2));
    let stop = Arc::new(AtomicBool::new(false));
    echo_on_lan(&lab, 1, ip1, 8000, stop.clone());
    let auth = common::admin(&lab, &lan2);

    // NAT-PMP with natpmpc: the external address, a mapping wan can reach, its deletion.
    let out = lab.run(&lan1, &["natpmpc", "-g", "10.0.0.1"]).unwrap();
    assert!(out.contains("Public IP address : 203.0.113.2"), "{out}");
    let out = lab.run(&lan1, &["natpmpc", "-g", "10.0.0.1", "-a", "7001", "8000", "tcp", "3600"]).unwrap();
    assert!(out.contains("Mapped public port 7001 protocol TCP to local port 8000"), "{out}");
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 7001)), "natpmpc's mapping reaches the LAN server");
    let view = ports_view(&lab, &lan2, &auth);
    let app = row(&view, "app", 7001).unwrap_or_else(|| panic!("no app row for 7001: {view}"));
    assert_eq!(app["app"]["origin"], "nat-pmp");
    assert_eq!(app["app"]["device"], "console");
    assert!(app["app"]["remaining_s"].as_u64().unwrap() > 3500, "{app}");
    let out = lab.run(&lan1, &["natpmpc", "-g", "10.0.0.1", "-a", "7001", "8000", "tcp", "0"]).unwrap();
    assert!(out.contains("Mapped public port 0 protocol TCP to local port 8000"), "{out}");
    assert!(tcp_round_trip(&lab.wan(), SocketAddrV4::new(GW_WAN, 7001), b"hello").is_err(), "deleted mapping works");

    // A mapping lapses after its lifetime.
    lab.run(&lan1, &["natpmpc", "-g", "10.0.0.1", "-a", "7004", "8000", "tcp", "2"]).unwrap();
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 7004)));
    std::thread::sleep(Duration::from_secs(4));
    assert!(row(&ports_view(&lab, &lan2, &auth), "app", 7004).is_none(), "the lapsed mapping is still listed");
    assert!(tcp_round_trip(&lab.wan(), SocketAddrV4::new(GW_WAN, 7004), b"hello").is_err(), "lapsed mapping works");

    // UPnP with upnpc: discovery over SSDP, the external address, add, list, reach, delete.
    let upnpc = |args: &[&str]| {
        // -i: miniupnpc takes an IGD whose external address is reserved (the lab's 203.0.113.0/24 is TEST-NET-3)
        // for "not connected" and stops unless told to go on.
        // Its exit status says little (2 after a refused request); what it prints is what counts.
        let out = lab.cmd(&lan1, "upnpc").args(["-i", "-m", "eth0"]).args(args).output().unwrap();
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
    };
    let ip1s = ip1.to_string();
    let out = upnpc(&["-e", "game & co", "-a", &ip1s, "8000", "7002", "TCP", "3600"]);
    assert!(out.contains("ExternalIPAddress = 203.0.113.2"), "{out}");
    assert!(out.contains("is redirected to internal"), "{out}");
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 7002)), "upnpc's mapping reaches the LAN server");
    let out = upnpc(&["-l"]);
    assert!(out.contains("7002->") && out.contains(&format!("{ip1}:8000")), "{out}");
    // Escaped in the answer as XML requires (upnpc prints element text without unescaping it).
    assert!(out.contains("game &amp; co"), "{out}");
    // Secure mode: a device maps only itself.
    let out = upnpc(&["-a", &ip2.to_string(), "8000", "7005", "TCP", "3600"]);
    assert!(out.contains("606") || out.contains("718"), "mapping another device was not refused: {out}");
    assert!(tcp_round_trip(&lab.wan(), SocketAddrV4::new(GW_WAN, 7005), b"hello").is_err());
    let out = upnpc(&["-d", "7002", "TCP"]);
    assert!(!out.contains("failed"), "{out}");
    assert!(tcp_round_trip(&lab.wan(), SocketAddrV4::new(GW_WAN, 7002), b"hello").is_err(), "deleted mapping works");

    // PCP MAP, built here: a mapping with the external address, which wan reaches.
    let nonce = [7u8; 12];
    let answer = udp_ask(
        &lan1,
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5351),
        pcp_map(ip1, nonce, 6, 8000, 7003, 60),
        Duration::from_secs(2),
    )
    .expect("a PCP answer");
    assert_eq!((answer[0], answer[1], answer[3]), (2, 0x81, 0), "PCP answer: {answer:?}");
    let lifetime = u32::from_be_bytes(answer[4..8].try_into().unwrap());
    assert_eq!(lifetime, 120, "PCP lifetimes are at least 120 s");
    assert_eq!(&answer[24..36], &nonce);
    let port = u16::from_be_bytes([answer[42], answer[43]]);
    assert_eq!(port, 7003);
    assert_eq!(&answer[44..60], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 2]);
    assert!(reaches(&lab.wan(), SocketAddrV4::new(GW_WAN, 7003)), "the PCP mapping reaches the LAN server");
    // Another device's address in the PCP header: refused (ADDRESS_MISMATCH, 12).
    let a = udp_ask(
        &lan1,
        SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5351),
        pcp_map(ip2, nonce, 6, 8000, 7006, 600),
        Duration::from_secs(2),
    )
    .expect("a PCP answer");
    assert_eq!(a[3], 12, "{a:?}");

    // None of it answers from the WAN side.
    assert!(udp_ask(&lab.wan(), SocketAddrV4::new(GW_WAN, 5351), vec![0, 0], Duration::from_secs(1)).is_none());
    let search =
        b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\nST: ssdp:all\r\n\r\n";
    assert!(udp_ask(&lab.wan(), SocketAddrV4::new(GW_WAN, 1900), search.to_vec(), Duration::from_secs(1)).is_none());
    assert!(
        lab.run(&lab.wan(), &["curl", "-s", "-m2", "http://203.0.113.2:5000/rootDesc.xml"]).is_err(),
        "the UPnP description answers from the WAN"
    );

    // Bad input: an error answer or a counted drop, never a crash.
    let pmp = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 5351);
    assert!(udp_ask(&lan1, pmp, vec![0], Duration::from_millis(500)).is_none(), "a 1-byte NAT-PMP request is answered");
    let a = udp_ask(&lan1, pmp, vec![1, 0], Duration::from_secs(1)).expect("an answer to an unknown version");
    assert_eq!(u16::from_be_bytes([a[2], a[3]]), 1, "NAT-PMP unsupported version: {a:?}");
    // An oversized PCP request: MALFORMED_REQUEST (3), the answer cut to PCP's 1,100 bytes.
    let a = udp_ask(&lan1, pmp, vec![2; 1200], Duration::from_secs(1)).expect("an answer to an oversized PCP request");
    assert_eq!((a[0], a[1] & 0x80, a[3], a.len() <= 1100), (2, 0x80, 3, true), "{a:?}");
    // A PCP response sent to the server is never answered (and counted).
    let mut response = pcp_map(ip1, nonce, 6, 8000, 7010, 600);
    response[1] |= 0x80;
    assert!(udp_ask(&lan1, pmp, response, Duration::from_millis(500)).is_none(), "a PCP response was answered");
    let a = udp_ask(&lan1, pmp, vec![0, 1, 0, 0, 0x1f, 0x40], Duration::from_secs(1));
    assert!(a.is_none_or(|a| u16::from_be_bytes([a[2], a[3]]) != 0), "a truncated NAT-PMP map succeeded");
    let ssdp = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
    assert!(udp_ask(&lan1, ssdp, b"M-SEARCH garbage\r\n\r\n".to_vec(), Duration::from_millis(500)).is_none());
    let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewPortMappingDescription>&lol2;</NewPortMappingDescription></u:AddPortMapping></s:Body></s:Envelope>"#;
    let out = lab
        .run(
            &lan1,
            &[
                "curl",
                "-s",
                "-m5",
                "-w",
                "\n%{http_code}",
                "-H",
                "Content-Type: text/xml",
                "-H",
                "SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\"",
                "-d",
                bomb,
                "http://10.0.0.1:5000/ctl/IPConn",
            ],
        )
        .unwrap();
    assert!(out.ends_with("500") || out.ends_with("400"), "{out}");
    assert!(!out.contains("lollol"), "{out}");
    let big = "x".repeat(100_000);
    let out = lab
        .run(
            &lan1,
            &[
                "curl",
                "-s",
                "-m5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-d",
                &big,
                "http://10.0.0.1:5000/ctl/IPConn",
            ],
        )
        .unwrap();
    assert_eq!(out, "413", "an oversized SOAP body");
    let view = ports_view(&lab, &lan2, &auth);
    let c = &view["counters"];
    assert!(common::counter(c, "dropped", &[("protocol", "natpmp")]).unwrap_or(0) >= 1, "{c}");
    assert!(common::counter(c, "dropped", &[("protocol", "pcp")]).unwrap_or(0) >= 1, "{c}");
    assert!(common::counter(c, "dropped", &[("protocol", "ssdp")]).unwrap_or(0) >= 1, "{c}");
    // Still serving.
    let out = lab.run(&lan1, &["natpmpc", "-g", "10.0.0.1"]).unwrap();
    assert!(out.contains("203.0.113.2"), "{out}");

    // The ports view: a service of the router, a forward, an app mapping, a full-cone mapping with a live
    // TCP connection.
    let mut nc = lab.cmd(&lab.gw(), "nc").args(["-lk", "203.0.113.2", "2200"]).spawn().unwrap();
    let mac2 = lab.client_mac(2).unwrap();
    let (code, body) =
        call(&lab, &lan2, &auth, "POST", "/api/forwards", Some(&forward_body(&mac2, "udp", 6000, 6000, 6000)));
    assert_eq!(code, 201, "{body}");
    // A connection from laptop to the remote that stays open.
    let held = Arc::new(AtomicBool::new(false));
    let h = held.clone();
    let listener = spawn_in(&lab.wan(), move || {
        let l = std::net::TcpListener::bind((REMOTE, 7100)).unwrap();
        let (c, _) = l.accept().unwrap();
        while !h.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(c);
    });
    std::thread::sleep(Duration::from_millis(200));
    let h2 = held.clone();
    let client = spawn_in(&lan2, move || {
        let c = TcpStream::connect((REMOTE, 7100)).unwrap();
        let port = c.local_addr().unwrap().port();
        (c, port, h2)
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let deadline = Instant::now() + Duration::from_secs(10);
    let view = loop {
        let v = ports_view(&lab, &lan2, &auth);
        if row(&v, "service", 2200).is_some() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let svc = row(&view, "service", 2200).unwrap_or_else(|| panic!("no service row: {view}"));
    assert_eq!(svc["service"]["process"], "nc");
    assert_eq!(svc["service"]["pid"], nc.id());
    assert!(row(&view, "forward", 6000).is_some_and(|r| r["forward"]["device"] == "laptop"), "{view}");
    assert!(row(&view, "app", 7003).is_some_and(|r| r["app"]["origin"] == "pcp"), "{view}");
    let m = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "mapping" && r["mapping"]["internal"] == format!("{ip2}:{}", client.1))
        .unwrap_or_else(|| panic!("no full-cone mapping of laptop's connection: {view}"));
    assert_eq!(m["mapping"]["device"], "laptop");
    let conn = &m["connections"][0];
    assert_eq!(
        (conn["remote"].as_str(), conn["state"].as_str()),
        (Some("203.0.113.1:7100"), Some("established")),
        "{m}"
    );
    held.store(true, Ordering::Relaxed);
    drop(client);
    listener.join().unwrap();

    // The ISP hands out another address: NAT-PMP announces it to the LAN (224.0.0.1:5350), and clients see it.
    let announced = spawn_in(&lan1, || {
        let s = UdpSocket::bind("0.0.0.0:5350").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut b = [0u8; 64];
        loop {
            match s.recv_from(&mut b) {
                Ok((n, from)) if n >= 12 && b[..4] == [0, 128, 0, 0] && b[8..12] == [203, 0, 113, 9] => {
                    return Some(from);
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let g = lab.gw();
    lab.run(&g, &["ip", "addr", "del", "203.0.113.2/24", "dev", "gwwan"]).unwrap();
    lab.run(&g, &["ip", "addr", "add", "203.0.113.9/24", "dev", "gwwan"]).unwrap();
    lab.run(&g, &["ip", "route", "replace", "default", "via", "203.0.113.1"]).unwrap();
    let from = announced.join().unwrap().expect("a NAT-PMP announcement of the new address");
    assert_eq!(from.to_string(), "10.0.0.1:5351");
    let out = lab.run(&lan1, &["natpmpc", "-g", "10.0.0.1"]).unwrap();
    assert!(out.contains("Public IP address : 203.0.113.9"), "{out}");

    // App mappings are kept like forwards: the PCP mapping is there after a restart, on the new address.
    gw.terminate(Duration::from_secs(10)).unwrap();
    let mut gw = start_gateway(&lab, "gw2.log");
    assert!(
        reaches(&lab.wan(), SocketAddrV4::new(Ipv4Addr::new(203, 0, 113, 9), 7003)),
        "the PCP mapping after a restart"
    );
    let auth = common::admin(&lab, &lan2);
    let view = ports_view(&lab, &lan2, &auth);
    let left = row(&view, "app", 7003).unwrap_or_else(|| panic!("{view}"))["app"]["remaining_s"].as_u64().unwrap();
    assert!(left > 60 && left <= 120, "{left}");
    stop.store(true, Ordering::Relaxed);
    let _ = nc.kill();
    let _ = nc.wait();
    gw.terminate(Duration::from_secs(10)).unwrap();
}
