//! The sans-IO NAT-PMP (RFC 6886) and PCP (RFC 6887: ANNOUNCE and MAP, IPv4 only) server, as it listens on UDP
//! 5351 of the router's LAN address. Fed a datagram, its source and the time, it returns the answer to send back to
//! the source, or why there is none. It parses, checks what the RFCs require, applies each protocol's lifetime
//! rules and encodes; every decision about ports is the [`Mapper`]'s. No sockets or clocks in here.
//!
//! Contract with the shell: send `Outcome::Answer` from `PORT` of the LAN address to `from`; count
//! `Outcome::Drop` by `label`. At start and whenever the WAN address changes or the mapping table is lost, multicast
//! [`natpmp_announcement`] and [`pcp_announce`] to 224.0.0.1:`CLIENT_PORT` (RFC 6886 3.2.1 asks for 10 of them,
//! 250 ms apart and doubling, each with a fresh epoch).
//!
//! Where the RFCs leave a choice:
//! - NAT-PMP requests longer than their format (2 or 12 bytes) are taken, the extra bytes ignored: RFC 6886 says
//!   nothing of them and ignores what it does not need (the Reserved field); the answer's size is fixed anyway.
//!   Datagrams over 1100 bytes (PCP's maximum, the shared port's) are dropped, which also bounds the echo of an
//!   unsupported opcode.
//! - A NAT-PMP answer to an unsupported opcode or version carries the 8-byte response header (op + 128, result,
//!   epoch) then the request's bytes from offset 8: "the entire request" of 3.5 and the epoch every packet carries
//!   (3.6) cannot both fill bytes 4-7. The opcode is the request's + 128 (errata 3618 only asks for the top bit), so
//!   a PCP client can match the answer to its request.
//! - Versions other than 0 and 2 get PCP's UNSUPP_VERSION naming version 2 (RFC 6887 9), or NAT-PMP's "unsupported
//!   version" naming 0 when PCP is off. With PCP off a PCP request also gets the NAT-PMP form: the client then falls
//!   back to NAT-PMP at once (RFC 6886 1.1), where NOT_AUTHORIZED would silence it for its 30-minute lifetime.
//! - NAT-PMP map with internal port 0 and a lifetime: result 2 (the format has no "malformed"). Delete with internal
//!   port 0 deletes all of the client's mappings of the transport whatever the external port (3.4: it is ignored).
//! - PCP MAP for "all ports" (internal port 0 with a lifetime) is NOT_AUTHORIZED: that would be a DMZ.
//! - PCP options that exist but are not valid for the opcode (any option on ANNOUNCE) are MALFORMED_OPTION. FILTER
//!   is mandatory-to-process and the NAT cannot filter by remote peer, so UNSUPP_OPTION. THIRD_PARTY never
//!   succeeds (a device maps only itself): naming the sender is MALFORMED_REQUEST (13.1), anything else
//!   NOT_AUTHORIZED. A success answer echoes PREFER_FAILURE, the one option it processed.
//! - PCP error lifetimes: 30 min for the long-lifetime errors (what RFC 6887 9 expects of one), 30 s for the short
//!   ones (NETWORK_FAILURE, NO_RESOURCES, USER_EX_QUOTA, CANNOT_PROVIDE_EXTERNAL: they may clear soon).
//! - A PCP delete answers external port 0 and address 0.0.0.0, as NAT-PMP's does (3.4).

use super::mapping::{MapError, MapRequest, Mapper, Origin, Transport};
use crate::bytes::{be16, be32, put32};
use crate::labels::labelled_enum;
use crate::types::Time;
use ipnet::Ipv4Net;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};

/// The server's port (requests).
pub const PORT: u16 = 5351;
/// The clients' port: announcements go to 224.0.0.1 on it.
pub const CLIENT_PORT: u16 = 5350;
/// Where announcements go (RFC 6886 3.2.1, RFC 6887 14.1.3).
pub const ANNOUNCE_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 1);
/// The longest PCP message (RFC 6887 7); also the longest datagram we look at.
pub const MAX_MESSAGE: usize = 1100;
/// PCP's lifetime bounds (RFC 6887 15: 2 minutes to 24 hours by default).
pub const PCP_MIN_LIFETIME: u32 = 120;
pub const PCP_MAX_LIFETIME: u32 = 86_400;
/// How long a PCP error answer holds: short-lifetime errors may clear soon, long ones will not (RFC 6887 7.4).
const SHORT_ERROR_SECS: u32 = 30;
const LONG_ERROR_SECS: u32 = 1800;

const NATPMP_VERSION: u8 = 0;
const PCP_VERSION: u8 = 2;
/// Top bit of the opcode byte: a response (NAT-PMP op >= 128, PCP's R bit).
const RESPONSE: u8 = 0x80;

const PMP_OP_ADDRESS: u8 = 0;
const PMP_OP_MAP_UDP: u8 = 1;
const PMP_OP_MAP_TCP: u8 = 2;
const PMP_MAP_LEN: usize = 12;

const PCP_OP_ANNOUNCE: u8 = 0;
const PCP_OP_MAP: u8 = 1;
const PCP_HEADER_LEN: usize = 24;
/// MAP's opcode-specific part: nonce, protocol, reserved, internal port, external port, external address.
const PCP_MAP_LEN: usize = 36;
const PCP_OPT_THIRD_PARTY: u8 = 1;
const PCP_OPT_PREFER_FAILURE: u8 = 2;
const PCP_OPT_FILTER: u8 = 3;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PmpConfig {
    pub natpmp: bool,
    pub pcp: bool,
    /// The LAN address we answer on.
    pub router: Ipv4Addr,
    pub lan: Ipv4Net,
}

impl PmpConfig {
    /// Both protocols on.
    pub fn new(router: Ipv4Addr, lan: Ipv4Net) -> PmpConfig {
        PmpConfig { natpmp: true, pcp: true, router, lan }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back to the source.
    Answer(Vec<u8>),
    Drop(Drop),
}

labelled_enum! {
    /// Why a datagram got no answer. `label`s are stable (counters, logs).
    pub enum Drop {
        /// Not from a device of the LAN (the WAN side is never answered, RFC 6886 3.3, RFC 6887 8.2), or from the
        /// router itself or the LAN's network or broadcast address.
        NotLan => "not_lan",
        /// Under 2 bytes, a NAT-PMP map under 12, a PCP message under its 24-byte header (RFC 6887 8.2).
        TooShort => "too_short",
        /// A NAT-PMP datagram over 1100 bytes (PCP's over-long messages get MALFORMED_REQUEST instead).
        TooLong => "too_long",
        /// A response (op >= 128, R bit): never answered, so two servers cannot ping-pong.
        NotARequest => "not_a_request",
        /// An unknown version while both protocols are off: there is no version to point the client to.
        Disabled => "disabled",
    }
}

impl Drop {
    pub fn label(&self) -> &'static str {
        self.as_str()
    }
}

/// NAT-PMP result codes (RFC 6886 3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PmpResult {
    Success = 0,
    UnsuppVersion = 1,
    NotAuthorized = 2,
    NetworkFailure = 3,
    OutOfResources = 4,
    UnsuppOpcode = 5,
}

/// PCP result codes (RFC 6887 7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PcpResult {
    Success = 0,
    UnsuppVersion = 1,
    NotAuthorized = 2,
    MalformedRequest = 3,
    UnsuppOpcode = 4,
    UnsuppOption = 5,
    MalformedOption = 6,
    NetworkFailure = 7,
    NoResources = 8,
    UnsuppProtocol = 9,
    UserExQuota = 10,
    CannotProvideExternal = 11,
    AddressMismatch = 12,
}

