//! Credentials of a data service, taken from the container's own environment
//! the way its image takes them: `POSTGRES_USER` / `POSTGRES_PASSWORD` /
//! `POSTGRES_DB`, `MONGO_INITDB_ROOT_*`, `REDIS_PASSWORD`, `MYSQL_*` /
//! `MARIADB_*`, and each one's `_FILE` variant (a Docker secret). A `_FILE`
//! is read inside the container through the engine port's exec (`cat`), so
//! stackpilot needs no access to the host path; the value only ever becomes an
//! exec's environment (PGPASSWORD, REDISCLI_AUTH) or a client's argument, and
//! since its key names a password it is masked wherever container text is
//! shown. Errors name the variable and the path, never the content.
use tokio_util::sync::CancellationToken;

use crate::domain::error::ToolError;
use crate::engine::process::{self, Stdout};
use crate::engine::{env_value, Engine};

/// The variables whose `_FILE` variant stackpilot resolves (the official images' lists).
pub const FILE_KEYS: [&str; 14] = [
    "POSTGRES_USER",
    "POSTGRES_PASSWORD",
    "POSTGRES_DB",
    "MONGO_INITDB_ROOT_USERNAME",
    "MONGO_INITDB_ROOT_PASSWORD",
    "REDIS_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
    "MYSQL_USER",
    "MYSQL_PASSWORD",
    "MYSQL_DATABASE",
    "MARIADB_ROOT_PASSWORD",
    "MARIADB_USER",
    "MARIADB_PASSWORD",
    "MARIADB_DATABASE",
];

/// Longest secret file read.
const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The `_FILE` variables of `env` that name a file for an unset variable.
pub fn pending_files(env: &[String]) -> Vec<(&'static str, String)> {
    FILE_KEYS
        .iter()
        .filter(|k| env_value(env, k).is_none())
        .filter_map(|k| env_value(env, &format!("{k}_FILE")).map(|p| (*k, p)))
        .collect()
}

/// The environment with every pending `_FILE` resolved (`KEY=<file content>`
/// appended, trailing newlines removed as the images' entrypoints do).
pub async fn effective_env(
    engine: &dyn Engine,
    container: &str,
    mut env: Vec<String>,
    ct: &CancellationToken,
) -> Result<Vec<String>, ToolError> {
    for (key, path) in pending_files(&env) {
        let value = read_secret_file(engine, container, key, &path, ct).await?;
        env.push(format!("{key}={value}"));
    }
    Ok(env)
}

async fn read_secret_file(
    engine: &dyn Engine,
    container: &str,
    key: &str,
    path: &str,
    ct: &CancellationToken,
) -> Result<String, ToolError> {
    let shown = crate::domain::redact::cap(path, 200);
    if !path.starts_with('/') || path.contains('\0') || path.len() > 4096 {
        return Err(ToolError::external(format!(
            "{key}_FILE is `{shown}`, not an absolute path inside the container"
        ))
        .next_step(format!(
            "set {key}_FILE to the secret's path, such as /run/secrets/<name>"
        )));
    }
    let p = engine
        .exec(
            container,
            vec!["cat".into(), "--".into(), path.to_string()],
            Vec::new(),
            false,
        )
        .await?;
    let f = process::run(p, Stdout::Capture(MAX_SECRET_BYTES + 1), None, ct).await?;
    if !f.ok() {
        // cat's own message names the path and the reason, never the content.
        let why = f
            .stderr_tail
            .lines()
            .last()
            .unwrap_or("")
            .trim()
            .to_string();
        return Err(ToolError::external(format!(
            "the file {key}_FILE names ({shown}) could not be read inside the container: cat exited with code {}{}",
            f.exit_code,
            if why.is_empty() { String::new() } else { format!(" ({})", crate::domain::redact::cap(&why, 200)) }
        ))
        .next_step("mount the secret into the service (compose `secrets:`), or set the variable itself"));
    }
    if f.stdout.len() > MAX_SECRET_BYTES {
        return Err(ToolError::external(format!(
            "the file {key}_FILE names ({shown}) is larger than {MAX_SECRET_BYTES} bytes: not a credential"
        )));
    }
    let text = String::from_utf8(f.stdout).map_err(|_| {
        ToolError::external(format!(
            "the file {key}_FILE names ({shown}) is not UTF-8 text"
        ))
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unset_variables_read_their_files() {
        let env = vec![
            "POSTGRES_PASSWORD_FILE=/run/secrets/pg".to_string(),
            "POSTGRES_USER=app".to_string(),
            "POSTGRES_USER_FILE=/run/secrets/user".to_string(),
            "OTHER_FILE=/x".to_string(),
            "MONGO_INITDB_ROOT_PASSWORD_FILE=".to_string(),
        ];
        assert_eq!(
            pending_files(&env),
            [("POSTGRES_PASSWORD", "/run/secrets/pg".to_string())]
        );
    }
}
