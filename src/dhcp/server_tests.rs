//! Tests of the server core, with packets built by `dhcproto`.

use super::*;
use dhcproto::v4::{Decodable, DhcpOption, Encodable, Encoder, Flags, Message, OptionCode, UnknownOption};

const NOW: u64 = 1_700_000_000;

/// Unix seconds as the core's time.
#[allow(non_snake_case)]
fn T(secs: u64) -> Time {
    Time::from_unix_secs(secs)
}
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const NAS_MAC: Mac = Mac([0xaa, 0, 0, 0, 0, 0x01]);
const NAS_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 150);
const RELAY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const LEASE: u32 = 3600;

fn cfg() -> DhcpConfig {
    let mut c = DhcpConfig::new(SERVER, "192.168.50.0/24".parse().unwrap());
    c.range = ([192, 168, 50, 100].into(), [192, 168, 50, 199].into());
    c.lease_secs = LEASE;
    // A static address inside the dynamic range: it must never be handed to anyone else.
    c.static_leases = vec![StaticLease { mac: NAS_MAC, ip: NAS_IP, hostname: Some("NAS".into()) }];
    c.relay_pools = vec![RelayPool {
        subnet: "10.9.0.0/24".parse().unwrap(),
        range: ([10, 9, 0, 100].into(), [10, 9, 0, 150].into()),
        router: None,
    }];
    c
}

fn server() -> Server {
    Server::new(cfg(), vec![], vec![], T(NOW)).unwrap()
}

fn mac(n: u32) -> Mac {
    let b = n.to_be_bytes();
    Mac([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

fn any() -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)
}

fn pkt(kind: MessageType, mac: Mac, f: impl FnOnce(&mut Message)) -> Vec<u8> {
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(0xdead_beef, z, z, z, z, &mac.0);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    f(&mut m);
    let mut buf = Vec::new();
    m.encode(&mut Encoder::new(&mut buf)).unwrap();
    buf
}

fn discover(mac: Mac) -> Vec<u8> {
    pkt(MessageType::Discover, mac, |_| {})
}

fn select(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    pkt(MessageType::Request, mac, |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    })
}

fn renew(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    pkt(MessageType::Request, mac, |m| {
        m.set_ciaddr(ip);
    })
}

fn init_reboot(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    pkt(MessageType::Request, mac, |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    })
}

/// Appends option 82 as a relay would (dhcproto's encoder would write an `Unknown(82)` twice).
fn with_relay_info(mut p: Vec<u8>, info: &[u8]) -> Vec<u8> {
    assert_eq!(p.pop(), Some(255));
    p.extend_from_slice(&[82, info.len() as u8]);
    p.extend_from_slice(info);
    p.push(255);
    p
}

fn decode(r: &Reply) -> Message {
    Message::from_bytes(&r.bytes).unwrap()
}

fn kind(m: &Message) -> MessageType {
    m.opts().msg_type().unwrap()
}

fn ok(s: &mut Server, p: &[u8], now: u64) -> Outcome {
    let o = s.handle(p, any(), T(now)).unwrap();
    s.check_invariants();
    o
}

/// DISCOVER then REQUEST; returns the address and the ACK's outcome.
fn dora(s: &mut Server, mac: Mac, now: u64) -> (Ipv4Addr, Outcome) {
    let offer = ok(s, &discover(mac), now);
    let ip = decode(offer.reply.as_ref().unwrap()).yiaddr();
    let ack = ok(s, &select(mac, ip), now);
    (ip, ack)
}

fn lease_for(ip: Ipv4Addr, m: Mac, expires: u64) -> Lease {
    Lease { client_id: [&[1u8][..], &m.0[..]].concat(), mac: m, ip, hostname: Some("old".into()), expires }
}

