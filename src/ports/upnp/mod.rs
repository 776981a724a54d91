//! UPnP IGD (InternetGatewayDevice:1 with WANIPConnection:1, answering clients that ask for :2), sans-IO: SSDP
//! discovery ([`ssdp`]), the description documents ([`description`]) and the SOAP control of WANIPConnection and
//! WANCommonInterfaceConfig ([`soap`]). Served on the router's LAN address only. No sockets, clocks or threads in
//! here: the shell owns the UDP socket on 239.255.255.250:1900 and the HTTP listener on `http_port`, passes in
//! what arrives (and the time), and sends what comes back. Every port decision is the [`Mapper`]'s.
//!
//! What the shell serves over HTTP (`GET` of the documents, `POST` of the control URLs):
//!
//! | path                  | what                                   |
//! |-----------------------|----------------------------------------|
//! | [`ROOT_DESC_PATH`]    | [`description::root_description`]      |
//! | [`SCPD_PATH_IP`]      | [`description::scpd`] (WANIPConnection)  |
//! | [`SCPD_PATH_CIF`]     | [`description::scpd`] (WANCommonInterfaceConfig) |
//! | [`CONTROL_PATH_IP`]   | [`soap::handle`]                       |
//! | [`CONTROL_PATH_CIF`]  | [`soap::handle`]                       |
//!
//! Every document and answer is `Content-Type: text/xml; charset="utf-8"` ([`CONTENT_TYPE`]).
//!
//! There is no eventing (GENA): the services' `eventSubURL` is empty and no state variable is evented, so a
//! `SUBSCRIBE` gets whatever the shell answers unknown methods with (miniupnpc never subscribes).
//!
//! [`Mapper`]: crate::ports::mapping::Mapper

pub mod description;
pub mod soap;
pub mod ssdp;

pub use soap::{LinkStats, MAX_BODY, SoapReply};
pub use ssdp::{SsdpDrop, SsdpOutcome};

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

pub const ROOT_DESC_PATH: &str = "/rootDesc.xml";
/// WANIPConnection's control URL (in the WANConnectionDevice).
pub const CONTROL_PATH_IP: &str = "/ctl/IPConn";
/// WANCommonInterfaceConfig's control URL (in the WANDevice).
pub const CONTROL_PATH_CIF: &str = "/ctl/CmnIfCfg";
pub const SCPD_PATH_IP: &str = "/WANIPCn.xml";
pub const SCPD_PATH_CIF: &str = "/WANCfg.xml";

/// For every description and SOAP answer (and fault).
pub const CONTENT_TYPE: &str = "text/xml; charset=\"utf-8\"";

pub const DEVICE_IGD: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";
pub const DEVICE_WAN: &str = "urn:schemas-upnp-org:device:WANDevice:1";
pub const DEVICE_WAN_CONNECTION: &str = "urn:schemas-upnp-org:device:WANConnectionDevice:1";
pub const SERVICE_IP: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";
pub const SERVICE_CIF: &str = "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1";

/// UPnP's longest lease (IGDv2: 0, "infinite", and anything longer are a week; the product applies it to v1
/// clients too, so no mapping outlives a week without a renewal).
pub const MAX_LEASE_SECS: u32 = 604_800;

/// SSDP `CACHE-CONTROL: max-age`: the shell re-announces ([`ssdp::notify_alive`]) well within it (every
/// [`ANNOUNCE_INTERVAL_SECS`]), or control points forget the device.
pub const MAX_AGE_SECS: u32 = 1800;
pub const ANNOUNCE_INTERVAL_SECS: u32 = 600;

/// UDA 1.1 CONFIGID.UPNP.ORG (and the root description's `configId`): changes only when the description
/// documents do, i.e. with a release that changes this file's constants.
pub const CONFIG_ID: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpnpConfig {
    /// Off: SSDP is silent ([`ssdp::handle`] drops, [`ssdp::notify_alive`] is empty) and every action is refused
    /// with 606. The shell should send [`ssdp::notify_byebye`] when switching it off.
    pub enabled: bool,
    /// The router's LAN address: where the descriptions and control URLs are served.
    pub router: Ipv4Addr,
    /// Only clients inside it are answered (SSDP and SOAP), whatever the shell filtered already.
    pub lan: Ipv4Net,
    pub http_port: u16,
    /// The root device's UUID, with or without the `uuid:` prefix (both work; only `[0-9A-Za-z-]` is kept). It
    /// must stay the same across restarts (control points cache it). The WANDevice and WANConnectionDevice get
    /// UUIDs derived from it (see [`UpnpConfig::udn`]).
    pub uuid: String,
    /// SSDP `SERVER:`, "OS/version UPnP/1.1 product/version", e.g. "Linux/6.1 UPnP/1.1 gatekeeper/0.1".
    pub server: String,
    /// UDA 1.1 BOOTID.UPNP.ORG: the shell increases it each time the device (re)joins the network, e.g. the start
    /// time in seconds (31 bits).
    pub boot_id: u32,
    /// The root description's presentationURL (the web UI), if any.
    pub presentation_url: Option<String>,
}

