//! A durable log: an append-only file of framed, CRC-checked records in the state directory, made durable in
//! groups, recovered after a crash, compacted from the live set. Generic over what it stores: a [`Codec`] says how a
//! record is encoded, decoded and replayed into a table (the live set), and how that table is written back as a
//! snapshot. The DHCP lease store (`dhcp::store`) is one such codec.
//!
//! # Guarantees
//! - A record is durable once the [`Log::commit`] that wrote it returned `Ok` (one positional `write` of everything
//!   appended since the last commit, then one `fdatasync`), or once the [`Durable`] future that
//!   [`Committer::submit`] returned resolved to `Ok`. Act on a record (acknowledge it to anyone) only after that.
//! - A `kill -9` or a power cut at any moment loses no committed record: an interrupted append leaves a torn tail,
//!   which every frame's length and CRC detect; [`Log::open`] drops it (saving the bytes to `<name>.torn`) and
//!   truncates the log to its last whole record. Compaction replaces the log with [`write_atomic`] (temp file,
//!   fsync, rename, directory fsync): the old or the new log, never a mix.
//! - After a failed `fdatasync` the file's content is unknown (the kernel may have dropped the dirty pages): the log
//!   is *poisoned* and refuses commits until it has been rewritten from the live set, which the [`Committer`] does
//!   by itself.
//! - Single writer: open a log once (the [`crate::state::StateDir`] lock guarantees one process per directory).
//!
//! # Files (in the state directory), for a log named `<name>` (e.g. `leases.log`)
//! - `<name>`: the log. `<name>` with its extension replaced by `tmp` (e.g. `leases.tmp`): a compaction in progress,
//!   removed at open, so two logs in one directory need different stems. `<name>.torn`: the last torn tail that open
//!   dropped, kept for inspection.
//!
//! # Format (all integers little-endian)
//! ```text
//! header  magic (8 bytes, the codec's format and version, e.g. "GKLEASE1")
//! frame*  [u32 len][u32 crc][payload: len bytes]      crc = CRC-32 (IEEE) of the 4 len bytes followed by the payload
//! ```
//! A payload is 1 to [`MAX_PAYLOAD`] bytes; its content is the codec's. A frame whose length or CRC is wrong ends the
//! log (torn tail). A frame whose CRC is right but whose payload the codec does not decode (an unknown kind from a
//! newer version, say) is skipped and counted in [`Loaded::records_skipped`].
//!
//! # Replay and compaction
//! Records apply in order to the codec's table ([`Codec::apply`]). A compaction writes the header and
//! [`Codec::snapshot`] of the table: replaying a snapshot into an empty table must give the table back. The log is
//! compacted when it is larger than a minimum ([`COMPACT_MIN_BYTES`]) and a ratio ([`COMPACT_RATIO`]) times the
//! size of a snapshot (both settable with [`Log::set_compaction_threshold`]).

use crate::state::write_atomic;
use anyhow::{Context, Result, anyhow, bail};
use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io;
use std::marker::PhantomData;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::task::{Context as TaskContext, Poll};
use std::thread::JoinHandle;
use tokio::sync::oneshot;
use tracing::{debug, warn};

/// Frames announcing a longer payload are treated as corruption; [`Log::append`] panics rather than write one.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Compaction happens when the log exceeds this size ...
pub const COMPACT_MIN_BYTES: u64 = 1 << 20;
/// ... and this many times the size of a snapshot of the live set.
pub const COMPACT_RATIO: u64 = 4;
/// The committer writes at most this many records per fdatasync (more waiting submissions go in the next one).
pub const MAX_BATCH_RECORDS: usize = 16_384;
/// How long the committer gathers more records under load before it syncs (group commit's commit delay).
pub const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

const FRAME_HEADER: usize = 8;

/// What a log stores and how: records in, replay out. Implemented by a marker type (`struct LeaseCodec;`).
pub trait Codec: 'static {
    /// One entry of the log.
    type Record: Send + 'static;
    /// What replaying records builds: the live set.
    type Table: Default + Send + 'static;
    /// First 8 bytes of the file: format and version. A file with another header is refused.
    const MAGIC: &'static [u8; 8];
    /// What the log holds, for messages ("lease" gives "the lease log") and the committer thread's name.
    const NAME: &'static str;
    /// Appends the payload of one record to `out` (the log frames it): at least 1 byte and at most
    /// [`MAX_PAYLOAD`]. Start with a tag, so that a later version can add kinds that this one skips.
    fn encode(out: &mut Vec<u8>, r: &Self::Record);
    /// Decodes one payload; `None` if it is not a well-formed record (it is then skipped and counted).
    fn decode(payload: &[u8]) -> Option<Self::Record>;
    /// Applies one record to the table, in log order.
    fn apply(table: &mut Self::Table, r: &Self::Record);
    /// Writes the live set as frames (one [`Frames::push`] each): replaying them must rebuild `table`.
    fn snapshot(table: &Self::Table, out: &mut Frames<'_>);
    /// Called by the [`Committer`] before a compaction (not before the rewrite that recovers from a failed sync): a
    /// chance to drop what need not survive (expired entries, say). Nothing by default.
    fn prune(_table: &mut Self::Table) {}
}

// ---------------------------------------------------------------------------------------------------------------
// CRC-32 (IEEE 802.3, reflected, as zlib), table-driven.

const CRC_TABLE: [u32; 256] = {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
};

/// Continues a CRC-32: `crc32(crc32(0, a), b) == crc32(0, a ++ b)`.
fn crc32(crc: u32, data: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// ---------------------------------------------------------------------------------------------------------------
// Framing.

fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    start
}

fn end_frame(out: &mut [u8], start: usize) {
    let len = out.len() - start - FRAME_HEADER;
    // A frame that open would read as corruption would silently take every later record with it: never write one.
    assert!(len > 0 && len <= MAX_PAYLOAD, "a codec encoded a payload of {len} bytes (must be 1..={MAX_PAYLOAD})");
    let len_bytes = (len as u32).to_le_bytes();
    let crc = crc32(crc32(0, &len_bytes), &out[start + FRAME_HEADER..]);
    out[start..start + 4].copy_from_slice(&len_bytes);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one frame to `out`, its payload written by `payload`.
pub fn push_frame(out: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = begin_frame(out);
    payload(out);
    end_frame(out, start);
}

/// Where [`Codec::snapshot`] writes: a buffer that takes whole frames.
pub struct Frames<'a> {
    out: &'a mut Vec<u8>,
}

