//! SOAP control (UDA 1.1 section 3) of WANIPConnection (at [`CONTROL_PATH_IP`]) and WANCommonInterfaceConfig
//! (at [`CONTROL_PATH_CIF`]): fed one POST (path, SOAPAction header, body) and who sent it, it returns the HTTP
//! status and the body to answer with. It parses and checks what UPnP requires, applies UPnP's lease rule, and
//! leaves every port decision to the [`Mapper`].
//!
//! Contract with the shell: read at most [`MAX_BODY`] bytes of body (answer 413 without calling in when the
//! Content-Length says more), pass the `SOAPAction` header as received (quotes and all), and answer with
//! `status`, `Content-Type:` [`CONTENT_TYPE`](super::CONTENT_TYPE) and `body` (404 comes with an empty body).
//!
//! Choices where the specs or clients leave room:
//! - Faults are HTTP 500 with the standard `s:Fault`/`UPnPError` body, except a DOCTYPE (HTTP 400, fault 402:
//!   no DTD is ever read, so no entity bombs or external entities) and an oversized body (HTTP 413, fault 501).
//!   Malformed XML, a body over [`MAX_DEPTH`] deep or [`MAX_ELEMENTS`] elements, an unknown entity reference and
//!   an argument with child elements are 402 Invalid Args; a well-formed envelope without a known action is 401.
//!   Only the five predefined entities and character references are expanded. A bare `&` in text is taken as
//!   itself: miniupnpc sends argument values unescaped.
//! - The envelope's prefixes are not checked (`s:`, `SOAP-ENV:`, none), only local names: `Envelope`, then
//!   `Body` (a `Header` is ignored), whose first element is the action. Its namespace, when there is one, and the
//!   SOAPAction header, when present, must name a service type served at the path (WANIPConnection:1 or :2,
//!   WANCommonInterfaceConfig:1), and the header's action must be the body's, else 401. The answer uses the
//!   service type the client used.
//! - Secure mode: NewInternalClient must be the sender (empty means the sender, as miniupnpd does); another
//!   address is 606 Action not authorized (IGDv2's code; miniupnpd's v1 mode says 718, which a client would
//!   read as "port taken" and retry elsewhere, pointlessly).
//! - NewRemoteHost must be empty or `*`, else 726. NewExternalPort 0 in AddPortMapping is 716
//!   WildCardNotPermittedInExtPort; in AddAnyPortMapping it means any port. NewInternalPort 0 is 402.
//! - NewLeaseDuration 0 or over a week is a week ([`MAX_LEASE_SECS`]), for v1 clients too.
//! - NewEnabled 0 (a disabled mapping, which the router does not keep) removes the client's mapping of that
//!   port, if any, and succeeds: no traffic is forwarded, as the client asked.
//! - NewPortMappingDescription: control characters dropped, cut to [`MAX_DESCRIPTION`] bytes, escaped in every
//!   answer.
//! - GetExternalIPAddress without a WAN address answers an empty string (IGDv2 2.3.13; miniupnpd does the
//!   same), GetStatusInfo says Disconnected then (so miniupnpc's UPNP_GetValidIGD reports "not connected").
//! - The WAN counters are ui4: they roll over at 2^32, as the spec says.
//!
//! [`MAX_LEASE_SECS`]: super::MAX_LEASE_SECS

use super::{CONTROL_PATH_CIF, CONTROL_PATH_IP, MAX_LEASE_SECS, SERVICE_CIF, SERVICE_IP, UpnpConfig, xml_text};
use crate::ports::mapping::{Granted, MapError, MapRequest, Mapper, Origin, Transport};
use crate::types::Time;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use quick_xml::reader::NsReader;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// Larger bodies are refused unread (a real request is under 1 KiB).
pub const MAX_BODY: usize = 16 * 1024;
/// An envelope is 4 deep (Envelope/Body/action/argument); a little room for headers.
pub const MAX_DEPTH: usize = 16;
/// AddPortMapping has 11 elements.
pub const MAX_ELEMENTS: usize = 256;
pub const MAX_DESCRIPTION: usize = 256;

const SERVICE_IP_2: &str = "urn:schemas-upnp-org:service:WANIPConnection:2";
const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";

/// The answer: HTTP `status` and `body`, always `text/xml; charset="utf-8"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SoapReply {
    pub status: u16,
    pub body: String,
    /// The UPnP error code when `body` is a fault (for counters and logs).
    pub fault: Option<u16>,
}

/// The WAN's figures for WANCommonInterfaceConfig and GetStatusInfo, read by the shell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub packets_sent: u64,
    pub packets_received: u64,
    /// Seconds the WAN connection has been up (GetStatusInfo's NewUptime).
    pub uptime_secs: u64,
    /// The WAN link's speed in bit/s (GetCommonLinkProperties' Layer1 rates); 0 when unknown.
    pub max_bit_rate_up: u32,
    pub max_bit_rate_down: u32,
}

/// A UPnP error: code and the standard description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fault(u16, &'static str);

const INVALID_ACTION: Fault = Fault(401, "Invalid Action");
const INVALID_ARGS: Fault = Fault(402, "Invalid Args");
const ACTION_FAILED: Fault = Fault(501, "Action Failed");
const NOT_AUTHORIZED: Fault = Fault(606, "Action not authorized");
const INDEX_INVALID: Fault = Fault(713, "SpecifiedArrayIndexInvalid");
const NO_SUCH_ENTRY: Fault = Fault(714, "NoSuchEntryInArray");
const WILDCARD_EXTERNAL_PORT: Fault = Fault(716, "WildCardNotPermittedInExtPort");
const CONFLICT: Fault = Fault(718, "ConflictInMappingEntry");
const REMOTE_HOST_WILDCARD: Fault = Fault(726, "RemoteHostOnlySupportsWildcard");
const NO_PORT_MAPS: Fault = Fault(728, "NoPortMapsAvailable");

