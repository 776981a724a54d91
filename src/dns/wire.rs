//! Hand-checked, zero-copy views of DNS messages (RFC 1035 section 4, RFC 6891 for OPT).
//!
//! Client queries are parsed here, never with a full decoder: the cached path must not allocate, and hostile input
//! must end in a counted drop or a FORMERR/NOTIMP reply, never a panic. Upstream answers are walked here too, only
//! for their framing (where each RR and TTL sits, where the OPT RR is): the records themselves are stored and
//! replayed as the upstream's bytes, so unknown types and compressed names pass through untouched.

use super::core::DropReason;

pub const HEADER_LEN: usize = 12;
/// Longest name on the wire, length octets included (RFC 1035 2.3.4).
pub const MAX_NAME: usize = 255;
/// Key = lowercased wire name + qtype (2) + qclass (2) + DO bit (1).
pub const MAX_KEY: usize = MAX_NAME + 5;

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_PTR: u16 = 12;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_SERVFAIL: u8 = 2;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// Extended RCODE 16 (RFC 6891 6.1.3): upper 8 bits (1) in the OPT TTL, lower 4 bits (0) in the header.
pub const RCODE_BADVERS: u16 = 16;

/// Our EDNS(0) UDP payload size, towards upstreams and advertised to clients (DNS flag day 2020).
pub const EDNS_PAYLOAD: u16 = 1232;
/// The size of the OPT RR we append: root name, type, class, TTL, RDLENGTH 0.
pub const OPT_LEN: usize = 11;

// Header flag bits (byte 2 and byte 3).
pub const F2_QR: u8 = 0x80;
pub const F2_AA: u8 = 0x04;
pub const F2_TC: u8 = 0x02;
pub const F2_RD: u8 = 0x01;
pub const F3_RA: u8 = 0x80;
pub const F3_AD: u8 = 0x20;
pub const F3_CD: u8 = 0x10;

pub use crate::bytes::{be16, be32, put16, put32};

/// The client's EDNS(0) OPT RR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Edns {
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
}

/// A checked client query. Nothing here can fail any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub rd: bool,
    pub cd: bool,
    /// Wire length of the question name (labels + root octet).
    pub name_len: usize,
    /// End of the question section: `12 + name_len + 4`.
    pub question_end: usize,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<Edns>,
}

impl Query {
    /// The client's question bytes (name, type, class), in the client's case.
    pub fn question<'a>(&self, msg: &'a [u8]) -> &'a [u8] {
        &msg[HEADER_LEN..self.question_end]
    }
}

/// Why a query cannot be answered normally. `Drop` gets no reply; the others get a header-only reply with this
/// RCODE (the header was readable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryError {
    Drop(DropReason),
    FormErr,
    NotImp,
    /// EDNS version other than 0: BADVERS, with the question echoed.
    BadVers(Query),
}

