//! NAT benchmark: iperf3 from a LAN namespace to the lab's pretend internet through three gateways, in one run, each
//! in a fresh lab:
//! - `plain`: the kernel forwarding without NAT (`ip_forward=1` in `gw`; `wan` has a route back to the LAN),
//! - `masquerade`: the kernel's NAT (`nft ... oifname "gwwan" masquerade` in `gw`; `wan` has no route to the LAN),
//! - `gatekeeper`: the release binary in `gw` (`--lan gw-lan1 --wan gwwan`, a fresh `--state-dir`), its userspace
//!   NAT over NFQUEUE; `wan` has no route to the LAN.
//!
//! Tests (iperf3 3.12 client in `lan1`, server `iperf3 -s` in `wan` on 203.0.113.1, `-J` output):
//! - `tcp1`: TCP, 1 stream; `tcp4`: TCP, 4 streams (`-P 4`): bits/s received (`end.sum_received`);
//! - `udp64`: UDP with 64-byte payloads as fast as the client can send (`-u -l 64 -b 0 -w 4M`, 4 MB socket buffers
//!   at both ends so that the receiver's socket is not what overflows): packets/s received
//!   (`sum_received.packets - lost_packets`) and loss.
//!
//! CPU: over every run, the whole machine's CPU time from /proc/stat per category (user, system, softirq, irq), the
//! iperf3 client's and server's, and Gatekeeper's (all threads, /proc/PID/stat). "CPU per Gbit/s" is the machine's
//! busy CPU-seconds per Gbit received (= cores busy per Gbit/s); for UDP "CPU per Mpps" per million packets received.
//! Both iperf3 ends run on the same 2 cores and count in it: the figure is the whole path's cost, endpoints included.
//! Each run first waits until the machine is idle (up to 2 minutes); a run during which other work used more than
//! 0.15 cores (the machine's busy time less the benchmark's processes and kernel threads) is repeated, up to
//! `--attempts` times, and the least disturbed counts; the tables show how much other work it had.
//!
//! Checks, in every setup, reported for all and failing the benchmark (non-zero exit) for Gatekeeper:
//! - `TcpInCsumErrors` and `UdpInCsumErrors` (/proc/net/snmp) in `wan` and `lan1` after the runs must be 0;
//! - untranslated packets on the WAN: tcpdump on `wan0` in `wan`, for the whole life of the gateway, with the filter
//!   `ip and not (src net 203.0.113.0/24 and dst net 203.0.113.0/24)` (any IPv4 packet with an address outside the
//!   WAN subnet: a LAN source of whichever subnet Gatekeeper chose, read from its log, is one) must count 0. The
//!   filter also takes the echo requests of the reachability ping as they leave the NAT (a canary: the capture is
//!   live on the right link). In `plain`, where LAN addresses are expected on the WAN, the capture takes the canary
//!   only, so that every setup pays for the same packet tap.
//!
//! Run: `sudo bench/nat.sh` (installs iperf3, tcpdump, nftables; builds in release mode; runs this).
//! Options: `--seconds 10` (iperf3 `-t`), `--tests tcp1,tcp4,udp64`, `--setups plain,masquerade,gatekeeper` (and `gatekeeper-notraffic`: traffic accounting off; `gatekeeper-nocapture`: packet capture off; `gatekeeper-largesnap`: packets over 1,500 bytes captured
//! to 256 bytes; in every
//! Gatekeeper setup lan1 is a known device, a static lease, so capture keeps its packets when on),
//! `--attempts 3`, `--queues N` (NFQUEUE queues for Gatekeeper: `--nat-queues N` if `gatekeeper run --help` lists
//! that flag, and the environment variable `GATEKEEPER_NAT_QUEUES=N` in any case; a binary with neither ignores it).
//!
//! `--mode capture`: a TCP stream alone and while lan1 downloads its own capture ring back to back
//! (`capture_bench`), in `--rounds` fresh labs.
//!
//! `--mode api`: how long `GET /api/nat` takes, and whether reading it disturbs the packet path. Gatekeeper only, in
//! `--rounds` fresh labs (default 5); per round: 20 requests from lan1 to the router's web port on an idle NAT
//! (50 ms apart), 20 during a TCP stream through it (100 ms apart); then a `--seconds` TCP stream alone, and one
//! while a client in lan1 sends requests back to back (each on a new connection, as `curl` would). Medians over
//! all rounds. `--gatekeeper PATH` runs another build (e.g. one from before a change) instead of the sibling
//! `gatekeeper` binary; an older binary's `/api/nat` is fine (only the time to a whole response is measured).
//!
//! Topology: lan1 eth0 (client, e.g. 10.0.0.2/24, default route via the gateway's LAN address) <-> gw-lan1 in `gw`;
//! gw gwwan 203.0.113.2 <-> wan0 203.0.113.1 in `wan`. Set `GATEKEEPER_LAB_KEEP_LOGS=1` to keep the lab directory
//! (iperf3 JSON, Gatekeeper's log, the capture).

mod common;

