//! NFQUEUE over a raw netlink socket (NETLINK_NETFILTER), written by hand because the fast path wants what no crate
//! gives together: many packets per `recvmmsg`, many verdicts per `sendmsg`, full-packet copies with GSO packets kept
//! whole (`NFQA_CFG_F_GSO`), and the kernel's per-packet checksum state (`NFQA_SKB_INFO`).
//!
//! Wire format (include/uapi/linux/netfilter/nfnetlink_queue.h): each message is an `nlmsghdr`, an `nfgenmsg`
//! (family, version, queue number big-endian) and netlink attributes; multi-byte values in attributes are big-endian.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_SKB_INFO: u16 = 14;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
pub const NFQA_CFG_F_GSO: u32 = 4;

pub const NFQA_SKB_CSUMNOTREADY: u32 = 1;
pub const NFQA_SKB_GSO: u32 = 2;

pub const NF_DROP: u32 = 0;
pub const NF_ACCEPT: u32 = 1;
pub const NF_REPEAT: u32 = 4;

/// Netfilter hook numbers, as reported per packet.
pub const HOOK_PRE_ROUTING: u8 = 0;
pub const HOOK_POST_ROUTING: u8 = 4;

const NLMSG_HDRLEN: usize = 16;
const NFGEN_LEN: usize = 4;
const SOL_NETLINK: i32 = 270;
const NETLINK_NO_ENOBUFS: i32 = 5;

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends a netlink message header + nfgenmsg for the queue subsystem; returns the message start for `finish`.
fn begin(buf: &mut Vec<u8>, msg: u16, flags: u16, seq: u32, queue: u16, family: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched by `finish`
    buf.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | msg).to_ne_bytes());
    buf.extend_from_slice(&(libc::NLM_F_REQUEST as u16 | flags).to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
    buf.extend_from_slice(&[family, 0]);
    buf.extend_from_slice(&queue.to_be_bytes());
    start
}

fn attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(buf.len() + align4(len) - len, 0);
}

fn finish(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

/// One queued packet, borrowed from the receive buffers.
pub struct Packet<'a> {
    pub id: u32,
    pub hook: u8,
    pub indev: u32,
    pub outdev: u32,
    /// `NFQA_SKB_*` flags: checksum not ready (partial), GSO.
    pub skb_info: u32,
    /// The IP packet; rewrite it in place and pass it to `verdict_with_payload`.
    pub payload: &'a mut [u8],
}

/// Where each packet of the last batch lies in the receive buffers.
#[derive(Clone, Copy, Default)]
struct Slot {
    buf: u16,
    payload: (u32, u32),
    id: u32,
    hook: u8,
    indev: u32,
    outdev: u32,
    skb_info: u32,
}

