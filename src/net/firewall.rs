//! The firewall rules the userspace NAT needs, in chains of our own (`GK-*`), installed with one
//! `iptables-restore --noflush` and removed by name (also what a crashed run left).
//!
//! Why these hooks (this kernel has no nft `queue` expression; the xtables NFQUEUE target works through iptables):
//! - WAN -> us is queued in raw PREROUTING, before connection tracking and before routing, so a translated
//!   destination is routed to the LAN host. Translated packets come back with NF_REPEAT and our mark, and the
//!   first rules then exempt them from conntrack: the kernel never tracks (or fights) what we translate.
//! - LAN -> WAN is exempted from conntrack in raw PREROUTING and queued after routing in mangle POSTROUTING, where
//!   the source is rewritten. LAN -> the WAN address (hairpinning) is queued in raw PREROUTING.
//! - No `--queue-bypass`: without our process the packets are dropped, never sent out untranslated.
//! - filter: from the WAN, the router accepts only replies to its own connections (conntrack still tracks the
//!   router's own traffic); WAN -> LAN passes only what we translated (marked).

use crate::ports::forward::{PortForward, Protocols};
use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Set on packets we translated (with NF_REPEAT) so that the rules let them pass untracked.
pub const MARK: u32 = 0x1000_0000;

/// Our chains, as (table, chain). GK-PRE and GK-OUT are only removed: older versions used them, and a crashed run of
/// one may have left them behind.
const CHAINS: [(&str, &str); 9] = [
    ("raw", "GK-LAN"),
    ("raw", "GK-WAN"),
    ("raw", "GK-HAIRPIN"),
    ("raw", "GK-UNTRACKED"),
    ("mangle", "GK-POST"),
    ("filter", "GK-IN"),
    ("filter", "GK-FWD"),
    ("raw", "GK-PRE"),
    ("raw", "GK-OUT"),
];
/// The built-in chains that jump to ours.
const BUILTINS: [(&str, &str); 5] =
    [("raw", "PREROUTING"), ("raw", "OUTPUT"), ("mangle", "POSTROUTING"), ("filter", "INPUT"), ("filter", "FORWARD")];
const LEGACY: [&str; 2] = ["GK-PRE", "GK-OUT"];

fn protocol_names(p: Protocols) -> &'static [&'static str] {
    match p {
        Protocols::Tcp => &["tcp"],
        Protocols::Udp => &["udp"],
        Protocols::Both => &["tcp", "udp"],
    }
}

#[derive(Debug, Clone)]
pub struct Rules {
    pub lan_if: String,
    pub wan_if: String,
    pub lan_subnet: Ipv4Net,
    pub wan_ip: Ipv4Addr,
    pub router_lan_ip: Ipv4Addr,
    /// NFQUEUE numbers `first..first+count`, spread by CPU when more than one.
    pub queue_first: u16,
    pub queue_count: u16,
    /// The router's own ephemeral ports (`ip_local_port_range`), which the NAT never maps onto.
    pub router_ports: (u16, u16),
    /// The configured port forwards (those among the router's ports still go to the NAT).
    pub forwards: Vec<PortForward>,
}

/// Which port of a packet picks its queue: the source port for packets leaving the LAN, the destination port for
/// packets arriving from the WAN (the WAN port of the mapping). Either is constant for the life of a flow.
#[derive(Clone, Copy)]
enum PortKey {
    Source,
    Destination,
}

impl Rules {
    /// Queues in use: a power of two (the queue is picked from port bits), at most `queue_count`.
    pub fn queues(&self) -> u16 {
        let n = self.queue_count.max(1);
        1 << (15 - n.leading_zeros())
    }

    /// The NFQUEUE rules for the packets `m` selects in `chain`. With several queues, TCP and UDP packets go to the
    /// queue numbered by bits 1.. of a port (bit 0 is skipped: Linux gives connect() even ports), so every packet
    /// of a flow goes through the same queue and thread. The kernel's own spreading does not do that:
    /// `--queue-balance` hashes addresses only (one host's flows to one server share a queue) and
    /// `--queue-cpu-fanout` splits a flow whenever its sender moves between CPUs, which reorders its segments
    /// (measured: ~50,000 retransmitted segments per stream in 5 s, the throughput halved). Other packets
    /// (ICMP, fragments) go to the first queue. One rule per queue besides the first (protocol and port in one
    /// `u32` match): every rule costs each packet that walks past it (see `script`).
    fn queue_rules(&self, chain: &str, m: &str, key: PortKey) -> String {
        let n = self.queues();
        let first = self.queue_first;
        let shift = match key {
            PortKey::Source => 17,
            PortKey::Destination => 1,
        };
        let head = if m.is_empty() { format!("-A {chain}") } else { format!("-A {chain} {m}") };
        let mut s = String::new();
        for q in 1..n {
            // Byte 9 is the protocol (TCP 6, UDP 17); the port is read at the IP header's length.
            s += &format!(
                "{head} ! -f -m u32 --u32 \"6&0xFF=0x6,0x11&&0>>22&0x3C@0>>{shift}&{mask:#x}={q:#x}\" \
                 -j NFQUEUE --queue-num {}\n",
                first + q,
                mask = n - 1
            );
        }
        s += &format!("{head} -j NFQUEUE --queue-num {first}\n");
        s
    }

