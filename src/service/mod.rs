//! Telling the service manager how we are (systemd's sd_notify; nothing happens without `NOTIFY_SOCKET`):
//! `READY=1` once the LAN, DHCP, DNS and the NAT are up, `STATUS=` a one-line summary, and `WATCHDOG=1` only while
//! a check finds the packet path and the event loop really alive, never from a timer that pings regardless:
//! - every NAT queue loop has turned since the last check (each turns at least every 200 ms, its receive
//!   timeout, busy or idle), and
//! - the DHCP server's task answered a view request within a second (the event loop and the DHCP task run).
//!
//! A stuck check sends nothing, so systemd restarts us after `WatchdogSec`. `GATEKEEPER_WATCHDOG_TEST=1` makes
//! SIGUSR2 stop the packet loops on purpose (to see that happen); it is off otherwise.

pub mod install;

use crate::datapath::NatHandle;
use crate::dhcp::shell::DhcpHandle;
use sd_notify::NotifyState;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What the watchdog looks at.
pub struct Watched {
    /// Empty while the WAN has no address (no NAT yet); once there, its loops must turn.
    pub nat: Arc<OnceLock<NatHandle>>,
    pub dhcp: DhcpHandle,
    /// `LAN gk-lan 10.0.0.1/24`: the fixed part of the status line.
    pub lan: String,
}

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        warn!("cannot notify the service manager: {e}");
    }
}

/// One check: `Ok(status line)` when all is alive, else why not.
async fn check(w: &Watched, last: &mut Vec<u64>) -> Result<String, String> {
    let nat = w.nat.get();
    if let Some(nat) = nat {
        let beats = nat.beats();
        let stuck: Vec<usize> =
            beats.iter().zip(last.iter()).enumerate().filter(|(_, (b, l))| b <= l).map(|(i, _)| i).collect();
        let first = last.is_empty();
        *last = beats;
        if !first && !stuck.is_empty() {
            return Err(format!("NAT queue loop(s) {stuck:?} have not turned since the last check"));
        }
    }
    let dhcp = tokio::time::timeout(Duration::from_secs(1), w.dhcp.view())
        .await
        .map_err(|_| "the DHCP task did not answer within 1 s".to_owned())?;
    let now = crate::types::Time::now().unix_secs();
    let leases = dhcp.leases.iter().filter(|l| l.expires > now).count();
    let wan = nat.map_or_else(|| "WAN none".to_owned(), |n| format!("WAN {}", n.wan_ip()));
    let conns = nat.map_or(0, |n| n.stats().connections);
    Ok(format!("{}, {wan}, {leases} leases, {conns} NAT connections", w.lan))
}

/// Says READY, then checks every half watchdog period (or every 10 s for the status line alone) until `shutdown`,
/// and says STOPPING at the end.
pub async fn run(w: Watched, shutdown: CancellationToken) -> anyhow::Result<()> {
    let period = sd_notify::watchdog_enabled();
    let every = period.map_or(Duration::from_secs(10), |p| (p / 2).max(Duration::from_millis(100)));
    let mut last = Vec::new();
    let first = check(&w, &mut last).await.unwrap_or_else(|why| why);
    notify(&[NotifyState::Ready, NotifyState::Status(&first)]);
    if let Some(p) = period {
        info!(watchdog_ms = p.as_millis() as u64, "told the service manager we are ready; watchdog on");
    }
    if std::env::var_os("GATEKEEPER_WATCHDOG_TEST").is_some() {
        let nat = w.nat.clone();
        let mut usr2 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
        tokio::spawn(async move {
            while usr2.recv().await.is_some() {
                if let Some(n) = nat.get() {
                    warn!("SIGUSR2 with GATEKEEPER_WATCHDOG_TEST: stopping the packet loops on purpose");
                    n.stall(true);
                }
            }
        });
    }
    let mut told = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
        match check(&w, &mut last).await {
            Ok(status) => {
                told = false;
                if period.is_some() {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    notify(&[NotifyState::Status(&status)]);
                }
            }
            Err(why) => {
                if !told {
                    warn!("watchdog: {why}; not telling the service manager we are alive");
                    told = true;
                }
                notify(&[NotifyState::Status(&format!("unhealthy: {why}"))]);
            }
        }
    }
    notify(&[NotifyState::Stopping]);
    Ok(())
}