impl UpnpConfig {
    /// Enabled, with the crate's name and version in SERVER, boot id 1 and no presentation URL.
    pub fn new(router: Ipv4Addr, lan: Ipv4Net, http_port: u16, uuid: &str) -> UpnpConfig {
        UpnpConfig {
            enabled: true,
            router,
            lan,
            http_port,
            uuid: uuid.to_string(),
            server: format!("Linux UPnP/1.1 gatekeeper/{}", env!("CARGO_PKG_VERSION")),
            boot_id: 1,
            presentation_url: None,
        }
    }

    /// `uuid:...` of a device. The embedded devices' UUIDs are the root's with the last hex digit advanced by 1
    /// (WANDevice) and 2 (WANConnectionDevice), so they are unique and stable without more configuration.
    pub fn udn(&self, device: Device) -> String {
        let raw = self.uuid.trim();
        let raw = match raw.get(..5) {
            Some(p) if p.eq_ignore_ascii_case("uuid:") => &raw[5..],
            _ => raw,
        };
        let base: String = raw.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
        let k = device as u32;
        if k == 0 {
            return format!("uuid:{base}");
        }
        match base.chars().last().and_then(|c| c.to_digit(16).map(|v| (c, v))) {
            Some((c, v)) => {
                let d = char::from_digit((v + k) % 16, 16).unwrap_or('0');
                let d = if c.is_ascii_uppercase() { d.to_ascii_uppercase() } else { d };
                format!("uuid:{}{d}", &base[..base.len() - 1])
            }
            None => format!("uuid:{base}-{k}"),
        }
    }

    /// `http://ROUTER:PORT/rootDesc.xml`, SSDP's LOCATION.
    pub fn location(&self) -> String {
        format!("http://{}:{}{}", self.router, self.http_port, ROOT_DESC_PATH)
    }

    /// SERVER without anything that could end a header line.
    pub(crate) fn server_header(&self) -> String {
        self.server.chars().filter(|c| !c.is_control()).collect()
    }
}

/// The three devices of the IGD:1 tree (each has its own UDN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// InternetGatewayDevice, the root.
    Root = 0,
    /// WANDevice: holds WANCommonInterfaceConfig.
    Wan = 1,
    /// WANConnectionDevice: holds WANIPConnection.
    WanConnection = 2,
}

/// Text for an XML element or attribute: the five special characters escaped, and characters XML 1.0 cannot
/// carry even escaped (C0 controls other than tab/CR/LF, U+FFFE/U+FFFF) dropped, so hostile text (a mapping's
/// description) never breaks or extends the document.
pub(crate) fn xml_text(s: &str) -> String {
    let clean: String = s.chars().filter(|&c| xml_char(c)).collect();
    quick_xml::escape::escape(clean.as_str()).into_owned()
}

fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn cfg() -> UpnpConfig {
        UpnpConfig::new(
            Ipv4Addr::new(192, 168, 1, 1),
            "192.168.1.0/24".parse().unwrap(),
            5000,
            "uuid:1d2c3b4a-0000-4000-8000-0123456789ab",
        )
    }

    #[test]
    fn udns_are_distinct_and_stable() {
        let c = cfg();
        assert_eq!(c.udn(Device::Root), "uuid:1d2c3b4a-0000-4000-8000-0123456789ab");
        assert_eq!(c.udn(Device::Wan), "uuid:1d2c3b4a-0000-4000-8000-0123456789ac");
        assert_eq!(c.udn(Device::WanConnection), "uuid:1d2c3b4a-0000-4000-8000-0123456789ad");
        // Without the prefix: the same.
        let mut bare = c.clone();
        bare.uuid = "1d2c3b4a-0000-4000-8000-0123456789ab".into();
        assert_eq!(bare.udn(Device::Wan), c.udn(Device::Wan));
        // Wraps within hex, keeps case.
        bare.uuid = "ABCDEF".into();
        assert_eq!(bare.udn(Device::Wan), "uuid:ABCDE0");
        assert_eq!(bare.udn(Device::WanConnection), "uuid:ABCDE1");
        // Nothing that could end a header or an element survives.
        bare.uuid = "x\r\nEVIL: 1<a>".into();
        assert_eq!(bare.udn(Device::Root), "uuid:xEVIL1a");
        assert_eq!(bare.udn(Device::Wan), "uuid:xEVIL1b");
        bare.uuid = "zz".into();
        assert_eq!(bare.udn(Device::Wan), "uuid:zz-1");
    }

    #[test]
    fn xml_text_escapes_and_drops_what_xml_cannot_carry() {
        assert_eq!(xml_text("a<b>&\"'"), "a&lt;b&gt;&amp;&quot;&apos;");
        assert_eq!(xml_text("x\u{1}\u{0}y\u{FFFE}\tz"), "xy\tz");
        assert_eq!(xml_text("é😀"), "é😀");
    }
}