    /// The forwards whose external port lies among the router's own ports: they must be reserved from its sockets.
    pub fn forwards_on_router_ports(&self) -> impl Iterator<Item = &PortForward> {
        let (lo, hi) = self.router_ports;
        self.forwards.iter().filter(move |f| (lo..=hi).contains(&f.external_port))
    }

    /// Replies to the router's own connections (its DNS upstream queries, above all) skip the NAT: they arrive on
    /// the router's ports, which no mapping uses, so the NAT could only answer "local" after a round trip through
    /// NFQUEUE and a wake-up of its thread (a quarter of the router's CPU per uncached DNS answer in `perf`).
    /// ACCEPT here only ends the raw table: conntrack still tracks them and GK-IN still drops what is not a reply.
    /// Forwards whose external port lies among the router's ports (kept out of its own use by
    /// `ip_local_reserved_ports`) still go to the NAT, on the queue the port rules would pick.
    fn router_port_rules(&self) -> String {
        let (lo, hi) = self.router_ports;
        let wip = self.wan_ip;
        let mut s = String::new();
        for f in self.forwards_on_router_ports() {
            let q = self.queue_first + ((f.external_port >> 1) & (self.queues() - 1));
            for proto in protocol_names(f.protocols) {
                s += &format!(
                    "-A GK-WAN -d {wip}/32 -p {proto} --dport {} -j NFQUEUE --queue-num {q}\n",
                    f.external_port
                );
            }
        }
        for proto in ["tcp", "udp"] {
            s += &format!("-A GK-WAN -d {wip}/32 -p {proto} --dport {lo}:{hi} -j ACCEPT\n");
        }
        s
    }

    /// The `iptables-restore --noflush` input that creates our chains and the jumps into them.
    ///
    /// Every packet of the LAN's traffic walks these rules in the sender's system call, and with iptables-nft each
    /// rule costs (an interface name copied and compared, a counter, `u32` through the xtables shim): `perf` of a
    /// 64-byte UDP flood showed the rule walk at a fifth of the sender's CPU when one chain held every rule. So
    /// the built-in chains branch by interface straight into ours, and the common case (LAN -> internet) meets 9
    /// or 10 rules over the three tables, jumps included (it met about 20), the LAN talking to the router 7.
    pub fn script(&self) -> String {
        self.script_with(true)
    }

    /// Our chains' contents alone, without the built-in chains' jumps: with `--noflush`, iptables-restore empties
    /// each chain it declares and fills it again in the same transaction, so a reload (a new WAN address) never
    /// leaves a moment without rules.
    pub fn chains_script(&self) -> String {
        self.script_with(false)
    }

    fn script_with(&self, jumps: bool) -> String {
        let (lan, wan, net, wip) = (&self.lan_if, &self.wan_if, self.lan_subnet, self.wan_ip);
        let rip = self.router_lan_ip;
        let m = format!("-m mark --mark {MARK:#x}/{MARK:#x}");
        let declare = |table: &str| {
            let chains = CHAINS.iter().filter(|(t, c)| *t == table && !LEGACY.contains(c));
            chains.map(|(_, c)| format!(":{c} - [0:0]\n")).collect::<String>()
        };
        let mut s = String::new();
        let jump = |line: String| if jumps { line } else { String::new() };
        s += &format!("*raw\n{}", declare("raw"));
        s += &jump(format!("-I PREROUTING 1 -i {lan} -j GK-LAN\n-I PREROUTING 2 -i {wan} -j GK-WAN\n"));
        // Untracked and done with the raw table: the LAN talking to the router's own services (DNS, DHCP, web),
        // and the packets we translated, which come back round with our mark (NF_REPEAT).
        s += &jump(format!("-I OUTPUT 1 -o {lan} -s {rip}/32 -j GK-UNTRACKED\n"));
        s += "-A GK-UNTRACKED -j CT --notrack\n-A GK-UNTRACKED -j ACCEPT\n";
        // Most of a router's traffic is LAN -> internet: its rules come first (the WAN address before "not the
        // LAN", as it is not in the LAN), and it leaves the raw table there, untracked (queued after routing).
        s += &format!("-A GK-LAN -d {wip}/32 -j GK-HAIRPIN\n");
        s += &format!("-A GK-LAN ! -d {net} -j GK-UNTRACKED\n");
        s += &format!("-A GK-LAN -d {rip}/32 -j GK-UNTRACKED\n");
        s += &format!("-A GK-LAN {m} -j GK-UNTRACKED\n");
        s += &self.queue_rules("GK-HAIRPIN", "", PortKey::Source);
        s += &format!("-A GK-WAN {m} -j GK-UNTRACKED\n");
        s += &self.router_port_rules();
        s += &self.queue_rules("GK-WAN", "", PortKey::Destination);
        s += "COMMIT\n";
        s += &format!("*mangle\n{}", declare("mangle"));
        s += &jump(format!("-I POSTROUTING 1 -o {wan} -j GK-POST\n"));
        s += &self.queue_rules("GK-POST", &format!("-s {net}"), PortKey::Source);
        s += "COMMIT\n";
        s += &format!("*filter\n{}", declare("filter"));
        s += &jump(format!("-I INPUT 1 -i {wan} -j GK-IN\n-I FORWARD 1 -j GK-FWD\n"));
        s += "-A GK-IN -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n";
        s += "-A GK-IN -j DROP\n";
        s += &format!("-A GK-FWD -i {lan} -o {wan} -s {net} -j ACCEPT\n");
        s += &format!("-A GK-FWD {m} -j ACCEPT\n");
        s += &format!("-A GK-FWD -i {wan} -j DROP\n");
        s += "COMMIT\n";
        s
    }
}

