//! Upstream DNS servers in the lab's `wan` namespace: an authoritative `knotd` (Debian package `knot`) serving a test
//! zone for `test.`, so that a resolver in `gw` has a real internet-side server to forward to (real SOA, NXDOMAIN and
//! NODATA answers, TC over UDP, TCP). Two can run at once, on [`WAN_ADDR`] and [`WAN_ADDR2`], for failover tests;
//! [`Upstream::stop`] and [`Upstream::kill`] take one away ("every upstream down -> SERVFAIL").
//!
//! [`Lab::dns_query`] is a small UDP DNS client for tests and readiness checks (`kdig` from `knot-dnsutils` works too:
//! `lab.run(&lab.client(1), &["kdig", "@10.0.0.1", "www.test", "A"])`).
//!
//! ```no_run
//! # use gatekeeper::lab::*;
//! # fn f(lab: &Lab) -> anyhow::Result<()> {
//! let up = lab.start_knot(WAN_ADDR, &test_zone())?;
//! let reply = lab.dns_query(&lab.wan(), up.addr, "www.test", RecordType::A)?;
//! assert_eq!(reply.rcode, 0);
//! # Ok(()) }
//! ```

use super::{Lab, Proc, WAN_ADDR, WAN_ADDR2};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Names `h0.test` .. `h{CACHED_NAMES-1}.test` in [`test_zone`]: A records with a one-day TTL, a set that stays cached.
pub const CACHED_NAMES: usize = 1000;
/// The TTL of the cacheable records in [`test_zone`] (the zone's `$TTL`).
pub const ZONE_TTL: u32 = 86400;
/// The SOA minimum (negative-caching TTL) of [`test_zone`].
pub const NEGATIVE_TTL: u32 = 300;
/// Every name under this suffix exists (a wildcard A record, 192.0.2.200): unique names for an uncached set.
pub const UNCACHED_SUFFIX: &str = "uncached.test";

/// The fixed part of the test zone for origin `test.` (see [`test_zone`] for the whole zone).
///
/// - `test.`: SOA (minimum 300), NS `ns1`/`ns2`, MX 10 `mail`, TXT
/// - `www.test`: A 192.0.2.10 and AAAA 2001:db8::10; `mail`, `sip`: A
/// - `long.test`: TXT of 4 strings of 200 bytes (an answer over 512 bytes: TC over UDP without EDNS)
/// - `_sip._udp.test`: SRV 10 60 5060 sip.test.
/// - `a.test` CNAME `b.test` CNAME `c.test` A 192.0.2.99 (a chain in one zone)
/// - `ext.test` CNAME `www.example.` (out of zone)
/// - `short.test`: A 192.0.2.11 with TTL 5 (expiry tests)
/// - `*.uncached.test`: A 192.0.2.200
/// - `nodata.test`: A only (AAAA gives NODATA); any other name: NXDOMAIN with the SOA
pub const TEST_ZONE_HEAD: &str = r#"$ORIGIN test.
$TTL 86400
@       IN SOA  ns1.test. hostmaster.test. 2024010101 3600 600 864000 300
@       IN NS   ns1.test.
@       IN NS   ns2.test.
@       IN MX   10 mail.test.
@       IN TXT  "v=spf1 -all"
ns1     IN A    203.0.113.1
ns2     IN A    203.0.113.3
www     IN A    192.0.2.10
www     IN AAAA 2001:db8::10
mail    IN A    192.0.2.25
sip     IN A    192.0.2.50
nodata  IN A    192.0.2.12
short 5 IN A    192.0.2.11
_sip._udp IN SRV 10 60 5060 sip.test.
a       IN CNAME b.test.
b       IN CNAME c.test.
c       IN A    192.0.2.99
ext     IN CNAME www.example.
*.uncached IN A 192.0.2.200
"#;

/// The whole test zone: [`TEST_ZONE_HEAD`], `long.test` TXT, and `h0..h999.test` A 198.18.x.y (the benchmarking
/// range: public, so that DNS-rebinding filters of private addresses leave the answers alone).
pub fn test_zone() -> String {
    let mut z = String::from(TEST_ZONE_HEAD);
    let chunk = |c: char| std::iter::repeat_n(c, 200).collect::<String>();
    writeln!(z, "long    IN TXT  \"{}\" \"{}\" \"{}\" \"{}\"", chunk('a'), chunk('b'), chunk('c'), chunk('d')).unwrap();
    for i in 0..CACHED_NAMES {
        writeln!(z, "h{i} IN A 198.18.{}.{}", i / 250, i % 250 + 1).unwrap();
    }
    z
}

