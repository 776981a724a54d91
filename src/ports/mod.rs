//! Ports of the WAN address: explicit port forwards, the port mapping protocols' interface (and, to come, the WAN
//! port inventory and the protocols themselves).

pub mod core;
pub mod forward;
pub mod inventory;
pub mod mapping;

pub use forward::{ForwardError, PortForward, Protocols};
