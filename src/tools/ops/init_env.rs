//! init_env: fill the secrets the stack's .env is missing with strong random
//! values. Mutating, never destructive: an existing value is never replaced,
//! and no value is ever returned (read them in the .env).
//!
//! 1. Read the compose files as written (compose's own `config` would refuse
//!    a file whose `${VAR:?}` is unset, which is exactly when this tool is
//!    needed) and find the secret keys the stack needs (domain::secrets:
//!    `${VAR}` references and pass-through names whose names mark a secret,
//!    POSTGRES_PASSWORD for a Postgres service reading the .env).
//! 2. Under the stack lock, read the .env: keys with a value are kept; keys
//!    missing or empty are planned as `set` (the plan names keys and lengths,
//!    never values). Guard.
//! 3. Generate each value (seed 003's policy: upper, lower, digit and symbol;
//!    default 32 characters) with the thread's cryptographic generator and
//!    write the .env atomically (temp file, fsync, rename) with mode 0600,
//!    every other line kept as it was.
use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::adapters::{env_file, files, stack_dir};
use crate::domain::error::ToolError;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::redact;
use crate::domain::secrets::{self, Wanted};
use crate::domain::stack_model::Role;
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Reply};
use crate::tools::def::{self, Hints, ToolDef};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Length of each generated value, 8 to 128. Default 32.
    #[serde(default)]
    pub length: Option<u64>,
    /// Fill only these of the keys the stack needs. Default: every one that is missing.
    #[serde(default)]
    pub keys: Option<Vec<String>>,
    /// Show which keys would be set and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// A key and why the stack needs it. Never a value.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct KeyReport {
    pub key: String,
    /// Where the compose files need it.
    pub why: String,
    /// It was in the .env with an empty value (set now).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub was_empty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    /// The .env written (or that would be).
    pub env_file: String,
    pub plan: Plan,
    pub dry_run: bool,
    /// How the plan was allowed to run (absent on a dry run).
    pub confirmed_by: Option<ConfirmedBy>,
    /// Keys given a generated value (on a dry run: that would be). Values are never returned.
    pub keys_set: Vec<KeyReport>,
    /// Keys the stack needs that already had a value: left exactly as they were.
    pub kept: Vec<KeyReport>,
    /// Characters in each generated value.
    pub length: usize,
    /// The .env's mode after the call (`0600` once written), when it exists.
    pub file_mode: Option<String>,
    pub note: String,
}

pub static TOOL: ToolDef = ToolDef {
    name: "init_env",
    title: "Fill missing secrets in .env",
    description: "Give every secret the stack needs and its .env lacks a strong random value: the \
        keys its compose files reference (${VAR}, defaults included) or pass by name whose names \
        mark a secret (PASSWORD, SECRET, TOKEN, KEY, CREDENTIAL), plus POSTGRES_PASSWORD for a \
        Postgres service that reads the .env. Values meet the password policy (upper, lower, \
        digit, symbol; default 32 characters, `length` 8-128). An existing value is never \
        replaced; the .env is written atomically with mode 0600; values are never returned: the \
        output lists the keys set and the keys kept.",
    hints: Hints {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: false,
    },
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Guarded<Output>>,
    run: |call, args| Box::pin(run(call, args)),
};

const NOTE: &str = "Values are never returned or logged: they are only in the .env (mode 0600). \
    Services read them when they are next created (compose_up recreates those whose configuration changed).";

/// A service's role as the compose file writes it (label, x-stackpilot,
/// else the image), without compose: its `config` may refuse the file
/// until the secrets exist.
fn raw_roles(documents: &[(String, Value)]) -> BTreeMap<String, Role> {
    let mut roles = BTreeMap::new();
    for (_, doc) in documents {
        let Some(Value::Object(services)) = doc.get("services") else {
            continue;
        };
        for (name, svc) in services {
            let label = match svc.get("labels") {
                Some(Value::Object(m)) => m
                    .get("io.stackpilot.role")
                    .and_then(Value::as_str)
                    .map(str::to_string),
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .find_map(|l| l.strip_prefix("io.stackpilot.role="))
                    .map(str::to_string),
                _ => None,
            };
            let x = svc
                .pointer("/x-stackpilot/role")
                .and_then(Value::as_str)
                .map(str::to_string);
            let role = label.or(x).and_then(|r| Role::parse(&r)).or_else(|| {
                svc.get("image")
                    .and_then(Value::as_str)
                    .map(Role::from_image)
            });
            if let Some(r) = role {
                roles.insert(name.clone(), r);
            }
        }
    }
    roles
}

