//! A process started by the lab: output to a log file, stopped by pid on drop, dies with its parent thread.

use anyhow::{Context, Result, bail};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub struct Proc {
    child: Child,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Proc> {
        let out = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out.try_clone()?).stderr(out);
        // SAFETY: prctl is async-signal-safe. If the lab's owner dies, the process gets SIGTERM and shuts down cleanly.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("cannot start {cmd:?}"))?;
        Ok(Proc { child, log: log.to_owned(), status: None })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status, if it has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits until the log contains `needle`; fails early with the log if the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return Ok(());
            }
            if let Some(st) = self.try_status() {
                bail!("process exited ({st}) before logging {needle:?}; its log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!("no {needle:?} within {timeout:?}; log so far:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Waits for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("process {} still running after {timeout:?}; log:\n{}", self.pid(), self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, sig: i32) {
        if self.status.is_none() {
            // SAFETY: our own unreaped child, so the pid cannot have been reused.
            unsafe { libc::kill(self.child.id() as i32, sig) };
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_timeout(timeout)
    }

    /// SIGKILL, like a crash.
    pub fn kill9(&mut self) -> Result<ExitStatus> {
        self.signal(libc::SIGKILL);
        self.wait_timeout(Duration::from_secs(5))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() && self.terminate(Duration::from_secs(5)).is_err() {
            let _ = self.kill9();
        }
    }
}
