//! End-to-end: the gateway sets up the LAN in a lab's `gw` namespace and restores it exactly on exit or after a crash.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn bridges_two_ports_and_restores_everything_on_sigterm() {
    let lab = lab(2);
    let gw_ns = lab.gw();
    let before = lab.describe(&gw_ns).unwrap();
    let state = state_dir(&lab, "state");
    let mut gw = start_ready(&lab, &["--state-dir", state.to_str().unwrap()], "gw.log");

    // Both LAN veths are ports of one bridge, which has the router address of the first free /24.
    let links = lab.run(&gw_ns, &["ip", "-o", "link", "show"]).unwrap();
    for port in ["gw-lan1", "gw-lan2"] {
        let line = links.lines().find(|l| l.contains(&format!(" {port}@"))).expect(port);
        assert!(line.contains("master gk-lan"), "{port} not in the bridge: {line}");
        assert!(line.contains(",UP"), "{port} not up: {line}");
    }
    let addrs = lab.run(&gw_ns, &["ip", "-4", "-o", "addr", "show", "dev", "gk-lan"]).unwrap();
    assert!(addrs.contains("inet 10.0.0.1/24"), "{addrs}");
    assert_eq!(lab.run(&gw_ns, &["cat", "/proc/sys/net/ipv4/ip_forward"]).unwrap().trim(), "1");
    let log = gw.log();
    assert!(log.contains("wan=gwwan"), "WAN taken from the default route: {log}");

    // The bridge really joins the two devices: they reach the router and each other.
    for (i, addr) in [(1, "10.0.0.11/24"), (2, "10.0.0.12/24")] {
        lab.run(&lab.client(i), &["ip", "addr", "add", addr, "dev", "eth0"]).unwrap();
    }
    lab.run(&lab.client(1), &["ping", "-c1", "-W2", "10.0.0.1"]).unwrap();
    lab.run(&lab.client(1), &["ping", "-c1", "-W2", "10.0.0.12"]).unwrap();

    // The web UI answers on the LAN address, and not on the WAN address.
    let status = common::api_get(&lab, &lab.client(1), "/api/status");
    assert!(status.contains(r#""subnet":"10.0.0.0/24""#) && status.contains(r#""wan":"gwwan""#), "{status}");
    assert!(status.contains(r#""lan_interface":"gk-lan""#), "{status}");
    // Without a session the page sends the browser to the login page.
    let page = lab
        .run(
            &lab.client(2),
            &["curl", "-s", "-m5", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", "http://10.0.0.1:1337/"],
        )
        .unwrap();
    assert_eq!(page.trim(), "303 http://10.0.0.1:1337/login?next=/", "{page}");
    assert!(lab.run(&lab.wan(), &["curl", "-sf", "-m3", "http://203.0.113.2:1337/"]).is_err());

    let status = gw.terminate(Duration::from_secs(10)).unwrap();
    assert!(status.success(), "exit {status}; log:\n{}", gw.log());
    assert!(gw.log().contains("network restored"), "{}", gw.log());
    assert_same(&before, &lab.describe(&gw_ns).unwrap(), "gw namespace after SIGTERM");
    assert!(!state.join("network-undo.json").exists(), "undo journal removed after a clean exit");
}

#[test]
fn sigint_also_restores() {
    let lab = lab(1);
    let before = lab.describe(&lab.gw()).unwrap();
    let state = state_dir(&lab, "state");
    let mut gw = start_ready(&lab, &["--state-dir", state.to_str().unwrap()], "gw.log");
    // One port: no bridge, the address goes on the port itself.
    let addrs = lab.run(&lab.gw(), &["ip", "-4", "-o", "addr", "show", "dev", "gw-lan1"]).unwrap();
    assert!(addrs.contains("inet 10.0.0.1/24"), "{addrs}");
    gw.signal(libc::SIGINT);
    assert!(gw.wait_timeout(Duration::from_secs(10)).unwrap().success(), "{}", gw.log());
    assert_same(&before, &lab.describe(&lab.gw()).unwrap(), "gw namespace after SIGINT");
}

#[test]
fn comes_up_clean_after_kill_9() {
    let lab = lab(2);
    let gw_ns = lab.gw();
    // Start from a port that is down, so that "down again afterwards" is checked too.
    lab.run(&gw_ns, &["ip", "link", "set", "gw-lan2", "down"]).unwrap();
    let before = lab.describe(&gw_ns).unwrap();
    let state = state_dir(&lab, "state");
    let args = ["--state-dir", state.to_str().unwrap()];

    let mut first = start_ready(&lab, &args, "first.log");
    first.kill9().unwrap();
    // The crash left the bridge, the address and forwarding behind.
    assert!(lab.run(&gw_ns, &["ip", "link", "show", "gk-lan"]).is_ok());
    assert!(state.join("network-undo.json").exists());

    let mut second = start_ready(&lab, &args, "second.log");
    let log = second.log();
    assert!(log.contains("did not shut down cleanly"), "{log}");
    let links = lab.run(&gw_ns, &["ip", "-o", "link", "show", "type", "bridge"]).unwrap();
    assert_eq!(links.lines().count(), 1, "exactly one bridge: {links}");
    let addrs = lab.run(&gw_ns, &["ip", "-4", "-o", "addr", "show", "dev", "gk-lan"]).unwrap();
    assert!(addrs.contains("inet 10.0.0.1/24"), "same subnet as before the crash: {addrs}");
    assert_eq!(addrs.lines().count(), 1, "{addrs}");

    assert!(second.terminate(Duration::from_secs(10)).unwrap().success(), "{}", second.log());
    assert_same(&before, &lab.describe(&gw_ns).unwrap(), "gw namespace after crash, restart and SIGTERM");
}

#[test]
fn no_lan_candidate_is_a_clear_error() {
    let lab = lab(0);
    let before = lab.describe(&lab.gw()).unwrap();
    let state = state_dir(&lab, "state");
    let mut gw = lab.start_gateway(binary(), &["--state-dir", state.to_str().unwrap()], "gw.log").unwrap();
    let status = gw.wait_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(status.code(), Some(3), "log:\n{}", gw.log());
    let log = gw.log();
    assert!(log.contains("no LAN interface found") && log.contains("--lan"), "{log}");
    assert_same(&before, &lab.describe(&lab.gw()).unwrap(), "gw namespace after a refused start");
}

#[test]
fn explicit_lan_wan_and_subnet_from_flags_and_environment() {
    let lab = lab(2);
    let gw_ns = lab.gw();
    let before = lab.describe(&gw_ns).unwrap();
    let state = state_dir(&lab, "state");
    // The original project's variables: LAN from the environment, subnet from a flag.
    let mut c = lab.cmd(&gw_ns, common::binary());
    c.args(["run", "--state-dir", state.to_str().unwrap(), "--subnet", "192.168.77.0/24"])
        .env("LAN", "gw-lan2")
        .env("WAN", "gwwan")
        .env("PORT_FORWARDING", "192.168.77.5:25565");
    let mut gw = gatekeeper::lab::Proc::spawn(c, &lab.dir().join("gw.log")).unwrap();
    gw.wait_for_log("LAN ready", Duration::from_secs(20)).unwrap();
    let a2 = lab.run(&gw_ns, &["ip", "-4", "-o", "addr", "show", "dev", "gw-lan2"]).unwrap();
    assert!(a2.contains("inet 192.168.77.1/24"), "{a2}");
    let a1 = lab.run(&gw_ns, &["ip", "-4", "-o", "addr", "show", "dev", "gw-lan1"]).unwrap();
    assert!(a1.is_empty(), "gw-lan1 was not named and stays untouched: {a1}");
    assert!(gw.terminate(Duration::from_secs(10)).unwrap().success());
    assert_same(&before, &lab.describe(&gw_ns).unwrap(), "gw namespace");
}

#[test]
fn bad_values_are_named_and_change_nothing() {
    let lab = lab(1);
    let before = lab.describe(&lab.gw()).unwrap();
    let state = state_dir(&lab, "state");
    let st = state.to_str().unwrap();
    for (args, env, needle, code) in [
        (vec!["--subnet", "10.0.0.0/33"], None, "\"10.0.0.0/33\"", 2),
        (vec!["--lan", "gw-lan9"], None, "\"gw-lan9\" does not exist", 3),
        (vec!["--lan", "gwwan"], None, "is the WAN", 3),
        (vec![], Some(("PORT_FORWARDING", "10.0.0.5:99999")), "\"10.0.0.5:99999\"", 2),
        (vec!["--web-port", "70000"], None, "70000", 2),
        (vec!["--subnet", "203.0.113.0/24"], None, "overlaps 203.0.113.0/24", 3),
    ] {
        let mut c = lab.cmd(&lab.gw(), common::binary());
        c.args(["run", "--state-dir", st]).args(&args);
        if let Some((k, v)) = env {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{args:?} {env:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?} {env:?}: expected {needle:?} in: {stderr}");
    }
    assert_same(&before, &lab.describe(&lab.gw()).unwrap(), "gw namespace");
}

#[test]
fn second_instance_on_the_same_state_dir_is_refused() {
    let lab = lab(1);
    let state = state_dir(&lab, "state");
    let mut gw = start_ready(&lab, &["--state-dir", state.to_str().unwrap()], "gw.log");
    let mut c = lab.cmd(&lab.gw(), common::binary());
    c.args(["run", "--state-dir", state.to_str().unwrap()]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("pid {}", gw.pid())));
    assert!(gw.terminate(Duration::from_secs(10)).unwrap().success());
}