fn check_input(input: &Input, wanted: &[Wanted]) -> Result<usize, ToolError> {
    let length = input.length.unwrap_or(secrets::DEFAULT_LENGTH as u64);
    if !(secrets::MIN_LENGTH as u64..=secrets::MAX_LENGTH as u64).contains(&length) {
        return Err(ToolError::invalid(
            "length",
            format!(
                "{length} is out of range {}..={} (the policy needs at least {})",
                secrets::MIN_LENGTH,
                secrets::MAX_LENGTH,
                secrets::MIN_LENGTH
            ),
        ));
    }
    if let Some(keys) = &input.keys {
        if keys.is_empty() {
            return Err(ToolError::invalid(
                "keys",
                "is empty; leave it out to fill every missing secret",
            ));
        }
        for (i, k) in keys.iter().enumerate() {
            if !wanted.iter().any(|w| &w.key == k) {
                return Err(ToolError::invalid(
                    format!("keys[{i}]"),
                    format!(
                        "`{}` is not a secret the stack's compose files need",
                        redact::cap(k, 100)
                    ),
                )
                .allowed(wanted.iter().map(|w| w.key.clone())));
            }
        }
    }
    Ok(length as usize)
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    // Gate::Replan runs the whole call again with these arguments.
    let replan_args = args.clone();
    let input: Input = def::parse_args(args)?;
    let app = call.app.clone();
    let documents = stack_dir::compose_documents(&app.stack)?;
    if documents.is_empty() {
        return Err(
            ToolError::external(format!("no compose file in {}", app.stack.dir.display()))
                .next_step("point --stack at a directory with a compose file"),
        );
    }
    let wanted = secrets::wanted_keys(&documents, &raw_roles(&documents));
    let length = check_input(&input, &wanted)?;
    let wanted: Vec<Wanted> = match &input.keys {
        Some(keys) => wanted
            .into_iter()
            .filter(|w| keys.contains(&w.key))
            .collect(),
        None => wanted,
    };
    let path = app.stack.env_path();
    if !input.dry_run {
        // Read the .env under the lock: what is planned is what is written.
        call.lock_stack().await?;
    }
    let env = env_file::load(&path)?;
    let mut keys_set = Vec::new();
    let mut kept = Vec::new();
    for w in wanted {
        match env.get(&w.key) {
            Some(v) if !v.is_empty() => kept.push(KeyReport {
                key: w.key,
                why: w.why,
                was_empty: false,
            }),
            existing => keys_set.push(KeyReport {
                key: w.key,
                why: w.why,
                was_empty: existing.is_some(),
            }),
        }
    }
    let steps: Vec<PlanStep> = keys_set
        .iter()
        .map(|k| PlanStep {
            action: "set".into(),
            target: k.key.clone(),
            detail: format!(
                "{} a generated {length}-character value ({})",
                if k.was_empty {
                    "replace the empty value with"
                } else {
                    "add"
                },
                k.why
            ),
            before: None,
            after: Some(json!({ "generated_length": length })),
            destructive: false,
            cost: StepCost::default(),
        })
        .collect();
    let plan = Plan::new(
        TOOL.name,
        &app.stack.id,
        format!(
            "set {} missing secret(s) in .env ({} kept)",
            keys_set.len(),
            kept.len()
        ),
        steps,
    );
    let mut out = Output {
        env_file: path.display().to_string(),
        plan: plan.clone(),
        dry_run: input.dry_run,
        confirmed_by: None,
        keys_set,
        kept,
        length,
        file_mode: file_mode(&path),
        note: NOTE.to_string(),
    };
    if input.dry_run {
        call.set_outcome("dry_run");
        return done(out);
    }
    out.confirmed_by = Some(match call.guard(&plan, None).await? {
        Gate::Proceed(by) => by,
        Gate::Halt(reply) => return Ok(reply),
        // A person accepted while the stack lock was released: observe and
        // plan again under the lock; it runs only if the plan is the one
        // they accepted.
        Gate::Replan => return Box::pin(run(call.clone(), replan_args)).await,
    });
    if out.keys_set.is_empty() {
        call.set_outcome("no_changes");
        return done(out);
    }
    let mut env = env;
    let mut rng = rand::rng();
    for k in &out.keys_set {
        env.set(&k.key, &secrets::generate(length, &mut rng));
    }
    files::write_atomic(&path, env.render().as_bytes(), Some(0o600)).map_err(|e| {
        ToolError::external(format!("writing {} failed: {e}", path.display()))
            .next_step("check that the stack directory is writable; nothing was changed")
    })?;
    out.file_mode = file_mode(&path);
    done(out)
}

/// The file's permission bits as octal (`0600`), when it exists.
fn file_mode(path: &std::path::Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path)
            .ok()
            .map(|m| format!("{:04o}", m.permissions().mode() & 0o7777))
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(path).ok().map(|_| "n/a".to_string())
    }
}

fn done(out: Output) -> Result<Reply, ToolError> {
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_labels_blocks_or_images() {
        let doc = serde_json::json!({"services": {
            "a": {"image": "postgres:16"},
            "b": {"image": "x", "labels": ["io.stackpilot.role=postgres"]},
            "c": {"image": "x", "x-stackpilot": {"role": "mongodb"}},
            "d": {"build": "."}
        }});
        let r = raw_roles(&[("f".into(), doc)]);
        assert_eq!(r["a"], Role::Postgres);
        assert_eq!(r["b"], Role::Postgres);
        assert_eq!(r["c"], Role::Mongodb);
        assert!(!r.contains_key("d"));
    }

    #[test]
    fn bad_input_names_the_field() {
        let wanted = vec![Wanted {
            key: "DB_PASSWORD".into(),
            why: "x".into(),
        }];
        let field = |v: Value| {
            check_input(&def::parse_args(v).expect("parse"), &wanted)
                .err()
                .and_then(|e| e.field)
                .unwrap_or_default()
        };
        assert_eq!(field(json!({"length": 7})), "length");
        assert_eq!(field(json!({"length": 129})), "length");
        assert_eq!(field(json!({"keys": []})), "keys");
        assert_eq!(field(json!({"keys": ["DB_PASSWORD", "PATH"]})), "keys[1]");
        assert!(check_input(&def::parse_args(json!({"length": 8})).expect("p"), &wanted).is_ok());
    }
}