impl PcpResult {
    /// The Lifetime of an error answer: how long the client should expect the same answer (RFC 6887 7.2).
    fn error_lifetime(self) -> u32 {
        use PcpResult::*;
        match self {
            NetworkFailure | NoResources | UserExQuota | CannotProvideExternal => SHORT_ERROR_SECS,
            _ => LONG_ERROR_SECS,
        }
    }
}

/// Answers one datagram that arrived on `PORT` from `from`. `mapper` makes, renews and deletes the mappings; the
/// answer, if any, goes back to `from`.
pub fn handle(cfg: &PmpConfig, mapper: &mut dyn Mapper, now: Time, from: SocketAddrV4, datagram: &[u8]) -> Outcome {
    let client = *from.ip();
    if !is_lan_host(cfg, client) {
        return Outcome::Drop(Drop::NotLan);
    }
    let [version, op, ..] = *datagram else {
        return Outcome::Drop(Drop::TooShort);
    };
    // Before the version: a response in any version is never answered (RFC 6886 3.5, RFC 6887 8.2).
    if op & RESPONSE != 0 {
        return Outcome::Drop(Drop::NotARequest);
    }
    match version {
        NATPMP_VERSION => natpmp(cfg, mapper, now, client, datagram),
        PCP_VERSION if cfg.pcp || !cfg.natpmp => pcp(cfg, mapper, now, client, datagram),
        // PCP off: be a NAT-PMP-only server, whose "unsupported version" makes PCP clients fall back.
        PCP_VERSION => answer(pmp_header(op, PmpResult::UnsuppVersion, mapper.epoch_secs(now))),
        _ if cfg.pcp => answer(pcp_unsupported_version(datagram, mapper.epoch_secs(now))),
        _ if cfg.natpmp => answer(pmp_header(op, PmpResult::UnsuppVersion, mapper.epoch_secs(now))),
        _ => Outcome::Drop(Drop::Disabled),
    }
}

/// NAT-PMP's unsolicited external-address announcement (RFC 6886 3.2.1), sent to 224.0.0.1:5350 at start and on
/// change.
pub fn natpmp_announcement(epoch_secs: u32, external: Ipv4Addr) -> Vec<u8> {
    pmp_address(PmpResult::Success, epoch_secs, external)
}

/// PCP's unsolicited ANNOUNCE (RFC 6887 14.1.3), sent to 224.0.0.1:5350 when the mapping state was lost / at start.
/// The message carries no address (its 96 reserved bits are zero): `_router` is the address to send it from.
pub fn pcp_announce(epoch_secs: u32, _router: Ipv4Addr) -> Vec<u8> {
    let mut out = vec![0; PCP_HEADER_LEN];
    pcp_header(&mut out, PCP_OP_ANNOUNCE, PcpResult::Success, 0, epoch_secs);
    out
}

fn answer(bytes: Vec<u8>) -> Outcome {
    Outcome::Answer(bytes)
}

/// A device of the LAN: not the router, and not the network or broadcast address (spoofed or broken senders).
fn is_lan_host(cfg: &PmpConfig, ip: Ipv4Addr) -> bool {
    let lan = cfg.lan;
    let edge = lan.prefix_len() < 31 && (ip == lan.network() || ip == lan.broadcast());
    lan.contains(&ip) && ip != cfg.router && !edge
}

// ---- NAT-PMP ----

fn natpmp(cfg: &PmpConfig, mapper: &mut dyn Mapper, now: Time, client: Ipv4Addr, req: &[u8]) -> Outcome {
    if req.len() > MAX_MESSAGE {
        return Outcome::Drop(Drop::TooLong);
    }
    let op = req.get(1).copied().unwrap_or_default();
    match op {
        PMP_OP_ADDRESS => {
            let (result, external) = match (cfg.natpmp, mapper.external_ip()) {
                (false, _) => (PmpResult::NotAuthorized, Ipv4Addr::UNSPECIFIED),
                (true, Some(ip)) => (PmpResult::Success, ip),
                (true, None) => (PmpResult::NetworkFailure, Ipv4Addr::UNSPECIFIED),
            };
            answer(pmp_address(result, mapper.epoch_secs(now), external))
        }
        PMP_OP_MAP_UDP | PMP_OP_MAP_TCP => {
            if req.len() < PMP_MAP_LEN {
                return Outcome::Drop(Drop::TooShort);
            }
            // The Reserved bytes 2-3 are ignored (3.3).
            let (internal_port, suggested, lifetime) = (be16(req, 4), be16(req, 6), be32(req, 8));
            let transport = if op == PMP_OP_MAP_UDP { Transport::Udp } else { Transport::Tcp };
            let (result, external, granted) = if cfg.natpmp {
                natpmp_map(mapper, now, client, transport, internal_port, suggested, lifetime)
            } else {
                (PmpResult::NotAuthorized, 0, 0)
            };
            answer(pmp_map(op, result, mapper.epoch_secs(now), internal_port, external, granted))
        }
        _ => {
            // 3.5: the request comes back with the top bit set and result 5.
            let mut out = pmp_header(op, PmpResult::UnsuppOpcode, mapper.epoch_secs(now));
            out.extend_from_slice(req.get(out.len()..).unwrap_or_default());
            answer(out)
        }
    }
}

/// Creates, renews or deletes; returns (result, external port, lifetime) for the answer.
fn natpmp_map(
    mapper: &mut dyn Mapper,
    now: Time,
    client: Ipv4Addr,
    transport: Transport,
    internal_port: u16,
    suggested: u16,
    lifetime: u32,
) -> (PmpResult, u16, u32) {
    if lifetime == 0 {
        // 3.4: the suggested external port is ignored; internal port 0 deletes all the client's mappings of the
        // transport; deleting what does not exist succeeds (a retransmitted delete gets the same answer).
        let result = match mapper.unmap_internal(now, Origin::NatPmp, client, transport, internal_port, None) {
            Ok(_) | Err(MapError::NoSuchEntry) => PmpResult::Success,
            Err(e) => pmp_code(&e),
        };
        return (result, 0, 0);
    }
    if internal_port == 0 {
        return (PmpResult::NotAuthorized, 0, 0);
    }
    let req = MapRequest {
        origin: Origin::NatPmp,
        client,
        // 3.3: the source address is the internal address, always.
        internal_ip: client,
        transport,
        internal_port,
        external_port: suggested,
        // 3.3: "MUST return an available external port if possible".
        any_port: true,
        lifetime_secs: lifetime,
        description: String::new(),
        nonce: [0; 12],
    };
    match mapper.map(now, &req) {
        Ok(g) => (PmpResult::Success, g.external_port, g.lifetime_secs),
        Err(e) => (pmp_code(&e), 0, 0),
    }
}

fn pmp_code(e: &MapError) -> PmpResult {
    match e {
        MapError::NotAuthorized(_) | MapError::NoSuchEntry => PmpResult::NotAuthorized,
        MapError::NoWan => PmpResult::NetworkFailure,
        MapError::NoResources(_) | MapError::Quota(_) | MapError::Conflict { .. } => PmpResult::OutOfResources,
    }
}

/// Version 0, the opcode + 128, the result, the epoch: every NAT-PMP answer starts so.
fn pmp_header(op: u8, result: PmpResult, epoch: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    out.extend_from_slice(&[NATPMP_VERSION, op | RESPONSE]);
    out.extend_from_slice(&(result as u16).to_be_bytes());
    out.extend_from_slice(&epoch.to_be_bytes());
    out
}

