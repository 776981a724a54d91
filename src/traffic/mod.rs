//! Traffic you can see: every packet's record from the packet path, summed into 100 ms buckets per (device,
//! remote) pair, streamed live as ticks and kept for 24 hours, with per-device hourly totals for 90 days.
//!
//! - `series`: one pair's compact history (only active buckets, a few bytes each).
//! - `core`: the sans-IO core (records, hosts and time in; ticks, history and queries out).
//! - `snapshot`: the history on disk, restored at start; damage is skipped, never fatal.
//! - `query`: the HTTP API's parameters, checked and bounded.
//! - `shell`: the thread that drains the rings and runs the core, and the [`shell::TrafficHandle`].

pub mod core;
pub mod query;
pub mod series;
pub mod shell;
pub mod snapshot;

pub use self::core::{BUCKET_MS, Select, Tick, Traffic, TrafficConfig};
