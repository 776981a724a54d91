//! The description documents (UDA 1.1 section 2): the root device description at [`ROOT_DESC_PATH`] and the two
//! service descriptions (SCPD). The tree is what miniupnpc's UPNP_GetValidIGD looks for: InternetGatewayDevice
//! -> WANDevice (WANCommonInterfaceConfig) -> WANConnectionDevice (WANIPConnection). URLs are absolute paths, so
//! a client resolves them against the LOCATION it fetched (no URLBase, deprecated by UDA 1.1).
//!
//! The root device has no Layer3Forwarding service (IGD:1 lists it, no client we know of needs it, and
//! miniupnpd leaves it out by default). Elements carry no whitespace around their text: miniupnpc's parser keeps
//! it as part of the value.
//!
//! [`ROOT_DESC_PATH`]: super::ROOT_DESC_PATH

use super::{
    CONFIG_ID, CONTROL_PATH_CIF, CONTROL_PATH_IP, DEVICE_IGD, DEVICE_WAN, DEVICE_WAN_CONNECTION, Device, SCPD_PATH_CIF,
    SCPD_PATH_IP, SERVICE_CIF, SERVICE_IP, UpnpConfig, xml_text,
};

const NAME: &str = "gatekeeper";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The root device description (for `GET` of [`ROOT_DESC_PATH`](super::ROOT_DESC_PATH)).
pub fn root_description(cfg: &UpnpConfig) -> String {
    let udn = |d| xml_text(&cfg.udn(d));
    let presentation = cfg
        .presentation_url
        .as_deref()
        .map(|u| format!("<presentationURL>{}</presentationURL>\r\n", xml_text(u)))
        .unwrap_or_default();
    let device = |ty: &str, friendly: &str, udn: &str| {
        format!(
            "<deviceType>{ty}</deviceType>\r\n<friendlyName>{friendly}</friendlyName>\r\n\
             <manufacturer>{NAME}</manufacturer>\r\n<modelDescription>{friendly}</modelDescription>\r\n\
             <modelName>{NAME}</modelName>\r\n<modelNumber>{VERSION}</modelNumber>\r\n<UDN>{udn}</UDN>\r\n"
        )
    };
    let service = |ty: &str, id: &str, scpd: &str, control: &str| {
        format!(
            "<service>\r\n<serviceType>{ty}</serviceType>\r\n<serviceId>{id}</serviceId>\r\n\
             <SCPDURL>{scpd}</SCPDURL>\r\n<controlURL>{control}</controlURL>\r\n<eventSubURL></eventSubURL>\r\n\
             </service>\r\n"
        )
    };
    format!(
        "<?xml version=\"1.0\"?>\r\n\
         <root xmlns=\"urn:schemas-upnp-org:device-1-0\" configId=\"{CONFIG_ID}\">\r\n\
         <specVersion><major>1</major><minor>1</minor></specVersion>\r\n\
         <device>\r\n{root}<deviceList>\r\n\
         <device>\r\n{wan}<serviceList>\r\n{cif}</serviceList>\r\n<deviceList>\r\n\
         <device>\r\n{wcd}<serviceList>\r\n{ip}</serviceList>\r\n</device>\r\n\
         </deviceList>\r\n</device>\r\n\
         </deviceList>\r\n{presentation}</device>\r\n</root>\r\n",
        root = device(DEVICE_IGD, NAME, &udn(Device::Root)),
        wan = device(DEVICE_WAN, "WAN", &udn(Device::Wan)),
        cif = service(SERVICE_CIF, "urn:upnp-org:serviceId:WANCommonIFC1", SCPD_PATH_CIF, CONTROL_PATH_CIF),
        wcd = device(DEVICE_WAN_CONNECTION, "WAN connection", &udn(Device::WanConnection)),
        ip = service(SERVICE_IP, "urn:upnp-org:serviceId:WANIPConn1", SCPD_PATH_IP, CONTROL_PATH_IP),
    )
}

