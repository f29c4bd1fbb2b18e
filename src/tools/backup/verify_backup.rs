//! verify_backup: is a backup set whole and usable? Read-only.
//!
//! For every file of the set: present, the size and sha256 the manifest
//! recorded, and its content reads as what it claims to be, in one pass over
//! the file: a Postgres archive lists with `pg_restore --list` (in the
//! service's container, else in a helper from the image that wrote it) and
//! names every table the manifest counted; a volume tar walks to its end with
//! the recorded file and directory counts; a mongodump archive gunzips, has
//! the archive magic, and passes `mongorestore --dryRun` when the service runs;
//! a Redis dump has the RDB magic, its EOF opcode and a matching CRC-64.
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::backup_store::{self, Decode, ReadStats};
use crate::domain::backup_set::{check_name, ManifestEntry, Method, SetId};
use crate::domain::error::ToolError;
use crate::domain::stack_model::StackModel;
use crate::engine::process;
use crate::guard::{Call, Reply};
use crate::tools::backup::engines;
use crate::tools::def::{self, Hints, ToolDef};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The backup set id (`<UTC timestamp>[-<label>]`, as list_backups shows). Default: the newest set.
    #[serde(default)]
    pub backup_id: Option<String>,
    /// Only these services of the set. Default: every file of the set.
    #[serde(default)]
    pub services: Option<Vec<String>>,
}

/// What reading the content showed.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ContentCheck {
    pub ok: bool,
    /// How it was checked (`pg_restore --list in container ...`, `tar walk`, ...).
    pub checked_with: String,
    pub detail: String,
    /// Entries found: TOC entries, tar entries (files + directories).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Names the manifest counted that the content lacks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct FileCheck {
    pub service: String,
    pub method: Method,
    pub file: String,
    pub ok: bool,
    pub present: bool,
    pub bytes_expected: u64,
    pub bytes_actual: u64,
    pub sha256_ok: bool,
    pub content: ContentCheck,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub backup_id: String,
    pub directory: String,
    /// Every file checked is present, intact and readable.
    pub ok: bool,
    pub files: Vec<FileCheck>,
    pub checked_at: String,
}

pub static TOOL: ToolDef = ToolDef {
    name: "verify_backup",
    title: "Verify a backup set",
    description:
        "Check a backup set (default: the newest) without changing anything: every file present \
        with its recorded size and sha256, and readable as what it claims (pg_restore --list, a \
        tar walked to its end, a mongodump archive dry run, a Redis dump's RDB checksum). \
        Read-only. Use before restore, or to audit backups.",
    hints: Hints::READ_ONLY,
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Output>,
    run: |call, args| Box::pin(run(call, args)),
};

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let id = input
        .backup_id
        .as_deref()
        .map(|s| SetId::parse("backup_id", s))
        .transpose()?;
    if let Some(services) = &input.services {
        for (i, s) in services.iter().enumerate() {
            check_name(&format!("services[{i}]"), s, 128)?;
        }
    }
    let model = call.app.engine().model(&[]).await?;
    let dir = backup_store::project_dir(&model.settings.backup_root, &model.project)?;
    let id = match id {
        Some(id) => id,
        None => backup_store::list(&dir)?
            .sets
            .pop()
            .map(|s| s.id)
            .ok_or_else(|| {
                ToolError::external(format!("no backup set under {}", dir.display()))
                    .next_step("run backup first")
            })?,
    };
    let manifest = backup_store::read_manifest(&dir, &id)?;
    let entries = select_entries(&manifest.entries, input.services.as_deref())?;
    let mut files = Vec::new();
    for e in entries {
        files.push(check_file(&call, &model, &dir, e).await?);
    }
    let out = Output {
        backup_id: id.to_string(),
        directory: dir.display().to_string(),
        ok: files.iter().all(|f| f.ok),
        files,
        checked_at: crate::adapters::clock::now_rfc3339(),
    };
    serde_json::to_value(out)
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

/// The manifest's entries for the requested services (each must be in the set).
pub(crate) fn select_entries<'a>(
    entries: &'a [ManifestEntry],
    services: Option<&[String]>,
) -> Result<Vec<&'a ManifestEntry>, ToolError> {
    let Some(services) = services else {
        return Ok(entries.iter().collect());
    };
    let in_set: Vec<String> = {
        let mut v: Vec<String> = entries.iter().map(|e| e.service.clone()).collect();
        v.dedup();
        v
    };
    if services.is_empty() {
        return Err(
            ToolError::invalid("services", "must name at least one service").allowed(in_set),
        );
    }
    for (i, s) in services.iter().enumerate() {
        if !in_set.contains(s) {
            return Err(ToolError::invalid(
                format!("services[{i}]"),
                format!(
                    "service `{}` is not in this backup set",
                    crate::domain::redact::cap(s, 100)
                ),
            )
            .allowed(in_set));
        }
    }
    Ok(entries
        .iter()
        .filter(|e| services.contains(&e.service))
        .collect())
}

