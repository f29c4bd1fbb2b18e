//! The backup root on disk: streamed, checksummed, atomic writes of backup
//! files and manifests, streamed reads back, listing, and removal.
//!
//! A backup file is written as `<name>.partial` (mode 0600) by one blocking
//! thread fed through a bounded channel, so memory stays flat whatever the
//! dump's size: zstd compresses as the bytes arrive, sha256 is taken over what
//! lands on disk, then the file is fsynced, renamed and the directory fsynced.
//! Anything that does not reach `finish` removes its `.partial`.
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::domain::backup_set::{
    check_name, Manifest, SetId, MANIFEST_SUFFIX, MAX_NAME, PARTIAL_SUFFIX,
};
use crate::domain::error::{ErrorKind, ToolError};

/// zstd level: the `zstd` CLI's default, so a comparison with
/// `pg_dump | zstd` compares the same work.
pub const ZSTD_LEVEL: i32 = 3;
/// Chunks in flight between the engine stream and the writer thread; each is
/// one Docker stream frame (at most a few tens of KiB).
const CHANNEL_CHUNKS: usize = 16;
const WRITE_BUFFER: usize = 256 * 1024;
const READ_CHUNK: usize = 64 * 1024;

/// `<backup root>/<project>`, with the project name checked so it cannot
/// leave the root.
pub fn project_dir(root: &Path, project: &str) -> Result<PathBuf, ToolError> {
    check_name("project", project, MAX_NAME)?;
    let root: PathBuf = root
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    Ok(root.join(project))
}

/// Creates the project directory (0700: backups hold the stack's data).
pub fn ensure_project_dir(dir: &Path) -> Result<(), ToolError> {
    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "create the backup directory", &e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

/// An I/O failure on a backup path, with a next step for the common causes.
pub fn io_error(path: &Path, what: &str, e: &std::io::Error) -> ToolError {
    let mut err = ToolError::external(format!("cannot {what} {}: {e}", path.display()));
    if e.raw_os_error() == Some(28) || e.kind() == std::io::ErrorKind::StorageFull {
        let free = available_space(path.parent().unwrap_or(path)).unwrap_or(0);
        err = err
            .evidence(format!("{free} bytes free under {}", path.parent().unwrap_or(path).display()))
            .next_step("free space under the backup root (prune_backups removes old sets) or point x-stackpilot backup_root at a larger disk; earlier backups are untouched");
    }
    err
}

/// Free bytes for an unprivileged writer at `path` (or its nearest existing ancestor).
pub fn available_space(path: &Path) -> std::io::Result<u64> {
    let mut p = path;
    loop {
        if p.exists() {
            return fs4::available_space(p);
        }
        match p.parent() {
            Some(parent) => p = parent,
            None => return fs4::available_space(path),
        }
    }
}

/// fsync a directory, so a rename or unlink in it survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Counts of a tar stream, taken while it passes (headers only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TarCounts {
    /// Regular files and hard links (what `find -type f` counts).
    pub files: u64,
    /// Directories other than the archive's root.
    pub directories: u64,
    /// Symlinks, devices, fifos.
    pub other: u64,
    /// Bytes of regular file content.
    pub content_bytes: u64,
}

/// A streaming tar header walker: validates each header's checksum and counts
/// entries without holding more than one 512-byte block.
#[derive(Debug, Clone)]
pub struct TarCounter {
    block: [u8; 512],
    filled: usize,
    skip: u64,
    zero_blocks: u32,
    pub counts: TarCounts,
    pub error: Option<String>,
}

impl Default for TarCounter {
    fn default() -> Self {
        Self {
            block: [0; 512],
            filled: 0,
            skip: 0,
            zero_blocks: 0,
            counts: TarCounts::default(),
            error: None,
        }
    }
}

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256 for sizes past 8 GiB.
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for b in &field[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(*b))?;
        }
        return Some(v);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0)
        .map(|b| *b as char)
        .collect();
    let t = text.trim();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(t, 8).ok()
}

impl TarCounter {
    /// The archive ended with its end-of-archive marker and no header was bad.
    pub fn complete(&self) -> bool {
        self.error.is_none() && self.zero_blocks >= 1 && self.filled == 0
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            if self.zero_blocks > 0 {
                return; // past the end marker: trailing padding
            }
            if self.skip > 0 {
                let n = (self.skip.min(data.len() as u64)) as usize;
                self.skip -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (512 - self.filled).min(data.len());
            self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == 512 {
                self.filled = 0;
                self.header();
            }
        }
    }

