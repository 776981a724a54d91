//! Real DHCP clients in lab namespaces: ISC dhclient, busybox udhcpc and dhcpcd, each with a hook script of ours
//! (so nothing outside the namespace, such as /etc/resolv.conf, is ever written) that logs every event as one line:
//! `EVENT ip=... mask=... router=... dns=... domain=... lease=...`.

use super::{Lab, Proc};
use anyhow::{Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpClient {
    Dhclient,
    Udhcpc,
    Dhcpcd,
}

impl DhcpClient {
    pub fn name(self) -> &'static str {
        match self {
            DhcpClient::Dhclient => "dhclient",
            DhcpClient::Udhcpc => "udhcpc",
            DhcpClient::Dhcpcd => "dhcpcd",
        }
    }
}

/// A running client; `events()` reads its hook log.
pub struct ClientRun {
    pub kind: DhcpClient,
    pub ns: String,
    pub proc: Proc,
    pub events: PathBuf,
    files: PathBuf,
}

const UDHCPC_HOOK: &str = r#"#!/bin/sh
echo "$1 ip=$ip mask=$mask router=$router dns=$dns domain=$domain lease=$lease" >> "$GK_EVENTS"
case "$1" in
  deconfig) ip -4 addr flush dev "$interface" ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface" ;;
esac
exit 0
"#;

const DHCLIENT_HOOK: &str = r#"#!/bin/sh
echo "$reason ip=$new_ip_address mask=$new_subnet_mask router=$new_routers dns=$new_domain_name_servers domain=$new_domain_name lease=$new_dhcp_lease_time" >> "$GK_EVENTS"
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip -4 addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    [ -n "$new_routers" ] && ip route replace default via "${new_routers%% *}" dev "$interface" ;;
  EXPIRE|FAIL|RELEASE|STOP) ip -4 addr flush dev "$interface" ;;
esac
exit 0
"#;

// dhcpcd configures the interface itself; the hook only logs.
const DHCPCD_HOOK: &str = r#"#!/bin/sh
echo "$reason ip=$new_ip_address mask=$new_subnet_cidr router=$new_routers dns=$new_domain_name_servers domain=$new_domain_name lease=$new_dhcp_lease_time" >> "$GK_EVENTS"
"#;

impl Lab {
    /// Starts a DHCP client in the foreground on `eth0` of LAN client `i`, sending `hostname` if given.
    pub fn dhcp_client(&self, i: usize, kind: DhcpClient, hostname: Option<&str>) -> Result<ClientRun> {
        let ns = self.client(i);
        let files = self.dir().join(format!("lan{i}-{}", kind.name()));
        std::fs::create_dir_all(&files)?;
        let events = files.join("events");
        std::fs::write(&events, "")?;
        let hook = files.join("hook");
        let hook_text = match kind {
            DhcpClient::Dhclient => DHCLIENT_HOOK,
            DhcpClient::Udhcpc => UDHCPC_HOOK,
            DhcpClient::Dhcpcd => DHCPCD_HOOK,
        };
        // dhclient runs its script with a scrubbed environment, so the log path is written into the script.
        let hook_text = hook_text.replace("$GK_EVENTS", &events.to_string_lossy());
        std::fs::write(&hook, hook_text)?;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))?;
        let f = |name: &str| files.join(name).to_string_lossy().into_owned();
        let cmd = match kind {
            DhcpClient::Dhclient => {
                let conf = match hostname {
                    Some(h) => format!("send host-name \"{h}\";\n"),
                    None => String::new(),
                };
                std::fs::write(files.join("dhclient.conf"), conf)?;
                let mut c = self.cmd(&ns, "dhclient");
                c.args(["-4", "-v", "-d", "-cf", &f("dhclient.conf"), "-sf", &f("hook"), "-pf", &f("pid"), "-lf"])
                    .args([&f("leases"), "eth0"]);
                c
            }
            DhcpClient::Udhcpc => {
                let mut c = self.cmd(&ns, "udhcpc");
                c.args(["-i", "eth0", "-f", "-t", "10", "-T", "1", "-A", "1", "-s", &f("hook")]);
                if let Some(h) = hostname {
                    c.args(["-x", &format!("hostname:{h}")]);
                }
                c
            }
            DhcpClient::Dhcpcd => {
                // dhcpcd keeps its pid file, socket and leases under fixed paths: give it private ones
                // (`ip netns exec` runs us in a mount namespace of our own, so these mounts stay here).
                let mut args = format!(
                    "mkdir -p /run/dhcpcd /var/lib/dhcpcd && mount -t tmpfs gk-dhcpcd /run/dhcpcd && \
                     mount -t tmpfs gk-dhcpcd /var/lib/dhcpcd && exec dhcpcd -4 -B -f /dev/null -c {} ",
                    f("hook")
                );
                if let Some(h) = hostname {
                    args += &format!("-h {h} ");
                }
                args += "eth0";
                let mut c = self.cmd(&ns, "sh");
                c.args(["-c", &args]);
                c
            }
        };
        let proc = Proc::spawn(cmd, &files.join("log"))?;
        Ok(ClientRun { kind, ns, proc, events, files })
    }
}

impl ClientRun {
    pub fn events(&self) -> String {
        std::fs::read_to_string(&self.events).unwrap_or_default()
    }

    /// Waits for the first event line after `skip` lines whose event name is one of `names`; returns it.
    pub fn wait_event(&mut self, skip: usize, names: &[&str], timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events();
            if let Some(l) = events.lines().skip(skip).find(|l| names.iter().any(|n| l.split(' ').next() == Some(*n))) {
                return Ok(l.to_owned());
            }
            if let Some(st) = self.proc.try_status() {
                bail!(
                    "{} exited ({st}) before {names:?}; events:\n{events}\nlog:\n{}",
                    self.kind.name(),
                    self.proc.log()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} gave no {names:?} within {timeout:?}; events:\n{events}\nlog:\n{}",
                    self.kind.name(),
                    self.proc.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn event_count(&self) -> usize {
        self.events().lines().count()
    }

    /// Asks the client to renew now where it has a way to be asked (udhcpc and dhcpcd: SIGUSR1);
    /// dhclient renews on its own at T1.
    pub fn renew(&self) {
        match self.kind {
            DhcpClient::Udhcpc => self.proc.signal(libc::SIGUSR1),
            DhcpClient::Dhcpcd => self.proc.signal(libc::SIGUSR1),
            DhcpClient::Dhclient => {}
        }
    }

    /// Releases the lease and stops the client.
    pub fn release(&mut self, lab: &Lab) -> Result<()> {
        match self.kind {
            DhcpClient::Udhcpc => self.proc.signal(libc::SIGUSR2),
            // dhcpcd 9: SIGALRM releases the lease and exits.
            DhcpClient::Dhcpcd => self.proc.signal(libc::SIGALRM),
            DhcpClient::Dhclient => {
                let f = |name: &str| self.files.join(name).to_string_lossy().into_owned();
                lab.run(
                    &self.ns,
                    &["dhclient", "-4", "-r", "-sf", &f("hook"), "-pf", &f("pid"), "-lf", &f("leases"), "eth0"],
                )?;
            }
        }
        Ok(())
    }
}

/// The value of `key=` in an event line.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')).filter(|v| !v.is_empty())
}
