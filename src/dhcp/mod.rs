//! DHCPv4: a sans-IO server core, its lease store, and the socket shell around them.

pub mod devices;
pub mod ethers;
pub mod hostname;
pub mod lease;
mod options;
mod pool;
pub mod server;
pub mod shell;
pub mod store;
pub mod wire;
