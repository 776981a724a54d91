//! `gatekeeper lab`: a virtual home network with simulated devices and the real gateway, for trying it safely.

use super::{DhcpClient, GW_WAN_ADDR, Lab, LabOptions};

/// The devices' names, which pick their traffic (`lab::traffic::behaviour`): the default three already browse,
/// download, and chat like an IoT device (the camera).
const DEVICE_NAMES: [&str; 8] = ["laptop", "phone", "camera", "tv", "printer", "tablet", "console", "speaker"];
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
    /// Leave the devices idle (by default they browse, stream, look names up, ping and chat, see `lab::traffic`).
    #[arg(long)]
    pub quiet: bool,
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
    // The host link's address is a static lease, so the DHCP server never hands it to a device.
    // The pretend internet's DNS: knotd serving the `test.` zone; the gateway forwards to it.
    let _knot = lab.start_knot(super::WAN_ADDR, &super::test_zone())?;
    let mut config = format!("[dns]\nupstreams = [\"{}:53\"]\n", super::WAN_ADDR);
    if let Some(host) = lab.host_link() {
        let mac = super::link_mac(None, host)?;
        config += &format!("[[dhcp.static]]\nmac = \"{mac}\"\nip = \"{host_addr}\"\nname = \"host\"\n");
    }
    let config_path = lab.dir().join("gatekeeper.toml");
    std::fs::write(&config_path, config)?;
    let mut gateway = lab.start_gateway(
        &exe,
        &[
            "--subnet",
            &subnet.to_string(),
            "--state-dir",
            &state.to_string_lossy(),
            "--web-port",
            &args.web_port.to_string(),
            "--config",
            &config_path.to_string_lossy(),
        ],
        "gateway.log",
    )?;
    gateway.wait_for_log("DHCP server ready", Duration::from_secs(20))?;

    // The simulated devices ask for addresses like real ones, each with a host name.
    let mut devices = Vec::new();
    for i in 1..=lab.clients() {
        let name = DEVICE_NAMES.get(i - 1).map_or_else(|| format!("device{i}"), |n| n.to_string());
        devices.push((name.clone(), lab.dhcp_client(i, DhcpClient::Udhcpc, Some(&name))?));
    }
    // `ip netns exec` shows each device /etc/netns/<ns>/resolv.conf as its /etc/resolv.conf: name the gateway.
    for i in 1..=lab.clients() {
        lab.set_resolver(&lab.client(i), router)?;
    }
    let mut addresses = Vec::new();
    for (name, d) in &mut devices {
        let bound = d.wait_event(0, &["bound"], Duration::from_secs(30))?;
        addresses.push(format!("{} ({name})", super::field(&bound, "ip").unwrap_or("?")));
    }
    let prefix = subnet.prefix_len();
    if let Some(host) = lab.host_link() {
        // One address, and with it a route to the lab subnet only: never a default route.
        super::ip(&["addr", "add", &format!("{host_addr}/{prefix}"), "dev", host])?;
    }
    // Traffic only once every device is bound: a newcomer's first look at the UI already has numbers moving.
    let generator = if args.quiet {
        None
    } else {
        let named: Vec<(String, usize)> = devices.iter().enumerate().map(|(i, (n, _))| (n.clone(), i + 1)).collect();
        Some(super::traffic::start(&lab, router, &named)?)
    };

    println!("Gatekeeper lab {} is up.", lab.id);
    println!("  internet namespace : {} (203.0.113.1, DNS for test.; the gateway's WAN is {GW_WAN_ADDR})", lab.wan());
    println!("  gateway namespace  : {} (LAN {subnet}, router {router})", lab.gw());
    for (i, addr) in addresses.iter().enumerate() {
        let ns = lab.client(i + 1);
        println!("  device             : {addr:<24} sudo ip netns exec {ns} bash");
    }
    match lab.host_link() {
        Some(h) => println!("  this machine       : {host_addr} on {h}, route to {subnet} only"),
        None => println!("  this machine       : not attached (--no-host-link)"),
    }
    println!("  gateway log        : {}", lab.dir().join("gateway.log").display());
    match &generator {
        Some(_) if lab.clients() > 0 => println!(
            "  traffic            : the devices browse, download, look names up, ping and chat with {} (--quiet: idle)",
            super::WAN_ADDR
        ),
        _ => println!("  traffic            : none (the devices are idle)"),
    }
    println!("Web UI: http://{router}:{}/", args.web_port);
    match std::fs::read_to_string(state.join(crate::web::admin::PASSWORD_FILE)) {
        Ok(p) => println!("  admin password     : {}", p.trim()),
        Err(_) => println!("  admin password     : not kept in clear (set with `gatekeeper passwd`)"),
    }
    println!("Press Ctrl-C to stop; everything is removed.");

    rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        anyhow::Ok(())
    })?;
    if let Some(g) = generator {
        println!("Traffic generated: {}", g.stop());
    }
    println!("Stopping the gateway and removing the lab...");
    let status = gateway.terminate(Duration::from_secs(10))?;
    if !status.success() {
        eprintln!("the gateway exited with {status}; its log:\n{}", gateway.log());
    }
    drop(devices);
    drop(gateway);
    drop(lab);
    Ok(())
}
