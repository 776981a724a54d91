//! A checked, zero-copy view of a client's BOOTREQUEST (RFC 2131 section 2, RFC 2132, RFC 3396).
//!
//! Requests are parsed here rather than with `dhcproto`'s decoder: that decoder `debug_assert!`s on option lengths
//! taken from the wire (options 80, 81, 94), i.e. it panics on hostile input in debug builds, and it neither honours
//! option overload (52) nor bounds-checks `hlen`. This view is checked once, then its accessors cannot fail.
//! Replies are still encoded with `dhcproto` (see `server.rs`), where the input is our own.

use super::server::DropReason;
use std::borrow::Cow;
use std::net::Ipv4Addr;

/// BOOTP fixed header (236 bytes) plus the magic cookie.
pub const HEADER_LEN: usize = 240;
pub const MAGIC: [u8; 4] = [99, 130, 83, 99];
const SNAME: std::ops::Range<usize> = 44..108;
const FILE: std::ops::Range<usize> = 108..236;

pub const OP_BOOTREQUEST: u8 = 1;
pub const HTYPE_ETHERNET: u8 = 1;

/// Option codes the server reads.
pub mod code {
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN_NAME: u8 = 15;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMETER_LIST: u8 = 55;
    pub const MAX_MESSAGE_SIZE: u8 = 57;
    pub const RENEWAL: u8 = 58;
    pub const REBINDING: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const CLIENT_FQDN: u8 = 81;
    pub const RELAY_AGENT_INFO: u8 = 82;
}

/// The options we keep, each the concatenation of all its instances (RFC 3396), in one slot per code.
const KEPT: [u8; 10] = [
    code::HOSTNAME,
    code::REQUESTED_IP,
    code::OVERLOAD,
    code::MESSAGE_TYPE,
    code::SERVER_ID,
    code::PARAMETER_LIST,
    code::MAX_MESSAGE_SIZE,
    code::CLIENT_ID,
    code::CLIENT_FQDN,
    code::RELAY_AGENT_INFO,
];

fn slot(c: u8) -> Option<usize> {
    KEPT.iter().position(|&k| k == c)
}

/// A validated client request. Every field has been checked; nothing here can panic.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub op: u8,
    pub htype: u8,
    pub hlen: u8,
    pub hops: u8,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The first `hlen` (6) bytes of chaddr.
    pub mac: crate::types::Mac,
    pub msg_type: u8,
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub client_id: Option<Cow<'a, [u8]>>,
    pub hostname: Option<Cow<'a, [u8]>>,
    pub fqdn: Option<Cow<'a, [u8]>>,
    pub parameter_list: Cow<'a, [u8]>,
    pub relay_info: Option<Cow<'a, [u8]>>,
    pub max_message_size: Option<u16>,
}

impl Request<'_> {
    pub fn broadcast_flag(&self) -> bool {
        self.flags & 0x8000 != 0
    }
    pub fn requests(&self, c: u8) -> bool {
        self.parameter_list.contains(&c)
    }
}

/// Longest client identifier accepted (RFC 2132 allows 255 in one option; concatenation could make more).
pub const MAX_CLIENT_ID: usize = 255;

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_be_bytes(w)
}

/// Walks one option area, appending each kept option's value to its slot. `End` stops; a missing `End` is
/// tolerated; an option whose length runs past the area is an error.
fn scan<'a>(area: &'a [u8], slots: &mut [Option<Cow<'a, [u8]>>; KEPT.len()]) -> Result<(), DropReason> {
    let mut i = 0;
    while i < area.len() {
        let c = area[i];
        match c {
            0 => i += 1,
            255 => return Ok(()),
            _ => {
                let len = *area.get(i + 1).ok_or(DropReason::BadOptions)? as usize;
                let value = area.get(i + 2..i + 2 + len).ok_or(DropReason::BadOptions)?;
                if let Some(s) = slot(c) {
                    match &mut slots[s] {
                        Some(prev) => prev.to_mut().extend_from_slice(value),
                        empty => *empty = Some(Cow::Borrowed(value)),
                    }
                }
                i += 2 + len;
            }
        }
    }
    Ok(())
}