/// The service description served at `path` ([`SCPD_PATH_IP`], [`SCPD_PATH_CIF`]), if it is one.
pub fn scpd(path: &str) -> Option<&'static str> {
    match path {
        SCPD_PATH_IP => Some(SCPD_IP),
        SCPD_PATH_CIF => Some(SCPD_CIF),
        _ => None,
    }
}

macro_rules! arg {
    ($name:literal, $dir:literal, $var:literal) => {
        concat!(
            "<argument><name>",
            $name,
            "</name><direction>",
            $dir,
            "</direction><relatedStateVariable>",
            $var,
            "</relatedStateVariable></argument>\r\n"
        )
    };
}

macro_rules! action {
    ($name:literal: $($arg:expr),+ $(,)?) => {
        concat!("<action><name>", $name, "</name>\r\n<argumentList>\r\n", $($arg,)+ "</argumentList></action>\r\n")
    };
}

// Nothing is evented (no GENA), so every variable says sendEvents="no".
macro_rules! var {
    ($name:literal, $ty:literal) => {
        concat!("<stateVariable sendEvents=\"no\"><name>", $name, "</name><dataType>", $ty, "</dataType></stateVariable>\r\n")
    };
    ($name:literal, $ty:literal, [$($v:literal),+]) => {
        concat!(
            "<stateVariable sendEvents=\"no\"><name>", $name, "</name><dataType>", $ty, "</dataType><allowedValueList>",
            $("<allowedValue>", $v, "</allowedValue>",)+
            "</allowedValueList></stateVariable>\r\n"
        )
    };
    ($name:literal, $ty:literal, $min:literal ..= $max:literal) => {
        concat!(
            "<stateVariable sendEvents=\"no\"><name>", $name, "</name><dataType>", $ty, "</dataType><allowedValueRange>",
            "<minimum>", $min, "</minimum><maximum>", $max, "</maximum></allowedValueRange></stateVariable>\r\n"
        )
    };
}

macro_rules! scpd_doc {
    ($actions:expr, $vars:expr) => {
        concat!(
            "<?xml version=\"1.0\"?>\r\n<scpd xmlns=\"urn:schemas-upnp-org:service-1-0\">\r\n",
            "<specVersion><major>1</major><minor>0</minor></specVersion>\r\n<actionList>\r\n",
            $actions,
            "</actionList>\r\n<serviceStateTable>\r\n",
            $vars,
            "</serviceStateTable>\r\n</scpd>\r\n"
        )
    };
}