impl Frames<'_> {
    /// Appends one frame, its payload written by `payload` (what [`Codec::encode`] would write for the record).
    pub fn push(&mut self, payload: impl FnOnce(&mut Vec<u8>)) {
        push_frame(self.out, payload);
    }
}

/// Calls `f` with each payload of the frames in `data[start..]`, up to the end or the first frame that is torn or
/// corrupt; returns the offset just past the last whole frame (everything after it is a torn tail).
pub fn parse_frames(data: &[u8], start: usize, mut f: impl FnMut(&[u8])) -> usize {
    let mut pos = start;
    while data.len() - pos >= FRAME_HEADER {
        let len_bytes: [u8; 4] = data[pos..pos + 4].try_into().unwrap();
        let len = u32::from_le_bytes(len_bytes) as usize;
        let crc = u32::from_le_bytes(data[pos + 4..pos + 8].try_into().unwrap());
        if len == 0 || len > MAX_PAYLOAD || data.len() - pos - FRAME_HEADER < len {
            break;
        }
        let payload = &data[pos + FRAME_HEADER..pos + FRAME_HEADER + len];
        if crc32(crc32(0, &len_bytes), payload) != crc {
            break;
        }
        f(payload);
        pos += FRAME_HEADER + len;
    }
    pos
}

/// The records of a log file's whole frames, in order, skipping those that do not decode (for tests and tools: it
/// neither repairs nor locks anything).
pub fn read_records<C: Codec>(path: &Path) -> Result<Vec<C::Record>> {
    let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !data.starts_with(C::MAGIC) {
        bail!("{} is not a gatekeeper {} log", path.display(), C::NAME);
    }
    let mut records = Vec::new();
    parse_frames(&data, C::MAGIC.len(), |p| records.extend(C::decode(p)));
    Ok(records)
}

// ---------------------------------------------------------------------------------------------------------------
// The log.

/// What [`Log::open`] found in the file.
pub struct Loaded<C: Codec> {
    /// The replay of every whole, valid record.
    pub table: C::Table,
    /// Whole, valid records replayed.
    pub records_read: usize,
    /// Frames with a valid CRC whose payload did not decode (e.g. written by a newer version), ignored.
    pub records_skipped: usize,
    /// Bytes of torn or corrupt tail dropped (and truncated away); they are saved in `<name>.torn`.
    pub torn_bytes_dropped: usize,
}

/// Counters of a [`Log`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Successful commits (each one fdatasync).
    pub commits: u64,
    /// Records made durable by commits.
    pub records: u64,
    /// Compactions (log rewrites).
    pub compactions: u64,
    /// Current size of the log, bytes.
    pub log_bytes: u64,
}

#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Faults {
    /// The next `n` writes write half the buffer, then fail.
    pub fail_writes: u32,
    /// The next `n` fdatasyncs fail (after doing nothing).
    pub fail_syncs: u32,
    /// Every fdatasync sleeps this long first (a slow disk).
    pub sync_delay: std::time::Duration,
}

/// The append-only log of `C`'s records. Single writer (see the module documentation).
pub struct Log<C: Codec> {
    path: PathBuf,
    file: File,
    /// Length of the durable prefix of the file; the next commit writes at this offset.
    committed: u64,
    buf: Vec<u8>,
    pending: usize,
    poisoned: bool,
    /// Size of a snapshot of the live set when last measured (0: not yet, measured when compaction is first due).
    live_estimate: u64,
    compact_min: u64,
    compact_ratio: u64,
    stats: LogStats,
    #[cfg(test)]
    pub(crate) faults: Faults,
    _codec: PhantomData<fn() -> C>,
}

