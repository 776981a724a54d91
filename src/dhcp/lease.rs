//! Lease records: what the server core hands out, what the store persists, and what other subsystems hear about.

use crate::types::Mac;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// A dynamic lease. Keyed by `client_id`: option 61 when the client sends it, else `[1] ++ chaddr` (RFC 2132 9.14).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    #[serde(with = "hex_bytes")]
    pub client_id: Vec<u8>,
    pub mac: Mac,
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
    pub mac: Mac,
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

/// Byte strings as hex in JSON.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        (0..text.len())
            .step_by(2)
            .map(|i| text.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not hex")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shows_readable_mac_and_client_id() {
        let l = Lease {
            client_id: vec![1, 0xaa, 0xbb],
            mac: Mac([0xaa, 0xbb, 0xcc, 0, 1, 2]),
            ip: [10, 0, 0, 5].into(),
            hostname: Some("tv".into()),
            expires: 7,
        };
        let j = serde_json::to_string(&l).unwrap();
        assert!(j.contains(r#""mac":"aa:bb:cc:00:01:02""#) && j.contains(r#""client_id":"01aabb""#), "{j}");
        assert_eq!(serde_json::from_str::<Lease>(&j).unwrap(), l);
    }
}
