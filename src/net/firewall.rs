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

use anyhow::{Context, Result, bail};
use ipnet::Ipv4Net;
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// Set on packets we translated (with NF_REPEAT) so that the rules let them pass untracked.
pub const MARK: u32 = 0x1000_0000;

const CHAINS: [(&str, &str, &str); 5] = [
    ("raw", "GK-PRE", "PREROUTING"),
    ("raw", "GK-OUT", "OUTPUT"),
    ("mangle", "GK-POST", "POSTROUTING"),
    ("filter", "GK-IN", "INPUT"),
    ("filter", "GK-FWD", "FORWARD"),
];

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
}

impl Rules {
    fn queue(&self) -> String {
        if self.queue_count <= 1 {
            format!("-j NFQUEUE --queue-num {}", self.queue_first)
        } else {
            format!(
                "-j NFQUEUE --queue-balance {}:{} --queue-cpu-fanout",
                self.queue_first,
                self.queue_first + self.queue_count - 1
            )
        }
    }

    /// The `iptables-restore --noflush` input that creates our chains and the jumps into them.
    pub fn script(&self) -> String {
        let (lan, wan, net, wip, q) = (&self.lan_if, &self.wan_if, self.lan_subnet, self.wan_ip, self.queue());
        let rip = self.router_lan_ip;
        let m = format!("-m mark --mark {MARK:#x}/{MARK:#x}");
        let mut s = String::new();
        s += "*raw\n:GK-PRE - [0:0]\n:GK-OUT - [0:0]\n-I PREROUTING 1 -j GK-PRE\n-I OUTPUT 1 -j GK-OUT\n";
        // The LAN talking to the router's own services (DNS, DHCP, web) needs no connection tracking, and no
        // further rules of ours: ACCEPT ends the raw table for it (the DNS profile showed the rule walk).
        for (chain, dir, addr) in [("GK-PRE", "-i", "-d"), ("GK-OUT", "-o", "-s")] {
            s += &format!("-A {chain} {dir} {lan} {addr} {rip}/32 -j CT --notrack\n");
            s += &format!("-A {chain} {dir} {lan} {addr} {rip}/32 -j ACCEPT\n");
        }
        s += &format!("-A GK-PRE {m} -j CT --notrack\n-A GK-PRE {m} -j ACCEPT\n");
        s += &format!("-A GK-PRE -i {wan} {q}\n");
        s += &format!("-A GK-PRE -i {lan} -d {wip}/32 {q}\n");
        s += &format!("-A GK-PRE -i {lan} ! -d {net} -j CT --notrack\n");
        s += "COMMIT\n";
        s += "*mangle\n:GK-POST - [0:0]\n-I POSTROUTING 1 -j GK-POST\n";
        s += &format!("-A GK-POST -o {wan} -s {net} {q}\n");
        s += "COMMIT\n";
        s += "*filter\n:GK-IN - [0:0]\n:GK-FWD - [0:0]\n-I INPUT 1 -j GK-IN\n-I FORWARD 1 -j GK-FWD\n";
        s += &format!("-A GK-IN -i {wan} -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
        s += &format!("-A GK-IN -i {wan} -j DROP\n");
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
    let mut child = Command::new("iptables-restore")
        .arg("--noflush")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run iptables-restore (install the iptables package)")?;
    child.stdin.take().context("stdin")?.write_all(rules.script().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("iptables-restore refused our rules: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Removes our chains and the jumps to them; anything already gone is fine. Returns how many jumps were removed.
pub fn remove() -> usize {
    let mut removed = 0;
    for (table, chain, builtin) in CHAINS {
        // A chain may be jumped to more than once if rules were added by hand: remove every jump.
        while iptables(&["-t", table, "-D", builtin, "-j", chain]).is_ok_and(|o| o.status.success()) {
            removed += 1;
        }
        let _ = iptables(&["-t", table, "-F", chain]);
        let _ = iptables(&["-t", table, "-X", chain]);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

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
        };
        let s = r.script();
        assert!(s.contains("-A GK-PRE -i eth0 -j NFQUEUE --queue-balance 0:1 --queue-cpu-fanout"), "{s}");
        assert!(s.contains("-A GK-POST -o eth0 -s 10.0.0.0/24 -j NFQUEUE"), "{s}");
        assert!(s.contains("-A GK-PRE -i gk-lan -d 203.0.113.2/32 -j NFQUEUE"), "{s}");
        assert!(!s.contains("bypass"), "fail closed: {s}");
        let one = Rules { queue_count: 1, ..r }.script();
        assert!(one.contains("--queue-num 0\n"), "{one}");
    }
}