/// WANIPConnection:1 as implemented: the actions [`super::soap`] answers (AddAnyPortMapping is answered too, as
/// IGDv2 clients call it, but a :1 document does not list it).
const SCPD_IP: &str = scpd_doc!(
    concat!(
        action!("GetConnectionTypeInfo":
            arg!("NewConnectionType", "out", "ConnectionType"),
            arg!("NewPossibleConnectionTypes", "out", "PossibleConnectionTypes"),
        ),
        action!("GetStatusInfo":
            arg!("NewConnectionStatus", "out", "ConnectionStatus"),
            arg!("NewLastConnectionError", "out", "LastConnectionError"),
            arg!("NewUptime", "out", "Uptime"),
        ),
        action!("GetNATRSIPStatus":
            arg!("NewRSIPAvailable", "out", "RSIPAvailable"),
            arg!("NewNATEnabled", "out", "NATEnabled"),
        ),
        action!("GetGenericPortMappingEntry":
            arg!("NewPortMappingIndex", "in", "PortMappingNumberOfEntries"),
            arg!("NewRemoteHost", "out", "RemoteHost"),
            arg!("NewExternalPort", "out", "ExternalPort"),
            arg!("NewProtocol", "out", "PortMappingProtocol"),
            arg!("NewInternalPort", "out", "InternalPort"),
            arg!("NewInternalClient", "out", "InternalClient"),
            arg!("NewEnabled", "out", "PortMappingEnabled"),
            arg!("NewPortMappingDescription", "out", "PortMappingDescription"),
            arg!("NewLeaseDuration", "out", "PortMappingLeaseDuration"),
        ),
        action!("GetSpecificPortMappingEntry":
            arg!("NewRemoteHost", "in", "RemoteHost"),
            arg!("NewExternalPort", "in", "ExternalPort"),
            arg!("NewProtocol", "in", "PortMappingProtocol"),
            arg!("NewInternalPort", "out", "InternalPort"),
            arg!("NewInternalClient", "out", "InternalClient"),
            arg!("NewEnabled", "out", "PortMappingEnabled"),
            arg!("NewPortMappingDescription", "out", "PortMappingDescription"),
            arg!("NewLeaseDuration", "out", "PortMappingLeaseDuration"),
        ),
        action!("AddPortMapping":
            arg!("NewRemoteHost", "in", "RemoteHost"),
            arg!("NewExternalPort", "in", "ExternalPort"),
            arg!("NewProtocol", "in", "PortMappingProtocol"),
            arg!("NewInternalPort", "in", "InternalPort"),
            arg!("NewInternalClient", "in", "InternalClient"),
            arg!("NewEnabled", "in", "PortMappingEnabled"),
            arg!("NewPortMappingDescription", "in", "PortMappingDescription"),
            arg!("NewLeaseDuration", "in", "PortMappingLeaseDuration"),
        ),
        action!("DeletePortMapping":
            arg!("NewRemoteHost", "in", "RemoteHost"),
            arg!("NewExternalPort", "in", "ExternalPort"),
            arg!("NewProtocol", "in", "PortMappingProtocol"),
        ),
        action!("GetExternalIPAddress":
            arg!("NewExternalIPAddress", "out", "ExternalIPAddress"),
        ),
    ),
    concat!(
        var!("ConnectionType", "string"),
        var!("PossibleConnectionTypes", "string", ["Unconfigured", "IP_Routed", "IP_Bridged"]),
        var!(
            "ConnectionStatus",
            "string",
            ["Unconfigured", "Connecting", "Connected", "PendingDisconnect", "Disconnecting", "Disconnected"]
        ),
        var!("Uptime", "ui4"),
        var!("LastConnectionError", "string", ["ERROR_NONE"]),
        var!("RSIPAvailable", "boolean"),
        var!("NATEnabled", "boolean"),
        var!("ExternalIPAddress", "string"),
        var!("PortMappingNumberOfEntries", "ui2"),
        var!("PortMappingEnabled", "boolean"),
        var!("PortMappingLeaseDuration", "ui4", "0"..="604800"),
        var!("RemoteHost", "string"),
        var!("ExternalPort", "ui2"),
        var!("InternalPort", "ui2", "1"..="65535"),
        var!("PortMappingProtocol", "string", ["TCP", "UDP"]),
        var!("InternalClient", "string"),
        var!("PortMappingDescription", "string"),
    )
);

/// WANCommonInterfaceConfig:1: link properties and the WAN's counters.
const SCPD_CIF: &str = scpd_doc!(
    concat!(
        action!("GetCommonLinkProperties":
            arg!("NewWANAccessType", "out", "WANAccessType"),
            arg!("NewLayer1UpstreamMaxBitRate", "out", "Layer1UpstreamMaxBitRate"),
            arg!("NewLayer1DownstreamMaxBitRate", "out", "Layer1DownstreamMaxBitRate"),
            arg!("NewPhysicalLinkStatus", "out", "PhysicalLinkStatus"),
        ),
        action!("GetTotalBytesSent": arg!("NewTotalBytesSent", "out", "TotalBytesSent")),
        action!("GetTotalBytesReceived": arg!("NewTotalBytesReceived", "out", "TotalBytesReceived")),
        action!("GetTotalPacketsSent": arg!("NewTotalPacketsSent", "out", "TotalPacketsSent")),
        action!("GetTotalPacketsReceived": arg!("NewTotalPacketsReceived", "out", "TotalPacketsReceived")),
    ),
    concat!(
        var!("WANAccessType", "string", ["DSL", "POTS", "Cable", "Ethernet"]),
        var!("Layer1UpstreamMaxBitRate", "ui4"),
        var!("Layer1DownstreamMaxBitRate", "ui4"),
        var!("PhysicalLinkStatus", "string", ["Up", "Down"]),
        var!("TotalBytesSent", "ui4"),
        var!("TotalBytesReceived", "ui4"),
        var!("TotalPacketsSent", "ui4"),
        var!("TotalPacketsReceived", "ui4"),
    )
);

