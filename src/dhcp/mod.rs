//! DHCPv4: a sans-IO server core, its lease store, and the socket shell around them.

pub mod lease;
pub mod hostname;
mod options;
mod pool;
pub mod server;
pub mod wire;
