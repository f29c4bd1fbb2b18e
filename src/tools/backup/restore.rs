//! restore: replace a data service's data with a backup set's. Destructive,
//! so guarded: the plan names every database and volume it replaces.
//!
//! 1. Read the set's manifest; resolve the services (each must be in the set
//!    and in the stack, its container running where an exec is needed).
//! 2. Plan; the guard asks (or returns a token); declined: nothing changes.
//! 3. Check every file's sha256 against the manifest (a damaged backup never
//!    replaces data), then take a safety backup of the current data
//!    (label `pre-restore`).
//! 4. Restore: `pg_restore --clean --if-exists --single-transaction` and
//!    `mongorestore --drop --archive --gzip` with the archive streamed into the
//!    exec's stdin; a Redis dump streamed into the data directory and put in
//!    place of the dump file (or as the AOF's base), then the server restarted
//!    to load it; a volume's contents replaced by a helper container with the
//!    containers using it stopped (and started again afterwards).
//! 5. Count again and compare with the counts the manifest recorded.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::backup_store::{self, Decode};
use crate::domain::backup_set::{check_name, Label, Manifest, ManifestEntry, Method, SetId};
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::instance::Instance;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::stack_model::{ServiceModel, StackModel};
use crate::engine::process::{self, Stdout};
use crate::engine::Engine;
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Progress, Reply};
use crate::tools::backup::backup::{self, round3};
use crate::tools::backup::engines::{self as engines, CountMismatch, PgConn};
use crate::tools::backup::verify_backup::select_entries;
use crate::tools::def::{self, Hints, ToolDef};

/// The label of the safety backup taken before a restore.
pub const SAFETY_LABEL: &str = "pre-restore";

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The backup set to restore (`<UTC timestamp>[-<label>]`, as list_backups shows).
    pub backup_id: String,
    /// Only these services of the set. Default: every service in the set.
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// The token from a previous confirmation_required answer.
    #[serde(default)]
    pub confirm_token: Option<String>,
}

/// What happened to one service's data.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Restored {
    pub service: String,
    pub method: Method,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    pub file: String,
    /// Every count recorded in the manifest matches the count after the restore.
    pub counts_match: bool,
    /// Recorded at backup time.
    pub expected: BTreeMap<String, u64>,
    /// Observed after the restore.
    pub actual: BTreeMap<String, u64>,
    pub mismatches: Vec<CountMismatch>,
    /// Containers stopped while a volume was replaced, and started again.
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
    pub duration_s: f64,
    /// What else happened (a Redis server restarted to load its dump).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    pub backup_id: String,
    /// The backup of the data as it was before this restore (restore it to go back).
    pub safety_backup_id: String,
    pub safety_manifest_path: String,
    pub restored: Vec<Restored>,
    /// All services' counts match the manifest.
    pub counts_match: bool,
    pub duration_s: f64,
    pub plan: Plan,
    pub confirmed_by: ConfirmedBy,
}

pub static TOOL: ToolDef = ToolDef {
    name: "restore",
    title: "Restore a backup set",
    description:
        "Replace data services' data with a backup set's (backup_id from list_backups; default: \
        every service in the set). Checks every file's sha256 and takes a safety backup first \
        (label pre-restore), then restores (pg_restore, mongorestore, a Redis dump, or a \
        volume's contents) and compares the counts recorded at backup time. Destructive: runs \
        only when confirmed. Use to get lost or damaged data back.",
    hints: Hints {
        read_only: false,
        destructive: true,
        idempotent: false,
        open_world: false,
    },
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Guarded<Output>>,
    run: |call, args| Box::pin(run(call, args)),
};