/// The name of the `i`-th cached-set name: `h{i}.test`.
pub fn cached_name(i: usize) -> String {
    format!("h{}.test", i % CACHED_NAMES)
}

/// A unique name under the wildcard: `u{i}.uncached.test`.
pub fn uncached_name(i: usize) -> String {
    format!("u{i}.{UNCACHED_SUFFIX}")
}

/// An authoritative server started by the lab; stopped (SIGTERM, then SIGKILL) on drop.
pub struct Upstream {
    proc: Proc,
    /// Where it answers, UDP and TCP.
    pub addr: SocketAddr,
    /// The namespace it runs in.
    pub ns: String,
    /// Its config, zone file, log and run files.
    pub dir: PathBuf,
}

impl Upstream {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }
    pub fn log(&self) -> String {
        self.proc.log()
    }
    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.proc.try_status().is_none()
    }
    /// Stops it cleanly (SIGTERM) and waits for it to exit; afterwards its address answers with ICMP unreachable.
    pub fn stop(&mut self) -> Result<()> {
        self.proc.terminate(Duration::from_secs(5))?;
        Ok(())
    }
    /// SIGKILL, like a crash.
    pub fn kill(&mut self) -> Result<()> {
        self.proc.kill9()?;
        Ok(())
    }
    /// SIGSTOP: it stays bound but never answers (queries time out instead of being refused). Undo with
    /// [`Upstream::resume`]; dropping a paused upstream still ends it.
    pub fn pause(&self) {
        self.proc.signal(libc::SIGSTOP);
        // Stopping is asynchronous: wait until every thread is stopped (state `T`).
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let tasks = std::fs::read_dir(format!("/proc/{}/task", self.pid())).into_iter().flatten().flatten();
            let stopped = tasks.into_iter().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                stat.rfind(')').and_then(|i| stat.get(i + 2..i + 3)) == Some("T")
            });
            if stopped {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    pub fn resume(&self) {
        self.proc.signal(libc::SIGCONT);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // A stopped process does not act on SIGTERM until continued.
        self.proc.signal(libc::SIGCONT);
    }
}

/// DNS record types the fixtures and tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    A = 1,
    Ns = 2,
    Cname = 5,
    Soa = 6,
    Mx = 15,
    Txt = 16,
    Aaaa = 28,
    Srv = 33,
}

/// The interesting parts of a reply to [`Lab::dns_query`].
#[derive(Debug, Clone)]
pub struct DnsReply {
    pub rcode: u8,
    /// Authoritative answer.
    pub aa: bool,
    /// Truncated.
    pub tc: bool,
    /// Recursion available.
    pub ra: bool,
    pub answers: u16,
    pub authorities: u16,
    /// The whole message.
    pub raw: Vec<u8>,
}

/// A query for `name`/`qtype` with id `id`, RD set, no EDNS.
pub fn build_query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut q = Vec::with_capacity(32 + name.len());
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&(qtype as u16).to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// Sends `query` to `server` over UDP from the calling thread's namespace and waits up to `timeout` for the reply
/// with its id.
pub(super) fn udp_query(server: SocketAddr, query: &[u8], timeout: Duration) -> Result<DnsReply> {
    let bind: SocketAddr = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse()?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(server)?;
    sock.set_read_timeout(Some(timeout))?;
    sock.send(query)?;
    let mut buf = vec![0u8; 65535];
    let deadline = Instant::now() + timeout;
    loop {
        let n = sock.recv(&mut buf).with_context(|| format!("no answer from {server}"))?;
        if n >= 12 && buf[..2] == query[..2] {
            buf.truncate(n);
            let u16at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
            return Ok(DnsReply {
                rcode: buf[3] & 0x0f,
                aa: buf[2] & 0x04 != 0,
                tc: buf[2] & 0x02 != 0,
                ra: buf[3] & 0x80 != 0,
                answers: u16at(6),
                authorities: u16at(8),
                raw: buf,
            });
        }
        if Instant::now() > deadline {
            bail!("no matching answer from {server}");
        }
    }
}

