//! What the port mapping protocols (NAT-PMP, PCP, UPnP IGD) ask of the router, as one small interface. The
//! protocol cores (`pmp`, `upnp`) only parse, check what their protocol requires and encode answers; every
//! decision about ports (who may have which, how long, what clashes) is made behind [`Mapper`] by
//! `ports::core`, the same for all three, so a device gets the same answer whichever protocol it speaks.

use crate::types::Time;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Which protocol made a mapping (shown in the ports view; a protocol lists and deletes only its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    NatPmp,
    Pcp,
    Upnp,
}

/// TCP or UDP: the transport a mapping is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Tcp,
    Udp,
}

/// A request to create or renew a mapping, as the protocol core understood it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapRequest {
    pub origin: Origin,
    /// The address the request came from (the LAN device asking).
    pub client: Ipv4Addr,
    /// The LAN address the mapping should go to. Secure mode: it must be `client` (NAT-PMP always asks for the
    /// sender; PCP's internal address and UPnP's NewInternalClient may name another host, which is refused).
    pub internal_ip: Ipv4Addr,
    pub transport: Transport,
    pub internal_port: u16,
    /// The external port asked for; 0 = any.
    pub external_port: u16,
    /// When the requested external port is taken: true = give another one (NAT-PMP, PCP without PREFER_FAILURE,
    /// UPnP AddAnyPortMapping), false = fail with `Conflict` (UPnP AddPortMapping, PCP PREFER_FAILURE).
    pub any_port: bool,
    /// Seconds, already capped by the protocol's own rules (UPnP: 0 or over a week -> a week; PCP: 120 s..1 day;
    /// NAT-PMP as asked). Never 0 here: a lifetime of 0 is a deletion (`Mapper::unmap`).
    pub lifetime_secs: u32,
    /// A free-text description (UPnP's NewPortMappingDescription); hostile, shown as text only. At most 256 bytes.
    pub description: String,
    /// PCP's 96-bit mapping nonce (renewals and deletes must carry the same one); zero for the others.
    pub nonce: [u8; 12],
}

/// A mapping as granted (or as it stands).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    pub origin: Origin,
    pub transport: Transport,
    pub internal_ip: Ipv4Addr,
    pub internal_port: u16,
    pub external_ip: Ipv4Addr,
    pub external_port: u16,
    /// Seconds left, at the time of the answer.
    pub lifetime_secs: u32,
    pub description: String,
    pub nonce: [u8; 12],
}

/// Why a request was refused. Each protocol maps these onto its own result codes (NAT-PMP: 2 not authorized,
/// 3 network failure, 4 out of resources; PCP: NOT_AUTHORIZED, NO_RESOURCES, CANNOT_PROVIDE_EXTERNAL,
/// USER_EX_QUOTA; UPnP: 606 Action not authorized, 718 ConflictInMappingEntry, 728 NoPortMapsAvailable,
/// 714 NoSuchEntryInArray).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The request names another device's address, or this protocol is switched off.
    #[error("not authorized: {0}")]
    NotAuthorized(String),
    /// The external port asked for is held (by a forward, a local service, another device's mapping, or is outside
    /// the ports the NAT maps), and `any_port` was false.
    #[error("port {port} is in use: {why}")]
    Conflict { port: u16, why: String },
    /// No free external port, or the device's cap on mappings is reached.
    #[error("no resources: {0}")]
    NoResources(String),
    /// The device already has this many mappings (cap).
    #[error("the device's {0} mappings are its limit")]
    Quota(usize),
    /// The router has no WAN address now (NAT-PMP result 3, PCP NETWORK_FAILURE, UPnP 501).
    #[error("no WAN address")]
    NoWan,
    /// Delete or lookup of a mapping that does not exist (UPnP 714) or whose nonce does not match (PCP NOT_AUTHORIZED).
    #[error("no such mapping")]
    NoSuchEntry,
}

/// The router's side of the port mapping protocols: implemented by `ports::core`, and by fakes in the protocol
/// cores' tests. Times are passed in (sans-IO).
pub trait Mapper {
    /// The WAN address mappings are made on; `None` while the WAN has none.
    fn external_ip(&self) -> Option<Ipv4Addr>;
    /// NAT-PMP / PCP epoch: seconds since the mapping table was last lost (the start, or a reset).
    fn epoch_secs(&self, now: Time) -> u32;
    /// Creates or renews (same origin, client, transport and internal port) a mapping.
    fn map(&mut self, now: Time, req: &MapRequest) -> Result<Granted, MapError>;
    /// Deletes `client`'s mapping of `internal_port` (NAT-PMP, PCP) made by `origin`. Returns the number removed,
    /// `Ok(0)` when nothing matched; internal port 0 removes all of the client's mappings of the transport. With a
    /// PCP `nonce`, every mapping matched must carry it, else nothing is removed and the answer is `NoSuchEntry`
    /// (PCP answers NOT_AUTHORIZED).
    fn unmap_internal(
        &mut self,
        now: Time,
        origin: Origin,
        client: Ipv4Addr,
        transport: Transport,
        internal_port: u16,
        nonce: Option<[u8; 12]>,
    ) -> Result<usize, MapError>;
    /// Deletes the UPnP mapping of `external_port` (DeletePortMapping; the other protocols' mappings are not its to
    /// delete); refused when it is not `client`'s own.
    fn unmap_external(
        &mut self,
        now: Time,
        client: Ipv4Addr,
        transport: Transport,
        external_port: u16,
    ) -> Result<(), MapError>;
    /// The mapping on `external_port` made by `origin`, if any (UPnP GetSpecificPortMappingEntry).
    fn by_external(&self, now: Time, origin: Origin, transport: Transport, external_port: u16) -> Option<Granted>;
    /// The `index`th mapping made by `origin` (UPnP GetGenericPortMappingEntry), in a stable order.
    fn nth(&self, now: Time, origin: Origin, index: usize) -> Option<Granted>;
}