fn map_fault(e: MapError) -> Fault {
    match e {
        MapError::Conflict { .. } => CONFLICT,
        MapError::NoResources(_) | MapError::Quota(_) => NO_PORT_MAPS,
        MapError::NotAuthorized(_) => NOT_AUTHORIZED,
        MapError::NoWan => ACTION_FAILED,
        MapError::NoSuchEntry => NO_SUCH_ENTRY,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Service {
    /// WANIPConnection.
    Ip,
    /// WANCommonInterfaceConfig.
    Cif,
}

impl Service {
    /// The service type named by a namespace or SOAPAction, if it is one served here (the answer echoes it).
    fn accepts(self, ty: &str) -> Option<&'static str> {
        let ours: &[&'static str] = match self {
            Service::Ip => &[SERVICE_IP, SERVICE_IP_2],
            Service::Cif => &[SERVICE_CIF],
        };
        ours.iter().copied().find(|t| *t == ty)
    }

    fn default_type(self) -> &'static str {
        match self {
            Service::Ip => SERVICE_IP,
            Service::Cif => SERVICE_CIF,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    GetConnectionTypeInfo,
    GetStatusInfo,
    GetNatRsipStatus,
    GetExternalIpAddress,
    AddPortMapping,
    AddAnyPortMapping,
    DeletePortMapping,
    GetGenericPortMappingEntry,
    GetSpecificPortMappingEntry,
    GetCommonLinkProperties,
    GetTotalBytesSent,
    GetTotalBytesReceived,
    GetTotalPacketsSent,
    GetTotalPacketsReceived,
}

const ACTIONS: [(&str, Action, Service); 14] = [
    ("GetConnectionTypeInfo", Action::GetConnectionTypeInfo, Service::Ip),
    ("GetStatusInfo", Action::GetStatusInfo, Service::Ip),
    ("GetNATRSIPStatus", Action::GetNatRsipStatus, Service::Ip),
    ("GetExternalIPAddress", Action::GetExternalIpAddress, Service::Ip),
    ("AddPortMapping", Action::AddPortMapping, Service::Ip),
    ("AddAnyPortMapping", Action::AddAnyPortMapping, Service::Ip),
    ("DeletePortMapping", Action::DeletePortMapping, Service::Ip),
    ("GetGenericPortMappingEntry", Action::GetGenericPortMappingEntry, Service::Ip),
    ("GetSpecificPortMappingEntry", Action::GetSpecificPortMappingEntry, Service::Ip),
    ("GetCommonLinkProperties", Action::GetCommonLinkProperties, Service::Cif),
    ("GetTotalBytesSent", Action::GetTotalBytesSent, Service::Cif),
    ("GetTotalBytesReceived", Action::GetTotalBytesReceived, Service::Cif),
    ("GetTotalPacketsSent", Action::GetTotalPacketsSent, Service::Cif),
    ("GetTotalPacketsReceived", Action::GetTotalPacketsReceived, Service::Cif),
];

/// Answers one control request. `client` is the TCP peer's address, `path` the request path (no query).
#[allow(clippy::too_many_arguments)]
pub fn handle(
    cfg: &UpnpConfig,
    mapper: &mut dyn Mapper,
    stats: &LinkStats,
    now: Time,
    client: Ipv4Addr,
    path: &str,
    soap_action: Option<&str>,
    body: &[u8],
) -> SoapReply {
    let service = match path {
        CONTROL_PATH_IP => Service::Ip,
        CONTROL_PATH_CIF => Service::Cif,
        _ => return SoapReply { status: 404, body: String::new(), fault: None },
    };
    if body.len() > MAX_BODY {
        return fault(413, ACTION_FAILED);
    }
    // The shell filters too; the core answers only its LAN whatever it is given.
    if !cfg.enabled || !cfg.lan.contains(&client) {
        return fault(500, NOT_AUTHORIZED);
    }
    let call = match std::str::from_utf8(body).map_err(|_| Bad::Malformed).and_then(parse) {
        Ok(c) => c,
        Err(Bad::DocType) => return fault(400, INVALID_ARGS),
        Err(Bad::Malformed) => return fault(500, INVALID_ARGS),
        Err(Bad::NoAction) => return fault(500, INVALID_ACTION),
    };
    let (action, service_type) = match resolve(service, soap_action, &call) {
        Ok(a) => a,
        Err(f) => return fault(500, f),
    };
    // Two values for one argument: which one was meant is anyone's guess.
    for (i, (name, _)) in call.args.iter().enumerate() {
        if call.args[..i].iter().any(|(n, _)| n == name) {
            return fault(500, INVALID_ARGS);
        }
    }
    let args = Args(&call.args);
    match run(action, mapper, stats, now, client, &args) {
        Ok(out) => {
            let name = ACTIONS.iter().find(|(_, a, _)| *a == action).map_or("", |(n, _, _)| *n);
            let body = format!("{HEAD}<u:{name}Response xmlns:u=\"{service_type}\">{out}</u:{name}Response>{TAIL}");
            SoapReply { status: 200, body, fault: None }
        }
        Err(f) => fault(500, f),
    }
}

/// UPnP's lease rule (IGDv2, applied to every client): 0 ("infinite") or over a week is a week.
pub fn lease_secs(requested: u64) -> u32 {
    match u32::try_from(requested) {
        Ok(s) if s != 0 && s <= MAX_LEASE_SECS => s,
        _ => MAX_LEASE_SECS,
    }
}

const HEAD: &str = "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
                    s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>";
const TAIL: &str = "</s:Body></s:Envelope>\r\n";

fn fault(status: u16, Fault(code, description): Fault) -> SoapReply {
    let body = format!(
        "{HEAD}<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
         <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode>\
         <errorDescription>{description}</errorDescription></UPnPError></detail></s:Fault>{TAIL}"
    );
    SoapReply { status, body, fault: Some(code) }
}

/// The action, and the service type to answer with, from the body's action element and the SOAPAction header.
fn resolve(service: Service, soap_action: Option<&str>, call: &Call) -> Result<(Action, &'static str), Fault> {
    let (_, action, of) = ACTIONS.iter().find(|(n, _, _)| *n == call.action).ok_or(INVALID_ACTION)?;
    if *of != service {
        return Err(INVALID_ACTION);
    }
    let from_body = match &call.namespace {
        Some(ns) => Some(service.accepts(ns).ok_or(INVALID_ACTION)?),
        None => None,
    };
    let from_header = match soap_action.map(str::trim) {
        None => None,
        Some(h) => {
            // SOAP 1.1: the value is quoted; "" means "the request URI" (as good as no header).
            let h = h.strip_prefix('"').and_then(|h| h.strip_suffix('"')).unwrap_or(h).trim();
            if h.is_empty() {
                None
            } else {
                let (ty, name) = h.rsplit_once('#').ok_or(INVALID_ACTION)?;
                if name != call.action {
                    return Err(INVALID_ACTION);
                }
                Some(service.accepts(ty).ok_or(INVALID_ACTION)?)
            }
        }
    };
    Ok((*action, from_body.or(from_header).unwrap_or(service.default_type())))
}

fn run(
    action: Action,
    mapper: &mut dyn Mapper,
    stats: &LinkStats,
    now: Time,
    client: Ipv4Addr,
    args: &Args,
) -> Result<String, Fault> {
    let wan = mapper.external_ip();
    let ui4 = |v: u64| v & 0xFFFF_FFFF;
    let out = match action {
        Action::GetConnectionTypeInfo => "<NewConnectionType>IP_Routed</NewConnectionType>\
             <NewPossibleConnectionTypes>IP_Routed</NewPossibleConnectionTypes>"
            .to_string(),
        Action::GetStatusInfo => {
            let (status, uptime) = match wan {
                Some(_) => ("Connected", stats.uptime_secs.min(u64::from(u32::MAX))),
                None => ("Disconnected", 0),
            };
            format!(
                "<NewConnectionStatus>{status}</NewConnectionStatus>\
                 <NewLastConnectionError>ERROR_NONE</NewLastConnectionError><NewUptime>{uptime}</NewUptime>"
            )
        }
        Action::GetNatRsipStatus => "<NewRSIPAvailable>0</NewRSIPAvailable><NewNATEnabled>1</NewNATEnabled>".into(),
        Action::GetExternalIpAddress => {
            let ip = wan.map(|ip| ip.to_string()).unwrap_or_default();
            format!("<NewExternalIPAddress>{ip}</NewExternalIPAddress>")
        }
        Action::AddPortMapping => add(mapper, now, client, args, false)?,
        Action::AddAnyPortMapping => add(mapper, now, client, args, true)?,
        Action::DeletePortMapping => {
            let (external_port, transport) = (port(args, "NewExternalPort")?, protocol(args)?);
            remote_host(args)?;
            if external_port == 0 {
                return Err(INVALID_ARGS);
            }
            mapper.unmap_external(now, client, transport, external_port).map_err(map_fault)?;
            String::new()
        }
        Action::GetSpecificPortMappingEntry => {
            let (external_port, transport) = (port(args, "NewExternalPort")?, protocol(args)?);
            remote_host(args)?;
            if external_port == 0 {
                return Err(INVALID_ARGS);
            }
            let g = mapper.by_external(now, Origin::Upnp, transport, external_port).ok_or(NO_SUCH_ENTRY)?;
            format!(
                "<NewInternalPort>{}</NewInternalPort><NewInternalClient>{}</NewInternalClient>\
                 <NewEnabled>1</NewEnabled><NewPortMappingDescription>{}</NewPortMappingDescription>\
                 <NewLeaseDuration>{}</NewLeaseDuration>",
                g.internal_port,
                g.internal_ip,
                xml_text(&g.description),
                g.lifetime_secs
            )
        }
        Action::GetGenericPortMappingEntry => {
            let index = args.trimmed("NewPortMappingIndex").and_then(digits).ok_or(INVALID_ARGS)?;
            // Past the end: 713, which is how miniupnpc's `upnpc -l` knows the list is over.
            let index = usize::try_from(index).map_err(|_| INDEX_INVALID)?;
            let g = mapper.nth(now, Origin::Upnp, index).ok_or(INDEX_INVALID)?;
            entry(&g)
        }
        Action::GetCommonLinkProperties => {
            let link = if wan.is_some() { "Up" } else { "Down" };
            format!(
                "<NewWANAccessType>Ethernet</NewWANAccessType>\
                 <NewLayer1UpstreamMaxBitRate>{}</NewLayer1UpstreamMaxBitRate>\
                 <NewLayer1DownstreamMaxBitRate>{}</NewLayer1DownstreamMaxBitRate>\
                 <NewPhysicalLinkStatus>{link}</NewPhysicalLinkStatus>",
                stats.max_bit_rate_up, stats.max_bit_rate_down
            )
        }
        Action::GetTotalBytesSent => format!("<NewTotalBytesSent>{}</NewTotalBytesSent>", ui4(stats.bytes_sent)),
        Action::GetTotalBytesReceived => {
            format!("<NewTotalBytesReceived>{}</NewTotalBytesReceived>", ui4(stats.bytes_received))
        }
        Action::GetTotalPacketsSent => {
            format!("<NewTotalPacketsSent>{}</NewTotalPacketsSent>", ui4(stats.packets_sent))
        }
        Action::GetTotalPacketsReceived => {
            format!("<NewTotalPacketsReceived>{}</NewTotalPacketsReceived>", ui4(stats.packets_received))
        }
    };
    Ok(out)
}

/// AddPortMapping (`any` false: exactly the port asked, else 718) and AddAnyPortMapping (`any`: another port
/// when it is taken, answered as NewReservedPort).
fn add(mapper: &mut dyn Mapper, now: Time, client: Ipv4Addr, args: &Args, any: bool) -> Result<String, Fault> {
    let external_port = port(args, "NewExternalPort")?;
    let transport = protocol(args)?;
    let internal_port = port(args, "NewInternalPort")?;
    let internal_ip = match args.trimmed("NewInternalClient") {
        None | Some("") => client,
        Some(s) => s.parse::<Ipv4Addr>().map_err(|_| INVALID_ARGS)?,
    };
    let enabled = match args.trimmed("NewEnabled") {
        None => true,
        Some(s) => boolean(s).ok_or(INVALID_ARGS)?,
    };
    let lease = match args.trimmed("NewLeaseDuration") {
        None | Some("") => 0,
        Some(s) => digits(s).ok_or(INVALID_ARGS)?,
    };
    let description = description(args.get("NewPortMappingDescription").unwrap_or(""));
    if internal_port == 0 {
        return Err(INVALID_ARGS);
    }
    remote_host(args)?;
    if external_port == 0 && !any {
        return Err(WILDCARD_EXTERNAL_PORT);
    }
    // Secure mode: a device maps ports to itself only.
    if internal_ip != client {
        return Err(NOT_AUTHORIZED);
    }
    let reserved = |port: u16| if any { format!("<NewReservedPort>{port}</NewReservedPort>") } else { String::new() };
    if !enabled {
        if external_port == 0 {
            return Err(INVALID_ARGS);
        }
        return match mapper.unmap_external(now, client, transport, external_port) {
            Ok(()) | Err(MapError::NoSuchEntry) => Ok(reserved(external_port)),
            Err(e) => Err(map_fault(e)),
        };
    }
    let req = MapRequest {
        origin: Origin::Upnp,
        client,
        internal_ip,
        transport,
        internal_port,
        external_port,
        any_port: any,
        lifetime_secs: lease_secs(lease),
        description,
        nonce: [0; 12],
    };
    let granted = mapper.map(now, &req).map_err(map_fault)?;
    // AddPortMapping's answer names no port: the client believes it has the one it asked for, so anything else
    // is a refusal (the Mapper should never do it; see mapping.rs).
    if !any && granted.external_port != external_port {
        return Err(CONFLICT);
    }
    Ok(reserved(granted.external_port))
}

/// GetGenericPortMappingEntry's answer.
fn entry(g: &Granted) -> String {
    let mut s = String::with_capacity(512);
    let proto = match g.transport {
        Transport::Tcp => "TCP",
        Transport::Udp => "UDP",
    };
    let _ = write!(
        s,
        "<NewRemoteHost></NewRemoteHost><NewExternalPort>{}</NewExternalPort><NewProtocol>{proto}</NewProtocol>\
         <NewInternalPort>{}</NewInternalPort><NewInternalClient>{}</NewInternalClient><NewEnabled>1</NewEnabled>\
         <NewPortMappingDescription>{}</NewPortMappingDescription><NewLeaseDuration>{}</NewLeaseDuration>",
        g.external_port,
        g.internal_port,
        g.internal_ip,
        xml_text(&g.description),
        g.lifetime_secs
    );
    s
}

/// The arguments as (local name, text), in order.
struct Args<'a>(&'a [(String, String)]);

impl Args<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// Without the XML whitespace around it (everything but the description).
    fn trimmed(&self, name: &str) -> Option<&str> {
        self.get(name).map(|v| v.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n')))
    }
}

/// A required ui2: decimal digits only, 0..=65535.
fn port(args: &Args, name: &str) -> Result<u16, Fault> {
    let v = args.trimmed(name).and_then(digits).ok_or(INVALID_ARGS)?;
    u16::try_from(v).map_err(|_| INVALID_ARGS)
}

fn protocol(args: &Args) -> Result<Transport, Fault> {
    match args.trimmed("NewProtocol") {
        Some(p) if p.eq_ignore_ascii_case("TCP") => Ok(Transport::Tcp),
        Some(p) if p.eq_ignore_ascii_case("UDP") => Ok(Transport::Udp),
        _ => Err(INVALID_ARGS),
    }
}

/// Only the wildcard (empty, or `*` as some clients say; missing is taken as empty).
fn remote_host(args: &Args) -> Result<(), Fault> {
    match args.trimmed("NewRemoteHost") {
        None | Some("" | "*") => Ok(()),
        Some(_) => Err(REMOTE_HOST_WILDCARD),
    }
}

/// Decimal digits (no sign), saturating: a lease of 10^30 is simply "over a week".
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |n, b| n.saturating_mul(10).saturating_add(u64::from(b - b'0'))))
}

