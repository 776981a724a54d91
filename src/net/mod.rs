//! The kernel shell: rtnetlink (links, addresses, routes, bridge), sysctls, and the LAN set-up built on them.

pub mod coalesce;
pub mod firewall;
pub mod mmsg;
pub mod netlink;
pub mod plan;
pub mod setup;
pub mod sockdiag;
pub mod subnet;