pub struct Queue {
    fd: OwnedFd,
    num: u16,
    bufs: Vec<Vec<u8>>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    slots: Vec<Slot>,
    /// Verdict messages waiting for `flush`, except their payloads: `payloads` says where each one goes.
    out: Vec<u8>,
    /// (end of the header bytes in `out` that precede it, slot index): payloads sent straight from the receive
    /// buffers, so that userspace never copies a packet (the kernel copies it in anyway).
    payloads: Vec<(usize, usize)>,
    /// Bytes of the verdicts waiting, payloads included.
    pending: usize,
    send_iovs: Vec<libc::iovec>,
    seq: u32,
    /// Messages in the last batch that were not packets or could not be parsed (counted, skipped).
    pub malformed: u64,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` are rebuilt before every syscall.
unsafe impl Send for Queue {}

pub struct QueueOptions {
    /// Receive GSO packets whole instead of segmented by the kernel.
    pub gso: bool,
    /// Packets the kernel holds for us before dropping (fail closed: no bypass).
    pub max_len: u32,
    /// Netlink receive buffer (forced past rmem_max; we run as root).
    pub rcvbuf: usize,
    /// Packets per `recvmmsg`.
    pub batch: usize,
    /// Receive timeout, so the owning thread can notice shutdown.
    pub timeout_ms: u64,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions { gso: true, max_len: 8192, rcvbuf: 64 << 20, batch: BATCH, timeout_ms: 200 }
    }
}

fn setsockopt_int(fd: RawFd, level: i32, opt: i32, value: i32) -> io::Result<()> {
    // SAFETY: setsockopt with a c_int on our own socket.
    let r = unsafe {
        libc::setsockopt(fd, level, opt, (&value as *const i32).cast(), std::mem::size_of::<i32>() as libc::socklen_t)
    };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

/// Packets per `recvmmsg` by default.
pub const BATCH: usize = 64;
/// Largest datagram: a 64 KB GSO packet plus netlink and attribute headers.
const BUF_SIZE: usize = 65536 + 4096;
/// Verdicts are sent once this many bytes wait (a batch of 64 KB GSO packets is several MB).
const MAX_SEND: usize = 1 << 20;
/// Netlink attribute padding source.
const PAD: [u8; 4] = [0; 4];

impl Queue {
    /// Binds queue `num` in the calling thread's network namespace.
    pub fn open(num: u16, opts: &QueueOptions) -> io::Result<Queue> {
        // SAFETY: plain socket(2); the fd is owned right away.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a fresh valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: zeroed sockaddr_nl is valid; bind to a kernel-assigned port id.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as u16;
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, opts.rcvbuf as i32)?;
        setsockopt_int(fd.as_raw_fd(), SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)?;
        // A netlink send larger than the send buffer fails whole (EMSGSIZE): room for the biggest flush.
        setsockopt_int(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, (2 * MAX_SEND) as i32)?;
        let tv = libc::timeval {
            tv_sec: (opts.timeout_ms / 1000) as libc::time_t,
            tv_usec: ((opts.timeout_ms % 1000) * 1000) as libc::suseconds_t,
        };
        // SAFETY: SO_RCVTIMEO with a timeval.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        // SAFETY: zeroed iovec/mmsghdr are valid placeholders.
        let (iov, hdr): (libc::iovec, libc::mmsghdr) = unsafe { (std::mem::zeroed(), std::mem::zeroed()) };
        let mut q = Queue {
            fd,
            num,
            bufs: vec![vec![0u8; BUF_SIZE]; opts.batch],
            iovs: vec![iov; opts.batch],
            hdrs: vec![hdr; opts.batch],
            slots: Vec::with_capacity(opts.batch),
            out: Vec::with_capacity(opts.batch * 256),
            payloads: Vec::with_capacity(opts.batch),
            pending: 0,
            send_iovs: Vec::with_capacity(opts.batch * 2 + 1),
            seq: 0,
            malformed: 0,
        };
        q.configure(opts)?;
        Ok(q)
    }

    fn configure(&mut self, opts: &QueueOptions) -> io::Result<()> {
        let num = self.num;
        // Bind the queue (family AF_UNSPEC in the command's pf field is fine on current kernels).
        self.config(|b| attr(b, NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, libc::AF_INET as u8])).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot bind NFQUEUE {num} (is another program using it?): {e}"))
        })?;
        self.config(|b| {
            let mut p = (BUF_SIZE as u32).to_be_bytes().to_vec();
            p.push(NFQNL_COPY_PACKET);
            attr(b, NFQA_CFG_PARAMS, &p);
        })?;
        self.config(|b| attr(b, NFQA_CFG_QUEUE_MAXLEN, &opts.max_len.to_be_bytes()))?;
        let flags = if opts.gso { NFQA_CFG_F_GSO } else { 0 };
        // No FAIL_OPEN: when we are slow or gone, packets are dropped, never passed untranslated.
        self.config(|b| {
            attr(b, NFQA_CFG_FLAGS, &flags.to_be_bytes());
            attr(b, NFQA_CFG_MASK, &NFQA_CFG_F_GSO.to_be_bytes());
        })
    }

    /// Sends one config message with NLM_F_ACK and waits for the kernel's answer.
    fn config(&mut self, attrs: impl FnOnce(&mut Vec<u8>)) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut b = Vec::with_capacity(64);
        let start = begin(&mut b, NFQNL_MSG_CONFIG, libc::NLM_F_ACK as u16, self.seq, self.num, libc::AF_UNSPEC as u8);
        attrs(&mut b);
        finish(&mut b, start);
        // SAFETY: send of an owned buffer.
        if unsafe { libc::send(self.fd.as_raw_fd(), b.as_ptr().cast(), b.len(), 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut ack = [0u8; 1024];
        loop {
            // SAFETY: recv into a stack buffer.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), ack.as_mut_ptr().cast(), ack.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            if n < NLMSG_HDRLEN + 4 {
                continue;
            }
            let kind = u16::from_ne_bytes([ack[4], ack[5]]);
            let seq = u32::from_ne_bytes(ack[8..12].try_into().unwrap_or_default());
            if kind == libc::NLMSG_ERROR as u16 && seq == self.seq {
                let errno = i32::from_ne_bytes(ack[16..20].try_into().unwrap_or_default());
                return if errno == 0 { Ok(()) } else { Err(io::Error::from_raw_os_error(-errno)) };
            }
        }
    }

    /// Waits (up to the receive timeout) for packets and reads as many as fit in one batch.
    /// Returns the number of packets; 0 on timeout.
    pub fn recv(&mut self) -> io::Result<usize> {
        let n = self.bufs.len();
        for i in 0..n {
            self.iovs[i] = libc::iovec { iov_base: self.bufs[i].as_mut_ptr().cast(), iov_len: self.bufs[i].len() };
            let h = &mut self.hdrs[i].msg_hdr;
            h.msg_name = std::ptr::null_mut();
            h.msg_namelen = 0;
            h.msg_iov = &mut self.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
        }
        // SAFETY: headers point at our own buffers.
        let got = unsafe {
            libc::recvmmsg(
                self.fd.as_raw_fd(),
                self.hdrs.as_mut_ptr(),
                n as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        self.slots.clear();
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for i in 0..got as usize {
            let len = self.hdrs[i].msg_len as usize;
            self.parse(i, len);
        }
        Ok(self.slots.len())
    }

    fn parse(&mut self, buf: usize, len: usize) {
        let b = &self.bufs[buf][..len.min(BUF_SIZE)];
        let mut off = 0;
        while off + NLMSG_HDRLEN <= b.len() {
            let mlen = u32::from_ne_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]]) as usize;
            let kind = u16::from_ne_bytes([b[off + 4], b[off + 5]]);
            if mlen < NLMSG_HDRLEN || off + mlen > b.len() {
                self.malformed += 1;
                return;
            }
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
                match Self::parse_packet(&b[off..off + mlen], off) {
                    Some(mut slot) => {
                        slot.buf = buf as u16;
                        self.slots.push(slot);
                    }
                    None => self.malformed += 1,
                }
            }
            off += align4(mlen);
        }
    }

    fn parse_packet(m: &[u8], base: usize) -> Option<Slot> {
        let mut slot = Slot::default();
        let mut have_hdr = false;
        let mut off = NLMSG_HDRLEN + NFGEN_LEN;
        while off + 4 <= m.len() {
            let alen = u16::from_ne_bytes([m[off], m[off + 1]]) as usize;
            let kind = u16::from_ne_bytes([m[off + 2], m[off + 3]]) & 0x7fff;
            if alen < 4 || off + alen > m.len() {
                return None;
            }
            let v = &m[off + 4..off + alen];
            let be32 = |v: &[u8]| v.get(..4).map(|x| u32::from_be_bytes([x[0], x[1], x[2], x[3]]));
            match kind {
                NFQA_PACKET_HDR => {
                    slot.id = be32(v)?;
                    slot.hook = *v.get(6)?;
                    have_hdr = true;
                }
                NFQA_IFINDEX_INDEV => slot.indev = be32(v)?,
                NFQA_IFINDEX_OUTDEV => slot.outdev = be32(v)?,
                NFQA_SKB_INFO => slot.skb_info = be32(v)?,
                NFQA_PAYLOAD => slot.payload = ((base + off + 4) as u32, v.len() as u32),
                _ => {}
            }
            off += align4(alen);
        }
        (have_hdr && slot.payload.1 > 0).then_some(slot)
    }

    /// Packet `i` of the last batch.
    pub fn packet(&mut self, i: usize) -> Packet<'_> {
        let s = self.slots[i];
        let (start, len) = (s.payload.0 as usize, s.payload.1 as usize);
        Packet {
            id: s.id,
            hook: s.hook,
            indev: s.indev,
            outdev: s.outdev,
            skb_info: s.skb_info,
            payload: &mut self.bufs[s.buf as usize][start..start + len],
        }
    }

    /// Queues a verdict without a payload.
    pub fn verdict(&mut self, id: u32, verdict: u32) -> io::Result<()> {
        let bytes = Self::push(&mut self.out, self.num, id, verdict, None, None);
        self.queued(bytes)
    }

    /// Queues a verdict carrying packet `i`'s (rewritten) payload, optionally with a mark. The payload is not
    /// copied: `flush` sends it from the receive buffer.
    pub fn verdict_with_payload(&mut self, i: usize, verdict: u32, mark: Option<u32>) -> io::Result<()> {
        let s = self.slots[i];
        let bytes = Self::push(&mut self.out, self.num, s.id, verdict, mark, Some(s.payload.1 as usize));
        self.payloads.push((self.out.len(), i));
        self.queued(bytes)
    }

    /// Counts `bytes` more waiting, and sends them all once they are many.
    fn queued(&mut self, bytes: usize) -> io::Result<()> {
        self.pending += bytes;
        if self.pending >= MAX_SEND { self.flush() } else { Ok(()) }
    }

    /// Appends a verdict message for packet `id` (verdicts need no ACK; the id doubles as the sequence number).
    /// With `payload_len`, the message ends with the payload attribute's header: its length counts the payload
    /// and padding that follow it on the wire (`flush` sends them from the receive buffer). Returns the message's
    /// size on the wire.
    fn push(
        out: &mut Vec<u8>,
        num: u16,
        id: u32,
        verdict: u32,
        mark: Option<u32>,
        payload_len: Option<usize>,
    ) -> usize {
        let start = begin(out, NFQNL_MSG_VERDICT, 0, id, num, libc::AF_UNSPEC as u8);
        let mut hdr = [0u8; 8];
        hdr[..4].copy_from_slice(&verdict.to_be_bytes());
        hdr[4..].copy_from_slice(&id.to_be_bytes());
        attr(out, NFQA_VERDICT_HDR, &hdr);
        if let Some(m) = mark {
            attr(out, NFQA_MARK, &m.to_be_bytes());
        }
        let follows = payload_len.map_or(0, |len| {
            out.extend_from_slice(&((4 + len) as u16).to_ne_bytes());
            out.extend_from_slice(&NFQA_PAYLOAD.to_ne_bytes());
            align4(len)
        });
        let total = out.len() - start + follows;
        out[start..start + 4].copy_from_slice(&(total as u32).to_ne_bytes());
        total
    }

    /// Sends every queued verdict with one `sendmsg` (netlink takes several messages per datagram): the
    /// messages' headers from `out`, each payload straight from its receive buffer.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        self.send_iovs.clear();
        let mut from = 0;
        for &(upto, i) in &self.payloads {
            let s = self.slots[i];
            let (start, len) = (s.payload.0 as usize, s.payload.1 as usize);
            let payload = &self.bufs[s.buf as usize][start..start + len];
            self.send_iovs.push(libc::iovec { iov_base: self.out[from..].as_ptr() as *mut _, iov_len: upto - from });
            self.send_iovs.push(libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: len });
            let pad = align4(len) - len;
            if pad > 0 {
                self.send_iovs.push(libc::iovec { iov_base: PAD.as_ptr() as *mut _, iov_len: pad });
            }
            from = upto;
        }
        if from < self.out.len() {
            self.send_iovs
                .push(libc::iovec { iov_base: self.out[from..].as_ptr() as *mut _, iov_len: self.out.len() - from });
        }
        // SAFETY: a zeroed msghdr is valid; it points at iovecs over live buffers that are not touched until the
        // call returns (the kernel only reads them).
        let r = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = self.send_iovs.as_mut_ptr();
            msg.msg_iovlen = self.send_iovs.len() as _;
            libc::sendmsg(self.fd.as_raw_fd(), &msg, 0)
        };
        self.out.clear();
        self.payloads.clear();
        self.pending = 0;
        if r < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
    }

    pub fn number(&self) -> u16 {
        self.num
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_verdict_message() {
        let mut out = Vec::new();
        let total = Queue::push(&mut out, 3, 7, NF_ACCEPT, Some(9), Some(5));
        // What `flush` puts after it on the wire: the payload and its padding.
        out.extend_from_slice(&[1, 2, 3, 4, 5]);
        out.extend_from_slice(&PAD[..3]);
        assert_eq!(total, out.len());
        let len = u32::from_ne_bytes(out[..4].try_into().unwrap()) as usize;
        assert_eq!(len, out.len());
        assert_eq!(u16::from_ne_bytes([out[4], out[5]]), (3 << 8) | 1);
        assert_eq!(&out[18..20], &3u16.to_be_bytes(), "queue number in nfgenmsg");
        // verdict header attribute: len 12, type 2, verdict 1, id 7
        assert_eq!(&out[20..24], &[12, 0, 2, 0]);
        assert_eq!(&out[24..32], &[0, 0, 0, 1, 0, 0, 0, 7]);
        // mark attribute then payload padded to 4
        assert_eq!(&out[32..40], &[8, 0, 3, 0, 0, 0, 0, 9]);
        assert_eq!(&out[40..44], &[9, 0, 10, 0]);
        assert_eq!(&out[44..52], &[1, 2, 3, 4, 5, 0, 0, 0]);
    }

    #[test]
    fn parses_a_packet_message() {
        let mut m = Vec::new();
        let start = begin(&mut m, NFQNL_MSG_PACKET, 0, 0, 0, 2);
        let mut hdr = 42u32.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(HOOK_POST_ROUTING);
        attr(&mut m, NFQA_PACKET_HDR, &hdr);
        attr(&mut m, NFQA_IFINDEX_OUTDEV, &5u32.to_be_bytes());
        attr(&mut m, NFQA_SKB_INFO, &NFQA_SKB_CSUMNOTREADY.to_be_bytes());
        attr(&mut m, NFQA_PAYLOAD, &[0x45, 0, 0, 20, 9, 9, 9]);
        finish(&mut m, start);
        let s = Queue::parse_packet(&m, 100).unwrap();
        assert_eq!((s.id, s.hook, s.outdev, s.skb_info), (42, HOOK_POST_ROUTING, 5, NFQA_SKB_CSUMNOTREADY));
        assert_eq!(s.payload.1, 7);
        assert_eq!(&m[s.payload.0 as usize - 100..][..7], &[0x45, 0, 0, 20, 9, 9, 9]);
        // Truncated attributes are rejected, not read past the end.
        for cut in NLMSG_HDRLEN + NFGEN_LEN + 1..m.len() {
            let _ = Queue::parse_packet(&m[..cut], 0);
        }
    }
}