/// Parses a client query and writes its lowercased key (name + qtype + qclass + DO) into `key`; returns the key
/// length as well. Rejects: shorter than a header (drop), QR=1 (drop: never answer a response), opcode other than
/// QUERY (NOTIMP), QDCOUNT != 1, compressed/extended labels, names over 255 bytes, truncated sections, more than
/// one OPT (FORMERR).
pub fn parse_query(m: &[u8], key: &mut [u8; MAX_KEY]) -> Result<(Query, usize), QueryError> {
    if m.len() < HEADER_LEN {
        return Err(QueryError::Drop(DropReason::Truncated));
    }
    if m[2] & F2_QR != 0 {
        return Err(QueryError::Drop(DropReason::NotQuery));
    }
    if (m[2] >> 3) & 0x0f != 0 {
        return Err(QueryError::NotImp);
    }
    if be16(m, 4) != 1 {
        return Err(QueryError::FormErr);
    }
    // Question name: uncompressed labels only (it is the first name of the message, nothing to point back to).
    let mut i = HEADER_LEN;
    loop {
        let len = *m.get(i).ok_or(QueryError::FormErr)? as usize;
        if len > 63 {
            return Err(QueryError::FormErr);
        }
        let end = i + 1 + len;
        if end - HEADER_LEN > MAX_NAME || end > m.len() {
            return Err(QueryError::FormErr);
        }
        let k = i - HEADER_LEN;
        key[k] = len as u8;
        for (d, s) in key[k + 1..k + 1 + len].iter_mut().zip(&m[i + 1..end]) {
            *d = s.to_ascii_lowercase();
        }
        i = end;
        if len == 0 {
            break;
        }
    }
    let name_len = i - HEADER_LEN;
    if i + 4 > m.len() {
        return Err(QueryError::FormErr);
    }
    let (qtype, qclass) = (be16(m, i), be16(m, i + 2));
    let question_end = i + 4;
    key[name_len..name_len + 4].copy_from_slice(&m[i..question_end]);

    // The other sections: skipped, except the OPT RR in the additional section.
    let (an, ns, ar) = (be16(m, 6) as usize, be16(m, 8) as usize, be16(m, 10) as usize);
    let mut at = question_end;
    let mut edns = None;
    for n in 0..an + ns + ar {
        let rr = read_rr(m, at).map_err(|_| QueryError::FormErr)?;
        if n >= an + ns && rr.rtype == TYPE_OPT {
            if edns.is_some() || rr.name_len != 1 {
                return Err(QueryError::FormErr);
            }
            let ttl = be32(m, rr.ttl_at);
            edns = Some(Edns {
                payload: be16(m, rr.ttl_at - 2),
                version: (ttl >> 16) as u8,
                dnssec_ok: ttl & 0x8000 != 0,
            });
        }
        at = rr.end;
    }
    let dnssec_ok = edns.is_some_and(|e| e.dnssec_ok);
    key[name_len + 4] = dnssec_ok as u8;
    let q = Query {
        id: be16(m, 0),
        rd: m[2] & F2_RD != 0,
        cd: m[3] & F3_CD != 0,
        name_len,
        question_end,
        qtype,
        qclass,
        edns,
    };
    if edns.is_some_and(|e| e.version != 0) {
        return Err(QueryError::BadVers(q));
    }
    Ok((q, name_len + 5))
}

/// Skips a (possibly compressed) name starting at `at`; returns the offset after it. A pointer must point
/// strictly backwards (to a prior name), which also rules out loops.
pub fn skip_name(m: &[u8], mut at: usize) -> Result<usize, Malformed> {
    let start = at;
    loop {
        let len = *m.get(at).ok_or(Malformed)?;
        match len & 0xc0 {
            0x00 => {
                at += 1 + len as usize;
                if at > m.len() || at - start > MAX_NAME {
                    return Err(Malformed);
                }
                if len == 0 {
                    return Ok(at);
                }
            }
            0xc0 => {
                let b = *m.get(at + 1).ok_or(Malformed)?;
                let target = usize::from(len & 0x3f) << 8 | usize::from(b);
                if target >= start || target < HEADER_LEN {
                    return Err(Malformed);
                }
                return Ok(at + 2);
            }
            _ => return Err(Malformed),
        }
    }
}

/// A message whose framing does not hold (bad name, record past the end, forward pointer, misplaced OPT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// One resource record's framing.
#[derive(Debug, Clone, Copy)]
pub struct Rr {
    pub start: usize,
    pub name_len: usize,
    pub rtype: u16,
    pub ttl_at: usize,
    pub rdata: usize,
    pub end: usize,
}

pub fn read_rr(m: &[u8], at: usize) -> Result<Rr, Malformed> {
    let n = skip_name(m, at)?;
    if n + 10 > m.len() {
        return Err(Malformed);
    }
    let rdlen = be16(m, n + 8) as usize;
    let end = n + 10 + rdlen;
    if end > m.len() {
        return Err(Malformed);
    }
    Ok(Rr { start: at, name_len: n - at, rtype: be16(m, n), ttl_at: n + 4, rdata: n + 10, end })
}

