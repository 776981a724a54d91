//! Starts the subsystems, owns shutdown and teardown.

use crate::config::{Config, ConfigError};
use crate::net::netlink::Netlink;
use crate::net::plan::{self, PlanError};
use crate::net::setup::{self, LanSetup};
use crate::state::StateDir;
use anyhow::Result;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Exit codes: 2 for a bad configuration, 3 when the machine offers no usable LAN, 1 for anything else.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<ConfigError>().is_some() {
        2
    } else if e.downcast_ref::<PlanError>().is_some() {
        3
    } else {
        1
    }
}

/// What every subsystem gets: where to stop, and the LAN it serves.
#[derive(Clone)]
pub struct Context {
    pub shutdown: CancellationToken,
    pub config: Config,
    pub lan: plan::Plan,
    /// Asks the DHCP server for its leases and counters (the web UI, the DNS local zone).
    pub dhcp: tokio::sync::mpsc::Sender<crate::dhcp::shell::ViewRequest>,
    /// Asks the DNS server for its per-device query logs and counters (the web UI).
    pub dns: tokio::sync::mpsc::Sender<crate::dns::shell::ViewRequest>,
}

pub async fn run(config: Config) -> Result<()> {
    // Caught from the start, so a signal during set-up still leads to an orderly teardown.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let state = StateDir::open(&config.state_dir)?;
    let nl = Netlink::connect()?;
    setup::recover(&nl, state.path()).await?;
    let plan = plan::plan(&nl.snapshot().await?, &config)?;
    let ports: Vec<&str> = plan.ports.iter().map(|p| p.name.as_str()).collect();
    info!(
        lan = %plan.lan_interface(),
        ports = %ports.join(","),
        subnet = %plan.subnet,
        router = %plan.router,
        wan = %plan.wan.as_ref().map_or("none", |w| w.name.as_str()),
        "setting up the LAN"
    );
    if plan.wan.is_none() {
        warn!("no WAN: there is no default route and no --wan; the LAN will have no internet access");
    }
    let lan = LanSetup::apply(&nl, plan, state.path()).await?;
    info!(lan = %lan.plan.lan_interface(), address = %lan.plan.router_net(), "LAN ready");

    let (dhcp, dhcp_queries) = tokio::sync::mpsc::channel(16);
    let (dns, dns_queries) = tokio::sync::mpsc::channel(16);
    let ctx = Context { shutdown: CancellationToken::new(), config, lan: lan.plan.clone(), dhcp, dns };
    // Subsystems (DHCP, DNS, NAT, web) are spawned here, each stopping when `ctx.shutdown` is cancelled.
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let (lease_events, dns_leases) = tokio::sync::broadcast::channel(1024);
    tasks.spawn(crate::dhcp::shell::serve(ctx.clone(), lease_events.clone(), dhcp_queries));
    tasks.spawn(crate::dns::shell::serve(ctx.clone(), dns_leases, dns_queries));
    tasks.spawn(crate::web::serve(ctx.clone()));

    // A subsystem that fails ends the program (after teardown) with its error, so a supervisor restarts it.
    let mut failure = None;
    let reason = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => "a subsystem stopped",
            Ok(Err(e)) => { failure = Some(e); "a subsystem failed" }
            Err(e) => { failure = Some(anyhow::anyhow!("a subsystem panicked: {e}")); "a subsystem panicked" }
        },
    };
    info!("{reason}: shutting down");
    ctx.shutdown.cancel();
    if tokio::time::timeout(Duration::from_secs(5), async { while tasks.join_next().await.is_some() {} }).await.is_err()
    {
        warn!("subsystems did not stop within 5 s; continuing with teardown");
        tasks.abort_all();
    }
    lan.teardown(&nl).await?;
    info!("network restored; bye");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