fn pmp_address(result: PmpResult, epoch: u32, external: Ipv4Addr) -> Vec<u8> {
    let mut out = pmp_header(PMP_OP_ADDRESS, result, epoch);
    // 3.2: zero unless the result is success.
    let external = if result == PmpResult::Success { external } else { Ipv4Addr::UNSPECIFIED };
    out.extend_from_slice(&external.octets());
    out
}

fn pmp_map(op: u8, result: PmpResult, epoch: u32, internal: u16, external: u16, lifetime: u32) -> Vec<u8> {
    let mut out = pmp_header(op, result, epoch);
    out.extend_from_slice(&internal.to_be_bytes());
    out.extend_from_slice(&external.to_be_bytes());
    out.extend_from_slice(&lifetime.to_be_bytes());
    out
}

// ---- PCP ----

fn pcp(cfg: &PmpConfig, mapper: &mut dyn Mapper, now: Time, client: Ipv4Addr, req: &[u8]) -> Outcome {
    // RFC 6887 8.2, in its order.
    if req.len() < PCP_HEADER_LEN {
        return Outcome::Drop(Drop::TooShort);
    }
    let op = req.get(1).copied().unwrap_or_default() & !RESPONSE;
    let min = if op == PCP_OP_MAP { PCP_HEADER_LEN + PCP_MAP_LEN } else { PCP_HEADER_LEN };
    if req.len() > MAX_MESSAGE || !req.len().is_multiple_of(4) || req.len() < min {
        return answer(pcp_error(req, PcpResult::MalformedRequest, mapper.epoch_secs(now)));
    }
    // A NAT between the client and us would make the field differ from the source (ADDRESS_MISMATCH, 8.2).
    if req.get(8..24) != Some(&client.to_ipv6_mapped().octets()[..]) {
        return answer(pcp_error(req, PcpResult::AddressMismatch, mapper.epoch_secs(now)));
    }
    if !cfg.pcp {
        return answer(pcp_error(req, PcpResult::NotAuthorized, mapper.epoch_secs(now)));
    }
    let result = match op {
        PCP_OP_ANNOUNCE => pcp_options(op, client, req.get(PCP_HEADER_LEN..).unwrap_or_default()).map(|_| {
            // 14.1: success, lifetime 0, no opcode-specific data.
            let mut out = vec![0; PCP_HEADER_LEN];
            pcp_header(&mut out, op, PcpResult::Success, 0, mapper.epoch_secs(now));
            out
        }),
        PCP_OP_MAP => pcp_map(mapper, now, client, req),
        _ => Err(PcpResult::UnsuppOpcode),
    };
    answer(result.unwrap_or_else(|r| pcp_error(req, r, mapper.epoch_secs(now))))
}

/// What the options of a request asked for.
#[derive(Debug, Default)]
struct Options {
    prefer_failure: bool,
}

/// Walks the options in order (7.3); the first problem is the answer.
fn pcp_options(op: u8, client: Ipv4Addr, mut rest: &[u8]) -> Result<Options, PcpResult> {
    let mut opts = Options::default();
    while !rest.is_empty() {
        let [code, _reserved, hi, lo, body @ ..] = rest else {
            return Err(PcpResult::MalformedOption);
        };
        let len = usize::from(u16::from_be_bytes([*hi, *lo]));
        let data = body.get(..len).ok_or(PcpResult::MalformedOption)?;
        // The length leaves out the padding to a multiple of 4.
        rest = body.get(len.next_multiple_of(4)..).ok_or(PcpResult::MalformedOption)?;
        match *code {
            PCP_OPT_THIRD_PARTY | PCP_OPT_PREFER_FAILURE | PCP_OPT_FILTER if op != PCP_OP_MAP => {
                return Err(PcpResult::MalformedOption);
            }
            PCP_OPT_THIRD_PARTY if len != 16 => return Err(PcpResult::MalformedOption),
            // 13.1: naming oneself is malformed; naming another device is what secure mode refuses.
            PCP_OPT_THIRD_PARTY if data == client.to_ipv6_mapped().octets() => return Err(PcpResult::MalformedRequest),
            PCP_OPT_THIRD_PARTY => return Err(PcpResult::NotAuthorized),
            PCP_OPT_PREFER_FAILURE if len != 0 || opts.prefer_failure => return Err(PcpResult::MalformedOption),
            PCP_OPT_PREFER_FAILURE => opts.prefer_failure = true,
            // Mandatory-to-process (< 128), and the NAT cannot filter by remote peer.
            PCP_OPT_FILTER => return Err(PcpResult::UnsuppOption),
            c if c < 128 => return Err(PcpResult::UnsuppOption),
            // Optional-to-process and unknown: ignored.
            _ => {}
        }
    }
    Ok(opts)
}

/// MAP's opcode-specific fields (11.1).
struct MapFields {
    nonce: [u8; 12],
    protocol: u8,
    internal_port: u16,
    suggested_port: u16,
    suggested_ip: [u8; 16],
}

impl MapFields {
    fn parse(map: &[u8]) -> Option<MapFields> {
        Some(MapFields {
            nonce: map.get(..12)?.try_into().ok()?,
            protocol: *map.get(12)?,
            internal_port: u16::from_be_bytes(map.get(16..18)?.try_into().ok()?),
            suggested_port: u16::from_be_bytes(map.get(18..20)?.try_into().ok()?),
            suggested_ip: map.get(20..36)?.try_into().ok()?,
        })
    }
}

fn pcp_map(mapper: &mut dyn Mapper, now: Time, client: Ipv4Addr, req: &[u8]) -> Result<Vec<u8>, PcpResult> {
    let m = req.get(PCP_HEADER_LEN..).and_then(MapFields::parse).ok_or(PcpResult::MalformedRequest)?;
    let opts = pcp_options(PCP_OP_MAP, client, req.get(PCP_HEADER_LEN + PCP_MAP_LEN..).unwrap_or_default())?;
    let transport = match m.protocol {
        IPPROTO_TCP => Transport::Tcp,
        IPPROTO_UDP => Transport::Udp,
        // 0 is "all protocols": a whole-host mapping is not offered.
        _ => return Err(PcpResult::UnsuppProtocol),
    };
    let requested = req.get(4..8).and_then(|b| b.try_into().ok()).map_or(0, u32::from_be_bytes);
    if requested == 0 {
        // Delete (15): the nonce must be the mapping's; no mapping there is a success too.
        return match mapper.unmap_internal(now, Origin::Pcp, client, transport, m.internal_port, Some(m.nonce)) {
            Ok(_) => Ok(pcp_map_answer(mapper.epoch_secs(now), &m, 0, Ipv4Addr::UNSPECIFIED, 0, false)),
            Err(e) => Err(pcp_code(&e, false)),
        };
    }
    if m.internal_port == 0 {
        return Err(PcpResult::NotAuthorized);
    }
    // Without PREFER_FAILURE a suggested address we cannot give is just not given (11.3).
    if opts.prefer_failure && !suggested_ip_ok(mapper.external_ip(), m.suggested_ip) {
        return Err(PcpResult::CannotProvideExternal);
    }
    let map = MapRequest {
        origin: Origin::Pcp,
        client,
        internal_ip: client,
        transport,
        internal_port: m.internal_port,
        external_port: m.suggested_port,
        any_port: !opts.prefer_failure,
        lifetime_secs: requested.clamp(PCP_MIN_LIFETIME, PCP_MAX_LIFETIME),
        description: String::new(),
        nonce: m.nonce,
    };
    let g = mapper.map(now, &map).map_err(|e| pcp_code(&e, opts.prefer_failure))?;
    let epoch = mapper.epoch_secs(now);
    Ok(pcp_map_answer(epoch, &m, g.external_port, g.external_ip, g.lifetime_secs, opts.prefer_failure))
}

