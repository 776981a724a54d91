//! The network-namespace lab: a pretend internet (`wan`), the gateway's namespace (`gw`) and LAN clients
//! (`lan1..N`), each joined by veth pairs. Used by `gatekeeper lab` and by the end-to-end tests.
//!
//! Names are unique per instance (`gk-<id>-wan`, ...) so labs run side by side. Everything is removed when the `Lab`
//! is dropped (also while unwinding from a failed test), and a lab whose owner died without dropping it (`kill -9`)
//! is removed by the next `Lab::new`: each lab registers its owner's pid and start time in `/run/gatekeeper-lab`.
//!
//! ```text
//!  wan: wan0 203.0.113.1/24  <->  gw: gwwan 203.0.113.2/24 (default route via .1)
//!  lanN: eth0                <->  gw: gw-lanN (unconfigured: the gateway's LAN ports)
//!  host: gk-<id>-h           <->  gw: gw-host (optional; the host's own view of the lab LAN)
//! ```

pub mod cli;
mod clients;
mod proc;
pub mod traffic;
mod upstream;

pub use clients::{ClientRun, DhcpClient, field};
pub use proc::Proc;
pub use upstream::{
    CACHED_NAMES, DnsReply, NEGATIVE_TTL, RecordType, TEST_ZONE_HEAD, UNCACHED_SUFFIX, Upstream, ZONE_TTL, build_query,
    cached_name, test_zone, uncached_name,
};

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const REGISTRY: &str = "/run/gatekeeper-lab";
const PREFIX: &str = "gk-";

pub const WAN_ADDR: &str = "203.0.113.1";
pub const GW_WAN_ADDR: &str = "203.0.113.2";
/// A second internet address in `wan`, for RFC 5780 NAT-behaviour tests.
pub const WAN_ADDR2: &str = "203.0.113.3";

#[derive(Debug, Clone)]
pub struct LabOptions {
    /// LAN client namespaces, each on its own gateway port.
    pub clients: usize,
    /// Attach the host to the lab LAN through a veth (never in tests).
    pub host_link: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions { clients: 2, host_link: false }
    }
}

pub struct Lab {
    pub id: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    clients: usize,
    host_link: Option<String>,
}

/// Runs a command to completion; a failure carries the command line and its stderr.
pub fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String> {
    sh(Command::new("ip").args(args))
}

/// Vendors' prefixes (IEEE OUIs) for the lab's devices, so that they show as a home's devices would: a Raspberry Pi,
/// a phone, a speaker, a TV stick, an IoT sensor, a laptop, a lamp.
const DEVICE_OUIS: [[u8; 3]; 7] = [
    [0xb8, 0x27, 0xeb],
    [0xf0, 0x18, 0x98],
    [0x5c, 0xaa, 0xfd],
    [0xf4, 0xf5, 0xd8],
    [0x24, 0x0a, 0xc4],
    [0x3c, 0xa9, 0xf4],
    [0x00, 0x17, 0x88],
];

/// LAN client `i`'s MAC: a vendor's prefix and the client's number (each lab is its own Ethernet).
fn device_mac(i: usize) -> String {
    let o = DEVICE_OUIS[(i - 1) % DEVICE_OUIS.len()];
    format!("{:02x}:{:02x}:{:02x}:6b:{:02x}:{:02x}", o[0], o[1], o[2], (i >> 8) as u8, i as u8)
}

/// The MAC address of `link`, in namespace `ns` or here.
fn link_mac(ns: Option<&str>, link: &str) -> Result<String> {
    let out = match ns {
        Some(ns) => ip(&["-n", ns, "-o", "link", "show", link])?,
        None => ip(&["-o", "link", "show", link])?,
    };
    out.split_whitespace().skip_while(|w| *w != "link/ether").nth(1).map(str::to_owned).context("no MAC address")
}

/// Fields of /proc/PID/stat after the command name (so field 3, the state, is index 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 2..];
    Some(after_comm.split_whitespace().map(|f| f.parse().unwrap_or(0)).collect())
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat), to tell a pid reused.
fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19).copied()
}

/// CPU time (user + system, all threads) of a process so far, in seconds: what the benchmarks charge a server.
pub fn cpu_secs(pid: u32) -> Result<f64> {
    let f = stat_fields(pid).with_context(|| format!("no process {pid}"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[11] + f[12]) as f64 / hz)
}

