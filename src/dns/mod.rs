//! DNS: a sans-IO caching forwarder with a local zone and a per-device query log (`core`), its wire views, and
//! the UDP+TCP socket shell around it (`shell`).

mod cache;
pub mod core;
mod local;
mod log;
pub mod resolvconf;
pub mod shell;
pub mod wire;

pub use self::core::*;
pub use self::local::special_zones;
pub use self::log::{Device, LogEntry, NAMES_PER_DEVICE};