/// Whether the suggested external address can be had: none suggested (all zeros, or ::ffff:0.0.0.0), or ours.
/// An unknown WAN address passes here: the Mapper answers NoWan.
fn suggested_ip_ok(external: Option<Ipv4Addr>, suggested: [u8; 16]) -> bool {
    let ip = Ipv6Addr::from(suggested);
    match ip.to_ipv4_mapped() {
        _ if ip.is_unspecified() => true,
        Some(v4) => v4.is_unspecified() || external.is_none_or(|e| e == v4),
        // An IPv6 external address for an IPv4 device (NAT46): not something we do.
        None => false,
    }
}

fn pcp_code(e: &MapError, prefer_failure: bool) -> PcpResult {
    match e {
        // NoSuchEntry on a PCP delete is a nonce that does not match (15).
        MapError::NotAuthorized(_) | MapError::NoSuchEntry => PcpResult::NotAuthorized,
        MapError::NoWan => PcpResult::NetworkFailure,
        MapError::NoResources(_) => PcpResult::NoResources,
        MapError::Quota(_) => PcpResult::UserExQuota,
        // CANNOT_PROVIDE_EXTERNAL only answers PREFER_FAILURE (7.4).
        MapError::Conflict { .. } if prefer_failure => PcpResult::CannotProvideExternal,
        MapError::Conflict { .. } => PcpResult::NoResources,
    }
}

/// Writes the response header over `out[..24]`: version 2, R bit, result, lifetime, epoch. Bytes 12-23 are left
/// as they are (zero, or the request's when it was not parsed, 7.2).
fn pcp_header(out: &mut [u8], op: u8, result: PcpResult, lifetime: u32, epoch: u32) {
    if let Some(h) = out.get_mut(..PCP_HEADER_LEN) {
        h[0] = PCP_VERSION;
        h[1] = op | RESPONSE;
        h[2] = 0;
        h[3] = result as u8;
        put32(h, 4, lifetime);
        put32(h, 8, epoch);
    }
}

/// A MAP success answer: the request's nonce, protocol and internal port, what was assigned.
fn pcp_map_answer(
    epoch: u32,
    m: &MapFields,
    external_port: u16,
    external_ip: Ipv4Addr,
    lifetime: u32,
    prefer_failure: bool,
) -> Vec<u8> {
    let mut out = vec![0; PCP_HEADER_LEN];
    pcp_header(&mut out, PCP_OP_MAP, PcpResult::Success, lifetime, epoch);
    out.extend_from_slice(&m.nonce);
    out.extend_from_slice(&[m.protocol, 0, 0, 0]);
    out.extend_from_slice(&m.internal_port.to_be_bytes());
    out.extend_from_slice(&external_port.to_be_bytes());
    out.extend_from_slice(&external_ip.to_ipv6_mapped().octets());
    if prefer_failure {
        out.extend_from_slice(&[PCP_OPT_PREFER_FAILURE, 0, 0, 0]);
    }
    out
}

/// An error answer: "a complete copy of the request" (at most 1100 bytes, padded to a multiple of 4) with the
/// response header set. Its reserved bytes are zero unless the request could not be parsed (7.2).
fn pcp_error(req: &[u8], result: PcpResult, epoch: u32) -> Vec<u8> {
    let mut out = req.get(..MAX_MESSAGE).unwrap_or(req).to_vec();
    out.resize(out.len().next_multiple_of(4).max(PCP_HEADER_LEN), 0);
    if let Some(reserved) = out.get_mut(12..PCP_HEADER_LEN).filter(|_| result != PcpResult::MalformedRequest) {
        reserved.fill(0);
    }
    let op = req.get(1).copied().unwrap_or_default() & !RESPONSE;
    pcp_header(&mut out, op, result, result.error_lifetime(), epoch);
    out
}

