//! The `gatekeeper` command line.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gatekeeper::config::{self, EnvConfig, FileConfig, FlagConfig};
use gatekeeper::{app, lab, logging};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gatekeeper",
    version,
    about = "A home internet gateway in one program",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run(RunArgs),
    /// Start a virtual home network in network namespaces, with simulated devices and the gateway.
    Lab(lab::cli::LabArgs),
    /// Set the web UI's admin password: read from standard input (one line), or generated and printed if the input
    /// is empty. A running gateway uses it from its next start.
    Passwd(PasswdArgs),
    /// Install as a systemd service: the program to /usr/local/sbin, the unit, /etc/gatekeeper (an example config
    /// if there is none) and /var/lib/gatekeeper; enables the unit when systemd runs. Safe to run again.
    Install(InstallArgs),
    /// Remove what `install` put in place (the config and the state stay unless --purge).
    Uninstall(UninstallArgs),
}

#[derive(Args, Clone)]
struct InstallArgs {
    /// Install below this directory instead of / (a package build); systemctl is not asked then.
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
}

#[derive(Args, Clone)]
struct UninstallArgs {
    #[arg(long, value_name = "DIR", default_value = "/")]
    root: PathBuf,
    /// Also remove /etc/gatekeeper and /var/lib/gatekeeper (leases, names, forwards, the admin's password).
    #[arg(long)]
    purge: bool,
}

#[derive(Args, Clone)]
struct PasswdArgs {
    /// The gateway's state directory.
    #[arg(long, value_name = "DIR", default_value = config::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

fn passwd(args: PasswdArgs) -> Result<()> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        eprint!("New admin password (empty: generate one): ");
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let typed = line.trim_end_matches(['\r', '\n']);
    if typed.is_empty() {
        let p = gatekeeper::web::auth::generate_password();
        gatekeeper::web::admin::set(&args.state_dir, &p, true)?;
        println!("The web UI's admin password is now: {p}");
        println!("(also in {})", args.state_dir.join(gatekeeper::web::admin::PASSWORD_FILE).display());
    } else {
        gatekeeper::web::admin::set(&args.state_dir, typed, false)?;
        println!("The web UI's admin password is set.");
    }
    Ok(())
}

#[derive(Args, Clone, Default)]
struct RunArgs {
    /// LAN interface (repeat for several; they are bridged). Default: every interface with no IPv4 address.
    #[arg(long = "lan", value_name = "IFACE")]
    lan: Vec<String>,
    /// WAN interface. Default: the interface of the default route.
    #[arg(long, value_name = "IFACE")]
    wan: Option<String>,
    /// LAN subnet. Default: the first free private /24.
    #[arg(long, value_name = "CIDR")]
    subnet: Option<String>,
    /// Where leases, forwards and history are kept [default: /var/lib/gatekeeper].
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Configuration file [default: /etc/gatekeeper/gatekeeper.toml, if present].
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Web UI port [default: 1337].
    #[arg(long, value_name = "PORT")]
    web_port: Option<u16>,
    /// NAT packet queues, one thread each, rounded down to a power of two [default: one per CPU, at most 8].
    #[arg(long, value_name = "N")]
    nat_queues: Option<u16>,
    /// Run inside the named network namespace (/run/netns/NAME) instead of the current one.
    #[arg(long, value_name = "NAME")]
    netns: Option<String>,
}

/// Moves the process into a named network namespace. Must run before any thread exists: setns is per thread,
/// and the runtime's threads inherit it from here.
fn enter_netns(name: &str) -> Result<()> {
    if name.contains('/') || name.is_empty() {
        return Err(config::ConfigError(format!("network namespace {name:?} is not a name")).into());
    }
    let path = PathBuf::from("/run/netns").join(name);
    let file = std::fs::File::open(&path)
        .map_err(|e| config::ConfigError(format!("network namespace {name:?} not found ({}): {e}", path.display())))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("cannot enter network namespace {name}"))?;
    // Never touch the wrong namespace: check that we really are in it.
    let want = file.metadata()?.ino();
    let have = std::fs::metadata("/proc/thread-self/ns/net")?.ino();
    anyhow::ensure!(want == have, "entering network namespace {name} did not take effect");
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    if let Some(ns) = &args.netns {
        enter_netns(ns)?;
    }
    let file = FileConfig::load(args.config.as_deref())?;
    let flags = FlagConfig {
        lan: args.lan,
        wan: args.wan,
        subnet: args.subnet,
        state_dir: args.state_dir,
        web_port: args.web_port,
        nat_queues: args.nat_queues,
    };
    let config = config::resolve(file, &EnvConfig::from_process(), &flags)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(app::run(config))
}

fn print_lines(lines: Vec<String>) {
    for l in lines {
        println!("{l}");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        None => run(cli.run),
        Some(Command::Run(args)) => run(args),
        Some(Command::Lab(args)) => lab::cli::run(args),
        Some(Command::Passwd(args)) => passwd(args),
        Some(Command::Install(args)) => gatekeeper::service::install::install(&args.root).map(print_lines),
        Some(Command::Uninstall(args)) => {
            gatekeeper::service::install::uninstall(&args.root, args.purge).map(print_lines)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(app::exit_code(&e))
        }
    }
}