/// Moves the calling thread into the named namespace `ns` (`/run/netns/<ns>`) and checks that it took effect.
/// setns is per thread: the rest of the process stays where it is, and threads this one spawns start in `ns`.
pub fn enter_netns(ns: &str) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let path = Path::new("/run/netns").join(ns);
    let file = fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter network namespace {ns}"))?;
    let (want, have) = (file.metadata()?.ino(), fs::metadata("/proc/thread-self/ns/net")?.ino());
    anyhow::ensure!(want == have, "entering network namespace {ns} did not take effect");
    Ok(())
}

fn owner_alive(id: &str) -> bool {
    let Ok(text) = fs::read_to_string(Path::new(REGISTRY).join(id)) else { return false };
    let mut it = text.split_whitespace().map(|s| s.parse::<u64>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(pid), Some(start)) => start_time(pid as u32) == Some(start),
        _ => false,
    }
}

fn lab_id_of(name: &str) -> Option<&str> {
    let rest = name.strip_prefix(PREFIX)?;
    let id = rest.get(..6)?;
    (id.chars().all(|c| c.is_ascii_hexdigit()) && rest[6..].starts_with('-')).then_some(id)
}

/// Kills every process inside a namespace we made (dhclient and friends daemonize, so the pids are not our children).
fn kill_ns_processes(ns: &str) {
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let pids: Vec<i32> =
            ip(&["netns", "pids", ns]).unwrap_or_default().split_whitespace().filter_map(|p| p.parse().ok()).collect();
        if pids.is_empty() {
            return;
        }
        for pid in &pids {
            // SAFETY: plain kill(2) on pids found inside our own namespace.
            unsafe { libc::kill(*pid, sig) };
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && pids.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes labs whose owner is gone (killed with `kill -9`, or the machine's test run aborted).
pub fn cleanup_stale() {
    let nss: Vec<String> = ip(&["netns", "list"])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let links = ip(&["-o", "link", "show"]).unwrap_or_default();
    let host_links = links.lines().filter_map(|l| l.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n));
    for name in nss.iter().map(String::as_str).chain(host_links) {
        let Some(id) = lab_id_of(name) else { continue };
        if owner_alive(id) {
            continue;
        }
        if nss.iter().any(|n| n == name) {
            tracing::warn!("removing namespace {name} left by a lab that was not shut down");
            kill_ns_processes(name);
            let _ = ip(&["netns", "del", name]);
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(name));
        } else {
            let _ = ip(&["link", "del", name]);
        }
    }
    if let Ok(entries) = fs::read_dir(REGISTRY) {
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            // A registry file being written (see `Lab::new`).
            if id.starts_with('.') {
                continue;
            }
            if !owner_alive(&id) {
                let _ = fs::remove_file(e.path());
                let _ = fs::remove_dir_all(std::env::temp_dir().join(format!("gatekeeper-lab-{id}")));
            }
        }
    }
}

fn new_id() -> Result<String> {
    let mut b = [0u8; 3];
    fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))?;
    Ok(format!("{:02x}{:02x}{:02x}", b[0], b[1], b[2]))
}

impl Lab {
    pub fn new(opts: LabOptions) -> Result<Lab> {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("the lab needs root (it creates network namespaces); run it with sudo");
        }
        cleanup_stale();
        fs::create_dir_all(REGISTRY)?;
        let id = loop {
            let id = new_id()?;
            if !Path::new(REGISTRY).join(&id).exists() {
                break id;
            }
        };
        let me = std::process::id();
        // Written whole under a hidden name, then renamed: another lab's `cleanup_stale` (tests build labs in
        // parallel) must never read it empty, take this lab for a dead owner's, delete the file, and later kill
        // whatever runs in our namespaces.
        let tmp = Path::new(REGISTRY).join(format!(".{id}.tmp"));
        fs::write(&tmp, format!("{me} {}\n", start_time(me).unwrap_or(0)))?;
        fs::rename(&tmp, Path::new(REGISTRY).join(&id))?;
        let dir = std::env::temp_dir().join(format!("gatekeeper-lab-{id}"));
        fs::create_dir_all(&dir)?;

