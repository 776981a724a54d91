//! Host names clients send (option 12, option 81) are hostile input: reduce them to one DNS label.

/// Longest DNS label (RFC 1035).
pub const MAX_LABEL: usize = 63;

/// Reduces a client-sent name to a DNS label: the first label (up to '.' or NUL), ASCII letters lowercased,
/// digits and '-' kept, ' ' and '_' turned into '-', anything else dropped; no leading or trailing '-';
/// at most 63 bytes. `None` when nothing is left.
pub fn sanitize(raw: &[u8]) -> Option<String> {
    let mut out = String::with_capacity(MAX_LABEL);
    for &b in raw {
        if b == b'.' || b == 0 {
            break;
        }
        let c = match b {
            b'a'..=b'z' | b'0'..=b'9' | b'-' => b,
            b'A'..=b'Z' => b.to_ascii_lowercase(),
            b' ' | b'_' => b'-',
            _ => continue,
        };
        if c == b'-' && out.is_empty() {
            continue;
        }
        out.push(char::from(c));
        if out.len() == MAX_LABEL {
            break;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}

/// The host name in a Client FQDN option (RFC 4702): flags, two obsolete rcode bytes, then the name, in DNS wire
/// format when the E flag (0x04) is set, else ASCII. Only the first label is kept, sanitized.
pub fn from_fqdn(data: &[u8]) -> Option<String> {
    let (&flags, rest) = data.split_first()?;
    let name = rest.get(2..)?;
    if flags & 0x04 != 0 {
        let (&len, labels) = name.split_first()?;
        // A compression pointer or an over-long label is not a host name.
        if len == 0 || len as usize > MAX_LABEL {
            return None;
        }
        sanitize(labels.get(..len as usize)?)
    } else {
        sanitize(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let long = "a".repeat(100);
        let long_dash = format!("{}-b", "a".repeat(62));
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"laptop", Some("laptop")),
            (b"Jons-iPhone", Some("jons-iphone")),
            (b"My Laptop", Some("my-laptop")),
            (b"host_name", Some("host-name")),
            (b"host.example.com", Some("host")),
            (b"printer\0garbage", Some("printer")),
            (b"--edge--", Some("edge")),
            (b"-", None),
            (b"", None),
            (b"...", None),
            (b"\xff\xfe\x00", None),
            ("caf\u{e9}".as_bytes(), Some("caf")),
            (b"a<script>b", Some("ascriptb")),
            (b"x;rm -rf /", Some("xrm--rf")),
            (long.as_bytes(), Some(&long[..63])),
            // Truncation to 63 must not leave a trailing '-'.
            (long_dash.as_bytes(), Some(&long_dash[..62])),
            (b"123", Some("123")),
        ];
        for (raw, want) in cases {
            assert_eq!(sanitize(raw).as_deref(), *want, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn sanitized_names_are_labels() {
        let mut x = 0x9e3779b97f4a7c15u64;
        for _ in 0..2000 {
            let len = (x % 300) as usize;
            let raw: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            if let Some(s) = sanitize(&raw) {
                assert!(s.len() <= MAX_LABEL && !s.starts_with('-') && !s.ends_with('-'));
                assert!(s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
            }
            let _ = from_fqdn(&raw);
        }
    }

    #[test]
    fn fqdn_forms() {
        assert_eq!(from_fqdn(b"\x00\x00\x00Laptop.lan").as_deref(), Some("laptop"));
        assert_eq!(from_fqdn(b"\x04\x00\x00\x06Laptop\x03lan\x00").as_deref(), Some("laptop"));
        assert_eq!(from_fqdn(b"\x04\x00\x00\x06Lap"), None); // label runs past the end
        assert_eq!(from_fqdn(b"\x04\x00\x00\xc0\x0c"), None); // compression pointer
        assert_eq!(from_fqdn(b"\x04\x00"), None);
        assert_eq!(from_fqdn(b""), None);
    }
}