impl<C: Codec> Log<C> {
    /// Opens (or creates) `dir/file_name`, replays it into a fresh table and truncates a torn tail. Fails, without
    /// touching anything, if the file exists but does not start with [`Codec::MAGIC`].
    pub fn open(dir: &Path, file_name: &str) -> Result<(Log<C>, Loaded<C>)> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(file_name);
        // A compaction interrupted before its rename: the log itself is intact.
        let _ = fs::remove_file(path.with_extension("tmp"));
        let mut data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        if data.len() < C::MAGIC.len() && C::MAGIC.starts_with(&data) {
            // New (or a creation that never completed: write_atomic makes that impossible, but be lenient).
            write_atomic(&path, C::MAGIC).with_context(|| format!("cannot create {}", path.display()))?;
            data = C::MAGIC.to_vec();
        } else if !data.starts_with(C::MAGIC) {
            bail!(
                "{} is not a gatekeeper {} log (its header is not {:?}); move it away to start with an empty one",
                path.display(),
                C::NAME,
                String::from_utf8_lossy(C::MAGIC)
            );
        }
        let mut table = C::Table::default();
        let (mut records_read, mut records_skipped) = (0, 0);
        let good_end = parse_frames(&data, C::MAGIC.len(), |payload| match C::decode(payload) {
            Some(r) => {
                C::apply(&mut table, &r);
                records_read += 1;
            }
            None => records_skipped += 1,
        });
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let torn = data.len() - good_end;
        if torn > 0 {
            let torn_path = path.with_file_name(format!("{file_name}.torn"));
            warn!(
                "{}: dropping a torn or corrupt tail of {torn} bytes after {records_read} whole records (interrupted \
                 write); saved in {}",
                path.display(),
                torn_path.display()
            );
            if let Err(e) = fs::write(&torn_path, &data[good_end..]) {
                warn!("cannot save the torn tail to {}: {e}", torn_path.display());
            }
            file.set_len(good_end as u64).with_context(|| format!("cannot truncate {}", path.display()))?;
            file.sync_all().with_context(|| format!("cannot sync {}", path.display()))?;
        }
        if records_skipped > 0 {
            warn!("{}: ignored {records_skipped} records of an unknown kind", path.display());
        }
        debug!("{}: {records_read} records", path.display());
        let log = Log {
            path,
            file,
            committed: good_end as u64,
            buf: Vec::with_capacity(64 * 1024),
            pending: 0,
            poisoned: false,
            live_estimate: 0,
            compact_min: COMPACT_MIN_BYTES,
            compact_ratio: COMPACT_RATIO,
            stats: LogStats { log_bytes: good_end as u64, ..Default::default() },
            #[cfg(test)]
            faults: Faults::default(),
            _codec: PhantomData,
        };
        Ok((log, Loaded { table, records_read, records_skipped, torn_bytes_dropped: torn }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Buffers a record in memory (encoded straight into the pending buffer): not durable until the next successful
    /// [`commit`](Self::commit).
    pub fn append(&mut self, r: &C::Record) {
        let start = begin_frame(&mut self.buf);
        C::encode(&mut self.buf, r);
        end_frame(&mut self.buf, start);
        self.pending += 1;
    }

    /// Records appended and not yet committed.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// True after a failed fdatasync (or a failed rewrite): commits fail until a rewrite succeeds.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Writes everything appended so far with one positional write at the end of the durable log, then one
    /// fdatasync. After `Ok`, all of it survives a crash. Nothing to write: `Ok` at once, no sync.
    /// On a failed write the log is truncated back and the records stay buffered (a later commit retries them);
    /// on a failed sync the log is poisoned (see [`maybe_compact`](Self::maybe_compact)).
    pub fn commit(&mut self) -> Result<()> {
        if self.poisoned {
            bail!(
                "the {} log {} is in an unknown state after a failed sync; it must be rewritten first",
                C::NAME,
                self.path.display()
            );
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.write_buf() {
            if self.file.set_len(self.committed).is_err() {
                self.poisoned = true;
            }
            return Err(e).with_context(|| format!("cannot write the {} log {}", C::NAME, self.path.display()));
        }
        if let Err(e) = self.sync() {
            self.poisoned = true;
            return Err(e).with_context(|| format!("cannot sync the {} log {}", C::NAME, self.path.display()));
        }
        self.committed += self.buf.len() as u64;
        self.stats.commits += 1;
        self.stats.records += self.pending as u64;
        self.stats.log_bytes = self.committed;
        self.buf.clear();
        self.pending = 0;
        Ok(())
    }

    fn write_buf(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if self.faults.fail_writes > 0 {
            self.faults.fail_writes -= 1;
            self.file.write_all_at(&self.buf[..self.buf.len() / 2], self.committed)?;
            return Err(io::Error::other("injected write failure"));
        }
        self.file.write_all_at(&self.buf, self.committed)
    }

    fn sync(&mut self) -> io::Result<()> {
        #[cfg(test)]
        {
            std::thread::sleep(self.faults.sync_delay);
            if self.faults.fail_syncs > 0 {
                self.faults.fail_syncs -= 1;
                return Err(io::Error::other("injected sync failure"));
            }
        }
        self.file.sync_data()
    }

    /// Cheap check (no allocation): could [`maybe_compact`](Self::maybe_compact) rewrite now? True when the log is
    /// larger than the minimum and than the ratio times the live set's size when last measured, or poisoned.
    pub fn compaction_due(&self) -> bool {
        self.poisoned
            || (self.committed > self.compact_min
                && self.committed > self.compact_ratio.saturating_mul(self.live_estimate))
    }

    /// Rewrites the log as a snapshot of `table` when [`compaction_due`](Self::compaction_due) and the log is larger
    /// than the ratio times the snapshot, or when the log is poisoned; returns whether it did. `table` must reflect
    /// every record appended so far, committed or not: the buffer is dropped, the snapshot contains it. Appends
    /// continue in the new file. When not worth it, the snapshot's size is remembered for the next check.
    pub fn maybe_compact(&mut self, table: &C::Table) -> Result<bool> {
        if !self.compaction_due() {
            return Ok(false);
        }
        let snap = self.encode_snapshot(table);
        if !self.poisoned && self.committed <= self.compact_ratio.saturating_mul(snap.len() as u64) {
            self.live_estimate = snap.len() as u64;
            return Ok(false);
        }
        self.replace(snap)?;
        Ok(true)
    }

    /// Unconditionally replaces the log, atomically and durably, with a snapshot of `table` (same contract as
    /// [`maybe_compact`](Self::maybe_compact)); clears the poisoned state on success.
    pub fn rewrite(&mut self, table: &C::Table) -> Result<()> {
        let snap = self.encode_snapshot(table);
        self.replace(snap)
    }

    fn encode_snapshot(&self, table: &C::Table) -> Vec<u8> {
        let mut out = Vec::with_capacity((self.live_estimate as usize).max(C::MAGIC.len()));
        out.extend_from_slice(C::MAGIC);
        C::snapshot(table, &mut Frames { out: &mut out });
        out
    }

    fn replace(&mut self, data: Vec<u8>) -> Result<()> {
        let res = write_atomic(&self.path, &data).and_then(|()| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(&self.path)
                .with_context(|| format!("cannot open {}", self.path.display()))
        });
        match res {
            Ok(file) => {
                debug!("{}: compacted {} bytes into {}", self.path.display(), self.committed, data.len());
                self.file = file;
                self.committed = data.len() as u64;
                self.live_estimate = data.len() as u64;
                self.buf.clear();
                self.pending = 0;
                self.poisoned = false;
                self.stats.compactions += 1;
                self.stats.log_bytes = self.committed;
                Ok(())
            }
            Err(e) => {
                // We cannot know whether the rename happened: our handle may point to an unlinked file.
                self.poisoned = true;
                Err(e).with_context(|| format!("cannot rewrite the {} log {}", C::NAME, self.path.display()))
            }
        }
    }

    /// Overrides the compaction thresholds ([`COMPACT_MIN_BYTES`], [`COMPACT_RATIO`]).
    pub fn set_compaction_threshold(&mut self, min_bytes: u64, ratio: u64) {
        self.compact_min = min_bytes;
        self.compact_ratio = ratio.max(1);
    }

    pub fn stats(&self) -> LogStats {
        self.stats
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Group commit.

struct Job<R> {
    records: Vec<R>,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
struct Shared {
    commits: AtomicU64,
    records: AtomicU64,
    submissions: AtomicU64,
    largest_batch: AtomicU64,
    compactions: AtomicU64,
    failed_commits: AtomicU64,
    log_bytes: AtomicU64,
}

/// Counters of a [`Committer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitterStats {
    /// Successful group commits (one fdatasync each, or one rewrite after a failed sync).
    pub commits: u64,
    /// Records made durable.
    pub records: u64,
    /// Submissions completed with `Ok`.
    pub submissions: u64,
    /// Most submissions covered by one commit.
    pub largest_batch: u64,
    /// Log rewrites (compactions and recoveries).
    pub compactions: u64,
    /// Group commits that failed (their submitters got `Err`).
    pub failed_commits: u64,
    /// Size of the log after the last commit.
    pub log_bytes: u64,
}

/// Completes when the submitted records are durable (`Ok`), or could not be made durable (`Err`: do not act on
/// them). A future for async code; [`wait`](Durable::wait) blocks (outside a tokio runtime only).
#[must_use = "the records are durable only when this resolves to Ok"]
pub struct Durable {
    rx: oneshot::Receiver<Result<(), String>>,
    name: &'static str,
}

fn durable_result(r: Result<Result<(), String>, oneshot::error::RecvError>, name: &str) -> Result<()> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(msg)) => Err(anyhow!(msg)),
        Err(_) => Err(anyhow!("the {name} store thread has stopped")),
    }
}

impl Future for Durable {
    type Output = Result<()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Result<()>> {
        let name = self.name;
        Pin::new(&mut self.rx).poll(cx).map(|r| durable_result(r, name))
    }
}

impl Durable {
    /// Blocks until durable. Panics if called inside an async context; `.await` there.
    pub fn wait(self) -> Result<()> {
        durable_result(self.rx.blocking_recv(), self.name)
    }
}

/// Group commit: a dedicated OS thread (`<NAME>-store`) owns the [`Log`] and the table of what it holds. It takes
/// everything submitted since its last fdatasync (up to [`MAX_BATCH_RECORDS`] records), applies it to the table,
/// writes it with one write, syncs once, then completes all those submitters: under load one fsync covers many
/// records. After answering, it compacts the log when due (from its own table, after [`Codec::prune`]), and after a
/// failed sync it rewrites the log from the table, which makes the batch durable after all.
pub struct Committer<C: Codec> {
    tx: Option<mpsc::Sender<Job<C::Record>>>,
    thread: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl<C: Codec> Committer<C> {
    /// Starts the thread. `table` must be the replay of everything in `log` (what [`Log::open`] returned, pruned
    /// or not).
    pub fn start(log: Log<C>, table: C::Table) -> Result<Committer<C>> {
        let shared = Arc::new(Shared::default());
        shared.log_bytes.store(log.stats().log_bytes, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("{}-store", C::NAME))
            .spawn(move || run_committer(log, table, rx, sh))
            .with_context(|| format!("cannot start the {} store thread", C::NAME))?;
        Ok(Committer { tx: Some(tx), thread: Some(thread), shared })
    }

    /// Queues records (in order, after everything submitted before) for the next group commit. An empty vector is
    /// a barrier: it completes once everything submitted before it is durable (and any compaction after it done).
    pub fn submit(&self, records: Vec<C::Record>) -> Durable {
        let (done, rx) = oneshot::channel();
        if let Some(tx) = &self.tx {
            // If the thread is gone, the job (and `done`) is dropped: the future resolves to an error.
            let _ = tx.send(Job { records, done });
        }
        Durable { rx, name: C::NAME }
    }

    pub fn stats(&self) -> CommitterStats {
        let s = &self.shared;
        CommitterStats {
            commits: s.commits.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            submissions: s.submissions.load(Ordering::Relaxed),
            largest_batch: s.largest_batch.load(Ordering::Relaxed),
            compactions: s.compactions.load(Ordering::Relaxed),
            failed_commits: s.failed_commits.load(Ordering::Relaxed),
            log_bytes: s.log_bytes.load(Ordering::Relaxed),
        }
    }

    /// Commits what is queued, stops the thread and waits for it (blocking; a few milliseconds).
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("the {} store thread panicked", C::NAME))?;
        }
        Ok(())
    }
}

