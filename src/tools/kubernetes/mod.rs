//! The stack on Kubernetes: render (compose to objects, read-only) and
//! apply (server-side apply with a dry-run plan, guarded). Both start from
//! the same render of one profile, so what apply changes is exactly what
//! render shows.
pub mod kube_apply;
pub mod kube_render;

use std::path::PathBuf;

use crate::adapters::{env_file, store};
use crate::domain::error::ToolError;
use crate::domain::kubernetes::render::{self, Expose, Rendered};
use crate::domain::kubernetes::target::{check_namespace, DEFAULT_NAMESPACE};
use crate::domain::stack_model::{model_from_config, StackModel};
use crate::guard::Call;

/// A render of the stack for one profile (None: the .env's COMPOSE_PROFILES).
pub struct StackRender {
    pub profiles: Vec<String>,
    pub namespace: String,
    pub model: StackModel,
    pub rendered: Rendered,
}

/// The namespace an input names, else the stack's target's, else `default`.
pub fn namespace_of(call: &Call, input: Option<&str>) -> Result<String, ToolError> {
    match input {
        Some(n) => check_namespace("namespace", n),
        None => Ok(call
            .app
            .kube()
            .map(|k| k.namespace().to_string())
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())),
    }
}

/// Checks a profile name against the compose files' profiles.
pub async fn profiles_of(call: &Call, profile: Option<&str>) -> Result<Vec<String>, ToolError> {
    let Some(p) = profile else {
        return Ok(Vec::new());
    };
    if p.is_empty() || p.len() > 64 || p.contains(|c: char| c.is_control() || c == ',') {
        return Err(ToolError::invalid("profile", "not a compose profile name"));
    }
    let known = call.app.engine().compose_profiles().await?;
    if !known.iter().any(|k| k == p) {
        return Err(ToolError::invalid(
            "profile",
            format!("unknown profile `{}`", crate::domain::redact::cap(p, 64)),
        )
        .allowed(known));
    }
    Ok(vec![p.to_string()])
}

/// Runs `docker compose config` for the profiles and renders it.
pub async fn render_stack(
    call: &Call,
    profiles: Vec<String>,
    namespace: String,
    expose: Expose,
) -> Result<StackRender, ToolError> {
    let app = &call.app;
    let config = app.engine().compose_config(&profiles).await?;
    let model = model_from_config(&config, &config, &app.stack.dir, &profiles);
    let dotenv = env_file::load(&app.stack.env_path())
        .map_err(|e| ToolError::external(format!("reading the stack's .env: {e}")))?
        .values();
    let key = store::confirm_key(&app.stack.state_dir).map_err(|e| {
        ToolError::external(format!("reading the stack's key in the state dir: {e}"))
    })?;
    let rendered = render::render(&render::Input {
        project: &model.project,
        namespace: &namespace,
        config: &config,
        model: &model,
        dotenv: &dotenv,
        expose,
        digest_key: &key,
    })?;
    Ok(StackRender {
        profiles,
        namespace,
        model,
        rendered,
    })
}

/// Checks an output directory path: relative paths are taken from the stack
/// directory; it must not be the stack directory itself or hold it.
pub fn output_dir(call: &Call, raw: &str) -> Result<PathBuf, ToolError> {
    let bad = |why: &str| ToolError::invalid("output_dir", why.to_string());
    if raw.is_empty() || raw.len() > 4096 {
        return Err(bad("must be a path of 1 to 4096 bytes"));
    }
    if raw.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    let p = PathBuf::from(raw);
    if p.components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad("must not contain `..`"));
    }
    let abs = if p.is_absolute() {
        p
    } else {
        call.app.stack.dir.join(p)
    };
    if call.app.stack.dir.starts_with(&abs) {
        return Err(bad("must not be the stack directory or one above it (the render would mix with the compose files)"));
    }
    if abs.starts_with(&call.app.stack.state_dir) {
        return Err(bad("must not be inside stackpilot's state directory"));
    }
    Ok(abs)
}