fn ipv4(v: Option<Cow<'_, [u8]>>) -> Result<Option<Ipv4Addr>, DropReason> {
    match v {
        None => Ok(None),
        Some(b) if b.len() == 4 => Ok(Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        Some(_) => Err(DropReason::BadOptions),
    }
}

/// Parses and checks a BOOTREQUEST from an Ethernet client.
pub fn parse(p: &[u8]) -> Result<Request<'_>, DropReason> {
    if p.len() < HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    if p[236..240] != MAGIC {
        return Err(DropReason::BadMagic);
    }
    let (op, htype, hlen, hops) = (p[0], p[1], p[2], p[3]);
    if op != OP_BOOTREQUEST {
        return Err(DropReason::NotBootRequest);
    }
    if htype != HTYPE_ETHERNET {
        return Err(DropReason::BadHtype);
    }
    if hlen != 6 {
        return Err(DropReason::BadHlen);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&p[28..34]);

    let mut slots: [Option<Cow<'_, [u8]>>; KEPT.len()] = Default::default();
    scan(&p[HEADER_LEN..], &mut slots)?;
    // Option overload (RFC 2132 9.3): only as found in the options field; then 'file' before 'sname' (RFC 2131 4.1).
    let overload = match slots[2].take() {
        None => 0,
        Some(v) if v.len() == 1 && (1..=3).contains(&v[0]) => v[0],
        Some(_) => return Err(DropReason::BadOptions),
    };
    if overload & 1 != 0 {
        scan(&p[FILE], &mut slots)?;
    }
    if overload & 2 != 0 {
        scan(&p[SNAME], &mut slots)?;
    }
    slots[2] = None;

    let [hostname, requested, _, msg_type, server_id, prl, max_size, client_id, fqdn, relay] = slots;
    let msg_type = match msg_type {
        None => return Err(DropReason::NoMessageType),
        Some(v) if v.len() == 1 => v[0],
        Some(_) => return Err(DropReason::BadOptions),
    };
    let max_message_size = match max_size {
        None => None,
        Some(v) if v.len() == 2 => Some(u16::from_be_bytes([v[0], v[1]])),
        Some(_) => return Err(DropReason::BadOptions),
    };
    if let Some(id) = &client_id
        && (id.is_empty() || id.len() > MAX_CLIENT_ID)
    {
        return Err(DropReason::BadClientId);
    }
    Ok(Request {
        op,
        htype,
        hlen,
        hops,
        xid: be32(p, 4),
        flags: u16::from_be_bytes([p[10], p[11]]),
        ciaddr: be32(p, 12).into(),
        giaddr: be32(p, 24).into(),
        mac: crate::types::Mac(mac),
        msg_type,
        requested_ip: ipv4(requested)?,
        server_id: ipv4(server_id)?,
        client_id,
        hostname,
        fqdn,
        parameter_list: prl.unwrap_or(Cow::Borrowed(&[])),
        relay_info: relay,
        max_message_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 1;
        p[1] = 1;
        p[2] = 6;
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        p[236..240].copy_from_slice(&MAGIC);
        p
    }

    #[test]
    fn concatenated_options_are_joined() {
        let mut p = base();
        p.extend_from_slice(&[53, 1, 1, 61, 2, 1, 2, 61, 3, 3, 4, 5, 255]);
        let r = parse(&p).unwrap();
        assert_eq!(r.client_id.as_deref(), Some(&[1u8, 2, 3, 4, 5][..]));
    }

    #[test]
    fn overload_reads_file_then_sname() {
        let mut p = base();
        p[FILE][..4].copy_from_slice(&[12, 2, b'a', b'b']);
        p[FILE][4] = 255;
        p[SNAME][..4].copy_from_slice(&[12, 2, b'c', b'd']);
        p[SNAME][4] = 255;
        p.extend_from_slice(&[53, 1, 1, 52, 1, 3, 255]);
        let r = parse(&p).unwrap();
        assert_eq!(r.hostname.as_deref(), Some(&b"abcd"[..]));
        // Without the overload option, file and sname are not options.
        let mut q = p.clone();
        q.truncate(HEADER_LEN);
        q.extend_from_slice(&[53, 1, 1, 255]);
        assert_eq!(parse(&q).unwrap().hostname, None);
    }

    #[test]
    fn bad_overload_and_lengths() {
        for opts in [
            &[53, 1, 1, 52, 1, 4, 255][..],
            &[53, 1, 1, 52, 2, 1, 1, 255],
            &[53, 2, 1, 1, 255],
            &[53, 1, 1, 50, 3, 1, 2, 3, 255],
            &[53, 1, 1, 54, 5, 1, 2, 3, 4, 5, 255],
            &[53, 1, 1, 61, 0, 255],
            &[53, 1, 1, 12, 9, 1],
            &[53, 1, 1, 57, 1, 1],
            &[53],
        ] {
            let mut p = base();
            p.extend_from_slice(opts);
            assert!(parse(&p).is_err(), "{opts:?}");
        }
        let mut p = base();
        p.extend_from_slice(&[0, 0, 12, 0, 255]);
        assert_eq!(parse(&p).unwrap_err(), DropReason::NoMessageType);
    }

    #[test]
    fn overload_in_sname_with_garbage_is_an_error_not_a_panic() {
        let mut p = base();
        p[SNAME].fill(0x42); // option 0x42, length 0x42: runs past sname's 64 bytes
        p.extend_from_slice(&[53, 1, 1, 52, 1, 2, 255]);
        assert_eq!(parse(&p).unwrap_err(), DropReason::BadOptions);
    }
}
