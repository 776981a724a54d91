//! The NFQUEUE socket against the real kernel, in a lab namespace: packets arrive whole and leave on our verdict;
//! without a reader they are dropped (no bypass: fail closed).

mod common;

use gatekeeper::datapath::nfqueue::{HOOK_PRE_ROUTING, NF_ACCEPT, Queue, QueueOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

#[test]
fn queued_packets_pass_on_our_verdict_and_are_dropped_without_us() {
    let lab = common::lab(1);
    let (gw, lan) = (lab.gw(), lab.client(1));
    lab.run(&gw, &["ip", "addr", "add", "10.9.0.1/24", "dev", "gw-lan1"]).unwrap();
    lab.run(&lan, &["ip", "addr", "add", "10.9.0.2/24", "dev", "eth0"]).unwrap();
    lab.run(
        &gw,
        &[
            "iptables",
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-i",
            "gw-lan1",
            "-p",
            "icmp",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "7",
        ],
    )
    .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let ready = Arc::new(AtomicBool::new(false));
    let (s, n, r) = (stop.clone(), seen.clone(), ready.clone());
    let reader = std::thread::spawn({
        let path = format!("/run/netns/{gw}");
        move || {
            let f = std::fs::File::open(path).unwrap();
            nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let mut q = Queue::open(7, &QueueOptions { timeout_ms: 50, ..Default::default() }).unwrap();
            r.store(true, Ordering::SeqCst);
            while !s.load(Ordering::SeqCst) {
                let got = q.recv().unwrap();
                for i in 0..got {
                    let p = q.packet(i);
                    assert_eq!(p.hook, HOOK_PRE_ROUTING);
                    assert_eq!(p.payload[0] >> 4, 4, "an IPv4 packet");
                    assert_eq!(p.payload[9], 1, "ICMP");
                    let id = p.id;
                    n.fetch_add(1, Ordering::SeqCst);
                    q.verdict(id, NF_ACCEPT).unwrap();
                }
                q.flush().unwrap();
            }
        }
    });
    while !ready.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(10));
    }
    lab.run(&lan, &["ping", "-c3", "-i0.2", "-W2", "10.9.0.1"]).unwrap();
    assert!(seen.load(Ordering::SeqCst) >= 3, "every echo request went through our queue");

    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();
    // Nobody reads queue 7 now: the kernel drops instead of letting packets pass.
    assert!(lab.run(&lan, &["ping", "-c2", "-i0.2", "-W1", "10.9.0.1"]).is_err(), "fail closed");
}
