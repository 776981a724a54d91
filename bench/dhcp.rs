//! DHCP server benchmark: perfdhcp in relay mode (every exchange a new client) against Gatekeeper, ISC Kea
//! (memfile) and dnsmasq, in the same run, each in a fresh lab, with 0 and with 10,000 leases held at the start.
//! Reports 4-way exchanges/s, drops, and the server's CPU time per exchange (from /proc/PID/stat).
//!
//! Run: `sudo bench/dhcp.sh` (builds in release mode, installs perfdhcp, kea and dnsmasq, runs this).
//! Options: `--seconds N` (10), `--rates 5000,12000` (offered exchanges/s), `--held 0,10000`,
//! `--servers gatekeeper,kea,dnsmasq`.
//!
//! Topology: perfdhcp in lan1 acts as a relay at 10.64.0.2 (giaddr), whose subnet 10.64.0.0/14 is a relay pool of
//! every server; the server answers on 10.0.0.1 in gw.

use anyhow::{Context, Result, bail};
use gatekeeper::dhcp::lease::{Lease, Record};
use gatekeeper::dhcp::store::LeaseStore;
use gatekeeper::lab::{Lab, LabOptions, Proc, cpu_secs};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RELAY: &str = "10.64.0.2";
const RELAY_NET: &str = "10.64.0.0/14";
const POOL: (&str, &str) = ("10.64.1.0", "10.67.255.250");
const LEASE_SECS: u64 = 3600;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Server {
    Gatekeeper,
    Kea,
    Dnsmasq,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Gatekeeper => "gatekeeper",
            Server::Kea => "kea",
            Server::Dnsmasq => "dnsmasq",
        }
    }
}

struct Outcome {
    server: Server,
    held: usize,
    offered: u32,
    rate: f64,
    discovers: u64,
    acks: u64,
    cpu_secs: f64,
    seconds: u64,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn preload_mac(i: usize) -> [u8; 6] {
    let b = (i as u32).to_be_bytes();
    [0x0e, 0, b[0], b[1], b[2], b[3]]
}

fn preload_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(POOL.0.parse::<Ipv4Addr>().unwrap()) + i as u32)
}

fn mac_text(m: &[u8; 6]) -> String {
    gatekeeper::types::Mac(*m).to_string()
}

