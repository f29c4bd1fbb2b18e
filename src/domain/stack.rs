//! The stack: a directory with compose file(s) and a `.env`, plus where
//! stackpilot keeps its state (adapters::stack_dir opens one, cheaply, at
//! startup). The project name is taken the way Compose takes it, so
//! stackpilot and `docker compose` in that directory always mean the same
//! project.
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::domain::interpolate;

#[derive(Debug, Clone)]
pub struct Stack {
    /// Absolute stack directory.
    pub dir: PathBuf,
    /// Where the audit log and the confirmation key live (`--state-dir`).
    pub state_dir: PathBuf,
    /// Where every process operating this stack coordinates, whatever its
    /// `--state-dir`: the stack lock, the spent confirmation tokens, the
    /// processes a lock holder started. `<stack>/.stackpilot` when the stack
    /// directory is writable, else a runtime directory named by the stack id.
    pub coord_dir: PathBuf,
    /// The compose files, in the order compose reads them (COMPOSE_FILE from
    /// .env, else compose.yaml or its siblings plus an override file). Empty
    /// when the directory has none (tools that need one say so).
    pub files: Vec<PathBuf>,
    /// The compose project name, by Compose's own precedence.
    pub project: String,
    /// Where the project name came from.
    pub project_source: ProjectSource,
    /// Stable identifier: sha256(dir, project), first 16 hex digits.
    pub id: String,
}

/// Where Compose (and so stackpilot) takes the project name from, first match wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProjectSource {
    /// COMPOSE_PROJECT_NAME in stackpilot's own environment.
    Environment,
    /// COMPOSE_PROJECT_NAME in the stack's `.env`.
    DotEnv,
    /// The top-level `name:` of the compose files (interpolated).
    ComposeFile,
    /// The stack directory's name.
    Directory,
}

/// Compose file names, in compose's own lookup order.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];
/// Override files compose adds to the first of the above.
pub const COMPOSE_OVERRIDE_NAMES: [&str; 4] = [
    "compose.override.yaml",
    "compose.override.yml",
    "docker-compose.override.yaml",
    "docker-compose.override.yml",
];

/// Normalizes a name the way compose does: lowercase, [a-z0-9_-], leading alnum.
pub fn normalize_project_name(name: &str) -> String {
    let lowered: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    lowered
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// What the project name is decided from.
pub struct NameInputs<'a> {
    /// COMPOSE_PROJECT_NAME in the process environment.
    pub environment: Option<&'a str>,
    /// COMPOSE_PROJECT_NAME in the `.env`.
    pub dotenv: Option<&'a str>,
    /// The raw (uninterpolated) top-level `name:` of each compose file, in
    /// file order; compose merges the files, so the last one set wins.
    pub file_names: &'a [String],
    /// The stack directory's last path component.
    pub dir_name: &'a str,
}

/// The project name by Compose v2's precedence: `COMPOSE_PROJECT_NAME` (the
/// environment, then `.env`), then the compose file's `name:` interpolated
/// with `lookup` (the environment, then `.env`), then the directory's name.
/// Empty candidates fall through to the next, as in compose.
pub fn project_name(
    inputs: &NameInputs<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> (String, ProjectSource) {
    let candidates = [
        (
            inputs.environment.map(str::to_string),
            ProjectSource::Environment,
        ),
        (inputs.dotenv.map(str::to_string), ProjectSource::DotEnv),
        (
            inputs
                .file_names
                .last()
                .map(|raw| interpolate::interpolate(raw, lookup)),
            ProjectSource::ComposeFile,
        ),
    ];
    for (candidate, source) in candidates {
        if let Some(name) = candidate.map(|c| normalize_project_name(&c)) {
            if !name.is_empty() {
                return (name, source);
            }
        }
    }
    let dir = normalize_project_name(inputs.dir_name);
    (
        if dir.is_empty() { "stack".into() } else { dir },
        ProjectSource::Directory,
    )
}

impl Stack {
    pub fn env_path(&self) -> PathBuf {
        self.dir.join(".env")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_names_follow_compose_rules() {
        assert_eq!(normalize_project_name("My Stack.v2"), "mystackv2");
        assert_eq!(normalize_project_name("_x-Y"), "x-y");
    }

    #[test]
    fn project_name_precedence() {
        let none = |_: &str| None;
        let names = vec!["realname".to_string()];
        let inputs = |env, dotenv, files: &'static [String]| NameInputs {
            environment: env,
            dotenv,
            file_names: files,
            dir_name: "MyDir",
        };
        let files: &'static [String] = Box::leak(names.into_boxed_slice());
        assert_eq!(
            project_name(&inputs(None, None, files), &none),
            ("realname".into(), ProjectSource::ComposeFile)
        );
        assert_eq!(
            project_name(&inputs(None, Some("fromdotenv"), files), &none),
            ("fromdotenv".into(), ProjectSource::DotEnv)
        );
        assert_eq!(
            project_name(&inputs(Some("Env"), Some("fromdotenv"), files), &none),
            ("env".into(), ProjectSource::Environment)
        );
        assert_eq!(
            project_name(&inputs(None, Some(""), &[]), &none),
            ("mydir".into(), ProjectSource::Directory)
        );
        let interpolated: &'static [String] =
            Box::leak(vec!["${NAME:-fallback}".to_string()].into_boxed_slice());
        assert_eq!(
            project_name(&inputs(None, None, interpolated), &none).0,
            "fallback"
        );
        let lookup = |k: &str| (k == "NAME").then(|| "Set_By-Env".to_string());
        assert_eq!(
            project_name(&inputs(None, None, interpolated), &lookup).0,
            "set_by-env"
        );
    }
}