    fn header(&mut self) {
        let h = self.block;
        if h.iter().all(|b| *b == 0) {
            self.zero_blocks += 1;
            return;
        }
        let stored = octal(&h[148..156]);
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(*b)
                }
            })
            .sum();
        if stored != Some(sum) {
            self.error = Some("a tar header has a bad checksum".into());
            return;
        }
        let Some(size) = octal(&h[124..136]) else {
            self.error = Some("a tar header has an unreadable size".into());
            return;
        };
        let name: Vec<u8> = h[..100].iter().copied().take_while(|b| *b != 0).collect();
        match h[156] {
            b'0' | 0 | b'7' | b'S' => {
                self.counts.files += 1;
                self.counts.content_bytes += size;
            }
            b'1' => self.counts.files += 1,
            b'5' => {
                if name != b"./" && name != b"." {
                    self.counts.directories += 1;
                }
            }
            b'L' | b'K' | b'x' | b'g' => {}
            _ => self.counts.other += 1,
        }
        self.skip = size.div_ceil(512) * 512;
    }
}

struct HashWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: Arc<AtomicU64>,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum Out {
    Zstd(zstd::stream::write::Encoder<'static, HashWriter<BufWriter<File>>>),
    Raw(HashWriter<BufWriter<File>>),
}

impl Out {
    fn write_all(&mut self, b: &[u8]) -> std::io::Result<()> {
        match self {
            Out::Zstd(e) => e.write_all(b),
            Out::Raw(w) => w.write_all(b),
        }
    }
    fn finish(self) -> std::io::Result<HashWriter<BufWriter<File>>> {
        match self {
            Out::Zstd(e) => e.finish(),
            Out::Raw(w) => Ok(w),
        }
    }
}

/// Removes a path when dropped, unless disarmed.
struct RemoveOnDrop(Option<PathBuf>);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(&p);
            if let Some(dir) = p.parent() {
                let _ = sync_dir(dir);
            }
        }
    }
}

/// What a finished file is.
#[derive(Debug, Clone)]
pub struct Written {
    pub path: PathBuf,
    pub file: String,
    /// Bytes on disk.
    pub bytes: u64,
    /// Bytes of the stream before compression.
    pub stream_bytes: u64,
    pub sha256: String,
    /// Present when the stream was a tar and was counted.
    pub tar: Option<TarCounter>,
}

enum Msg {
    Data(Bytes),
    Finish,
}

/// The writing end of one backup file. Dropped or aborted without `finish`,
/// it leaves nothing behind.
pub struct FileSink {
    tx: Option<mpsc::Sender<Msg>>,
    handle: Option<tokio::task::JoinHandle<Result<Written, ToolError>>>,
    /// Bytes written to disk so far (for progress).
    pub disk_bytes: Arc<AtomicU64>,
    pub partial: PathBuf,
}

impl FileSink {
    /// Creates `<dir>/<file>.partial` (it must not exist) and the thread that
    /// fills it. `zstd`: compress; `count_tar`: walk the stream as a tar.
    pub fn create(dir: &Path, file: &str, zstd: bool, count_tar: bool) -> Result<Self, ToolError> {
        check_name("file", file, 255 - PARTIAL_SUFFIX.len())?;
        let final_path = dir.join(file);
        let partial = dir.join(format!("{file}{PARTIAL_SUFFIX}"));
        if final_path.exists() {
            return Err(ToolError::internal(format!(
                "{} already exists; refusing to overwrite a backup",
                final_path.display()
            )));
        }
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let f = opts
            .open(&partial)
            .map_err(|e| io_error(&partial, "create", &e))?;
        let disk_bytes = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        let counter = disk_bytes.clone();
        let partial_path = partial.clone();
        let file_name = file.to_string();
        let dir = dir.to_path_buf();
        let handle = tokio::task::spawn_blocking(move || {
            write_thread(
                rx,
                f,
                partial_path,
                dir,
                file_name,
                zstd,
                count_tar,
                counter,
            )
        });
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
            disk_bytes,
            partial,
        })
    }

    /// Queues a chunk; waits when the writer is behind (bounded memory).
    /// `false`: the writer stopped (its error comes from `abort`).
    pub async fn send(&self, chunk: Bytes) -> bool {
        match &self.tx {
            Some(tx) => tx.send(Msg::Data(chunk)).await.is_ok(),
            None => false,
        }
    }

    /// Completes the file: compress the tail, fsync, rename, fsync the directory.
    pub async fn finish(mut self) -> Result<Written, ToolError> {
        if let Some(tx) = self.tx.take() {
            // If the writer already failed, the send fails and the join says why.
            let _ = tx.send(Msg::Finish).await;
        }
        self.join().await
    }

    /// Stops writing and removes the `.partial`. Returns the writer's own
    /// error when it had failed (a full disk, say).
    pub async fn abort(mut self) -> Option<ToolError> {
        self.tx.take();
        self.join().await.err()
    }

    async fn join(&mut self) -> Result<Written, ToolError> {
        match self.handle.take() {
            Some(h) => h
                .await
                .map_err(|e| ToolError::internal(format!("backup writer thread: {e}")))?,
            None => Err(ToolError::internal("backup writer already joined")),
        }
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        // Dropping the sender makes the thread remove its .partial.
        self.tx.take();
    }
}

