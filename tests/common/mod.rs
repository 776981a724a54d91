//! Shared helpers for the end-to-end tests: they need root, and build their own lab of namespaces.
#![allow(dead_code)]

use gatekeeper::lab::{Lab, LabOptions, Proc};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gatekeeper"))
}

pub fn lab(clients: usize) -> Lab {
    Lab::new(LabOptions { clients, host_link: false }).expect("building the lab (the end-to-end tests need root)")
}

pub fn state_dir(lab: &Lab, name: &str) -> PathBuf {
    lab.dir().join(name)
}

/// Starts the gateway in the lab's `gw` namespace and waits until its LAN is up.
pub fn start_ready(lab: &Lab, args: &[&str], log: &str) -> Proc {
    let mut gw = lab.start_gateway(binary(), args, log).expect("start gateway");
    gw.wait_for_log("LAN ready", Duration::from_secs(20)).unwrap();
    gw
}

pub fn assert_same(before: &str, after: &str, what: &str) {
    if before != after {
        panic!("{what} differs.\n--- before\n{before}\n--- after\n{after}");
    }
}