impl Lab {
    /// Sends one UDP query (RD, no EDNS) for `name`/`qtype` to `server` from namespace `ns`; waits up to 2 s.
    pub fn dns_query(&self, ns: &str, server: SocketAddr, name: &str, qtype: RecordType) -> Result<DnsReply> {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let id = (std::process::id() as u16) ^ (nanos >> 8) as u16;
        let query = build_query(id, name, qtype);
        self.in_netns(ns, move || udp_query(server, &query, Duration::from_secs(2)))?
    }

    /// Waits until `server` answers `name`/`qtype` from namespace `ns` with any rcode (up to `timeout`).
    pub fn wait_dns(
        &self,
        ns: &str,
        server: SocketAddr,
        name: &str,
        qtype: RecordType,
        timeout: Duration,
    ) -> Result<DnsReply> {
        let deadline = Instant::now() + timeout;
        loop {
            let query = build_query(0x4b47, name, qtype);
            match self.in_netns(ns, move || udp_query(server, &query, Duration::from_millis(200)))? {
                Ok(r) => return Ok(r),
                Err(e) if Instant::now() > deadline => return Err(e.context(format!("{server} never answered"))),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Starts knotd in `wan`, authoritative for `test.` with `zone_text` (zone file text, origin `test.`; normally
    /// [`test_zone`]), answering on `ip`:53 over UDP and TCP; `ip` is [`WAN_ADDR`] or [`WAN_ADDR2`]. Returns once it
    /// answers `test. SOA`.
    pub fn start_knot(&self, ip: &str, zone_text: &str) -> Result<Upstream> {
        if ip != WAN_ADDR && ip != WAN_ADDR2 {
            bail!("{ip} is not an address of the lab's wan namespace ({WAN_ADDR}, {WAN_ADDR2})");
        }
        let dir = self.dir().join(format!("knot-{ip}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(dir.join("storage"))?;
        let zone = dir.join("test.zone");
        std::fs::write(&zone, zone_text)?;
        let d = dir.display();
        let conf = format!(
            r#"server:
    rundir: "{d}"
    pidfile: "{d}/knot.pid"
    user: root:root
    listen: {ip}@53
    identity: ""
    version: ""
database:
    storage: "{d}/storage"
control:
    listen: "{d}/knot.sock"
log:
  - target: stdout
    any: info
template:
  - id: default
    storage: "{d}/storage"
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: on
zone:
  - domain: test.
    file: "{}"
"#,
            zone.display()
        );
        let conf_path = dir.join("knot.conf");
        std::fs::write(&conf_path, conf)?;
        // knotd checks the config first: a bad zone or config shows up in the log.
        let wan = self.wan();
        let mut c = self.cmd(&wan, "knotd");
        c.arg("-c").arg(&conf_path).arg("-s").arg(dir.join("knot.sock"));
        let mut proc = Proc::spawn(c, &dir.join("knotd.log"))?;
        let addr: SocketAddr = format!("{ip}:53").parse()?;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = proc.try_status() {
                bail!("knotd exited ({st}); its log:\n{}", proc.log());
            }
            let query = build_query(0x6b6e, "test.", RecordType::Soa);
            let reply = self.in_netns(&wan, move || udp_query(addr, &query, Duration::from_millis(200)));
            if let Ok(Ok(r)) = reply
                && r.rcode == 0
                && r.aa
                && r.answers == 1
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("knotd on {addr} did not serve test. within 15 s; its log:\n{}", proc.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Upstream { proc, addr, ns: wan, dir })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_encoding() {
        let q = build_query(0x1234, "www.test.", RecordType::Aaaa);
        assert_eq!(&q[..12], &[0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&q[12..], b"\x03www\x04test\x00\x00\x1c\x00\x01");
    }

    #[test]
    fn zone_has_the_sets() {
        let z = test_zone();
        assert!(z.contains("\nh999 IN A 198.18.3.250\n"));
        assert!(z.contains("*.uncached IN A"));
        assert_eq!(cached_name(1001), "h1.test");
    }
}