        let mut lab = Lab { id, dir, namespaces: Vec::new(), clients: opts.clients, host_link: None };
        // From here on, Drop removes whatever was made, also when a step fails.
        lab.build(&opts)?;
        lab.settle()?;
        Ok(lab)
    }

    fn build(&mut self, opts: &LabOptions) -> Result<()> {
        let (wan, gw) = (self.wan(), self.gw());
        let clients: Vec<String> = (1..=opts.clients).map(|i| self.client(i)).collect();
        for ns in [wan.clone(), gw.clone()].into_iter().chain(clients) {
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns.clone());
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        ip(&["link", "add", "wan0", "netns", &wan, "type", "veth", "peer", "name", "gwwan", "netns", &gw])?;
        ip(&["-n", &wan, "addr", "add", &format!("{WAN_ADDR}/24"), "dev", "wan0"])?;
        ip(&["-n", &wan, "addr", "add", &format!("{WAN_ADDR2}/24"), "dev", "wan0"])?;
        ip(&["-n", &wan, "link", "set", "wan0", "up"])?;
        ip(&["-n", &gw, "addr", "add", &format!("{GW_WAN_ADDR}/24"), "dev", "gwwan"])?;
        ip(&["-n", &gw, "link", "set", "gwwan", "up"])?;
        ip(&["-n", &gw, "route", "add", "default", "via", WAN_ADDR])?;
        for i in 1..=opts.clients {
            let (client, port) = (self.client(i), format!("gw-lan{i}"));
            let mac = device_mac(i);
            ip(&[
                "link", "add", "eth0", "netns", &client, "address", &mac, "type", "veth", "peer", "name", &port,
                "netns", &gw,
            ])?;
            ip(&["-n", &client, "link", "set", "eth0", "up"])?;
            ip(&["-n", &gw, "link", "set", &port, "up"])?;
        }
        if opts.host_link {
            let host = format!("{PREFIX}{}-h", self.id);
            ip(&["link", "add", &host, "type", "veth", "peer", "name", "gw-host", "netns", &gw])?;
            self.host_link = Some(host.clone());
            ip(&["link", "set", &host, "up"])?;
            ip(&["-n", &gw, "link", "set", "gw-host", "up"])?;
        }
        Ok(())
    }

    /// Waits until every veth has carrier and no IPv6 address is still tentative, so that snapshots taken
    /// right after building compare equal to later ones.
    pub fn settle(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut busy = None;
            for ns in &self.namespaces {
                let links = ip(&["-n", ns, "-o", "link", "show"])?;
                let addrs = ip(&["-n", ns, "-o", "addr", "show"])?;
                if let Some(l) = links.lines().find(|l| l.contains(",UP") && !l.contains("LOWER_UP")) {
                    busy = Some(format!("{ns}: no carrier yet: {l}"));
                } else if let Some(a) = addrs.lines().find(|a| a.contains("tentative")) {
                    busy = Some(format!("{ns}: address still tentative: {a}"));
                }
            }
            match busy {
                None => return Ok(()),
                Some(why) if Instant::now() > deadline => bail!("lab did not settle within 10 s: {why}"),
                Some(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    pub fn wan(&self) -> String {
        format!("{PREFIX}{}-wan", self.id)
    }
    pub fn gw(&self) -> String {
        format!("{PREFIX}{}-gw", self.id)
    }
    /// The `i`-th LAN client namespace, from 1.
    pub fn client(&self, i: usize) -> String {
        format!("{PREFIX}{}-lan{i}", self.id)
    }
    pub fn clients(&self) -> usize {
        self.clients
    }
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }
    /// The host end of the host link, if the lab has one.
    pub fn host_link(&self) -> Option<&str> {
        self.host_link.as_deref()
    }
    /// A scratch directory removed with the lab: state dirs, logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `program` run inside namespace `ns`.
    pub fn cmd(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).arg(program);
        c
    }

    /// Runs `args` in `ns` to completion and returns stdout; fails with stderr on a non-zero exit.
    pub fn run(&self, ns: &str, args: &[&str]) -> Result<String> {
        let mut c = self.cmd(ns, args[0]);
        c.args(&args[1..]);
        sh(&mut c)
    }

    /// Makes `ip netns exec ns ...` see `nameserver ip` as its resolv.conf (removed with the lab).
    pub fn set_resolver(&self, ns: &str, ip: std::net::Ipv4Addr) -> Result<()> {
        let dir = Path::new("/etc/netns").join(ns);
        fs::create_dir_all(&dir)?;
        fs::write(dir.join("resolv.conf"), format!("nameserver {ip}\nsearch lan\n"))?;
        Ok(())
    }

    /// Runs `f` on a thread inside namespace `ns` (sockets it opens live there), and returns its result.
    pub fn in_netns<T: Send + 'static>(&self, ns: &str, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        let ns_owned = ns.to_owned();
        std::thread::spawn(move || -> Result<T> {
            enter_netns(&ns_owned)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the thread in {ns} panicked"))?
    }

    /// The MAC address of `eth0` in LAN client `i`.
    pub fn client_mac(&self, i: usize) -> Result<String> {
        link_mac(Some(&self.client(i)), "eth0")
    }

    /// Starts the gateway binary in `gw`; its log goes to `<lab dir>/<log_name>`.
    pub fn start_gateway(&self, binary: &Path, args: &[&str], log_name: &str) -> Result<Proc> {
        let gw = self.gw();
        let mut c = self.cmd(&gw, binary);
        c.args(["run", "--netns", &gw]).args(args).env("GATEKEEPER_LOG", "debug");
        Proc::spawn(c, &self.dir.join(log_name))
    }

    /// `Udp: RcvbufErrors` of namespace `ns`: datagrams dropped because a socket's receive buffer was full.
    pub fn udp_rcvbuf_errors(&self, ns: &str) -> Result<u64> {
        self.snmp_counter(ns, "Udp", "RcvbufErrors")
    }

    /// A counter of namespace `ns` from /proc/net/snmp: `group` is the line's prefix (`Tcp`, `Udp`, `Ip`, ...),
    /// `name` the column (`InCsumErrors`, ...).
    pub fn snmp_counter(&self, ns: &str, group: &str, name: &str) -> Result<u64> {
        let snmp = self.run(ns, &["cat", "/proc/net/snmp"])?;
        let prefix = format!("{group}: ");
        let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
        let (names, values) = (lines.next().context("snmp")?, lines.next().context("snmp")?);
        let i = names.split_whitespace().position(|n| n == name).with_context(|| format!("no {group} {name}"))?;
        Ok(values.split_whitespace().nth(i).context("value")?.parse()?)
    }

    /// A comparable description of a namespace: links, addresses, routes of every table, forwarding sysctls.
    pub fn describe(&self, ns: &str) -> Result<String> {
        let mut out = String::new();
        for args in [
            &["-br", "link", "show"][..],
            &["-o", "addr", "show"],
            &["route", "show", "table", "all"],
            &["-6", "route", "show", "table", "all"],
        ] {
            let mut full = vec!["-n", ns];
            full.extend_from_slice(args);
            out += &ip(&full)?;
        }
        let sysctls = sh(self
            .cmd(ns, "sh")
            .args(["-c", "grep -H . /proc/sys/net/ipv4/ip_forward /proc/sys/net/ipv4/conf/*/forwarding"]))?;
        out += &sysctls;
        Ok(out)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            kill_ns_processes(ns);
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("lab {}: {e:#}", self.id);
            }
            let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        if let Some(h) = &self.host_link {
            // Usually gone with the gw namespace already.
            let _ = ip(&["link", "del", h]);
        }
        let _ = fs::remove_file(Path::new(REGISTRY).join(&self.id));
        if std::env::var_os("GATEKEEPER_LAB_KEEP_LOGS").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_ids_are_recognised() {
        assert_eq!(lab_id_of("gk-a1b2c3-wan"), Some("a1b2c3"));
        assert_eq!(lab_id_of("gk-a1b2c3-h"), Some("a1b2c3"));
        assert_eq!(lab_id_of("gk-lan"), None, "the gateway's bridge is not a lab");
        assert_eq!(lab_id_of("gk-zzzzzz-wan"), None);
        assert_eq!(lab_id_of("eth0"), None);
    }

    #[test]
    fn own_start_time_is_readable() {
        assert!(start_time(std::process::id()).is_some());
    }
}
