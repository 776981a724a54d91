//! SSDP (UDA 1.1 section 1) on 239.255.255.250:1900: answers M-SEARCH from the LAN and builds the NOTIFY
//! announcements. Fed one datagram and its source, it returns the unicast replies to send back to that source.
//!
//! Contract with the shell: send each of [`SsdpOutcome::Replies`] to `from` (unicast, from the socket bound to
//! port 1900). UDA lets a device spread its replies over the search's MX seconds ([`search_mx`], capped at 5);
//! replying at once is fine on a home LAN (miniupnpd does by default) and is what miniupnpc expects: it waits
//! MX = 2 s at most. Multicast [`notify_alive`] at start (twice: UDP gets lost), every [`ANNOUNCE_INTERVAL_SECS`],
//! and after the LAN address or `http_port` changes (after [`notify_byebye`] for the old one); multicast
//! [`notify_byebye`] when stopping or switching UPnP off. Use a TTL of 2 (UDA) and send only on the LAN.
//!
//! [`ANNOUNCE_INTERVAL_SECS`]: super::ANNOUNCE_INTERVAL_SECS

use super::{
    CONFIG_ID, DEVICE_IGD, DEVICE_WAN, DEVICE_WAN_CONNECTION, Device, MAX_AGE_SECS, SERVICE_CIF, SERVICE_IP, UpnpConfig,
};
use crate::labels::labelled_enum;
use std::fmt::Write;
use std::net::{Ipv4Addr, SocketAddrV4};

pub const MULTICAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);

/// Longer datagrams are dropped unread (an M-SEARCH is about 130 bytes).
pub const MAX_DATAGRAM: usize = 2048;

labelled_enum! {
    /// Why a datagram got no reply. `as_str`/`label` are stable (metrics, logs).
    pub enum SsdpDrop {
        /// UPnP is switched off.
        Disabled => "disabled",
        /// Over [`MAX_DATAGRAM`].
        TooLarge => "too_large",
        /// From outside the LAN (or from its network/broadcast address, or port 0).
        NotLan => "not_lan",
        /// Another device's announcement: nothing to answer.
        Notify => "notify",
        /// An HTTP response (another device answering a search).
        Response => "response",
        /// A request line with another method.
        Method => "method",
        /// Not UTF-8, a bad request line or header, or no ST.
        Malformed => "malformed",
        /// MAN present but not "ssdp:discover".
        BadMan => "bad_man",
        /// A search for something this device is not (e.g. WANPPPConnection, a printer).
        NoMatch => "no_match",
    }
}

