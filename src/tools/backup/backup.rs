//! backup: a streamed, checksummed, atomic backup set of the stack's data
//! services. Mutating, never destructive (it only adds files).
//!
//! 1. Resolve the services (default: every data service) and their methods.
//! 2. Plan (one `create` step per file) and pass the guard (non-destructive).
//! 3. `backup_services`: preflight free space against the previous backup of
//!    the same services; for each service stream the dump through docker exec
//!    (or a helper container for volumes) into `<file>.partial`, zstd and
//!    sha256 on the fly, check the exit code, fsync and rename; then commit
//!    the set by writing its manifest. Any failure or cancellation removes
//!    this run's files and leaves earlier backups untouched.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::adapters::backup_store::{self, FileSink, Written};
use crate::domain::backup_set::{
    data_file_name, Label, Manifest, ManifestEntry, Method, SetId, Stamp, MANIFEST_FORMAT,
};
use crate::domain::error::{ErrorKind, ToolError};
use crate::domain::instance::Instance;
use crate::domain::plan::{Plan, PlanStep, StepCost};
use crate::domain::stack_model::{ServiceModel, StackModel};
use crate::engine::process::{self, Finished, Process, RunError, Stdout};
use crate::engine::Engine;
use crate::guard::token::{ConfirmedBy, Guarded};
use crate::guard::{Call, Gate, Progress, Reply};
use crate::tools::backup::engines::{self as engines, PgConn};
use crate::tools::def::{self, Hints, ToolDef};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// Services to back up. Default: every data service (role postgres, mongodb, redis or
    /// volume, or an x-stackpilot `backup` policy other than none).
    #[serde(default)]
    pub services: Option<Vec<String>>,
    /// Added to the set id (`<timestamp>-<label>`): letters, digits, `-`, `_`; at most 64.
    #[serde(default)]
    pub label: Option<String>,
    /// Volume backups: stop the containers using the volume while it is copied (restarted
    /// afterwards, also on failure; containers already stopped stay stopped). Default: the
    /// service's x-stackpilot `stop_during_backup`.
    #[serde(default)]
    pub stop_during_backup: Option<bool>,
}

/// A committed backup set.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Output {
    /// The set id (`<UTC timestamp>[-<label>]`): what verify_backup and restore take.
    pub backup_id: String,
    /// `<backup root>/<project>`.
    pub directory: String,
    /// The manifest's path (the set's commit point).
    pub manifest_path: String,
    /// One entry per file: service, method, sizes, sha256, tool versions, counts.
    pub files: Vec<ManifestEntry>,
    pub total_bytes: u64,
    pub duration_s: f64,
    /// Containers stopped for a consistent volume copy.
    pub stopped: Vec<String>,
    /// Of those, the ones started again (all of them unless a start failed).
    pub restarted: Vec<String>,
    pub plan: Plan,
    pub confirmed_by: ConfirmedBy,
}

pub static TOOL: ToolDef = ToolDef {
    name: "backup",
    title: "Back up data services",
    description:
        "Back up the stack's data services (Postgres with pg_dump, MongoDB with mongodump, Redis \
        with BGSAVE and its dump file, named volumes as tar) into one checksummed backup set \
        committed by a manifest; a failed or cancelled run leaves nothing behind. Reports \
        progress in bytes. Use before a risky change or on a schedule; list_backups shows the \
        sets, verify_backup checks one, restore puts one back.",
    hints: Hints {
        read_only: false,
        destructive: false,
        idempotent: false,
        open_world: false,
    },
    read_only_subset: false,
    input_schema: def::input_schema::<Input>,
    output_schema: def::output_schema::<Guarded<Output>>,
    run: |call, args| Box::pin(run(call, args)),
};

