//! Applying a LAN plan to the kernel, and undoing it. Every change is written to an undo journal in the state
//! directory *before* it is made, so that after a crash the next start can undo exactly what was done (each undo step
//! tolerates "already gone"). The journal remembers the boot and the network namespace it belongs to: after a reboot
//! or in another namespace there is nothing to undo.

use super::netlink::{Netlink, is_not_found};
use super::plan::{BRIDGE_NAME, Plan};
use crate::state::write_atomic;
use anyhow::{Context, Result, anyhow};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};

pub const JOURNAL_FILE: &str = "network-undo.json";
const IP_FORWARD: &str = "net/ipv4/ip_forward";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "snake_case")]
enum Undo {
    DeleteLink {
        name: String,
    },
    RemoveAddr {
        ifname: String,
        net: Ipv4Net,
    },
    Detach {
        ifname: String,
    },
    SetDown {
        ifname: String,
    },
    Sysctl {
        key: String,
        value: String,
    },
    /// Our GK-* firewall chains.
    Firewall,
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalFile {
    boot_id: String,
    netns_inode: u64,
    pid: u32,
    steps: Vec<Undo>,
}

struct Journal {
    path: PathBuf,
    file: JournalFile,
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default().trim().to_owned()
}

fn netns_inode() -> u64 {
    std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino()).unwrap_or(0)
}

pub fn read_sysctl(key: &str) -> Result<String> {
    let path = Path::new("/proc/sys").join(key);
    Ok(std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?.trim().to_owned())
}

pub fn write_sysctl(key: &str, value: &str) -> Result<()> {
    let path = Path::new("/proc/sys").join(key);
    std::fs::write(&path, value).with_context(|| format!("cannot write {value} to {}", path.display()))
}

impl Journal {
    fn begin(path: PathBuf) -> Result<Self> {
        let j = Journal {
            path,
            file: JournalFile {
                boot_id: boot_id(),
                netns_inode: netns_inode(),
                pid: std::process::id(),
                steps: vec![],
            },
        };
        j.save()?;
        Ok(j)
    }

    fn save(&self) -> Result<()> {
        write_atomic(&self.path, &serde_json::to_vec_pretty(&self.file)?)
    }

    /// Records how to undo a change; call before making it.
    fn push(&mut self, step: Undo) -> Result<()> {
        self.file.steps.push(step);
        self.save()
    }
}

/// Applies the steps in reverse order; keeps going past failures so that as much as possible is restored.
async fn undo(nl: &Netlink, steps: &[Undo]) -> usize {
    let links = nl.links().await.unwrap_or_default();
    let index = |name: &str| links.iter().find(|l| l.name == name).map(|l| l.index);
    let mut failures = 0;
    for step in steps.iter().rev() {
        let result: Result<(), rtnetlink::Error> = match step {
            Undo::Sysctl { key, value } => {
                if let Err(e) = write_sysctl(key, value) {
                    warn!("restoring {key}: {e:#}");
                    failures += 1;
                }
                continue;
            }
            Undo::Firewall => {
                super::firewall::remove();
                continue;
            }
            Undo::DeleteLink { name } => match index(name) {
                Some(i) => nl.delete_link(i).await,
                None => Ok(()),
            },
            Undo::RemoveAddr { ifname, net } => match index(ifname) {
                Some(i) => nl.del_addr(i, *net).await,
                None => Ok(()),
            },
            Undo::Detach { ifname } => match index(ifname) {
                Some(i) => nl.set_master(i, None).await,
                None => Ok(()),
            },
            Undo::SetDown { ifname } => match index(ifname) {
                Some(i) => nl.set_up(i, false).await,
                None => Ok(()),
            },
        };
        match result {
            Ok(()) => debug!(?step, "undone"),
            Err(e) if is_not_found(&e) => debug!(?step, "already gone"),
            Err(e) => {
                warn!(?step, "could not undo: {e}");
                failures += 1;
            }
        }
    }
    failures
}