/// UPnP's boolean: 0/1, false/true, no/yes.
fn boolean(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

/// The description as kept: no control characters (line breaks become spaces), at most MAX_DESCRIPTION bytes.
fn description(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| if matches!(c, '\t' | '\r' | '\n') { ' ' } else { c })
        .filter(|&c| !c.is_control() && c != '\u{FFFE}' && c != '\u{FFFF}')
        .collect();
    if s.len() > MAX_DESCRIPTION {
        let cut = (0..=MAX_DESCRIPTION).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s.truncate(cut);
    }
    s
}

/// The action element of a request.
#[derive(Debug)]
struct Call {
    /// Local name.
    action: String,
    /// Its namespace, when it has one (the service type).
    namespace: Option<String>,
    /// Its children: (local name, text with references resolved).
    args: Vec<(String, String)>,
}

#[derive(Debug, PartialEq, Eq)]
enum Bad {
    DocType,
    Malformed,
    NoAction,
}

fn parse(body: &str) -> Result<Call, Bad> {
    let mut r = NsReader::from_str(body);
    let c = r.config_mut();
    c.expand_empty_elements = true;
    c.check_end_names = true;
    c.allow_dangling_amp = true;
    r.resolver_mut().set_max_namespace_bindings(32);

    let (mut depth, mut elements) = (0usize, 0usize);
    let (mut envelope, mut body_seen, mut in_body) = (false, false, false);
    let mut call: Option<Call> = None;
    let mut arg: Option<(String, String)> = None;
    loop {
        let (ns, event) = r.read_resolved_event().map_err(|_| Bad::Malformed)?;
        match event {
            // No DTD is read, ever: that is where entity bombs and external entities live.
            Event::DocType(_) => return Err(Bad::DocType),
            Event::Start(e) => {
                depth += 1;
                elements += 1;
                if depth > MAX_DEPTH || elements > MAX_ELEMENTS {
                    return Err(Bad::Malformed);
                }
                let local = e.local_name();
                let local = local.as_ref();
                match depth {
                    1 if !envelope && local == "Envelope" => envelope = true,
                    1 => return Err(Bad::Malformed),
                    2 if local == "Body" => {
                        if body_seen {
                            return Err(Bad::Malformed);
                        }
                        (body_seen, in_body) = (true, true);
                    }
                    3 if in_body => {
                        if call.is_some() {
                            return Err(Bad::Malformed);
                        }
                        // An action without a namespace of its own inherits a default one from the envelope.
                        let namespace = match ns {
                            ResolveResult::Bound(n) if n.as_ref() != SOAP_ENV => Some(n.as_ref().to_string()),
                            _ => None,
                        };
                        call = Some(Call { action: local.to_string(), namespace, args: Vec::new() });
                    }
                    4 if in_body => arg = Some((local.to_string(), String::new())),
                    // An argument is text: one with children is not an argument UPnP defines.
                    _ if in_body => return Err(Bad::Malformed),
                    // Inside a SOAP Header (ignored) or another envelope child.
                    _ => {}
                }
            }
            Event::End(_) => {
                if in_body
                    && depth == 4
                    && let (Some(a), Some(c)) = (arg.take(), call.as_mut())
                {
                    c.args.push(a);
                }
                if depth == 2 {
                    in_body = false;
                }
                depth = depth.saturating_sub(1);
            }
            Event::Text(t) => {
                if let Some((_, v)) = arg.as_mut() {
                    v.push_str(&t.xml10_content());
                }
            }
            Event::CData(t) => {
                if let Some((_, v)) = arg.as_mut() {
                    v.push_str(&t.xml10_content());
                }
            }
            Event::GeneralRef(g) => {
                // The five predefined entities and character references; nothing else exists without a DTD.
                let ch = match g.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => quick_xml::escape::resolve_xml_entity(&g).ok_or(Bad::Malformed)?.to_string(),
                    Err(_) => return Err(Bad::Malformed),
                };
                if let Some((_, v)) = arg.as_mut() {
                    v.push_str(&ch);
                }
            }
            Event::Eof => break,
            Event::Empty(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
        }
    }
    if depth != 0 || !envelope || !body_seen {
        return Err(Bad::Malformed);
    }
    call.ok_or(Bad::NoAction)
}