async fn run(call: Arc<Call>, args: Value) -> Result<Reply, ToolError> {
    let input: Input = def::parse_args(args)?;
    let label = input.label.as_deref().map(Label::parse).transpose()?;
    if let Some(services) = &input.services {
        for (i, s) in services.iter().enumerate() {
            crate::domain::backup_set::check_name(&format!("services[{i}]"), s, 128)?;
        }
    }
    let model = call.app.engine().model(&[]).await?;
    let targets = engines::resolve(&model, input.services.as_deref())?;
    let (plan, confirmed_by) = loop {
        let plan = plan(
            &call,
            &model,
            &targets,
            label.as_ref(),
            input.stop_during_backup,
        )?;
        match call.guard(&plan, None).await? {
            Gate::Proceed(by) => break (plan, by),
            Gate::Halt(reply) => return Ok(reply),
            Gate::Replan => continue,
        }
    };
    let progress: Arc<dyn Progress> = Monotonic::new(call.progress.clone());
    let set = backup_targets(
        &call,
        progress,
        &model,
        &targets,
        label.as_ref(),
        input.stop_during_backup,
    )
    .await?;
    let out = Output {
        backup_id: set.id.to_string(),
        directory: set.dir.display().to_string(),
        manifest_path: set.manifest_path.display().to_string(),
        total_bytes: set.manifest.total_bytes(),
        duration_s: set.manifest.duration_s,
        files: set.manifest.entries,
        stopped: set.stopped,
        restarted: set.restarted,
        plan,
        confirmed_by,
    };
    serde_json::to_value(Guarded::Done(out))
        .map(Reply::Done)
        .map_err(|e| ToolError::internal(e.to_string()))
}

fn plan(
    call: &Call,
    model: &StackModel,
    targets: &[(&ServiceModel, Method)],
    label: Option<&Label>,
    stop_override: Option<bool>,
) -> Result<Plan, ToolError> {
    let dir = backup_store::project_dir(&model.settings.backup_root, &model.project)?;
    let mut steps = Vec::new();
    for (svc, method) in targets {
        let volumes: Vec<Option<&str>> = match method {
            Method::Volume => svc.named_volumes.iter().map(|v| Some(v.as_str())).collect(),
            _ => vec![None],
        };
        for v in volumes {
            let file = match v {
                Some(v) => format!("<timestamp>-{}.{v}.{}", svc.name, method.extension()),
                None => format!("<timestamp>-{}.{}", svc.name, method.extension()),
            };
            let stop = *method == Method::Volume && stop_override.unwrap_or(svc.stop_during_backup);
            steps.push(PlanStep {
                action: "create".into(),
                target: match v {
                    Some(v) => format!("{}/{v}", svc.name),
                    None => svc.name.clone(),
                },
                detail: format!(
                    "{} of service {}{} into {}",
                    method.as_str(),
                    svc.name,
                    if stop { " (stopped while copied)" } else { "" },
                    dir.join(file).display()
                ),
                before: None,
                after: None,
                destructive: false,
                cost: StepCost {
                    downtime: stop,
                    ..Default::default()
                },
            });
        }
    }
    let set = match label {
        Some(l) => format!("<timestamp>-{}", l.as_str()),
        None => "<timestamp>".into(),
    };
    Ok(Plan::new(
        "backup",
        &call.app.stack.id,
        format!(
            "backup: {} file(s) of {} service(s) into backup set {set} under {}",
            steps.len(),
            targets.len(),
            dir.display()
        ),
        steps,
    ))
}

/// What `backup_services` made.
#[derive(Debug, Clone)]
pub struct BackupSet {
    pub id: SetId,
    pub dir: PathBuf,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
    pub stopped: Vec<String>,
    pub restarted: Vec<String>,
}

/// Backs up `services` (empty: every data service) as one set, under the
/// stack lock. Called by the backup tool, by restore (the safety backup) and
/// by compose_down before it removes volumes. Not guarded itself: callers
/// pass their own plan through the guard first.
pub async fn backup_services(
    call: &Call,
    model: &StackModel,
    services: &[String],
    label: Option<&Label>,
) -> Result<BackupSet, ToolError> {
    let targets = engines::resolve(model, (!services.is_empty()).then_some(services))?;
    let progress: Arc<dyn Progress> = Monotonic::new(call.progress.clone());
    backup_targets(call, progress, model, &targets, label, None).await
}

