//! What stackpilot saw of its own unfinished pulls: per Ollama and layer
//! digest, the bytes completed when the pull stopped (cancelled or failed),
//! kept in the state dir (`pull-parts.json`). Ollama keeps those partial
//! layers and resumes from them, but its stream never says how much it had:
//! the first progress line of a resumed layer comes 60 ms into the download
//! and already counts what came since (observed on 0.11.4). With this record
//! the next pull can say how many bytes it resumed, at least.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Layers remembered per Ollama, at most (the oldest digests go first).
const MAX_LAYERS: usize = 64;
const FILE: &str = "pull-parts.json";

type Record = BTreeMap<String, BTreeMap<String, u64>>;

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

fn load_all(state_dir: &Path) -> Record {
    std::fs::read(path(state_dir))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The partial layers recorded for the Ollama at `url`: digest -> bytes.
pub fn load(state_dir: &Path, url: &str) -> BTreeMap<String, u64> {
    load_all(state_dir).remove(url).unwrap_or_default()
}

/// Records `partial` (digest -> bytes completed, for layers left unfinished)
/// and forgets `finished` digests, for the Ollama at `url`. Best effort: the
/// record only improves a report, so a write that fails is logged, not raised.
pub fn update(state_dir: &Path, url: &str, partial: &BTreeMap<String, u64>, finished: &[String]) {
    let mut all = load_all(state_dir);
    let entry = all.entry(url.to_string()).or_default();
    for d in finished {
        entry.remove(d);
    }
    for (d, c) in partial {
        entry.insert(d.clone(), *c);
    }
    while entry.len() > MAX_LAYERS {
        let Some(first) = entry.keys().next().cloned() else {
            break;
        };
        entry.remove(&first);
    }
    all.retain(|_, layers| !layers.is_empty());
    let write = serde_json::to_vec_pretty(&all)
        .map_err(std::io::Error::other)
        .and_then(|bytes| {
            crate::adapters::files::write_atomic(&path(state_dir), &bytes, Some(0o600))
        });
    if let Err(e) = write {
        tracing::warn!(error = %e, "could not record the partial layers of a pull");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_partials_and_forgets_finished_layers() {
        let dir = tempfile::tempdir().expect("tmp");
        let url = "http://127.0.0.1:11434";
        assert!(load(dir.path(), url).is_empty());
        let partial = BTreeMap::from([("sha256:aa".to_string(), 40u64)]);
        update(dir.path(), url, &partial, &[]);
        assert_eq!(load(dir.path(), url), partial);
        assert!(load(dir.path(), "http://other:1").is_empty());
        update(
            dir.path(),
            url,
            &BTreeMap::new(),
            &["sha256:aa".to_string()],
        );
        assert!(load(dir.path(), url).is_empty());
        let many: BTreeMap<String, u64> = (0..100).map(|i| (format!("sha256:{i:03}"), i)).collect();
        update(dir.path(), url, &many, &[]);
        assert_eq!(load(dir.path(), url).len(), MAX_LAYERS);
    }
}