/// Undoes what a previous run left behind (it crashed or was killed). Call before planning.
pub async fn recover(nl: &Netlink, state_dir: &Path) -> Result<()> {
    let path = state_dir.join(JOURNAL_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    match serde_json::from_slice::<JournalFile>(&text) {
        Ok(j) if j.boot_id == boot_id() && j.netns_inode == netns_inode() => {
            warn!(
                pid = j.pid,
                steps = j.steps.len(),
                "the previous run did not shut down cleanly; undoing its network changes"
            );
            let failures = undo(nl, &j.steps).await;
            if failures > 0 {
                warn!(failures, "some leftovers could not be removed");
            }
        }
        Ok(_) => info!("discarding the undo journal of another boot or network namespace"),
        Err(e) => warn!("ignoring an unreadable undo journal {}: {e}", path.display()),
    }
    std::fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
    // Without a journal (a different state dir, say), our bridge is still recognisable by name.
    if let Some(l) = nl.links().await?.into_iter().find(|l| l.name == BRIDGE_NAME) {
        warn!("removing the bridge {BRIDGE_NAME} left by an earlier run");
        nl.delete_link(l.index).await.map_err(|e| anyhow!("cannot remove the leftover bridge {BRIDGE_NAME}: {e}"))?;
    }
    Ok(())
}

/// The applied LAN. `teardown` must be called to restore the namespace; a crash is handled by `recover`.
pub struct LanSetup {
    pub plan: Plan,
    pub lan_index: u32,
    journal: Journal,
}

impl LanSetup {
    pub async fn apply(nl: &Netlink, plan: Plan, state_dir: &Path) -> Result<LanSetup> {
        let mut journal = Journal::begin(state_dir.join(JOURNAL_FILE))?;
        match Self::apply_steps(nl, &plan, &mut journal).await {
            Ok(lan_index) => Ok(LanSetup { plan, lan_index, journal }),
            Err(e) => {
                undo(nl, &journal.file.steps).await;
                let _ = std::fs::remove_file(&journal.path);
                Err(e)
            }
        }
    }

    async fn apply_steps(nl: &Netlink, plan: &Plan, j: &mut Journal) -> Result<u32> {
        for port in plan.ports.iter().filter(|p| !p.up) {
            j.push(Undo::SetDown { ifname: port.name.clone() })?;
        }
        let lan_index = match &plan.bridge {
            Some(name) => {
                j.push(Undo::DeleteLink { name: name.clone() })?;
                nl.create_bridge(name).await.map_err(|e| anyhow!("cannot create the bridge {name}: {e}"))?;
                let bridge = nl.links().await?.into_iter().find(|l| &l.name == name).context("bridge vanished")?;
                for port in &plan.ports {
                    j.push(Undo::Detach { ifname: port.name.clone() })?;
                    nl.set_master(port.index, Some(bridge.index))
                        .await
                        .map_err(|e| anyhow!("cannot add {} to the bridge {name}: {e}", port.name))?;
                    nl.set_up(port.index, true).await.map_err(|e| anyhow!("cannot bring {} up: {e}", port.name))?;
                }
                bridge.index
            }
            None => plan.ports[0].index,
        };
        let lan = plan.lan_interface();
        j.push(Undo::RemoveAddr { ifname: lan.to_owned(), net: plan.router_net() })?;
        nl.add_addr(lan_index, plan.router_net())
            .await
            .map_err(|e| anyhow!("cannot add {} to {lan}: {e}", plan.router_net()))?;
        nl.set_up(lan_index, true).await.map_err(|e| anyhow!("cannot bring {lan} up: {e}"))?;
        Ok(lan_index)
    }

    /// Switches IPv4 forwarding on. Call it last, once the NAT's rules are in place: the undo runs backwards, so
    /// forwarding is also the first thing switched off, before the rules go (never a moment of untranslated
    /// forwarding, at start, at exit or when recovering from a crash).
    pub fn enable_forwarding(&mut self) -> Result<()> {
        self.set_sysctl(IP_FORWARD, "1")
    }

    /// Sets a sysctl, remembering the old value for teardown (and for the next start after a crash).
    pub fn set_sysctl(&mut self, key: &str, value: &str) -> Result<()> {
        let old = read_sysctl(key)?;
        if old == value {
            return Ok(());
        }
        self.journal.push(Undo::Sysctl { key: key.into(), value: old })?;
        write_sysctl(key, value)
    }

    /// Installs the NAT's firewall rules, to be removed at teardown (or by the next start after a crash).
    pub fn install_firewall(&mut self, rules: &super::firewall::Rules) -> Result<()> {
        self.journal.push(Undo::Firewall)?;
        super::firewall::install(rules)
    }

    /// Restores everything `apply` changed and removes the journal.
    pub async fn teardown(self, nl: &Netlink) -> Result<()> {
        let failures = undo(nl, &self.journal.file.steps).await;
        if failures > 0 {
            // Keep the journal: the next start tries again.
            anyhow::bail!("{failures} network changes could not be undone; the next start will retry");
        }
        std::fs::remove_file(&self.journal.path)
            .with_context(|| format!("cannot remove {}", self.journal.path.display()))?;
        Ok(())
    }
}