use anyhow::{Context, Result, bail};
use common::{MachineCpu, by_name, children_cpu, option_pairs, processes, wait_quiet};
use gatekeeper::lab::{GW_WAN_ADDR, Lab, LabOptions, Proc, WAN_ADDR, field};
use ipnet::Ipv4Net;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The LAN of the `plain` and `masquerade` setups.
const STATIC_SUBNET: &str = "10.0.0.0/24";
const STATIC_ROUTER: &str = "10.0.0.1";
const WAN_NET: &str = "203.0.113.0/24";
const GW_LAN_IF: &str = "gw-lan1";
const GW_WAN_IF: &str = "gwwan";
/// The kernel's NAT, as a user would set it up.
const MASQUERADE: &str = "table ip nat {
    chain post {
        type nat hook postrouting priority 100;
        oifname \"gwwan\" masquerade
    }
}
";
/// Other programs using more than this many cores disturb a run.
const DISTURBED_CORES: f64 = 0.15;
/// Packets the capture keeps at most.
const CAPTURE_MAX: u32 = 1000;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Setup {
    Plain,
    Masquerade,
    Gatekeeper,
    /// Gatekeeper with traffic accounting off (`[traffic] enabled = false`): nobody reads the packet records.
    GatekeeperNoTraffic,
    /// Gatekeeper with packet capture off (`[capture] ring_mb = 0`): no taps on the packet path.
    GatekeeperNoCapture,
    /// Gatekeeper capturing the first 256 bytes of packets over 1,500 bytes (`[capture] large_snap = 256`).
    GatekeeperLargeSnap,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::Plain, Setup::Masquerade, Setup::Gatekeeper];
    const KNOWN: [Setup; 6] = [
        Setup::Plain,
        Setup::Masquerade,
        Setup::Gatekeeper,
        Setup::GatekeeperNoTraffic,
        Setup::GatekeeperNoCapture,
        Setup::GatekeeperLargeSnap,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::Plain => "plain",
            Setup::Masquerade => "masquerade",
            Setup::Gatekeeper => "gatekeeper",
            Setup::GatekeeperNoTraffic => "gatekeeper-notraffic",
            Setup::GatekeeperNoCapture => "gatekeeper-nocapture",
            Setup::GatekeeperLargeSnap => "gatekeeper-largesnap",
        }
    }
    fn parse(s: &str) -> Result<Setup> {
        by_name(s, &Setup::KNOWN, Setup::name, "setup")
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Test {
    Tcp1,
    Tcp4,
    Udp64,
}

impl Test {
    const ALL: [Test; 3] = [Test::Tcp1, Test::Tcp4, Test::Udp64];

    fn name(self) -> &'static str {
        match self {
            Test::Tcp1 => "tcp1",
            Test::Tcp4 => "tcp4",
            Test::Udp64 => "udp64",
        }
    }
    fn label(self) -> &'static str {
        match self {
            Test::Tcp1 => "TCP, 1 stream",
            Test::Tcp4 => "TCP, 4 streams",
            Test::Udp64 => "UDP, 64-byte payloads, unlimited rate",
        }
    }
    fn parse(s: &str) -> Result<Test> {
        by_name(s, &Test::ALL, Test::name, "test")
    }
    fn iperf_args(self) -> &'static [&'static str] {
        match self {
            Test::Tcp1 => &[],
            Test::Tcp4 => &["-P", "4"],
            // 4 MB socket buffers at both ends (iperf3 passes -w to the server): the datagrams a gateway hands on in
            // a burst must not be lost in the receiver's own socket, which is not what is measured.
            Test::Udp64 => &["-u", "-l", "64", "-b", "0", "-w", "4M"],
        }
    }
    fn udp(self) -> bool {
        self == Test::Udp64
    }
    /// The rate's unit, and the unit CPU is charged per.
    fn unit(self) -> &'static str {
        if self.udp() { "Mpps" } else { "Gbit/s" }
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Throughput,
    Api,
    Capture,
}

struct Opts {
    mode: Mode,
    rounds: usize,
    /// The Gatekeeper binary (default: `gatekeeper` next to this program's directory).
    gatekeeper: Option<std::path::PathBuf>,
    seconds: u64,
    tests: Vec<Test>,
    setups: Vec<Setup>,
    attempts: usize,
    queues: Option<u32>,
}

/// CPU seconds used over one run.
struct Cpu {
    machine: MachineCpu,
    gateway: Option<f64>,
    client: f64,
    server: f64,
    /// The tcpdump on the WAN link, and this program.
    bench: f64,
    /// Kernel threads (ksoftirqd, kworkers): mostly packet processing deferred from interrupts.
    kernel_threads: f64,
    /// Programs that are not part of the benchmark.
    others: f64,
}

impl Cpu {
    /// The machine's busy time that is not the benchmark's: other programs, and what the process snapshots miss
    /// (programs that started and ended within the run). Process times are precise and the machine's are sampled
    /// per tick, so this carries a few hundredths of a core of noise either way.
    fn other_work(&self) -> f64 {
        self.machine.busy() - self.gateway.unwrap_or(0.0) - self.client - self.server - self.bench - self.kernel_threads
    }
}

struct Outcome {
    setup: Setup,
    test: Test,
    /// The client's run, in seconds.
    wall: f64,
    /// Bits received by the server, over `secs` (its measured time).
    bits: f64,
    secs: f64,
    /// UDP: datagrams sent, received and lost.
    sent_packets: u64,
    received_packets: u64,
    lost_packets: u64,
    cpu: Cpu,
    /// Gatekeeper's queues over the run.
    queues: Option<QueueStats>,
}

impl Outcome {
    /// Gbit/s or Mpps received.
    fn rate(&self) -> f64 {
        if self.test.udp() { self.received_packets as f64 / self.secs / 1e6 } else { self.bits / self.secs / 1e9 }
    }
    /// Machine CPU-seconds per Gbit or per million packets received (= cores per Gbit/s, per Mpps).
    fn cpu_per_unit(&self) -> f64 {
        let units = if self.test.udp() { self.received_packets as f64 / 1e6 } else { self.bits / 1e9 };
        self.cpu.machine.busy() / units
    }
    fn cores(&self, secs: f64) -> f64 {
        secs / self.wall
    }
    /// Cores used by work that is not the benchmark's, over the run: the larger of the two measures. On a VM whose
    /// /proc/stat undercounts short bursts (bench/dns saw less busy time than its server and dnsperf used alone), the
    /// machine's figure can fall below the processes' and would never flag a disturbance by itself.
    fn other_load(&self) -> f64 {
        self.cores(self.cpu.other_work().max(self.cpu.others))
    }
    fn loss_pct(&self) -> f64 {
        100.0 * self.lost_packets as f64 / self.sent_packets.max(1) as f64
    }
}

/// What the checks after a setup's runs found.
struct Checks {
    setup: Setup,
    lan_subnet: Ipv4Net,
    /// Packets on the WAN with an address outside it (`None` in `plain`, where they are expected).
    untranslated: Option<u64>,
    /// Of those, with an address in the LAN subnet.
    untranslated_lan: u64,
    /// The first few of them, as tcpdump prints them.
    untranslated_sample: String,
    canary: u64,
    /// Gatekeeper: its queues over all runs (`waiting`: a second after the last), and its log's warnings and errors.
    queues: Option<QueueStats>,
    gateway_warnings: Vec<String>,
    /// (namespace label, counter, value)
    csum_errors: Vec<(&'static str, &'static str, u64)>,
    /// Tests that could not be measured.
    errors: Vec<String>,
}

/// Counters of the gateway's NFQUEUE queues, summed (/proc/net/netfilter/nfnetlink_queue in `gw`).
#[derive(Clone, Copy, Debug, Default)]
struct QueueStats {
    /// Packets waiting for a verdict now.
    waiting: u64,
    /// Dropped because the queue was full (`queue_dropped`) or the socket's receive buffer (`user_dropped`).
    queue_full: u64,
    socket_full: u64,
    /// Packets queued so far (`id_sequence`).
    queued: u64,
}

