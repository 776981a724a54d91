//! DHCPv4: a sans-IO server core, its lease store, and the socket shell around them.

pub mod ethers;
pub mod lease;
pub mod store;