/// One file to write.
struct Job<'m> {
    svc: &'m ServiceModel,
    method: Method,
    image: String,
    container: Option<Instance>,
    /// The container's environment with its credential `_FILE`s resolved.
    env: Vec<String>,
    /// The container's command (Redis's `--requirepass`).
    cmd: Vec<String>,
    /// (compose name, engine name) for method volume.
    volume: Option<(String, String)>,
    stop: bool,
}

/// Progress shared with the ticker: bytes of finished files plus the current one.
#[derive(Default)]
struct Meter {
    done: u64,
    current: Option<(String, Arc<AtomicU64>)>,
}

struct Ticker(tokio::task::JoinHandle<()>);
impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// MCP progress values must increase with every notification. Reports pass
/// through unchanged when they do; a report that would not (no new bytes in
/// the last second, or a restore's seconds after its safety backup's bytes)
/// goes out as the previous value plus one.
pub(crate) struct Monotonic {
    inner: Arc<dyn Progress>,
    last: Mutex<f64>,
}

impl Monotonic {
    pub(crate) fn new(inner: Arc<dyn Progress>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            last: Mutex::new(-1.0),
        })
    }
}

impl Progress for Monotonic {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let value = match self.last.lock() {
            Ok(mut last) => {
                let v = if progress > *last {
                    progress
                } else {
                    *last + 1.0
                };
                *last = v;
                v
            }
            Err(_) => progress,
        };
        let total = total.filter(|t| *t >= value);
        self.inner.report(value, total, message);
    }
}

fn ticker(progress: Arc<dyn Progress>, meter: Arc<Mutex<Meter>>) -> Ticker {
    Ticker(tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (bytes, what) = match meter.lock() {
                Ok(m) => match &m.current {
                    Some((name, n)) => (m.done + n.load(Ordering::Relaxed), name.clone()),
                    None => (m.done, "preparing".to_string()),
                },
                Err(_) => return,
            };
            progress.report(
                bytes as f64,
                None,
                Some(format!("{bytes} bytes written ({what})")),
            );
        }
    }))
}

/// Containers stopped for a volume copy; started again on every path out,
/// including a dropped future (then from a spawned task).
pub(crate) struct Stopped {
    engine: Arc<dyn Engine>,
    containers: Vec<Instance>,
}

impl Stopped {
    pub(crate) async fn restart(mut self) -> (Vec<String>, Vec<String>, Option<ToolError>) {
        let containers = std::mem::take(&mut self.containers);
        let mut stopped = Vec::new();
        let mut started = Vec::new();
        let mut first_err = None;
        for c in containers {
            stopped.push(c.name.clone());
            match self.engine.start(&c.id).await {
                Ok(()) => started.push(c.name.clone()),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        (stopped, started, first_err)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        let containers = std::mem::take(&mut self.containers);
        if containers.is_empty() {
            return;
        }
        let engine = self.engine.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                for c in containers {
                    let _ = engine.start(&c.id).await;
                }
            });
        }
    }
}

fn role_name(svc: &ServiceModel) -> String {
    svc.role.as_str().to_string()
}

