//! Ports of the WAN address: explicit port forwards (`forward`, `core`), what every port is used for
//! (`inventory`), and the port mapping protocols apps use to ask for ports (`mapping`, `pmp`, `upnp`, `proto`),
//! with their IO in `shell` and `proto`.

pub mod core;
pub mod forward;
pub mod inventory;
pub mod mapping;
pub mod pmp;
pub mod proto;
pub mod shell;
pub mod upnp;

pub use forward::{ForwardError, PortForward, Protocols};
pub use shell::PortsHandle;