impl QueueStats {
    fn read(lab: &Lab) -> Result<QueueStats> {
        let text = lab.run(&lab.gw(), &["cat", "/proc/net/netfilter/nfnetlink_queue"])?;
        let mut q = QueueStats::default();
        for line in text.lines() {
            let f: Vec<u64> = line.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
            anyhow::ensure!(f.len() >= 8, "unexpected nfnetlink_queue line: {line}");
            q.waiting += f[2];
            q.queue_full += f[5];
            q.socket_full += f[6];
            q.queued += f[7];
        }
        Ok(q)
    }
    fn since(&self, before: &QueueStats) -> QueueStats {
        QueueStats {
            waiting: self.waiting,
            queue_full: self.queue_full - before.queue_full,
            socket_full: self.socket_full - before.socket_full,
            queued: self.queued - before.queued,
        }
    }
}

/// Pids of the programs a run charges separately.
struct Pids {
    gateway: Option<u32>,
    server: u32,
    capture: u32,
}

/// Splits the CPU used between two process snapshots. The iperf3 client is reaped before the second: its time
/// comes from `client` (reaped children's time).
fn attribute(
    before: &HashMap<(u32, u64), (u32, f64)>,
    after: &HashMap<(u32, u64), (u32, f64)>,
    pids: &Pids,
    machine: MachineCpu,
    client: f64,
) -> Cpu {
    let me = std::process::id();
    let parent: HashMap<u32, u32> = after.iter().map(|(&(pid, _), &(ppid, _))| (pid, ppid)).collect();
    let ours = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match parent.get(&pid) {
                Some(&p) if p > 1 => pid = p,
                _ => return false,
            }
        }
        false
    };
    let mut cpu = Cpu {
        machine,
        gateway: pids.gateway.map(|_| 0.0),
        client,
        server: 0.0,
        bench: 0.0,
        kernel_threads: 0.0,
        others: 0.0,
    };
    for (key, &(ppid, secs)) in after {
        let used = secs - before.get(key).map_or(0.0, |b| b.1);
        let pid = key.0;
        if Some(pid) == pids.gateway {
            cpu.gateway = Some(used);
        } else if pid == pids.server {
            cpu.server = used;
        } else if pid == pids.capture || ours(pid) {
            cpu.bench += used;
        } else if pid == 2 || ppid == 2 {
            cpu.kernel_threads += used;
        } else {
            cpu.others += used;
        }
    }
    cpu
}

/// Runs one iperf3 test from lan1; returns its outcome.
fn iperf(lab: &Lab, setup: Setup, test: Test, pids: &Pids, opts: &Opts, dir: &Path) -> Result<Outcome> {
    let json_path = dir.join(format!("iperf3-{}.json", test.name()));
    let mut c = lab.cmd(&lab.client(1), "iperf3");
    c.args(["-c", WAN_ADDR, "-t", &opts.seconds.to_string(), "-J"]).args(test.iperf_args());
    c.stdin(Stdio::null())
        .stdout(std::fs::File::create(&json_path)?)
        .stderr(std::fs::File::create(dir.join(format!("iperf3-{}.err", test.name())))?);
    let gatekeeper = pids.gateway.is_some();
    let q_before = if gatekeeper { Some(QueueStats::read(lab)?) } else { None };
    let procs_before = processes();
    let (m_before, ch_before) = (MachineCpu::read()?, children_cpu());
    let start = Instant::now();
    let mut child = c.spawn().context("cannot start iperf3")?;
    let deadline = start + Duration::from_secs(opts.seconds + 30);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("iperf3 still running {} s after its end: killed", 30);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let wall = start.elapsed().as_secs_f64();
    let (m_after, ch_after) = (MachineCpu::read()?, children_cpu());
    let procs_after = processes();
    let cpu = attribute(&procs_before, &procs_after, pids, m_after.since(&m_before), ch_after - ch_before);
    let queues = match q_before {
        Some(b) => Some(QueueStats::read(lab)?.since(&b)),
        None => None,
    };

    let text = std::fs::read_to_string(&json_path)?;
    let report: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("iperf3 ({status}) printed no JSON: {text}"))?;
    if let Some(e) = report.get("error") {
        bail!("iperf3 failed ({status}): {e}");
    }
    let received = &report["end"]["sum_received"];
    let num = |v: &serde_json::Value, k: &str| v[k].as_f64().with_context(|| format!("no {k} in iperf3's {v}"));
    let (bits, secs) = (8.0 * num(received, "bytes")?, num(received, "seconds")?);
    let (mut sent_packets, mut received_packets, mut lost_packets) = (0, 0, 0);
    if test.udp() {
        let (packets, lost) = (num(received, "packets")? as u64, num(received, "lost_packets")? as u64);
        sent_packets = num(&report["end"]["sum_sent"], "packets")? as u64;
        received_packets = packets.saturating_sub(lost);
        lost_packets = sent_packets.saturating_sub(received_packets);
    }
    anyhow::ensure!(secs > 0.0 && bits > 0.0, "iperf3 measured nothing: {received}");
    Ok(Outcome { setup, test, wall, bits, secs, sent_packets, received_packets, lost_packets, cpu, queues })
}

/// Starts Gatekeeper in `gw` and waits until its NAT and LAN are up; returns it with the LAN subnet and router
/// address it chose.
/// Gatekeeper's LAN in the benchmark, fixed so that lan1 can be a known device (a static lease for its MAC at
/// the address `lan_client` gives it): capture keeps only known devices' packets.
const GK_SUBNET: &str = "10.0.0.0/24";
const GK_CLIENT: &str = "10.0.0.2";

fn start_gatekeeper(lab: &Lab, dir: &Path, opts: &Opts, setup: Setup) -> Result<(Proc, Ipv4Net, Ipv4Addr)> {
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    let exe = match &opts.gatekeeper {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.parent().unwrap().parent().unwrap().join("gatekeeper"),
    };
    let gw = lab.gw();
    let mut c = lab.cmd(&gw, &exe);
    c.args(["run", "--netns", &gw, "--lan", GW_LAN_IF, "--wan", GW_WAN_IF, "--state-dir"])
        .arg(&state)
        .env("GATEKEEPER_LOG", "info");
    let mac = lab.client_mac(1)?;
    let mut config = format!("subnet = \"{GK_SUBNET}\"\n[[dhcp.static]]\nmac = \"{mac}\"\nip = \"{GK_CLIENT}\"\n");
    match setup {
        Setup::GatekeeperNoTraffic => config += "[traffic]\nenabled = false\n",
        Setup::GatekeeperNoCapture => config += "[capture]\nring_mb = 0\n",
        Setup::GatekeeperLargeSnap => config += "[capture]\nlarge_snap = 256\n",
        _ => {}
    }
    let file = dir.join("gatekeeper.toml");
    std::fs::write(&file, config)?;
    c.arg("--config").arg(&file);
    if let Some(q) = opts.queues {
        // The flag where the binary has it, the environment variable in any case.
        let help = lab.run(&gw, &[&exe.to_string_lossy(), "run", "--help"])?;
        if help.contains("--nat-queues") {
            c.args(["--nat-queues", &q.to_string()]);
        }
        c.env("GATEKEEPER_NAT_QUEUES", q.to_string());
    }
    let mut p = Proc::spawn(c, &dir.join("gatekeeper.log"))?;
    p.wait_for_log("NAT packet path ready", Duration::from_secs(30))?;
    p.wait_for_log("LAN ready", Duration::from_secs(30))?;
    let log = p.log();
    let line = log.lines().find(|l| l.contains("setting up the LAN")).context("no 'setting up the LAN' in the log")?;
    let subnet: Ipv4Net = field(line, "subnet").with_context(|| format!("no subnet in {line:?}"))?.parse()?;
    let router: Ipv4Addr = field(line, "router").with_context(|| format!("no router in {line:?}"))?.parse()?;
    Ok((p, subnet, router))
}

