//! Opens a stack directory at startup, cheaply (no compose run): the
//! absolute path, the compose files in compose's lookup order, and the
//! project name by compose's precedence (domain::stack::project_name), which
//! needs the `.env` and the top-level `name:` of each compose file.
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::adapters::env_file;
use crate::domain::env::EnvFile;
use crate::domain::stack::{
    project_name, NameInputs, Stack, COMPOSE_FILE_NAMES as FILE_NAMES,
    COMPOSE_OVERRIDE_NAMES as OVERRIDE_NAMES,
};

pub fn open(dir: &Path, state_dir: Option<&Path>) -> std::io::Result<Stack> {
    let dir = std::fs::canonicalize(dir).map_err(|e| {
        std::io::Error::new(e.kind(), format!("stack directory {}: {e}", dir.display()))
    })?;
    let env = env_file::load(&dir.join(".env"))?;
    let files = compose_files(&dir, &env);
    let file_names: Vec<String> = files.iter().filter_map(|f| top_level_name(f)).collect();
    let process_env = std::env::var("COMPOSE_PROJECT_NAME").ok();
    let dotenv = env.get("COMPOSE_PROJECT_NAME");
    let dir_name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Compose interpolates with its own environment first, then the .env.
    let lookup = |k: &str| std::env::var(k).ok().or_else(|| env.get(k));
    let (project, project_source) = project_name(
        &NameInputs {
            environment: process_env.as_deref(),
            dotenv: dotenv.as_deref(),
            file_names: &file_names,
            dir_name: &dir_name,
        },
        &lookup,
    );
    let id =
        hex::encode(Sha256::digest(format!("{}\0{}", dir.display(), project)))[..16].to_string();
    let state_dir = state_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join(".stackpilot"));
    let coord_dir = coord_dir(&dir, &id);
    Ok(Stack {
        dir,
        state_dir,
        coord_dir,
        files,
        project,
        project_source,
        id,
    })
}

/// Where processes operating the stack coordinate: the stack's own
/// `.stackpilot` directory, the same for every process whatever its
/// `--state-dir`; when the stack directory cannot be written (mounted read
/// only), `$XDG_RUNTIME_DIR/stackpilot/<stack id>` (else the temp dir's).
fn coord_dir(dir: &Path, id: &str) -> PathBuf {
    let own = dir.join(".stackpilot");
    if std::fs::create_dir_all(&own).is_ok() && writable(&own) {
        return own;
    }
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    base.join(format!("stackpilot-{}", users_id())).join(id)
}

fn writable(dir: &Path) -> bool {
    tempfile::Builder::new()
        .prefix(".stackpilot-probe-")
        .tempfile_in(dir)
        .is_ok()
}

#[cfg(unix)]
fn users_id() -> u32 {
    nix::unistd::getuid().as_raw()
}

#[cfg(not(unix))]
fn users_id() -> u32 {
    0
}

/// The stack's compose files as written (before compose interpolates them):
/// (name relative to the stack, parsed YAML). What init_env reads the
/// `${VAR}` references from; a file that cannot be read or parsed is an error
/// naming it.
pub fn compose_documents(stack: &Stack) -> std::io::Result<Vec<(String, serde_json::Value)>> {
    stack
        .files
        .iter()
        .map(|path| {
            let name = path
                .strip_prefix(&stack.dir)
                .unwrap_or(path)
                .display()
                .to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| std::io::Error::new(e.kind(), format!("compose file {name}: {e}")))?;
            let doc: serde_json::Value = serde_norway::from_str(&text).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("compose file {name} is not valid YAML: {e}"),
                )
            })?;
            Ok((name, doc))
        })
        .collect()
}

/// COMPOSE_FILE from the .env (paths relative to the stack), else the first
/// of compose's file names that exists, plus an override file.
fn compose_files(dir: &Path, env: &EnvFile) -> Vec<PathBuf> {
    if let Some(list) = env.get("COMPOSE_FILE") {
        let separator = env
            .get("COMPOSE_PATH_SEPARATOR")
            .and_then(|s| s.chars().next())
            .unwrap_or(if cfg!(windows) { ';' } else { ':' });
        return list
            .split(separator)
            .filter(|s| !s.is_empty())
            .map(|f| dir.join(f))
            .collect();
    }
    let Some(main) = FILE_NAMES.iter().map(|n| dir.join(n)).find(|p| p.is_file()) else {
        return Vec::new();
    };
    let mut files = vec![main];
    files.extend(
        OVERRIDE_NAMES
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.is_file()),
    );
    files
}

/// The raw top-level `name:` of a compose file, when it has one. A file that
/// cannot be read or parsed has none here; compose reports it on its first run.
fn top_level_name(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_norway::from_str(&text).ok()?;
    match doc.get("name")? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The Kubernetes target the compose files' top-level `x-stackpilot` block
/// declares (`target`, `kubernetes: {context, namespace}`), read raw: these
/// fields take literal values. Later files override earlier ones, as compose
/// merges them.
pub fn declared_target(stack: &Stack) -> crate::domain::kubernetes::target::DeclaredTarget {
    use crate::domain::kubernetes::target::{declared_target, DeclaredTarget};
    let mut out = DeclaredTarget::default();
    for f in &stack.files {
        let Some(doc) = std::fs::read_to_string(f)
            .ok()
            .and_then(|t| serde_norway::from_str::<serde_json::Value>(&t).ok())
        else {
            continue;
        };
        let d = declared_target(doc.get("x-stackpilot"));
        out.target = d.target.or(out.target);
        out.context = d.context.or(out.context);
        out.namespace = d.namespace.or(out.namespace);
    }
    out
}