impl<C: Codec> Drop for Committer<C> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn run_committer<C: Codec>(
    mut log: Log<C>,
    mut table: C::Table,
    rx: mpsc::Receiver<Job<C::Record>>,
    shared: Arc<Shared>,
) {
    let mut jobs: Vec<Job<C::Record>> = Vec::new();
    let mut busy = false;
    // recv fails only when every sender is gone and the queue is empty.
    while let Ok(first) = rx.recv() {
        let mut n = first.records.len();
        jobs.push(first);
        // Under load (the last batch had company), wait a moment for more: fewer fsyncs, each answer at most
        // GATHER later. A lone submitter is synced at once.
        let deadline = busy.then(|| std::time::Instant::now() + GATHER);
        while n < MAX_BATCH_RECORDS {
            let next = match deadline {
                Some(d) => rx.recv_timeout(d.saturating_duration_since(std::time::Instant::now())).ok(),
                None => rx.try_recv().ok(),
            };
            match next {
                Some(j) => {
                    n += j.records.len();
                    jobs.push(j);
                }
                None => break,
            }
        }
        busy = jobs.len() > 1;
        for j in &jobs {
            for r in &j.records {
                C::apply(&mut table, r);
                log.append(r);
            }
        }
        let mut res = log.commit();
        if let Err(e) = &res
            && log.is_poisoned()
        {
            // No pruning here: every record of this batch must be in the snapshot before its submitter hears Ok.
            warn!("{e:#}; rewriting the {} log from memory", C::NAME);
            res = log.rewrite(&table);
            if res.is_ok() {
                shared.compactions.fetch_add(1, Ordering::Relaxed);
            }
        }
        match &res {
            Ok(()) => {
                shared.commits.fetch_add(1, Ordering::Relaxed);
                shared.records.fetch_add(n as u64, Ordering::Relaxed);
                shared.submissions.fetch_add(jobs.len() as u64, Ordering::Relaxed);
                shared.largest_batch.fetch_max(jobs.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                warn!("{} commit failed: {e:#}", C::NAME);
                shared.failed_commits.fetch_add(1, Ordering::Relaxed);
            }
        }
        shared.log_bytes.store(log.stats().log_bytes, Ordering::Relaxed);
        let msg = res.as_ref().err().map(|e| format!("{e:#}"));
        for j in jobs.drain(..) {
            let _ = j.done.send(match &msg {
                None => Ok(()),
                Some(m) => Err(m.clone()),
            });
        }
        if msg.is_none() && log.compaction_due() {
            C::prune(&mut table);
            match log.maybe_compact(&table) {
                Ok(true) => {
                    shared.compactions.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {}
                Err(e) => warn!("{} log compaction failed: {e:#}", C::NAME),
            }
            shared.log_bytes.store(log.stats().log_bytes, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader, Write};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    /// A tiny codec: a map of u64 to u64. Values equal to [`PRUNED`] are dropped by [`Codec::prune`].
    struct TestCodec;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Rec {
        Put(u64, u64),
        Del(u64),
    }

    type Table = BTreeMap<u64, u64>;
    type TestLog = Log<TestCodec>;

    const FILE: &str = "test.log";
    const PRUNED: u64 = u64::MAX;
    const PUT_FRAME: usize = FRAME_HEADER + 17;

    impl Codec for TestCodec {
        type Record = Rec;
        type Table = Table;
        const MAGIC: &'static [u8; 8] = b"GKTEST01";
        const NAME: &'static str = "test";

        fn encode(out: &mut Vec<u8>, r: &Rec) {
            match *r {
                Rec::Put(k, v) => {
                    out.push(1);
                    out.extend_from_slice(&k.to_le_bytes());
                    out.extend_from_slice(&v.to_le_bytes());
                }
                Rec::Del(k) => {
                    out.push(2);
                    out.extend_from_slice(&k.to_le_bytes());
                }
            }
        }

        fn decode(p: &[u8]) -> Option<Rec> {
            let u = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().unwrap());
            match (p.first()?, p.len()) {
                (1, 17) => Some(Rec::Put(u(1), u(9))),
                (2, 9) => Some(Rec::Del(u(1))),
                _ => None,
            }
        }

        fn apply(t: &mut Table, r: &Rec) {
            match *r {
                Rec::Put(k, v) => {
                    t.insert(k, v);
                }
                Rec::Del(k) => {
                    t.remove(&k);
                }
            }
        }

        fn snapshot(t: &Table, out: &mut Frames<'_>) {
            for (&k, &v) in t {
                out.push(|o| Self::encode(o, &Rec::Put(k, v)));
            }
        }

        fn prune(t: &mut Table) {
            t.retain(|_, v| *v != PRUNED);
        }
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("gk-log-{}-{n}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn log(&self) -> PathBuf {
            self.0.join(FILE)
        }
        fn open(&self) -> (TestLog, Loaded<TestCodec>) {
            TestLog::open(&self.0, FILE).unwrap()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A tiny deterministic PRNG (xorshift64*).
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    fn replay(records: &[Rec]) -> Table {
        let mut t = Table::new();
        for r in records {
            TestCodec::apply(&mut t, r);
        }
        t
    }

    fn frame(r: &Rec) -> Vec<u8> {
        let mut b = Vec::new();
        push_frame(&mut b, |o| TestCodec::encode(o, r));
        b
    }

    fn on_disk(path: &Path) -> Vec<Rec> {
        read_records::<TestCodec>(path).unwrap()
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(0, b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(crc32(0, b"1234"), b"56789"), 0xCBF4_3926);
    }

    #[test]
    fn frames_are_length_crc_payload() {
        let f = frame(&Rec::Del(7));
        assert_eq!(&f[..4], &9u32.to_le_bytes());
        assert_eq!(&f[4..8], &crc32(crc32(0, &9u32.to_le_bytes()), &f[8..]).to_le_bytes());
        assert_eq!(&f[8..], &[2, 7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frame(&Rec::Put(1, 2)).len(), PUT_FRAME);
    }

    #[test]
    #[should_panic(expected = "payload of 0 bytes")]
    fn an_empty_payload_is_never_written() {
        push_frame(&mut Vec::new(), |_| {});
    }

    #[test]
    fn open_replays_what_was_committed_and_nothing_else() {
        let d = TempDir::new("replay");
        let (mut s, l) = d.open();
        assert!(l.table.is_empty());
        assert_eq!((l.records_read, l.records_skipped, l.torn_bytes_dropped), (0, 0, 0));
        assert_eq!(fs::read(d.log()).unwrap(), TestCodec::MAGIC);
        let mut all = Vec::new();
        for n in 0..50 {
            let r = if n % 10 == 9 { Rec::Del(n - 1) } else { Rec::Put(n, n * 100) };
            s.append(&r);
            all.push(r);
            if n % 4 == 0 {
                s.commit().unwrap();
            }
        }
        s.commit().unwrap();
        assert_eq!(s.stats().records, 50);
        s.append(&Rec::Put(1000, 1)); // never committed
        drop(s);
        let (_, l) = d.open();
        assert_eq!(l.records_read, 50);
        assert_eq!(l.torn_bytes_dropped, 0);
        assert_eq!(l.table, replay(&all));
        assert_eq!(l.table.len(), 40);
    }

    /// Writes `commits` commits of one record each, then a last commit of `last_batch` records. Returns the file
    /// content, the offsets of the end of each record, and the records.
    fn build_log(d: &TempDir, commits: u64, last_batch: u64) -> (Vec<u8>, Vec<usize>, Vec<Rec>) {
        let (mut s, _) = d.open();
        let mut recs = Vec::new();
        for n in 0..commits {
            recs.push(Rec::Put(n, n + 1));
            s.append(recs.last().unwrap());
            s.commit().unwrap();
        }
        for n in 0..last_batch {
            recs.push(if n == 1 { Rec::Del(3) } else { Rec::Put(1000 + n, n) });
            s.append(recs.last().unwrap());
        }
        s.commit().unwrap();
        drop(s);
        let data = fs::read(d.log()).unwrap();
        let mut ends = Vec::new();
        let mut buf = TestCodec::MAGIC.to_vec();
        for r in &recs {
            buf.extend(frame(r));
            ends.push(buf.len());
        }
        assert_eq!(buf, data);
        (data, ends, recs)
    }

    #[test]
    fn a_torn_tail_at_every_offset_keeps_every_whole_record() {
        let d = TempDir::new("torn");
        let (data, ends, recs) = build_log(&d, 20, 3);
        let last_acked = ends[19]; // end of the last commit before the final batch
        for cut in last_acked..data.len() {
            fs::write(d.log(), &data[..cut]).unwrap();
            let (mut s, l) = d.open();
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            let boundary = if whole == 0 { TestCodec::MAGIC.len() } else { ends[whole - 1] };
            assert!(whole >= 20, "cut {cut}");
            assert_eq!(l.records_read, whole, "cut {cut}");
            assert_eq!(l.torn_bytes_dropped, cut - boundary, "cut {cut}");
            assert_eq!(l.table, replay(&recs[..whole]), "cut {cut}");
            assert_eq!(fs::metadata(d.log()).unwrap().len() as usize, boundary, "truncated at cut {cut}");
            if cut > boundary {
                assert_eq!(fs::read(d.0.join("test.log.torn")).unwrap(), &data[boundary..cut]);
            }
            // The log keeps working after the repair.
            s.append(&Rec::Put(5000, 1));
            s.commit().unwrap();
            drop(s);
            let (_, l2) = d.open();
            assert_eq!(l2.records_read, whole + 1, "cut {cut}");
            assert_eq!(l2.torn_bytes_dropped, 0);
            assert_eq!(l2.table.get(&5000), Some(&1));
        }
    }

    #[test]
    fn garbage_after_the_log_is_dropped() {
        let d = TempDir::new("garbage");
        let (data, _, recs) = build_log(&d, 10, 2);
        let expected = replay(&recs);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let random: Vec<u8> = (0..300).map(|_| rng.next() as u8).collect();
        let mut bad_crc = frame(&Rec::Put(77, 77));
        bad_crc[6] ^= 1;
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 20]);
        let tails: Vec<(&str, Vec<u8>)> =
            vec![("zeros", vec![0; 4096]), ("random", random), ("bad crc", bad_crc), ("huge length", huge)];
        for (what, tail) in tails {
            let mut f = data.clone();
            f.extend_from_slice(&tail);
            fs::write(d.log(), &f).unwrap();
            let (_, l) = d.open();
            assert_eq!(l.table, expected, "{what}");
            assert_eq!(l.records_read, recs.len(), "{what}");
            assert_eq!(l.torn_bytes_dropped, tail.len(), "{what}");
        }
        // A bit flip anywhere in the last record drops that record only.
        let last_len = frame(recs.last().unwrap()).len();
        for i in data.len() - last_len..data.len() {
            let mut f = data.clone();
            f[i] ^= 0x10;
            fs::write(d.log(), &f).unwrap();
            let (_, l) = d.open();
            assert_eq!(l.records_read, recs.len() - 1, "flip at {i}");
            assert_eq!(l.table, replay(&recs[..recs.len() - 1]));
        }
    }

    #[test]
    fn unknown_records_are_skipped_and_foreign_files_refused() {
        let d = TempDir::new("unknown");
        let mut f = TestCodec::MAGIC.to_vec();
        push_frame(&mut f, |o| o.extend_from_slice(&[9, 1, 2, 3]));
        f.extend(frame(&Rec::Put(1, 2)));
        fs::write(d.log(), &f).unwrap();
        let (_, l) = d.open();
        assert_eq!((l.records_read, l.records_skipped, l.torn_bytes_dropped), (1, 1, 0));
        assert_eq!(l.table, BTreeMap::from([(1, 2)]));

        fs::write(d.log(), b"192.168.1.5 aa:bb:cc:dd:ee:ff laptop\n").unwrap();
        let e = TestLog::open(&d.0, FILE).err().expect("a foreign file must be refused");
        assert!(e.to_string().contains("not a gatekeeper test log"), "{e}");
        assert_eq!(fs::read(d.log()).unwrap(), b"192.168.1.5 aa:bb:cc:dd:ee:ff laptop\n", "left untouched");
        // A torn creation (prefix of the header) is recreated.
        fs::write(d.log(), &TestCodec::MAGIC[..3]).unwrap();
        let (_, l) = d.open();
        assert!(l.table.is_empty());
        assert_eq!(fs::read(d.log()).unwrap(), TestCodec::MAGIC);
    }

    #[test]
    fn a_failed_write_is_rolled_back_and_retried() {
        let d = TempDir::new("failwrite");
        let (mut s, _) = d.open();
        s.append(&Rec::Put(1, 1));
        s.commit().unwrap();
        let len = fs::metadata(d.log()).unwrap().len();
        s.append(&Rec::Put(2, 2));
        s.append(&Rec::Put(3, 3));
        s.faults.fail_writes = 1;
        assert!(s.commit().is_err());
        assert!(!s.is_poisoned());
        assert_eq!(fs::metadata(d.log()).unwrap().len(), len, "the partial write is truncated away");
        assert_eq!(s.pending(), 2);
        s.append(&Rec::Put(4, 4));
        s.commit().unwrap();
        drop(s);
        let (_, l) = d.open();
        assert_eq!(l.records_read, 4);
        assert_eq!(l.table, BTreeMap::from([(1, 1), (2, 2), (3, 3), (4, 4)]));
    }

    #[test]
    fn a_failed_sync_poisons_until_rewritten() {
        let d = TempDir::new("failsync");
        let (mut s, _) = d.open();
        let mut t = Table::new();
        for n in 0..3 {
            let r = Rec::Put(n, n);
            TestCodec::apply(&mut t, &r);
            s.append(&r);
        }
        s.faults.fail_syncs = 1;
        assert!(s.commit().is_err());
        assert!(s.is_poisoned());
        assert!(s.commit().is_err(), "no commit on top of an unknown state");
        assert!(s.compaction_due());
        assert!(s.maybe_compact(&t).unwrap());
        assert!(!s.is_poisoned());
        assert_eq!(s.pending(), 0, "the snapshot contains the buffer");
        s.append(&Rec::Put(9, 9));
        s.commit().unwrap();
        drop(s);
        let (_, l) = d.open();
        assert_eq!(l.table, BTreeMap::from([(0, 0), (1, 1), (2, 2), (9, 9)]));
    }

    #[test]
    fn compaction_preserves_the_live_set_and_the_log_goes_on() {
        let d = TempDir::new("compact");
        let (mut s, _) = d.open();
        s.set_compaction_threshold(8 * 1024, 4);
        let mut t = Table::new();
        let mut compactions = 0;
        let mut max_len = 0;
        for i in 0..5000u64 {
            let r = if i % 97 == 0 { Rec::Del(i % 20) } else { Rec::Put(i % 20, i) };
            TestCodec::apply(&mut t, &r);
            s.append(&r);
            s.commit().unwrap();
            if s.compaction_due() && s.maybe_compact(&t).unwrap() {
                compactions += 1;
                assert!(!d.0.join("test.tmp").exists());
                // The new file is exactly the header and the snapshot.
                let mut snap = TestCodec::MAGIC.to_vec();
                for (&k, &v) in &t {
                    snap.extend(frame(&Rec::Put(k, v)));
                }
                assert_eq!(fs::read(d.log()).unwrap(), snap);
            }
            max_len = max_len.max(s.stats().log_bytes);
        }
        assert!(compactions > 10, "{compactions}");
        assert_eq!(s.stats().compactions, compactions);
        assert!(max_len <= 8 * 1024 + 64, "{max_len}");
        drop(s);
        let (_, l) = d.open();
        assert_eq!(l.table, t);
        assert_eq!(l.torn_bytes_dropped, 0);
    }

    #[test]
    fn compaction_waits_for_the_log_to_outgrow_the_live_set() {
        let d = TempDir::new("nocompact");
        let (mut s, _) = d.open();
        s.set_compaction_threshold(1024, 4);
        let mut t = Table::new();
        // All distinct keys: the live set is the whole log, never worth compacting.
        for n in 0..200 {
            let r = Rec::Put(n, n);
            TestCodec::apply(&mut t, &r);
            s.append(&r);
            s.commit().unwrap();
            assert!(!s.maybe_compact(&t).unwrap());
        }
        assert_eq!(s.stats().compactions, 0);
        assert!(!s.compaction_due(), "the live estimate was updated");
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    }

    #[test]
    fn committer_groups_everything_queued_during_a_sync_into_one() {
        let d = TempDir::new("group");
        let (mut s, l) = d.open();
        s.faults.sync_delay = Duration::from_millis(200);
        let c = Committer::start(s, l.table).unwrap();
        let t0 = Instant::now();
        let first = c.submit(vec![Rec::Put(0, 0)]);
        std::thread::sleep(Duration::from_millis(50)); // the thread is now inside the first (slow) sync
        let rest: Vec<Durable> = (1..=100).map(|n| c.submit(vec![Rec::Put(n, n)])).collect();
        first.wait().unwrap();
        let first_done = t0.elapsed();
        assert!(first_done >= Duration::from_millis(200), "completed before its sync: {first_done:?}");
        // Synced: it is in the file, inside the durable prefix.
        assert!(on_disk(&d.log()).contains(&Rec::Put(0, 0)));
        for w in rest {
            w.wait().unwrap();
        }
        assert!(t0.elapsed() >= Duration::from_millis(400), "the second group waited for its own sync");
        let st = c.stats();
        assert_eq!((st.commits, st.submissions, st.records, st.largest_batch), (2, 101, 101, 100), "{st:?}");
        c.shutdown().unwrap();
        let (_, l) = d.open();
        assert_eq!(l.table.len(), 101);
    }

    #[test]
    fn committer_under_concurrent_submitters_syncs_in_groups_and_loses_nothing() {
        let d = TempDir::new("concurrent");
        let (mut s, l) = d.open();
        s.faults.sync_delay = Duration::from_millis(1);
        let c = Arc::new(Committer::start(s, l.table).unwrap());
        let log = d.log();
        let (tasks, per_task) = (8u64, 150u64);
        rt().block_on(async {
            let mut hs = Vec::new();
            for t in 0..tasks {
                let c = c.clone();
                let log = log.clone();
                hs.push(tokio::spawn(async move {
                    for i in 0..per_task {
                        let rec = Rec::Put(t * 10_000 + i, i);
                        c.submit(vec![rec]).await.unwrap();
                        if i % 50 == 0 {
                            // Acknowledged means written and synced: the record is in the log already.
                            assert!(on_disk(&log).contains(&rec));
                        }
                    }
                }));
            }
            for h in hs {
                h.await.unwrap();
            }
        });
        let st = c.stats();
        let total = tasks * per_task;
        assert_eq!((st.submissions, st.records, st.failed_commits), (total, total, 0));
        assert!(st.commits * 2 <= total, "expected grouping: {st:?}");
        Arc::into_inner(c).unwrap().shutdown().unwrap();
        let (_, l) = d.open();
        assert_eq!(l.table.len() as u64, total);
    }

    #[test]
    fn committer_rewrites_after_a_failed_sync_and_reports_failed_writes() {
        let d = TempDir::new("cfail");
        let (mut s, l) = d.open();
        s.faults.fail_syncs = 1;
        let c = Committer::start(s, l.table).unwrap();
        // The recovery rewrite does not prune: the batch it makes durable is all there.
        c.submit(vec![Rec::Put(1, PRUNED)]).wait().expect("recovered by a rewrite");
        assert_eq!(c.stats().compactions, 1);
        c.submit(vec![Rec::Put(2, 2)]).wait().unwrap();
        c.shutdown().unwrap();
        let (mut s, l) = d.open();
        assert_eq!(l.table, BTreeMap::from([(1, PRUNED), (2, 2)]));

        s.faults.fail_writes = 1;
        let c = Committer::start(s, l.table).unwrap();
        assert!(c.submit(vec![Rec::Put(3, 3)]).wait().is_err(), "not durable: must not be acknowledged");
        assert_eq!(c.stats().failed_commits, 1);
        c.submit(vec![Rec::Put(4, 4)]).wait().unwrap();
        drop(c); // Drop commits and joins too.
        let (_, l) = d.open();
        assert_eq!(l.table, BTreeMap::from([(1, PRUNED), (2, 2), (3, 3), (4, 4)]), "the failed batch was retried");
    }

    #[test]
    fn committer_compacts_by_itself_at_the_default_threshold_and_prunes_first() {
        let d = TempDir::new("ccompact");
        let (s, l) = d.open();
        let c = Committer::start(s, l.table).unwrap();
        let mut t = Table::new();
        let mut last = None;
        let rounds = COMPACT_MIN_BYTES as usize / (100 * PUT_FRAME) + 50;
        for i in 0..rounds as u64 {
            // Key 7 is written once, to be pruned: nothing after the compaction brings it back.
            let batch: Vec<Rec> = (0..100u64)
                .filter(|&k| k != 7 || i == 0)
                .map(|k| Rec::Put(k, if k == 7 { PRUNED } else { i }))
                .collect();
            for r in &batch {
                TestCodec::apply(&mut t, r);
            }
            last = Some(c.submit(batch));
        }
        last.unwrap().wait().unwrap();
        // The thread compacts after answering a batch: a barrier behind it completes once that is done.
        c.submit(Vec::new()).wait().unwrap();
        let st = c.stats();
        assert!(st.compactions >= 1, "{st:?}");
        assert!(st.log_bytes < COMPACT_MIN_BYTES, "{st:?}");
        c.shutdown().unwrap();
        let (_, l) = d.open();
        TestCodec::prune(&mut t);
        assert_eq!(l.table, t);
        assert!(!l.table.contains_key(&7), "pruned before the compaction");
    }

    #[test]
    fn durable_reports_a_stopped_thread() {
        let (tx, rx) = oneshot::channel::<Result<(), String>>();
        drop(tx);
        assert!(Durable { rx, name: "test" }.wait().unwrap_err().to_string().contains("stopped"));
    }

    const KILL_DIR_ENV: &str = "GK_LOG_KILL_CHILD_DIR";
    const KILL_ROUND_ENV: &str = "GK_LOG_KILL_CHILD_ROUND";
    const KILL_KEYS: u64 = 100;

    /// The record writer `thread` submits as its `i`th in `round`: a key of its own, a value that only grows.
    fn kill_record(thread: u64, i: u64, round: u64) -> (u64, u64) {
        (thread * KILL_KEYS + i % KILL_KEYS, 10_000_000_000 + round * 100_000_000 + i)
    }

    /// The writer process of `kill_9_loses_no_acknowledged_record`: does nothing unless started by it.
    #[test]
    #[ignore = "helper process, started by kill_9_loses_no_acknowledged_record"]
    fn kill_child_writer() {
        let Ok(dir) = std::env::var(KILL_DIR_ENV) else { return };
        let round: u64 = std::env::var(KILL_ROUND_ENV).unwrap().parse().unwrap();
        let (mut s, l) = TestLog::open(Path::new(&dir), FILE).unwrap();
        // Compact often (the live set is 10 KB), so that kills land in compactions too.
        s.set_compaction_threshold(32 * 1024, 2);
        let c = Arc::new(Committer::start(s, l.table).unwrap());
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let hs: Vec<_> = (0..4u64)
            .map(|t| {
                let (c, out) = (c.clone(), out.clone());
                std::thread::spawn(move || {
                    for i in 0.. {
                        let (k, v) = kill_record(t, i, round);
                        c.submit(vec![Rec::Put(k, v)]).wait().unwrap();
                        let mut o = out.lock().unwrap();
                        writeln!(o, "acked {t} {i}").unwrap();
                        o.flush().unwrap();
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
    }

    #[test]
    fn kill_9_loses_no_acknowledged_record() {
        let d = TempDir::new("kill");
        // Highest acknowledged value per key.
        let mut acked: BTreeMap<u64, u64> = BTreeMap::new();
        let mut total_acked = 0;
        for round in 0..5u64 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "state::log::tests::kill_child_writer", "--ignored", "--nocapture"])
                .args(["--test-threads", "1"])
                .env(KILL_DIR_ENV, &d.0)
                .env(KILL_ROUND_ENV, round.to_string())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let stdout = child.stdout.take().unwrap();
            let reader = std::thread::spawn(move || {
                BufReader::new(stdout).lines().map_while(|l| l.ok()).collect::<Vec<String>>()
            });
            // Wait for the writer to be going, then kill it at a varying moment.
            std::thread::sleep(Duration::from_millis(300 + 37 * round));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let lines = reader.join().unwrap();
            let mut n = 0;
            for line in lines {
                let Some(rest) = line.strip_prefix("acked ") else { continue };
                let mut it = rest.split(' ').map(|x| x.parse::<u64>().unwrap());
                let (t, i) = (it.next().unwrap(), it.next().unwrap());
                let (k, v) = kill_record(t, i, round);
                let e = acked.entry(k).or_default();
                *e = (*e).max(v);
                n += 1;
            }
            total_acked += n;
            eprintln!("round {round}: {n} acks before the kill");
            let (_, loaded) = d.open();
            for (k, v) in &acked {
                let got = loaded.table.get(k).copied();
                assert!(got.is_some_and(|g| g >= *v), "round {round}: acked record lost: {k} {v} vs {got:?}");
            }
        }
        assert!(total_acked > 100, "the writer did not get going: {total_acked} acks");
    }
}
