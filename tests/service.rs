//! The service side end to end, without a real systemd (this machine's PID 1 is not systemd): the gateway in a
//! lab, run with `NOTIFY_SOCKET` pointing at a socket of this test and `WATCHDOG_USEC`, as systemd would. It says
//! READY=1 with a status line once up, WATCHDOG=1 every half period while the packet path turns, stops sending
//! WATCHDOG=1 (and says why in STATUS) when its packet loops are stopped on purpose, and STOPPING=1 at the end.

mod common;

use common::{config_file, state_dir};
use gatekeeper::lab::Proc;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The notifications received within `wait`, one string per datagram.
fn collect(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    let until = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = until.checked_duration_since(Instant::now()) {
        sock.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    got
}

#[test]
fn ready_watchdog_only_while_the_packet_path_turns_and_stopping() {
    let lab = common::lab(1);
    let path = lab.dir().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let cfg = config_file(&lab, "gatekeeper.toml", "");
    let state = state_dir(&lab, "state");
    let gw = lab.gw();
    let mut cmd = lab.cmd(&gw, common::binary());
    cmd.args(["run", "--netns", &gw, "--state-dir", state.to_str().unwrap(), "--config", cfg.to_str().unwrap()])
        .env("GATEKEEPER_LOG", "debug")
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "1000000")
        .env("GATEKEEPER_WATCHDOG_TEST", "1");
    let mut p = Proc::spawn(cmd, &lab.dir().join("gw.log")).unwrap();

    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).unwrap_or_else(|e| panic!("no notification: {e}\n{}", p.log()));
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("10.0.0.1/24, WAN 203.0.113.2, 0 leases, 0 NAT connections"), "{ready}");
    // Up and turning: about two WATCHDOG=1 a second (half of WATCHDOG_USEC).
    let steady = collect(&sock, Duration::from_secs(3));
    let pings = steady.iter().filter(|m| m.lines().any(|l| l == "WATCHDOG=1")).count();
    assert!((4..=8).contains(&pings), "{pings} WATCHDOG=1 in 3 s: {steady:?}");

    // The packet loops stopped on purpose: no more WATCHDOG=1, and the status says why.
    p.signal(libc::SIGUSR2);
    let _ = collect(&sock, Duration::from_millis(700));
    let stuck = collect(&sock, Duration::from_secs(3));
    assert!(!stuck.iter().any(|m| m.contains("WATCHDOG=1")), "{stuck:?}");
    assert!(stuck.iter().any(|m| m.contains("STATUS=unhealthy: NAT queue loop")), "{stuck:?}");
    assert!(p.log().contains("stopping the packet loops on purpose"));

    p.terminate(Duration::from_secs(10)).unwrap();
    let last = collect(&sock, Duration::from_millis(500));
    assert!(last.iter().any(|m| m.contains("STOPPING=1")), "{last:?}");
}