pub(crate) async fn backup_targets(
    call: &Call,
    progress: Arc<dyn Progress>,
    model: &StackModel,
    targets: &[(&ServiceModel, Method)],
    label: Option<&Label>,
    stop_override: Option<bool>,
) -> Result<BackupSet, ToolError> {
    call.lock_stack().await?;
    let started = Instant::now();
    let engine_arc = call.app.engine_arc();
    let engine = engine_arc.as_ref();
    let project = model.project.as_str();

    // Everything that can be checked is checked before a byte is written.
    let mut jobs = Vec::new();
    for (svc, method) in targets {
        match method {
            Method::PgDump | Method::Mongodump | Method::Redis => {
                let c = crate::engine::running_instance(engine, &svc.name).await?;
                let (env, cmd) = credentials_of(call, engine, &c.id).await?;
                jobs.push(Job {
                    svc,
                    method: *method,
                    image: c.image.clone().unwrap_or_default(),
                    container: Some(c),
                    env,
                    cmd,
                    volume: None,
                    stop: false,
                });
            }
            Method::Volume => {
                if svc.named_volumes.is_empty() {
                    return Err(ToolError::invalid(
                        "services",
                        format!(
                            "service `{}` has backup: volume but mounts no named volume",
                            svc.name
                        ),
                    ));
                }
                let container = crate::engine::service_instances(engine, &svc.name)
                    .await?
                    .into_iter()
                    .next();
                let image = container
                    .as_ref()
                    .and_then(|c| c.image.clone())
                    .or_else(|| svc.image.clone())
                    .unwrap_or_default();
                for v in &svc.named_volumes {
                    let engine_volume = engine.volume(v).await?;
                    jobs.push(Job {
                        svc,
                        method: *method,
                        image: image.clone(),
                        container: container.clone(),
                        env: Vec::new(),
                        cmd: Vec::new(),
                        volume: Some((v.clone(), engine_volume)),
                        stop: stop_override.unwrap_or(svc.stop_during_backup),
                    });
                }
            }
        }
    }
    let dir = backup_store::project_dir(&model.settings.backup_root, project)?;
    preflight(&dir, &jobs)?;
    backup_store::ensure_project_dir(&dir)?;
    let stamp = unique_stamp(&dir).await?;
    let id = SetId::new(stamp, label);

    let meter = Arc::new(Mutex::new(Meter::default()));
    let _ticker = ticker(progress.clone(), meter.clone());
    let mut entries = Vec::new();
    let mut created: Vec<String> = Vec::new();
    let mut stopped_all = Vec::new();
    let mut restarted_all = Vec::new();
    for job in &jobs {
        if call.ct.is_cancelled() {
            backup_store::remove_uncommitted(&dir, &created);
            return Err(ToolError::new(
                ErrorKind::Cancelled,
                "backup cancelled: this set's files were removed; earlier backups are untouched",
            ));
        }
        let file = data_file_name(
            stamp.text().as_str(),
            &job.svc.name,
            job.volume.as_ref().map(|(compose, _)| compose.as_str()),
            job.method,
        )?;
        let result = match job.method {
            Method::PgDump => dump_postgres(call, engine, &dir, &file, job, &meter).await,
            Method::Mongodump => dump_mongo(call, engine, &dir, &file, job, &meter).await,
            Method::Redis => dump_redis(call, engine, &dir, &file, job, &meter).await,
            Method::Volume => {
                let r = dump_volume(call, &engine_arc, model, &dir, &file, job, &meter).await;
                match r {
                    Ok((entry, stopped, restarted, restart_err)) => {
                        stopped_all.extend(stopped);
                        restarted_all.extend(restarted);
                        match restart_err {
                            Some(e) => {
                                created.push(entry.file.clone());
                                Err(e)
                            }
                            None => Ok(entry),
                        }
                    }
                    Err((e, stopped, restarted)) => {
                        stopped_all.extend(stopped);
                        restarted_all.extend(restarted);
                        Err(e)
                    }
                }
            }
        };
        match result {
            Ok(entry) => {
                let what = match meter.lock() {
                    Ok(mut m) => {
                        m.done += entry.bytes;
                        let what = m.current.take().map(|(w, _)| w);
                        Some((m.done, what.unwrap_or_else(|| entry.file.clone())))
                    }
                    Err(_) => None,
                };
                // Each finished file is reported at once, so a dump shorter
                // than the ticker's second still shows its bytes.
                if let Some((done, what)) = what {
                    progress.report(
                        done as f64,
                        None,
                        Some(format!("{done} bytes written ({what})")),
                    );
                }
                created.push(entry.file.clone());
                entries.push(entry);
            }
            Err(mut e) => {
                backup_store::remove_uncommitted(&dir, &created);
                if e.kind == ErrorKind::Cancelled {
                    e.message = format!(
                        "{}: this set's files were removed; earlier backups are untouched",
                        e.message
                    );
                }
                return Err(e);
            }
        }
    }
    let finished = Instant::now();
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        id: id.to_string(),
        project: project.to_string(),
        stack_id: call.app.stack.id.clone(),
        label: label.map(|l| l.as_str().to_string()),
        created_at: stamp.rfc3339(),
        finished_at: crate::adapters::clock::now_rfc3339(),
        duration_s: round3(finished.duration_since(started).as_secs_f64()),
        stackpilot_version: env!("CARGO_PKG_VERSION").into(),
        entries,
    };
    let manifest_path = match backup_store::write_manifest(&dir, &id, &manifest) {
        Ok(p) => p,
        Err(e) => {
            backup_store::remove_uncommitted(&dir, &created);
            return Err(e);
        }
    };
    progress.report(
        manifest.total_bytes() as f64,
        Some(manifest.total_bytes() as f64),
        Some(format!("backup set {id} committed")),
    );
    Ok(BackupSet {
        id,
        dir,
        manifest_path,
        manifest,
        stopped: stopped_all,
        restarted: restarted_all,
    })
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Refuses to start when the disk cannot hold what the same services took last time.
fn preflight(dir: &std::path::Path, jobs: &[Job<'_>]) -> Result<(), ToolError> {
    let listing = backup_store::list(dir)?;
    let mut need = 0u64;
    let mut basis = Vec::new();
    for job in jobs {
        let volume = job.volume.as_ref().map(|(_, e)| e.as_str());
        let previous = listing.sets.iter().rev().find_map(|s| {
            s.manifest
                .entries
                .iter()
                .find(|e| e.service == job.svc.name && e.volume.as_deref() == volume)
                .map(|e| (s.id.to_string(), e.bytes))
        });
        if let Some((id, bytes)) = previous {
            need += bytes;
            basis.push(format!("{} in {id}: {bytes} bytes", job.svc.name));
        }
    }
    if need == 0 {
        return Ok(());
    }
    let free = backup_store::available_space(dir)
        .map_err(|e| backup_store::io_error(dir, "read the free space of", &e))?;
    if free < need {
        let mut err = ToolError::new(
            ErrorKind::External,
            format!(
                "not enough free space for this backup: {free} bytes free under {}, the previous backup of these services took {need} bytes; nothing was written",
                dir.display()
            ),
        )
        .next_step("free space under the backup root (prune_backups removes old sets) or set x-stackpilot backup_root to a larger disk");
        for b in basis {
            err = err.evidence(b);
        }
        return Err(err);
    }
    Ok(())
}

/// A timestamp no file in `dir` starts with (two sets in one second wait for the next).
async fn unique_stamp(dir: &std::path::Path) -> Result<Stamp, ToolError> {
    for _ in 0..5 {
        let stamp = Stamp::now();
        let text = stamp.text();
        let taken = std::fs::read_dir(dir)
            .map_err(|e| backup_store::io_error(dir, "read", &e))?
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().starts_with(&text));
        if !taken {
            return Ok(stamp);
        }
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| 1000 - u64::from(d.subsec_millis()))
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms + 5)).await;
    }
    Err(ToolError::internal("no free backup timestamp after 5 s"))
}

