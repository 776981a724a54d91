//! Batched UDP over IPv4: one `recvmmsg` for many datagrams, one `sendmmsg` for many replies (DESIGN: batch the
//! socket calls). Buffers are allocated once and reused; nothing here allocates per datagram.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;

fn to_sockaddr(a: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*a.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(s: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr)), u16::from_be(s.sin_port))
}

/// Points one message header at its iovecs (filled by the caller) and address slot. Redone before every call: the header
/// holds raw pointers, so it is never kept across moves of the owning struct.
fn point(hdr: &mut libc::mmsghdr, iovs: &mut [libc::iovec], addr: &mut libc::sockaddr_in) {
    let h = &mut hdr.msg_hdr;
    h.msg_name = (addr as *mut libc::sockaddr_in).cast();
    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    h.msg_iov = iovs.as_mut_ptr();
    h.msg_iovlen = iovs.len() as _;
    h.msg_control = std::ptr::null_mut();
    h.msg_controllen = 0;
    h.msg_flags = 0;
    hdr.msg_len = 0;
}

/// An iovec over all of `buf` (the kernel writes through it on receive).
fn iovec(buf: &mut [u8]) -> libc::iovec {
    libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() }
}

/// Receives up to `capacity` datagrams per call.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_in>,
    lens: Vec<usize>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    count: usize,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` are rebuilt before every syscall and never dereferenced elsewhere.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(capacity: usize, buf_size: usize) -> Self {
        // SAFETY: zeroed iovec/mmsghdr/sockaddr_in are valid (null pointers, zero lengths).
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        RecvBatch {
            bufs: vec![vec![0u8; buf_size]; capacity],
            addrs: vec![zero_addr; capacity],
            lens: vec![0; capacity],
            iovs: vec![zero_iov; capacity],
            hdrs: vec![zero_hdr; capacity],
            count: 0,
        }
    }

    /// One non-blocking `recvmmsg`; returns how many datagrams arrived (`WouldBlock` when none).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_DONTWAIT)
    }

    /// One `recvmmsg` that sleeps until the first datagram (or the socket's receive timeout: `WouldBlock`), then
    /// takes whatever else is already there: for a thread that does nothing but serve the socket.
    pub fn recv_wait(&mut self, fd: RawFd) -> io::Result<usize> {
        self.recv_flags(fd, libc::MSG_WAITFORONE)
    }

    fn recv_flags(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        for i in 0..self.bufs.len() {
            self.iovs[i] = iovec(&mut self.bufs[i]);
            point(&mut self.hdrs[i], &mut self.iovs[i..=i], &mut self.addrs[i]);
        }
        // SAFETY: every header points at live buffers owned by self, sized as declared.
        let n =
            unsafe { libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), self.hdrs.len() as u32, flags, std::ptr::null_mut()) };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for i in 0..self.count {
            self.lens[i] = self.hdrs[i].msg_len as usize;
        }
        Ok(self.count)
    }

    /// Datagram `i` of the last `recv`: its bytes (truncated to the buffer if longer) and sender.
    pub fn get(&self, i: usize) -> (&[u8], SocketAddrV4) {
        (&self.bufs[i][..self.lens[i].min(self.bufs[i].len())], from_sockaddr(&self.addrs[i]))
    }

    /// Whether datagram `i` was longer than the buffer.
    pub fn truncated(&self, i: usize) -> bool {
        self.hdrs[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0
    }
}

/// Datagrams at most this long are coalesced into one UDP GSO send: under any link MTU of 1280 or more, so the
/// kernel never refuses a segment size as larger than the path allows.
const GSO_MAX_SEGMENT: usize = 1200;
/// Segments per GSO send (the kernel's limit is 64 or 128 depending on the version).
const GSO_MAX_SEGMENTS: usize = 64;
/// Room for one `cmsghdr` with a u16 (UDP_SEGMENT), 8-byte aligned.
type Cmsg = [u64; 4];

/// Queues datagrams and sends them with as few `sendmmsg` calls as possible. Datagrams of the same length to the
/// same destination leave as one UDP GSO message (`UDP_SEGMENT`): the stack below the socket (routing, netfilter,
/// the link, the receiver's IP layer) runs once for all of them and the segments are split at the end, which is
/// most of the cost of a small datagram. If the kernel or the route refuses GSO, the batch falls back to one
/// message per datagram for good.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_in>,
    /// Queue positions in sending order: grouped by (destination, length).
    order: Vec<usize>,
    /// Per outgoing message: its first position in `order` and its number of datagrams.
    msgs: Vec<(usize, usize)>,
    cmsgs: Vec<Cmsg>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
    gso: bool,
}

// SAFETY: as for RecvBatch.
unsafe impl Send for SendBatch {}

impl SendBatch {
    pub fn new(capacity: usize) -> Self {
        // SAFETY: as above.
        let zero_iov: libc::iovec = unsafe { std::mem::zeroed() };
        let zero_hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        let zero_addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        SendBatch {
            bufs: vec![Vec::with_capacity(512); capacity],
            addrs: vec![zero_addr; capacity],
            order: Vec::with_capacity(capacity),
            msgs: Vec::with_capacity(capacity),
            cmsgs: vec![[0; 4]; capacity],
            iovs: vec![zero_iov; capacity],
            hdrs: vec![zero_hdr; capacity],
            len: 0,
            gso: true,
        }
    }

    /// Sends one message per datagram from now on (also what happens when the kernel refuses GSO).
    pub fn without_gso(mut self) -> Self {
        self.gso = false;
        self
    }

    pub fn gso_enabled(&self) -> bool {
        self.gso
    }

    pub fn is_full(&self) -> bool {
        self.len == self.bufs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A cleared buffer for the next datagram to `to`; it is queued when `commit` is called.
    pub fn slot(&mut self, to: SocketAddrV4) -> &mut Vec<u8> {
        assert!(!self.is_full(), "flush before queuing more");
        self.addrs[self.len] = to_sockaddr(to);
        let b = &mut self.bufs[self.len];
        b.clear();
        b
    }

    /// Queues the datagram written into the last `slot`.
    pub fn commit(&mut self) {
        self.len += 1;
    }

    /// Groups the datagrams at the queue positions in `order` into messages: runs of equal (destination, length)
    /// become one GSO message each.
    fn plan(&mut self) {
        self.msgs.clear();
        if self.gso {
            let (addrs, bufs) = (&self.addrs, &self.bufs);
            self.order.sort_unstable_by_key(|&i| (addrs[i].sin_addr.s_addr, addrs[i].sin_port, bufs[i].len()));
        }
        let mut at = 0;
        while at < self.order.len() {
            let first = self.order[at];
            let (a, l) = (self.addrs[first], self.bufs[first].len());
            let mut n = 1;
            if self.gso && l > 0 && l <= GSO_MAX_SEGMENT {
                while at + n < self.order.len() && n < GSO_MAX_SEGMENTS {
                    let j = self.order[at + n];
                    let b = self.addrs[j];
                    if b.sin_addr.s_addr != a.sin_addr.s_addr || b.sin_port != a.sin_port || self.bufs[j].len() != l {
                        break;
                    }
                    n += 1;
                }
            }
            self.msgs.push((at, n));
            at += n;
        }
    }

    /// Points message `m`'s header at its datagrams, one iovec each (in `order`, so a message's iovecs are
    /// adjacent); a run of several gets a UDP_SEGMENT cmsg, and the kernel gathers it without a copy here.
    fn point_msg(&mut self, m: usize) {
        let (at, n) = self.msgs[m];
        for k in at..at + n {
            self.iovs[k] = iovec(&mut self.bufs[self.order[k]]);
        }
        let first = self.order[at];
        point(&mut self.hdrs[m], &mut self.iovs[at..at + n], &mut self.addrs[first]);
        if n == 1 {
            return;
        }
        let seg = self.bufs[first].len();
        let ctl = &mut self.cmsgs[m];
        // SAFETY: `ctl` is 32 bytes, 8-byte aligned: room for CMSG_SPACE(2) = 24; the header points at it.
        unsafe {
            let h = &mut self.hdrs[m].msg_hdr;
            h.msg_control = ctl.as_mut_ptr().cast();
            h.msg_controllen = libc::CMSG_SPACE(2) as _;
            let c = libc::CMSG_FIRSTHDR(h);
            (*c).cmsg_level = libc::SOL_UDP;
            (*c).cmsg_type = libc::UDP_SEGMENT;
            (*c).cmsg_len = libc::CMSG_LEN(2) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
        }
    }

    /// Sends everything queued; returns how many datagrams were dropped (socket buffer full, or an error for
    /// that destination). Never blocks.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let mut dropped = 0;
        self.order.clear();
        self.order.extend(0..self.len);
        'again: loop {
            self.plan();
            for m in 0..self.msgs.len() {
                self.point_msg(m);
            }
            let mut sent = 0;
            while sent < self.msgs.len() {
                let n = (self.msgs.len() - sent) as u32;
                // SAFETY: headers point at live buffers owned by self.
                let r = unsafe { libc::sendmmsg(fd, self.hdrs[sent..].as_mut_ptr(), n, libc::MSG_DONTWAIT) };
                if r > 0 {
                    sent += r as usize;
                    continue;
                }
                let err = io::Error::last_os_error().raw_os_error();
                let (at, count) = self.msgs[sent];
                let refused = matches!(err, Some(libc::EIO | libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP));
                if count > 1 && refused {
                    // GSO refused (no checksum offload on the route, an old kernel): send what is left, and
                    // everything after, one datagram per message.
                    self.gso = false;
                    self.order.drain(..at);
                    continue 'again;
                }
                // The message at `sent` failed: drop it and go on with the rest.
                dropped += count;
                sent += 1;
            }
            break;
        }
        self.len = 0;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    #[test]
    fn batches_round_trip_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let std::net::SocketAddr::V4(to) = b.local_addr().unwrap() else { unreachable!() };
        let mut out = SendBatch::new(8);
        for i in 0..5u8 {
            out.slot(to).extend_from_slice(&[i; 3]);
            out.commit();
        }
        assert_eq!(out.flush(a.as_raw_fd()), 0);
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut inb = RecvBatch::new(4, 64);
        assert_eq!(inb.recv(b.as_raw_fd()).unwrap(), 4, "capacity bounds one call");
        let (bytes, from) = inb.get(0);
        assert_eq!(bytes, &[0, 0, 0]);
        assert_eq!(std::net::SocketAddr::V4(from), a.local_addr().unwrap());
        assert_eq!(inb.recv(b.as_raw_fd()).unwrap(), 1);
        assert_eq!(inb.get(0).0, &[4, 4, 4]);
        assert_eq!(inb.recv(b.as_raw_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_waiting_receive_sleeps_for_the_first_datagram_takes_the_rest_and_times_out() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        b.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        let to = b.local_addr().unwrap();
        let mut inb = RecvBatch::new(8, 64);
        let t = std::time::Instant::now();
        assert_eq!(inb.recv_wait(b.as_raw_fd()).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert!(t.elapsed() >= std::time::Duration::from_millis(40), "it slept until the timeout");
        let sender = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(30));
            for i in 0..3u8 {
                a.send_to(&[i], to).unwrap();
            }
        });
        let mut got = Vec::new();
        while got.len() < 3 {
            let n = inb.recv_wait(b.as_raw_fd()).unwrap();
            got.extend((0..n).map(|i| inb.get(i).0[0]));
        }
        assert_eq!(got, [0, 1, 2]);
        sender.join().unwrap();
    }

    /// The DNS server's stop relies on this: `shutdown(SHUT_RD)` wakes a thread asleep in a waiting receive (an
    /// unconnected UDP socket: the call itself says ENOTCONN, and wakes the sleeper anyway), which gets one empty
    /// datagram.
    #[test]
    fn a_waiting_receive_returns_at_once_when_the_socket_is_shut_down_for_reading() {
        let b = std::sync::Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        b.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
        let sleeper = {
            let b = b.clone();
            std::thread::spawn(move || {
                let t = std::time::Instant::now();
                let mut inb = RecvBatch::new(8, 64);
                let r = inb.recv_wait(b.as_raw_fd()).map_err(|e| e.kind());
                (r, inb.get(0).0.len(), t.elapsed())
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: shutdown(2) on a descriptor the Arc keeps open.
        unsafe { libc::shutdown(b.as_raw_fd(), libc::SHUT_RD) };
        let (r, len, took) = sleeper.join().unwrap();
        // The first receive of the batch returns 0 bytes: one empty "datagram".
        assert_eq!((r, len), (Ok(1), 0));
        assert!(took < std::time::Duration::from_secs(2), "woken by the shutdown, not the timeout: {took:?}");
    }

    /// Receives everything waiting on `s` as (length, first byte) pairs, sorted.
    fn drain(s: &UdpSocket) -> Vec<(usize, u8)> {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut inb = RecvBatch::new(64, 4096);
        let mut got = Vec::new();
        while let Ok(n) = inb.recv(s.as_raw_fd()) {
            got.extend((0..n).map(|i| (inb.get(i).0.len(), inb.get(i).0[0])));
        }
        got.sort();
        got
    }

    #[test]
    fn mixed_lengths_and_destinations_arrive_whole_with_and_without_gso() {
        for gso in [true, false] {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let (b, c) = (UdpSocket::bind("127.0.0.1:0").unwrap(), UdpSocket::bind("127.0.0.1:0").unwrap());
            let addr = |s: &UdpSocket| match s.local_addr().unwrap() {
                std::net::SocketAddr::V4(v) => v,
                _ => unreachable!(),
            };
            let mut out = SendBatch::new(64);
            if !gso {
                out = out.without_gso();
            }
            // Interleaved: runs of equal length per destination, odd sizes, one too long to coalesce.
            let mut want_b = Vec::new();
            let mut want_c = Vec::new();
            for i in 0..60u8 {
                let (to, want) = if i % 3 == 0 { (addr(&c), &mut want_c) } else { (addr(&b), &mut want_b) };
                let len = match i % 5 {
                    0 => 2000,
                    1 | 2 => 40,
                    _ => 41 + (i as usize % 2),
                };
                out.slot(to).resize(len, i);
                out.commit();
                want.push((len, i));
            }
            assert_eq!(out.flush(a.as_raw_fd()), 0);
            want_b.sort();
            want_c.sort();
            assert_eq!(drain(&b), want_b, "gso {gso}");
            assert_eq!(drain(&c), want_c, "gso {gso}");
            assert_eq!(out.gso_enabled(), gso, "loopback takes GSO");
            assert!(out.is_empty());
        }
    }
}