#[test]
fn full_dora() {
    let mut s = server();
    let m = mac(1);
    let offer = ok(&mut s, &discover(m), NOW);
    assert!(offer.records.is_empty() && offer.events.is_empty(), "an offer is not persisted");
    let r = offer.reply.unwrap();
    assert_eq!(r.kind, MessageType::Offer);
    let o = decode(&r);
    assert_eq!(o.opcode(), dhcproto::v4::Opcode::BootReply);
    assert_eq!(o.xid(), 0xdead_beef);
    assert_eq!(o.chaddr(), &m.0[..]);
    assert_eq!(kind(&o), MessageType::Offer);
    let ip = o.yiaddr();
    assert!(s.pools[0].in_range(ip) && ip != NAS_IP);
    assert_eq!(r.to, Destination::Hardware { ip, mac: m });
    assert!(r.bytes.len() >= 300);
    let opts = o.opts();
    assert_eq!(opts.get(OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    assert_eq!(opts.get(OptionCode::AddressLeaseTime), Some(&DhcpOption::AddressLeaseTime(LEASE)));
    assert_eq!(opts.get(OptionCode::Renewal), Some(&DhcpOption::Renewal(LEASE / 2)));
    assert_eq!(opts.get(OptionCode::Rebinding), Some(&DhcpOption::Rebinding(LEASE * 7 / 8)));
    assert_eq!(opts.get(OptionCode::SubnetMask), Some(&DhcpOption::SubnetMask([255, 255, 255, 0].into())));
    assert_eq!(opts.get(OptionCode::Router), Some(&DhcpOption::Router(vec![SERVER])));
    assert_eq!(opts.get(OptionCode::DomainNameServer), Some(&DhcpOption::DomainNameServer(vec![SERVER])));
    assert_eq!(opts.get(OptionCode::DomainName), Some(&DhcpOption::DomainName("lan".into())));

    let ack = ok(&mut s, &select(m, ip), NOW);
    let r = ack.reply.unwrap();
    let a = decode(&r);
    assert_eq!((kind(&a), a.yiaddr()), (MessageType::Ack, ip));
    assert_eq!(r.to, Destination::Hardware { ip, mac: m });
    let lease = Lease { client_id: vec![1, 2, 0x42, 0, 0, 0, 1], mac: m, ip, hostname: None, expires: NOW + 3600 };
    assert_eq!(ack.records, vec![Record::Bound(lease.clone())]);
    assert_eq!(ack.events, vec![LeaseEvent::Granted(lease.clone())]);
    assert_eq!(s.leases().collect::<Vec<_>>(), vec![&lease]);
    assert_eq!(s.lease_by_ip(ip), Some(&lease));
    assert_eq!(s.next_expiry().map(Time::unix_secs), Some(NOW + 3600));
    assert_eq!((s.stats().discover, s.stats().request, s.stats().offer, s.stats().ack), (1, 1, 1, 1));
}

#[test]
fn client_identifier_is_the_key() {
    let mut s = server();
    let with_id = |kind, f: &dyn Fn(&mut Message)| {
        pkt(kind, mac(7), |m| {
            m.opts_mut().insert(DhcpOption::ClientIdentifier(b"\xffmy-duid".to_vec()));
            f(m)
        })
    };
    let ip = decode(ok(&mut s, &with_id(MessageType::Discover, &|_| {}), NOW).reply.as_ref().unwrap()).yiaddr();
    let ack = ok(
        &mut s,
        &with_id(MessageType::Request, &|m| {
            m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
            m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        }),
        NOW,
    );
    assert!(matches!(&ack.records[..], [Record::Bound(l)] if l.client_id == b"\xffmy-duid" && l.mac == mac(7)));
    // The same MAC without the identifier is another client.
    assert_eq!(s.handle(&renew(mac(7), ip), any(), T(NOW)).unwrap().reply.unwrap().kind, MessageType::Nak);
}

#[test]
fn renew_unicast_and_rebind_broadcast() {
    let mut s = server();
    let m = mac(2);
    let (ip, _) = dora(&mut s, m, NOW);
    let t1 = NOW + u64::from(LEASE / 2);
    let o = ok(&mut s, &renew(m, ip), t1);
    let r = o.reply.as_ref().unwrap();
    assert_eq!(r.to, Destination::Unicast(SocketAddrV4::new(ip, 68)));
    let a = decode(r);
    assert_eq!((kind(&a), a.yiaddr(), a.ciaddr()), (MessageType::Ack, ip, ip));
    let lease = s.lease(&[&[1u8][..], &m.0[..]].concat()).unwrap().clone();
    assert_eq!(lease.expires, t1 + 3600);
    assert_eq!(o.events, vec![LeaseEvent::Renewed(lease.clone())]);
    assert_eq!(o.records, vec![Record::Bound(lease)]);
    assert_eq!(s.next_expiry().map(Time::unix_secs), Some(t1 + 3600), "the old expiry is gone");

    // REBINDING: broadcast, ciaddr set; the ACK still goes to ciaddr.
    let t2 = t1 + u64::from(LEASE * 7 / 8);
    let rebind = pkt(MessageType::Request, m, |p| {
        p.set_ciaddr(ip).set_flags(Flags::default().set_broadcast());
    });
    let o = ok(&mut s, &rebind, t2);
    assert_eq!(o.reply.as_ref().unwrap().to, Destination::Unicast(SocketAddrV4::new(ip, 68)));
    assert!(matches!(o.events[..], [LeaseEvent::Renewed(ref l)] if l.expires == t2 + 3600));

    // Renewing an address that is someone else's: NAK, broadcast.
    let (other_ip, _) = dora(&mut s, mac(3), NOW);
    let o = ok(&mut s, &renew(m, other_ip), t2);
    let r = o.reply.unwrap();
    assert_eq!((r.kind, r.to), (MessageType::Nak, Destination::Broadcast));
    let n = decode(&r);
    assert_eq!((n.yiaddr(), n.ciaddr()), (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED));
    assert!(n.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(o.records.is_empty());
    // Renewing from the wrong network: NAK.
    assert_eq!(ok(&mut s, &renew(m, [172, 16, 0, 5].into()), t2).reply.unwrap().kind, MessageType::Nak);
}

#[test]
fn renewing_client_we_lost_gets_its_free_address_back() {
    let mut s = server();
    let ip = Ipv4Addr::new(192, 168, 50, 120);
    let o = ok(&mut s, &renew(mac(4), ip), NOW);
    assert_eq!(o.reply.unwrap().kind, MessageType::Ack);
    assert!(matches!(o.events[..], [LeaseEvent::Granted(ref l)] if l.ip == ip));
    // Outside the dynamic range (and not static): NAK.
    assert_eq!(ok(&mut s, &renew(mac(5), [192, 168, 50, 20].into()), NOW).reply.unwrap().kind, MessageType::Nak);
}

#[test]
fn init_reboot_after_restart() {
    let m = mac(9);
    let ip = Ipv4Addr::new(192, 168, 50, 133);
    let persisted = vec![lease_for(ip, m, NOW + 100)];
    let mut s = Server::new(cfg(), persisted.clone(), vec![], T(NOW)).unwrap();
    s.check_invariants();
    assert_eq!(s.leases().cloned().collect::<Vec<_>>(), persisted);
    // Nobody else may get the restored address.
    for i in 0..100 {
        if let Ok(o) = s.handle(&discover(mac(1000 + i)), any(), T(NOW)) {
            assert_ne!(decode(o.reply.as_ref().unwrap()).yiaddr(), ip);
        }
    }
    let o = ok(&mut s, &init_reboot(m, ip), NOW);
    let r = o.reply.as_ref().unwrap();
    assert_eq!((r.kind, decode(r).yiaddr()), (MessageType::Ack, ip));
    // The name the client gave before is kept when it sends none.
    assert!(matches!(o.events[..], [LeaseEvent::Renewed(ref l)] if l.hostname.as_deref() == Some("old")));
    // INIT-REBOOT with the wrong address: NAK.
    assert_eq!(ok(&mut s, &init_reboot(m, [192, 168, 50, 134].into()), NOW).reply.unwrap().kind, MessageType::Nak);
}

#[test]
fn restore_drops_leases_that_no_longer_fit() {
    let ok_lease = lease_for([192, 168, 50, 101].into(), mac(1), NOW + 100);
    let leases = vec![
        lease_for([192, 168, 50, 5].into(), mac(2), NOW + 100), // outside the range
        lease_for([10, 0, 0, 5].into(), mac(3), NOW + 100),     // outside every subnet
        lease_for(NAS_IP, mac(4), NOW + 100),                   // another MAC's static address
        lease_for(SERVER, mac(5), NOW + 100),                   // the router
        lease_for([192, 168, 50, 101].into(), mac(6), NOW + 50), // same address: the later entry wins
        ok_lease.clone(),
        lease_for([192, 168, 50, 140].into(), mac(7), NOW + 100), // declined meanwhile
    ];
    let s = Server::new(cfg(), leases, vec![([192, 168, 50, 140].into(), NOW + 10)], T(NOW)).unwrap();
    s.check_invariants();
    assert_eq!(s.leases().cloned().collect::<Vec<_>>(), vec![ok_lease]);
}

#[test]
fn init_reboot_wrong_subnet_nak_and_unknown_client_silence() {
    let mut s = server();
    let o = ok(&mut s, &init_reboot(mac(1), [192, 168, 1, 77].into()), NOW);
    let r = o.reply.unwrap();
    assert_eq!((r.kind, r.to), (MessageType::Nak, Destination::Broadcast));
    // In our subnet but we have no record of the client: RFC 2131 4.3.2, stay silent.
    let e = s.handle(&init_reboot(mac(1), [192, 168, 50, 120].into()), any(), T(NOW)).unwrap_err();
    assert_eq!(e, DropReason::UnknownClient);
    assert_eq!(s.stats().dropped(DropReason::UnknownClient), 1);
    // ... unless the address is known to be someone else's.
    let (ip, _) = dora(&mut s, mac(2), NOW);
    assert_eq!(ok(&mut s, &init_reboot(mac(1), ip), NOW).reply.unwrap().kind, MessageType::Nak);
    assert_eq!(ok(&mut s, &init_reboot(mac(1), NAS_IP), NOW).reply.unwrap().kind, MessageType::Nak);
}

#[test]
fn two_clients_get_different_addresses() {
    let mut s = server();
    let a = decode(ok(&mut s, &discover(mac(1)), NOW).reply.as_ref().unwrap()).yiaddr();
    let b = decode(ok(&mut s, &discover(mac(2)), NOW).reply.as_ref().unwrap()).yiaddr();
    assert_ne!(a, b, "concurrent offers reserve their address");
    // A second DISCOVER from the same client gets the same offer.
    assert_eq!(decode(ok(&mut s, &discover(mac(1)), NOW + 5).reply.as_ref().unwrap()).yiaddr(), a);
    // Asking for the other's offered address does not take it.
    let c = pkt(MessageType::Discover, mac(3), |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(b));
    });
    assert_ne!(decode(ok(&mut s, &c, NOW).reply.as_ref().unwrap()).yiaddr(), b);
    assert_eq!(ok(&mut s, &select(mac(3), b), NOW).reply.unwrap().kind, MessageType::Nak);
    let (ia, _) = dora(&mut s, mac(1), NOW);
    let (ib, _) = dora(&mut s, mac(2), NOW);
    assert_eq!((ia, ib), (a, b));
}

#[test]
fn requested_address_is_preferred_when_free() {
    let mut s = server();
    let want = Ipv4Addr::new(192, 168, 50, 177);
    let p = pkt(MessageType::Discover, mac(1), |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(want));
    });
    assert_eq!(decode(ok(&mut s, &p, NOW).reply.as_ref().unwrap()).yiaddr(), want);
    // Outside the range: ignored, some other address offered.
    let p = pkt(MessageType::Discover, mac(2), |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress([192, 168, 50, 7].into()));
    });
    let got = decode(ok(&mut s, &p, NOW).reply.as_ref().unwrap()).yiaddr();
    assert!(s.pools[0].in_range(got));
}

