//! End-to-end DHCP with real clients (dhclient, udhcpc, dhcpcd) against the gateway in a lab.

mod common;

use common::*;
use dhcproto::v4::{DhcpOption, MessageType};
use gatekeeper::lab::{DhcpClient, Lab, field};
use std::net::Ipv4Addr;
use std::time::Duration;

const BIND: Duration = Duration::from_secs(30);

fn start(lab: &Lab, config: &str) -> gatekeeper::lab::Proc {
    let cfg = config_file(lab, "gatekeeper.toml", config);
    let state = state_dir(lab, "state");
    start_ready(lab, &["--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()], "gw.log")
}

fn wait_log(gw: &mut gatekeeper::lab::Proc, needle: &str) {
    gw.wait_for_log(needle, Duration::from_secs(20)).unwrap();
}

#[test]
fn dhclient_udhcpc_and_dhcpcd_bind_renew_and_release() {
    let lab = lab(3);
    // Short leases so that dhclient renews on its own (T1 = 10 s) within the test.
    let mut gw = start(&lab, "[dhcp]\nlease_time = 20\n");
    wait_log(&mut gw, "DHCP server ready");
    let mut clients = vec![
        lab.dhcp_client(1, DhcpClient::Dhclient, Some("laptop")).unwrap(),
        lab.dhcp_client(2, DhcpClient::Udhcpc, Some("phone")).unwrap(),
        lab.dhcp_client(3, DhcpClient::Dhcpcd, Some("tablet")).unwrap(),
    ];
    let mut ips = Vec::new();
    for c in &mut clients {
        let bound = c.wait_event(0, &["BOUND", "bound"], BIND).unwrap();
        let ip: Ipv4Addr = field(&bound, "ip").unwrap().parse().unwrap();
        assert!(ip.octets()[..3] == [10, 0, 0] && ip.octets()[3] > 1, "{}: {bound}", c.kind.name());
        assert_eq!(field(&bound, "router"), Some("10.0.0.1"), "{}: {bound}", c.kind.name());
        assert_eq!(field(&bound, "dns"), Some("10.0.0.1"), "{}: {bound}", c.kind.name());
        assert_eq!(field(&bound, "domain"), Some("lan"), "{}: {bound}", c.kind.name());
        assert_eq!(field(&bound, "lease"), Some("20"), "{}: {bound}", c.kind.name());
        ips.push(ip);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 3, "every client gets its own address: {ips:?}");
    // The addresses work: each device reaches the router.
    for i in 1..=3 {
        lab.run(&lab.client(i), &["ping", "-c1", "-W2", "10.0.0.1"]).unwrap();
    }
    // Host names reach the server (the DNS issue serves them as NAME.lan).
    for name in ["laptop", "phone", "tablet"] {
        wait_log(&mut gw, &format!("hostname: Some(\"{name}\")"));
    }

    // Renewal: asked for (udhcpc, dhcpcd) or at T1 (dhclient); the address stays.
    for c in &mut clients {
        let seen = c.event_count();
        let before = c.events().lines().last().and_then(|l| field(l, "ip").map(str::to_owned));
        c.renew();
        let renewed = c.wait_event(seen, &["RENEW", "renew"], Duration::from_secs(25)).unwrap();
        assert_eq!(field(&renewed, "ip").map(str::to_owned), before, "{}: {renewed}", c.kind.name());
    }
    assert!(gw.log().matches("Renewed(").count() >= 3, "{}", gw.log());

    // Release: the server frees each lease.
    for c in &mut clients {
        c.release(&lab).unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while gw.log().matches("Released(").count() < 3 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(gw.log().matches("Released(").count(), 3, "{}", gw.log());
    assert!(gw.terminate(Duration::from_secs(10)).unwrap().success(), "{}", gw.log());
}

#[test]
fn static_lease_from_the_config_file_is_honoured() {
    let lab = lab(2);
    let mac = lab.client_mac(1).unwrap();
    let mut gw = start(&lab, &format!("[[dhcp.static]]\nmac = \"{mac}\"\nip = \"10.0.0.77\"\nname = \"printer\"\n"));
    wait_log(&mut gw, "DHCP server ready");
    let mut owner = lab.dhcp_client(1, DhcpClient::Udhcpc, None).unwrap();
    let mut other = lab.dhcp_client(2, DhcpClient::Udhcpc, None).unwrap();
    let bound = owner.wait_event(0, &["bound"], BIND).unwrap();
    assert_eq!(field(&bound, "ip"), Some("10.0.0.77"), "{bound}");
    let bound = other.wait_event(0, &["bound"], BIND).unwrap();
    assert_ne!(field(&bound, "ip"), Some("10.0.0.77"), "{bound}");
    assert!(gw.log().contains("hostname: Some(\"printer\")"), "{}", gw.log());
}

#[test]
fn clients_keep_their_address_after_kill_9_and_restart() {
    let lab = lab(2);
    let config = "[dhcp]\nlease_time = 600\n";
    let mut gw = start(&lab, config);
    wait_log(&mut gw, "DHCP server ready");
    let mut renewing = lab.dhcp_client(1, DhcpClient::Udhcpc, None).unwrap();
    let mut rebooting = lab.dhcp_client(2, DhcpClient::Dhclient, None).unwrap();
    let ip1 = field(&renewing.wait_event(0, &["bound"], BIND).unwrap(), "ip").unwrap().to_owned();
    let ip2 = field(&rebooting.wait_event(0, &["BOUND"], BIND).unwrap(), "ip").unwrap().to_owned();
    // dhclient stops without releasing, like a laptop going to sleep.
    rebooting.proc.kill9().unwrap();

    gw.kill9().unwrap();
    let mut gw = start(&lab, config);
    wait_log(&mut gw, "DHCP server ready");
    assert!(gw.log().contains("leases=2"), "both leases loaded: {}", gw.log());

    // RENEWING (unicast, ciaddr set) gets an ACK for the same address.
    let seen = renewing.event_count();
    renewing.renew();
    let renewed = renewing.wait_event(seen, &["renew"], Duration::from_secs(15)).unwrap();
    assert_eq!(field(&renewed, "ip"), Some(ip1.as_str()), "{renewed}");
    // INIT-REBOOT (dhclient starting again with its lease file) gets an ACK for the same address.
    let mut again = lab.dhcp_client(2, DhcpClient::Dhclient, None).unwrap();
    let rebooted = again.wait_event(0, &["REBOOT", "BOUND"], BIND).unwrap();
    assert!(rebooted.starts_with("REBOOT"), "INIT-REBOOT, not a new DISCOVER: {rebooted}");
    assert_eq!(field(&rebooted, "ip"), Some(ip2.as_str()), "{rebooted}");
}

#[test]
fn request_for_an_address_of_another_subnet_gets_nak() {
    let lab = lab(1);
    let mut gw = start(&lab, "");
    wait_log(&mut gw, "DHCP server ready");
    let reply = lab
        .in_netns(&lab.client(1), || {
            let s = dhcp::client_socket();
            // INIT-REBOOT: no server id, ciaddr 0, the address remembered from another network.
            let p = dhcp::packet(MessageType::Request, [2, 0, 0, 0, 0, 9], |m| {
                m.set_xid(0x5eed);
                m.opts_mut().insert(DhcpOption::RequestedIpAddress([192, 168, 99, 50].into()));
            });
            dhcp::send(&s, &p);
            dhcp::recv(&s, 0x5eed)
        })
        .unwrap()
        .expect("a reply");
    assert_eq!(dhcp::kind(&reply), Some(MessageType::Nak));
}

/// A valid DISCOVER whose bytes are then damaged one way or another.
fn discover(mac: [u8; 6]) -> Vec<u8> {
    dhcp::packet(MessageType::Discover, mac, |_| {})
}

/// Appends raw options before the END option.
fn with_raw_options(mut p: Vec<u8>, raw: &[u8]) -> Vec<u8> {
    let end = p.iter().rposition(|b| *b == 255).unwrap();
    p.truncate(end);
    p.extend_from_slice(raw);
    p.push(255);
    p
}

#[test]
fn bad_packets_and_a_discover_flood_leave_existing_leases_alone() {
    let lab = lab(2);
    let mut gw = start(&lab, "[dhcp]\nlease_time = 600\n");
    wait_log(&mut gw, "DHCP server ready");
    let mut client = lab.dhcp_client(1, DhcpClient::Udhcpc, None).unwrap();
    let ip = field(&client.wait_event(0, &["bound"], BIND).unwrap(), "ip").unwrap().to_owned();

    lab.in_netns(&lab.client(2), || {
        let s = dhcp::client_socket();
        let mac = [2, 0, 0, 0, 0xbb, 1];
        let good = discover(mac);
        let mut bad: Vec<Vec<u8>> = vec![vec![0u8; 10], good[..239].to_vec(), good[..100].to_vec()];
        for (offset, value) in [(0usize, 2u8), (1, 6), (2, 16), (2, 0)] {
            let mut p = good.clone();
            p[offset] = value;
            bad.push(p);
        }
        let z = Ipv4Addr::UNSPECIFIED;
        bad.push(dhcproto::Encodable::to_vec(&dhcproto::v4::Message::new(z, z, z, z, &mac)).unwrap());
        // Option overload claiming the file and sname fields, which hold garbage.
        let mut overload = with_raw_options(good.clone(), &[52, 1, 3]);
        overload[44..236].fill(0xee);
        bad.push(overload);
        // Client identifiers over 255 bytes in all (option 61 may repeat, RFC 3396).
        let mut cid = vec![61, 255];
        cid.extend(std::iter::repeat_n(7u8, 255));
        bad.push(with_raw_options(good.clone(), &[cid.clone(), cid].concat()));
        // An over-long host name is cut down, not fatal.
        let mut name = vec![12, 255];
        name.extend(std::iter::repeat_n(b'a', 255));
        bad.push(with_raw_options(discover([2, 0, 0, 0, 0xbb, 2]), &name));
        for p in &bad {
            dhcp::send(&s, p);
        }
        // 10,000 DISCOVERs from random MACs: the pool (253 addresses) runs dry.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            dhcp::send(&s, &discover([b[0] & 0xfe | 2, b[1], b[2], b[3], b[4], b[5]]));
        }
    })
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(gw.try_status().is_none(), "the gateway survived: {}", gw.log());

    // The existing client renews its address as before.
    let seen = client.event_count();
    client.renew();
    let renewed = client.wait_event(seen, &["renew"], Duration::from_secs(15)).unwrap();
    assert_eq!(field(&renewed, "ip"), Some(ip.as_str()), "{renewed}");

    // Every drop is counted, and each reason is logged once, not per packet.
    let api = common::api_get(&lab, &lab.client(1), "/api/dhcp");
    let view: serde_json::Value = serde_json::from_str(&api).unwrap();
    let counters = &view["counters"];
    let dropped = |reason: &str| counter(counters, "dropped", &[("reason", reason)]);
    for reason in ["truncated", "not_boot_request", "bad_htype", "bad_hlen", "no_message_type", "bad_client_id"] {
        assert!(dropped(reason).unwrap() >= 1, "{reason}: {counters}");
    }
    assert!(dropped("pool_exhausted").unwrap() > 9_000, "{counters}");
    assert!(dropped("truncated").unwrap() >= 3, "{counters}");
    let log = gw.log();
    let drop_lines: Vec<&str> = log.lines().filter(|l| l.contains("dropped a DHCP packet")).collect();
    let nonzero =
        counters.as_array().unwrap().iter().filter(|c| c["name"] == "dropped" && c["value"].as_u64() > Some(0)).count();
    assert_eq!(drop_lines.len(), nonzero, "one log line per reason: {drop_lines:#?}");
    assert!(view["leases"].as_array().unwrap().iter().any(|l| l["ip"] == ip.as_str()), "{api}");
}

#[test]
fn relayed_requests_get_addresses_from_the_relay_pool() {
    let lab = lab(1);
    let (gw_ns, lan) = (lab.gw(), lab.client(1));
    // lan1 plays a relay agent at 10.77.0.2 (perfdhcp in relay mode), reachable from gw on the LAN port.
    lab.run(&lan, &["ip", "addr", "add", "10.77.0.2/16", "dev", "eth0"]).unwrap();
    lab.run(&lan, &["ip", "route", "add", "10.0.0.0/24", "dev", "eth0"]).unwrap();
    lab.run(&gw_ns, &["ip", "route", "add", "10.77.0.0/16", "dev", "gw-lan1"]).unwrap();
    let mut gw = start(&lab, "[[dhcp.relay]]\nsubnet = \"10.77.0.0/16\"\nrange = [\"10.77.1.1\", \"10.77.1.200\"]\n");
    wait_log(&mut gw, "DHCP server ready");
    let out = lab
        .cmd(&lan, "perfdhcp")
        .args(["-4", "-l", "10.77.0.2", "-r", "10", "-n", "20", "-R", "1000", "-W", "2000000", "10.0.0.1"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    let acks = report.split("REQUEST-ACK").nth(1).and_then(|s| s.lines().find(|l| l.contains("received packets")));
    assert_eq!(acks.map(str::trim), Some("received packets: 20"), "{report}");
    let api = common::api_get(&lab, &gw_ns, "/api/dhcp");
    let view: serde_json::Value = serde_json::from_str(&api).unwrap();
    let leases = view["leases"].as_array().unwrap();
    assert!(!leases.is_empty());
    assert!(leases.iter().all(|l| l["ip"].as_str().unwrap().starts_with("10.77.1.")), "{api}");
}