/// Streams a process's stdout into a new backup file and commits the file
/// when the process exits 0 with output; otherwise removes it.
pub(crate) async fn stream_to_file(
    call: &Call,
    process: Result<Process, ToolError>,
    sink: FileSink,
    what: &str,
) -> Result<(Written, Finished), ToolError> {
    let p = match process {
        Ok(p) => p,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    match process::run(p, Stdout::Sink(&sink), None, &call.ct).await {
        Ok(f) if !f.ok() => {
            sink.abort().await;
            Err(process::failed(what, &f).next_step(
                "fix the cause in the stderr tail and back up again; no backup file was kept",
            ))
        }
        Ok(f) if f.stdout_bytes == 0 => {
            sink.abort().await;
            Err(process::failed(what, &f)
                .next_step("the dump produced no output; no backup file was kept"))
        }
        Ok(f) => Ok((sink.finish().await?, f)),
        Err(RunError::SinkFailed) => Err(sink
            .abort()
            .await
            .unwrap_or_else(|| ToolError::external("the backup file stopped accepting data"))),
        Err(RunError::Cancelled) => {
            sink.abort().await;
            Err(ToolError::new(
                ErrorKind::Cancelled,
                format!("backup cancelled during {what}"),
            ))
        }
        Err(RunError::Engine(e)) => {
            sink.abort().await;
            Err(e)
        }
    }
}

fn set_current(meter: &Mutex<Meter>, what: String, sink: &FileSink) {
    if let Ok(mut m) = meter.lock() {
        m.current = Some((what, sink.disk_bytes.clone()));
    }
}

async fn dump_postgres(
    call: &Call,
    engine: &dyn Engine,
    dir: &std::path::Path,
    file: &str,
    job: &Job<'_>,
    meter: &Mutex<Meter>,
) -> Result<ManifestEntry, ToolError> {
    let started = Instant::now();
    let c = job
        .container
        .as_ref()
        .ok_or_else(|| ToolError::internal("no container for pg_dump"))?;
    let conn = PgConn::from_env(&job.env);
    let version = engines::capture(
        engine,
        &c.id,
        vec!["pg_dump".into(), "--version".into()],
        &call.ct,
    )
    .await?;
    let sink = FileSink::create(dir, file, true, false)?;
    set_current(meter, format!("pg_dump {}", job.svc.name), &sink);
    // The exact counts take a scan of every table: run them beside the dump
    // (a second backend), not before it.
    let dump = async {
        let process = engine
            .exec(&c.id, conn.dump_cmd(), conn.exec_env(), false)
            .await;
        stream_to_file(call, process, sink, "pg_dump").await
    };
    let (dumped, counts) = tokio::join!(dump, pg_counts(call, engine, &c.id, &conn));
    let (w, counts) = both(dumped, counts)?;
    Ok(entry(
        job,
        w,
        [("pg_dump".to_string(), engines::version_line(&version))].into(),
        counts,
        Some(conn.database),
        None,
        started,
    ))
}

/// The environment (credential `_FILE`s resolved inside the container) and
/// the command of a service's running container.
pub(crate) async fn credentials_of(
    call: &Call,
    engine: &dyn Engine,
    id: &str,
) -> Result<(Vec<String>, Vec<String>), ToolError> {
    let detail = engine.inspect(id).await?.ok_or_else(|| {
        ToolError::external("the service's container went away while stackpilot looked at it")
            .next_step("call again")
    })?;
    let env = crate::tools::credentials::effective_env(engine, id, detail.env, &call.ct).await?;
    Ok((env, detail.cmd))
}

/// A Redis dump: BGSAVE, wait for LASTSAVE to move, then the dump file
/// streamed through docker exec (`cat`) into zstd. A Redis without
/// persistence gets the snapshot too (the data is only in memory), and the
/// dump file BGSAVE left behind is removed again when there was none before,
/// so its next start stays empty as configured.
async fn dump_redis(
    call: &Call,
    engine: &dyn Engine,
    dir: &std::path::Path,
    file: &str,
    job: &Job<'_>,
    meter: &Mutex<Meter>,
) -> Result<ManifestEntry, ToolError> {
    let started = Instant::now();
    let c = job
        .container
        .as_ref()
        .ok_or_else(|| ToolError::internal("no container for the Redis dump"))?;
    let conn = engines::RedisConn::new(&job.env, &job.cmd);
    let info = engines::redis_call(engine, &c.id, &conn, &["INFO", "server"], &call.ct).await?;
    let version = crate::domain::redis::info_field(&info, "redis_version")
        .map(|v| format!("redis {v}"))
        .unwrap_or_else(|| "redis (version unknown)".into());
    let p = engines::redis_persistence(engine, &c.id, &conn, &call.ct).await?;
    let dump_path = p.dump_path();
    let existed = if p.off() {
        let test = vec!["test".into(), "-e".into(), dump_path.clone()];
        engines::capture(engine, &c.id, test, &call.ct).await?.ok()
    } else {
        true
    };
    let sink = FileSink::create(dir, file, true, false)?;
    set_current(meter, format!("redis dump {}", job.svc.name), &sink);
    let counts = match engines::redis_bgsave(engine, &c.id, &conn, &call.ct).await {
        Ok(c) => c,
        Err(e) => {
            sink.abort().await;
            return Err(e);
        }
    };
    let process = engine
        .exec(
            &c.id,
            vec!["cat".into(), dump_path.clone()],
            Vec::new(),
            false,
        )
        .await;
    let (w, _) = stream_to_file(call, process, sink, "cat (the Redis dump file)").await?;
    let mut note = p.describe();
    if !existed {
        let rm = vec!["rm".into(), "-f".into(), dump_path.clone()];
        let removed = engines::capture(engine, &c.id, rm, &call.ct).await;
        if removed.is_ok_and(|f| f.ok()) {
            note.push_str(&format!(
                "; {dump_path}, which BGSAVE wrote, was removed again"
            ));
        } else {
            note.push_str(&format!(
                "; {dump_path}, which BGSAVE wrote, could not be removed: the next start loads it"
            ));
        }
    }
    let mut e = entry(
        job,
        w,
        [("redis".to_string(), version)].into(),
        counts,
        None,
        None,
        started,
    );
    e.note = Some(note);
    Ok(e)
}

/// A dump and the counts taken beside it: both or neither (a committed
/// file whose counts failed is removed again; no manifest lists it yet).
fn both(
    dumped: Result<(Written, Finished), ToolError>,
    counts: Result<BTreeMap<String, u64>, ToolError>,
) -> Result<(Written, BTreeMap<String, u64>), ToolError> {
    match (dumped, counts) {
        (Ok((w, _)), Ok(c)) => Ok((w, c)),
        (Ok((w, _)), Err(e)) => {
            let _ = std::fs::remove_file(&w.path);
            Err(e)
        }
        (Err(e), _) => Err(e),
    }
}

/// Rows per table now (exact `count(*)`).
pub(crate) async fn pg_counts(
    call: &Call,
    engine: &dyn Engine,
    container: &str,
    conn: &PgConn,
) -> Result<BTreeMap<String, u64>, ToolError> {
    let f = engines::capture_env(
        engine,
        container,
        conn.counts_cmd(),
        conn.exec_env(),
        &call.ct,
    )
    .await?;
    if !f.ok() {
        return Err(process::failed("psql (row counts)", &f));
    }
    engines::parse_counts(&String::from_utf8_lossy(&f.stdout))
        .map_err(|why| ToolError::external(format!("psql (row counts): {why}")))
}

async fn dump_mongo(
    call: &Call,
    engine: &dyn Engine,
    dir: &std::path::Path,
    file: &str,
    job: &Job<'_>,
    meter: &Mutex<Meter>,
) -> Result<ManifestEntry, ToolError> {
    let started = Instant::now();
    let c = job
        .container
        .as_ref()
        .ok_or_else(|| ToolError::internal("no container for mongodump"))?;
    let version = engines::capture(
        engine,
        &c.id,
        vec!["mongodump".into(), "--version".into()],
        &call.ct,
    )
    .await?;
    // mongodump compresses (--gzip): stored as streamed.
    let sink = FileSink::create(dir, file, false, false)?;
    set_current(meter, format!("mongodump {}", job.svc.name), &sink);
    let dump = async {
        let process = engine
            .exec(&c.id, engines::mongodump_cmd(&job.env), Vec::new(), false)
            .await;
        stream_to_file(call, process, sink, "mongodump").await
    };
    let (dumped, counts) = tokio::join!(dump, mongo_counts(call, engine, &c.id, &job.env));
    let (w, counts) = both(dumped, counts)?;
    Ok(entry(
        job,
        w,
        [("mongodump".to_string(), engines::version_line(&version))].into(),
        counts,
        None,
        None,
        started,
    ))
}

/// Documents per collection now.
pub(crate) async fn mongo_counts(
    call: &Call,
    engine: &dyn Engine,
    container: &str,
    env: &[String],
) -> Result<BTreeMap<String, u64>, ToolError> {
    let f = engines::capture(engine, container, engines::mongo_counts_cmd(env), &call.ct).await?;
    if !f.ok() {
        return Err(process::failed("mongosh (document counts)", &f));
    }
    engines::parse_counts(&String::from_utf8_lossy(&f.stdout))
        .map_err(|why| ToolError::external(format!("mongosh (document counts): {why}")))
}

/// Stops the running containers that use a volume (for a consistent copy).
pub(crate) async fn stop_users(
    engine: &Arc<dyn Engine>,
    volume: &str,
) -> Result<Stopped, ToolError> {
    let mut stopped = Stopped {
        engine: engine.clone(),
        containers: Vec::new(),
    };
    for c in engine.volume_users(volume).await? {
        if c.running() {
            engine.stop(&c.id).await?;
            stopped.containers.push(c);
        }
    }
    Ok(stopped)
}

type VolumeResult = Result<
    (ManifestEntry, Vec<String>, Vec<String>, Option<ToolError>),
    (ToolError, Vec<String>, Vec<String>),
>;

async fn dump_volume(
    call: &Call,
    engine: &Arc<dyn Engine>,
    model: &StackModel,
    dir: &std::path::Path,
    file: &str,
    job: &Job<'_>,
    meter: &Mutex<Meter>,
) -> VolumeResult {
    let started = Instant::now();
    let Some((_, volume)) = job.volume.clone() else {
        return Err((ToolError::internal("no volume to back up"), vec![], vec![]));
    };
    let stopped = if job.stop {
        match stop_users(engine, &volume).await {
            Ok(s) => Some(s),
            Err(e) => return Err((e, vec![], vec![])),
        }
    } else {
        None
    };
    let result = async {
        let sink = FileSink::create(dir, file, true, true)?;
        set_current(meter, format!("volume {volume}"), &sink);
        let helper = engines::start_helper(
            engine.as_ref(),
            model,
            (!job.image.is_empty()).then_some(job.image.as_str()),
            engines::volume_tar_cmd(),
            Some((volume.clone(), true)),
            false,
        )
        .await;
        let (process, image) = match helper {
            Ok((p, image)) => (Ok(p), image),
            Err(e) => (Err(e), String::new()),
        };
        let (w, _) = stream_to_file(call, process, sink, "tar (volume copy)").await?;
        let tar = w.tar.clone().unwrap_or_default();
        if !tar.complete() {
            let _ = std::fs::remove_file(&w.path);
            return Err(ToolError::external(format!(
                "the tar stream of volume {volume} is incomplete or damaged ({}); no backup file was kept",
                tar.error.as_deref().unwrap_or("no end-of-archive marker")
            )));
        }
        let counts: BTreeMap<String, u64> = [
            ("files".to_string(), tar.counts.files),
            ("directories".to_string(), tar.counts.directories),
        ]
        .into();
        Ok(entry(
            job,
            w,
            [("tar".to_string(), format!("tar in image {image}"))].into(),
            counts,
            None,
            Some(volume.clone()),
            started,
        ))
    }
    .await;
    let (stopped_names, restarted, restart_err) = match stopped {
        Some(s) => s.restart().await,
        None => (vec![], vec![], None),
    };
    match result {
        Ok(e) => Ok((e, stopped_names, restarted, restart_err)),
        Err(e) => Err((e, stopped_names, restarted)),
    }
}

fn entry(
    job: &Job<'_>,
    w: Written,
    mut tool_versions: BTreeMap<String, String>,
    counts: BTreeMap<String, u64>,
    database: Option<String>,
    volume: Option<String>,
    started: Instant,
) -> ManifestEntry {
    tool_versions.insert("stackpilot".into(), env!("CARGO_PKG_VERSION").into());
    ManifestEntry {
        service: job.svc.name.clone(),
        role: role_name(job.svc),
        method: job.method,
        image: job.image.clone(),
        volume,
        database,
        file: w.file,
        compression: if job.method.zstd() { "zstd" } else { "gzip" }.into(),
        bytes: w.bytes,
        stream_bytes: w.stream_bytes,
        sha256: w.sha256,
        tool_versions,
        duration_s: round3(started.elapsed().as_secs_f64()),
        counts,
        note: None,
    }
}