/// Section of a record in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// The framing of an upstream answer, as checked by `walk_answer`.
#[derive(Debug, Default)]
pub struct Walk {
    /// (section, record) for every RR except the OPT, in order.
    pub rrs: Vec<(Section, Rr)>,
    /// The OPT RR, if any: its extended RCODE bits and its byte range.
    pub opt: Option<(u8, Rr)>,
    /// End of the last counted RR.
    pub end: usize,
}

/// Walks every RR of an upstream message whose question was already checked to end at `question_end`.
pub fn walk_answer(m: &[u8], question_end: usize) -> Result<Walk, Malformed> {
    let (an, ns, ar) = (be16(m, 6) as usize, be16(m, 8) as usize, be16(m, 10) as usize);
    let mut w = Walk { rrs: Vec::with_capacity(an + ns + ar), opt: None, end: question_end };
    let mut at = question_end;
    for n in 0..an + ns + ar {
        let rr = read_rr(m, at)?;
        let section = if n < an {
            Section::Answer
        } else if n < an + ns {
            Section::Authority
        } else {
            Section::Additional
        };
        if rr.rtype == TYPE_OPT {
            if section != Section::Additional || w.opt.is_some() || rr.name_len != 1 {
                return Err(Malformed);
            }
            w.opt = Some((m[rr.ttl_at], rr));
        } else {
            w.rrs.push((section, rr));
        }
        at = rr.end;
    }
    w.end = at;
    Ok(w)
}

/// Presentation form of an uncompressed wire name ("www.example.com"; the root is "."), with `\DDD` escapes for
/// dots, backslashes and anything not printable ASCII: names are hostile input.
pub fn name_to_string(wire: &[u8]) -> String {
    let mut s = String::with_capacity(wire.len());
    let mut i = 0;
    while let Some(&len) = wire.get(i) {
        if len == 0 || len > 63 {
            break;
        }
        let end = (i + 1 + len as usize).min(wire.len());
        if !s.is_empty() {
            s.push('.');
        }
        for &c in &wire[i + 1..end] {
            if c.is_ascii_graphic() && c != b'.' && c != b'\\' {
                s.push(c as char);
            } else {
                s.push_str(&format!("\\{c:03}"));
            }
        }
        i = end;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// Iterates the label start offsets of an uncompressed wire name (the root octet excluded).
pub fn label_starts(wire: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        let len = *wire.get(i)? as usize;
        if len == 0 {
            return None;
        }
        let at = i;
        i += 1 + len;
        Some(at)
    })
}

/// Wire form of a dotted name ("10.in-addr.arpa" -> "\x0210\x07in-addr\x04arpa\x00"), lowercased. Empty labels are
/// skipped; labels longer than 63 bytes are cut.
pub fn wire_name(dotted: &str) -> Vec<u8> {
    let mut w = Vec::with_capacity(dotted.len() + 2);
    for l in dotted.split('.').filter(|l| !l.is_empty()) {
        let l = &l.as_bytes()[..l.len().min(63)];
        w.push(l.len() as u8);
        w.extend(l.iter().map(|c| c.to_ascii_lowercase()));
    }
    w.push(0);
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(wire_name("10.In-Addr.arpa."), b"\x0210\x07in-addr\x04arpa\x00");
        assert_eq!(name_to_string(b"\x03www\x03a.b\x00"), "www.a\\046b");
        assert_eq!(name_to_string(b"\x00"), ".");
        assert_eq!(label_starts(b"\x01a\x02bc\x00").collect::<Vec<_>>(), vec![0, 2]);
    }

    #[test]
    fn skip_name_rejects_forward_pointers_and_loops() {
        let mut m = vec![0u8; 12];
        m.extend_from_slice(b"\xc0\x0c");
        assert!(skip_name(&m, 12).is_err()); // points to itself
        m.extend_from_slice(b"\xc0\x0e");
        assert!(skip_name(&m, 14).is_err()); // to a pointer at itself
        let mut m = vec![0u8; 12];
        m.extend_from_slice(b"\x01a\x00\xc0\x0c");
        assert_eq!(skip_name(&m, 15), Ok(17));
    }
}
