//! kube_render: the stack (compose files, .env, x-stackpilot roles, one
//! profile) as Kubernetes objects, deterministic to the byte, returned and/or
//! written to a directory, optionally as a Helm chart. Read-only unless
//! `output_dir` is given (then it writes only into that directory, which
//! must be new, empty, or a previous render).
//!
//! Steps: check the inputs; `docker compose config` of the profile (no
//! daemon needed); the pure translation (domain::kubernetes::render); the YAML
//! (Secret values redacted in anything returned); the files through the
//! render_dir adapter. Every compose field that has no translation is in
//! `untranslatable` with the reason, never dropped silently.
use std::collections::BTreeMap;
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::adapters::render_dir::{self, DirError};
use crate::domain::error::ToolError;
use crate::domain::kubernetes::helm;
use crate::domain::kubernetes::render::{to_yaml, Expose, PublishedPort, Rendered, Untranslatable};
use crate::guard::{Call, Reply};
use crate::tools::def::{self, Hints, ToolDef};
use crate::tools::kubernetes::{namespace_of, output_dir, profiles_of, render_stack};

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The compose profile to render (one of the compose files' profiles). Default: the
    /// .env's COMPOSE_PROFILES.
    #[serde(default)]
    pub profile: Option<String>,
    /// The namespace written into the objects (a DNS-1123 label). Default: the stack's
    /// Kubernetes target namespace, else `default`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// How published host ports are reached: none (reported only; default), nodeport,
    /// loadbalancer, ingress.
    #[serde(default)]
    pub expose: Expose,
    /// Write the render into this directory (relative paths are taken from the stack
    /// directory). It must not exist, be empty, or hold a previous render, which is replaced.
    #[serde(default)]
    pub output_dir: Option<String>,
    /// Write a Helm chart (Chart.yaml, values.yaml with the .env-derived settings,
    /// templates/) instead of plain manifests. Needs output_dir.
    #[serde(default)]
    pub helm: bool,
    /// Return the manifests as one multi-document YAML (Secret values redacted).
    /// Default: true without output_dir, false with it.
    #[serde(default)]
    pub include_manifests: Option<bool>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ObjectSummary {
    pub kind: String,
    pub name: String,
    pub api_version: String,
    /// The compose service it comes from (empty for stack-wide objects).
    pub service: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FileSummary {
    /// Relative to output_dir.
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
    /// Holds secret values (written 0600).
    pub secret: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub project: String,
    /// The profiles rendered (empty: the .env's COMPOSE_PROFILES).
    pub profiles: Vec<String>,
    pub namespace: String,
    pub expose: Expose,
    /// In apply order.
    pub objects: Vec<ObjectSummary>,
    /// Objects per kind.
    pub counts: BTreeMap<String, usize>,
    /// Every compose feature that was not translated (or only in part), with the reason.
    pub untranslatable: Vec<Untranslatable>,
    /// Ports the compose file publishes on the host, and how they are reached on the cluster.
    pub published: Vec<PublishedPort>,
    /// sha256 of the manifests (Secret values redacted): equal renders have equal digests.
    pub digest: String,
    /// Every object as multi-document YAML, Secret values redacted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<String>,
    /// The directory written, when output_dir was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    pub files: Vec<FileSummary>,
    /// The files form a Helm chart.
    pub helm: bool,
}

pub static TOOL: ToolDef = ToolDef {
    name: "kube_render",
    title: "Render the stack for Kubernetes",
    description: "Translate the stack (compose files, .env, x-stackpilot roles, one profile) into \
        Kubernetes objects, deterministic to the byte: StatefulSets for services with data, \
        Deployments otherwise, Services, a ConfigMap and a Secret (values never shown), probes \
        from healthchecks, resources including nvidia.com/gpu. Lists every compose feature it \
        cannot translate, with the reason. Returns the manifests or writes them to output_dir, \
        optionally as a Helm chart. Use before kube_apply to review what will run.",
    hints: Hints {
        read_only: false,
        destructive: false,
        idempotent: true,
        open_world: false,
    },
    read_only_subset: true,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Output>,
    run: |call, args| Box::pin(run(call, args)),
};

/// The manifests as one YAML stream, Secret values redacted.
pub fn manifests(rendered: &Rendered) -> Result<String, ToolError> {
    let mut out = String::new();
    for o in &rendered.objects {
        out.push_str("---\n");
        out.push_str(&to_yaml(&o.redacted_body())?);
    }
    Ok(out)
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let namespace = namespace_of(&call, input.namespace.as_deref())?;
    let dir = input
        .output_dir
        .as_deref()
        .map(|d| output_dir(&call, d))
        .transpose()?;
    if input.helm && dir.is_none() {
        return Err(ToolError::invalid(
            "helm",
            "a Helm chart is written to a directory: give output_dir too",
        ));
    }
    if dir.is_some() && call.app.mode.read_only {
        return Err(ToolError::new(
            crate::domain::error::ErrorKind::NotAllowed,
            "output_dir writes files and this server runs with --read-only",
        )
        .next_step("call without output_dir to get the manifests in the answer"));
    }
    let profiles = profiles_of(&call, input.profile.as_deref()).await?;
    let r = render_stack(&call, profiles, namespace, input.expose).await?;
    let text = manifests(&r.rendered)?;
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    let mut files = Vec::new();
    if let Some(dir) = &dir {
        let list: Vec<(String, Vec<u8>, bool)> = if input.helm {
            helm::chart(&r.rendered, &r.model.project, env!("CARGO_PKG_VERSION"))?
                .into_iter()
                .map(|f| (f.path, f.content.into_bytes(), f.secret))
                .collect()
        } else {
            r.rendered
                .objects
                .iter()
                .map(|o| Ok((o.file_name(), to_yaml(&o.body)?.into_bytes(), o.is_secret())))
                .collect::<Result<_, ToolError>>()?
        };
        let written = render_dir::write(dir, &list).map_err(|e| match e {
            DirError::Foreign(p, entries) => ToolError::invalid(
                "output_dir",
                format!(
                    "{} holds files stackpilot did not write ({}): choose a new or empty directory",
                    p.display(),
                    crate::domain::redact::cap(&entries.join(", "), 300)
                ),
            ),
            DirError::NotADirectory(p) => {
                ToolError::invalid("output_dir", format!("{} is not a directory", p.display()))
            }
            DirError::Io(e) => ToolError::external(format!("writing the render failed: {e}")),
        })?;
        files = written
            .into_iter()
            .map(|w| FileSummary {
                path: w.path,
                bytes: w.bytes,
                sha256: w.sha256,
                secret: w.secret,
            })
            .collect();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for o in &r.rendered.objects {
        *counts.entry(o.kind.clone()).or_default() += 1;
    }
    let include = input.include_manifests.unwrap_or(dir.is_none());
    let out = Output {
        project: r.model.project.clone(),
        profiles: r.profiles,
        namespace: r.namespace,
        expose: input.expose,
        objects: r
            .rendered
            .objects
            .iter()
            .map(|o| ObjectSummary {
                kind: o.kind.clone(),
                name: o.name.clone(),
                api_version: o.api_version.clone(),
                service: o.service.clone(),
            })
            .collect(),
        counts,
        untranslatable: r.rendered.untranslatable.clone(),
        published: r.rendered.published.clone(),
        digest,
        manifests: include.then_some(text),
        output_dir: dir.map(|d| d.display().to_string()),
        files,
        helm: input.helm,
    };
    serde_json::to_value(out)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}
