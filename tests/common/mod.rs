//! Shared helpers for the end-to-end tests: they need root, and build their own lab of namespaces.
#![allow(dead_code)]

use gatekeeper::lab::{Lab, LabOptions, Proc};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_gatekeeper"))
}

pub fn lab(clients: usize) -> Lab {
    Lab::new(LabOptions { clients, host_link: false }).expect("building the lab (the end-to-end tests need root)")
}

pub fn state_dir(lab: &Lab, name: &str) -> PathBuf {
    lab.dir().join(name)
}

/// Starts the gateway in the lab's `gw` namespace and waits until its LAN is up.
pub fn start_ready(lab: &Lab, args: &[&str], log: &str) -> Proc {
    let mut gw = lab.start_gateway(binary(), args, log).expect("start gateway");
    gw.wait_for_log("LAN ready", Duration::from_secs(20)).unwrap();
    gw
}

pub fn assert_same(before: &str, after: &str, what: &str) {
    if before != after {
        panic!("{what} differs.\n--- before\n{before}\n--- after\n{after}");
    }
}

/// Writes a gateway config file into the lab directory.
pub fn config_file(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let path = lab.dir().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub mod dhcp {
    use dhcproto::v4::{DhcpOption, Flags, Message, MessageType};
    use dhcproto::{Decodable, Encodable};
    use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
    use std::time::Duration;

    pub fn packet(kind: MessageType, mac: [u8; 6], edit: impl FnOnce(&mut Message)) -> Vec<u8> {
        let z = Ipv4Addr::UNSPECIFIED;
        let mut m = Message::new(z, z, z, z, &mac);
        m.set_flags(Flags::default().set_broadcast());
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        edit(&mut m);
        m.to_vec().unwrap()
    }

    /// A client-side socket on eth0 of the namespace the calling thread is in (port 68, broadcast allowed).
    pub fn client_socket() -> UdpSocket {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_broadcast(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68).into()).unwrap();
        let s: UdpSocket = s.into();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s
    }

    pub fn send(s: &UdpSocket, bytes: &[u8]) {
        s.send_to(bytes, (Ipv4Addr::BROADCAST, 67)).unwrap();
    }

    /// The next reply for `xid`, if one comes within the socket's timeout.
    pub fn recv(s: &UdpSocket, xid: u32) -> Option<Message> {
        let mut buf = [0u8; 1500];
        loop {
            let (n, _) = s.recv_from(&mut buf).ok()?;
            if let Ok(m) = Message::from_bytes(&buf[..n])
                && m.xid() == xid
            {
                return Some(m);
            }
        }
    }

    pub fn kind(m: &Message) -> Option<MessageType> {
        match m.opts().get(dhcproto::v4::OptionCode::MessageType) {
            Some(DhcpOption::MessageType(t)) => Some(*t),
            _ => None,
        }
    }
}

/// Runs `f` on a background thread inside namespace `ns` (sockets it opens live there).
pub fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = std::path::Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
}

/// The value of the counter `name` in the `counters` array of a JSON view (`/api/nat`), summed over its labels.
pub fn counter(view: &serde_json::Value, name: &str) -> Option<u64> {
    let found: Vec<&serde_json::Value> = view["counters"].as_array()?.iter().filter(|c| c["name"] == name).collect();
    if found.is_empty() {
        return None;
    }
    found.iter().map(|c| c["value"].as_u64()).sum()
}
