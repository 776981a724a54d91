//! Starts the subsystems, owns shutdown and teardown. It only wires: `settings` maps the configuration onto each
//! subsystem, and the subsystems reach each other through their handles.

pub mod settings;

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

/// The router's own sockets use these ports; the NAT never maps onto them, so replies to the router's own
/// connections (DNS upstream queries, say) can never be taken for a LAN host's.
pub(crate) const ROUTER_PORTS: (u16, u16) = (61000, 65535);
pub(crate) const NAT_PORTS: (u16, u16) = (1024, 60999);
/// How often the WAN address is looked at (see `follow_wan_address`).
const WAN_POLL: Duration = Duration::from_secs(2);

/// Follows the WAN link's address: when it changes (the ISP's DHCP server hands out a new lease, a PPP link comes
/// back with another), the rules that name it are replaced in one transaction and the NAT moves its mappings and
/// forwards to the new address. While the link has no address at all nothing changes (nothing can leave anyway).
/// Polled: a rtnetlink dump every 2 s costs nothing, and the whole change is over within one poll.
async fn follow_wan_address(
    nl: Netlink,
    wan_index: u32,
    wan_name: String,
    mut rules: crate::net::firewall::Rules,
    nat: crate::datapath::NatHandle,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut told_missing = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(WAN_POLL) => {}
        }
        let Ok(now) = wan_addresses(&nl, wan_index).await else { continue };
        if now.contains(&rules.wan_ip) {
            told_missing = false;
            continue;
        }
        let Some(&new) = now.first() else {
            if !told_missing {
                warn!(wan = %wan_name, address = %rules.wan_ip, "the WAN interface lost its address; waiting for one");
                told_missing = true;
            }
            continue;
        };
        let old = rules.wan_ip;
        let reload = crate::net::firewall::Rules { wan_ip: new, ..rules.clone() };
        let reloaded = match tokio::task::spawn_blocking(move || crate::net::firewall::reload(&reload)).await {
            Ok(r) => r,
            Err(e) => Err(e.into()),
        };
        if let Err(e) = reloaded {
            // The NAT stays on the old address with the rules, and the next poll tries again.
            warn!("cannot move the firewall rules to the new WAN address (will retry): {e:#}");
            continue;
        }
        rules.wan_ip = new;
        // Takes the NAT's lock for a moment, between two batches of a queue.
        nat.set_wan_ip(new);
        info!(wan = %wan_name, %old, %new, "the WAN address changed: the NAT and the firewall use the new one");
        told_missing = false;
    }
}

/// The WAN link's IPv4 addresses (usually one, or none yet).
async fn wan_addresses(nl: &Netlink, index: u32) -> Result<Vec<std::net::Ipv4Addr>> {
    Ok(nl.addrs().await?.into_iter().filter(|a| a.index == index).map(|a| a.net.addr()).collect())
}