impl SsdpDrop {
    pub fn label(self) -> &'static str {
        self.as_str()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SsdpOutcome {
    /// The replies to unicast back to the sender, in order (never empty).
    Replies(Vec<Vec<u8>>),
    Drop(SsdpDrop),
}

/// Answers one datagram received on port 1900.
///
/// M-SEARCH with ST `ssdp:all` gets one reply for each of the 9 things the device is (root device, the 3 UUIDs,
/// the 3 device types, the 2 service types); `upnp:rootdevice`, one of the UUIDs, or a device or service type of
/// ours in any version from 1 up (a client asking for `InternetGatewayDevice:2` or `WANIPConnection:2` finds the
/// :1 we have, named as :1 in the reply) gets one.
pub fn handle(cfg: &UpnpConfig, from: SocketAddrV4, datagram: &[u8]) -> SsdpOutcome {
    if !cfg.enabled {
        return SsdpOutcome::Drop(SsdpDrop::Disabled);
    }
    if datagram.len() > MAX_DATAGRAM {
        return SsdpOutcome::Drop(SsdpDrop::TooLarge);
    }
    let ip = *from.ip();
    let edge = cfg.lan.prefix_len() < 31 && (ip == cfg.lan.network() || ip == cfg.lan.broadcast());
    if !cfg.lan.contains(&ip) || edge || from.port() == 0 {
        return SsdpOutcome::Drop(SsdpDrop::NotLan);
    }
    let search = match parse(datagram) {
        Ok(s) => s,
        Err(d) => return SsdpOutcome::Drop(d),
    };
    let found = matching(cfg, search.st);
    if found.is_empty() {
        return SsdpOutcome::Drop(SsdpDrop::NoMatch);
    }
    SsdpOutcome::Replies(found.iter().map(|(st, usn)| reply(cfg, st, usn)).collect())
}

/// The search's MX (seconds the replies may be spread over), capped at 5 as UDA says; `None` when the datagram is
/// not an M-SEARCH or has no valid MX (a unicast search has none: answer at once).
pub fn search_mx(datagram: &[u8]) -> Option<u8> {
    let mx = parse(datagram).ok()?.mx?;
    if mx.is_empty() || mx.len() > 9 || !mx.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(mx.parse::<u32>().ok()?.min(5) as u8)
}

/// The `ssdp:alive` announcements, one per thing the device is (9), for [`MULTICAST`]. Empty when disabled.
pub fn notify_alive(cfg: &UpnpConfig) -> Vec<Vec<u8>> {
    if !cfg.enabled {
        return Vec::new();
    }
    let (location, server) = (cfg.location(), cfg.server_header());
    targets(cfg)
        .iter()
        .map(|(nt, usn)| {
            let mut m = String::with_capacity(400);
            let _ = write!(
                m,
                "NOTIFY * HTTP/1.1\r\nHOST: {MULTICAST}\r\nCACHE-CONTROL: max-age={MAX_AGE_SECS}\r\n\
                 LOCATION: {location}\r\nNT: {nt}\r\nNTS: ssdp:alive\r\nSERVER: {server}\r\nUSN: {usn}\r\n\
                 BOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {CONFIG_ID}\r\n\r\n",
                cfg.boot_id
            );
            m.into_bytes()
        })
        .collect()
}

/// The `ssdp:byebye` announcements (9), for [`MULTICAST`]: sent whether enabled or not (switching off is when).
pub fn notify_byebye(cfg: &UpnpConfig) -> Vec<Vec<u8>> {
    targets(cfg)
        .iter()
        .map(|(nt, usn)| {
            let mut m = String::with_capacity(300);
            let _ = write!(
                m,
                "NOTIFY * HTTP/1.1\r\nHOST: {MULTICAST}\r\nNT: {nt}\r\nNTS: ssdp:byebye\r\nUSN: {usn}\r\n\
                 BOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {CONFIG_ID}\r\n\r\n",
                cfg.boot_id
            );
            m.into_bytes()
        })
        .collect()
}

/// What the device is, as (NT or ST, USN): UDA's 3 + 2d + k for d = 2 embedded devices and k = 2 service types.
fn targets(cfg: &UpnpConfig) -> Vec<(String, String)> {
    let (root, wan, wcd) = (cfg.udn(Device::Root), cfg.udn(Device::Wan), cfg.udn(Device::WanConnection));
    vec![
        ("upnp:rootdevice".into(), format!("{root}::upnp:rootdevice")),
        (root.clone(), root.clone()),
        (DEVICE_IGD.into(), format!("{root}::{DEVICE_IGD}")),
        (wan.clone(), wan.clone()),
        (DEVICE_WAN.into(), format!("{wan}::{DEVICE_WAN}")),
        (wcd.clone(), wcd.clone()),
        (DEVICE_WAN_CONNECTION.into(), format!("{wcd}::{DEVICE_WAN_CONNECTION}")),
        (SERVICE_CIF.into(), format!("{wan}::{SERVICE_CIF}")),
        (SERVICE_IP.into(), format!("{wcd}::{SERVICE_IP}")),
    ]
}

/// The types searched by name, without their version: (prefix, the type we have).
const TYPES: [(&str, &str); 5] = [
    ("urn:schemas-upnp-org:device:InternetGatewayDevice:", DEVICE_IGD),
    ("urn:schemas-upnp-org:device:WANDevice:", DEVICE_WAN),
    ("urn:schemas-upnp-org:device:WANConnectionDevice:", DEVICE_WAN_CONNECTION),
    ("urn:schemas-upnp-org:service:WANCommonInterfaceConfig:", SERVICE_CIF),
    ("urn:schemas-upnp-org:service:WANIPConnection:", SERVICE_IP),
];

fn matching(cfg: &UpnpConfig, st: &str) -> Vec<(String, String)> {
    let all = targets(cfg);
    if st == "ssdp:all" {
        return all;
    }
    if st == "upnp:rootdevice" {
        return all.into_iter().take(1).collect();
    }
    if st.len() > 5 && st.get(..5).is_some_and(|p| p.eq_ignore_ascii_case("uuid:")) {
        // UUIDs are hex: a search may spell them in another case; the reply uses ours.
        return all.into_iter().filter(|(nt, usn)| nt == usn && nt.eq_ignore_ascii_case(st)).collect();
    }
    for (prefix, ours) in TYPES {
        if let Some(version) = st.strip_prefix(prefix) {
            let numeric = !version.is_empty() && version.len() <= 9 && version.bytes().all(|b| b.is_ascii_digit());
            if numeric && version.parse::<u32>().is_ok_and(|v| v >= 1) {
                return all.into_iter().filter(|(nt, _)| nt == ours).collect();
            }
        }
    }
    Vec::new()
}

fn reply(cfg: &UpnpConfig, st: &str, usn: &str) -> Vec<u8> {
    let mut m = String::with_capacity(400);
    let _ = write!(
        m,
        "HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age={MAX_AGE_SECS}\r\nEXT:\r\nLOCATION: {}\r\nSERVER: {}\r\n\
         ST: {st}\r\nUSN: {usn}\r\nBOOTID.UPNP.ORG: {}\r\nCONFIGID.UPNP.ORG: {CONFIG_ID}\r\n\r\n",
        cfg.location(),
        cfg.server_header(),
        cfg.boot_id
    );
    m.into_bytes()
}

struct Search<'a> {
    st: &'a str,
    mx: Option<&'a str>,
}