/// One service's restore, resolved before the plan.
struct Target<'a> {
    /// Owned: a re-plan reads the manifest again.
    entry: ManifestEntry,
    svc: &'a ServiceModel,
    container: Option<Instance>,
    env: Vec<String>,
    cmd: Vec<String>,
    /// Containers that use the volume and run now (stopped meanwhile).
    users: Vec<String>,
    /// What the data holds now (rows per table, documents per collection,
    /// files): what the restore replaces, so it is in the plan and a change
    /// between the plan and the confirmation changes the digest.
    current: BTreeMap<String, u64>,
}

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let id = SetId::parse("backup_id", &input.backup_id)?;
    if let Some(services) = &input.services {
        for (i, s) in services.iter().enumerate() {
            check_name(&format!("services[{i}]"), s, 128)?;
        }
    }
    if input.confirm_token.as_ref().is_some_and(|t| t.len() > 1024) {
        return Err(ToolError::invalid(
            "confirm_token",
            "is not a token stackpilot issued",
        ));
    }
    let model = call.app.engine().model(&[]).await?;
    let dir = backup_store::project_dir(&model.settings.backup_root, &model.project)?;
    // A set that does not exist is refused before anything (even the lock file) is written.
    backup_store::read_manifest(&dir, &id)?;
    // Plan under the lock, so the state the person confirms is the state restored into.
    call.lock_stack().await?;
    let engine = call.app.engine_arc();
    // Planned (again after a person's answer: Gate::Replan) under the lock.
    let (targets, plan, confirmed_by) = loop {
        let manifest = backup_store::read_manifest(&dir, &id)?;
        let entries = select_entries(&manifest.entries, input.services.as_deref())?;
        let targets = resolve(&call, engine.as_ref(), &model, &entries).await?;
        let plan = plan(&call, &id, &manifest, &targets);
        match call.guard(&plan, input.confirm_token.as_deref()).await? {
            Gate::Proceed(by) => break (targets, plan, by),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };
    let started = Instant::now();
    let status = Arc::new(Mutex::new("checking the backup files".to_string()));
    // One monotonic stream for the heartbeat and the safety backup's bytes.
    let progress: Arc<dyn Progress> = backup::Monotonic::new(call.progress.clone());
    let _beat = heartbeat(progress.clone(), status.clone(), started);

    // A damaged backup never replaces data.
    for t in &targets {
        check_sha(&call, &dir, &t.entry).await?;
    }
    set(&status, "taking the safety backup");
    let services: Vec<String> = {
        let mut v: Vec<String> = targets.iter().map(|t| t.svc.name.clone()).collect();
        v.dedup();
        v
    };
    let label = Label::parse(SAFETY_LABEL)?;
    let targets_now = engines::resolve(&model, Some(&services))?;
    let safety = backup::backup_targets(
        &call,
        progress.clone(),
        &model,
        &targets_now,
        Some(&label),
        None,
    )
    .await
    .map_err(|mut e| {
        e.message = format!(
            "the safety backup failed, nothing was restored: {}",
            e.message
        );
        e
    })?;
    let mut restored = Vec::new();
    for t in &targets {
        set(&status, &format!("restoring {}", t.svc.name));
        let r = restore_one(&call, &engine, &model, &dir, t).await.map_err(|e| {
            let mut e = e.next_step(format!(
                "the data from before this restore is in safety backup {}: restore backup_id {} to go back",
                safety.id, safety.id
            ));
            if e.kind == ErrorKind::Cancelled {
                e.message = format!("{} (restore interrupted)", e.message);
            }
            e
        })?;
        restored.push(r);
    }
    if restored.iter().any(|r| !r.counts_match) {
        call.set_outcome("applied_counts_differ");
    }
    let out = Output {
        backup_id: id.to_string(),
        safety_backup_id: safety.id.to_string(),
        safety_manifest_path: safety.manifest_path.display().to_string(),
        counts_match: restored.iter().all(|r| r.counts_match),
        restored,
        duration_s: round3(started.elapsed().as_secs_f64()),
        plan,
        confirmed_by,
    };
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

fn set(status: &Mutex<String>, s: &str) {
    if let Ok(mut g) = status.lock() {
        *g = s.to_string();
    }
}

struct Beat(tokio::task::JoinHandle<()>);
impl Drop for Beat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A progress notification every second (what runs, for how long), so
/// clients waiting on a long restore do not time out.
fn heartbeat(progress: Arc<dyn Progress>, status: Arc<Mutex<String>>, started: Instant) -> Beat {
    Beat(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let what = status.lock().map(|s| s.clone()).unwrap_or_default();
            let secs = started.elapsed().as_secs();
            progress.report(secs as f64, None, Some(format!("{what} ({secs} s)")));
        }
    }))
}