#[allow(clippy::too_many_arguments)]
fn write_thread(
    mut rx: mpsc::Receiver<Msg>,
    f: File,
    partial: PathBuf,
    dir: PathBuf,
    file: String,
    zstd: bool,
    count_tar: bool,
    counter: Arc<AtomicU64>,
) -> Result<Written, ToolError> {
    let mut guard = RemoveOnDrop(Some(partial.clone()));
    let fail = |what: &str, e: std::io::Error| io_error(&partial, what, &e);
    let hw = HashWriter {
        inner: BufWriter::with_capacity(WRITE_BUFFER, f),
        hasher: Sha256::new(),
        bytes: counter.clone(),
    };
    let mut out = if zstd {
        Out::Zstd(
            zstd::stream::write::Encoder::new(hw, ZSTD_LEVEL).map_err(|e| fail("compress", e))?,
        )
    } else {
        Out::Raw(hw)
    };
    let mut tar = count_tar.then(TarCounter::default);
    let mut stream_bytes: u64 = 0;
    loop {
        match rx.blocking_recv() {
            Some(Msg::Data(chunk)) => {
                stream_bytes += chunk.len() as u64;
                if let Some(t) = tar.as_mut() {
                    t.feed(&chunk);
                }
                out.write_all(&chunk).map_err(|e| fail("write", e))?;
            }
            Some(Msg::Finish) => break,
            // The sender went away without Finish: abort; the guard removes the file.
            None => return Err(ToolError::new(ErrorKind::Cancelled, "backup file aborted")),
        }
    }
    let hw = out.finish().map_err(|e| fail("write", e))?;
    let sha256 = hex::encode(hw.hasher.finalize());
    let f = hw
        .inner
        .into_inner()
        .map_err(|e| fail("write", e.into_error()))?;
    f.sync_all().map_err(|e| fail("fsync", e))?;
    drop(f);
    let final_path = dir.join(&file);
    std::fs::rename(&partial, &final_path).map_err(|e| fail("rename", e))?;
    guard.0 = None;
    sync_dir(&dir).map_err(|e| io_error(&dir, "fsync", &e))?;
    let bytes = counter.load(Ordering::Relaxed);
    Ok(Written {
        path: final_path,
        file,
        bytes,
        stream_bytes,
        sha256,
        tar,
    })
}

/// Writes a manifest atomically (temp file, fsync, rename, fsync dir). It is
/// the commit point of a set: before it exists, the set's files are not a backup.
pub fn write_manifest(dir: &Path, id: &SetId, manifest: &Manifest) -> Result<PathBuf, ToolError> {
    let path = dir.join(id.manifest_name());
    let mut text = serde_json::to_vec_pretty(manifest)
        .map_err(|e| ToolError::internal(format!("manifest JSON: {e}")))?;
    text.push(b'\n');
    let mut tmp = tempfile::Builder::new()
        .prefix(".manifest-")
        .suffix(PARTIAL_SUFFIX)
        .tempfile_in(dir)
        .map_err(|e| io_error(dir, "create a manifest in", &e))?;
    tmp.write_all(&text)
        .map_err(|e| io_error(&path, "write", &e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| io_error(&path, "fsync", &e))?;
    tmp.persist_noclobber(&path)
        .map_err(|e| io_error(&path, "create", &e.error))?;
    sync_dir(dir).map_err(|e| io_error(dir, "fsync", &e))?;
    Ok(path)
}

/// One manifest found on disk.
#[derive(Debug, Clone)]
pub struct FoundSet {
    pub id: SetId,
    pub manifest: Manifest,
}

/// What the project directory holds.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Valid sets, oldest first.
    pub sets: Vec<FoundSet>,
    /// Manifest-named files that could not be read or are not ours: (name, why).
    pub invalid: Vec<(String, String)>,
    /// `.partial` files (an interrupted backup, or one running now).
    pub partials: Vec<String>,
    /// Files no manifest lists (never touched by stackpilot).
    pub unmanaged: Vec<String>,
}

