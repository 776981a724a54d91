//! Choosing the LAN subnet: the first private network of the wanted size that overlaps nothing the machine already
//! has an address in or a route to. Pure, so it is tested without a kernel.

use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubnetError {
    #[error("subnet {wanted} overlaps {taken}, which is already in use on this machine; choose another with --subnet")]
    Overlaps { wanted: Ipv4Net, taken: Ipv4Net },
    #[error(
        "no free private /{prefix} is left: every candidate in 10.0.0.0/8, 192.168.0.0/16 and 172.16.0.0/12 overlaps \
         an address or route on this machine; pass a free one with --subnet"
    )]
    Exhausted { prefix: u8 },
}

/// The private blocks searched, in order of preference (10/8 first: least likely to collide with an ISP box).
const PRIVATE_BLOCKS: [(Ipv4Addr, u8); 3] =
    [(Ipv4Addr::new(10, 0, 0, 0), 8), (Ipv4Addr::new(192, 168, 0, 0), 16), (Ipv4Addr::new(172, 16, 0, 0), 12)];

pub fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Picks the LAN subnet. `requested` is checked, not searched; otherwise the first free `/prefix` is taken.
/// `in_use` holds the networks of every address and every non-default route.
pub fn choose(requested: Option<Ipv4Net>, prefix: u8, in_use: &[Ipv4Net]) -> Result<Ipv4Net, SubnetError> {
    let conflict = |cand: &Ipv4Net| in_use.iter().find(|used| used.prefix_len() > 0 && overlaps(cand, used)).copied();
    if let Some(wanted) = requested {
        return match conflict(&wanted) {
            Some(taken) => Err(SubnetError::Overlaps { wanted, taken }),
            None => Ok(wanted),
        };
    }
    for (base, block_prefix) in PRIVATE_BLOCKS {
        let block = Ipv4Net::new(base, block_prefix).expect("valid block");
        if prefix < block_prefix {
            continue;
        }
        let Ok(subnets) = block.subnets(prefix) else { continue };
        // Jump past whole conflicting ranges instead of testing 65,536 /24s one by one.
        let mut iter = subnets.peekable();
        while let Some(cand) = iter.next() {
            match conflict(&cand) {
                None => return Ok(cand),
                Some(taken) if taken.prefix_len() < prefix => {
                    let end = u32::from(taken.broadcast());
                    while iter.peek().is_some_and(|n| u32::from(n.network()) <= end) {
                        iter.next();
                    }
                }
                Some(_) => {}
            }
        }
    }
    Err(SubnetError::Exhausted { prefix })
}

/// The router's address in the LAN: the first host (`.1` of a /24).
pub fn router_address(subnet: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<Ipv4Net> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn first_free_is_10_0_0() {
        assert_eq!(choose(None, 24, &[]).unwrap().to_string(), "10.0.0.0/24");
    }

    #[test]
    fn skips_addresses_and_routes() {
        let used = nets(&["10.0.0.5/24", "10.0.1.0/24", "127.0.0.0/8", "203.0.113.2/24"]);
        assert_eq!(choose(None, 24, &used).unwrap().to_string(), "10.0.2.0/24");
    }

    #[test]
    fn a_host_route_blocks_its_subnet() {
        assert_eq!(choose(None, 24, &nets(&["10.0.0.200/32"])).unwrap().to_string(), "10.0.1.0/24");
    }

    #[test]
    fn default_route_is_ignored() {
        assert_eq!(choose(None, 24, &nets(&["0.0.0.0/0"])).unwrap().to_string(), "10.0.0.0/24");
    }

    #[test]
    fn wide_routes_move_to_the_next_block() {
        // A VPN routing all of 10/8 pushes the choice to 192.168.0.0/24.
        assert_eq!(choose(None, 24, &nets(&["10.0.0.0/8"])).unwrap().to_string(), "192.168.0.0/24");
        let used = nets(&["10.0.0.0/8", "192.168.0.0/17"]);
        assert_eq!(choose(None, 24, &used).unwrap().to_string(), "192.168.128.0/24");
    }

    #[test]
    fn other_sizes() {
        assert_eq!(choose(None, 16, &nets(&["10.0.3.0/24"])).unwrap().to_string(), "10.1.0.0/16");
        assert_eq!(choose(None, 28, &nets(&["10.0.0.0/28"])).unwrap().to_string(), "10.0.0.16/28");
    }

    #[test]
    fn exhaustion() {
        let used = nets(&["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]);
        assert_eq!(choose(None, 24, &used), Err(SubnetError::Exhausted { prefix: 24 }));
        let msg = choose(None, 24, &used).unwrap_err().to_string();
        assert!(msg.contains("--subnet"), "{msg}");
    }

    #[test]
    fn requested_subnet_is_checked() {
        let used = nets(&["192.168.1.20/24"]);
        let wanted: Ipv4Net = "192.168.1.0/24".parse().unwrap();
        let e = choose(Some(wanted), 24, &used).unwrap_err();
        assert_eq!(e, SubnetError::Overlaps { wanted, taken: used[0] });
        assert!(e.to_string().contains("192.168.1.0/24"));
        let wanted: Ipv4Net = "192.168.2.0/24".parse().unwrap();
        assert_eq!(choose(Some(wanted), 24, &used), Ok(wanted));
        // A requested subnet that contains a used one overlaps too.
        let wanted: Ipv4Net = "192.168.0.0/16".parse().unwrap();
        assert!(choose(Some(wanted), 16, &used).is_err());
    }

    #[test]
    fn router_is_dot_one() {
        assert_eq!(router_address(&"10.0.7.0/24".parse().unwrap()), Ipv4Addr::new(10, 0, 7, 1));
    }
}