#[test]
fn static_lease_honoured_and_never_given_to_another() {
    let mut s = server();
    let (ip, ack) = dora(&mut s, NAS_MAC, NOW);
    assert_eq!(ip, NAS_IP);
    assert!(matches!(ack.events[..], [LeaseEvent::Granted(ref l)] if l.hostname.as_deref() == Some("nas")));
    // Another client asking for it is offered something else, and NAKed if it insists.
    let p = pkt(MessageType::Discover, mac(1), |m| {
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(NAS_IP));
    });
    assert_ne!(decode(ok(&mut s, &p, NOW).reply.as_ref().unwrap()).yiaddr(), NAS_IP);
    assert_eq!(ok(&mut s, &select(mac(1), NAS_IP), NOW).reply.unwrap().kind, MessageType::Nak);
    assert_eq!(ok(&mut s, &renew(mac(1), NAS_IP), NOW).reply.unwrap().kind, MessageType::Nak);
    // Even once the static client released it, the whole pool handed out never includes it.
    let rel = pkt(MessageType::Release, NAS_MAC, |m| {
        m.set_ciaddr(NAS_IP);
    });
    ok(&mut s, &rel, NOW);
    let mut given = HashSet::new();
    for i in 0..500 {
        if let Ok(o) = s.handle(&discover(mac(100 + i)), any(), T(NOW)) {
            given.insert(decode(o.reply.as_ref().unwrap()).yiaddr());
        }
    }
    // 100 addresses in range, minus the static one, minus mac(1)'s outstanding offer.
    assert_eq!(given.len(), 98);
    assert!(!given.contains(&NAS_IP));
    // The static client asking for a different address is steered to its own.
    assert_eq!(
        ok(&mut s, &init_reboot(NAS_MAC, [192, 168, 50, 101].into()), NOW).reply.unwrap().kind,
        MessageType::Nak
    );
    assert_eq!(dora(&mut s, NAS_MAC, NOW).0, NAS_IP);
}