/// Reads a manifest by set id.
pub fn read_manifest(dir: &Path, id: &SetId) -> Result<Manifest, ToolError> {
    let path = dir.join(id.manifest_name());
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ToolError::invalid(
                "backup_id",
                format!("no backup set `{id}` under {}", dir.display()),
            )
            .next_step("list_backups shows the sets that exist"))
        }
        Err(e) => return Err(io_error(&path, "read", &e)),
    };
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        ToolError::external(format!(
            "{} is not a stackpilot manifest: {e}",
            path.display()
        ))
    })?;
    manifest
        .validate(id)
        .map_err(|why| ToolError::external(format!("{}: {why}", path.display())))?;
    Ok(manifest)
}

/// Lists the project directory (missing: empty).
pub fn list(dir: &Path) -> Result<Listing, ToolError> {
    let mut listing = Listing::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
        Err(e) => return Err(io_error(dir, "read", &e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, "read", &e))?;
        if !entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            continue;
        }
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut listed = std::collections::BTreeSet::new();
    for name in &names {
        if !name.ends_with(MANIFEST_SUFFIX) {
            continue;
        }
        let Some(id) = SetId::from_manifest_name(name) else {
            listing.invalid.push((
                name.clone(),
                "the name is not <set id>.manifest.json".into(),
            ));
            continue;
        };
        match read_manifest(dir, &id) {
            Ok(manifest) => {
                for e in &manifest.entries {
                    listed.insert(e.file.clone());
                }
                listing.sets.push(FoundSet { id, manifest });
            }
            Err(e) => listing.invalid.push((name.clone(), e.message)),
        }
    }
    for name in names {
        if name.ends_with(MANIFEST_SUFFIX) || listed.contains(&name) {
            continue;
        }
        if name.ends_with(PARTIAL_SUFFIX) {
            listing.partials.push(name);
        } else {
            listing.unmanaged.push(name);
        }
    }
    listing.sets.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(listing)
}

/// Removes a set: its listed files first, then the manifest (so a crash in
/// between leaves a manifest naming missing files, which prune removes later,
/// never an unlisted file). Only regular files inside `dir` are removed.
pub fn remove_set(dir: &Path, set: &FoundSet) -> Result<u64, ToolError> {
    let mut freed = 0;
    for e in &set.manifest.entries {
        check_name("file", &e.file, 255)?;
        let p = dir.join(&e.file);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => {
                std::fs::remove_file(&p).map_err(|err| io_error(&p, "remove", &err))?;
                freed += m.len();
            }
            Ok(_) => {
                return Err(ToolError::external(format!(
                    "{} is not a regular file; left alone",
                    p.display()
                )))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_error(&p, "inspect", &err)),
        }
    }
    let m = dir.join(set.id.manifest_name());
    std::fs::remove_file(&m).map_err(|err| io_error(&m, "remove", &err))?;
    sync_dir(dir).map_err(|err| io_error(dir, "fsync", &err))?;
    Ok(freed)
}

/// Removes the listed files of a set that never got its manifest (a failed
/// or cancelled backup). Only names this run created.
pub fn remove_uncommitted(dir: &Path, files: &[String]) {
    for f in files {
        if check_name("file", f, 255).is_ok() {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    let _ = sync_dir(dir);
}

/// How a stored file is decoded when it is read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decode {
    /// As stored.
    Raw,
    Zstd,
    Gzip,
}

/// What reading a stored file found.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    /// Bytes on disk.
    pub bytes: u64,
    pub sha256: String,
    /// Bytes after decoding.
    pub decoded_bytes: u64,
    /// The first 4 decoded bytes (a mongodump archive starts with 6d e2 99 81).
    pub head: Vec<u8>,
    pub tar: Option<TarCounter>,
    /// The RDB check of a Redis dump (magic, version, EOF, CRC-64), when asked.
    pub rdb: Option<crate::domain::redis::RdbCheck>,
    /// The consumer stopped taking the stream after this many decoded bytes.
    pub consumer_stopped_at: Option<u64>,
}

