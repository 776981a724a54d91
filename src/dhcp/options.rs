//! Building replies: which options a reply carries (RFC 2131 4.3.1 table 3, RFC 2132) and their encoding.

use super::server::{DhcpConfig, DropReason};
use super::wire::{Request, code};
use dhcproto::v4::{DhcpOption, Encodable, Encoder, Flags, HType, Message, MessageType, Opcode};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// BOOTP's minimum message size (RFC 1542 2.1); shorter replies upset some clients.
const MIN_REPLY: usize = 300;

pub(crate) struct ReplySpec<'a> {
    pub kind: MessageType,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    /// Lease time for OFFER/ACK of an address; `None` for NAK and for the ACK of an INFORM.
    pub lease_secs: Option<u32>,
    pub hostname: Option<&'a str>,
    /// Option 56, for NAKs.
    pub message: Option<&'a str>,
}

/// Encodes the reply to `req`. `subnet` and `router` are those of the client's link; no router, no option 3.
pub(crate) fn encode(
    cfg: &DhcpConfig,
    subnet: Ipv4Net,
    router: Option<Ipv4Addr>,
    req: &Request<'_>,
    spec: ReplySpec<'_>,
) -> Result<Vec<u8>, DropReason> {
    let mut flags = req.flags & 0x8000;
    // A NAK through a relay goes out with the broadcast bit (RFC 2131 4.3.2).
    if spec.kind == MessageType::Nak && !req.giaddr.is_unspecified() {
        flags |= 0x8000;
    }
    let mut m = Message::new_with_id(req.xid, spec.ciaddr, spec.yiaddr, Ipv4Addr::UNSPECIFIED, req.giaddr, &req.mac.0);
    m.set_opcode(Opcode::BootReply).set_htype(HType::Eth).set_flags(Flags::new(flags));
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(spec.kind));
    o.insert(DhcpOption::ServerIdentifier(cfg.server_ip));
    if let Some(m) = spec.message {
        o.insert(DhcpOption::Message(m.to_string()));
    }
    if spec.kind != MessageType::Nak {
        if let Some(secs) = spec.lease_secs {
            o.insert(DhcpOption::AddressLeaseTime(secs));
            o.insert(DhcpOption::Renewal(secs / 2));
            o.insert(DhcpOption::Rebinding((u64::from(secs) * 7 / 8) as u32));
        }
        // The parameters every client on a home LAN needs are always sent; the rest only on request (option 55).
        o.insert(DhcpOption::SubnetMask(subnet.netmask()));
        if let Some(r) = router {
            o.insert(DhcpOption::Router(vec![r]));
        }
        let dns = if cfg.dns.is_empty() { vec![cfg.server_ip] } else { cfg.dns.clone() };
        o.insert(DhcpOption::DomainNameServer(dns));
        if !cfg.domain.is_empty() {
            o.insert(DhcpOption::DomainName(cfg.domain.clone()));
        }
        if req.requests(code::BROADCAST) {
            o.insert(DhcpOption::BroadcastAddr(subnet.broadcast()));
        }
        if let Some(h) = spec.hostname.filter(|_| req.requests(code::HOSTNAME)) {
            o.insert(DhcpOption::Hostname(h.to_string()));
        }
    }
    let mut buf = Vec::with_capacity(576);
    m.encode(&mut Encoder::new(&mut buf)).map_err(|_| DropReason::EncodeFailed)?;
    // Relay agent information is echoed verbatim, last (RFC 3046 2.2), split in 255-byte pieces (RFC 3396).
    if let Some(info) = &req.relay_info {
        if buf.last() == Some(&255) {
            buf.pop();
        }
        for chunk in info.chunks(255) {
            buf.push(code::RELAY_AGENT_INFO);
            buf.push(chunk.len() as u8);
            buf.extend_from_slice(chunk);
        }
        buf.push(255);
    }
    if buf.len() < MIN_REPLY {
        buf.resize(MIN_REPLY, 0);
    }
    Ok(buf)
}
