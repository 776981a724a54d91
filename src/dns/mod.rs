//! DNS: a sans-IO caching forwarder with a local zone and a per-device query log (`core`), and its wire views.

mod cache;
pub mod core;
mod local;
mod log;
pub mod wire;

pub use self::core::*;
pub use self::local::special_zones;
pub use self::log::{Device, LogEntry, NAMES_PER_DEVICE};
