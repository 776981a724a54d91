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

/// Points one message header at its buffer (`len` bytes) and address slot. Redone before every call: the header
/// holds raw pointers, so it is never kept across moves of the owning struct.
fn point(hdr: &mut libc::mmsghdr, iov: &mut libc::iovec, buf: &mut [u8], len: usize, addr: &mut libc::sockaddr_in) {
    *iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: len };
    let h = &mut hdr.msg_hdr;
    h.msg_name = (addr as *mut libc::sockaddr_in).cast();
    h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    h.msg_iov = iov;
    h.msg_iovlen = 1;
    h.msg_control = std::ptr::null_mut();
    h.msg_controllen = 0;
    h.msg_flags = 0;
    hdr.msg_len = 0;
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
        for i in 0..self.bufs.len() {
            let len = self.bufs[i].len();
            point(&mut self.hdrs[i], &mut self.iovs[i], &mut self.bufs[i], len, &mut self.addrs[i]);
        }
        // SAFETY: every header points at live buffers owned by self, sized as declared.
        let n = unsafe {
            libc::recvmmsg(fd, self.hdrs.as_mut_ptr(), self.hdrs.len() as u32, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
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

/// Queues datagrams and sends them with as few `sendmmsg` calls as possible.
pub struct SendBatch {
    bufs: Vec<Vec<u8>>,
    addrs: Vec<libc::sockaddr_in>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    len: usize,
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
            iovs: vec![zero_iov; capacity],
            hdrs: vec![zero_hdr; capacity],
            len: 0,
        }
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

    /// Sends everything queued; returns how many datagrams were dropped (socket buffer full, or an error for
    /// that destination). Never blocks.
    pub fn flush(&mut self, fd: RawFd) -> usize {
        let (mut sent, mut dropped) = (0, 0);
        while sent < self.len {
            for i in sent..self.len {
                let len = self.bufs[i].len();
                point(&mut self.hdrs[i], &mut self.iovs[i], &mut self.bufs[i], len, &mut self.addrs[i]);
            }
            let n = (self.len - sent) as u32;
            // SAFETY: headers point at live buffers owned by self.
            let r = unsafe { libc::sendmmsg(fd, self.hdrs[sent..].as_mut_ptr(), n, libc::MSG_DONTWAIT) };
            if r > 0 {
                sent += r as usize;
            } else {
                // The datagram at `sent` failed: drop it and go on with the rest.
                dropped += 1;
                sent += 1;
            }
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
}