#[test]
fn static_address_moves_between_client_ids_of_one_mac() {
    let mut s = server();
    dora(&mut s, NAS_MAC, NOW);
    // The same machine booting another OS, with a client identifier this time.
    let p = pkt(MessageType::Request, NAS_MAC, |m| {
        m.opts_mut().insert(DhcpOption::ClientIdentifier(b"\x00other-os".to_vec()));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(NAS_IP));
    });
    let o = ok(&mut s, &p, NOW);
    assert_eq!(o.reply.unwrap().kind, MessageType::Ack);
    assert!(
        matches!(o.records[..], [Record::Released { ip, .. }, Record::Bound(ref l)] if ip == NAS_IP && l.ip == NAS_IP)
    );
    assert_eq!(s.leases().count(), 1);
}

#[test]
fn release_frees() {
    let mut s = server();
    let m = mac(1);
    let (ip, _) = dora(&mut s, m, NOW);
    let free_before = s.free_addresses();
    let rel = pkt(MessageType::Release, m, |p| {
        p.set_ciaddr(ip);
        p.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    });
    let o = ok(&mut s, &rel, NOW + 10);
    assert!(o.reply.is_none());
    let cid = [&[1u8][..], &m.0[..]].concat();
    assert_eq!(o.records, vec![Record::Released { client_id: cid.clone(), ip }]);
    assert!(matches!(o.events[..], [LeaseEvent::Released(ref l)] if l.ip == ip));
    assert_eq!(s.leases().count(), 0);
    assert_eq!(s.free_addresses(), free_before + 1);
    // Releasing again, or someone else's address: dropped.
    assert_eq!(s.handle(&rel, any(), T(NOW)).unwrap_err(), DropReason::UnknownLease);
    // Another client can now have it...
    let p = pkt(MessageType::Discover, mac(2), |x| {
        x.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    });
    assert_eq!(decode(ok(&mut s, &p, NOW).reply.as_ref().unwrap()).yiaddr(), ip);
}

#[test]
fn returning_client_gets_its_previous_address() {
    let mut s = server();
    let m = mac(1);
    let (ip, _) = dora(&mut s, m, NOW);
    let rel = pkt(MessageType::Release, m, |p| {
        p.set_ciaddr(ip);
    });
    ok(&mut s, &rel, NOW);
    // Other clients come and go, the pool's search start would give them other addresses anyway.
    for i in 0..20 {
        dora(&mut s, mac(50 + i), NOW);
    }
    if s.pools[0].is_free(ip) {
        assert_eq!(dora(&mut s, m, NOW).0, ip);
    }
    // Deterministic: a client that once asked for an address gets it again without asking (its hash points
    // elsewhere).
    let want = (100..200).rev().map(|i| Ipv4Addr::new(192, 168, 50, i)).find(|ip| s.pools[0].is_free(*ip)).unwrap();
    let m = mac(77);
    let p = pkt(MessageType::Discover, m, |x| {
        x.opts_mut().insert(DhcpOption::RequestedIpAddress(want));
    });
    let ip = decode(ok(&mut s, &p, NOW).reply.as_ref().unwrap()).yiaddr();
    assert_eq!(ip, want);
    ok(&mut s, &select(m, ip), NOW);
    let rel = pkt(MessageType::Release, m, |p| {
        p.set_ciaddr(ip);
    });
    ok(&mut s, &rel, NOW);
    assert_eq!(dora(&mut s, m, NOW).0, want);
}

#[test]
fn decline_quarantines_until_expiry() {
    let mut s = server();
    let m = mac(1);
    let (ip, _) = dora(&mut s, m, NOW);
    let dec = pkt(MessageType::Decline, m, |p| {
        p.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
        p.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    });
    let o = ok(&mut s, &dec, NOW + 1);
    assert!(o.reply.is_none());
    let until = NOW + 1 + DECLINE_SECS;
    let cid = [&[1u8][..], &m.0[..]].concat();
    assert_eq!(o.records, vec![Record::Released { client_id: cid, ip }, Record::Declined { ip, until }]);
    assert!(matches!(o.events[..], [LeaseEvent::Released(_)]));
    assert_eq!(s.declined().collect::<Vec<_>>(), vec![(ip, until)]);
    // Nobody gets it, even when asking, until the quarantine ends.
    let ask = |n| {
        pkt(MessageType::Discover, mac(n), |x| {
            x.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        })
    };
    for i in 0..98 {
        let o = ok(&mut s, &ask(10 + i), NOW + 2);
        assert_ne!(decode(o.reply.as_ref().unwrap()).yiaddr(), ip);
    }
    assert_eq!(s.handle(&ask(200), any(), T(NOW + 2)).unwrap_err(), DropReason::PoolExhausted);
    assert_eq!(ok(&mut s, &renew(mac(300), ip), NOW + 2).reply.unwrap().kind, MessageType::Nak);
    // A decline for an address the client does not hold is ignored (no pool poisoning).
    let bogus = pkt(MessageType::Decline, mac(400), |p| {
        p.opts_mut().insert(DhcpOption::RequestedIpAddress([192, 168, 50, 199].into()));
    });
    assert_eq!(s.handle(&bogus, any(), T(NOW)).unwrap_err(), DropReason::UnknownLease);
    // After quarantine (and offer timeouts), it is back.
    assert!(s.expire(T(until)).is_empty());
    s.check_invariants();
    assert!(s.declined().next().is_none());
    assert_eq!(decode(ok(&mut s, &ask(500), until).reply.as_ref().unwrap()).yiaddr(), ip);
}

#[test]
fn restored_declines_are_honoured() {
    let ip = Ipv4Addr::new(192, 168, 50, 100);
    let mut s =
        Server::new(cfg(), vec![], vec![(ip, NOW + 60), ([192, 168, 50, 101].into(), NOW - 1)], T(NOW)).unwrap();
    assert_eq!(s.free_addresses(), 98);
    let p = pkt(MessageType::Discover, mac(1), |x| {
        x.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    });
    assert_ne!(decode(ok(&mut s, &p, NOW).reply.as_ref().unwrap()).yiaddr(), ip);
}

