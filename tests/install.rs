//! `gatekeeper install --root DIR` and `uninstall`, as the binary does them: idempotent both ways, saying what
//! they did, and a unit that `systemd-analyze verify` accepts without a word (with ExecStart pointed at this build,
//! as the installed path is not on this machine). No systemd runs here, so nothing is enabled or started.

mod common;

use std::process::Command;

fn gatekeeper(args: &[&str]) -> String {
    let out = Command::new(common::binary()).args(args).output().unwrap();
    assert!(out.status.success(), "gatekeeper {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn install_twice_verify_the_unit_and_uninstall_twice() {
    let root = std::env::temp_dir().join(format!("gk-install-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let r = root.to_str().unwrap();
    let first = gatekeeper(&["install", "--root", r]);
    assert!(first.contains("installed the program") && first.contains("installed the systemd unit"), "{first}");
    let second = gatekeeper(&["install", "--root", r]);
    assert!(!second.contains("installed"), "a second install changed something: {second}");

    let unit = std::fs::read_to_string(root.join("etc/systemd/system/gatekeeper.service")).unwrap();
    for want in ["Type=notify", "WatchdogSec=", "Restart=always", "CapabilityBoundingSet=CAP_NET_ADMIN"] {
        assert!(unit.contains(want), "{want} missing:\n{unit}");
    }
    let check = root.join("verify/gatekeeper.service");
    std::fs::create_dir_all(check.parent().unwrap()).unwrap();
    std::fs::write(&check, unit.replace("/usr/local/sbin/gatekeeper", common::binary().to_str().unwrap())).unwrap();
    let v = Command::new("systemd-analyze").arg("verify").arg(&check).output().expect("systemd-analyze");
    let said = format!("{}{}", String::from_utf8_lossy(&v.stdout), String::from_utf8_lossy(&v.stderr));
    assert!(v.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");

    let gone = gatekeeper(&["uninstall", "--root", r]);
    assert!(gone.contains("removed") && gone.contains("kept"), "{gone}");
    let again = gatekeeper(&["uninstall", "--root", r, "--purge"]);
    assert!(again.contains("already gone"), "{again}");
    assert!(!root.join("var/lib/gatekeeper").exists() && !root.join("etc/gatekeeper").exists());
    std::fs::remove_dir_all(&root).unwrap();
}
