//! The lab's upstream DNS fixtures: knotd in `wan` serving the test zone, two at once, stopped on demand.

mod common;

use gatekeeper::lab::{RecordType, WAN_ADDR, WAN_ADDR2, test_zone};

#[test]
fn knot_serves_the_test_zone_and_stops() {
    let lab = common::lab(0);
    let wan = lab.wan();
    let mut one = lab.start_knot(WAN_ADDR, &test_zone()).unwrap();
    let two = lab.start_knot(WAN_ADDR2, &test_zone()).unwrap();
    assert_ne!(one.pid(), two.pid());

    let q = |addr, name: &str, t| lab.dns_query(&wan, addr, name, t).unwrap();
    for addr in [one.addr, two.addr] {
        let r = q(addr, "www.test", RecordType::A);
        assert!(r.rcode == 0 && r.aa && r.answers == 1, "{r:?}");
    }
    let r = q(one.addr, "www.test", RecordType::Aaaa);
    assert_eq!((r.rcode, r.answers), (0, 1));
    // NXDOMAIN and NODATA carry the SOA (negative caching).
    let r = q(one.addr, "missing.test", RecordType::A);
    assert_eq!((r.rcode, r.answers, r.authorities), (3, 0, 1));
    let r = q(one.addr, "nodata.test", RecordType::Aaaa);
    assert_eq!((r.rcode, r.answers, r.authorities), (0, 0, 1));
    // The CNAME chain comes whole from one authoritative answer.
    let r = q(one.addr, "a.test", RecordType::A);
    assert_eq!((r.rcode, r.answers), (0, 3));
    let r = q(one.addr, "u12345.uncached.test", RecordType::A);
    assert_eq!((r.rcode, r.answers), (0, 1));
    for (name, t) in [("test", RecordType::Mx), ("_sip._udp.test", RecordType::Srv), ("test", RecordType::Ns)] {
        let r = q(one.addr, name, t);
        assert!(r.rcode == 0 && r.answers >= 1, "{name} {t:?}: {r:?}");
    }
    // Over 512 bytes: truncated over UDP without EDNS, whole over TCP.
    let r = q(one.addr, "long.test", RecordType::Txt);
    assert!(r.tc, "{r:?}");
    let tcp = lab.run(&wan, &["kdig", "+tcp", "+short", &format!("@{WAN_ADDR}"), "long.test", "TXT"]).unwrap();
    assert!(tcp.contains(&"d".repeat(200)), "{tcp}");

    one.stop().unwrap();
    assert!(!one.running());
    assert!(lab.dns_query(&wan, one.addr, "www.test", RecordType::A).is_err(), "stopped upstream still answers");
    let r = q(two.addr, "www.test", RecordType::A);
    assert_eq!(r.rcode, 0);
    two.pause();
    assert!(lab.dns_query(&wan, two.addr, "www.test", RecordType::A).is_err(), "paused upstream still answers");
    two.resume();
    assert_eq!(q(two.addr, "www.test", RecordType::A).rcode, 0);
}
