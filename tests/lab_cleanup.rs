//! The lab leaves nothing behind: not on drop, not when a test panics, not after its owner is killed with `kill -9`.

mod common;

use std::process::Command;
use std::time::Duration;

fn namespaces_of(id: &str) -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.contains(id))
        .map(str::to_owned)
        .collect()
}

#[test]
#[allow(clippy::zombie_processes, reason = "the sleeper is left for the lab's cleanup to end, which is the test")]
fn drop_removes_everything_even_on_panic() {
    let id = std::panic::catch_unwind(|| {
        let lab = gatekeeper::lab::Lab::new(gatekeeper::lab::LabOptions { clients: 2, host_link: false }).unwrap();
        assert_eq!(namespaces_of(&lab.id).len(), 4, "wan, gw, lan1, lan2");
        // A daemon started in a namespace is ended with it.
        let mut sleeper = lab.cmd(&lab.client(1), "sleep");
        sleeper.arg("600").spawn().unwrap();
        std::panic::panic_any(lab.id.clone());
    })
    .unwrap_err()
    .downcast::<String>()
    .unwrap();
    assert!(namespaces_of(&id).is_empty(), "namespaces left: {:?}", namespaces_of(&id));
}

/// A child process builds a lab and is killed with SIGKILL; the next lab removes the leftovers.
#[test]
fn leftovers_of_a_killed_owner_are_removed_by_the_next_lab() {
    if std::env::var_os("GK_LAB_CHILD").is_some() {
        let lab = gatekeeper::lab::Lab::new(gatekeeper::lab::LabOptions { clients: 1, host_link: false }).unwrap();
        println!("LAB-ID {}", lab.id);
        std::thread::sleep(Duration::from_secs(600));
        unreachable!();
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["--exact", "leftovers_of_a_killed_owner_are_removed_by_the_next_lab", "--nocapture"])
        .env("GK_LAB_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let id = loop {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "child ended without a lab");
        if let Some(id) = line.trim().strip_prefix("LAB-ID ") {
            break id.to_owned();
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(namespaces_of(&id).len(), 3, "the killed owner left its lab");

    let lab = common::lab(0);
    assert!(namespaces_of(&id).is_empty(), "stale lab {id} removed by the next one");
    drop(lab);
}

/// `gatekeeper lab` itself: devices get addresses by DHCP, the web UI answers, they make traffic, and Ctrl-C stops it
/// and removes everything.
#[test]
fn lab_command_starts_devices_and_removes_everything_on_ctrl_c() {
    let log = std::env::temp_dir().join(format!("gk-lab-command-{}.log", std::process::id()));
    let mut cmd = Command::new(common::binary());
    cmd.args(["lab", "--clients", "2", "--no-host-link", "--web-port", "8080"]);
    // A Proc is stopped (SIGTERM, which the lab handles like Ctrl-C) even if an assertion below fails.
    let mut lab = gatekeeper::lab::Proc::spawn(cmd, &log).unwrap();
    lab.wait_for_log("Press Ctrl-C", Duration::from_secs(60)).unwrap();
    let printed = lab.log();
    let id = printed.lines().find_map(|l| l.strip_prefix("Gatekeeper lab ")).unwrap().split(' ').next().unwrap();
    let id = id.to_owned();
    assert_eq!(namespaces_of(&id).len(), 4, "{printed}");
    assert!(printed.contains("(laptop)") && printed.contains("(phone)"), "devices got addresses: {printed}");
    assert!(printed.contains("--quiet"), "the banner says the devices make traffic: {printed}");
    let url = printed.lines().find_map(|l| l.strip_prefix("Web UI: ")).unwrap().trim().to_owned();
    // The printed admin password logs in (the device list needs a session).
    let password = printed.lines().find_map(|l| l.trim().strip_prefix("admin password     : ")).unwrap().trim();
    let ns = format!("gk-{id}-lan1");
    let cookie = format!("Cookie: gk_session={}", common::login_at(&ns, url.trim_end_matches('/'), password));
    let fetch = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, "curl", "-sf", "-m5", "-H", &cookie, &format!("{url}api/devices")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The device list follows the leases within a moment.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut page = fetch();
    while !(page.contains("laptop") && page.contains("phone")) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        page = fetch();
    }
    assert!(page.contains("laptop") && page.contains("phone"), "{page}");

    lab.signal(libc::SIGINT);
    let status = lab.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "{status}: {}", lab.log());
    assert!(lab.log().contains("Traffic generated: "), "the traffic stopped before the lab: {}", lab.log());
    assert!(namespaces_of(&id).is_empty(), "{:?}", namespaces_of(&id));
    let _ = std::fs::remove_file(log);
}

/// Labs built at the same moment (the test harness runs tests in parallel) must not take each other for leftovers:
/// each one's cleanup of stale labs reads the others' registry files, which must never look empty or foreign.
#[test]
fn labs_built_at_the_same_moment_leave_each_other_alone() {
    for _ in 0..5 {
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let built = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (start, built) = (start.clone(), built.clone());
                std::thread::spawn(move || {
                    start.wait();
                    let lab = gatekeeper::lab::Lab::new(gatekeeper::lab::LabOptions { clients: 1, host_link: false });
                    // Past the barrier before any panic, so that a failed lab cannot leave the others waiting.
                    built.wait();
                    let lab = lab.unwrap();
                    // Every other lab has run its cleanup of stale labs by now; ours must be whole.
                    let left = namespaces_of(&lab.id);
                    assert_eq!(left.len(), 3, "lab {}: namespaces {left:?}", lab.id);
                    let registry = std::path::Path::new("/run/gatekeeper-lab").join(&lab.id);
                    assert!(registry.exists(), "lab {}: its registry file was removed", lab.id);
                    drop(lab);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}
