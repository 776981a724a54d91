//! The state directory: one running instance per directory (an flock), and atomic file replacement so that a
//! `kill -9` at any moment leaves either the old or the new content, never a torn file. [`log`] is the durable,
//! group-committed record log that subsystems keep in it.

pub mod bytes;
pub mod log;

pub use log::{
    COMPACT_MIN_BYTES, COMPACT_RATIO, Codec, Committer, CommitterStats, Durable, Frames, GATHER, Loaded, Log, LogStats,
    MAX_BATCH_RECORDS, MAX_PAYLOAD, push_frame, read_records,
};

use anyhow::{Context, Result, bail};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Creates the directory if needed and takes its lock; fails if another instance holds it.
    pub fn open(path: &Path) -> Result<Self> {
        fs::create_dir_all(path).with_context(|| format!("cannot create the state directory {}", path.display()))?;
        let lock_path = path.join("lock");
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let mut owner = String::new();
            let _ = lock.read_to_string(&mut owner);
            bail!(
                "another gatekeeper (pid {}) is using the state directory {}; stop it first, or give this one its own \
                 --state-dir",
                owner.trim(),
                path.display()
            );
        }
        lock.set_len(0)?;
        lock.rewind()?;
        write!(lock, "{}", std::process::id())?;
        Ok(StateDir { path: path.to_owned(), _lock: lock })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

/// Replaces `path` with `data` atomically and durably: temp file, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// [`write_atomic`], the file readable by its owner only (secrets: the admin's password and sessions).
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_mode(path, data, 0o600)
}

fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().context("path has no directory")?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    // The umask may have taken bits away; never more than asked.
    f.set_permissions(fs::Permissions::from_mode(mode))?;
    f.write_all(data)?;
    f.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_released_on_drop() {
        let dir = std::env::temp_dir().join(format!("gk-state-test-{}", std::process::id()));
        let a = StateDir::open(&dir).unwrap();
        let e = StateDir::open(&dir).err().expect("second open must fail");
        assert!(e.to_string().contains(&std::process::id().to_string()), "{e}");
        drop(a);
        let b = StateDir::open(&dir).unwrap();
        write_atomic(&b.file("x.json"), b"{}").unwrap();
        assert_eq!(fs::read(b.file("x.json")).unwrap(), b"{}");
        drop(b);
        fs::remove_dir_all(&dir).unwrap();
    }
}
