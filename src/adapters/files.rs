//! Files replaced whole: written to a temporary file in the same directory,
//! fsynced, and renamed over the target, so a reader sees the old file or the
//! new one, never half of one.
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically. `mode`: the new file's Unix mode;
/// None keeps the permissions of the file it replaces (new files get the
/// temporary file's 0600).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".stackpilot-")
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    match mode {
        #[cfg(unix)]
        Some(mode) => {
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        Some(_) => {}
        None => {
            if let Ok(meta) = std::fs::metadata(path) {
                tmp.as_file().set_permissions(meta.permissions())?;
            }
        }
    }
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