fn iptables(args: &[&str]) -> Result<std::process::Output> {
    Command::new("iptables")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run iptables (install the iptables package)")
}

/// Installs the rules (after removing any of ours left behind).
pub fn install(rules: &Rules) -> Result<()> {
    remove();
    restore(&rules.script())
}

/// Replaces the contents of our chains (installed before) in one transaction per table, the jumps untouched.
pub fn reload(rules: &Rules) -> Result<()> {
    restore(&rules.chains_script())
}

fn restore(script: &str) -> Result<()> {
    restore_with(Command::new("iptables-restore"), script)
}

/// Loads `script` with `iptables_restore` (`iptables-restore` itself, or a command that runs it elsewhere: the
/// benchmarks give a lab namespace's peers the router's rules) in `--noflush` mode.
pub fn restore_with(mut iptables_restore: Command, script: &str) -> Result<()> {
    let mut child = iptables_restore
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run iptables-restore (install the iptables package)")?;
    child.stdin.take().context("stdin")?.write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("iptables-restore refused our rules: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The built-in chain rules (as `iptables -S` prints them) that jump to one of our chains: `-A CHAIN ... -j GK-...`.
fn jumps_to_ours(listing: &str) -> Vec<Vec<&str>> {
    let ours = |target: &str| CHAINS.iter().any(|(_, c)| *c == target);
    listing
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first() == Some(&"-A") && w.windows(2).any(|p| p[0] == "-j" && ours(p[1])))
        .collect()
}

/// Removes our chains and the jumps to them, whatever interfaces they name (a crashed run's are unknown here);
/// anything already gone is fine. Returns how many jumps were removed.
pub fn remove() -> usize {
    let mut removed = 0;
    for (table, builtin) in BUILTINS {
        let Ok(out) = iptables(&["-t", table, "-S", builtin]) else { continue };
        for mut rule in jumps_to_ours(&String::from_utf8_lossy(&out.stdout)) {
            rule[0] = "-D";
            let mut args = vec!["-t", table];
            args.extend(rule);
            if iptables(&args).is_ok_and(|o| o.status.success()) {
                removed += 1;
            }
        }
    }
    // Emptied first, then deleted: a chain cannot go while another still jumps to it.
    for (table, chain) in CHAINS {
        let _ = iptables(&["-t", table, "-F", chain]);
    }
    for (table, chain) in CHAINS {
        let _ = iptables(&["-t", table, "-X", chain]);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removal_finds_every_jump_to_our_chains_whatever_its_match() {
        let listing = "-P PREROUTING ACCEPT\n-A PREROUTING -i gk-lan -j GK-LAN\n-A PREROUTING -j GK-PRE\n\
                       -A PREROUTING -i eth1 -j ACCEPT\n-A PREROUTING -j GK-OTHER\n";
        let found = jumps_to_ours(listing);
        assert_eq!(
            found,
            vec![vec!["-A", "PREROUTING", "-i", "gk-lan", "-j", "GK-LAN"], vec!["-A", "PREROUTING", "-j", "GK-PRE"]]
        );
    }

    #[test]
    fn script_queues_both_directions_without_bypass() {
        let r = Rules {
            lan_if: "gk-lan".into(),
            wan_if: "eth0".into(),
            lan_subnet: "10.0.0.0/24".parse().unwrap(),
            wan_ip: "203.0.113.2".parse().unwrap(),
            router_lan_ip: "10.0.0.1".parse().unwrap(),
            queue_first: 0,
            queue_count: 2,
            router_ports: (61000, 65535),
            forwards: vec![
                crate::ports::forward::parse_port_forward("62000=10.0.0.5:22/tcp").unwrap(),
                crate::ports::forward::parse_port_forward("10.0.0.6:25565").unwrap(),
            ],
        };
        let s = r.script();
        // Inbound by the destination port's bit 1, outbound and hairpin by the source port's; the rest to queue 0.
        let port_rule = |chain: &str, m: &str, shift: u32, q: u16| {
            format!(
                "-A {chain}{m} ! -f -m u32 --u32 \"6&0xFF=0x6,0x11&&0>>22&0x3C@0>>{shift}&0x1={q:#x}\" \
                 -j NFQUEUE --queue-num {q}\n"
            )
        };
        assert!(s.contains(&port_rule("GK-WAN", "", 1, 1)), "{s}");
        assert!(s.contains("-A GK-WAN -j NFQUEUE --queue-num 0\n"), "{s}");
        assert!(s.contains(&port_rule("GK-POST", " -s 10.0.0.0/24", 17, 1)), "{s}");
        assert!(s.contains("-A GK-POST -s 10.0.0.0/24 -j NFQUEUE --queue-num 0\n"), "{s}");
        assert!(s.contains("-I POSTROUTING 1 -o eth0 -j GK-POST\n"), "{s}");
        assert!(s.contains(&port_rule("GK-HAIRPIN", "", 17, 1)), "{s}");
        assert!(s.contains("-A GK-LAN -d 203.0.113.2/32 -j GK-HAIRPIN\n"), "{s}");
        // LAN -> internet: untracked and out of the raw table after two rules (hairpin first: the WAN address is
        // not in the LAN either).
        let lan = s.find("-A GK-LAN ").unwrap();
        assert!(
            s[lan..]
                .starts_with("-A GK-LAN -d 203.0.113.2/32 -j GK-HAIRPIN\n-A GK-LAN ! -d 10.0.0.0/24 -j GK-UNTRACKED\n"),
            "{s}"
        );
        // Translated packets (marked) skip the queues, before any queue rule sees them.
        let marked = s.find("-A GK-WAN -m mark").expect("marked rule");
        assert!(marked < s.find("-A GK-WAN ! -f").unwrap(), "{s}");
        assert!(!s.contains("bypass") && !s.contains("balance"), "fail closed, flows whole: {s}");
        // Replies to the router's own ports skip the queues, except a forward's port among them; forwards on
        // other ports need no rule of their own.
        let router = "-A GK-WAN -d 203.0.113.2/32 -p udp --dport 61000:65535 -j ACCEPT\n";
        let forward = "-A GK-WAN -d 203.0.113.2/32 -p tcp --dport 62000 -j NFQUEUE --queue-num 0\n";
        assert!(s.find(forward).expect(forward) < s.find(router).expect(router), "{s}");
        assert!(s.find(router).unwrap() < s.find("-A GK-WAN ! -f").unwrap(), "{s}");
        assert!(!s.contains("25565"), "{s}");
        // Every chain a rule jumps to is declared in the table that uses it.
        for (table, chain) in CHAINS {
            let part = s.split("COMMIT").find(|t| t.trim_start().starts_with(&format!("*{table}"))).unwrap();
            if s.contains(&format!("-j {chain}\n")) {
                assert!(part.contains(&format!(":{chain} - [0:0]")), "{chain} in {table}: {s}");
            }
        }
        let one = Rules { queue_count: 1, ..r.clone() }.script();
        assert!(one.contains("-A GK-POST -s 10.0.0.0/24 -j NFQUEUE --queue-num 0\n"), "{one}");
        assert!(!one.contains("u32"), "{one}");
        for (asked, used) in [(1, 1), (2, 2), (3, 2), (4, 4), (7, 4), (8, 8)] {
            assert_eq!(Rules { queue_count: asked, ..r.clone() }.queues(), used);
        }

        // A reload (new WAN address): the same chains with the new address, no jump from a built-in chain (they
        // stay as installed), and every chain declared so that iptables-restore empties it first.
        let moved = Rules { wan_ip: "198.51.100.7".parse().unwrap(), ..r.clone() };
        let reload = moved.chains_script();
        assert!(reload.contains("-A GK-LAN -d 198.51.100.7/32 -j GK-HAIRPIN\n"), "{reload}");
        assert!(!reload.contains("203.0.113.2"), "{reload}");
        assert!(!reload.contains("-I "), "{reload}");
        let body = |script: &str| script.lines().filter(|l| !l.starts_with("-I ")).collect::<Vec<_>>().join("\n");
        assert_eq!(body(&reload), body(&moved.script()));
    }
}
