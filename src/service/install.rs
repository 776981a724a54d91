//! `gatekeeper install` / `uninstall`: the binary to a fixed place, a systemd unit, the config and state
//! directories. Both are idempotent (a step already done says so and changes nothing) and say what they did.
//! `--root DIR` does it below DIR (a package build, a test); systemctl is asked only for the real root while
//! systemd runs.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub const BINARY: &str = "usr/local/sbin/gatekeeper";
pub const UNIT: &str = "etc/systemd/system/gatekeeper.service";
pub const CONFIG_DIR: &str = "etc/gatekeeper";
pub const STATE_DIR: &str = "var/lib/gatekeeper";

/// The unit. Type=notify with a watchdog (see `service`); the capabilities the gateway uses (interfaces, routes
/// and firewall rules; raw and privileged ports for DHCP and DNS; reading other processes' sockets for the ports
/// view) and the sandboxing that still lets it work: the system read-only but for its state, `/run` (iptables'
/// lock) and `/proc/sys/net` (forwarding and the NAT's sysctls). Kernel modules stay loadable: iptables loads the
/// NFQUEUE target on first use.
pub const UNIT_TEXT: &str = "\
[Unit]
Description=Gatekeeper home internet gateway (LAN, DHCP, DNS, NAT, web UI)
Wants=network-pre.target
After=network-pre.target systemd-networkd.service NetworkManager.service
Before=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/local/sbin/gatekeeper run --config /etc/gatekeeper/gatekeeper.toml --state-dir /var/lib/gatekeeper
Restart=always
RestartSec=2
WatchdogSec=30
TimeoutStartSec=90
TimeoutStopSec=20
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_NET_BIND_SERVICE CAP_SYS_PTRACE CAP_DAC_READ_SEARCH
NoNewPrivileges=yes
ProtectSystem=full
ProtectHome=yes
PrivateTmp=yes
ProtectClock=yes
ProtectHostname=yes
ProtectControlGroups=yes
LockPersonality=yes
ProtectKernelLogs=yes
PrivateDevices=yes
RestrictNamespaces=yes
KeyringMode=private
UMask=0077
MemoryDenyWriteExecute=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_PACKET
SystemCallArchitectures=native
StateDirectory=gatekeeper
StateDirectoryMode=0700
ConfigurationDirectory=gatekeeper

[Install]
WantedBy=multi-user.target
";

/// The config file written at install when there is none: every key commented out, at its default.
pub const CONFIG_EXAMPLE: &str = "\
# Gatekeeper's configuration. Every key is optional; the defaults are shown, commented out.
# lan = [\"eth1\"]                 # default: every interface without an address or route
# wan = \"eth0\"                   # default: the default route's interface
# subnet = \"192.168.8.0/24\"      # default: a free private /24
# [dns]
# upstreams = [\"9.9.9.9\"]        # default: /etc/resolv.conf's
# [web]
# public_read = false
# metrics_token = \"a-long-random-secret\"
# [ports]
# natpmp = true
# pcp = true
# upnp = true
# [[forward]]
# port = 25565
# to = \"192.168.8.5:25565\"
";

fn under(root: &Path, rel: &str) -> PathBuf {
    root.join(rel)
}

/// Writes `data` to `path` unless it holds it already; true when it wrote.
fn put(path: &Path, data: &[u8], mode: u32) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("gatekeeper-new");
    std::fs::write(&tmp, data).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    Ok(true)
}