#[test]
fn inform() {
    let mut s = server();
    let ci = Ipv4Addr::new(192, 168, 50, 9);
    let p = pkt(MessageType::Inform, mac(1), |m| {
        m.set_ciaddr(ci);
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![OptionCode::SubnetMask, OptionCode::BroadcastAddr]));
    });
    let o = ok(&mut s, &p, NOW);
    assert!(o.records.is_empty() && o.events.is_empty() && s.leases().count() == 0);
    let r = o.reply.unwrap();
    assert_eq!(r.to, Destination::Unicast(SocketAddrV4::new(ci, 68)));
    let a = decode(&r);
    assert_eq!((kind(&a), a.yiaddr(), a.ciaddr()), (MessageType::Ack, Ipv4Addr::UNSPECIFIED, ci));
    assert!(a.opts().get(OptionCode::AddressLeaseTime).is_none());
    assert!(a.opts().get(OptionCode::Renewal).is_none());
    assert!(a.opts().get(OptionCode::SubnetMask).is_some());
    assert!(a.opts().get(OptionCode::BroadcastAddr).is_some());
    assert_eq!(s.stats().inform, 1);
}

#[test]
fn relay_uses_relay_pool_and_replies_to_giaddr() {
    let mut s = server();
    let m = mac(1);
    let agent_info = vec![1, 4, b'p', b'o', b'r', b't'];
    let relayed = |kind, f: &dyn Fn(&mut Message)| {
        let p = pkt(kind, m, |p| {
            p.set_giaddr(RELAY).set_hops(1);
            f(p)
        });
        with_relay_info(p, &agent_info)
    };
    let from = SocketAddrV4::new(RELAY, 67);
    let o = s.handle(&relayed(MessageType::Discover, &|_| {}), from, T(NOW)).unwrap();
    let r = o.reply.unwrap();
    assert_eq!(r.to, Destination::Unicast(SocketAddrV4::new(RELAY, 67)));
    let off = decode(&r);
    let ip = off.yiaddr();
    assert!(s.pools[1].in_range(ip), "{ip} from the relay pool");
    assert_eq!(off.giaddr(), RELAY);
    assert_eq!(off.opts().get(OptionCode::Router), Some(&DhcpOption::Router(vec![RELAY])));
    assert_eq!(off.opts().get(OptionCode::ServerIdentifier), Some(&DhcpOption::ServerIdentifier(SERVER)));
    // Option 82 echoed verbatim, as the last option.
    let tail = [&[82u8, agent_info.len() as u8][..], &agent_info[..], &[255]].concat();
    assert!(r.bytes.windows(tail.len()).any(|w| w == tail));

    let ack = s
        .handle(
            &relayed(MessageType::Request, &|p| {
                p.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
                p.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
            }),
            from,
            T(NOW),
        )
        .unwrap();
    assert_eq!(ack.reply.as_ref().unwrap().kind, MessageType::Ack);
    assert!(matches!(ack.records[..], [Record::Bound(ref l)] if l.ip == ip));
    // Unicast RENEWING straight from the relayed client: its link is found by ciaddr, router remembered.
    let o = ok(&mut s, &renew(m, ip), NOW + 100);
    let r = o.reply.unwrap();
    assert_eq!(r.to, Destination::Unicast(SocketAddrV4::new(ip, 68)));
    assert_eq!(decode(&r).opts().get(OptionCode::Router), Some(&DhcpOption::Router(vec![RELAY])));
    // A relayed INIT-REBOOT for a LAN address: wrong network, NAK to the relay with the broadcast bit.
    let o = s
        .handle(
            &relayed(MessageType::Request, &|p| {
                p.opts_mut().insert(DhcpOption::RequestedIpAddress([192, 168, 50, 120].into()));
            }),
            from,
            T(NOW),
        )
        .unwrap();
    let r = o.reply.unwrap();
    assert_eq!((r.kind, r.to), (MessageType::Nak, Destination::Unicast(SocketAddrV4::new(RELAY, 67))));
    assert!(decode(&r).flags().broadcast());
    // No pool for the relay's subnet: dropped.
    let p = pkt(MessageType::Discover, m, |p| {
        p.set_giaddr([10, 77, 0, 1]);
    });
    assert_eq!(s.handle(&p, from, T(NOW)).unwrap_err(), DropReason::NoPoolForRelay);
    assert_eq!(s.stats().dropped(DropReason::NoPoolForRelay), 1);
}

#[test]
fn broadcast_flag_vs_hardware_destination() {
    let mut s = server();
    let p = pkt(MessageType::Discover, mac(1), |m| {
        m.set_flags(Flags::default().set_broadcast());
    });
    let r = ok(&mut s, &p, NOW).reply.unwrap();
    assert_eq!(r.to, Destination::Broadcast);
    assert!(decode(&r).flags().broadcast(), "the flag is echoed");
    let r = ok(&mut s, &discover(mac(2)), NOW).reply.unwrap();
    assert!(matches!(r.to, Destination::Hardware { mac: m, .. } if m == mac(2)));
    assert!(!decode(&r).flags().broadcast());
}

#[test]
fn parameter_request_list() {
    let mut s = server();
    let named = |prl: Vec<OptionCode>| {
        pkt(MessageType::Discover, mac(1), move |m| {
            m.opts_mut().insert(DhcpOption::Hostname("Kitchen Pad".into()));
            m.opts_mut().insert(DhcpOption::ParameterRequestList(prl));
        })
    };
    let o = decode(ok(&mut s, &named(vec![OptionCode::SubnetMask, OptionCode::Router]), NOW).reply.as_ref().unwrap());
    assert!(o.opts().get(OptionCode::BroadcastAddr).is_none());
    assert!(o.opts().get(OptionCode::Hostname).is_none());
    let prl = vec![OptionCode::BroadcastAddr, OptionCode::Hostname, OptionCode::NtpServers, OptionCode::Unknown(250)];
    let o = decode(ok(&mut s, &named(prl), NOW).reply.as_ref().unwrap());
    assert_eq!(o.opts().get(OptionCode::BroadcastAddr), Some(&DhcpOption::BroadcastAddr([192, 168, 50, 255].into())));
    assert_eq!(o.opts().get(OptionCode::Hostname), Some(&DhcpOption::Hostname("kitchen-pad".into())));
    assert!(o.opts().get(OptionCode::NtpServers).is_none(), "what we do not have is not invented");
    // Essentials are sent even when not asked for.
    assert!(o.opts().get(OptionCode::SubnetMask).is_some() && o.opts().get(OptionCode::Router).is_some());
}