/// Sets up the userspace NAT (sysctls, firewall rules) and starts its packet loop on a thread of its own.
/// `Ok(None)` without a WAN, or while the WAN link has no address.
async fn start_nat(
    nl: &Netlink,
    lan: &mut LanSetup,
    config: &Config,
    tasks: &mut JoinSet<Result<()>>,
    shutdown: CancellationToken,
) -> Result<Option<crate::datapath::NatHandle>> {
    let Some(wan) = lan.plan.wan.clone() else { return Ok(None) };
    let Some(&wan_ip) = wan_addresses(nl, wan.index).await?.first() else { return Ok(None) };
    let lan_if = lan.plan.lan_interface().to_owned();
    // Hairpinned packets come back into the LAN with the WAN address as their source.
    lan.set_sysctl(&format!("net/ipv4/conf/{lan_if}/accept_local"), "1")?;
    lan.set_sysctl("net/ipv4/ip_local_port_range", &format!("{} {}", ROUTER_PORTS.0, ROUTER_PORTS.1))?;
    // With br_netfilter loaded, bridged frames also cross iptables, and a destination rewritten before routing
    // is sent back out as a bridged frame, which the bridge never returns through its ingress port: hairpinning
    // to a host on the same port breaks. Frames between LAN ports need no filtering here.
    if std::path::Path::new("/proc/sys/net/bridge/bridge-nf-call-iptables").exists() {
        lan.set_sysctl("net/bridge/bridge-nf-call-iptables", "0")?;
    }
    let rules = crate::net::firewall::Rules {
        lan_if,
        wan_if: wan.name.clone(),
        lan_subnet: lan.plan.subnet,
        wan_ip,
        router_lan_ip: lan.plan.router,
        queue_first: 0,
        queue_count: config.nat_queue_count(),
        router_ports: ROUTER_PORTS,
        forwards: config.port_forwards.clone(),
    };
    // A forward onto one of the router's ports keeps the router's own sockets off it.
    let reserved: Vec<String> = rules.forwards_on_router_ports().map(|f| f.external_port.to_string()).collect();
    if !reserved.is_empty() {
        lan.set_sysctl("net/ipv4/ip_local_reserved_ports", &reserved.join(","))?;
    }
    // A power of two: the rules pick a flow's queue from bits of its port.
    let queues = rules.queues();
    lan.install_firewall(&rules)?;
    let follow_rules = rules.clone();
    let nat = crate::nat::Nat::new(settings::nat(config, &lan.plan, wan_ip), rand::random());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let datapath = crate::datapath::Datapath {
        first_queue: 0,
        queues,
        wan_index: wan.index,
        ring_capacity: crate::datapath::RING_CAPACITY,
        tap_bytes: settings::capture_tap(config).0,
        tap_snap: settings::capture_tap(config).1,
    };
    let (handle, loops) = datapath.open(nat, stop.clone())?;
    std::thread::Builder::new().name("nat-q0".into()).spawn(move || {
        let _ = done_tx.send(loops.run());
    })?;
    info!(wan = %wan.name, address = %wan_ip, forwards = config.port_forwards.len(), queues, "NAT on");
    tasks.spawn(follow_wan_address(
        nl.clone(),
        wan.index,
        wan.name.clone(),
        follow_rules,
        handle.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            done = done_rx => match done {
                Ok(r) => r.map_err(|e| anyhow::anyhow!("NAT packet path failed: {e}")),
                Err(_) => Err(anyhow::anyhow!("the NAT thread panicked")),
            },
        }
    });
    Ok(Some(handle))
}