fn parse(datagram: &[u8]) -> Result<Search<'_>, SsdpDrop> {
    let text = std::str::from_utf8(datagram).map_err(|_| SsdpDrop::Malformed)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut request = lines.next().unwrap_or("").split(' ').filter(|p| !p.is_empty());
    let (method, target, version) = (request.next(), request.next(), request.next());
    match method {
        Some(m) if m.starts_with("HTTP/") => return Err(SsdpDrop::Response),
        Some("NOTIFY") => return Err(SsdpDrop::Notify),
        Some("M-SEARCH") => {}
        Some(_) => return Err(SsdpDrop::Method),
        None => return Err(SsdpDrop::Malformed),
    }
    if target != Some("*") || !matches!(version, Some("HTTP/1.1" | "HTTP/1.0")) || request.next().is_some() {
        return Err(SsdpDrop::Malformed);
    }
    let (mut st, mut man, mut mx) = (None, None, None);
    // Headers up to the blank line (or the datagram's end: some senders stop after the last header).
    for line in lines.take_while(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(SsdpDrop::Malformed)?;
        let (name, value) = (name.trim(), value.trim());
        let slot = if name.eq_ignore_ascii_case("st") {
            &mut st
        } else if name.eq_ignore_ascii_case("man") {
            &mut man
        } else if name.eq_ignore_ascii_case("mx") {
            &mut mx
        } else if name.is_empty() {
            return Err(SsdpDrop::Malformed);
        } else {
            continue;
        };
        // Two of the same: which one was meant is anyone's guess.
        if slot.replace(value).is_some() {
            return Err(SsdpDrop::Malformed);
        }
    }
    // MAN is required by UDA but some control points omit it; a wrong one means another extension.
    if man.is_some_and(|m| m.trim_matches('"') != "ssdp:discover") {
        return Err(SsdpDrop::BadMan);
    }
    match st {
        Some(st) if !st.is_empty() => Ok(Search { st, mx }),
        _ => Err(SsdpDrop::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::cfg;
    use super::*;
    use proptest::prelude::*;

    const FROM: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 50), 40000);

    /// What miniupnpc's ssdpDiscoverDevices sends.
    fn msearch(st: &str) -> Vec<u8> {
        format!(
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: {st}\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n"
        )
        .into_bytes()
    }

    /// Headers of a reply, as miniupnpc's parseMSEARCHReply reads them (name before the first colon, value after
    /// the spaces), keyed by the lowercased name.
    fn headers(reply: &[u8]) -> std::collections::HashMap<String, String> {
        let text = std::str::from_utf8(reply).unwrap();
        text.split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim_start_matches(' ').to_string()))
            .collect()
    }

    fn replies(st: &str) -> Vec<Vec<u8>> {
        match handle(&cfg(), FROM, &msearch(st)) {
            SsdpOutcome::Replies(r) => r,
            SsdpOutcome::Drop(d) => panic!("{st}: dropped ({d})"),
        }
    }

    fn dropped(datagram: &[u8]) -> SsdpDrop {
        match handle(&cfg(), FROM, datagram) {
            SsdpOutcome::Drop(d) => d,
            SsdpOutcome::Replies(r) => panic!("answered: {r:?}"),
        }
    }

    fn one(st: &str) -> std::collections::HashMap<String, String> {
        let r = replies(st);
        assert_eq!(r.len(), 1, "{st}");
        assert!(r[0].starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(r[0].ends_with(b"\r\n\r\n"));
        // miniupnpc reads replies into 1536 bytes.
        assert!(r[0].len() < 1536);
        headers(&r[0])
    }

    #[test]
    fn each_type_is_answered_with_the_type_we_have() {
        let c = cfg();
        let cases = [
            ("urn:schemas-upnp-org:device:InternetGatewayDevice:1", DEVICE_IGD, Device::Root),
            ("urn:schemas-upnp-org:device:InternetGatewayDevice:2", DEVICE_IGD, Device::Root),
            ("urn:schemas-upnp-org:device:WANDevice:1", DEVICE_WAN, Device::Wan),
            ("urn:schemas-upnp-org:device:WANDevice:2", DEVICE_WAN, Device::Wan),
            ("urn:schemas-upnp-org:device:WANConnectionDevice:1", DEVICE_WAN_CONNECTION, Device::WanConnection),
            ("urn:schemas-upnp-org:service:WANIPConnection:1", SERVICE_IP, Device::WanConnection),
            ("urn:schemas-upnp-org:service:WANIPConnection:2", SERVICE_IP, Device::WanConnection),
            ("urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1", SERVICE_CIF, Device::Wan),
        ];
        for (st, ours, dev) in cases {
            let h = one(st);
            assert_eq!(h["st"], ours, "{st}");
            assert_eq!(h["usn"], format!("{}::{ours}", c.udn(dev)));
            assert_eq!(h["location"], "http://192.168.1.1:5000/rootDesc.xml");
            assert_eq!(h["cache-control"], "max-age=1800");
            assert_eq!(h["ext"], "");
            assert_eq!(h["server"], c.server);
            assert_eq!(h["bootid.upnp.org"], "1");
            assert_eq!(h["configid.upnp.org"], "1");
        }
    }

    #[test]
    fn rootdevice_and_uuids() {
        let c = cfg();
        let h = one("upnp:rootdevice");
        assert_eq!(h["st"], "upnp:rootdevice");
        assert_eq!(h["usn"], format!("{}::upnp:rootdevice", c.udn(Device::Root)));
        for dev in [Device::Root, Device::Wan, Device::WanConnection] {
            let h = one(&c.udn(dev));
            assert_eq!(h["st"], c.udn(dev));
            assert_eq!(h["usn"], c.udn(dev));
            // In another case: found, named our way.
            let h = one(&c.udn(dev).to_ascii_uppercase().replace("UUID:", "uuid:"));
            assert_eq!(h["st"], c.udn(dev));
        }
    }

    #[test]
    fn ssdp_all_answers_everything_once() {
        let c = cfg();
        let r = replies("ssdp:all");
        assert_eq!(r.len(), 9);
        let pairs: Vec<(String, String)> =
            r.iter().map(|m| headers(m)).map(|h| (h["st"].clone(), h["usn"].clone())).collect();
        let (root, wan, wcd) = (c.udn(Device::Root), c.udn(Device::Wan), c.udn(Device::WanConnection));
        let want = [
            ("upnp:rootdevice".to_string(), format!("{root}::upnp:rootdevice")),
            (root.clone(), root.clone()),
            (DEVICE_IGD.into(), format!("{root}::{DEVICE_IGD}")),
            (wan.clone(), wan.clone()),
            (DEVICE_WAN.into(), format!("{wan}::{DEVICE_WAN}")),
            (wcd.clone(), wcd.clone()),
            (DEVICE_WAN_CONNECTION.into(), format!("{wcd}::{DEVICE_WAN_CONNECTION}")),
            (SERVICE_CIF.into(), format!("{wan}::{SERVICE_CIF}")),
            (SERVICE_IP.into(), format!("{wcd}::{SERVICE_IP}")),
        ];
        assert_eq!(pairs, want);
    }

    #[test]
    fn searches_for_what_we_are_not_get_nothing() {
        for st in [
            "urn:schemas-upnp-org:service:WANPPPConnection:1",
            "urn:schemas-upnp-org:device:InternetGatewayDevice:0",
            "urn:schemas-upnp-org:device:InternetGatewayDevice:",
            "urn:schemas-upnp-org:device:InternetGatewayDevice:1x",
            "urn:schemas-upnp-org:device:InternetGatewayDevice:99999999999",
            "urn:schemas-upnp-org:device:MediaRenderer:1",
            "uuid:00000000-0000-0000-0000-000000000000",
            "uuid:",
            "ssdp:ALL",
        ] {
            assert_eq!(dropped(&msearch(st)), SsdpDrop::NoMatch, "{st}");
        }
    }

    #[test]
    fn lenient_where_clients_differ() {
        // LF only, lowercase headers, no MAN, no MX, MAN without quotes, extra headers, no final blank line.
        let r = handle(&cfg(), FROM, b"M-SEARCH * HTTP/1.1\nhost:239.255.255.250:1900\nst:upnp:rootdevice\n");
        assert!(matches!(r, SsdpOutcome::Replies(ref v) if v.len() == 1));
        let r = handle(
            &cfg(),
            FROM,
            b"M-SEARCH * HTTP/1.1\r\nMan: ssdp:discover\r\nUSER-AGENT: x\r\nSt:   ssdp:all  \r\n\r\n",
        );
        assert!(matches!(r, SsdpOutcome::Replies(ref v) if v.len() == 9));
    }

    #[test]
    fn drops_with_reasons() {
        assert_eq!(
            dropped(
                b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nNT: upnp:rootdevice\r\nNTS: ssdp:alive\r\n\r\n"
            ),
            SsdpDrop::Notify
        );
        assert_eq!(dropped(b"HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\n\r\n"), SsdpDrop::Response);
        assert_eq!(dropped(b"GET / HTTP/1.1\r\n\r\n"), SsdpDrop::Method);
        assert_eq!(dropped(b""), SsdpDrop::Malformed);
        assert_eq!(dropped(b"\xff\xfe"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH / HTTP/1.1\r\nST: ssdp:all\r\n\r\n"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH * HTTP/2\r\nST: ssdp:all\r\n\r\n"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH * HTTP/1.1 x\r\nST: ssdp:all\r\n\r\n"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH * HTTP/1.1\r\nMAN: \"ssdp:discover\"\r\n\r\n"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH * HTTP/1.1\r\nST:\r\n\r\n"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH * HTTP/1.1\r\nST ssdp:all\r\n\r\n"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nST: upnp:rootdevice\r\n\r\n"), SsdpDrop::Malformed);
        assert_eq!(dropped(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nMAN: \"ssdp:update\"\r\n\r\n"), SsdpDrop::BadMan);
        let mut big = msearch("ssdp:all");
        big.resize(MAX_DATAGRAM + 1, b' ');
        assert_eq!(dropped(&big), SsdpDrop::TooLarge);
        let mut at_limit = b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nX: ".to_vec();
        at_limit.resize(MAX_DATAGRAM - 4, b'a');
        at_limit.extend_from_slice(b"\r\n\r\n");
        assert!(matches!(handle(&cfg(), FROM, &at_limit), SsdpOutcome::Replies(_)));

        let m = msearch("ssdp:all");
        for from in [
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 5), 1900),
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 0), 1900),
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 255), 1900),
            SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 50), 0),
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1900),
        ] {
            assert_eq!(handle(&cfg(), from, &m), SsdpOutcome::Drop(SsdpDrop::NotLan), "{from}");
        }
        let mut off = cfg();
        off.enabled = false;
        assert_eq!(handle(&off, FROM, &m), SsdpOutcome::Drop(SsdpDrop::Disabled));
        assert_eq!(SsdpDrop::Disabled.label(), "disabled");
    }

    #[test]
    fn mx() {
        assert_eq!(search_mx(&msearch("ssdp:all")), Some(2));
        assert_eq!(search_mx(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nMX: 120\r\n\r\n"), Some(5));
        assert_eq!(search_mx(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nMX: 0\r\n\r\n"), Some(0));
        assert_eq!(search_mx(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\nMX: -1\r\n\r\n"), None);
        assert_eq!(search_mx(b"M-SEARCH * HTTP/1.1\r\nST: ssdp:all\r\n\r\n"), None);
        assert_eq!(search_mx(b"NOTIFY * HTTP/1.1\r\nMX: 2\r\n\r\n"), None);
    }

    #[test]
    fn announcements() {
        let mut c = cfg();
        c.boot_id = 1_700_000_000;
        let alive = notify_alive(&c);
        assert_eq!(alive.len(), 9);
        for (m, (nt, usn)) in alive.iter().zip(targets(&c)) {
            assert!(m.starts_with(b"NOTIFY * HTTP/1.1\r\n"));
            let h = headers(m);
            assert_eq!(h["host"], "239.255.255.250:1900");
            assert_eq!(h["nts"], "ssdp:alive");
            assert_eq!(h["nt"], nt);
            assert_eq!(h["usn"], usn);
            assert_eq!(h["location"], c.location());
            assert_eq!(h["cache-control"], "max-age=1800");
            assert_eq!(h["bootid.upnp.org"], "1700000000");
            assert!(m.len() < 1500);
        }
        let bye = notify_byebye(&c);
        assert_eq!(bye.len(), 9);
        for m in &bye {
            let h = headers(m);
            assert_eq!(h["nts"], "ssdp:byebye");
            assert!(!h.contains_key("location"));
        }
        c.enabled = false;
        assert!(notify_alive(&c).is_empty());
        assert_eq!(notify_byebye(&c).len(), 9);
    }

    #[test]
    fn a_hostile_server_string_cannot_add_headers() {
        let mut c = cfg();
        c.server = "Linux\r\nLOCATION: http://evil/".into();
        let r = match handle(&c, FROM, &msearch("upnp:rootdevice")) {
            SsdpOutcome::Replies(r) => r,
            d => panic!("{d:?}"),
        };
        let h = headers(&r[0]);
        assert_eq!(h["location"], "http://192.168.1.1:5000/rootDesc.xml");
        assert_eq!(h["server"], "LinuxLOCATION: http://evil/");
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2200), last in 0u8..=255) {
            let from = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, last), 1900);
            let _ = handle(&cfg(), from, &data);
            let _ = search_mx(&data);
        }

        #[test]
        fn searches_with_arbitrary_headers_never_panic(st in "\\PC{0,80}", extra in "[ -~\r\n]{0,200}") {
            let d = format!("M-SEARCH * HTTP/1.1\r\n{extra}\r\nST: {st}\r\n\r\n");
            if let SsdpOutcome::Replies(r) = handle(&cfg(), FROM, d.as_bytes()) {
                prop_assert!(!r.is_empty() && r.len() <= 9);
            }
        }
    }
}
