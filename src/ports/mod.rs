//! Ports of the WAN address: explicit port forwards (and, to come, the WAN port inventory and the port mapping
//! protocols).

pub mod forward;

pub use forward::{ForwardError, PortForward, Protocols};