/// Gives lan1 the first free address of `subnet` with `router` as its default route, and waits until it reaches
/// the WAN; returns its address.
fn lan_client(lab: &Lab, subnet: Ipv4Net, router: Ipv4Addr) -> Result<Ipv4Addr> {
    let lan = lab.client(1);
    let client = subnet.hosts().find(|a| *a != router).context("no address for the client")?;
    lab.run(&lan, &["ip", "addr", "add", &format!("{client}/{}", subnet.prefix_len()), "dev", "eth0"])?;
    lab.run(&lan, &["ip", "route", "add", "default", "via", &router.to_string()])?;
    wait_reachable(lab)?;
    Ok(client)
}

/// Waits until lan1 reaches the WAN server (the gateway's rules may take a moment): a few echo requests.
fn wait_reachable(lab: &Lab) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match lab.run(&lab.client(1), &["ping", "-c1", "-W1", WAN_ADDR]) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => return Err(e.context("lan1 cannot reach the WAN")),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Waits until a TCP server listens on `port` in `ns`.
fn wait_listening(lab: &Lab, ns: &str, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while lab.run(ns, &["ss", "-Hltn", &format!("sport = :{port}")])?.trim().is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "nothing listens on port {port} in {ns}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Packets with an address outside the WAN subnet (IPv4).
fn untranslated_filter() -> String {
    format!("ip and not (src net {WAN_NET} and dst net {WAN_NET})")
}

/// The reachability ping's echo requests as they arrive in `wan`.
fn canary_filter() -> String {
    format!("icmp[icmptype] == icmp-echo and dst host {WAN_ADDR}")
}

/// Lines tcpdump prints for the packets in `pcap` that match `filter`.
fn read_capture(lab: &Lab, pcap: &Path, filter: &str) -> Result<Vec<String>> {
    let out = lab.run(&lab.wan(), &["tcpdump", "-n", "-r", &pcap.to_string_lossy(), filter])?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Builds a lab, sets up the gateway, runs the tests, then the checks.
fn run_setup(setup: Setup, opts: &Opts, results: &mut Vec<Outcome>) -> Result<Checks> {
    let lab = Lab::new(LabOptions { clients: 1, host_link: false })?;
    let (wan, gw, lan) = (lab.wan(), lab.gw(), lab.client(1));
    let dir = lab.dir().join("bench");
    std::fs::create_dir_all(&dir)?;

    // The capture runs for the gateway's whole life, from before it starts.
    let nat = setup != Setup::Plain;
    let filter = if nat { format!("({}) or ({})", untranslated_filter(), canary_filter()) } else { canary_filter() };
    let pcap = dir.join("wan.pcap");
    let mut capture = lab.cmd(&wan, "tcpdump");
    // Immediate mode: otherwise matches wait in the kernel's ring for up to a second, and stopping loses them.
    capture
        .args([
            "-i",
            "wan0",
            "-n",
            "-U",
            "--immediate-mode",
            "-Z",
            "root",
            "-s",
            "200",
            "-c",
            &CAPTURE_MAX.to_string(),
            "-w",
        ])
        .arg(&pcap)
        .arg(&filter);
    let mut capture = Proc::spawn(capture, &dir.join("tcpdump.log"))?;
    capture.wait_for_log("listening on", Duration::from_secs(10))?;

    let (mut gateway, subnet, router) = match setup {
        Setup::Plain | Setup::Masquerade => {
            lab.run(&gw, &["ip", "addr", "add", &format!("{STATIC_ROUTER}/24"), "dev", GW_LAN_IF])?;
            lab.run(&gw, &["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
            if setup == Setup::Plain {
                lab.run(&wan, &["ip", "route", "add", STATIC_SUBNET, "via", GW_WAN_ADDR])?;
            } else {
                let rules = dir.join("masquerade.nft");
                std::fs::write(&rules, MASQUERADE)?;
                lab.run(&gw, &["nft", "-f", &rules.to_string_lossy()])?;
            }
            (None, STATIC_SUBNET.parse()?, STATIC_ROUTER.parse()?)
        }
        Setup::Gatekeeper | Setup::GatekeeperNoTraffic | Setup::GatekeeperNoCapture | Setup::GatekeeperLargeSnap => {
            let (p, subnet, router) = start_gatekeeper(&lab, &dir, opts, setup)?;
            (Some(p), subnet, router)
        }
    };
    let wan_net: Ipv4Net = WAN_NET.parse()?;
    anyhow::ensure!(
        !subnet.contains(&wan_net.network()) && !wan_net.contains(&subnet.network()),
        "the LAN subnet {subnet} overlaps the WAN's {wan_net}: the capture filter would miss LAN addresses"
    );
    let client = lan_client(&lab, subnet, router)?;
    eprintln!(
        "{}: LAN {subnet}, client {client}, gateway {router}{}",
        setup.name(),
        gateway.as_ref().map_or(String::new(), |g| format!(", gatekeeper pid {}", g.pid()))
    );

    let mut server = lab.cmd(&wan, "iperf3");
    server.args(["-s", "-B", WAN_ADDR]);
    let server = Proc::spawn(server, &dir.join("iperf3-server.log"))?;
    wait_listening(&lab, &wan, 5201)?;
    let pids = Pids { gateway: gateway.as_ref().map(Proc::pid), server: server.pid(), capture: capture.pid() };
    let queues_start = if gateway.is_some() { Some(QueueStats::read(&lab)?) } else { None };

    let mut errors = Vec::new();
    for &test in &opts.tests {
        let mut best: Option<Outcome> = None;
        for _ in 0..opts.attempts {
            wait_quiet()?;
            eprintln!("{}: {} for {} s ...", setup.name(), test.label(), opts.seconds);
            let r = match iperf(&lab, setup, test, &pids, opts, &dir) {
                Ok(r) => r,
                Err(e) => {
                    // The other tests and the checks still run.
                    eprintln!("  failed: {e:#}");
                    errors.push(format!("{}: {e:#}", test.name()));
                    break;
                }
            };
            let c = &r.cpu;
            let m = &c.machine;
            let unattributed = c.other_work() - c.others;
            eprintln!(
                "  -> {:.3} {}{}, {:.3} cores per {}; cores busy {:.2} (user {:.2}, system {:.2}, softirq {:.2}, irq \
                 {:.2}; steal {:.2}): iperf3 client {:.2}, server {:.2}{}, kernel threads {:.2}, bench {:.2}, other \
                 programs {:.2}, not attributed {:.2}",
                r.rate(),
                test.unit(),
                if test.udp() {
                    format!(" ({:.3} Mpps sent, {:.1}% lost)", r.sent_packets as f64 / r.secs / 1e6, r.loss_pct())
                } else {
                    String::new()
                },
                r.cpu_per_unit(),
                test.unit(),
                r.cores(m.busy()),
                r.cores(m.user + m.nice),
                r.cores(m.system),
                r.cores(m.softirq),
                r.cores(m.irq),
                r.cores(m.steal),
                r.cores(c.client),
                r.cores(c.server),
                c.gateway.map_or(String::new(), |g| format!(", gatekeeper {:.2}", r.cores(g))),
                r.cores(c.kernel_threads),
                r.cores(c.bench),
                r.cores(c.others),
                r.cores(unattributed),
            );
            if let Some(q) = r.queues {
                eprintln!(
                    "  NFQUEUE: {} packets queued, dropped {} (queue full) and {} (socket full), {} waiting for a \
                     verdict after the run",
                    q.queued, q.queue_full, q.socket_full, q.waiting
                );
            }
            let others = r.other_load();
            let disturbed = others > DISTURBED_CORES;
            if disturbed {
                eprintln!(
                    "  warning: other work used {others:.2} cores during this run: its numbers are not comparable"
                );
            }
            if best.as_ref().is_none_or(|b| others < b.other_load()) {
                best = Some(r);
            }
            if let Some(st) = gateway.as_mut().and_then(Proc::try_status) {
                bail!("gatekeeper exited ({st}) during {}; its log:\n{}", test.name(), gateway.unwrap().log());
            }
            if !disturbed {
                break;
            }
        }
        results.extend(best);
    }
    drop(server);

    // Checks. A second for the last packets to leave the gateway.
    std::thread::sleep(Duration::from_secs(1));
    let queues = match queues_start {
        Some(start) => Some(QueueStats::read(&lab)?.since(&start)),
        None => None,
    };
    capture.signal(libc::SIGINT);
    capture.wait_timeout(Duration::from_secs(10))?;
    let tcpdump_log = capture.log();
    // tcpdump's summary: packets that matched the filter, and those written to the file. Matches missing from the
    // file (the kernel's buffer was full, or past `-c`) count as untranslated: they might be.
    let summary = |what: &str| -> u64 {
        tcpdump_log
            .lines()
            .find(|l| l.ends_with(what))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let unwritten = summary("packets received by filter").saturating_sub(summary("packets captured"));
    let canary = read_capture(&lab, &pcap, &canary_filter())?.len() as u64;
    let (untranslated, untranslated_lan, untranslated_sample) = if nat {
        let all = read_capture(&lab, &pcap, &untranslated_filter())?;
        let in_lan = read_capture(&lab, &pcap, &format!("net {subnet}"))?.len() as u64;
        (Some(all.len() as u64 + unwritten), in_lan, all.iter().take(10).cloned().collect::<Vec<_>>().join("\n"))
    } else {
        (None, 0, String::new())
    };
    let mut csum_errors = Vec::new();
    for (label, ns) in [("wan", &wan), ("lan1", &lan)] {
        for (group, name, counter) in
            [("Tcp", "InCsumErrors", "TcpInCsumErrors"), ("Udp", "InCsumErrors", "UdpInCsumErrors")]
        {
            csum_errors.push((label, counter, lab.snmp_counter(ns, group, name)?));
        }
    }
    let mut gateway_warnings = Vec::new();
    if let Some(mut g) = gateway.take() {
        g.terminate(Duration::from_secs(10)).context("stopping gatekeeper")?;
        gateway_warnings =
            g.log().lines().filter(|l| l.contains(" WARN ") || l.contains(" ERROR ")).map(str::to_owned).collect();
    }
    Ok(Checks {
        setup,
        lan_subnet: subnet,
        untranslated,
        untranslated_lan,
        untranslated_sample,
        canary,
        queues,
        gateway_warnings,
        csum_errors,
        errors,
    })
}

fn print_tables(opts: &Opts, results: &[Outcome]) {
    for &test in &opts.tests {
        let rows: Vec<&Outcome> = results.iter().filter(|r| r.test == test).collect();
        if rows.is_empty() {
            continue;
        }
        let unit = test.unit();
        println!(
            "\n{} (iperf3 -t {}{}{})",
            test.label(),
            opts.seconds,
            if test.iperf_args().is_empty() { "" } else { " " },
            test.iperf_args().join(" ")
        );
        println!();
        if test.udp() {
            println!(
                "| setup | received | sent | lost | CPU busy (cores) | user / system / softirq | CPU per Mpps | gatekeeper process | its share | other work |"
            );
            println!("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|");
        } else {
            println!(
                "| setup | received | CPU busy (cores) | user / system / softirq | CPU per Gbit/s | gatekeeper process | its share | other work |"
            );
            println!("|---|---:|---:|---|---:|---:|---:|---:|");
        }
        for r in &rows {
            let m = &r.cpu.machine;
            let (gw, share) = match r.cpu.gateway {
                Some(g) => (format!("{:.2} cores", r.cores(g)), format!("{:.0}%", 100.0 * g / m.busy())),
                None => ("-".into(), "-".into()),
            };
            let traffic = if test.udp() {
                format!(
                    "{:.3} Mpps | {:.3} Mpps | {:.1}%",
                    r.rate(),
                    r.sent_packets as f64 / r.secs / 1e6,
                    r.loss_pct()
                )
            } else {
                format!("{:.2} Gbit/s", r.rate())
            };
            println!(
                "| {} | {traffic} | {:.2} | {:.2} / {:.2} / {:.2} | {:.3} | {gw} | {share} | {:.2}{} |",
                r.setup.name(),
                r.cores(m.busy()),
                r.cores(m.user + m.nice),
                r.cores(m.system),
                r.cores(m.softirq + m.irq),
                r.cpu_per_unit(),
                r.other_load(),
                if r.other_load() > DISTURBED_CORES { " (disturbed)" } else { "" },
            );
        }
        let get = |s: Setup| rows.iter().find(|r| r.setup == s);
        let pairs = [
            (Setup::Masquerade, Setup::Plain),
            (Setup::Gatekeeper, Setup::Masquerade),
            (Setup::Gatekeeper, Setup::Plain),
            (Setup::Gatekeeper, Setup::GatekeeperNoTraffic),
            (Setup::Gatekeeper, Setup::GatekeeperNoCapture),
            (Setup::GatekeeperLargeSnap, Setup::GatekeeperNoCapture),
        ];
        let ratios: Vec<String> = pairs
            .iter()
            .filter_map(|&(a, b)| {
                let (a, b) = (get(a)?, get(b)?);
                Some(format!(
                    "| {} / {} | {:.2}x | {:.2}x |",
                    a.setup.name(),
                    b.setup.name(),
                    a.rate() / b.rate(),
                    a.cpu_per_unit() / b.cpu_per_unit()
                ))
            })
            .collect();
        if !ratios.is_empty() {
            println!();
            println!("| ratio | received {unit} | CPU per {unit} |");
            println!("|---|---:|---:|");
            for l in ratios {
                println!("{l}");
            }
        }
    }
}

/// Prints the checks; returns the failures (Gatekeeper's only: the kernel setups are reported for comparison).
fn report_checks(checks: &[Checks]) -> Vec<String> {
    let mut failures = Vec::new();
    println!("\nChecks after the runs");
    println!();
    println!(
        "| setup | LAN subnet | untranslated packets on the WAN | canary seen | TcpInCsumErrors wan / lan1 | \
         UdpInCsumErrors wan / lan1 | NFQUEUE queued / dropped (queue full, socket full) / never verdicted | \
         gatekeeper warnings |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    for c in checks {
        failures.extend(c.errors.iter().map(|e| format!("{}: {e}", c.setup.name())));
        let get =
            |ns: &str, counter: &str| c.csum_errors.iter().find(|e| e.0 == ns && e.1 == counter).map_or(0, |e| e.2);
        let untranslated = match c.untranslated {
            Some(n) => format!("{n} ({} in {})", c.untranslated_lan, c.lan_subnet),
            None => "- (no NAT)".into(),
        };
        let (queues, warnings) = match c.queues {
            Some(q) => (
                format!("{} / {}, {} / {}", q.queued, q.queue_full, q.socket_full, q.waiting),
                c.gateway_warnings.len().to_string(),
            ),
            None => ("-".into(), "-".into()),
        };
        println!(
            "| {} | {} | {untranslated} | {} | {} / {} | {} / {} | {queues} | {warnings} |",
            c.setup.name(),
            c.lan_subnet,
            c.canary,
            get("wan", "TcpInCsumErrors"),
            get("lan1", "TcpInCsumErrors"),
            get("wan", "UdpInCsumErrors"),
            get("lan1", "UdpInCsumErrors"),
        );
        let mut problems = Vec::new();
        if let Some(n) = c.untranslated.filter(|&n| n > 0) {
            problems.push(format!(
                "{n} untranslated packets on the WAN ({} with a LAN address), first ones:\n{}",
                c.untranslated_lan, c.untranslated_sample
            ));
        }
        if c.canary == 0 {
            problems.push("the capture on the WAN saw none of the reachability pings: it proves nothing".into());
        }
        for (ns, counter, n) in c.csum_errors.iter().filter(|e| e.2 > 0) {
            problems.push(format!("{counter} = {n} in {ns}"));
        }
        if let Some(q) = c.queues.filter(|q| q.waiting > 0) {
            problems.push(format!(
                "{} packets still wait in NFQUEUE for a verdict a second after the last run: they are black-holed \
                 (and hold queue slots)",
                q.waiting
            ));
        }
        if !c.gateway_warnings.is_empty() {
            let mut distinct: Vec<&str> = c
                .gateway_warnings
                .iter()
                .map(|l| l.split_once(" WARN ").or(l.split_once(" ERROR ")).map_or(l.as_str(), |p| p.1))
                .collect();
            distinct.sort();
            distinct.dedup();
            eprintln!(
                "note: {}: {} warnings or errors in its log: {}",
                c.setup.name(),
                c.gateway_warnings.len(),
                distinct.iter().take(5).copied().collect::<Vec<_>>().join(" | ")
            );
        }
        for p in problems {
            if c.setup != Setup::Plain && c.setup != Setup::Masquerade {
                failures.push(format!("gatekeeper: {p}"));
            } else {
                eprintln!("note: {}: {p}", c.setup.name());
            }
        }
    }
    failures
}

/// One `GET /api/nat` on a new connection (HTTP/1.1, `Connection: close`) from the calling thread's namespace:
/// the time to the whole response.
fn get_api_nat(router: Ipv4Addr, cookie: &str) -> Result<Duration> {
    use std::io::{Read, Write};
    let start = Instant::now();
    let mut c = std::net::TcpStream::connect_timeout(&(router, 1337).into(), Duration::from_secs(5))?;
    c.set_read_timeout(Some(Duration::from_secs(5)))?;
    c.write_all(
        format!("GET /api/nat HTTP/1.1\r\nHost: {router}\r\n{cookie}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut body = Vec::new();
    c.read_to_end(&mut body)?;
    let took = start.elapsed();
    let text = String::from_utf8_lossy(&body);
    anyhow::ensure!(text.starts_with("HTTP/1.1 200") && text.contains("\"queues\""), "bad answer: {text:.200}");
    Ok(took)
}

/// A thread in namespace `ns`.
fn spawn_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> std::thread::JoinHandle<T> {
    let path = Path::new("/run/netns").join(ns);
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("namespace");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// `n` requests from lan1, `gap` apart; their times.
fn api_requests(lab: &Lab, router: Ipv4Addr, cookie: &str, n: usize, gap: Duration) -> Result<Vec<Duration>> {
    let cookie = cookie.to_owned();
    lab.in_netns(&lab.client(1), move || {
        (0..n)
            .map(|_| {
                let t = get_api_nat(router, &cookie);
                std::thread::sleep(gap);
                t
            })
            .collect::<Result<Vec<_>>>()
    })?
}

/// A TCP stream from lan1 for `seconds`: bits/s received.
fn tcp_stream(lab: &Lab, seconds: u64) -> Result<f64> {
    let out = lab.run(&lab.client(1), &["iperf3", "-c", WAN_ADDR, "-t", &seconds.to_string(), "-J"])?;
    let report: serde_json::Value = serde_json::from_str(&out)?;
    report["end"]["sum_received"]["bits_per_second"].as_f64().context("no bits_per_second in iperf3's report")
}

fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort_unstable();
    v.get(v.len() / 2).map_or(f64::NAN, |d| d.as_secs_f64() * 1e3)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A fresh lab with Gatekeeper (capture on, lan1 a known device) and an iperf3 server in `wan`: the lab, its
/// bench directory, the gateway, its LAN address and the server.
fn gatekeeper_lab(opts: &Opts) -> Result<(Lab, std::path::PathBuf, Proc, Ipv4Addr, Proc)> {
    let lab = Lab::new(LabOptions { clients: 1, host_link: false })?;
    let dir = lab.dir().join("bench");
    std::fs::create_dir_all(&dir)?;
    let (gateway, subnet, router) = start_gatekeeper(&lab, &dir, opts, Setup::Gatekeeper)?;
    lan_client(&lab, subnet, router)?;
    let mut server = lab.cmd(&lab.wan(), "iperf3");
    server.args(["-s", "-B", WAN_ADDR]);
    let server = Proc::spawn(server, &dir.join("iperf3-server.log"))?;
    wait_listening(&lab, &lab.wan(), 5201)?;
    Ok((lab, dir, gateway, router, server))
}

/// `--mode api` (see the module's notes).
fn api_bench(opts: &Opts) -> Result<()> {
    let (mut idle, mut loaded, mut hammering) = (Vec::new(), Vec::new(), Vec::new());
    let (mut alone, mut hammered, mut per_sec) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=opts.rounds {
        let (lab, dir, _gateway, router, _server) = gatekeeper_lab(opts)?;
        // The API needs the admin's session.
        let cookie = login(&lab, &dir, router)?;
        wait_quiet()?;
        // Idle.
        let mut i = api_requests(&lab, router, &cookie, 20, Duration::from_millis(50))?;
        // During a stream (started in the background, measured from its second second on).
        let mut stream = lab.cmd(&lab.client(1), "iperf3");
        stream.args(["-c", WAN_ADDR, "-t", "4"]).stdout(Stdio::null()).stderr(Stdio::null());
        let mut stream = stream.spawn()?;
        std::thread::sleep(Duration::from_secs(1));
        let l = api_requests(&lab, router, &cookie, 20, Duration::from_millis(100));
        stream.wait()?;
        let mut l = l?;
        // Throughput alone, then with a client reading /api/nat back to back.
        let a = tcp_stream(&lab, opts.seconds)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let c = cookie.clone();
        let hammer = spawn_in(&lab.client(1), move || {
            let mut times = Vec::new();
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                times.push(get_api_nat(router, &c));
            }
            times.into_iter().collect::<Result<Vec<_>>>()
        });
        let start = Instant::now();
        let h = tcp_stream(&lab, opts.seconds)?;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut times = hammer.join().map_err(|_| anyhow::anyhow!("the hammer panicked"))??;
        let rate = times.len() as f64 / start.elapsed().as_secs_f64();
        eprintln!(
            "round {round}: /api/nat idle {:.2} ms, under a TCP stream {:.2} ms; stream {:.2} Gbit/s alone, {:.2} \
             with {rate:.0} requests/s (each {:.2} ms)",
            median_ms(&mut i),
            median_ms(&mut l),
            a / 1e9,
            h / 1e9,
            median_ms(&mut times),
        );
        idle.extend(i);
        loaded.extend(l);
        hammering.extend(times);
        alone.push(a / 1e9);
        hammered.push(h / 1e9);
        per_sec.push(rate);
    }
    println!(
        "\n/api/nat, {} rounds, {} s streams, binary {}:",
        opts.rounds,
        opts.seconds,
        opts.gatekeeper.as_ref().map_or("(built)".into(), |p| p.display().to_string())
    );
    println!("| measure | median |\n|---|---|");
    println!("| GET /api/nat, idle NAT | {:.2} ms |", median_ms(&mut idle));
    println!("| GET /api/nat, during a TCP stream | {:.2} ms |", median_ms(&mut loaded));
    println!("| TCP 1 stream alone | {:.2} Gbit/s |", median(&mut alone));
    println!("| TCP 1 stream with /api/nat back to back | {:.2} Gbit/s |", median(&mut hammered));
    println!("| ... requests served per second meanwhile | {:.0} |", median(&mut per_sec));
    println!("| ... each request | {:.2} ms |", median_ms(&mut hammering));
    Ok(())
}

/// Logs in from lan1 with the password Gatekeeper generated in `dir/state`: the session cookie header.
fn login(lab: &Lab, dir: &Path, router: Ipv4Addr) -> Result<String> {
    let password = std::fs::read_to_string(dir.join("state").join("admin-password"))?;
    let body = serde_json::json!({ "password": password.trim() }).to_string();
    let url = format!("http://{router}:1337/api/login");
    let head = lab.run(
        &lab.client(1),
        &["curl", "-s", "-m5", "-D", "-", "-o", "/dev/null", "-H", "Content-Type: application/json", "-d", &body, &url],
    )?;
    let cookie = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("set-cookie: gk_session=").map(str::to_owned))
        .and_then(|v| v.split(';').next().map(str::to_owned))
        .context("no session cookie in the login answer")?;
    Ok(format!("Cookie: gk_session={cookie}"))
}

/// A TCP stream from lan1 for `seconds` while lan1 downloads `url` (with `cookie`) again and again, `gap` after
/// each: the stream's bits/s, and each download's (bytes, seconds).
fn stream_while_downloading(
    lab: &Lab,
    url: &str,
    cookie: &str,
    gap: Duration,
    seconds: u64,
) -> Result<(f64, Vec<(f64, f64)>)> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, ns, url, cookie) = (stop.clone(), lab.client(1), url.to_owned(), cookie.to_owned());
    let downloader = std::thread::spawn(move || {
        let mut got = Vec::new();
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            let out = Command::new("ip")
                .args(["netns", "exec", &ns, "curl", "-sf", "-m30", "-o", "/dev/null", "-w"])
                .args(["%{size_download} %{time_total}", "-H", &cookie, &url])
                .output();
            let Ok(out) = out else { continue };
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut f = text.split(' ');
            if let (Some(Ok(size)), Some(Ok(t))) = (f.next().map(str::parse::<f64>), f.next().map(str::parse::<f64>)) {
                got.push((size, t));
            }
            std::thread::sleep(gap);
        }
        got
    });
    let rate = tcp_stream(lab, seconds);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let got = downloader.join().map_err(|_| anyhow::anyhow!("the downloader panicked"))?;
    anyhow::ensure!(!got.is_empty(), "no download completed during the stream");
    Ok((rate?, got))
}

/// `--mode capture`: whether downloading a device's capture disturbs the packet path. Per round, a fresh lab with
/// capture on (lan1 a known device): a TCP stream alone, one while lan1 downloads its own ring as pcapng once a
/// second (each a 5 MiB snapshot of the stream's packets), and one while it downloads back to back. Medians over
/// the rounds.
fn capture_bench(opts: &Opts) -> Result<()> {
    let (mut alone, mut paced, mut flat_out, mut per_sec, mut sizes, mut times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=opts.rounds {
        let (lab, dir, _gateway, router, _server) = gatekeeper_lab(opts)?;
        let cookie = login(&lab, &dir, router)?;
        let url = format!("http://{router}:1337/api/devices/{}/capture.pcapng", lab.client_mac(1)?);
        wait_quiet()?;
        let a = tcp_stream(&lab, opts.seconds)?;
        let (p, _) = stream_while_downloading(&lab, &url, &cookie, Duration::from_secs(1), opts.seconds)?;
        let start = Instant::now();
        let (f, got) = stream_while_downloading(&lab, &url, &cookie, Duration::ZERO, opts.seconds)?;
        let rate = got.len() as f64 / start.elapsed().as_secs_f64();
        let mut s: Vec<f64> = got.iter().map(|g| g.0 / 1e6).collect();
        let mut t: Vec<f64> = got.iter().map(|g| g.1 * 1e3).collect();
        eprintln!(
            "round {round}: stream {:.2} Gbit/s alone, {:.2} with a download a second, {:.2} with {} back to back \
             ({rate:.1}/s, each {:.1} MB in {:.0} ms)",
            a / 1e9,
            p / 1e9,
            f / 1e9,
            got.len(),
            median(&mut s),
            median(&mut t)
        );
        alone.push(a / 1e9);
        paced.push(p / 1e9);
        flat_out.push(f / 1e9);
        per_sec.push(rate);
        sizes.extend(s);
        times.extend(t);
    }
    println!("\nCapture downloads during a TCP stream, {} rounds, {} s streams:", opts.rounds, opts.seconds);
    println!("| measure | median |\n|---|---|");
    let (a, p, f) = (median(&mut alone), median(&mut paced), median(&mut flat_out));
    println!("| TCP 1 stream, capture on | {a:.2} Gbit/s |");
    println!("| ... while its ring downloads once a second | {p:.2} Gbit/s ({:.2}x) |", p / a);
    println!("| ... while its ring downloads back to back | {f:.2} Gbit/s ({:.2}x) |", f / a);
    println!("| ... downloads per second then | {:.1} |", median(&mut per_sec));
    println!("| ... each download | {:.1} MB in {:.0} ms |", median(&mut sizes), median(&mut times));
    Ok(())
}

const USAGE: &str = "Usage: sudo bench/nat.sh [--seconds 10] [--tests tcp1,tcp4,udp64] \
                     [--setups plain,masquerade,gatekeeper] [--attempts 3] [--queues N] [--mode throughput|api|capture]                      [--rounds 5] [--gatekeeper PATH]";

fn main() -> Result<()> {
    let mut opts = Opts {
        mode: Mode::Throughput,
        rounds: 5,
        gatekeeper: None,
        seconds: 10,
        tests: Test::ALL.to_vec(),
        setups: Setup::ALL.to_vec(),
        attempts: 3,
        queues: None,
    };
    let Some(pairs) = option_pairs(USAGE)? else { return Ok(()) };
    for (option, v) in &pairs {
        match option.as_str() {
            "--seconds" => opts.seconds = v.parse()?,
            "--rounds" => opts.rounds = v.parse::<usize>()?.max(1),
            "--gatekeeper" => opts.gatekeeper = Some(std::fs::canonicalize(v)?),
            "--mode" => {
                opts.mode = match v.as_str() {
                    "throughput" => Mode::Throughput,
                    "api" => Mode::Api,
                    "capture" => Mode::Capture,
                    m => bail!("unknown mode {m}\n{USAGE}"),
                }
            }
            "--attempts" => opts.attempts = v.parse::<usize>()?.max(1),
            "--queues" => opts.queues = Some(v.parse()?),
            "--tests" => opts.tests = v.split(',').map(Test::parse).collect::<Result<_>>()?,
            "--setups" => opts.setups = v.split(',').map(Setup::parse).collect::<Result<_>>()?,
            o => bail!("unknown option {o}\n{USAGE}"),
        }
    }
    if opts.mode == Mode::Api {
        return api_bench(&opts);
    }
    if opts.mode == Mode::Capture {
        return capture_bench(&opts);
    }
    if let Some(q) = opts.queues {
        eprintln!(
            "--queues {q}: passed to gatekeeper as --nat-queues if it has that flag, and as GATEKEEPER_NAT_QUEUES"
        );
    }

    let mut results = Vec::new();
    let mut checks = Vec::new();
    let mut failures = Vec::new();
    for &setup in &opts.setups {
        // A setup that fails is reported; the others still run.
        match run_setup(setup, &opts, &mut results) {
            Ok(c) => checks.push(c),
            Err(e) => {
                eprintln!("{}: failed: {e:#}", setup.name());
                failures.push(format!("{}: {e:#}", setup.name()));
            }
        }
    }
    let queues = opts.queues.map_or("default".into(), |q| q.to_string());
    println!(
        "\nNAT benchmark: iperf3 from lan1 to wan, {} s per run, gatekeeper NFQUEUE queues: {queues}",
        opts.seconds
    );
    println!(
        "CPU busy: cores of the machine ({} in all) busy over the run, split user / system / softirq+irq (/proc/stat); \
         CPU per Gbit/s (per Mpps): machine CPU-seconds per Gbit (million packets) received, both iperf3 ends \
         included; gatekeeper process: its own CPU, all threads; its share: of the machine's busy CPU; other work: cores busy with \
         anything but the benchmark (a run above 0.15 was disturbed, its numbers are not comparable).",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    print_tables(&opts, &results);
    failures.extend(report_checks(&checks));
    if !failures.is_empty() {
        eprintln!("\nFAILED:");
        for f in &failures {
            eprintln!("- {f}");
        }
        std::process::exit(1);
    }
    Ok(())
}
