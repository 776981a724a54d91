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

/// The value of the counter `name` with these labels in an API view's `counters` list (the program's one counter
/// shape: `{"name","labels","kind","value"}`), summed over the matches; `None` if there is none.
pub fn counter(counters: &serde_json::Value, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
    let mut found = None;
    for c in counters.as_array()?.iter().filter(|c| c["name"] == name) {
        if labels.iter().all(|(k, v)| c["labels"][k] == *v) {
            *found.get_or_insert(0) += c["value"].as_u64()?;
        }
    }
    found
}

/// Logs in to the web UI at `ui` (`http://10.0.0.1:1337`) with `password`, from namespace `ns`: the session
/// cookie's value.
pub fn login_at(ns: &str, ui: &str, password: &str) -> String {
    let body = serde_json::json!({ "password": password }).to_string();
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "curl", "-s", "-m5", "-D", "-", "-o", "/dev/null"])
        .args(["-H", "Content-Type: application/json", "-d", &body, &format!("{ui}/api/login")])
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stdout);
    head.lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("set-cookie: gk_session=").map(str::to_owned))
        .and_then(|v| v.split(';').next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no session cookie in the login answer:\n{head}"))
}

/// Logs in as the admin from namespace `ns`, with the password the gateway generated in `state`.
pub fn login(ns: &str, state: &Path) -> String {
    let password = std::fs::read_to_string(state.join("admin-password")).expect("the generated admin password");
    login_at(ns, "http://10.0.0.1:1337", password.trim())
}

/// The admin's session cookie header and CSRF token, from namespace `ns` (see [`login`]).
pub fn admin(lab: &Lab, ns: &str) -> (String, String) {
    let cookie = format!("Cookie: gk_session={}", login(ns, &state_dir(lab, "state")));
    let url = "http://10.0.0.1:1337/api/session";
    let s = lab.run(ns, &["curl", "-sf", "-m5", "-H", &cookie, url]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&s).unwrap();
    (cookie, v["csrf"].as_str().unwrap().to_owned())
}

/// `GET path` of the web API from `ns`, logged in as the admin of the gateway whose state is in the lab's
/// `state` directory (see [`login`]).
pub fn api_get(lab: &Lab, ns: &str, path: &str) -> String {
    let cookie = format!("Cookie: gk_session={}", login(ns, &state_dir(lab, "state")));
    let url = format!("http://10.0.0.1:1337{path}");
    lab.run(ns, &["curl", "-sf", "-m5", "-H", &cookie, &url]).unwrap_or_else(|e| panic!("GET {path}: {e:#}"))
}

/// A TCP echo server on `addr` in namespace `ns`: each connection's first read (up to 64 bytes) is written back.
/// Runs until `stop`.
pub fn tcp_echo(ns: &str, addr: std::net::SocketAddrV4, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::io::{Read, Write};
    spawn_in(ns, move || {
        let l = std::net::TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            match l.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let mut b = [0u8; 64];
                    if let Ok(n) = c.read(&mut b) {
                        let _ = c.write_all(&b[..n]);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
}