#[test]
fn hostnames_from_options_are_sanitized() {
    let mut s = server();
    type Case = (Box<dyn Fn(&mut Message)>, Option<&'static str>);
    let cases: Vec<Case> = vec![
        (
            Box::new(|m| drop(m.opts_mut().insert(DhcpOption::Hostname("Jon's MacBook_Pro".into())))),
            Some("jons-macbook-pro"),
        ),
        // Option 81 wins over option 12 and gives its first label.
        (
            Box::new(|m| {
                m.opts_mut().insert(DhcpOption::Hostname("ignored".into()));
                m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::ClientFQDN,
                    b"\x00\x00\x00Desk.Example.org".to_vec(),
                )));
            }),
            Some("desk"),
        ),
        // 600 bytes (three concatenated option instances): truncated to a 63-byte label.
        (Box::new(|m| drop(m.opts_mut().insert(DhcpOption::Hostname("x".repeat(600))))), Some(&*"x".repeat(63).leak())),
        (Box::new(|m| drop(m.opts_mut().insert(DhcpOption::Hostname("---".into())))), None),
        // Malformed FQDN (too short): ignored, option 12 used.
        (
            Box::new(|m| {
                m.opts_mut().insert(DhcpOption::Hostname("fallback".into()));
                m.opts_mut().insert(DhcpOption::Unknown(UnknownOption::new(OptionCode::ClientFQDN, vec![4])));
            }),
            Some("fallback"),
        ),
    ];
    for (i, (f, want)) in cases.into_iter().enumerate() {
        let m = mac(100 + i as u32);
        let offer = ok(&mut s, &pkt(MessageType::Discover, m, |p| f(p)), NOW);
        let ip = decode(offer.reply.as_ref().unwrap()).yiaddr();
        let o = ok(
            &mut s,
            &pkt(MessageType::Request, m, |p| {
                f(p);
                p.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
                p.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
            }),
            NOW,
        );
        assert!(
            matches!(o.records[..], [Record::Bound(ref l)] if l.hostname.as_deref() == want),
            "case {i}: {:?}",
            o.records
        );
    }
}

#[test]
fn expiry_events() {
    let mut s = server();
    let (ip1, _) = dora(&mut s, mac(1), NOW);
    let (ip2, _) = dora(&mut s, mac(2), NOW + 10);
    // An outstanding offer times out quietly.
    ok(&mut s, &discover(mac(3)), NOW + 20);
    assert_eq!(s.next_expiry().map(Time::unix_secs), Some(NOW + 20 + OFFER_SECS));
    assert!(s.expire(T(NOW + 20 + OFFER_SECS)).is_empty());
    assert_eq!(s.next_expiry().map(Time::unix_secs), Some(NOW + 3600));
    assert!(s.expire(T(NOW + 3599)).is_empty());
    let out = s.expire(T(NOW + 3600));
    assert_eq!(out.len(), 1);
    let (rec, ev) = &out[0];
    assert_eq!(*rec, Record::Released { client_id: [&[1u8][..], &mac(1).0[..]].concat(), ip: ip1 });
    assert!(matches!(ev, LeaseEvent::Expired(l) if l.ip == ip1));
    assert_eq!(s.next_expiry().map(Time::unix_secs), Some(NOW + 3610));
    assert_eq!(s.expire(T(NOW + 100_000)).len(), 1);
    assert_eq!((s.leases().count(), s.next_expiry().map(Time::unix_secs), s.stats().expired), (0, None, 2));
    s.check_invariants();
    assert_eq!(s.free_addresses(), 99);
    // An expired client renewing gets its address back if still free, as a new grant.
    let o = ok(&mut s, &renew(mac(2), ip2), NOW + 100_001);
    assert!(matches!(o.events[..], [LeaseEvent::Granted(ref l)] if l.ip == ip2));
}

#[test]
fn leases_expired_while_down_are_reported_after_restart() {
    let l = lease_for([192, 168, 50, 111].into(), mac(1), NOW - 5);
    let mut s = Server::new(cfg(), vec![l.clone()], vec![], T(NOW)).unwrap();
    assert_eq!(s.next_expiry().map(Time::unix_secs), Some(NOW - 5));
    let out = s.expire(T(NOW));
    assert_eq!(out, vec![(Record::Released { client_id: l.client_id.clone(), ip: l.ip }, LeaseEvent::Expired(l))]);
}

#[test]
fn not_for_us_releases_the_offer() {
    let mut s = server();
    let free = s.free_addresses();
    let ip = decode(ok(&mut s, &discover(mac(1)), NOW).reply.as_ref().unwrap()).yiaddr();
    assert_eq!(s.free_addresses(), free - 1);
    let p = pkt(MessageType::Request, mac(1), |m| {
        m.opts_mut().insert(DhcpOption::ServerIdentifier([192, 168, 50, 2].into()));
        m.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
    });
    assert_eq!(s.handle(&p, any(), T(NOW)).unwrap_err(), DropReason::NotForUs);
    s.check_invariants();
    assert_eq!(s.free_addresses(), free);
}

#[test]
fn selecting_after_offer_timed_out_still_binds_a_free_address() {
    let mut s = server();
    let ip = decode(ok(&mut s, &discover(mac(1)), NOW).reply.as_ref().unwrap()).yiaddr();
    let o = ok(&mut s, &select(mac(1), ip), NOW + 10 * OFFER_SECS);
    assert_eq!(o.reply.unwrap().kind, MessageType::Ack);
}

