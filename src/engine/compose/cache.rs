//! The stack model, reused while the compose files and the `.env` are
//! unchanged. Resolving it runs `docker compose config` twice (about 120 ms
//! each here), which would otherwise dominate a health call that itself takes
//! a few milliseconds.
//!
//! The key is the compose files, the env file, the project and the profiles;
//! the fingerprint is each file's size and modification time. Files compose
//! reads on its own (`include`, `extends`, `env_file`) are not fingerprinted,
//! so an entry is also dropped after `MAX_AGE`.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::engine::compose::cli::Compose;

use crate::domain::error::ToolError;
use crate::domain::stack_model::StackModel;

/// The longest an unchanged entry is reused.
pub const MAX_AGE: Duration = Duration::from_secs(60);

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

struct Entry {
    fingerprint: Fingerprint,
    at: Instant,
    model: StackModel,
}

static CACHE: Mutex<Option<HashMap<String, Entry>>> = Mutex::new(None);

fn fingerprint(compose: &Compose) -> Option<Fingerprint> {
    compose
        .files
        .iter()
        .chain(compose.env_file.iter())
        .map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            Some((p.clone(), meta.len(), meta.modified().ok()))
        })
        .collect()
}

fn key(compose: &Compose, profiles: &[String]) -> String {
    format!(
        "{}\0{}\0{:?}\0{:?}\0{}",
        compose.dir.display(),
        compose.project,
        compose.files,
        compose.env_file,
        profiles.join(",")
    )
}

impl Compose {
    /// `model`, reused while its inputs are unchanged (see the module docs).
    pub async fn model_cached(&self, profiles: &[String]) -> Result<StackModel, ToolError> {
        let key = key(self, profiles);
        let before = fingerprint(self);
        if let (Some(fp), Ok(cache)) = (&before, CACHE.lock()) {
            if let Some(e) = cache.as_ref().and_then(|c| c.get(&key)) {
                if &e.fingerprint == fp && e.at.elapsed() < MAX_AGE {
                    return Ok(e.model.clone());
                }
            }
        }
        let model = self.model(profiles).await?;
        // Only cache when nothing changed while compose was reading.
        if let (Some(fp), Ok(mut cache)) = (before, CACHE.lock()) {
            if fingerprint(self).as_ref() == Some(&fp) {
                cache.get_or_insert_with(HashMap::new).insert(
                    key,
                    Entry {
                        fingerprint: fp,
                        at: Instant::now(),
                        model: model.clone(),
                    },
                );
            }
        }
        Ok(model)
    }
}
