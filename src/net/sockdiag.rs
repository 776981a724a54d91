//! The router's own listening sockets, from the kernel's sock_diag (what `ss -ltunp` shows): TCP sockets in
//! LISTEN and unconnected UDP sockets, with the process that holds each (found as `ss -p` does, by the socket's
//! inode among `/proc/PID/fd`). Blocking; the ports shell calls it on a blocking thread.

use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP, IPPROTO_UDP, TCP_CLOSE, TCP_LISTEN};
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, SocketId, StateFlags};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};
use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listening {
    pub proto: Proto,
    pub address: IpAddr,
    pub port: u16,
    pub inode: u32,
    /// The interface the socket is bound to (SO_BINDTODEVICE), 0 for none.
    pub interface: u32,
}

/// Every TCP socket in LISTEN and every UDP socket with no peer, IPv4 and IPv6, in this network namespace.
pub fn listening() -> io::Result<Vec<Listening>> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut out = Vec::new();
    for (proto, ipproto, states) in [
        (Proto::Tcp, IPPROTO_TCP, StateFlags::LISTEN),
        // An unconnected UDP socket is in TCP_CLOSE as far as sock_diag goes; a connected one is ESTABLISHED.
        (Proto::Udp, IPPROTO_UDP, StateFlags::CLOSE),
    ] {
        for family in [AF_INET, AF_INET6] {
            dump(&mut socket, proto, family, ipproto, states.clone(), &mut out)?;
        }
    }
    Ok(out)
}

fn dump(
    socket: &mut Socket,
    proto: Proto,
    family: u8,
    protocol: u8,
    states: StateFlags,
    out: &mut Vec<Listening>,
) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    let request = InetRequest { family, protocol, extensions: ExtensionFlags::empty(), states, socket_id };
    let mut packet = NetlinkMessage::new(header, SockDiagMessage::InetRequest(request).into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut rx = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut rx[..], 0)?;
        let mut at = 0;
        while at < n {
            let msg = <NetlinkMessage<SockDiagMessage>>::deserialize(&rx[at..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("sock_diag: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    let h = &r.header;
                    let wanted = match proto {
                        Proto::Tcp => h.state == TCP_LISTEN,
                        Proto::Udp => h.state == TCP_CLOSE && h.socket_id.destination_port == 0,
                    };
                    if wanted {
                        out.push(Listening {
                            proto,
                            address: h.socket_id.source_address,
                            port: h.socket_id.source_port,
                            inode: h.inode,
                            interface: h.socket_id.interface_id,
                        });
                    }
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            at += len;
        }
    }
}

/// socket inode -> (process name, PID), for the inodes asked about: a walk of `/proc/*/fd`, stopping once all are
/// found. Processes that go away meanwhile, or whose fds cannot be read, are skipped.
pub fn owners(inodes: &[u32]) -> HashMap<u32, (String, u32)> {
    let mut left: std::collections::HashSet<u32> = inodes.iter().copied().filter(|&i| i != 0).collect();
    let mut found = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return found };
    for p in procs.flatten() {
        if left.is_empty() {
            break;
        }
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u32>().ok())
            else {
                continue;
            };
            if left.remove(&inode) {
                let name = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                found.insert(inode, (name.trim().to_owned(), pid));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Our own listening sockets (on loopback: no namespace needed) are found, with this process as the owner.
    #[test]
    fn finds_own_listeners_and_their_process() {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (tp, up) = (tcp.local_addr().unwrap().port(), udp.local_addr().unwrap().port());
        let all = listening().unwrap();
        let t = all.iter().find(|l| l.proto == Proto::Tcp && l.port == tp).expect("tcp listener");
        let u = all.iter().find(|l| l.proto == Proto::Udp && l.port == up).expect("udp socket");
        let owners = owners(&[t.inode, u.inode]);
        assert_eq!(owners.get(&t.inode).map(|o| o.1), Some(std::process::id()));
        assert_eq!(owners.get(&u.inode).map(|o| o.1), Some(std::process::id()));
    }
}
