//! `cargo fuzz run upnp_soap`: feeds bytes to the UPnP SOAP control core as POST requests.
//!
//! The first byte picks the control path (WANIPConnection, WANCommonInterfaceConfig, or another), whether a
//! SOAPAction header is sent, whether the client is inside the LAN, and whether the rest is the whole body or is
//! wrapped as the arguments of a well-formed envelope (so argument checking is reached as often as XML parsing);
//! the second byte picks the action named in the header and the wrapper. The router's own rules (`ports::core`)
//! keep the mappings made, and each input ends with a GetGenericPortMappingEntry so stored (hostile) descriptions
//! are encoded.
#![no_main]

use gatekeeper::ports::core::{Limits, Ports, Saved};
use gatekeeper::ports::mapping::{MapRequest, Mapper, Origin, Transport};
use gatekeeper::ports::upnp::{CONTROL_PATH_CIF, CONTROL_PATH_IP, LinkStats, UpnpConfig, soap};
use gatekeeper::types::Time;
use libfuzzer_sys::fuzz_target;
use std::net::Ipv4Addr;

const NOW: Time = Time::from_unix_ms(1_700_000_000_000);

const ACTIONS: [&str; 15] = [
    "GetConnectionTypeInfo",
    "GetStatusInfo",
    "GetNATRSIPStatus",
    "GetExternalIPAddress",
    "AddPortMapping",
    "AddAnyPortMapping",
    "DeletePortMapping",
    "GetGenericPortMappingEntry",
    "GetSpecificPortMappingEntry",
    "GetCommonLinkProperties",
    "GetTotalBytesSent",
    "GetTotalBytesReceived",
    "GetTotalPacketsSent",
    "GetTotalPacketsReceived",
    "Nope",
];

fuzz_target!(|data: &[u8]| {
    let [pick, which, rest @ ..] = data else { return };
    let cfg = UpnpConfig::new(
        Ipv4Addr::new(192, 168, 1, 1),
        "192.168.1.0/24".parse().unwrap(),
        5000,
        "1d2c3b4a-0000-4000-8000-0123456789ab",
    );
    let stats = LinkStats { bytes_sent: u64::MAX, uptime_secs: u64::MAX, ..LinkStats::default() };
    // The router's own port rules (`ports::core`), holding one mapping with a hostile description already.
    let limits = Limits { mappings_per_device: 4, ..Limits::default() };
    let mut mapper = Ports::new(limits, Vec::new(), Saved::default(), NOW, 1);
    mapper.set_external_ip(Some(Ipv4Addr::new(203, 0, 113, 7)));
    let ssh = Ipv4Addr::new(192, 168, 1, 60);
    let held = MapRequest {
        origin: Origin::Upnp,
        client: ssh,
        internal_ip: ssh,
        transport: Transport::Tcp,
        internal_port: 22,
        external_port: 2222,
        any_port: false,
        lifetime_secs: 3600,
        description: "ssh <&>".into(),
        nonce: [0; 12],
    };
    mapper.map(NOW, &held).expect("a free port");
    let action = ACTIONS[usize::from(*which) % ACTIONS.len()];
    let (path, service) = match pick & 3 {
        0 | 1 => (CONTROL_PATH_IP, "urn:schemas-upnp-org:service:WANIPConnection:1"),
        2 => (CONTROL_PATH_CIF, "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1"),
        _ => ("/elsewhere", "urn:schemas-upnp-org:service:WANIPConnection:2"),
    };
    let header = format!("\"{service}#{action}\"");
    let header = (pick & 4 != 0).then_some(header.as_str());
    let client = if pick & 8 == 0 { Ipv4Addr::new(192, 168, 1, 50) } else { Ipv4Addr::new(10, 0, 0, 50) };
    let body = if pick & 16 != 0 {
        let mut b = format!(
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
             <u:{action} xmlns:u=\"{service}\">"
        )
        .into_bytes();
        b.extend_from_slice(rest);
        b.extend_from_slice(format!("</u:{action}></s:Body></s:Envelope>\r\n").as_bytes());
        b
    } else {
        rest.to_vec()
    };
    let r = soap::handle(&cfg, &mut mapper, &stats, NOW, client, path, header, &body);
    assert!(r.status == 200 || r.fault.is_some() || r.status == 404);

    let list = "<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\"><s:Body>\
                <u:GetGenericPortMappingEntry xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">\
                <NewPortMappingIndex>1</NewPortMappingIndex></u:GetGenericPortMappingEntry></s:Body></s:Envelope>";
    let client = Ipv4Addr::new(192, 168, 1, 50);
    let _ = soap::handle(&cfg, &mut mapper, &stats, NOW, client, CONTROL_PATH_IP, None, list.as_bytes());
});