async fn check_file(
    call: &Call,
    model: &StackModel,
    dir: &std::path::Path,
    e: &ManifestEntry,
) -> Result<FileCheck, ToolError> {
    let path = dir.join(&e.file);
    let mut check = FileCheck {
        service: e.service.clone(),
        method: e.method,
        file: e.file.clone(),
        ok: false,
        present: false,
        bytes_expected: e.bytes,
        bytes_actual: 0,
        sha256_ok: false,
        content: ContentCheck {
            ok: false,
            checked_with: "none".into(),
            detail: String::new(),
            entries: None,
            missing: Vec::new(),
        },
    };
    match std::fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {
            check.present = true;
            check.bytes_actual = m.len();
        }
        _ => {
            check.content.detail = "the file is missing".into();
            return Ok(check);
        }
    }
    let (stats, content) = match e.method {
        Method::PgDump => check_pg(call, model, &path, e).await?,
        Method::Volume => check_tar(call, &path, e).await?,
        Method::Mongodump => check_mongo(call, &path, e).await?,
        Method::Redis => check_rdb(call, &path).await?,
    };
    check.sha256_ok = stats.sha256 == e.sha256 && stats.bytes == e.bytes;
    check.content = content;
    check.ok = check.present && check.sha256_ok && check.content.ok;
    Ok(check)
}

async fn read_only_pass(
    call: &Call,
    path: &std::path::Path,
    decode: Decode,
    count_tar: bool,
) -> Result<Result<ReadStats, ToolError>, ToolError> {
    let (_, h) = backup_store::spawn_reader(
        path.to_path_buf(),
        decode,
        count_tar,
        false,
        call.ct.clone(),
    );
    h.await
        .map_err(|e| ToolError::internal(format!("backup reader thread: {e}")))
}

/// A stats value for a file that could not be decoded (sha256 still taken).
async fn sha_only(call: &Call, path: &std::path::Path) -> Result<ReadStats, ToolError> {
    read_only_pass(call, path, Decode::Raw, false).await?
}

async fn check_tar(
    call: &Call,
    path: &std::path::Path,
    e: &ManifestEntry,
) -> Result<(ReadStats, ContentCheck), ToolError> {
    let stats = match read_only_pass(call, path, Decode::Zstd, true).await? {
        Ok(s) => s,
        Err(err) => {
            return Ok((
                sha_only(call, path).await?,
                bad("zstd + tar walk", err.message),
            ))
        }
    };
    let tar = stats.tar.clone().unwrap_or_default();
    let mut missing = Vec::new();
    for (k, n) in [
        ("files", tar.counts.files),
        ("directories", tar.counts.directories),
    ] {
        if let Some(expected) = e.counts.get(k) {
            if *expected != n {
                missing.push(format!("{k}: {expected} recorded, {n} in the archive"));
            }
        }
    }
    let ok = tar.complete() && missing.is_empty();
    let detail = match &tar.error {
        Some(err) => err.clone(),
        None if !tar.complete() => "the tar ends without its end-of-archive marker".into(),
        None => format!(
            "{} files, {} directories, {} bytes of content",
            tar.counts.files, tar.counts.directories, tar.counts.content_bytes
        ),
    };
    Ok((
        stats,
        ContentCheck {
            ok,
            checked_with: "zstd decode + tar walk (stackpilot)".into(),
            detail,
            entries: Some(tar.counts.files + tar.counts.directories + tar.counts.other),
            missing,
        },
    ))
}

/// A Redis dump decodes and passes the RDB format's own check: the `REDIS`
/// magic and version, the EOF opcode, and the CRC-64 Redis wrote after it.
async fn check_rdb(
    call: &Call,
    path: &std::path::Path,
) -> Result<(ReadStats, ContentCheck), ToolError> {
    let with = "zstd decode + RDB magic, EOF opcode and CRC-64 (stackpilot)";
    let stats = match backup_store::spawn_rdb_check(path.to_path_buf(), call.ct.clone())
        .await
        .map_err(|e| ToolError::internal(format!("backup reader thread: {e}")))?
    {
        Ok(s) => s,
        Err(err) => return Ok((sha_only(call, path).await?, bad(with, err.message))),
    };
    let verdict = stats.rdb.clone().unwrap_or_default().finish();
    Ok((
        stats,
        ContentCheck {
            ok: verdict.ok,
            checked_with: with.into(),
            detail: verdict.detail,
            entries: None,
            missing: Vec::new(),
        },
    ))
}