fn dir(path: &Path, mode: u32) -> Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    if path.is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(path).with_context(|| format!("cannot create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(true)
}

/// systemd is running on this machine (not in a container without it, not a package build).
fn systemd_runs(root: &Path) -> bool {
    root == Path::new("/") && Path::new("/run/systemd/system").is_dir()
}

fn systemctl(args: &[&str]) -> Result<()> {
    let st = std::process::Command::new("systemctl").args(args).status().context("cannot run systemctl")?;
    anyhow::ensure!(st.success(), "systemctl {} failed ({st})", args.join(" "));
    Ok(())
}

/// Installs below `root`; returns what it did, one line per step.
pub fn install(root: &Path) -> Result<Vec<String>> {
    let mut said = Vec::new();
    let step = |changed: bool, what: String| format!("{} {what}", if changed { "installed" } else { "unchanged" });
    let exe = std::env::current_exe().context("cannot find this program's own file")?;
    let bin = std::fs::read(&exe).with_context(|| format!("cannot read {}", exe.display()))?;
    let target = under(root, BINARY);
    said.push(step(put(&target, &bin, 0o755)?, format!("the program: {}", target.display())));
    let unit = under(root, UNIT);
    let unit_changed = put(&unit, UNIT_TEXT.as_bytes(), 0o644)?;
    said.push(step(unit_changed, format!("the systemd unit: {}", unit.display())));
    let conf_dir = under(root, CONFIG_DIR);
    dir(&conf_dir, 0o755)?;
    let conf = conf_dir.join("gatekeeper.toml");
    if conf.exists() {
        said.push(format!("kept the config file: {}", conf.display()));
    } else {
        put(&conf, CONFIG_EXAMPLE.as_bytes(), 0o644)?;
        said.push(format!("installed an example config file: {}", conf.display()));
    }
    let state = under(root, STATE_DIR);
    said.push(step(dir(&state, 0o700)?, format!("the state directory: {}", state.display())));
    if systemd_runs(root) {
        systemctl(&["daemon-reload"])?;
        systemctl(&["enable", "gatekeeper.service"])?;
        said.push("enabled gatekeeper.service (start it: systemctl start gatekeeper)".into());
    } else {
        said.push("systemd is not running here (or --root was given): the unit is in place, not enabled".into());
    }
    Ok(said)
}

/// Removes what `install` put below `root`. The config and the state (leases, names, forwards, the admin's
/// password) stay unless `purge`.
pub fn uninstall(root: &Path, purge: bool) -> Result<Vec<String>> {
    let mut said = Vec::new();
    if systemd_runs(root) && under(root, UNIT).exists() {
        systemctl(&["disable", "--now", "gatekeeper.service"])?;
        said.push("stopped and disabled gatekeeper.service".into());
    }
    for rel in [UNIT, BINARY] {
        let p = under(root, rel);
        match std::fs::remove_file(&p) {
            Ok(()) => said.push(format!("removed {}", p.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => said.push(format!("already gone: {}", p.display())),
            Err(e) => return Err(e).with_context(|| format!("cannot remove {}", p.display())),
        }
    }
    if systemd_runs(root) {
        systemctl(&["daemon-reload"])?;
    }
    for rel in [CONFIG_DIR, STATE_DIR] {
        let p = under(root, rel);
        if !p.exists() {
            continue;
        }
        if purge {
            std::fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            said.push(format!("removed {}", p.display()));
        } else {
            said.push(format!("kept {} (--purge removes it)", p.display()));
        }
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_and_uninstall_are_idempotent_and_say_what_they_did() {
        let root = std::env::temp_dir().join(format!("gk-install-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let first = install(&root).unwrap();
        assert!(first.iter().filter(|l| l.starts_with("installed")).count() >= 3, "{first:?}");
        assert_eq!(std::fs::read_to_string(root.join(UNIT)).unwrap(), UNIT_TEXT);
        let again = install(&root).unwrap();
        assert!(again.iter().all(|l| !l.starts_with("installed")), "{again:?}");
        assert!(again.iter().any(|l| l.starts_with("kept the config file")), "{again:?}");
        let gone = uninstall(&root, false).unwrap();
        assert!(gone.iter().any(|l| l.starts_with("removed") && l.ends_with("gatekeeper.service")), "{gone:?}");
        assert!(root.join(STATE_DIR).is_dir() && !root.join(BINARY).exists());
        let again = uninstall(&root, true).unwrap();
        assert!(again.iter().any(|l| l.starts_with("already gone")), "{again:?}");
        assert!(!root.join(STATE_DIR).exists() && !root.join(CONFIG_DIR).exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
