//! `gatekeeper lab`: a virtual home network with simulated devices and the real gateway, for trying it safely.

use super::{Lab, LabOptions, GW_WAN_ADDR};
use crate::net::{netlink::Netlink, subnet};
use anyhow::{Context, Result};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::time::Duration;

#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// Simulated LAN devices, each in its own namespace.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(0..=50))]
    pub clients: u16,
    /// Do not attach this machine to the lab LAN (by default one veth gets an address in it and a route to it only).
    #[arg(long)]
    pub no_host_link: bool,
    /// The web UI port the gateway listens on.
    #[arg(long, default_value_t = crate::config::DEFAULT_WEB_PORT)]
    pub web_port: u16,
}

/// A subnet free both here (the host link puts a route to it on this machine) and in the lab.
async fn free_subnet() -> Result<Ipv4Net> {
    let snap = Netlink::connect()?.snapshot().await?;
    let mut used: Vec<Ipv4Net> = snap.addrs.iter().map(|a| a.net.trunc()).collect();
    used.extend(snap.routes.iter().map(|r| r.dst).filter(|d| d.prefix_len() > 0));
    used.push("203.0.113.0/24".parse()?);
    Ok(subnet::choose(None, 24, &used)?)
}

pub fn run(args: LabArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let subnet = rt.block_on(free_subnet())?;
    let router = subnet::router_address(&subnet);
    let host_addr = Ipv4Addr::from(u32::from(subnet.broadcast()) - 1);

    let lab = Lab::new(LabOptions { clients: args.clients as usize, host_link: !args.no_host_link })?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let state = lab.dir().join("state");
    let mut gateway = lab.start_gateway(
        &exe,
        &["--subnet", &subnet.to_string(), "--state-dir", &state.to_string_lossy(), "--web-port", &args.web_port.to_string()],
        "gateway.log",
    )?;
    gateway.wait_for_log("LAN ready", Duration::from_secs(20))?;

    let prefix = subnet.prefix_len();
    for i in 1..=lab.clients() {
        // Until the DHCP server lands, the simulated devices get fixed addresses from the top of the pool.
        let addr = Ipv4Addr::from(u32::from(router) + 100 + i as u32);
        lab.run(&lab.client(i), &["ip", "addr", "add", &format!("{addr}/{prefix}"), "dev", "eth0"])?;
        lab.run(&lab.client(i), &["ip", "route", "add", "default", "via", &router.to_string()])?;
    }
    if let Some(host) = lab.host_link() {
        // One address, and with it a route to the lab subnet only: never a default route.
        super::ip(&["addr", "add", &format!("{host_addr}/{prefix}"), "dev", host])?;
    }

    println!("Gatekeeper lab {} is up.", lab.id);
    println!("  internet namespace : {} (203.0.113.1; the gateway's WAN is {GW_WAN_ADDR})", lab.wan());
    println!("  gateway namespace  : {} (LAN {subnet}, router {router})", lab.gw());
    for i in 1..=lab.clients() {
        println!("  device             : {}  (sudo ip netns exec {} bash)", lab.client(i), lab.client(i));
    }
    match lab.host_link() {
        Some(h) => println!("  this machine       : {host_addr} on {h}, route to {subnet} only"),
        None => println!("  this machine       : not attached (--no-host-link)"),
    }
    println!("  gateway log        : {}", lab.dir().join("gateway.log").display());
    println!("Web UI: http://{router}:{}/", args.web_port);
    println!("Press Ctrl-C to stop; everything is removed.");

    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        anyhow::Ok(())
    })?;
    println!("Stopping the gateway and removing the lab...");
    let status = gateway.terminate(Duration::from_secs(10))?;
    if !status.success() {
        eprintln!("the gateway exited with {status}; its log:\n{}", gateway.log());
    }
    drop(gateway);
    drop(lab);
    Ok(())
}