fn bad(with: &str, detail: String) -> ContentCheck {
    ContentCheck {
        ok: false,
        checked_with: with.into(),
        detail,
        entries: None,
        missing: Vec::new(),
    }
}

async fn check_pg(
    call: &Call,
    model: &StackModel,
    path: &std::path::Path,
    e: &ManifestEntry,
) -> Result<(ReadStats, ContentCheck), ToolError> {
    let engine = call.app.engine();
    let cmd = vec!["pg_restore".to_string(), "--list".to_string()];
    let (process, with) = match crate::engine::running_instance(engine, &e.service).await {
        Ok(c) => (
            engine.exec(&c.id, cmd, Vec::new(), true).await?,
            format!("pg_restore --list in container {}", c.name),
        ),
        Err(_) => {
            // The service is down: a helper from the image that wrote the dump.
            let (p, image) =
                engines::start_helper(engine, model, Some(&e.image), cmd, None, true).await?;
            (
                p,
                format!("pg_restore --list in a helper container from {image}"),
            )
        }
    };
    let (stats, f) =
        engines::feed_process(process, path.to_path_buf(), Decode::Zstd, false, &call.ct).await?;
    let stats = match stats {
        Ok(s) => s,
        Err(err) => return Ok((sha_only(call, path).await?, bad(&with, err.message))),
    };
    if !f.ok() {
        let err = process::failed("pg_restore --list", &f);
        return Ok((stats, bad(&with, err.message)));
    }
    let (entries, tables) = engines::parse_toc(&String::from_utf8_lossy(&f.stdout));
    let missing: Vec<String> = e
        .counts
        .keys()
        .filter(|t| !tables.contains(t))
        .cloned()
        .collect();
    let ok = missing.is_empty() && entries > 0;
    Ok((
        stats,
        ContentCheck {
            ok,
            checked_with: with,
            detail: format!(
                "{entries} TOC entries, table data for {} table(s)",
                tables.len()
            ),
            entries: Some(entries as u64),
            missing,
        },
    ))
}

async fn check_mongo(
    call: &Call,
    path: &std::path::Path,
    e: &ManifestEntry,
) -> Result<(ReadStats, ContentCheck), ToolError> {
    let engine = call.app.engine();
    let running = crate::engine::running_instance(engine, &e.service)
        .await
        .ok();
    let Some(c) = running else {
        let stats = match read_only_pass(call, path, Decode::Gzip, false).await? {
            Ok(s) => s,
            Err(err) => return Ok((sha_only(call, path).await?, bad("gunzip", err.message))),
        };
        let ok = stats.head == engines::MONGO_ARCHIVE_MAGIC;
        let detail = if ok {
            format!(
                "{} bytes of archive; mongorestore --dryRun skipped: service `{}` is not running",
                stats.decoded_bytes, e.service
            )
        } else {
            "the decompressed stream does not start with the mongodump archive magic".into()
        };
        return Ok((
            stats,
            ContentCheck {
                ok,
                checked_with: "gunzip + archive magic (stackpilot)".into(),
                detail,
                entries: None,
                missing: Vec::new(),
            },
        ));
    };
    let env = engine.environment(&c.id).await?;
    let process = engine
        .exec(
            &c.id,
            engines::mongorestore_dry_run_cmd(&env),
            Vec::new(),
            true,
        )
        .await?;
    let (stats, f) =
        engines::feed_process(process, path.to_path_buf(), Decode::Gzip, false, &call.ct).await?;
    let with = format!(
        "gunzip + archive magic (stackpilot), mongorestore --dryRun in container {}",
        c.name
    );
    let stats = match stats {
        Ok(s) => s,
        Err(err) => return Ok((sha_only(call, path).await?, bad(&with, err.message))),
    };
    if stats.head != engines::MONGO_ARCHIVE_MAGIC {
        return Ok((
            stats,
            bad(
                &with,
                "the decompressed stream does not start with the mongodump archive magic".into(),
            ),
        ));
    }
    if !f.ok() {
        let err = process::failed("mongorestore --dryRun", &f);
        return Ok((stats, bad(&with, err.message)));
    }
    Ok((
        stats.clone(),
        ContentCheck {
            ok: true,
            checked_with: with,
            detail: format!("{} bytes of archive read", stats.decoded_bytes),
            entries: None,
            missing: Vec::new(),
        },
    ))
}