struct HashReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> Read for HashReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Reads a stored file on a blocking thread: sha256 over the stored bytes,
/// decoding as asked, optionally walking the decoded stream as a tar, and
/// optionally sending the decoded bytes (bounded channel) to a consumer such
/// as an exec's stdin. Returns the receiver (when `send`) and the join handle.
pub fn spawn_reader(
    path: PathBuf,
    decode: Decode,
    count_tar: bool,
    send: bool,
    ct: tokio_util::sync::CancellationToken,
) -> (
    Option<mpsc::Receiver<Bytes>>,
    tokio::task::JoinHandle<Result<ReadStats, ToolError>>,
) {
    let (tx, rx) = if send {
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let handle =
        tokio::task::spawn_blocking(move || read_thread(&path, decode, count_tar, false, tx, &ct));
    (rx, handle)
}

/// Reads a Redis dump (zstd) without sending it anywhere: sha256 over the
/// stored bytes and the RDB format's own check over the decoded ones.
pub fn spawn_rdb_check(
    path: PathBuf,
    ct: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<Result<ReadStats, ToolError>> {
    tokio::task::spawn_blocking(move || read_thread(&path, Decode::Zstd, false, true, None, &ct))
}

fn read_thread(
    path: &Path,
    decode: Decode,
    count_tar: bool,
    check_rdb: bool,
    mut tx: Option<mpsc::Sender<Bytes>>,
    ct: &tokio_util::sync::CancellationToken,
) -> Result<ReadStats, ToolError> {
    let f = File::open(path).map_err(|e| io_error(path, "open", &e))?;
    let mut hr = HashReader {
        inner: std::io::BufReader::with_capacity(WRITE_BUFFER, f),
        hasher: Sha256::new(),
        bytes: 0,
    };
    let mut stats = ReadStats {
        tar: count_tar.then(TarCounter::default),
        rdb: check_rdb.then(crate::domain::redis::RdbCheck::default),
        ..Default::default()
    };
    {
        let mut reader: Box<dyn Read + '_> = match decode {
            Decode::Raw => Box::new(&mut hr),
            Decode::Zstd => Box::new(
                zstd::stream::read::Decoder::new(&mut hr)
                    .map_err(|e| io_error(path, "decompress", &e))?,
            ),
            Decode::Gzip => Box::new(flate2::read::MultiGzDecoder::new(&mut hr)),
        };
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            if ct.is_cancelled() {
                return Err(ToolError::new(
                    ErrorKind::Cancelled,
                    "cancelled by the caller",
                ));
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(ToolError::external(format!(
                        "{} does not decode: {e}",
                        path.display()
                    )))
                }
            };
            let chunk = &buf[..n];
            if stats.head.len() < 4 {
                let need = 4 - stats.head.len();
                stats.head.extend_from_slice(&chunk[..need.min(n)]);
            }
            stats.decoded_bytes += n as u64;
            if let Some(t) = stats.tar.as_mut() {
                t.feed(chunk);
            }
            if let Some(r) = stats.rdb.as_mut() {
                r.feed(chunk);
            }
            if let Some(t) = &tx {
                if t.blocking_send(Bytes::copy_from_slice(chunk)).is_err() {
                    // The consumer stopped reading (it exited, or was cancelled):
                    // keep reading, so the checksum and counts still cover the file.
                    stats.consumer_stopped_at = Some(stats.decoded_bytes);
                    tx = None;
                }
            }
        }
    }
    // Hash any bytes after the last frame the decoder did not need.
    let mut rest = Vec::new();
    hr.read_to_end(&mut rest)
        .map_err(|e| io_error(path, "read", &e))?;
    stats.bytes = hr.bytes;
    stats.sha256 = hex::encode(hr.hasher.finalize());
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(dir: &Path) -> Vec<u8> {
        let out = std::process::Command::new("tar")
            .arg("-C")
            .arg(dir)
            .args(["-cf", "-", "."])
            .output()
            .expect("tar");
        assert!(out.status.success());
        out.stdout
    }

    #[test]
    fn tar_counter_counts_a_real_tar_in_odd_chunks() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(d.path().join("a/b")).expect("dirs");
        for i in 0..7 {
            std::fs::write(d.path().join(format!("a/f{i}")), vec![b'x'; i * 700]).expect("file");
        }
        let long = "n".repeat(150);
        std::fs::write(d.path().join("a/b").join(&long), b"long name").expect("long");
        let bytes = tar_of(d.path());
        for chunk in [1usize, 7, 511, 512, 4096, 1 << 20] {
            let mut c = TarCounter::default();
            for part in bytes.chunks(chunk) {
                c.feed(part);
            }
            assert!(c.complete(), "chunk {chunk}: {:?}", c.error);
            assert_eq!(c.counts.files, 8, "chunk {chunk}");
            assert_eq!(c.counts.directories, 2);
            assert_eq!(
                c.counts.content_bytes,
                (0..7).map(|i| i * 700).sum::<usize>() as u64 + 9
            );
        }
        // A truncated or corrupted stream is not complete.
        let mut c = TarCounter::default();
        c.feed(&bytes[..bytes.len() / 2]);
        assert!(!c.complete());
        let mut bad = bytes.clone();
        bad[10] ^= 0xff;
        let mut c = TarCounter::default();
        c.feed(&bad);
        assert!(c.error.is_some());
    }

    #[tokio::test]
    async fn sink_writes_atomically_and_reads_back() {
        let d = tempfile::tempdir().expect("tempdir");
        let sink =
            FileSink::create(d.path(), "20261124T130501Z-x.tar.zst", true, false).expect("sink");
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for c in payload.chunks(32 * 1024) {
            assert!(sink.send(Bytes::copy_from_slice(c)).await);
            // Only the .partial exists while writing.
            assert!(!d.path().join("20261124T130501Z-x.tar.zst").exists());
        }
        let w = sink.finish().await.expect("finish");
        assert!(!w.path.with_extension("zst.partial").exists());
        assert_eq!(w.stream_bytes, payload.len() as u64);
        let on_disk = std::fs::read(&w.path).expect("read");
        assert_eq!(w.bytes, on_disk.len() as u64);
        assert_eq!(w.sha256, hex::encode(Sha256::digest(&on_disk)));
        assert_eq!(zstd::decode_all(&on_disk[..]).expect("zstd"), payload);
        let (rx, h) = spawn_reader(
            w.path.clone(),
            Decode::Zstd,
            false,
            true,
            tokio_util::sync::CancellationToken::new(),
        );
        let mut rx = rx.expect("rx");
        let mut back = Vec::new();
        while let Some(c) = rx.recv().await {
            back.extend_from_slice(&c);
        }
        let stats = h.await.expect("join").expect("read");
        assert_eq!(back, payload);
        assert_eq!(stats.sha256, w.sha256);
        assert_eq!(stats.bytes, w.bytes);
    }

    #[tokio::test]
    async fn aborted_and_dropped_sinks_leave_nothing() {
        let d = tempfile::tempdir().expect("tempdir");
        let sink =
            FileSink::create(d.path(), "20261124T130501Z-a.pgdump.zst", true, false).expect("sink");
        assert!(sink.send(Bytes::from_static(b"partial data")).await);
        assert!(sink.partial.exists());
        assert!(sink
            .abort()
            .await
            .is_some_and(|e| e.kind == ErrorKind::Cancelled));
        {
            let sink = FileSink::create(d.path(), "20261124T130501Z-b.pgdump.zst", false, false)
                .expect("sink");
            assert!(sink.send(Bytes::from_static(b"x")).await);
        }
        // The thread notices the drop; give it a moment.
        for _ in 0..100 {
            if std::fs::read_dir(d.path()).expect("dir").next().is_none() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(std::fs::read_dir(d.path()).expect("dir").count(), 0);
        // An existing backup is never overwritten.
        std::fs::write(d.path().join("20261124T130501Z-c.pgdump.zst"), b"old").expect("old");
        assert!(FileSink::create(d.path(), "20261124T130501Z-c.pgdump.zst", true, false).is_err());
        assert!(FileSink::create(d.path(), "../escape", true, false).is_err());
    }
}