#[cfg(test)]
mod tests {
    use super::super::tests::cfg;
    use super::*;
    use quick_xml::events::Event;
    use quick_xml::reader::Reader;

    /// (path of local element names joined by '/', text) for every element with text; fails on anything
    /// ill-formed or on a DTD.
    fn texts(doc: &str) -> Vec<(String, String)> {
        let mut r = Reader::from_str(doc);
        let (mut path, mut text, mut out) = (Vec::<String>::new(), String::new(), Vec::new());
        loop {
            match r.read_event().expect("well-formed") {
                Event::Start(e) => {
                    path.push(e.local_name().as_ref().to_string());
                    text.clear();
                }
                Event::End(_) => {
                    if !text.trim().is_empty() {
                        out.push((path.join("/"), std::mem::take(&mut text)));
                    }
                    text.clear();
                    path.pop();
                }
                Event::Text(t) => text.push_str(&t.xml10_content()),
                Event::GeneralRef(g) => text.push_str(quick_xml::escape::resolve_xml_entity(&g).expect("predefined")),
                Event::DocType(_) => panic!("no DTD in our documents"),
                Event::Eof => break,
                _ => {}
            }
        }
        assert!(path.is_empty());
        out
    }

    fn values<'a>(t: &'a [(String, String)], path: &str) -> Vec<&'a str> {
        t.iter().filter(|(p, _)| p == path).map(|(_, v)| v.as_str()).collect()
    }

    #[test]
    fn root_description_is_the_tree_miniupnpc_looks_for() {
        let c = cfg();
        let doc = root_description(&c);
        let t = texts(&doc);
        assert_eq!(values(&t, "root/device/deviceType"), [DEVICE_IGD]);
        assert_eq!(values(&t, "root/device/UDN"), [c.udn(Device::Root)]);
        assert_eq!(values(&t, "root/device/deviceList/device/deviceType"), [DEVICE_WAN]);
        assert_eq!(values(&t, "root/device/deviceList/device/UDN"), [c.udn(Device::Wan)]);
        let wan_services = "root/device/deviceList/device/serviceList/service";
        assert_eq!(values(&t, &format!("{wan_services}/serviceType")), [SERVICE_CIF]);
        assert_eq!(values(&t, &format!("{wan_services}/controlURL")), [CONTROL_PATH_CIF]);
        assert_eq!(values(&t, &format!("{wan_services}/SCPDURL")), [SCPD_PATH_CIF]);
        let wcd = "root/device/deviceList/device/deviceList/device";
        assert_eq!(values(&t, &format!("{wcd}/deviceType")), [DEVICE_WAN_CONNECTION]);
        assert_eq!(values(&t, &format!("{wcd}/UDN")), [c.udn(Device::WanConnection)]);
        assert_eq!(values(&t, &format!("{wcd}/serviceList/service/serviceType")), [SERVICE_IP]);
        assert_eq!(values(&t, &format!("{wcd}/serviceList/service/controlURL")), [CONTROL_PATH_IP]);
        assert_eq!(values(&t, &format!("{wcd}/serviceList/service/SCPDURL")), [SCPD_PATH_IP]);
        // Every device has what UDA requires.
        for d in ["root/device", "root/device/deviceList/device", wcd] {
            for field in ["friendlyName", "manufacturer", "modelName"] {
                assert_eq!(values(&t, &format!("{d}/{field}")).len(), 1, "{d}/{field}");
            }
        }
        assert!(values(&t, "root/device/presentationURL").is_empty());
        // miniupnpc keeps whitespace next to a value as part of it.
        assert!(!doc.contains("> ") && !doc.contains(" <"));
        assert!(doc.contains(&format!("<controlURL>{CONTROL_PATH_IP}</controlURL>")));
    }

    #[test]
    fn hostile_config_text_is_escaped() {
        let mut c = cfg();
        c.presentation_url = Some("http://192.168.1.1/?a=1&b=<script>".into());
        c.uuid = "abc</UDN><evil/>".into();
        let doc = root_description(&c);
        let t = texts(&doc);
        assert_eq!(values(&t, "root/device/presentationURL"), ["http://192.168.1.1/?a=1&b=<script>"]);
        assert_eq!(values(&t, "root/device/UDN"), ["uuid:abcUDNevil"]);
    }

    /// (argument, direction, related state variable)
    type Argument = (String, String, String);

    /// (action, its arguments) and the state variables, read back from an SCPD.
    fn scpd_parts(doc: &str) -> (Vec<(String, Vec<Argument>)>, Vec<String>) {
        let t = texts(doc);
        let (mut actions, mut vars) = (Vec::new(), Vec::new());
        let mut arg = (String::new(), String::new());
        for (p, v) in t {
            match p.as_str() {
                "scpd/actionList/action/name" => actions.push((v, Vec::new())),
                "scpd/actionList/action/argumentList/argument/name" => arg.0 = v,
                "scpd/actionList/action/argumentList/argument/direction" => arg.1 = v,
                "scpd/actionList/action/argumentList/argument/relatedStateVariable" => {
                    let a: &mut (String, Vec<_>) = actions.last_mut().unwrap();
                    a.1.push((std::mem::take(&mut arg.0), std::mem::take(&mut arg.1), v));
                }
                "scpd/serviceStateTable/stateVariable/name" => vars.push(v),
                _ => {}
            }
        }
        (actions, vars)
    }

    #[test]
    fn scpds_are_well_formed_and_consistent() {
        for (path, expect) in [
            (
                SCPD_PATH_IP,
                &[
                    "GetConnectionTypeInfo",
                    "GetStatusInfo",
                    "GetNATRSIPStatus",
                    "GetGenericPortMappingEntry",
                    "GetSpecificPortMappingEntry",
                    "AddPortMapping",
                    "DeletePortMapping",
                    "GetExternalIPAddress",
                ][..],
            ),
            (
                SCPD_PATH_CIF,
                &[
                    "GetCommonLinkProperties",
                    "GetTotalBytesSent",
                    "GetTotalBytesReceived",
                    "GetTotalPacketsSent",
                    "GetTotalPacketsReceived",
                ][..],
            ),
        ] {
            let doc = scpd(path).unwrap();
            let (actions, vars) = scpd_parts(doc);
            let names: Vec<&str> = actions.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, expect);
            for (action, args) in &actions {
                assert!(!args.is_empty(), "{action}");
                for (name, dir, var) in args {
                    assert!(name.starts_with("New"), "{action}/{name}");
                    assert!(dir == "in" || dir == "out", "{action}/{name}");
                    assert!(vars.contains(var), "{action}/{name}: {var}");
                }
            }
        }
        let (ip, _) = scpd_parts(SCPD_IP);
        let add = &ip.iter().find(|(n, _)| n == "AddPortMapping").unwrap().1;
        let add: Vec<&str> = add.iter().map(|(n, _, _)| n.as_str()).collect();
        // The order miniupnpc sends them in.
        assert_eq!(
            add,
            [
                "NewRemoteHost",
                "NewExternalPort",
                "NewProtocol",
                "NewInternalPort",
                "NewInternalClient",
                "NewEnabled",
                "NewPortMappingDescription",
                "NewLeaseDuration"
            ]
        );
        assert_eq!(scpd("/nope.xml"), None);
        assert_eq!(scpd(super::super::ROOT_DESC_PATH), None);
    }
}