async fn resolve<'a>(
    call: &Call,
    engine: &dyn Engine,
    model: &'a StackModel,
    entries: &[&ManifestEntry],
) -> Result<Vec<Target<'a>>, ToolError> {
    let mut out = Vec::new();
    for e in entries {
        let svc = model.services.get(&e.service).ok_or_else(|| {
            ToolError::external(format!(
                "service `{}` of the backup is not in the stack now",
                e.service
            ))
            .next_step("restore the other services with `services`, or add the service back to the compose file")
        })?;
        let mut t = Target {
            entry: (*e).clone(),
            svc,
            container: None,
            env: Vec::new(),
            cmd: Vec::new(),
            users: Vec::new(),
            current: BTreeMap::new(),
        };
        match e.method {
            Method::PgDump | Method::Mongodump | Method::Redis => {
                let c = crate::engine::running_instance(engine, &svc.name).await?;
                (t.env, t.cmd) = backup::credentials_of(call, engine, &c.id).await?;
                t.current = match e.method {
                    Method::PgDump => {
                        backup::pg_counts(call, engine, &c.id, &PgConn::from_env(&t.env)).await?
                    }
                    Method::Redis => {
                        let conn = engines::RedisConn::new(&t.env, &t.cmd);
                        engines::redis_counts(engine, &c.id, &conn, &call.ct).await?
                    }
                    _ => backup::mongo_counts(call, engine, &c.id, &t.env).await?,
                };
                t.container = Some(c);
            }
            Method::Volume => {
                let volume = e.volume.as_deref().unwrap_or_default();
                if !engine.volume_exists(volume).await? {
                    return Err(ToolError::external(format!(
                        "volume `{volume}` (backed up from service {}) does not exist in the engine",
                        svc.name
                    ))
                    .next_step("bring the stack up once (compose_up) so compose creates its volumes"));
                }
                t.users = engine
                    .volume_users(volume)
                    .await?
                    .into_iter()
                    .filter(|c| c.running())
                    .map(|c| c.name)
                    .collect();
                let image = (!e.image.is_empty()).then_some(e.image.as_str());
                t.current = volume_counts(call, engine, model, image, volume).await?;
            }
        }
        out.push(t);
    }
    Ok(out)
}

