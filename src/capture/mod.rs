//! Retroactive packet capture: a ring of recent packets per LAN device, as the device sees them, downloadable as
//! pcapng or pcap, and a live view of its packets.
//!
//! - `ring`: one device's ring, sans IO; `core`: every device's ring and settings, keyed by MAC.
//! - `shell`: the capture thread (drains the packet path's taps, `datapath::tap`, and the DNS/DHCP feed) and the
//!   [`CaptureHandle`](shell::CaptureHandle).
//! - `frame`: IPv4/UDP framing of the router's own exchanges; `packet`: header reading; `filter`: a download's
//!   window and filters; `pcap`: the file formats; `summary`: the live view's lines.

pub mod core;
pub mod filter;
pub mod frame;
pub mod packet;
pub mod pcap;
pub mod ring;
pub mod shell;
pub mod summary;

pub use shell::{CaptureHandle, LocalFeed};