pub async fn run(config: Config) -> Result<()> {
    // Caught from the start, so a signal during set-up still leads to an orderly teardown.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;

    let state = StateDir::open(&config.state_dir)?;
    // The web UI's admin password: made on the first start and shown once (and kept owner-only in the state dir).
    let (admin_hash, new_password) = crate::web::admin::load_or_create(state.path())?;
    if let Some(p) = new_password {
        let file = state.path().join(crate::web::admin::PASSWORD_FILE);
        eprintln!(
            "The web UI's admin password is: {p}   (shown once; also in {}, readable by root only)",
            file.display()
        );
        info!("generated the web UI's admin password (in {})", file.display());
    }
    let nl = Netlink::connect()?;
    setup::recover(&nl, state.path()).await?;
    let plan = plan::plan(&nl.snapshot().await?, &settings::lan(&config))?;
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
    let mut lan = LanSetup::apply(&nl, plan, state.path()).await?;
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let shutdown = CancellationToken::new();
    let nat = match start_nat(&nl, &mut lan, &config, &mut tasks, shutdown.clone()).await {
        Ok(n) => n,
        Err(e) => {
            lan.teardown(&nl).await?;
            return Err(e);
        }
    };
    // Forwarding only once the NAT's rules are in place. A WAN without an address yet (its DHCP client still at
    // work when we start, say) gets the NAT when one comes (the loop below); until then nothing is forwarded, so
    // no LAN address can leave untranslated.
    let mut nat_pending = lan.plan.wan.is_some() && nat.is_none();
    if nat_pending {
        warn!("the WAN interface has no IPv4 address yet: no NAT and no forwarding until it has one");
    }
    if !nat_pending && let Err(e) = lan.enable_forwarding() {
        lan.teardown(&nl).await?;
        return Err(e);
    }
    info!(lan = %lan.plan.lan_interface(), address = %lan.plan.router_net(), "LAN ready");
    let nat_cell = std::sync::Arc::new(std::sync::OnceLock::new());
    if let Some(tx) = nat {
        let _ = nat_cell.set(tx);
    }

    // Subsystems (DHCP, DNS, web; NAT above) run as tasks, each stopping when `shutdown` is cancelled.
    let subsystems =
        (|| Ok::<_, ConfigError>((settings::dhcp(&config, &lan.plan)?, settings::dns(&config, &lan.plan))))();
    let (mut dhcp_settings, mut dns_settings) = match subsystems {
        Ok(s) => s,
        Err(e) => {
            lan.teardown(&nl).await?;
            return Err(e.into());
        }
    };
    // Capture's feed exists before DHCP and DNS (they write to it), its thread after (it reads their hosts table).
    let capture_feed = settings::capture_on(&config).then(crate::capture::shell::feed);
    if let Some((feed, _)) = &capture_feed {
        dhcp_settings.capture = feed.clone();
        dns_settings.capture = feed.clone();
    }
    let (dhcp, dhcp_task) = crate::dhcp::shell::start(dhcp_settings, shutdown.clone());
    let (dns, dns_task) = crate::dns::shell::start(dns_settings, dhcp.hosts.clone(), shutdown.clone());
    let capture = match capture_feed {
        Some((_, rx)) => {
            let (handle, task) = crate::capture::shell::start(
                settings::capture(&config),
                dhcp.hosts.clone(),
                nat_cell.clone(),
                rx,
                shutdown.clone(),
            );
            tasks.spawn(task);
            handle
        }
        None => {
            info!("packet capture is off ([capture] ring_mb = 0)");
            crate::capture::CaptureHandle::disabled()
        }
    };
    let traffic = if config.traffic.enabled {
        let (handle, task) = crate::traffic::shell::start(
            settings::traffic(&config),
            dhcp.hosts.clone(),
            nat_cell.clone(),
            shutdown.clone(),
        );
        tasks.spawn(task);
        handle
    } else {
        info!("traffic accounting is off ([traffic] enabled = false)");
        crate::traffic::shell::TrafficHandle::disabled()
    };
    let ports = match crate::ports::shell::start(
        settings::ports(&config, &lan.plan),
        dhcp.hosts.clone(),
        nat_cell.clone(),
        dns.clone(),
        shutdown.clone(),
    ) {
        Ok((handle, task)) => {
            tasks.spawn(task);
            handle
        }
        Err(e) => {
            lan.teardown(&nl).await?;
            return Err(e);
        }
    };
    let watched = crate::service::Watched {
        nat: nat_cell.clone(),
        dhcp: dhcp.clone(),
        lan: format!("LAN {} {}", lan.plan.lan_interface(), lan.plan.router_net()),
    };
    let handles =
        crate::web::Handles { hosts: dhcp.hosts.clone(), dhcp, dns, nat: nat_cell.clone(), traffic, capture, ports };
    tasks.spawn(dhcp_task);
    tasks.spawn(dns_task);
    tasks.spawn(crate::web::serve(settings::web(&config, &lan.plan), admin_hash, handles, shutdown.clone()));
    // Everything is up (the NAT too, unless the WAN has no address yet): READY, then the watchdog's checks.
    tasks.spawn(crate::service::run(watched, shutdown.clone()));

    // A subsystem that fails ends the program (after teardown) with its error, so a supervisor restarts it.
    let mut failure = None;
    let reason = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            Some(done) = tasks.join_next() => break match done {
                Ok(Ok(())) => "a subsystem stopped",
                Ok(Err(e)) => { failure = Some(e); "a subsystem failed" }
                Err(e) => { failure = Some(anyhow::anyhow!("a subsystem panicked: {e}")); "a subsystem panicked" }
            },
            _ = tokio::time::sleep(WAN_POLL), if nat_pending => {
                let started = start_nat(&nl, &mut lan, &config, &mut tasks, shutdown.clone()).await;
                // Forwarding goes on only after the NAT's rules, so never while there is still no address.
                let on = match started {
                    Ok(Some(tx)) => lan.enable_forwarding().map(|()| Some(tx)),
                    other => other,
                };
                match on {
                    Ok(Some(tx)) => {
                        let _ = nat_cell.set(tx);
                        nat_pending = false;
                        info!("the WAN interface has an address now: NAT and forwarding on");
                    }
                    Ok(None) => {}
                    Err(e) => { failure = Some(e); break "the NAT could not start" }
                }
            }
        }
    };
    info!("{reason}: shutting down");
    shutdown.cancel();
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
