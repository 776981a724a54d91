//! The vendor of a MAC address from its first three bytes: the IEEE registry's MA-L assignments, embedded
//! (`oui.tsv`, built by `scripts/oui.py` from the registry's oui.csv; Debian's ieee-data of 2022-08-27, 32,527
//! prefixes), so the UI needs no network. A locally administered address (random per network, as phones use)
//! has no vendor.

use crate::types::Mac;
use std::sync::OnceLock;

const TABLE: &str = include_str!("oui.tsv");

fn table() -> &'static [(u32, &'static str)] {
    static T: OnceLock<Vec<(u32, &'static str)>> = OnceLock::new();
    T.get_or_init(|| {
        let mut v: Vec<(u32, &'static str)> = TABLE
            .lines()
            .filter_map(|l| {
                let (p, name) = l.split_once('\t')?;
                Some((u32::from_str_radix(p, 16).ok()?, name))
            })
            .collect();
        v.sort_unstable_by_key(|&(p, _)| p);
        v
    })
}

/// The registered vendor of `mac`, if any.
pub fn vendor(mac: &Mac) -> Option<&'static str> {
    let b = mac.octets();
    if b[0] & 0x02 != 0 {
        return None; // locally administered: no vendor owns it
    }
    let prefix = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
    let t = table();
    t.binary_search_by_key(&prefix, |&(p, _)| p).ok().map(|i| t[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_prefixes_and_private_addresses() {
        assert_eq!(vendor(&"b8:27:eb:12:34:56".parse().unwrap()), Some("Raspberry Pi Foundation"));
        assert_eq!(vendor(&"00:16:3e:00:00:01".parse().unwrap()), Some("Xensource, Inc."));
        assert_eq!(vendor(&"02:16:3e:00:00:01".parse().unwrap()), None, "locally administered");
        assert!(table().len() > 30_000);
        assert!(table().windows(2).all(|w| w[0].0 < w[1].0), "sorted, no duplicates");
        assert!(table().iter().all(|(_, n)| !n.is_empty() && !n.contains('\t')));
    }
}
