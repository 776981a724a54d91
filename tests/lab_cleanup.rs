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