/// UNSUPP_VERSION naming version 2 (9): the request's header, since its format beyond is unknown.
fn pcp_unsupported_version(req: &[u8], epoch: u32) -> Vec<u8> {
    let mut out = req.get(..PCP_HEADER_LEN).unwrap_or(req).to_vec();
    out.resize(PCP_HEADER_LEN, 0);
    let op = req.get(1).copied().unwrap_or_default() & !RESPONSE;
    pcp_header(&mut out, op, PcpResult::UnsuppVersion, PcpResult::UnsuppVersion.error_lifetime(), epoch);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::mapping::Granted;
    use proptest::prelude::*;

    const START: Time = Time::from_unix_secs(1_700_000_000);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 1);
    const EXTERNAL: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 2);
    const LAPTOP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 50);
    const PHONE: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 51);
    const NONCE: [u8; 12] = [7; 12];

    fn cfg() -> PmpConfig {
        PmpConfig::new(ROUTER, "192.168.1.0/24".parse().unwrap())
    }

    fn at(secs: u64) -> Time {
        START.plus_ms(secs * 1000)
    }

    /// `ports::core` in miniature: a list of mappings, ports held by others, a per-device cap.
    struct Fake {
        external: Option<Ipv4Addr>,
        maps: Vec<Granted>,
        /// External ports taken by something else (a forward, a local service).
        held: Vec<(Transport, u16)>,
        cap: usize,
        /// Every request `map` saw.
        asked: Vec<MapRequest>,
    }

    impl Fake {
        fn new() -> Fake {
            Fake { external: Some(EXTERNAL), maps: Vec::new(), held: Vec::new(), cap: 8, asked: Vec::new() }
        }

        fn free(&self, t: Transport, port: u16) -> bool {
            port != 0
                && !self.held.contains(&(t, port))
                && !self.maps.iter().any(|m| m.transport == t && m.external_port == port)
        }
    }

    impl Mapper for Fake {
        fn external_ip(&self) -> Option<Ipv4Addr> {
            self.external
        }

        fn epoch_secs(&self, now: Time) -> u32 {
            now.unix_secs().saturating_sub(START.unix_secs()) as u32
        }

        fn map(&mut self, _now: Time, req: &MapRequest) -> Result<Granted, MapError> {
            self.asked.push(req.clone());
            let external_ip = self.external.ok_or(MapError::NoWan)?;
            if req.internal_ip != req.client {
                return Err(MapError::NotAuthorized("another device".into()));
            }
            let same = |m: &Granted| {
                m.origin == req.origin
                    && m.internal_ip == req.client
                    && m.transport == req.transport
                    && m.internal_port == req.internal_port
            };
            if let Some(m) = self.maps.iter_mut().find(|m| same(m)) {
                if m.nonce != req.nonce {
                    return Err(MapError::NotAuthorized("nonce".into()));
                }
                m.lifetime_secs = req.lifetime_secs;
                return Ok(m.clone());
            }
            let mine = self.maps.iter().filter(|m| m.internal_ip == req.client).count();
            if mine >= self.cap {
                return Err(MapError::Quota(self.cap));
            }
            let port = if self.free(req.transport, req.external_port) {
                req.external_port
            } else if !req.any_port && req.external_port != 0 {
                return Err(MapError::Conflict { port: req.external_port, why: "held".into() });
            } else {
                (50_000..=u16::MAX)
                    .find(|&p| self.free(req.transport, p))
                    .ok_or_else(|| MapError::NoResources("full".into()))?
            };
            let g = Granted {
                origin: req.origin,
                transport: req.transport,
                internal_ip: req.client,
                internal_port: req.internal_port,
                external_ip,
                external_port: port,
                lifetime_secs: req.lifetime_secs,
                description: req.description.clone(),
                nonce: req.nonce,
            };
            self.maps.push(g.clone());
            Ok(g)
        }

        fn unmap_internal(
            &mut self,
            _now: Time,
            origin: Origin,
            client: Ipv4Addr,
            transport: Transport,
            internal_port: u16,
            nonce: Option<[u8; 12]>,
        ) -> Result<usize, MapError> {
            let hit = |m: &Granted| {
                m.origin == origin
                    && m.internal_ip == client
                    && m.transport == transport
                    && (internal_port == 0 || m.internal_port == internal_port)
            };
            if let Some(n) = nonce
                && self.maps.iter().any(|m| hit(m) && m.nonce != n)
            {
                return Err(MapError::NoSuchEntry);
            }
            let before = self.maps.len();
            self.maps.retain(|m| !hit(m));
            Ok(before - self.maps.len())
        }

        fn unmap_external(&mut self, _: Time, _: Ipv4Addr, _: Transport, _: u16) -> Result<(), MapError> {
            Err(MapError::NoSuchEntry)
        }

        fn by_external(&self, _: Time, origin: Origin, t: Transport, port: u16) -> Option<Granted> {
            self.maps.iter().find(|m| m.origin == origin && m.transport == t && m.external_port == port).cloned()
        }

        fn nth(&self, _: Time, origin: Origin, index: usize) -> Option<Granted> {
            self.maps.iter().filter(|m| m.origin == origin).nth(index).cloned()
        }
    }

    fn run(cfg: &PmpConfig, m: &mut Fake, now: Time, ip: Ipv4Addr, req: &[u8]) -> Outcome {
        handle(cfg, m, now, SocketAddrV4::new(ip, 54_321), req)
    }

    fn ask(cfg: &PmpConfig, m: &mut Fake, now: Time, ip: Ipv4Addr, req: &[u8]) -> Vec<u8> {
        match run(cfg, m, now, ip, req) {
            Outcome::Answer(a) => a,
            other => panic!("no answer: {other:?}"),
        }
    }

    fn pmp_map(op: u8, internal: u16, suggested: u16, lifetime: u32) -> Vec<u8> {
        let mut r = vec![0, op, 0, 0];
        r.extend_from_slice(&internal.to_be_bytes());
        r.extend_from_slice(&suggested.to_be_bytes());
        r.extend_from_slice(&lifetime.to_be_bytes());
        r
    }

    /// (result, epoch, internal port, external port, lifetime) of a NAT-PMP map answer.
    fn pmp_fields(a: &[u8]) -> (u16, u32, u16, u16, u32) {
        assert_eq!(a.len(), 16, "{a:?}");
        (be16(a, 2), be32(a, 4), be16(a, 8), be16(a, 10), be32(a, 12))
    }

    fn pcp_req(op: u8, lifetime: u32, client: Ipv4Addr, body: &[u8]) -> Vec<u8> {
        let mut r = vec![PCP_VERSION, op, 0, 0];
        r.extend_from_slice(&lifetime.to_be_bytes());
        r.extend_from_slice(&client.to_ipv6_mapped().octets());
        r.extend_from_slice(body);
        r
    }

    fn map_body(nonce: [u8; 12], protocol: u8, internal: u16, suggested: u16, ip: Ipv4Addr, opts: &[u8]) -> Vec<u8> {
        let mut b = nonce.to_vec();
        b.extend_from_slice(&[protocol, 0, 0, 0]);
        b.extend_from_slice(&internal.to_be_bytes());
        b.extend_from_slice(&suggested.to_be_bytes());
        b.extend_from_slice(&ip.to_ipv6_mapped().octets());
        b.extend_from_slice(opts);
        b
    }

    fn pcp_map(client: Ipv4Addr, lifetime: u32, internal: u16, suggested: u16, opts: &[u8]) -> Vec<u8> {
        pcp_req(
            PCP_OP_MAP,
            lifetime,
            client,
            &map_body(NONCE, IPPROTO_TCP, internal, suggested, Ipv4Addr::UNSPECIFIED, opts),
        )
    }

    /// (result, lifetime, epoch) of a PCP answer, checking its header.
    fn pcp_head(a: &[u8], op: u8) -> (u8, u32, u32) {
        assert!(a.len() >= PCP_HEADER_LEN && a.len().is_multiple_of(4), "{a:?}");
        assert_eq!((a[0], a[1], a[2]), (PCP_VERSION, op | RESPONSE, 0));
        (a[3], be32(a, 4), be32(a, 8))
    }

    /// (external port, external address) of a PCP MAP answer.
    fn pcp_assigned(a: &[u8]) -> (u16, Ipv4Addr) {
        let ip: [u8; 16] = a[44..60].try_into().unwrap();
        (be16(a, 42), Ipv6Addr::from(ip).to_ipv4_mapped().unwrap())
    }

    #[test]
    fn natpmp_external_address() {
        let mut m = Fake::new();
        let a = ask(&cfg(), &mut m, at(42), LAPTOP, &[0, 0]);
        assert_eq!(a, [0, 128, 0, 0, 0, 0, 0, 42, 203, 0, 113, 2]);
        // Trailing bytes are ignored.
        assert_eq!(ask(&cfg(), &mut m, at(42), LAPTOP, &[0, 0, 9, 9]), a);
        m.external = None;
        let a = ask(&cfg(), &mut m, at(43), LAPTOP, &[0, 0]);
        assert_eq!(a, [0, 128, 0, 3, 0, 0, 0, 43, 0, 0, 0, 0]);
    }

    #[test]
    fn natpmp_maps_udp_and_tcp() {
        let mut m = Fake::new();
        let a = ask(&cfg(), &mut m, at(5), LAPTOP, &pmp_map(PMP_OP_MAP_UDP, 5000, 5000, 7200));
        assert_eq!(a[..2], [0, 129]);
        assert_eq!(pmp_fields(&a), (0, 5, 5000, 5000, 7200));
        let a = ask(&cfg(), &mut m, at(6), LAPTOP, &pmp_map(PMP_OP_MAP_TCP, 8080, 0, 3600));
        assert_eq!(a[..2], [0, 130]);
        assert_eq!(pmp_fields(&a), (0, 6, 8080, 50_000, 3600));
        let r = &m.asked[1];
        assert_eq!((r.origin, r.client, r.internal_ip, r.transport), (Origin::NatPmp, LAPTOP, LAPTOP, Transport::Tcp));
        assert!(r.any_port);
        let kinds: Vec<_> = m.maps.iter().map(|g| (g.transport, g.internal_port, g.external_port)).collect();
        assert_eq!(kinds, [(Transport::Udp, 5000, 5000), (Transport::Tcp, 8080, 50_000)]);
    }

    #[test]
    fn natpmp_renewal_keeps_the_port() {
        let mut m = Fake::new();
        m.held.push((Transport::Tcp, 22));
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_TCP, 22, 22, 7200));
        // The port asked for is held: another one, not an error (3.3).
        assert_eq!(pmp_fields(&a), (0, 1, 22, 50_000, 7200));
        // The renewal asks for what was assigned, or anything: the same mapping either way.
        for suggested in [50_000, 0, 22] {
            let a = ask(&cfg(), &mut m, at(3600), LAPTOP, &pmp_map(PMP_OP_MAP_TCP, 22, suggested, 7200));
            assert_eq!(pmp_fields(&a), (0, 3600, 22, 50_000, 7200));
        }
        assert_eq!(m.maps.len(), 1);
    }

    #[test]
    fn natpmp_deletes_one() {
        let mut m = Fake::new();
        ask(&cfg(), &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_UDP, 5000, 5000, 7200));
        ask(&cfg(), &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_UDP, 5001, 5001, 7200));
        // A delete's suggested port is ignored; the answer has external port 0 and lifetime 0 (3.4).
        let a = ask(&cfg(), &mut m, at(2), LAPTOP, &pmp_map(PMP_OP_MAP_UDP, 5000, 1234, 0));
        assert_eq!(pmp_fields(&a), (0, 2, 5000, 0, 0));
        assert_eq!(m.maps.iter().map(|g| g.internal_port).collect::<Vec<_>>(), [5001]);
        // Again: the same answer, though nothing is left to delete.
        assert_eq!(ask(&cfg(), &mut m, at(2), LAPTOP, &pmp_map(PMP_OP_MAP_UDP, 5000, 0, 0)), a);
        assert_eq!(m.maps.len(), 1);
    }

    #[test]
    fn natpmp_deletes_all_of_a_transport() {
        let mut m = Fake::new();
        for (ip, op, port) in [(LAPTOP, 1, 5000), (LAPTOP, 1, 5001), (LAPTOP, 2, 80), (PHONE, 1, 6000)] {
            ask(&cfg(), &mut m, at(1), ip, &pmp_map(op, port, port, 7200));
        }
        let a = ask(&cfg(), &mut m, at(2), LAPTOP, &pmp_map(PMP_OP_MAP_UDP, 0, 0, 0));
        assert_eq!(pmp_fields(&a), (0, 2, 0, 0, 0));
        let left: Vec<_> = m.maps.iter().map(|g| (g.internal_ip, g.internal_port)).collect();
        assert_eq!(left, [(LAPTOP, 80), (PHONE, 6000)]);
    }

    #[test]
    fn natpmp_errors_map_to_result_codes() {
        let mut m = Fake::new();
        // A mapping needs an internal port.
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_TCP, 0, 80, 7200));
        assert_eq!(pmp_fields(&a), (2, 1, 0, 0, 0));
        m.cap = 0;
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_TCP, 80, 80, 7200));
        assert_eq!(pmp_fields(&a), (4, 1, 80, 0, 0));
        m.external = None;
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_TCP, 80, 80, 7200));
        assert_eq!(pmp_fields(&a), (3, 1, 80, 0, 0));
        // An unsupported opcode: the request comes back with the top bit and result 5, the epoch in bytes 4-7.
        let a = ask(&cfg(), &mut m, at(9), LAPTOP, &[0, 3, 0, 0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(a, [0, 131, 0, 5, 0, 0, 0, 9, 5, 6]);
        assert_eq!(ask(&cfg(), &mut m, at(9), LAPTOP, &[0, 127]), [0, 255, 0, 5, 0, 0, 0, 9]);
    }

    #[test]
    fn disabled_protocols_refuse() {
        let mut m = Fake::new();
        let natpmp_off = PmpConfig { natpmp: false, ..cfg() };
        assert_eq!(ask(&natpmp_off, &mut m, at(1), LAPTOP, &[0, 0]), [0, 128, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0]);
        let a = ask(&natpmp_off, &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_UDP, 5000, 5000, 7200));
        assert_eq!(pmp_fields(&a), (2, 1, 5000, 0, 0));
        assert!(m.asked.is_empty() && m.maps.is_empty());
        // PCP still works.
        let a = ask(&natpmp_off, &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &[]));
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, PcpResult::Success as u8);

        // PCP off, NAT-PMP on: NAT-PMP's "unsupported version", so the client falls back at once.
        let pcp_off = PmpConfig { pcp: false, ..cfg() };
        let a = ask(&pcp_off, &mut m, at(1), PHONE, &pcp_map(PHONE, 7200, 80, 80, &[]));
        assert_eq!(a, [0, 129, 0, 1, 0, 0, 0, 1]);
        assert_eq!(ask(&pcp_off, &mut m, at(1), PHONE, &[1, 1, 0, 0]), [0, 129, 0, 1, 0, 0, 0, 1]);

        // Both off: each protocol's refusal; an unknown version gets nothing.
        let off = PmpConfig { natpmp: false, pcp: false, ..cfg() };
        assert_eq!(ask(&off, &mut m, at(1), PHONE, &[0, 0])[..4], [0, 128, 0, 2]);
        let a = ask(&off, &mut m, at(1), PHONE, &pcp_map(PHONE, 7200, 80, 80, &[]));
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (PcpResult::NotAuthorized as u8, LONG_ERROR_SECS, 1));
        assert_eq!(run(&off, &mut m, at(1), PHONE, &[1, 1, 0, 0]), Outcome::Drop(Drop::Disabled));
        assert_eq!(m.maps.len(), 1);
    }

    #[test]
    fn only_lan_devices_are_answered() {
        let mut m = Fake::new();
        for ip in [
            Ipv4Addr::new(198, 51, 100, 7),
            EXTERNAL,
            ROUTER,
            Ipv4Addr::new(192, 168, 1, 0),
            Ipv4Addr::new(192, 168, 1, 255),
        ] {
            assert_eq!(run(&cfg(), &mut m, at(1), ip, &[0, 0]), Outcome::Drop(Drop::NotLan), "{ip}");
            assert_eq!(run(&cfg(), &mut m, at(1), ip, &pcp_map(ip, 7200, 80, 80, &[])), Outcome::Drop(Drop::NotLan));
        }
        assert!(m.asked.is_empty());
        // On a /31 both addresses are hosts.
        let p2p = PmpConfig::new(Ipv4Addr::new(10, 0, 0, 0), "10.0.0.0/31".parse().unwrap());
        assert!(matches!(run(&p2p, &mut m, at(1), Ipv4Addr::new(10, 0, 0, 1), &[0, 0]), Outcome::Answer(_)));
    }

    #[test]
    fn truncated_long_and_other_versions() {
        let mut m = Fake::new();
        for short in [&[][..], &[0], &[2], &pmp_map(1, 80, 80, 7200)[..11], &[0, 2, 0, 0]] {
            assert_eq!(run(&cfg(), &mut m, at(1), LAPTOP, short), Outcome::Drop(Drop::TooShort), "{short:?}");
        }
        // PCP under its header is dropped (8.2).
        assert_eq!(
            run(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &[])[..20]),
            Outcome::Drop(Drop::TooShort)
        );
        let mut long = pmp_map(1, 80, 80, 7200);
        long.resize(MAX_MESSAGE, 0);
        assert_eq!(pmp_fields(&ask(&cfg(), &mut m, at(1), LAPTOP, &long)).0, 0);
        long.push(0);
        assert_eq!(run(&cfg(), &mut m, at(1), LAPTOP, &long), Outcome::Drop(Drop::TooLong));
        // Version 1 (pre-standard PCP) and later ones: UNSUPP_VERSION naming version 2, the request's header kept.
        let mut v1 = pcp_map(LAPTOP, 7200, 80, 80, &[]);
        v1[0] = 1;
        let a = ask(&cfg(), &mut m, at(3), LAPTOP, &v1);
        assert_eq!(a.len(), PCP_HEADER_LEN);
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (PcpResult::UnsuppVersion as u8, LONG_ERROR_SECS, 3));
        assert_eq!(a[12..], v1[12..24]);
        let a = ask(&cfg(), &mut m, at(3), LAPTOP, &[9, 5]);
        assert_eq!(a, [2, 133, 0, 1, 0, 0, 7, 8, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(m.maps.len(), 1);
    }

    #[test]
    fn responses_are_never_answered() {
        let mut m = Fake::new();
        let natpmp = natpmp_announcement(5, EXTERNAL);
        let pcp = pcp_announce(5, ROUTER);
        let mut map = pcp_map(LAPTOP, 7200, 80, 80, &[]);
        map[1] |= RESPONSE;
        for r in [&natpmp[..], &pcp, &map, &[0, 129], &[1, 200, 0, 0], &[7, 128]] {
            assert_eq!(run(&cfg(), &mut m, at(1), LAPTOP, r), Outcome::Drop(Drop::NotARequest), "{r:?}");
        }
        assert!(m.asked.is_empty());
    }

    #[test]
    fn announcements() {
        assert_eq!(natpmp_announcement(0x0102_0304, EXTERNAL), [0, 128, 0, 0, 1, 2, 3, 4, 203, 0, 113, 2]);
        let a = pcp_announce(77, ROUTER);
        assert_eq!(a.len(), PCP_HEADER_LEN);
        assert_eq!(pcp_head(&a, PCP_OP_ANNOUNCE), (0, 0, 77));
        assert!(a[12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn pcp_map_echoes_the_nonce_and_clamps_the_lifetime() {
        let mut m = Fake::new();
        let body = map_body(NONCE, IPPROTO_UDP, 9000, 9000, Ipv4Addr::UNSPECIFIED, &[]);
        let a = ask(&cfg(), &mut m, at(10), LAPTOP, &pcp_req(PCP_OP_MAP, 60, LAPTOP, &body));
        assert_eq!(a.len(), PCP_HEADER_LEN + PCP_MAP_LEN);
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (0, PCP_MIN_LIFETIME, 10));
        assert!(a[12..24].iter().all(|&b| b == 0));
        assert_eq!(a[24..36], NONCE);
        assert_eq!((a[36], be16(&a, 40)), (IPPROTO_UDP, 9000));
        assert_eq!(pcp_assigned(&a), (9000, EXTERNAL));
        let r = &m.asked[0];
        assert_eq!(
            (r.origin, r.transport, r.nonce, r.lifetime_secs, r.any_port),
            (Origin::Pcp, Transport::Udp, NONCE, 120, true)
        );
        // A renewal asking for a million seconds gets a day, on the same port.
        let a = ask(&cfg(), &mut m, at(11), LAPTOP, &pcp_req(PCP_OP_MAP, 1_000_000, LAPTOP, &body));
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (0, PCP_MAX_LIFETIME, 11));
        assert_eq!(pcp_assigned(&a), (9000, EXTERNAL));
        assert_eq!(m.maps.len(), 1);
        // A renewal with another nonce is someone else's: refused.
        let other = map_body([1; 12], IPPROTO_UDP, 9000, 9000, Ipv4Addr::UNSPECIFIED, &[]);
        let req = pcp_req(PCP_OP_MAP, 7200, LAPTOP, &other);
        let a = ask(&cfg(), &mut m, at(12), LAPTOP, &req);
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (PcpResult::NotAuthorized as u8, LONG_ERROR_SECS, 12));
        // An error answer is the request with the header set.
        assert_eq!(a[24..], req[24..]);
    }

    #[test]
    fn pcp_delete_needs_the_nonce() {
        let mut m = Fake::new();
        ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &[]));
        ask(&cfg(), &mut m, at(1), LAPTOP, &pmp_map(PMP_OP_MAP_TCP, 81, 81, 7200));
        let wrong = pcp_req(PCP_OP_MAP, 0, LAPTOP, &map_body([9; 12], IPPROTO_TCP, 80, 0, Ipv4Addr::UNSPECIFIED, &[]));
        let a = ask(&cfg(), &mut m, at(2), LAPTOP, &wrong);
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, PcpResult::NotAuthorized as u8);
        assert_eq!(m.maps.len(), 2);
        let right = pcp_map(LAPTOP, 0, 80, 0, &[]);
        let a = ask(&cfg(), &mut m, at(3), LAPTOP, &right);
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (0, 0, 3));
        assert_eq!(a[24..36], NONCE);
        assert_eq!(pcp_assigned(&a), (0, Ipv4Addr::UNSPECIFIED));
        // Only PCP's own mapping went; deleting it again succeeds.
        assert_eq!(m.maps.iter().map(|g| g.origin).collect::<Vec<_>>(), [Origin::NatPmp]);
        assert_eq!(ask(&cfg(), &mut m, at(3), LAPTOP, &right), a);
        assert!(m.asked.iter().all(|r| r.lifetime_secs > 0));
    }

    #[test]
    fn pcp_address_mismatch() {
        let mut m = Fake::new();
        // A NAT on the way: the client wrote its own address, we see another.
        let req = pcp_map(Ipv4Addr::new(10, 0, 0, 5), 7200, 80, 80, &[]);
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &req);
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (PcpResult::AddressMismatch as u8, LONG_ERROR_SECS, 1));
        assert_eq!((a.len(), &a[24..]), (req.len(), &req[24..]));
        assert!(a[12..24].iter().all(|&b| b == 0));
        // Also for ANNOUNCE, and for an IPv6 address.
        let mut ann = pcp_req(PCP_OP_ANNOUNCE, 0, LAPTOP, &[]);
        ann[8] = 0x20;
        assert_eq!(pcp_head(&ask(&cfg(), &mut m, at(1), LAPTOP, &ann), 0).0, PcpResult::AddressMismatch as u8);
        assert!(m.asked.is_empty());
    }

    fn third_party(ip: Ipv4Addr) -> Vec<u8> {
        let mut o = vec![PCP_OPT_THIRD_PARTY, 0, 0, 16];
        o.extend_from_slice(&ip.to_ipv6_mapped().octets());
        o
    }

    #[test]
    fn pcp_third_party_is_refused() {
        let mut m = Fake::new();
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &third_party(PHONE)));
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (PcpResult::NotAuthorized as u8, LONG_ERROR_SECS, 1));
        // Naming oneself is malformed (13.1); a wrong length too.
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &third_party(LAPTOP)));
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, PcpResult::MalformedRequest as u8);
        let mut short = third_party(PHONE);
        short[3] = 12;
        short.truncate(16);
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &short));
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, PcpResult::MalformedOption as u8);
        // A delete for another device, too.
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 0, 80, 0, &third_party(PHONE)));
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, PcpResult::NotAuthorized as u8);
        assert!(m.asked.is_empty());
    }

    const PREFER_FAILURE: [u8; 4] = [PCP_OPT_PREFER_FAILURE, 0, 0, 0];

    #[test]
    fn pcp_prefer_failure() {
        let mut m = Fake::new();
        m.held.push((Transport::Tcp, 443));
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 8443, 443, &PREFER_FAILURE));
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (PcpResult::CannotProvideExternal as u8, SHORT_ERROR_SECS, 1));
        assert!(!m.asked[0].any_port);
        assert!(m.maps.is_empty());
        // Without it: another port.
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 8443, 443, &[]));
        assert_eq!(pcp_assigned(&a), (50_000, EXTERNAL));
        // A free port: success, the option echoed.
        let a = ask(&cfg(), &mut m, at(1), PHONE, &pcp_map(PHONE, 7200, 8080, 8080, &PREFER_FAILURE));
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, 0);
        assert_eq!((pcp_assigned(&a), &a[60..]), ((8080, EXTERNAL), &PREFER_FAILURE[..]));
        // An external address that is not ours cannot be had; without the option it is just not given.
        let elsewhere = map_body(NONCE, IPPROTO_TCP, 7000, 7000, Ipv4Addr::new(198, 51, 100, 1), &PREFER_FAILURE);
        let a = ask(&cfg(), &mut m, at(1), PHONE, &pcp_req(PCP_OP_MAP, 7200, PHONE, &elsewhere));
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, PcpResult::CannotProvideExternal as u8);
        let ours = map_body(NONCE, IPPROTO_TCP, 7000, 7000, EXTERNAL, &PREFER_FAILURE);
        assert_eq!(pcp_head(&ask(&cfg(), &mut m, at(1), PHONE, &pcp_req(PCP_OP_MAP, 7200, PHONE, &ours)), 1).0, 0);
        let plain = map_body(NONCE, IPPROTO_TCP, 7001, 7001, Ipv4Addr::new(198, 51, 100, 1), &[]);
        let a = ask(&cfg(), &mut m, at(1), PHONE, &pcp_req(PCP_OP_MAP, 7200, PHONE, &plain));
        assert_eq!(pcp_assigned(&a), (7001, EXTERNAL));
        // Twice is malformed.
        let twice = [PREFER_FAILURE, PREFER_FAILURE].concat();
        let a = ask(&cfg(), &mut m, at(1), PHONE, &pcp_map(PHONE, 7200, 8081, 8081, &twice));
        assert_eq!(pcp_head(&a, PCP_OP_MAP).0, PcpResult::MalformedOption as u8);
    }

    #[test]
    fn pcp_options_mandatory_and_optional() {
        let mut m = Fake::new();
        let code = |opts: &[u8], m: &mut Fake| {
            pcp_head(&ask(&cfg(), m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, opts)), 1).0
        };
        // Unknown and mandatory (< 128): refused. FILTER: the NAT cannot filter.
        assert_eq!(code(&[99, 0, 0, 0], &mut m), PcpResult::UnsuppOption as u8);
        let filter = [&[PCP_OPT_FILTER, 0, 0, 20][..], &[0; 20]].concat();
        assert_eq!(code(&filter, &mut m), PcpResult::UnsuppOption as u8);
        // Running past the end, or a header cut short.
        assert_eq!(code(&[200, 0, 0, 8, 1, 2, 3, 4], &mut m), PcpResult::MalformedOption as u8);
        assert!(m.maps.is_empty());
        // Unknown and optional: ignored, with its padding.
        assert_eq!(code(&[200, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 201, 0, 0, 0], &mut m), 0);
        assert_eq!(m.maps.len(), 1);
        // Options of MAP are not ANNOUNCE's.
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_req(PCP_OP_ANNOUNCE, 0, LAPTOP, &PREFER_FAILURE));
        assert_eq!(pcp_head(&a, 0).0, PcpResult::MalformedOption as u8);
    }

    #[test]
    fn pcp_malformed_requests() {
        let mut m = Fake::new();
        // Over 1100 bytes: MALFORMED_REQUEST, the copy cut to 1100 (8.2); its reserved bytes are the request's.
        let mut big = pcp_map(LAPTOP, 7200, 80, 80, &[]);
        big.resize(1200, 0xaa);
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &big);
        assert_eq!(a.len(), MAX_MESSAGE);
        assert_eq!(pcp_head(&a, PCP_OP_MAP), (PcpResult::MalformedRequest as u8, LONG_ERROR_SECS, 1));
        assert_eq!(a[12..], big[12..MAX_MESSAGE]);
        // Not a multiple of 4: padded in the answer.
        let odd = &pcp_map(LAPTOP, 7200, 80, 80, &[0, 0, 0, 0])[..62];
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, odd);
        assert_eq!((a.len(), pcp_head(&a, 1).0), (64, PcpResult::MalformedRequest as u8));
        // Too short for MAP.
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &[])[..56]);
        assert_eq!(pcp_head(&a, 1).0, PcpResult::MalformedRequest as u8);
        // All protocols, SCTP: not offered.
        for proto in [0, 132] {
            let req = pcp_req(PCP_OP_MAP, 7200, LAPTOP, &map_body(NONCE, proto, 0, 0, Ipv4Addr::UNSPECIFIED, &[]));
            assert_eq!(pcp_head(&ask(&cfg(), &mut m, at(1), LAPTOP, &req), 1).0, PcpResult::UnsuppProtocol as u8);
        }
        // All ports of TCP, for a lifetime: refused.
        assert_eq!(pcp_head(&ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 0, 0, &[])), 1).0, 2);
        // PEER and the rest: unsupported opcodes, answered with the request.
        let peer = pcp_req(2, 7200, LAPTOP, &[0; 32]);
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &peer);
        assert_eq!(pcp_head(&a, 2).0, PcpResult::UnsuppOpcode as u8);
        assert_eq!(a.len(), peer.len());
        assert!(m.asked.is_empty());
    }

    #[test]
    fn pcp_mapper_errors() {
        let mut m = Fake::new();
        m.cap = 0;
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &[]));
        assert_eq!(pcp_head(&a, 1), (PcpResult::UserExQuota as u8, SHORT_ERROR_SECS, 1));
        m.external = None;
        let a = ask(&cfg(), &mut m, at(1), LAPTOP, &pcp_map(LAPTOP, 7200, 80, 80, &[]));
        assert_eq!(pcp_head(&a, 1), (PcpResult::NetworkFailure as u8, SHORT_ERROR_SECS, 1));
        assert_eq!(pcp_code(&MapError::NoResources("x".into()), false), PcpResult::NoResources);
        assert_eq!(pcp_code(&MapError::Conflict { port: 1, why: "x".into() }, false), PcpResult::NoResources);
    }

    #[test]
    fn pcp_announce_request() {
        let mut m = Fake::new();
        // The requested lifetime is ignored; optional unknown options too.
        let a = ask(&cfg(), &mut m, at(30), LAPTOP, &pcp_req(PCP_OP_ANNOUNCE, 999, LAPTOP, &[200, 0, 0, 0]));
        assert_eq!(a.len(), PCP_HEADER_LEN);
        assert_eq!(pcp_head(&a, PCP_OP_ANNOUNCE), (0, 0, 30));
        assert!(a[12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn drop_labels_are_distinct_snake_case() {
        let labels: Vec<_> = Drop::ALL.iter().map(|d| d.label()).collect();
        assert!(labels.iter().all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        let mut unique = labels.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), labels.len());
    }

    /// A datagram the parser gets far into: a PCP MAP or ANNOUNCE with the right client address, or NAT-PMP.
    fn plausible() -> impl Strategy<Value = Vec<u8>> {
        let pcp =
            (0u8..4, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..120)).prop_map(|(op, life, body)| {
                let mut r = pcp_req(op, life, LAPTOP, &body);
                r.truncate(r.len() / 4 * 4);
                r
            });
        let natpmp = (0u8..4, proptest::collection::vec(any::<u8>(), 0..14)).prop_map(|(op, rest)| {
            let mut r = vec![0, op];
            r.extend(rest);
            r
        });
        prop_oneof![proptest::collection::vec(any::<u8>(), 0..1200), pcp, natpmp]
    }

    proptest! {
        #[test]
        fn any_datagram_gets_a_well_formed_answer_or_none(
            datagrams in proptest::collection::vec(plausible(), 1..8),
            no_wan in any::<bool>(),
        ) {
            let mut m = Fake::new();
            if no_wan {
                m.external = None;
            }
            for (i, d) in datagrams.iter().enumerate() {
                let now = at(i as u64 * 100);
                let Outcome::Answer(a) = run(&cfg(), &mut m, now, LAPTOP, d) else { continue };
                // Every answer names the request's opcode with the top bit set.
                prop_assert_eq!(a.get(1).copied(), d.get(1).map(|op| op | RESPONSE));
                match a[0] {
                    NATPMP_VERSION => prop_assert!(a.len() >= 8 && a.len() <= MAX_MESSAGE),
                    PCP_VERSION => {
                        prop_assert!(a.len() >= PCP_HEADER_LEN && a.len() <= MAX_MESSAGE && a.len() % 4 == 0);
                        prop_assert_eq!(a[2], 0);
                    }
                    v => prop_assert!(false, "version {}", v),
                }
            }
            prop_assert!(m.maps.iter().all(|g| g.internal_ip == LAPTOP));
        }
    }
}
