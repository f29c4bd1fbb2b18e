//! The stack's state directory: the cross-process lock, the audit log, the
//! confirmation key and the record of spent confirmation tokens.
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::domain::error::{ErrorKind, ToolError};

/// Who holds the stack lock, written beside it so a waiter can say.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LockHolder {
    pub pid: u32,
    pub operation: String,
    pub since: String,
}

/// Held for the duration of one mutating operation. It is an OS file lock
/// (flock): the kernel drops it when the holder exits, so a crashed holder
/// never leaves the stack locked.
#[derive(Debug)]
pub struct StackLock {
    _file: File,
    holder_path: PathBuf,
    /// The previous holder, when it died holding the lock: its holder record
    /// was still there (a holder that ends normally removes it). What it
    /// started may still run (see `engine::Engine::reap_leftovers`).
    pub stale: Option<LockHolder>,
}

impl Drop for StackLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.holder_path);
    }
}

pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// Waits up to `timeout` for the stack lock, then fails with `busy` naming the
/// holder's operation.
pub async fn acquire_lock(
    state_dir: &Path,
    operation: &str,
    timeout: Duration,
) -> Result<StackLock, ToolError> {
    ensure_dir(state_dir)?;
    let path = state_dir.join("lock");
    let holder_path = state_dir.join("lock.holder");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => {
                let stale = std::fs::read(&holder_path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<LockHolder>(&b).ok())
                    .filter(|h| h.pid != std::process::id());
                let holder = LockHolder {
                    pid: std::process::id(),
                    operation: operation.to_string(),
                    since: crate::adapters::clock::now_rfc3339(),
                };
                let _ = std::fs::write(
                    &holder_path,
                    serde_json::to_vec(&holder).unwrap_or_default(),
                );
                return Ok(StackLock {
                    _file: file,
                    holder_path,
                    stale,
                });
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                if started.elapsed() >= timeout {
                    let holder = std::fs::read(&holder_path)
                        .ok()
                        .and_then(|b| serde_json::from_slice::<LockHolder>(&b).ok());
                    let who = holder
                        .map(|h| format!("{} (pid {}, since {})", h.operation, h.pid, h.since))
                        .unwrap_or_else(|| "another operation".into());
                    return Err(ToolError::new(
                        ErrorKind::Busy,
                        format!(
                            "busy: the stack is locked by {who}; waited {}s",
                            timeout.as_secs()
                        ),
                    )
                    .next_step("retry when that operation has finished"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e.into()),
        }
    }
}

/// Appends one JSON line to `<state>/audit.jsonl`. O_APPEND keeps lines from
/// concurrent writers whole.
pub fn append_audit(state_dir: &Path, line: &serde_json::Value) -> std::io::Result<()> {
    ensure_dir(state_dir)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state_dir.join("audit.jsonl"))?;
    let mut bytes = serde_json::to_vec(line)?;
    bytes.push(b'\n');
    f.write_all(&bytes)?;
    Ok(())
}

/// The HMAC key for confirmation tokens: STACKPILOT_CONFIRM_KEY if set, else a
/// random key created once in the state dir (mode 0600), so the CLI and every
/// server process of one stack agree.
pub fn confirm_key(state_dir: &Path) -> std::io::Result<Vec<u8>> {
    if let Ok(k) = std::env::var("STACKPILOT_CONFIRM_KEY") {
        if !k.is_empty() {
            return Ok(k.into_bytes());
        }
    }
    ensure_dir(state_dir)?;
    let path = state_dir.join("confirm.key");
    if let Ok(mut f) = File::open(&path) {
        let mut s = String::new();
        f.read_to_string(&mut s)?;
        if let Ok(k) = hex::decode(s.trim()) {
            if k.len() >= 32 {
                return Ok(k);
            }
        }
    }
    let key: [u8; 32] = rand::random();
    let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    tmp.write_all(hex::encode(key).as_bytes())?;
    tmp.as_file().sync_all()?;
    // Another process may have won the race: keep whichever key landed first.
    match tmp.persist_noclobber(&path) {
        Ok(_) => Ok(key.to_vec()),
        Err(_) => {
            let s = std::fs::read_to_string(&path)?;
            hex::decode(s.trim())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        }
    }
}

/// Records a token nonce as spent; returns false when it already was.
/// Called under the stack lock, so check-and-append is not racy.
pub fn spend_token(
    state_dir: &Path,
    nonce: &str,
    expires_unix: i64,
    now_unix: i64,
) -> std::io::Result<bool> {
    ensure_dir(state_dir)?;
    let path = state_dir.join("tokens-spent");
    let existing = std::fs::read_to_string(&path).unwrap_or_default();
    let mut live = Vec::new();
    for line in existing.lines() {
        let mut parts = line.split_whitespace();
        let (Some(n), Some(exp)) = (parts.next(), parts.next()) else {
            continue;
        };
        let exp: i64 = exp.parse().unwrap_or(0);
        if n == nonce {
            return Ok(false);
        }
        if exp >= now_unix {
            live.push(format!("{n} {exp}"));
        }
    }
    live.push(format!("{nonce} {expires_unix}"));
    let mut tmp = tempfile::NamedTempFile::new_in(state_dir)?;
    tmp.write_all((live.join("\n") + "\n").as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(&path).map_err(|e| e.error)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lock_is_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = acquire_lock(dir.path(), "first", Duration::from_secs(1))
            .await
            .expect("lock");
        let err = acquire_lock(dir.path(), "second", Duration::from_millis(200))
            .await
            .expect_err("busy");
        assert_eq!(err.kind, ErrorKind::Busy);
        assert!(err.message.contains("first"), "{}", err.message);
        drop(held);
        acquire_lock(dir.path(), "third", Duration::from_millis(200))
            .await
            .expect("relock");
    }

    #[test]
    fn tokens_spend_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(spend_token(dir.path(), "n1", 200, 100).expect("spend"));
        assert!(!spend_token(dir.path(), "n1", 200, 100).expect("respend"));
        assert!(spend_token(dir.path(), "n2", 200, 100).expect("spend2"));
        // Expired entries are pruned.
        assert!(spend_token(dir.path(), "n3", 400, 300).expect("spend3"));
        let text = std::fs::read_to_string(dir.path().join("tokens-spent")).expect("read");
        assert!(!text.contains("n1"));
    }

    #[test]
    fn key_is_created_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = confirm_key(dir.path()).expect("key");
        let b = confirm_key(dir.path()).expect("key");
        assert_eq!(a, b);
        assert_eq!(a.len(), 32);
    }
}