fn start_server(lab: &Lab, server: Server, held: usize, dir: &Path) -> Result<Proc> {
    let gw = lab.gw();
    let expiry = now() + LEASE_SECS;
    match server {
        Server::Gatekeeper => {
            let state = dir.join("state");
            std::fs::create_dir_all(&state)?;
            if held > 0 {
                let (mut store, _) = LeaseStore::open(&state, now())?;
                for i in 0..held {
                    let mac = preload_mac(i);
                    let mut client_id = vec![1];
                    client_id.extend_from_slice(&mac);
                    store.append(&Record::Bound(Lease {
                        client_id,
                        mac: gatekeeper::types::Mac(mac),
                        ip: preload_ip(i),
                        hostname: None,
                        expires: expiry,
                    }));
                }
                store.commit()?;
            }
            let config = dir.join("gatekeeper.toml");
            std::fs::write(
                &config,
                format!(
                    "[dhcp]\nlease_time = {LEASE_SECS}\n[[dhcp.relay]]\nsubnet = \"{RELAY_NET}\"\nrange = [\"{}\", \"{}\"]\n",
                    POOL.0, POOL.1
                ),
            )?;
            let exe = std::env::current_exe()?.parent().unwrap().parent().unwrap().join("gatekeeper");
            let mut c = lab.cmd(&gw, exe);
            c.args(["run", "--lan", "gw-lan1", "--subnet", "10.0.0.0/24", "--state-dir"])
                .arg(&state)
                .arg("--config")
                .arg(&config)
                .env("GATEKEEPER_LOG", "info");
            let mut p = Proc::spawn(c, &dir.join("server.log"))?;
            p.wait_for_log("DHCP server ready", Duration::from_secs(30))?;
            Ok(p)
        }
        Server::Kea => {
            lab.run(&gw, &["ip", "addr", "add", "10.0.0.1/24", "dev", "gw-lan1"])?;
            let leases = dir.join("kea-leases4.csv");
            if held > 0 {
                let mut csv = String::from(
                    "address,hwaddr,client_id,valid_lifetime,expire,subnet_id,fqdn_fwd,fqdn_rev,hostname,state,user_context\n",
                );
                for i in 0..held {
                    let mac = mac_text(&preload_mac(i));
                    writeln!(csv, "{},{mac},01:{mac},{LEASE_SECS},{expiry},2,0,0,,0,", preload_ip(i))?;
                }
                std::fs::write(&leases, csv)?;
            }
            let config = dir.join("kea.json");
            std::fs::write(
                &config,
                serde_json::json!({"Dhcp4": {
                    "interfaces-config": {"interfaces": ["gw-lan1"], "dhcp-socket-type": "udp"},
                    "lease-database": {"type": "memfile", "persist": true, "name": leases, "lfc-interval": 0},
                    "valid-lifetime": LEASE_SECS,
                    "subnet4": [
                        {"id": 1, "subnet": "10.0.0.0/24", "pools": [{"pool": "10.0.0.10 - 10.0.0.250"}],
                         "option-data": [{"name": "routers", "data": "10.0.0.1"}]},
                        {"id": 2, "subnet": RELAY_NET, "pools": [{"pool": format!("{} - {}", POOL.0, POOL.1)}],
                         "option-data": [{"name": "routers", "data": RELAY}]}
                    ],
                    "loggers": [{"name": "kea-dhcp4", "output_options": [{"output": "stdout"}], "severity": "WARN"}]
                }})
                .to_string(),
            )?;
            let mut c = lab.cmd(&gw, "kea-dhcp4");
            c.arg("-c").arg(&config).env("KEA_PIDFILE_DIR", dir).env("KEA_LOCKFILE_DIR", dir);
            let p = Proc::spawn(c, &dir.join("server.log"))?;
            wait_port_67(lab)?;
            Ok(p)
        }
        Server::Dnsmasq => {
            lab.run(&gw, &["ip", "addr", "add", "10.0.0.1/24", "dev", "gw-lan1"])?;
            let leases = dir.join("dnsmasq.leases");
            let mut text = String::new();
            for i in 0..held {
                let mac = mac_text(&preload_mac(i));
                writeln!(text, "{expiry} {mac} {} * 01:{mac}", preload_ip(i))?;
            }
            std::fs::write(&leases, text)?;
            let mut c = lab.cmd(&gw, "dnsmasq");
            c.args(["-k", "-C", "/dev/null", "--port=0", "--interface=gw-lan1", "--bind-interfaces", "--no-ping"])
                .arg(format!("--dhcp-range=10.0.0.10,10.0.0.250,{LEASE_SECS}"))
                .arg(format!("--dhcp-range={},{},255.252.0.0,{LEASE_SECS}", POOL.0, POOL.1))
                .arg("--dhcp-lease-max=1000000")
                .arg(format!("--dhcp-leasefile={}", leases.display()))
                .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()));
            let p = Proc::spawn(c, &dir.join("server.log"))?;
            wait_port_67(lab)?;
            Ok(p)
        }
    }
}