#[test]
fn discover_flood_keeps_existing_leases_renewable() {
    let mut s = server();
    let mut bound = Vec::new();
    for i in 0..20 {
        bound.push((mac(i), dora(&mut s, mac(i), NOW).0));
    }
    let mut x = 0x2545f4914f6cdd1du64;
    let (mut offers, mut exhausted) = (0, 0);
    for _ in 0..10_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_be_bytes();
        let m = Mac([b[0] & 0xfe, b[1], b[2], b[3], b[4], b[5]]);
        match s.handle(&discover(m), any(), T(NOW + 1)) {
            Ok(o) => {
                let ip = decode(o.reply.as_ref().unwrap()).yiaddr();
                assert!(!bound.iter().any(|&(_, b)| b == ip) && ip != NAS_IP);
                offers += 1;
            }
            Err(e) => {
                assert_eq!(e, DropReason::PoolExhausted);
                exhausted += 1;
            }
        }
    }
    s.check_invariants();
    assert_eq!(offers, 100 - 1 - 20);
    assert_eq!(exhausted, 10_000 - offers);
    assert_eq!(s.stats().dropped(DropReason::PoolExhausted), exhausted as u64);
    for &(m, ip) in &bound {
        assert_eq!(ok(&mut s, &renew(m, ip), NOW + 2).reply.unwrap().kind, MessageType::Ack);
        // A bound client that rebooted and forgot its lease is still offered its own address.
        assert_eq!(decode(ok(&mut s, &discover(m), NOW + 2).reply.as_ref().unwrap()).yiaddr(), ip);
    }
    // The static client is unaffected too.
    assert_eq!(dora(&mut s, NAS_MAC, NOW + 2).0, NAS_IP);
    // Offers time out: new clients are served again.
    assert!(ok(&mut s, &discover(mac(99_999)), NOW + 1 + OFFER_SECS).reply.is_some());
}

