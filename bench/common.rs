//! Helpers shared by the system benchmarks (each includes this file with `mod common;`): the machine's CPU time by
//! category, waiting until the machine is idle, and the CPU time of reaped children.
// Each benchmark uses part of this.
#![allow(dead_code)]

use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// CPU time of the whole machine so far, all cores, in seconds per category (first line of /proc/stat).
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    pub user: f64,
    pub nice: f64,
    pub system: f64,
    pub idle: f64,
    pub iowait: f64,
    pub irq: f64,
    pub softirq: f64,
    pub steal: f64,
}

impl MachineCpu {
    pub fn read() -> Result<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        let line = stat.lines().next().context("empty /proc/stat")?;
        let f: Vec<f64> = line.split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0.0)).collect();
        anyhow::ensure!(f.len() >= 8, "unexpected /proc/stat: {line}");
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        Ok(MachineCpu {
            user: f[0] / hz,
            nice: f[1] / hz,
            system: f[2] / hz,
            idle: f[3] / hz,
            iowait: f[4] / hz,
            irq: f[5] / hz,
            softirq: f[6] / hz,
            steal: f[7] / hz,
        })
    }

    /// Time the cores worked: user (with nice), system, hard and soft interrupts. Not steal (another guest's).
    pub fn busy(&self) -> f64 {
        self.user + self.nice + self.system + self.irq + self.softirq
    }

    /// Every core's time, busy or not (cores x seconds).
    pub fn total(&self) -> f64 {
        self.busy() + self.idle + self.iowait + self.steal
    }

    /// The time spent since `before`, per category.
    pub fn since(&self, before: &MachineCpu) -> MachineCpu {
        MachineCpu {
            user: self.user - before.user,
            nice: self.nice - before.nice,
            system: self.system - before.system,
            idle: self.idle - before.idle,
            iowait: self.iowait - before.iowait,
            irq: self.irq - before.irq,
            softirq: self.softirq - before.softirq,
            steal: self.steal - before.steal,
        }
    }
}

/// Waits (up to 2 minutes) until the machine has been idle for a second: on a shared machine, someone else's build
/// would take the cores the measured programs need.
pub fn wait_quiet() -> Result<()> {
    let start = Instant::now();
    loop {
        let a = MachineCpu::read()?;
        std::thread::sleep(Duration::from_secs(1));
        let busy = MachineCpu::read()?.since(&a).busy(); // core-seconds in one second
        if busy < 0.25 {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(120) {
            eprintln!("  warning: the machine is busy with other work ({busy:.2} cores): measuring anyway");
            return Ok(());
        }
        if start.elapsed() < Duration::from_secs(2) {
            eprintln!(
                "  the machine is busy with other work ({busy:.2} cores): waiting up to 2 minutes for it to settle"
            );
        }
    }
}

/// CPU seconds so far and parent of every process, by (pid, start time).
pub fn processes() -> std::collections::HashMap<(u32, u64), (u32, f64)> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let mut all = std::collections::HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return all };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        // After the command name: state, ppid, ... utime (12), stime (13), ... starttime (20), counted from 0.
        let f: Vec<u64> = stat[close + 2..].split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
        if f.len() > 19 {
            all.insert((pid, f[19]), (f[1] as u32, (f[11] + f[12]) as f64 / hz));
        }
    }
    all
}

/// Core-seconds used between two `processes` snapshots by the processes alive at both, except `exclude` and this
/// one: other work that disturbed a run. A process that started or ended in between is not counted (dnsperf, say).
/// `MachineCpu` cannot tell this on a VM whose /proc/stat samples ticks: it reported less busy time than bench/dns's
/// server and dnsperf used alone.
pub fn others_between(
    before: &std::collections::HashMap<(u32, u64), (u32, f64)>,
    after: &std::collections::HashMap<(u32, u64), (u32, f64)>,
    exclude: &[u32],
) -> f64 {
    let me = std::process::id();
    let counted = after.iter().filter(|((pid, _), _)| *pid != me && !exclude.contains(pid));
    counted.filter_map(|(key, (_, secs))| Some(secs - before.get(key)?.1)).sum()
}

/// User + system CPU of this process's reaped children, in seconds.
pub fn children_cpu() -> f64 {
    // SAFETY: getrusage writes into the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// The command line as (option, value) pairs; `None` when `--help`/`-h` asked for `usage` (printed). An option
/// without a value is an error that names it and shows `usage`.
pub fn option_pairs(usage: &str) -> Result<Option<Vec<(String, String)>>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{usage}");
        return Ok(None);
    }
    let mut pairs = Vec::new();
    for pair in args.chunks(2) {
        let v = pair.get(1).with_context(|| format!("option {} without value\n{usage}", pair[0]))?;
        pairs.push((pair[0].clone(), v.clone()));
    }
    Ok(Some(pairs))
}

/// The variant of `all` whose `name` is `s`; the error lists the names (`what`: "setup", "test", ...).
pub fn by_name<T: Copy>(s: &str, all: &[T], name: fn(T) -> &'static str, what: &str) -> Result<T> {
    all.iter().copied().find(|&t| name(t) == s).with_context(|| {
        let names: Vec<&str> = all.iter().map(|&t| name(t)).collect();
        format!("unknown {what} {s} ({})", names.join(", "))
    })
}