fn wait_port_67(lab: &Lab) -> Result<()> {
    for _ in 0..100 {
        let out = lab.run(&lab.gw(), &["ss", "-uln", "sport", "= :67"])?;
        if out.lines().count() > 1 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("the server never listened on port 67")
}

/// `key: value` of the perfdhcp report section `section`.
fn stat(report: &str, section: &str, key: &str) -> Option<f64> {
    let start = report.find(&format!("Statistics for: {section}"))?;
    report[start..]
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{key}: "))?.split_whitespace().next()?.parse().ok())
}

fn run_one(server: Server, held: usize, offered: u32, seconds: u64) -> Result<Outcome> {
    let lab = Lab::new(LabOptions { clients: 1, host_link: false })?;
    let (gw, lan) = (lab.gw(), lab.client(1));
    lab.run(&lan, &["ip", "addr", "add", &format!("{RELAY}/14"), "dev", "eth0"])?;
    lab.run(&lan, &["ip", "route", "add", "10.0.0.0/24", "dev", "eth0"])?;
    lab.run(&gw, &["ip", "route", "add", RELAY_NET, "dev", "gw-lan1"])?;
    let dir = lab.dir().join(server.name());
    std::fs::create_dir_all(&dir)?;
    let proc = start_server(&lab, server, held, &dir)?;
    let pid = proc.pid();

    let udp_before = (lab.udp_rcvbuf_errors(&gw)?, lab.udp_rcvbuf_errors(&lan)?);
    let before = cpu_secs(pid)?;
    let mut perf = lab.cmd(&lan, "perfdhcp");
    perf.args(["-4", "-l", RELAY, "-r", &offered.to_string(), "-p", &seconds.to_string(), "-R", "4000000"])
        .args(["-W", "2000000", "10.0.0.1"]);
    // perfdhcp exits non-zero when it saw drops; its report is on stdout either way.
    let out = perf.output()?;
    let after = cpu_secs(pid)?;
    if std::env::var_os("BENCH_THREADS").is_some() {
        for t in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let t = t?.path();
            let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
            let stat = std::fs::read_to_string(t.join("stat")).unwrap_or_default();
            let f: Vec<&str> = stat[stat.rfind(')').unwrap_or(0) + 2..].split_whitespace().collect();
            eprintln!("  thread {:<20} utime {:>6} stime {:>6} ticks", comm.trim(), f[11], f[12]);
        }
    }
    let udp_after = (lab.udp_rcvbuf_errors(&gw)?, lab.udp_rcvbuf_errors(&lan)?);
    eprintln!(
        "  UDP receive-buffer drops: server side {}, perfdhcp side {}",
        udp_after.0 - udp_before.0,
        udp_after.1 - udp_before.1
    );
    let report = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let discovers = stat(&report, "DISCOVER-OFFER", "sent packets").context(report.clone())? as u64;
    let acks = stat(&report, "REQUEST-ACK", "received packets").context(report.clone())? as u64;
    let rate = acks as f64 / seconds as f64;
    drop(proc);
    Ok(Outcome { server, held, offered, rate, discovers, acks, cpu_secs: after - before, seconds })
}

fn main() -> Result<()> {
    let mut seconds = 10u64;
    let mut rates = vec![5000u32, 12000];
    let mut helds = vec![0usize, 10_000];
    let mut servers = vec![Server::Gatekeeper, Server::Kea, Server::Dnsmasq];
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let v = pair.get(1).context("option without value")?;
        match pair[0].as_str() {
            "--seconds" => seconds = v.parse()?,
            "--rates" => rates = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--held" => helds = v.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--servers" => {
                servers = v
                    .split(',')
                    .map(|s| match s {
                        "gatekeeper" => Ok(Server::Gatekeeper),
                        "kea" => Ok(Server::Kea),
                        "dnsmasq" => Ok(Server::Dnsmasq),
                        o => bail!("unknown server {o}"),
                    })
                    .collect::<Result<_>>()?
            }
            o => bail!("unknown option {o}"),
        }
    }
    let mut results = Vec::new();
    for &held in &helds {
        for &offered in &rates {
            for &server in &servers {
                eprintln!("{} with {held} leases held, offered {offered}/s for {seconds} s ...", server.name());
                let r = run_one(server, held, offered, seconds)?;
                eprintln!("  -> {:.0} exchanges/s, {} of {} completed", r.rate, r.acks, r.discovers);
                results.push(r);
            }
        }
    }
    println!("| leases held | offered/s | server | exchanges/s | not completed | CPU per exchange | CPU busy |");
    println!("|---:|---:|---|---:|---:|---:|---:|");
    for r in &results {
        let lost = 100.0 * (1.0 - r.acks as f64 / r.discovers.max(1) as f64);
        println!(
            "| {} | {} | {} | {:.0} | {:.2}% | {:.1} us | {:.0}% |",
            r.held,
            r.offered,
            r.server.name(),
            r.rate,
            lost,
            r.cpu_secs * 1e6 / r.acks.max(1) as f64,
            100.0 * r.cpu_secs / r.seconds as f64
        );
    }
    Ok(())
}