/// Every prefix of valid packets, and header corruptions: an error or a reply, never a panic.
#[test]
fn malformed_inputs_never_panic() {
    let mut s = server();
    let (ip, _) = dora(&mut s, mac(1), NOW);
    let full = pkt(MessageType::Request, mac(1), |m| {
        m.set_ciaddr(ip).set_giaddr(RELAY);
        m.opts_mut().insert(DhcpOption::Hostname("h".repeat(300)));
        m.opts_mut().insert(DhcpOption::ClientIdentifier(vec![7; 40]));
        m.opts_mut().insert(DhcpOption::ParameterRequestList(vec![OptionCode::Hostname; 40]));
    });
    let full = with_relay_info(with_relay_info(full, &[1; 255]), &[2, 3, 4]);
    for p in [discover(mac(2)), select(mac(2), ip), full] {
        for len in 0..=p.len() {
            let r = s.handle(&p[..len], any(), T(NOW));
            if len < 240 {
                assert_eq!(r.unwrap_err(), DropReason::Truncated);
            }
            s.check_invariants();
        }
    }
    let good = discover(mac(3));
    let bad = |i: usize, v: u8| {
        let mut p = good.clone();
        p[i] = v;
        p
    };
    assert_eq!(s.handle(&bad(0, 2), any(), T(NOW)).unwrap_err(), DropReason::NotBootRequest);
    assert_eq!(s.handle(&bad(1, 6), any(), T(NOW)).unwrap_err(), DropReason::BadHtype);
    for hlen in [0, 5, 7, 16, 17, 255] {
        assert_eq!(s.handle(&bad(2, hlen), any(), T(NOW)).unwrap_err(), DropReason::BadHlen);
    }
    assert_eq!(s.handle(&bad(236, 0), any(), T(NOW)).unwrap_err(), DropReason::BadMagic);
    let no_type = pkt(MessageType::Discover, mac(3), |m| {
        m.opts_mut().remove(OptionCode::MessageType);
        m.opts_mut().insert(DhcpOption::Hostname("x".into()));
    });
    assert_eq!(s.handle(&no_type, any(), T(NOW)).unwrap_err(), DropReason::NoMessageType);
    for t in [MessageType::Offer, MessageType::Ack, MessageType::Nak, MessageType::Unknown(200)] {
        assert_eq!(s.handle(&pkt(t, mac(3), |_| {}), any(), T(NOW)).unwrap_err(), DropReason::BadMessageType);
    }
    // Options that make dhcproto's own decoder debug-panic (81 shorter than 3, 80 with data, 94 short) and
    // over-long client identifiers (concatenated past 255).
    let head = &good[..240];
    for opts in [
        &[53, 1, 1, 81, 1, 0, 255][..],
        &[53, 1, 1, 80, 3, 1, 2, 3, 255],
        &[53, 1, 1, 94, 1, 1, 255],
        &[53, 1, 1, 121, 3, 33, 1, 2, 255],
        &[53, 1, 1, 52, 1, 3, 255],
        &[53, 1, 1, 52, 1, 9, 255],
        &[53, 1, 1, 12, 255],
    ] {
        let p = [head, opts].concat();
        let _ = s.handle(&p, any(), T(NOW));
    }
    let long_id: Vec<u8> = [&[53u8, 1, 1][..], &[61, 255], &[9; 255], &[61, 2, 9, 9], &[255]].concat();
    assert_eq!(s.handle(&[head, &long_id].concat(), any(), T(NOW)).unwrap_err(), DropReason::BadClientId);
    // Overload with sname/file full of garbage.
    let mut p = [head, &[53, 1, 1, 52, 1, 3, 255]].concat();
    p[44..236].fill(0xff);
    assert!(s.handle(&p, any(), T(NOW)).is_ok(), "0xff is End: empty areas");
    p[44..236].fill(7);
    assert_eq!(s.handle(&p, any(), T(NOW)).unwrap_err(), DropReason::BadOptions);
    s.check_invariants();
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Random bytes, and random mutations of valid packets (which reach much deeper): no panic, invariants hold.
#[test]
fn random_inputs_property() {
    let mut s = server();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let seeds: Vec<Vec<u8>> = vec![
        discover(mac(1)),
        select(mac(1), [192, 168, 50, 150].into()),
        renew(mac(2), [192, 168, 50, 101].into()),
        init_reboot(mac(3), [192, 168, 50, 102].into()),
        pkt(MessageType::Decline, mac(4), |m| {
            drop(m.opts_mut().insert(DhcpOption::RequestedIpAddress([192, 168, 50, 103].into())))
        }),
        pkt(MessageType::Release, mac(5), |m| {
            m.set_ciaddr([192, 168, 50, 104]);
        }),
        pkt(MessageType::Inform, mac(6), |m| {
            m.set_giaddr(RELAY);
        }),
    ];
    let mut now = NOW;
    for i in 0..60_000u32 {
        let r = xorshift(&mut x);
        let p: Vec<u8> = if i % 4 == 0 {
            let len = (r % 700) as usize;
            (0..len).map(|_| xorshift(&mut x) as u8).collect()
        } else {
            let mut p = seeds[(r % seeds.len() as u64) as usize].clone();
            for _ in 0..(r >> 8) % 6 {
                let at = (xorshift(&mut x) % (p.len() as u64 + 8)) as usize;
                let v = xorshift(&mut x) as u8;
                match xorshift(&mut x) % 4 {
                    0 if at < p.len() => p[at] = v,
                    1 => p.truncate(at.max(240)),
                    2 => p.insert(at.min(p.len()), v),
                    _ => p.extend_from_slice(&[v, (v % 8), v, v ^ 0x55]),
                }
            }
            // Keep most mutants plausible Ethernet requests so they reach the state machine.
            if r & 0x30 != 0 && p.len() >= 240 {
                p[0] = 1;
                p[1] = 1;
                p[2] = 6;
                p[28] = (r >> 40) as u8 & 3; // few distinct clients, so they collide on addresses
            }
            p
        };
        let _ = s.handle(&p, any(), T(now));
        if i % 1000 == 0 {
            s.check_invariants();
            now += 37;
            let _ = s.expire(T(now));
        }
    }
    s.check_invariants();
    let _ = s.expire(T(now + 1_000_000));
    s.check_invariants();
    assert_eq!(s.leases().count(), 0);
}

#[test]
fn config_validation() {
    let bad = |f: &dyn Fn(&mut DhcpConfig)| {
        let mut c = cfg();
        f(&mut c);
        Server::new(c, vec![], vec![], T(NOW)).unwrap_err()
    };
    bad(&|c| c.server_ip = [10, 0, 0, 1].into());
    bad(&|c| c.range = ([192, 168, 50, 200].into(), [192, 168, 50, 100].into()));
    bad(&|c| c.range.1 = [192, 168, 51, 1].into());
    bad(&|c| c.lease_secs = 5);
    bad(&|c| c.static_leases.push(StaticLease { mac: mac(1), ip: NAS_IP, hostname: None }));
    bad(&|c| c.static_leases.push(StaticLease { mac: mac(1), ip: SERVER, hostname: None }));
    bad(&|c| c.static_leases.push(StaticLease { mac: NAS_MAC, ip: [192, 168, 50, 9].into(), hostname: None }));
    bad(&|c| c.static_leases.push(StaticLease { mac: mac(1), ip: [10, 10, 0, 1].into(), hostname: None }));
    let e = bad(&|c| {
        c.relay_pools.push(RelayPool {
            subnet: "192.168.0.0/16".parse().unwrap(),
            range: ([192, 168, 1, 1].into(), [192, 168, 1, 9].into()),
            router: None,
        })
    });
    assert!(e.0.contains("overlaps"), "{e}");
    // Defaults: the larger side of the router's address.
    let c = DhcpConfig::new([192, 168, 1, 1].into(), "192.168.1.0/24".parse().unwrap());
    assert_eq!(c.range, ([192, 168, 1, 2].into(), [192, 168, 1, 254].into()));
    assert_eq!((c.lease_secs, c.domain.as_str()), (43_200, "lan"));
    let c = DhcpConfig::new([10, 0, 0, 254].into(), "10.0.0.0/24".parse().unwrap());
    assert_eq!(c.range, ([10, 0, 0, 1].into(), [10, 0, 0, 253].into()));
    c.validate().unwrap();
}

/// Throughput with 10,000 leases held: each DORA + renew exchange is a few hash/B-tree operations.
#[test]
fn many_leases_stay_fast() {
    let mut c = DhcpConfig::new([10, 1, 0, 1].into(), "10.1.0.0/16".parse().unwrap());
    c.lease_secs = 3600;
    let leases: Vec<Lease> = (0..10_000u32)
        .map(|i| lease_for(Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 2)) + i), mac(i), NOW + 3600))
        .collect();
    let mut s = Server::new(c, leases, vec![], T(NOW)).unwrap();
    let packets: Vec<(Vec<u8>, Vec<u8>)> = (0..5_000u32)
        .map(|i| {
            (discover(mac(1_000_000 + i)), renew(mac(i), Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 1, 0, 2)) + i)))
        })
        .collect();
    let start = std::time::Instant::now();
    for (d, r) in &packets {
        let o = s.handle(d, any(), T(NOW)).unwrap();
        assert_eq!(o.reply.unwrap().kind, MessageType::Offer);
        let o = s.handle(r, any(), T(NOW)).unwrap();
        assert_eq!(o.reply.unwrap().kind, MessageType::Ack);
    }
    let el = start.elapsed();
    eprintln!("10,000 exchanges with 10,000 leases held: {el:?} ({:.0}/s)", 10_000.0 / el.as_secs_f64());
    // Generous even for an unoptimized build.
    assert!(el.as_secs_f64() < 10.0);
    s.check_invariants();
}

#[test]
fn extreme_clock_values_do_not_overflow() {
    let mut s = server();
    for now in [0, u64::MAX - 1, u64::MAX] {
        let m = mac(now as u32 ^ 0x55);
        let (ip, _) = dora(&mut s, m, now);
        let dec = pkt(MessageType::Decline, m, |p| {
            p.opts_mut().insert(DhcpOption::RequestedIpAddress(ip));
        });
        ok(&mut s, &dec, now);
        let _ = s.expire(T(now));
    }
    let _ = s.expire(T(u64::MAX));
    s.check_invariants();
}