#[cfg(test)]
mod tests {
    use super::super::tests::cfg;
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const NOW: Time = Time::from_unix_ms(1_700_000_000_000);
    const ME: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
    const OTHER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 60);
    const WAN: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
    const IP2: &str = "urn:schemas-upnp-org:service:WANIPConnection:2";

    /// A small Mapper: one table, ports per (transport, external port), a per-client cap.
    struct Fake {
        wan: Option<Ipv4Addr>,
        maps: Vec<Granted>,
        cap: usize,
        requests: Vec<MapRequest>,
        /// When set, `map` grants this external port whatever was asked (a misbehaving Mapper).
        force_port: Option<u16>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake { wan: Some(WAN), maps: Vec::new(), cap: 8, requests: Vec::new(), force_port: None }
        }

        fn holder(&self, t: Transport, port: u16) -> Option<usize> {
            self.maps.iter().position(|g| g.transport == t && g.external_port == port)
        }
    }

    impl Mapper for Fake {
        fn external_ip(&self) -> Option<Ipv4Addr> {
            self.wan
        }

        fn epoch_secs(&self, _: Time) -> u32 {
            0
        }

        fn map(&mut self, _: Time, req: &MapRequest) -> Result<Granted, MapError> {
            self.requests.push(req.clone());
            let wan = self.wan.ok_or(MapError::NoWan)?;
            let mut port = self.force_port.unwrap_or(req.external_port);
            if let Some(i) = self.holder(req.transport, port).filter(|_| port != 0) {
                if self.maps[i].internal_ip == req.client {
                    let g = &mut self.maps[i];
                    (g.internal_port, g.lifetime_secs, g.description) =
                        (req.internal_port, req.lifetime_secs, req.description.clone());
                    return Ok(g.clone());
                }
                if !req.any_port {
                    return Err(MapError::Conflict { port, why: "another device's".into() });
                }
                port = 0;
            }
            if self.maps.iter().filter(|g| g.internal_ip == req.client).count() >= self.cap {
                return Err(MapError::Quota(self.cap));
            }
            if port == 0 {
                port = (1024..=65535)
                    .find(|&p| self.holder(req.transport, p).is_none())
                    .ok_or_else(|| MapError::NoResources("full".into()))?;
            }
            let g = Granted {
                origin: Origin::Upnp,
                transport: req.transport,
                internal_ip: req.internal_ip,
                internal_port: req.internal_port,
                external_ip: wan,
                external_port: port,
                lifetime_secs: req.lifetime_secs,
                description: req.description.clone(),
                nonce: [0; 12],
            };
            self.maps.push(g.clone());
            Ok(g)
        }

        fn unmap_internal(
            &mut self,
            _: Time,
            _: Origin,
            _: Ipv4Addr,
            _: Transport,
            _: u16,
            _: Option<[u8; 12]>,
        ) -> Result<usize, MapError> {
            unreachable!("UPnP deletes by external port")
        }

        fn unmap_external(&mut self, _: Time, client: Ipv4Addr, t: Transport, port: u16) -> Result<(), MapError> {
            let i = self.holder(t, port).ok_or(MapError::NoSuchEntry)?;
            if self.maps[i].internal_ip != client {
                return Err(MapError::NotAuthorized("not yours".into()));
            }
            self.maps.remove(i);
            Ok(())
        }

        fn by_external(&self, _: Time, origin: Origin, t: Transport, port: u16) -> Option<Granted> {
            self.holder(t, port).map(|i| self.maps[i].clone()).filter(|g| g.origin == origin)
        }

        fn nth(&self, _: Time, origin: Origin, index: usize) -> Option<Granted> {
            self.maps.iter().filter(|g| g.origin == origin).nth(index).cloned()
        }
    }

    /// A request exactly as miniupnpc's simpleUPnPcommand writes it: `s:` envelope, `u:` action, values as given
    /// (miniupnpc does not escape them), an empty action element for no arguments.
    fn request(service: &str, action: &str, args: &[(&str, &str)]) -> String {
        let mut s = format!(
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body><u:{action} xmlns:u=\"{service}\">"
        );
        for (n, v) in args {
            let _ = write!(s, "<{n}>{v}</{n}>");
        }
        let _ = write!(s, "</u:{action}></s:Body></s:Envelope>\r\n");
        s
    }

    fn stats() -> LinkStats {
        LinkStats {
            bytes_sent: (1 << 32) + 5,
            bytes_received: 12_345,
            packets_sent: 77,
            packets_received: 88,
            uptime_secs: 3600,
            max_bit_rate_up: 100_000_000,
            max_bit_rate_down: 1_000_000_000,
        }
    }

    /// As upnpc would: POST to the service's control URL with SOAPAction "service#action", from ME.
    fn call(m: &mut Fake, service: &str, action: &str, args: &[(&str, &str)]) -> SoapReply {
        call_from(m, ME, service, action, args)
    }

    fn call_from(m: &mut Fake, from: Ipv4Addr, service: &str, action: &str, args: &[(&str, &str)]) -> SoapReply {
        let path = if service.contains("WANCommonInterfaceConfig") { CONTROL_PATH_CIF } else { CONTROL_PATH_IP };
        let header = format!("\"{service}#{action}\"");
        handle(&cfg(), m, &stats(), NOW, from, path, Some(&header), request(service, action, args).as_bytes())
    }

    /// Leaf elements' text by local name, as miniupnpc's ParseNameValue collects them (and a well-formedness check).
    fn values(body: &str) -> HashMap<String, String> {
        let mut r = quick_xml::reader::Reader::from_str(body);
        let (mut out, mut current) = (HashMap::new(), String::new());
        loop {
            match r.read_event().expect("our answers are well-formed") {
                Event::Start(e) => {
                    current = e.local_name().as_ref().to_string();
                    out.insert(current.clone(), String::new());
                }
                Event::End(_) => current.clear(),
                Event::Text(t) => {
                    out.entry(current.clone()).or_default().push_str(&t.xml10_content());
                }
                Event::GeneralRef(g) => {
                    let s = match g.resolve_char_ref().unwrap() {
                        Some(c) => c.to_string(),
                        None => quick_xml::escape::resolve_xml_entity(&g).expect("predefined").to_string(),
                    };
                    out.entry(current.clone()).or_default().push_str(&s);
                }
                Event::DocType(_) => panic!("no DTD"),
                Event::Eof => break,
                _ => {}
            }
        }
        out
    }

    fn ok(r: &SoapReply) -> HashMap<String, String> {
        assert_eq!((r.status, r.fault), (200, None), "{}", r.body);
        values(&r.body)
    }

    fn err(r: &SoapReply) -> u16 {
        assert_eq!(r.status, 500, "{}", r.body);
        let v = values(&r.body);
        assert_eq!(v["faultcode"], "s:Client");
        assert_eq!(v["faultstring"], "UPnPError");
        let code: u16 = v["errorCode"].parse().unwrap();
        assert_eq!(r.fault, Some(code));
        code
    }

    /// upnpc -a ME 8080 8080 TCP, with a description and a lease.
    fn add_args<'a>(
        ext: &'a str,
        int: &'a str,
        proto: &'a str,
        lease: &'a str,
        desc: &'a str,
    ) -> Vec<(&'a str, &'a str)> {
        vec![
            ("NewRemoteHost", ""),
            ("NewExternalPort", ext),
            ("NewProtocol", proto),
            ("NewInternalPort", int),
            ("NewInternalClient", "192.168.1.50"),
            ("NewEnabled", "1"),
            ("NewPortMappingDescription", desc),
            ("NewLeaseDuration", lease),
        ]
    }

    fn set(args: &mut [(&str, &'static str)], name: &str, value: &'static str) {
        args.iter_mut().find(|(n, _)| *n == name).unwrap().1 = value;
    }

    #[test]
    fn status_connection_type_and_external_address() {
        let mut m = Fake::new();
        let v = ok(&call(&mut m, SERVICE_IP, "GetStatusInfo", &[]));
        assert_eq!(v["NewConnectionStatus"], "Connected");
        assert_eq!(v["NewLastConnectionError"], "ERROR_NONE");
        assert_eq!(v["NewUptime"], "3600");
        assert!(v.contains_key("GetStatusInfoResponse"));
        let v = ok(&call(&mut m, SERVICE_IP, "GetConnectionTypeInfo", &[]));
        assert_eq!(
            (v["NewConnectionType"].as_str(), v["NewPossibleConnectionTypes"].as_str()),
            ("IP_Routed", "IP_Routed")
        );
        let v = ok(&call(&mut m, SERVICE_IP, "GetNATRSIPStatus", &[]));
        assert_eq!((v["NewRSIPAvailable"].as_str(), v["NewNATEnabled"].as_str()), ("0", "1"));
        let v = ok(&call(&mut m, SERVICE_IP, "GetExternalIPAddress", &[]));
        assert_eq!(v["NewExternalIPAddress"], "203.0.113.7");

        m.wan = None;
        let v = ok(&call(&mut m, SERVICE_IP, "GetStatusInfo", &[]));
        assert_eq!((v["NewConnectionStatus"].as_str(), v["NewUptime"].as_str()), ("Disconnected", "0"));
        let v = ok(&call(&mut m, SERVICE_IP, "GetExternalIPAddress", &[]));
        assert_eq!(v["NewExternalIPAddress"], "");
    }

    #[test]
    fn common_interface_config() {
        let mut m = Fake::new();
        let v = ok(&call(&mut m, SERVICE_CIF, "GetCommonLinkProperties", &[]));
        assert_eq!(v["NewWANAccessType"], "Ethernet");
        assert_eq!(v["NewLayer1UpstreamMaxBitRate"], "100000000");
        assert_eq!(v["NewLayer1DownstreamMaxBitRate"], "1000000000");
        assert_eq!(v["NewPhysicalLinkStatus"], "Up");
        // ui4: rolls over at 2^32.
        assert_eq!(ok(&call(&mut m, SERVICE_CIF, "GetTotalBytesSent", &[]))["NewTotalBytesSent"], "5");
        assert_eq!(ok(&call(&mut m, SERVICE_CIF, "GetTotalBytesReceived", &[]))["NewTotalBytesReceived"], "12345");
        assert_eq!(ok(&call(&mut m, SERVICE_CIF, "GetTotalPacketsSent", &[]))["NewTotalPacketsSent"], "77");
        assert_eq!(ok(&call(&mut m, SERVICE_CIF, "GetTotalPacketsReceived", &[]))["NewTotalPacketsReceived"], "88");
        m.wan = None;
        assert_eq!(ok(&call(&mut m, SERVICE_CIF, "GetCommonLinkProperties", &[]))["NewPhysicalLinkStatus"], "Down");
        // The answer names the service it was asked on.
        let r = call(&mut m, SERVICE_CIF, "GetTotalBytesSent", &[]);
        assert!(r.body.contains(&format!("<u:GetTotalBytesSentResponse xmlns:u=\"{SERVICE_CIF}\">")));
    }

    #[test]
    fn add_get_list_delete_as_upnpc_does() {
        let mut m = Fake::new();
        // upnpc -e "my app" -a 192.168.1.50 8080 18080 TCP
        let r = call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("18080", "8080", "TCP", "0", "my app"));
        let v = ok(&r);
        assert!(v.contains_key("AddPortMappingResponse"));
        assert_eq!(
            m.requests[0],
            MapRequest {
                origin: Origin::Upnp,
                client: ME,
                internal_ip: ME,
                transport: Transport::Tcp,
                internal_port: 8080,
                external_port: 18080,
                any_port: false,
                lifetime_secs: 604_800,
                description: "my app".into(),
                nonce: [0; 12],
            }
        );
        // upnpc then reads it back.
        let v = ok(&call(
            &mut m,
            SERVICE_IP,
            "GetSpecificPortMappingEntry",
            &[("NewRemoteHost", ""), ("NewExternalPort", "18080"), ("NewProtocol", "TCP")],
        ));
        assert_eq!(v["NewInternalClient"], "192.168.1.50");
        assert_eq!(v["NewInternalPort"], "8080");
        assert_eq!(v["NewEnabled"], "1");
        assert_eq!(v["NewPortMappingDescription"], "my app");
        assert_eq!(v["NewLeaseDuration"], "604800");

        // upnpc -l: index 0, 1, ... until 713.
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("5353", "5353", "UDP", "3600", "b")));
        let mut seen = Vec::new();
        for i in 0.. {
            let idx = i.to_string();
            let r = call(&mut m, SERVICE_IP, "GetGenericPortMappingEntry", &[("NewPortMappingIndex", &idx)]);
            if r.status != 200 {
                assert_eq!(err(&r), 713);
                break;
            }
            let v = values(&r.body);
            assert_eq!(v["NewRemoteHost"], "");
            assert_eq!(v["NewInternalClient"], "192.168.1.50");
            assert_eq!(v["NewEnabled"], "1");
            seen.push((
                v["NewProtocol"].clone(),
                v["NewExternalPort"].clone(),
                v["NewInternalPort"].clone(),
                v["NewLeaseDuration"].clone(),
            ));
        }
        assert_eq!(
            seen,
            [
                ("TCP".to_string(), "18080".to_string(), "8080".to_string(), "604800".to_string()),
                ("UDP".to_string(), "5353".to_string(), "5353".to_string(), "3600".to_string())
            ]
        );
        let huge = call(
            &mut m,
            SERVICE_IP,
            "GetGenericPortMappingEntry",
            &[("NewPortMappingIndex", "99999999999999999999999")],
        );
        assert_eq!(err(&huge), 713);
        assert_eq!(err(&call(&mut m, SERVICE_IP, "GetGenericPortMappingEntry", &[("NewPortMappingIndex", "-1")])), 402);
        assert_eq!(err(&call(&mut m, SERVICE_IP, "GetGenericPortMappingEntry", &[])), 402);

        // upnpc -d 18080 TCP, twice.
        let del = [("NewRemoteHost", ""), ("NewExternalPort", "18080"), ("NewProtocol", "TCP")];
        assert!(ok(&call(&mut m, SERVICE_IP, "DeletePortMapping", &del)).contains_key("DeletePortMappingResponse"));
        assert_eq!(err(&call(&mut m, SERVICE_IP, "DeletePortMapping", &del)), 714);
        let specific = [("NewRemoteHost", ""), ("NewExternalPort", "18080"), ("NewProtocol", "TCP")];
        assert_eq!(err(&call(&mut m, SERVICE_IP, "GetSpecificPortMappingEntry", &specific)), 714);
    }

    #[test]
    fn mapper_refusals_become_upnp_errors() {
        let mut m = Fake::new();
        ok(&call_from(&mut m, OTHER, SERVICE_IP, "AddPortMapping", &{
            let mut a = add_args("2222", "22", "TCP", "0", "x");
            set(&mut a, "NewInternalClient", "192.168.1.60");
            a
        }));
        // Another device's port: 718 for AddPortMapping ...
        let r = call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("2222", "22", "TCP", "0", "mine"));
        assert_eq!(err(&r), 718);
        // ... another port for AddAnyPortMapping (upnpc -n), answered as NewReservedPort.
        let r = call(&mut m, SERVICE_IP, "AddAnyPortMapping", &add_args("2222", "22", "TCP", "0", "mine"));
        assert_eq!(ok(&r)["NewReservedPort"], "1024");
        assert!(m.requests.last().unwrap().any_port);
        // Deleting it: refused by the Mapper, 606.
        let del = [("NewRemoteHost", ""), ("NewExternalPort", "2222"), ("NewProtocol", "TCP")];
        assert_eq!(err(&call(&mut m, SERVICE_IP, "DeletePortMapping", &del)), 606);
        // The cap: 728.
        m.cap = 1;
        assert_eq!(err(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("3333", "33", "TCP", "0", "x"))), 728);
        // No WAN: 501.
        m.wan = None;
        assert_eq!(err(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("4444", "44", "TCP", "0", "x"))), 501);
        // A Mapper granting another port than asked in AddPortMapping: the client cannot know, so 718.
        let mut m = Fake::new();
        m.force_port = Some(7000);
        assert_eq!(err(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("4444", "44", "TCP", "0", "x"))), 718);
    }

    #[test]
    fn any_port_mapping_with_wildcard() {
        let mut m = Fake::new();
        let r = call(&mut m, IP2, "AddAnyPortMapping", &add_args("0", "6000", "UDP", "60", ""));
        assert_eq!(ok(&r)["NewReservedPort"], "1024");
        assert!(r.body.contains(&format!("xmlns:u=\"{IP2}\"")));
        let req = m.requests.last().unwrap();
        assert_eq!((req.external_port, req.any_port, req.lifetime_secs), (0, true, 60));
    }

    #[test]
    fn arguments_are_checked() {
        let mut m = Fake::new();
        let cases: [(&str, &'static str, u16); 18] = [
            ("NewExternalPort", "0", 716),
            ("NewExternalPort", "65536", 402),
            ("NewExternalPort", "80a", 402),
            ("NewExternalPort", "+80", 402),
            ("NewExternalPort", "", 402),
            ("NewInternalPort", "0", 402),
            ("NewInternalPort", "-1", 402),
            ("NewProtocol", "ICMP", 402),
            ("NewProtocol", "", 402),
            ("NewInternalClient", "192.168.1.60", 606),
            ("NewInternalClient", "laptop.lan", 402),
            ("NewInternalClient", "192.168.1.050", 402),
            ("NewRemoteHost", "198.51.100.1", 726),
            ("NewEnabled", "maybe", 402),
            ("NewLeaseDuration", "-1", 402),
            ("NewLeaseDuration", "1.5", 402),
            ("NewLeaseDuration", "0x10", 402),
            ("NewInternalPort", "99999", 402),
        ];
        for (name, value, code) in cases {
            let mut a = add_args("8080", "8080", "TCP", "0", "x");
            set(&mut a, name, value);
            assert_eq!(err(&call(&mut m, SERVICE_IP, "AddPortMapping", &a)), code, "{name}={value:?}");
        }
        assert!(m.requests.is_empty(), "nothing refused reached the Mapper");
        // Missing required arguments.
        for missing in ["NewExternalPort", "NewProtocol", "NewInternalPort"] {
            let a: Vec<_> =
                add_args("8080", "8080", "TCP", "0", "x").into_iter().filter(|(n, _)| *n != missing).collect();
            assert_eq!(err(&call(&mut m, SERVICE_IP, "AddPortMapping", &a)), 402, "{missing}");
        }
        // Twice the same argument.
        let mut a = add_args("8080", "8080", "TCP", "0", "x");
        a.push(("NewExternalPort", "9090"));
        assert_eq!(err(&call(&mut m, SERVICE_IP, "AddPortMapping", &a)), 402);
        // Leniencies: lowercase protocol, "*" remote host, whitespace around numbers, empty or missing
        // NewInternalClient (the sender), missing optional arguments, unknown arguments.
        let mut a = add_args(" 8080 ", "8080", "tcp", "0", "x");
        set(&mut a, "NewRemoteHost", "*");
        set(&mut a, "NewInternalClient", "");
        set(&mut a, "NewEnabled", "true");
        a.push(("NewSomethingElse", "whatever"));
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &a));
        let req = m.requests.last().unwrap();
        assert_eq!((req.external_port, req.transport, req.internal_ip), (8080, Transport::Tcp, ME));
        let minimal = [("NewExternalPort", "9000"), ("NewProtocol", "UDP"), ("NewInternalPort", "9000")];
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &minimal));
        let req = m.requests.last().unwrap();
        assert_eq!((req.internal_ip, req.lifetime_secs, req.description.as_str()), (ME, 604_800, ""));
        // Delete and GetSpecific check theirs.
        for action in ["DeletePortMapping", "GetSpecificPortMappingEntry"] {
            for (ext, proto, host, code) in
                [("0", "TCP", "", 402), ("x", "TCP", "", 402), ("80", "SCTP", "", 402), ("80", "TCP", "10.0.0.1", 726)]
            {
                let a = [("NewRemoteHost", host), ("NewExternalPort", ext), ("NewProtocol", proto)];
                assert_eq!(err(&call(&mut m, SERVICE_IP, action, &a)), code, "{action} {ext} {proto} {host}");
            }
        }
    }

    #[test]
    fn lease_rule() {
        assert_eq!(lease_secs(0), 604_800);
        assert_eq!(lease_secs(1), 1);
        assert_eq!(lease_secs(604_800), 604_800);
        assert_eq!(lease_secs(604_801), 604_800);
        assert_eq!(lease_secs(10_000_000), 604_800);
        assert_eq!(lease_secs(u64::MAX), 604_800);
        let mut m = Fake::new();
        for (asked, got) in [
            ("0", 604_800),
            ("10000000", 604_800),
            ("3600", 3600),
            ("000120", 120),
            ("1".repeat(40).leak() as &str, 604_800),
        ] {
            ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("8080", "8080", "TCP", asked, "x")));
            assert_eq!(m.requests.last().unwrap().lifetime_secs, got, "{asked}");
        }
    }

    #[test]
    fn disabled_mapping_removes_the_clients_own() {
        let mut m = Fake::new();
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("8080", "8080", "TCP", "0", "x")));
        let mut a = add_args("8080", "8080", "TCP", "0", "x");
        set(&mut a, "NewEnabled", "0");
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &a));
        assert!(m.maps.is_empty());
        // Nothing to remove: still done.
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &a));
        // Another device's: not this client's to disable.
        ok(&call_from(&mut m, OTHER, SERVICE_IP, "AddPortMapping", &{
            let mut a = add_args("8080", "8080", "TCP", "0", "x");
            set(&mut a, "NewInternalClient", "192.168.1.60");
            a
        }));
        assert_eq!(err(&call(&mut m, SERVICE_IP, "AddPortMapping", &a)), 606);
        assert_eq!(m.maps.len(), 1);
        assert_eq!(m.requests.len(), 2, "a disabled mapping never asks for a port");
    }

    #[test]
    fn hostile_description_is_cleaned_capped_and_escaped() {
        let mut m = Fake::new();
        // miniupnpc sends the value unescaped; a well-behaved client escapes it. Both arrive as the same text.
        let a = add_args(
            "8080",
            "8080",
            "TCP",
            "0",
            "R&D &lt;b&gt; &amp;amp; &lt;/NewPortMappingDescription&gt;&#x41;&#66;]]&gt; &#7;x\ny",
        );
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &a));
        let kept = "R&D <b> &amp; </NewPortMappingDescription>AB]]> x y";
        assert_eq!(m.requests[0].description, kept);
        for r in [
            call(&mut m, SERVICE_IP, "GetGenericPortMappingEntry", &[("NewPortMappingIndex", "0")]),
            call(
                &mut m,
                SERVICE_IP,
                "GetSpecificPortMappingEntry",
                &[("NewExternalPort", "8080"), ("NewProtocol", "TCP")],
            ),
        ] {
            let v = ok(&r);
            assert_eq!(v["NewPortMappingDescription"], kept);
            assert!(!r.body.contains("<b>"));
        }
        // Whatever the Mapper holds (another protocol's text) is escaped and stripped on the way out too.
        m.maps[0].description = "a\u{0}b<c>\u{FFFF}".into();
        let v = ok(&call(&mut m, SERVICE_IP, "GetGenericPortMappingEntry", &[("NewPortMappingIndex", "0")]));
        assert_eq!(v["NewPortMappingDescription"], "ab<c>");
        // Capped at 256 bytes, on a character boundary.
        let long = "é".repeat(200);
        ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("9090", "9090", "TCP", "0", &long)));
        let d = &m.requests.last().unwrap().description;
        assert_eq!((d.len(), d.chars().count()), (256, 128));
    }

    #[test]
    fn who_may_ask() {
        let mut m = Fake::new();
        let body = request(SERVICE_IP, "GetExternalIPAddress", &[]);
        let outside = Ipv4Addr::new(10, 9, 8, 7);
        let r = handle(&cfg(), &mut m, &stats(), NOW, outside, CONTROL_PATH_IP, None, body.as_bytes());
        assert_eq!(err(&r), 606);
        let mut off = cfg();
        off.enabled = false;
        let r = handle(&off, &mut m, &stats(), NOW, ME, CONTROL_PATH_IP, None, body.as_bytes());
        assert_eq!(err(&r), 606);
        let r = handle(&cfg(), &mut m, &stats(), NOW, ME, "/ctl/Other", None, body.as_bytes());
        assert_eq!((r.status, r.body.as_str(), r.fault), (404, "", None));
    }

    #[test]
    fn actions_services_and_soapaction() {
        let mut m = Fake::new();
        let run = |m: &mut Fake, path: &str, header: Option<&str>, body: &str| {
            handle(&cfg(), m, &stats(), NOW, ME, path, header, body.as_bytes())
        };
        let body = request(SERVICE_IP, "GetExternalIPAddress", &[]);
        // No header; an empty header; the :2 type in the header; unquoted.
        for h in [
            None,
            Some("\"\""),
            Some(&*format!("\"{IP2}#GetExternalIPAddress\"")),
            Some(&*format!("{SERVICE_IP}#GetExternalIPAddress")),
        ] {
            ok(&run(&mut m, CONTROL_PATH_IP, h, &body));
        }
        // The header names another action, a type not served here, or no action.
        for h in [
            format!("\"{SERVICE_IP}#GetStatusInfo\""),
            format!("\"{SERVICE_CIF}#GetExternalIPAddress\""),
            "\"urn:schemas-upnp-org:service:WANPPPConnection:1#GetExternalIPAddress\"".to_string(),
            format!("\"{SERVICE_IP}\""),
        ] {
            assert_eq!(err(&run(&mut m, CONTROL_PATH_IP, Some(&h), &body)), 401, "{h}");
        }
        // Unknown actions, actions of the other service, foreign namespaces.
        assert_eq!(err(&call(&mut m, SERVICE_IP, "ForceTermination", &[])), 401);
        assert_eq!(err(&call(&mut m, SERVICE_IP, "QueryStateVariable", &[("varName", "ExternalIPAddress")])), 401);
        assert_eq!(err(&run(&mut m, CONTROL_PATH_IP, None, &request(SERVICE_IP, "GetTotalBytesSent", &[]))), 401);
        assert_eq!(err(&run(&mut m, CONTROL_PATH_CIF, None, &request(SERVICE_CIF, "GetStatusInfo", &[]))), 401);
        let foreign = request("urn:example:service:Other:1", "GetExternalIPAddress", &[]);
        assert_eq!(err(&run(&mut m, CONTROL_PATH_IP, None, &foreign)), 401);
        // The :2 namespace in the body is answered as :2.
        let r = run(&mut m, CONTROL_PATH_IP, None, &request(IP2, "GetExternalIPAddress", &[]));
        assert!(ok(&r).contains_key("NewExternalIPAddress"));
        assert!(r.body.contains(&format!("<u:GetExternalIPAddressResponse xmlns:u=\"{IP2}\">")));
    }

    #[test]
    fn other_envelope_spellings() {
        let mut m = Fake::new();
        let run =
            |m: &mut Fake, body: &str| handle(&cfg(), m, &stats(), NOW, ME, CONTROL_PATH_IP, None, body.as_bytes());
        // SOAP-ENV: prefix, a Header, comments, CDATA, self-closing empty argument, default namespace.
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><!-- hi --><SOAP-ENV:Envelope \
             xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Header><x:y xmlns:x=\"urn:x\">1</x:y>\
             </SOAP-ENV:Header><SOAP-ENV:Body><m:AddPortMapping xmlns:m=\"{SERVICE_IP}\"><NewRemoteHost/>\
             <NewExternalPort><![CDATA[8080]]></NewExternalPort><NewProtocol>TCP</NewProtocol>\
             <NewInternalPort>80</NewInternalPort><NewInternalClient>192.168.1.50</NewInternalClient>\
             <NewEnabled>1</NewEnabled><NewPortMappingDescription/><NewLeaseDuration>0</NewLeaseDuration>\
             </m:AddPortMapping></SOAP-ENV:Body></SOAP-ENV:Envelope>"
        );
        ok(&run(&mut m, &body));
        assert_eq!(m.requests.last().unwrap().external_port, 8080);
        let body = format!(
            "<Envelope xmlns=\"http://schemas.xmlsoap.org/soap/envelope/\"><Body>\
             <GetExternalIPAddress xmlns=\"{SERVICE_IP}\"/></Body></Envelope>"
        );
        ok(&run(&mut m, &body));
        // No namespace at all: the path's service.
        ok(&run(&mut m, "<Envelope><Body><GetExternalIPAddress/></Body></Envelope>"));
    }

    #[test]
    fn malformed_bodies() {
        let mut m = Fake::new();
        let run = |m: &mut Fake, body: &[u8]| handle(&cfg(), m, &stats(), NOW, ME, CONTROL_PATH_IP, None, body);
        let cases: [(&[u8], u16); 15] = [
            (b"", 402),
            (b"not xml at all", 402),
            (b"\xff\xfe<x/>", 402),
            (b"<s:Envelope xmlns:s=\"x\"><s:Body><u:GetStatusInfo/></s:Body>", 402),
            (b"<s:Envelope xmlns:s=\"x\"><s:Body><u:GetStatusInfo/></s:Bdy></s:Envelope>", 402),
            (b"<Body><GetStatusInfo/></Body>", 402),
            (b"<Envelope><Header/></Envelope>", 402),
            (b"<Envelope><Body/><Body/></Envelope>", 402),
            (b"<Envelope><Body/></Envelope><Envelope/>", 402),
            (b"<Envelope><Body><GetStatusInfo/><GetStatusInfo/></Body></Envelope>", 402),
            (b"<Envelope><Body><AddPortMapping><NewProtocol><b>TCP</b></NewProtocol></AddPortMapping></Body></Envelope>", 402),
            (b"<Envelope><Body><AddPortMapping><NewProtocol>&unknown;</NewProtocol></AddPortMapping></Body></Envelope>", 402),
            (b"<Envelope><Body><AddPortMapping><NewProtocol>&#0;</NewProtocol></AddPortMapping></Body></Envelope>", 402),
            (b"<Envelope><Body></Body></Envelope>", 401),
            (b"<Envelope><Body><u:GetStatusInfo xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\"></u:GetStatusInfo></Body></Envelope>", 200),
        ];
        for (body, code) in cases {
            let r = run(&mut m, body);
            if code == 200 {
                ok(&r);
            } else {
                assert_eq!(err(&r), code, "{}", String::from_utf8_lossy(body));
            }
        }
        // Predefined entities and character references resolve (TCP spelled with them).
        let body = request(
            SERVICE_IP,
            "AddPortMapping",
            &[("NewExternalPort", "1&#x30;&#48;0"), ("NewProtocol", "&#84;CP"), ("NewInternalPort", "1000")],
        );
        ok(&run(&mut m, body.as_bytes()));
        assert_eq!(m.requests.last().unwrap().external_port, 1000);
    }

    #[test]
    fn entity_bombs_and_external_entities_are_refused_unread() {
        let mut m = Fake::new();
        let run =
            |m: &mut Fake, body: &str| handle(&cfg(), m, &stats(), NOW, ME, CONTROL_PATH_IP, None, body.as_bytes());
        let mut bomb = String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n<!ENTITY lol \"lol\">\n");
        bomb.push_str("<!ENTITY lol1 \"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;\">\n");
        for i in 2..=9 {
            let p = i - 1;
            let _ = writeln!(bomb, "<!ENTITY lol{i} \"{}\">", format!("&lol{p};").repeat(10));
        }
        bomb.push_str("]>\n");
        bomb.push_str(&request(SERVICE_IP, "AddPortMapping", &add_args("8080", "80", "TCP", "0", "&lol9;"))[23..]);
        let r = run(&mut m, &bomb);
        assert_eq!(r.status, 400);
        assert_eq!(r.fault, Some(402));
        assert!(r.body.len() < 1000, "nothing expanded into the answer");
        let xxe = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>{}",
            &request(SERVICE_IP, "AddPortMapping", &add_args("8080", "80", "TCP", "0", "&xxe;"))[23..]
        );
        let r = run(&mut m, &xxe);
        assert_eq!((r.status, r.fault), (400, Some(402)));
        assert!(!r.body.contains("root:"));
        // Without a DTD, a reference to an undeclared entity is an error, never looked up.
        let r = run(&mut m, &request(SERVICE_IP, "AddPortMapping", &add_args("8080", "80", "TCP", "0", "&xxe;")));
        assert_eq!(err(&r), 402);
        assert!(m.requests.is_empty());
    }

    #[test]
    fn size_depth_and_count_limits() {
        let mut m = Fake::new();
        let run =
            |m: &mut Fake, body: &str| handle(&cfg(), m, &stats(), NOW, ME, CONTROL_PATH_IP, None, body.as_bytes());
        let mut big = request(SERVICE_IP, "GetStatusInfo", &[]);
        big.push_str(&" ".repeat(MAX_BODY));
        let r = run(&mut m, &big);
        assert_eq!((r.status, r.fault), (413, Some(501)));
        // Exactly MAX_BODY is read.
        let mut full = request(SERVICE_IP, "GetStatusInfo", &[]);
        full.push_str(&" ".repeat(MAX_BODY - full.len()));
        ok(&run(&mut m, &full));
        // Deep nesting (in a Header, where depth is otherwise allowed).
        let deep = format!(
            "<Envelope><Header>{}{}</Header><Body><GetStatusInfo/></Body></Envelope>",
            "<a>".repeat(MAX_DEPTH),
            "</a>".repeat(MAX_DEPTH)
        );
        assert_eq!(err(&run(&mut m, &deep)), 402);
        let shallow = format!(
            "<Envelope><Header>{}{}</Header><Body><GetStatusInfo/></Body></Envelope>",
            "<a>".repeat(MAX_DEPTH - 5),
            "</a>".repeat(MAX_DEPTH - 5)
        );
        ok(&run(&mut m, &shallow));
        let many = format!(
            "<Envelope><Header>{}</Header><Body><GetStatusInfo/></Body></Envelope>",
            "<a/>".repeat(MAX_ELEMENTS)
        );
        assert_eq!(err(&run(&mut m, &many)), 402);
        let many_args = request(SERVICE_IP, "GetStatusInfo", &vec![("x", "1"); MAX_ELEMENTS]);
        assert_eq!(err(&run(&mut m, &many_args)), 402);
    }

    proptest! {
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2048), cif in any::<bool>(), header in proptest::option::of("\\PC{0,60}")) {
            let mut m = Fake::new();
            let path = if cif { CONTROL_PATH_CIF } else { CONTROL_PATH_IP };
            let r = handle(&cfg(), &mut m, &stats(), NOW, ME, path, header.as_deref(), &body);
            prop_assert!(r.status == 200 || r.fault.is_some());
        }

        #[test]
        fn arbitrary_arguments_never_panic_and_answers_stay_well_formed(
            action in prop::sample::select(ACTIONS.iter().map(|(n, _, _)| *n).collect::<Vec<_>>()),
            args in proptest::collection::vec(("New[A-Za-z]{0,20}", "[ -~é&<>;#x0-9]{0,40}"), 0..10),
            description in "\\PC{0,300}",
        ) {
            let mut m = Fake::new();
            ok(&call(&mut m, SERVICE_IP, "AddPortMapping", &add_args("8080", "8080", "TCP", "0", "seed")));
            m.maps[0].description = description;
            let args: Vec<(&str, &str)> = args.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            let service = if ACTIONS.iter().any(|(n, _, s)| *n == action && *s == Service::Cif) { SERVICE_CIF } else { SERVICE_IP };
            let r = call(&mut m, service, action, &args);
            let _ = values(&r.body);
            let r = call(&mut m, SERVICE_IP, "GetGenericPortMappingEntry", &[("NewPortMappingIndex", "0")]);
            let _ = values(&r.body);
        }
    }
}
