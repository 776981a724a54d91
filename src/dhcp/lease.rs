//! Lease records: what the server core hands out, what the store persists, and what other subsystems hear about.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A dynamic lease. Keyed by `client_id`: option 61 when the client sends it, else `[1] ++ chaddr` (RFC 2132 9.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub client_id: Vec<u8>,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    /// Sanitized host name (option 12 or 81): lowercase letters, digits and '-', at most 63 bytes.
    pub hostname: Option<String>,
    /// Expiry, Unix seconds.
    pub expires: u64,
}

/// One entry of the lease store's log. Replaying the log in order rebuilds the lease table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// A lease was granted or renewed (replaces any earlier lease of the same client).
    Bound(Lease),
    /// The client released its lease, or it expired.
    Released { client_id: Vec<u8>, ip: Ipv4Addr },
    /// A client declined the address (someone else uses it): not handed out before `until` (Unix seconds).
    Declined { ip: Ipv4Addr, until: u64 },
}

/// A fixed address for a MAC, from the config file or /etc/ethers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticLease {
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub hostname: Option<String>,
}

/// What the rest of the program (DNS local zone, web UI, traffic naming) hears about leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    Granted(Lease),
    Renewed(Lease),
    Released(Lease),
    Expired(Lease),
}
