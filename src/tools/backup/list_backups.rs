//! list_backups: the backup sets of this stack, newest first, paged. Read-only.
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::backup_store;
use crate::domain::backup_set::{check_name, Method, Policy};
use crate::domain::error::ToolError;
use crate::guard::{Call, Reply};
use crate::tools::def::{self, Hints, ToolDef};

pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Only sets that contain this service.
    #[serde(default)]
    pub service: Option<String>,
    /// Sets per page, 1 to 500. Default 50.
    #[serde(default)]
    pub limit: Option<u32>,
    /// Sets to skip (newest first). Default 0.
    #[serde(default)]
    pub offset: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FileSummary {
    pub service: String,
    pub method: Method,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    pub file: String,
    pub bytes: u64,
    pub sha256: String,
    /// The file exists with the recorded size (verify_backup checks the content).
    pub present: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct SetSummary {
    /// Pass as `backup_id` to verify_backup and restore.
    pub backup_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// RFC 3339 (UTC).
    pub created_at: String,
    pub services: Vec<String>,
    pub total_bytes: u64,
    /// Every listed file exists with its recorded size.
    pub complete: bool,
    pub files: Vec<FileSummary>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Problem {
    pub file: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub backup_root: String,
    pub directory: String,
    /// Sets matching the filter (all pages).
    pub total: u64,
    pub offset: u32,
    pub limit: u32,
    /// This page, newest first.
    pub sets: Vec<SetSummary>,
    /// The next page's offset, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u32>,
    /// The stack's retention defaults (prune_backups uses them when not given).
    pub retention: Policy,
    /// Manifest-named files that are not valid stackpilot manifests (never touched).
    pub invalid_manifests: Vec<Problem>,
    /// `.partial` files: a backup running now, or one interrupted by a crash.
    pub partial_files: Vec<String>,
    /// Files no manifest lists; stackpilot never touches them.
    pub unmanaged_files: u64,
}

pub static TOOL: ToolDef = ToolDef {
    name: "list_backups",
    title: "List backup sets",
    description:
        "List the stack's backup sets, newest first and paged (limit, offset): id, label, time, \
        services, files with sizes and sha256, and whether every file is present; also invalid \
        manifests, .partial and unlisted files (never touched) and the retention defaults. \
        Read-only. Use to pick a backup_id for verify_backup or restore.",
    hints: Hints::READ_ONLY,
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Output>,
    run: |call, args| Box::pin(run(call, args)),
};

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let limit = input.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ToolError::invalid(
            "limit",
            format!("{limit} is out of range 1..={MAX_LIMIT}"),
        ));
    }
    let offset = input.offset.unwrap_or(0);
    if let Some(s) = &input.service {
        check_name("service", s, 128)?;
    }
    let model = call.app.engine().model(&[]).await?;
    let dir = backup_store::project_dir(&model.settings.backup_root, &model.project)?;
    let listing = backup_store::list(&dir)?;
    let mut sets: Vec<&backup_store::FoundSet> = listing
        .sets
        .iter()
        .filter(|s| {
            input
                .service
                .as_ref()
                .is_none_or(|svc| s.manifest.entries.iter().any(|e| &e.service == svc))
        })
        .collect();
    sets.reverse();
    let total = sets.len() as u64;
    let page: Vec<SetSummary> = sets
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|s| summary(&dir, s))
        .collect();
    let next = u64::from(offset) + u64::from(limit);
    let out = Output {
        backup_root: dir
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        directory: dir.display().to_string(),
        total,
        offset,
        limit,
        sets: page,
        next_offset: (next < total).then_some(next as u32),
        retention: Policy {
            keep_last: model.settings.keep_last,
            keep_daily: model.settings.keep_daily,
            keep_weekly: model.settings.keep_weekly,
        },
        invalid_manifests: listing
            .invalid
            .into_iter()
            .map(|(file, reason)| Problem { file, reason })
            .collect(),
        partial_files: listing.partials,
        unmanaged_files: listing.unmanaged.len() as u64,
    };
    serde_json::to_value(out)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

fn summary(dir: &std::path::Path, s: &backup_store::FoundSet) -> SetSummary {
    let files: Vec<FileSummary> = s
        .manifest
        .entries
        .iter()
        .map(|e| FileSummary {
            service: e.service.clone(),
            method: e.method,
            volume: e.volume.clone(),
            file: e.file.clone(),
            bytes: e.bytes,
            sha256: e.sha256.clone(),
            present: std::fs::symlink_metadata(dir.join(&e.file))
                .is_ok_and(|m| m.is_file() && m.len() == e.bytes),
        })
        .collect();
    SetSummary {
        backup_id: s.id.to_string(),
        label: s.manifest.label.clone(),
        created_at: s.id.stamp().rfc3339(),
        services: s.manifest.services().into_iter().collect(),
        total_bytes: s.manifest.total_bytes(),
        complete: files.iter().all(|f| f.present),
        files,
    }
}