fn plan(call: &Call, id: &SetId, manifest: &Manifest, targets: &[Target<'_>]) -> Plan {
    let mut steps = Vec::new();
    for t in targets {
        let e = &t.entry;
        let total: u64 = e.counts.values().sum();
        let (target, detail, downtime) = match e.method {
            Method::PgDump => {
                let db = PgConn::from_env(&t.env).database;
                (
                    t.svc.name.clone(),
                    format!(
                        "replace database `{db}` of service {} with {} (pg_restore --clean --if-exists, one transaction): {} table(s), {total} row(s) at backup time",
                        t.svc.name,
                        e.file,
                        e.counts.len()
                    ),
                    false,
                )
            }
            Method::Mongodump => (
                t.svc.name.clone(),
                format!(
                    "replace the collections in {} on service {} (mongorestore --drop): {} collection(s), {total} document(s) at backup time",
                    e.file,
                    t.svc.name,
                    e.counts.len()
                ),
                false,
            ),
            Method::Redis => (
                t.svc.name.clone(),
                format!(
                    "replace every key of Redis service {} with {}: {total} key(s) in {} database(s) at backup time; the server restarts to load it",
                    t.svc.name,
                    e.file,
                    e.counts.len()
                ),
                true,
            ),
            Method::Volume => {
                let v = e.volume.clone().unwrap_or_default();
                (
                    format!("{}/{v}", t.svc.name),
                    format!(
                        "replace every file in volume {v} with {} ({} file(s) at backup time); stopped meanwhile: {}",
                        e.file,
                        e.counts.get("files").copied().unwrap_or(0),
                        if t.users.is_empty() { "none running".to_string() } else { t.users.join(", ") }
                    ),
                    !t.users.is_empty(),
                )
            }
        };
        steps.push(PlanStep {
            action: "replace".into(),
            target,
            detail,
            before: Some(serde_json::json!(t.current)),
            after: Some(Value::String(format!("{id}/{}", e.file))),
            destructive: true,
            cost: StepCost {
                data_loss: true,
                downtime,
                models_unloaded: false,
            },
        });
    }
    let mut services: Vec<&str> = targets.iter().map(|t| t.svc.name.as_str()).collect();
    services.dedup();
    steps.push(PlanStep {
        action: "create".into(),
        target: "safety backup".into(),
        detail: format!(
            "back up the current data of {} first (label {SAFETY_LABEL}), after checking every file's sha256",
            services.join(", ")
        ),
        before: None,
        after: None,
        destructive: false,
        cost: StepCost::default(),
    });
    Plan::new(
        "restore",
        &call.app.stack.id,
        format!(
            "restore: replace the data of {} from backup set {id} (taken {}); a safety backup of the current data is taken first",
            services.join(", "),
            manifest.created_at
        ),
        steps,
    )
}

async fn check_sha(call: &Call, dir: &std::path::Path, e: &ManifestEntry) -> Result<(), ToolError> {
    let (_, h) = backup_store::spawn_reader(
        dir.join(&e.file),
        Decode::Raw,
        false,
        false,
        call.ct.clone(),
    );
    let stats = h
        .await
        .map_err(|err| ToolError::internal(format!("backup reader thread: {err}")))??;
    if stats.sha256 != e.sha256 || stats.bytes != e.bytes {
        return Err(ToolError::external(format!(
            "{} does not match its manifest (sha256 {}, {} bytes; recorded {}, {} bytes): nothing was restored",
            e.file, stats.sha256, stats.bytes, e.sha256, e.bytes
        ))
        .next_step("restore an older set (list_backups), or run verify_backup on this one"));
    }
    Ok(())
}

async fn restore_one(
    call: &Call,
    engine: &Arc<dyn Engine>,
    model: &StackModel,
    dir: &std::path::Path,
    t: &Target<'_>,
) -> Result<Restored, ToolError> {
    let started = Instant::now();
    let e = &t.entry;
    let path = dir.join(&e.file);
    let mut stopped = Vec::new();
    let mut restarted = Vec::new();
    let mut note = None;
    let actual = match e.method {
        Method::PgDump => {
            let c = t
                .container
                .as_ref()
                .ok_or_else(|| ToolError::internal("no container"))?;
            let conn = PgConn::from_env(&t.env);
            let p = engine
                .exec(&c.id, conn.restore_cmd(), conn.exec_env(), true)
                .await?;
            let (stats, f) = engines::feed_process(p, path, Decode::Zstd, false, &call.ct).await?;
            stats?;
            if !f.ok() {
                return Err(process::failed("pg_restore", &f).next_step(
                    "pg_restore ran in one transaction: the database is as it was before this restore",
                ));
            }
            backup::pg_counts(call, engine.as_ref(), &c.id, &conn).await?
        }
        Method::Mongodump => {
            let c = t
                .container
                .as_ref()
                .ok_or_else(|| ToolError::internal("no container"))?;
            let p = engine
                .exec(&c.id, engines::mongorestore_cmd(&t.env), Vec::new(), true)
                .await?;
            let (stats, f) = engines::feed_process(p, path, Decode::Raw, false, &call.ct).await?;
            stats?;
            if !f.ok() {
                return Err(process::failed("mongorestore", &f));
            }
            backup::mongo_counts(call, engine.as_ref(), &c.id, &t.env).await?
        }
        Method::Redis => {
            let (counts, n) = restore_redis(call, engine.as_ref(), &path, t).await?;
            note = Some(n);
            counts
        }
        Method::Volume => {
            let volume = e.volume.clone().unwrap_or_default();
            let users = backup::stop_users(engine, &volume).await?;
            let result = replace_volume(call, engine.as_ref(), model, &path, &volume, e).await;
            let (s, r, restart_err) = users.restart().await;
            stopped = s;
            restarted = r;
            let counts = result?;
            if let Some(err) = restart_err {
                return Err(err);
            }
            counts
        }
    };
    let mismatches = engines::compare_counts(&e.counts, &actual);
    Ok(Restored {
        service: t.svc.name.clone(),
        method: e.method,
        volume: e.volume.clone(),
        file: e.file.clone(),
        counts_match: mismatches.is_empty(),
        expected: e.counts.clone(),
        actual,
        mismatches,
        stopped,
        restarted,
        duration_s: round3(started.elapsed().as_secs_f64()),
        note,
    })
}

/// How long a restarted Redis may take to load its dump and answer.
const REDIS_READY_LIMIT: Duration = Duration::from_secs(600);

/// Streams the dump into the Redis container's data directory, stops the
/// server from writing anything of its own on the way down (`save ""`, AOF
/// off, both for this process only), puts the dump in place of the dump file
/// (or as the AOF's base when AOF is on), restarts the container so the
/// server loads it, and waits until it answers with the data loaded. A Redis
/// without persistence loads the dump at that start; the file is removed
/// again afterwards so later starts stay empty, as configured.
async fn restore_redis(
    call: &Call,
    engine: &dyn Engine,
    path: &std::path::Path,
    t: &Target<'_>,
) -> Result<(BTreeMap<String, u64>, String), ToolError> {
    let c = t
        .container
        .as_ref()
        .ok_or_else(|| ToolError::internal("no container"))?;
    let conn = engines::RedisConn::new(&t.env, &t.cmd);
    let p = engines::redis_persistence(engine, &c.id, &conn, &call.ct).await?;
    let staged = format!("{}/.stackpilot-restore.rdb", p.dir);
    let writer = engine
        .exec(&c.id, engines::write_file_cmd(&staged), Vec::new(), true)
        .await?;
    let (stats, f) =
        engines::feed_process(writer, path.to_path_buf(), Decode::Zstd, false, &call.ct).await?;
    stats?;
    if !f.ok() {
        return Err(
            process::failed("writing the dump into the Redis container", &f).next_step(
                "nothing was replaced yet: check the service's data directory is writable",
            ),
        );
    }
    let mut quiet = vec!["CONFIG SET save \"\""];
    if p.appendonly {
        quiet.push("CONFIG SET appendonly no");
    }
    engines::redis_pipeline(engine, &c.id, &conn, &quiet, &call.ct).await?;
    let f = engines::capture(
        engine,
        &c.id,
        engines::redis_install_cmd(&p, &staged),
        &call.ct,
    )
    .await?;
    if !f.ok() {
        return Err(process::failed("putting the dump in place", &f));
    }
    engine.restart(&c.id, None).await?;
    let started = Instant::now();
    loop {
        let answer = engines::redis_pipeline(
            engine,
            &c.id,
            &conn,
            &["PING", "INFO persistence"],
            &call.ct,
        )
        .await;
        if let Ok(text) = &answer {
            let loading = crate::domain::redis::info_field(text, "loading");
            if text.trim_start().starts_with("PONG") && loading.as_deref() == Some("0") {
                break;
            }
        }
        if started.elapsed() > REDIS_READY_LIMIT {
            let why = answer.err().map(|e| e.message).unwrap_or_default();
            return Err(ToolError::external(format!(
                "Redis did not answer with its data loaded within {} s of the restart: {why}",
                REDIS_READY_LIMIT.as_secs()
            ))
            .next_step("read why in its log (health with logs_tail)"));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = call.ct.cancelled() => return Err(ToolError::new(ErrorKind::Cancelled, "restore cancelled while Redis loaded the dump")),
        }
    }
    let mut note = format!(
        "the container restarted and Redis loaded the dump at start ({})",
        p.describe()
    );
    if p.off() {
        let rm = vec!["rm".into(), "-f".into(), p.dump_path()];
        if engines::capture(engine, &c.id, rm, &call.ct)
            .await
            .is_ok_and(|f| f.ok())
        {
            note.push_str(&format!(
                "; {} was removed after loading, so later starts stay empty as configured",
                p.dump_path()
            ));
        }
    }
    let counts = engines::redis_counts(engine, &c.id, &conn, &call.ct).await?;
    Ok((counts, note))
}

/// Empties the volume and unpacks the backup into it (the service is
/// stopped by the caller), then counts what is there.
async fn replace_volume(
    call: &Call,
    engine: &dyn Engine,
    model: &StackModel,
    path: &std::path::Path,
    volume: &str,
    e: &ManifestEntry,
) -> Result<BTreeMap<String, u64>, ToolError> {
    let image = (!e.image.is_empty()).then_some(e.image.as_str());
    let (p, _) = engines::start_helper(
        engine,
        model,
        image,
        engines::volume_restore_cmd(),
        Some((volume.to_string(), false)),
        true,
    )
    .await?;
    let (stats, f) =
        engines::feed_process(p, path.to_path_buf(), Decode::Zstd, false, &call.ct).await?;
    stats?;
    if !f.ok() {
        return Err(process::failed("tar (volume restore)", &f));
    }
    volume_counts(call, engine, model, image, volume).await
}

/// Files and directories in a volume now, counted by a read-only helper.
async fn volume_counts(
    call: &Call,
    engine: &dyn Engine,
    model: &StackModel,
    image: Option<&str>,
    volume: &str,
) -> Result<BTreeMap<String, u64>, ToolError> {
    let (p, _) = engines::start_helper(
        engine,
        model,
        image,
        engines::volume_counts_cmd(),
        Some((volume.to_string(), true)),
        false,
    )
    .await?;
    let f = process::run(p, Stdout::Capture(64 * 1024), None, &call.ct).await?;
    if !f.ok() {
        return Err(process::failed("find (volume counts)", &f));
    }
    engines::parse_counts(&String::from_utf8_lossy(&f.stdout))
        .map_err(|why| ToolError::external(format!("volume counts: {why}")))
}
