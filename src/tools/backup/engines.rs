//! How each kind of data service is dumped, restored, counted and checked:
//! the commands (pg_dump / pg_restore / psql, mongodump / mongorestore /
//! mongosh, redis-cli, tar in a helper container) and the parsing of their
//! output.
//! Shared by backup, verify_backup and restore, so the three always agree.
use std::collections::BTreeMap;

use tokio_util::sync::CancellationToken;

use crate::adapters::backup_store::{self, Decode, ReadStats};
use crate::domain::backup_set::{check_name, Method, MAX_NAME};
use crate::domain::error::ToolError;
use crate::domain::redis::{self, Persistence};
use crate::domain::stack_model::{Role, ServiceModel, StackModel};
use crate::engine::process::{self, Finished, Process, Stdout};
use crate::engine::{Engine, HelperSpec};

/// Where a volume is mounted inside helper containers.
pub const DATA_DIR: &str = "/data";
/// Used for volume backups when the service's image has no tar and the stack
/// names no `backup_helper_image`.
pub const DEFAULT_HELPER_IMAGE: &str = "busybox:stable";
/// A mongodump archive starts with this magic number (little endian 0x8199e26d).
pub const MONGO_ARCHIVE_MAGIC: [u8; 4] = [0x6d, 0xe2, 0x99, 0x81];
/// Output kept from short commands (versions, counts, TOC listings).
const CAPTURE: usize = 8 * 1024 * 1024;

/// The backup method of a service: its `backup` field, else its role's default
/// (postgres: pg_dump, mongodb: mongodump, redis: redis, volume: volume, others: none).
pub fn method_of(svc: &ServiceModel) -> Result<Option<Method>, ToolError> {
    match svc.backup.as_deref().map(str::trim) {
        Some("pg_dump") => Ok(Some(Method::PgDump)),
        Some("mongodump") => Ok(Some(Method::Mongodump)),
        Some("redis") => Ok(Some(Method::Redis)),
        Some("volume") => Ok(Some(Method::Volume)),
        Some("none") => Ok(None),
        Some(other) => Err(ToolError::external(format!(
            "service `{}` has an unknown backup policy `{}` in the compose file",
            svc.name,
            crate::domain::redact::cap(other, 60)
        ))
        .allowed(Method::NAMES)
        .next_step("fix io.stackpilot.backup / x-stackpilot backup in the compose file")),
        None => Ok(match svc.role {
            Role::Postgres => Some(Method::PgDump),
            Role::Mongodb => Some(Method::Mongodump),
            Role::Redis => Some(Method::Redis),
            Role::Volume => Some(Method::Volume),
            _ => None,
        }),
    }
}

/// Every service with a backup method, sorted by name.
pub fn data_services(model: &StackModel) -> Result<Vec<(&ServiceModel, Method)>, ToolError> {
    let mut out = Vec::new();
    for svc in model.services.values() {
        if let Some(m) = method_of(svc)? {
            out.push((svc, m));
        }
    }
    Ok(out)
}

/// Checks requested service names (charset first, then existence and a
/// backup method) and resolves them; `None` means every data service.
pub fn resolve<'m>(
    model: &'m StackModel,
    services: Option<&[String]>,
) -> Result<Vec<(&'m ServiceModel, Method)>, ToolError> {
    let all = data_services(model)?;
    let names: Vec<String> = all.iter().map(|(s, _)| s.name.clone()).collect();
    let Some(requested) = services else {
        if all.is_empty() {
            return Err(ToolError::external(
                "this stack has no data service to back up (no service with role postgres, mongodb, redis or volume, or a backup policy)",
            )
            .next_step("set x-stackpilot backup: pg_dump | mongodump | redis | volume on a service"));
        }
        return Ok(all);
    };
    if requested.is_empty() {
        return Err(
            ToolError::invalid("services", "must name at least one service").allowed(names),
        );
    }
    let mut out: Vec<(&ServiceModel, Method)> = Vec::new();
    for (i, name) in requested.iter().enumerate() {
        check_name(&format!("services[{i}]"), name, MAX_NAME)
            .map_err(|e| e.allowed(names.clone()))?;
        let svc = model.service(name)?;
        let Some(method) = method_of(svc)? else {
            return Err(ToolError::invalid(
                format!("services[{i}]"),
                format!(
                    "service `{name}` has no backup method (backup: none, role {:?})",
                    svc.role
                ),
            )
            .allowed(names));
        };
        if !out.iter().any(|(s, _)| s.name == svc.name) {
            out.push((svc, method));
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out)
}

/// Runs a short command in a container and keeps its output.
pub async fn capture(
    engine: &dyn Engine,
    container: &str,
    cmd: Vec<String>,
    ct: &CancellationToken,
) -> Result<Finished, ToolError> {
    capture_env(engine, container, cmd, Vec::new(), ct).await
}

/// Like `capture`, with environment variables for the process (credentials
/// such as PGPASSWORD travel here, never in the arguments).
pub async fn capture_env(
    engine: &dyn Engine,
    container: &str,
    cmd: Vec<String>,
    env: Vec<String>,
    ct: &CancellationToken,
) -> Result<Finished, ToolError> {
    let p = engine.exec(container, cmd, env, false).await?;
    Ok(process::run(p, Stdout::Capture(CAPTURE), None, ct).await?)
}

/// Like `capture_env`, with `input` written to the process's stdin.
pub async fn capture_stdin(
    engine: &dyn Engine,
    container: &str,
    cmd: Vec<String>,
    env: Vec<String>,
    input: Vec<u8>,
    ct: &CancellationToken,
) -> Result<Finished, ToolError> {
    let p = engine.exec(container, cmd, env, true).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    // The channel has room for the one chunk: this never waits.
    let _ = tx.try_send(bytes::Bytes::from(input));
    drop(tx);
    Ok(process::run(p, Stdout::Capture(CAPTURE), Some(rx), ct).await?)
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Connection settings of a Postgres container, from its environment.
#[derive(Debug, Clone)]
pub struct PgConn {
    pub user: String,
    pub database: String,
    /// POSTGRES_PASSWORD (or the file POSTGRES_PASSWORD_FILE names): given to the
    /// clients as PGPASSWORD, for servers that ask for one on the local socket.
    password: Option<String>,
}

impl PgConn {
    /// POSTGRES_USER (else PGUSER, else `postgres`) and POSTGRES_DB (else the user's name
    /// when POSTGRES_USER is set, as the official image does, else `postgres`).
    pub fn from_env(env: &[String]) -> Self {
        let pg_user = crate::engine::env_value(env, "POSTGRES_USER");
        let user = pg_user
            .clone()
            .or_else(|| crate::engine::env_value(env, "PGUSER"))
            .unwrap_or_else(|| "postgres".into());
        let database = crate::engine::env_value(env, "POSTGRES_DB")
            .or(pg_user)
            .unwrap_or_else(|| "postgres".into());
        Self {
            user,
            database,
            password: crate::engine::env_value(env, "POSTGRES_PASSWORD"),
        }
    }

    /// The clients' environment: PGPASSWORD when the container has a password.
    pub fn exec_env(&self) -> Vec<String> {
        self.password
            .iter()
            .map(|p| format!("PGPASSWORD={p}"))
            .collect()
    }

    pub fn dump_cmd(&self) -> Vec<String> {
        strings(&["pg_dump", "-Fc", "-U", &self.user, "-d", &self.database])
    }

    /// One transaction: a failed restore leaves the database as it was.
    pub fn restore_cmd(&self) -> Vec<String> {
        strings(&[
            "pg_restore",
            "--clean",
            "--if-exists",
            "--single-transaction",
            "-U",
            &self.user,
            "-d",
            &self.database,
        ])
    }

    /// Exact rows per user table (`schema.table`), in one statement.
    pub fn counts_cmd(&self) -> Vec<String> {
        strings(&[
            "psql",
            "-X",
            "-q",
            "-A",
            "-t",
            "-F",
            "\t",
            "-v",
            "ON_ERROR_STOP=1",
            "-U",
            &self.user,
            "-d",
            &self.database,
            "-c",
            PG_COUNTS_SQL,
        ])
    }
}

/// `count(*)` of every ordinary table outside the system schemas, through
/// query_to_xml so one statement counts them all.
const PG_COUNTS_SQL: &str = "select n.nspname || '.' || c.relname, \
 (xpath('/row/c/text()', query_to_xml(format('select count(*) as c from %I.%I', n.nspname, c.relname), false, true, '')))[1]::text \
 from pg_class c join pg_namespace n on n.oid = c.relnamespace \
 where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') and n.nspname not like 'pg\\_toast%' \
 order by 1";

/// Parses `name<TAB>count` lines.
pub fn parse_counts(text: &str) -> Result<BTreeMap<String, u64>, String> {
    let mut out = BTreeMap::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let (name, n) = line.rsplit_once('\t').ok_or_else(|| {
            format!(
                "unexpected line `{}`",
                crate::domain::redact::cap(line, 120)
            )
        })?;
        let n: u64 = n.trim().parse().map_err(|_| {
            format!(
                "unexpected count in `{}`",
                crate::domain::redact::cap(line, 120)
            )
        })?;
        out.insert(name.to_string(), n);
    }
    Ok(out)
}

/// Table names with a `TABLE DATA` entry in a `pg_restore --list` listing
/// (`schema.table`), and the number of TOC entries.
pub fn parse_toc(text: &str) -> (usize, Vec<String>) {
    let mut entries = 0;
    let mut tables = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with(';') {
            continue;
        }
        entries += 1;
        // `3316; 0 16390 TABLE DATA public items postgres`
        if let Some((_, rest)) = l.split_once(" TABLE DATA ") {
            let mut parts = rest.split_whitespace();
            if let (Some(schema), Some(table)) = (parts.next(), parts.next()) {
                tables.push(format!("{schema}.{table}"));
            }
        }
    }
    tables.sort();
    (entries, tables)
}

/// Connection arguments for mongodump / mongorestore / mongosh, from the
/// official image's root credentials when the container has them.
pub fn mongo_auth(env: &[String]) -> Vec<String> {
    match (
        crate::engine::env_value(env, "MONGO_INITDB_ROOT_USERNAME"),
        crate::engine::env_value(env, "MONGO_INITDB_ROOT_PASSWORD"),
    ) {
        (Some(u), Some(p)) => vec![
            "--username".into(),
            u,
            "--password".into(),
            p,
            "--authenticationDatabase".into(),
            "admin".into(),
        ],
        _ => Vec::new(),
    }
}

pub fn mongodump_cmd(env: &[String]) -> Vec<String> {
    let mut c = strings(&["mongodump", "--archive", "--gzip"]);
    c.extend(mongo_auth(env));
    c
}

pub fn mongorestore_cmd(env: &[String]) -> Vec<String> {
    let mut c = strings(&["mongorestore", "--drop", "--archive", "--gzip"]);
    c.extend(mongo_auth(env));
    c
}

/// Reads a decompressed archive from stdin and restores nothing.
pub fn mongorestore_dry_run_cmd(env: &[String]) -> Vec<String> {
    let mut c = strings(&["mongorestore", "--dryRun", "--archive"]);
    c.extend(mongo_auth(env));
    c
}

/// Documents per collection (`db.collection`) of every non-system database.
const MONGO_COUNTS_JS: &str = "db.adminCommand({listDatabases: 1}).databases.map(d => d.name)\
 .filter(n => !['admin', 'local', 'config'].includes(n)).sort().forEach(n => {\
 const d = db.getSiblingDB(n); d.getCollectionNames().sort().forEach(c => \
 print(n + '.' + c + '\\t' + d.getCollection(c).countDocuments({}))) })";

pub fn mongo_counts_cmd(env: &[String]) -> Vec<String> {
    let mut c = strings(&["mongosh", "--quiet"]);
    c.extend(mongo_auth(env));
    c.push("--eval".into());
    c.push(MONGO_COUNTS_JS.into());
    c
}

/// How redis-cli reaches a Redis container's server: over its loopback, with
/// the password (if any) in REDISCLI_AUTH, never on the command line.
#[derive(Debug, Clone, Default)]
pub struct RedisConn {
    password: Option<String>,
}

impl RedisConn {
    /// The password from REDIS_PASSWORD (or its _FILE, as the Bitnami image
    /// reads it), REDISCLI_AUTH, or a `--requirepass` in the server's command.
    pub fn new(env: &[String], cmd: &[String]) -> Self {
        let from_cmd = cmd
            .iter()
            .position(|a| a == "--requirepass")
            .and_then(|i| cmd.get(i + 1))
            .cloned()
            .filter(|p| !p.is_empty());
        Self {
            password: crate::engine::env_value(env, "REDIS_PASSWORD")
                .or_else(|| crate::engine::env_value(env, "REDISCLI_AUTH"))
                .or(from_cmd),
        }
    }

    pub fn exec_env(&self) -> Vec<String> {
        self.password
            .iter()
            .map(|p| format!("REDISCLI_AUTH={p}"))
            .collect()
    }

    /// The password, to mask it in whatever a container prints.
    pub fn secrets(&self) -> Vec<String> {
        self.password.iter().cloned().collect()
    }

    pub fn cli(&self, args: &[&str]) -> Vec<String> {
        let mut c = strings(&["redis-cli"]);
        c.extend(args.iter().map(|a| a.to_string()));
        c
    }
}

/// One redis-cli command; its raw answer, or an error naming what failed.
pub async fn redis_call(
    engine: &dyn Engine,
    container: &str,
    conn: &RedisConn,
    args: &[&str],
    ct: &CancellationToken,
) -> Result<String, ToolError> {
    let f = capture_env(engine, container, conn.cli(args), conn.exec_env(), ct).await?;
    redis_answer(&format!("redis-cli {}", args.join(" ")), &f, conn)
}

/// Several redis-cli commands in one connection (one per line on stdin), so
/// nothing else runs between them but other clients' commands.
pub async fn redis_pipeline(
    engine: &dyn Engine,
    container: &str,
    conn: &RedisConn,
    lines: &[&str],
    ct: &CancellationToken,
) -> Result<String, ToolError> {
    let mut input = lines.join("\n");
    input.push('\n');
    let f = capture_stdin(
        engine,
        container,
        conn.cli(&[]),
        conn.exec_env(),
        input.into_bytes(),
        ct,
    )
    .await?;
    redis_answer(&format!("redis-cli ({})", lines.join("; ")), &f, conn)
}

fn redis_answer(what: &str, f: &Finished, conn: &RedisConn) -> Result<String, ToolError> {
    let text = String::from_utf8_lossy(&f.stdout).into_owned();
    let secrets = conn.secrets();
    if !f.ok() {
        let mut e = process::failed(what, f);
        e.message = crate::domain::redact::redact_text(&e.message, &secrets);
        e.evidence = e
            .evidence
            .iter()
            .map(|l| crate::domain::redact::redact_text(l, &secrets))
            .collect();
        return Err(e.next_step(if f.exit_code == 127 {
            "the service's image has no redis-cli: set x-stackpilot backup: volume on it"
        } else {
            "check the Redis service (health with logs_tail)"
        }));
    }
    if let Some(reply) = redis::error_reply(&text).or_else(|| redis::error_reply(&f.stderr_tail)) {
        let reply = crate::domain::redact::redact_text(&reply, &secrets);
        let auth = reply.starts_with("NOAUTH")
            || reply.starts_with("WRONGPASS")
            || reply.starts_with("AUTH");
        return Err(ToolError::external(format!("{what}: Redis answered `{reply}`")).next_step(
            if auth {
                "Redis wants a password stackpilot could not find: set REDIS_PASSWORD (or REDIS_PASSWORD_FILE) in the service's environment, or pass it as `--requirepass` in its command"
            } else {
                "check the Redis service (health with logs_tail)"
            },
        ));
    }
    Ok(text)
}

/// Where the server keeps its data and what it persists.
pub async fn redis_persistence(
    engine: &dyn Engine,
    container: &str,
    conn: &RedisConn,
    ct: &CancellationToken,
) -> Result<Persistence, ToolError> {
    // One CONFIG GET per name: Redis 6 takes a single pattern per call.
    let text = redis_pipeline(
        engine,
        container,
        conn,
        &[
            "CONFIG GET dir",
            "CONFIG GET dbfilename",
            "CONFIG GET save",
            "CONFIG GET appendonly",
            "CONFIG GET appenddirname",
            "CONFIG GET appendfilename",
        ],
        ct,
    )
    .await?;
    Persistence::from_config(&redis::config_pairs(&text)).map_err(|why| {
        ToolError::external(format!("redis-cli CONFIG GET: {why}")).next_step(
            "allow CONFIG for stackpilot, or set x-stackpilot backup: volume on the service",
        )
    })
}

/// Keys per database now (`INFO keyspace`).
pub async fn redis_counts(
    engine: &dyn Engine,
    container: &str,
    conn: &RedisConn,
    ct: &CancellationToken,
) -> Result<BTreeMap<String, u64>, ToolError> {
    let text = redis_call(engine, container, conn, &["INFO", "keyspace"], ct).await?;
    redis::keyspace_counts(&text)
        .map_err(|why| ToolError::external(format!("redis-cli INFO keyspace: {why}")))
}

/// How long a BGSAVE may take before stackpilot gives up waiting for it.
const BGSAVE_LIMIT: std::time::Duration = std::time::Duration::from_secs(3600);
const BGSAVE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

fn first_number(text: &str, what: &str) -> Result<u64, ToolError> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| {
            ToolError::external(format!(
                "redis-cli {what}: expected a number, got `{}`",
                crate::domain::redact::cap(text.trim(), 120)
            ))
        })
}

/// Takes a fresh snapshot: `BGSAVE`, then waits until LASTSAVE moves past
/// its value from before (and the save reports ok). LASTSAVE counts whole
/// seconds, so the BGSAVE is sent only once the server's clock is past the
/// previous save's second; a save or AOF rewrite already running is waited
/// out first. Returns the keys per database as `INFO keyspace` gave them in
/// the same connection right after the fork (beside the dump, not inside it:
/// with concurrent writes they can differ by those writes).
pub async fn redis_bgsave(
    engine: &dyn Engine,
    container: &str,
    conn: &RedisConn,
    ct: &CancellationToken,
) -> Result<BTreeMap<String, u64>, ToolError> {
    let started = std::time::Instant::now();
    let waited_out = |what: &str| {
        ToolError::external(format!(
            "{what} did not finish within {} s",
            BGSAVE_LIMIT.as_secs()
        ))
        .next_step("check the Redis service's disk and logs (health with logs_tail)")
    };
    let sleep = || async {
        tokio::select! {
            _ = tokio::time::sleep(BGSAVE_POLL) => Ok(()),
            _ = ct.cancelled() => Err(ToolError::new(
                crate::domain::error::ErrorKind::Cancelled,
                "backup cancelled while Redis saved",
            )),
        }
    };
    let (before, counts) = loop {
        let before = first_number(
            &redis_call(engine, container, conn, &["LASTSAVE"], ct).await?,
            "LASTSAVE",
        )?;
        while first_number(
            &redis_call(engine, container, conn, &["TIME"], ct).await?,
            "TIME",
        )? <= before
        {
            sleep().await?;
        }
        let f = capture_stdin(
            engine,
            container,
            conn.cli(&[]),
            conn.exec_env(),
            b"BGSAVE\nINFO keyspace\n".to_vec(),
            ct,
        )
        .await?;
        let text = redis_answer("redis-cli BGSAVE", &f, conn).or_else(|e| {
            // An error reply to BGSAVE itself is handled below.
            if e.message.contains("Background save already in progress")
                || e.message.contains("Another child process is active")
            {
                Ok(String::from_utf8_lossy(&f.stdout).into_owned())
            } else {
                Err(e)
            }
        })?;
        let (first, rest) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        if first.trim().starts_with("Background saving started") {
            let counts = redis::keyspace_counts(rest)
                .map_err(|why| ToolError::external(format!("redis-cli INFO keyspace: {why}")))?;
            break (before, counts);
        }
        if !(first.contains("already in progress") || first.contains("Another child process")) {
            return Err(ToolError::external(format!(
                "redis-cli BGSAVE: Redis answered `{}`",
                crate::domain::redact::cap(first.trim(), 200)
            )));
        }
        // Another save or an AOF rewrite runs: wait for it, then take ours.
        loop {
            let info = redis_call(engine, container, conn, &["INFO", "persistence"], ct).await?;
            let busy = |f: &str| redis::info_field(&info, f).as_deref() == Some("1");
            if !busy("rdb_bgsave_in_progress") && !busy("aof_rewrite_in_progress") {
                break;
            }
            if started.elapsed() > BGSAVE_LIMIT {
                return Err(waited_out("the save already running in Redis"));
            }
            sleep().await?;
        }
    };
    loop {
        let text = redis_pipeline(
            engine,
            container,
            conn,
            &["LASTSAVE", "INFO persistence"],
            ct,
        )
        .await?;
        let (first, info) = text.split_once('\n').unwrap_or((text.as_str(), ""));
        let last = first_number(first, "LASTSAVE")?;
        let in_progress = redis::info_field(info, "rdb_bgsave_in_progress").as_deref() == Some("1");
        if last > before && !in_progress {
            return Ok(counts);
        }
        if !in_progress
            && redis::info_field(info, "rdb_last_bgsave_status").as_deref() == Some("err")
        {
            return Err(ToolError::external(
                "Redis's BGSAVE failed (rdb_last_bgsave_status:err): no dump was taken",
            )
            .next_step("read why in the Redis log (health with logs_tail): a full disk or a read-only data directory are the usual causes"));
        }
        if started.elapsed() > BGSAVE_LIMIT {
            return Err(waited_out("Redis's BGSAVE"));
        }
        sleep().await?;
    }
}

/// Writes stdin to `path` inside the container (through sh, the path as an
/// argument, never interpolated).
pub fn write_file_cmd(path: &str) -> Vec<String> {
    strings(&["sh", "-c", "cat > \"$1\"", "sh", path])
}

/// Puts a dump written to `staged` in place for the server's next start, owned
/// as the data directory is: as the dump file (RDB persistence, or none), or as
/// the AOF's base (Redis 7's multi-part AOF: a fresh directory with the dump as
/// `<appendfilename>.1.base.rdb`, an empty incr file and a manifest; Redis 6:
/// the dump as the AOF file, an RDB preamble with nothing after it).
pub fn redis_install_cmd(p: &Persistence, staged: &str) -> Vec<String> {
    let script = r#"set -eu
staged=$1 dir=$2 dump=$3 aof=$4 aofdir=$5 aofname=$6
owner=$(stat -c %u:%g "$dir")
if [ "$aof" = yes ] && [ -n "$aofdir" ]; then
  new="$dir/.stackpilot-aof"
  rm -rf "$new"; mkdir "$new"
  mv "$staged" "$new/$aofname.1.base.rdb"
  : > "$new/$aofname.1.incr.aof"
  printf 'file %s seq 1 type b
file %s seq 1 type i
' "$aofname.1.base.rdb" "$aofname.1.incr.aof" > "$new/$aofname.manifest"
  chown -R "$owner" "$new"
  rm -rf "$dir/$aofdir"
  mv "$new" "$dir/$aofdir"
elif [ "$aof" = yes ]; then
  chown "$owner" "$staged"
  mv "$staged" "$dir/$aofname"
else
  chown "$owner" "$staged"
  mv "$staged" "$dir/$dump"
fi"#;
    strings(&[
        "sh",
        "-c",
        script,
        "sh",
        staged,
        &p.dir,
        &p.dbfilename,
        if p.appendonly { "yes" } else { "no" },
        p.appenddirname.as_deref().unwrap_or(""),
        &p.appendfilename,
    ])
}

/// `tar` of the volume to stdout.
pub fn volume_tar_cmd() -> Vec<String> {
    strings(&["tar", "-C", DATA_DIR, "-cf", "-", "."])
}

/// Empties the volume (dot files included), then unpacks stdin into it.
pub fn volume_restore_cmd() -> Vec<String> {
    strings(&[
        "sh",
        "-c",
        "rm -rf /data/..?* /data/.[!.]* /data/* && tar -C /data -xf -",
    ])
}

/// Regular files and directories (the root excluded), as tar counts them.
pub fn volume_counts_cmd() -> Vec<String> {
    strings(&[
        "sh",
        "-c",
        "printf 'files\\t%s\\n' \"$(find /data -type f | wc -l)\"; printf 'directories\\t%s\\n' \"$(find /data -mindepth 1 -type d | wc -l)\"",
    ])
}

/// Starts a helper container for a volume, trying the service's own image
/// first, then the stack's `backup_helper_image` (default busybox:stable);
/// an image is skipped when it is not present locally (never pulled) or lacks
/// the program. Returns the process and the image used.
pub async fn start_helper(
    engine: &dyn Engine,
    model: &StackModel,
    service_image: Option<&str>,
    cmd: Vec<String>,
    volume: Option<(String, bool)>,
    stdin: bool,
) -> Result<(Process, String), ToolError> {
    let configured = model
        .settings
        .backup_helper_image
        .clone()
        .unwrap_or_else(|| DEFAULT_HELPER_IMAGE.to_string());
    let mut candidates: Vec<String> = service_image.map(str::to_string).into_iter().collect();
    if !candidates.contains(&configured) {
        candidates.push(configured.clone());
    }
    let mut tried = Vec::new();
    for image in candidates {
        if !engine.image_present(&image).await {
            tried.push(format!("{image}: not present locally"));
            continue;
        }
        let spec = HelperSpec {
            image: image.clone(),
            cmd: cmd.clone(),
            volume: volume.clone(),
            stdin,
            network: None,
        };
        match engine.helper(&spec).await {
            Ok(p) => return Ok((p, image)),
            Err(e) if e.message.contains("not found") || e.message.contains("no such file") => {
                tried.push(format!(
                    "{image}: {}",
                    crate::domain::redact::cap(&e.message, 300)
                ));
            }
            Err(e) => return Err(e),
        }
    }
    let mut err = ToolError::external(format!(
        "no image to run `{}` in for a volume: the service's image lacks it and the helper image `{configured}` is not present",
        cmd.first().map(String::as_str).unwrap_or("tar")
    ))
    .next_step(format!(
        "load an image with sh and tar locally and name it in the top-level x-stackpilot block as backup_helper_image (default {DEFAULT_HELPER_IMAGE}); stackpilot never pulls"
    ));
    for t in tried {
        err = err.evidence(t);
    }
    Err(err)
}

/// Streams a stored file (decoded as asked) into a started process's stdin
/// and runs it to its end, keeping its stdout up to a cap. The file is read
/// to its end either way, so the sha256 and tar counts cover all of it.
pub async fn feed_process(
    process: Process,
    path: std::path::PathBuf,
    decode: Decode,
    count_tar: bool,
    ct: &CancellationToken,
) -> Result<(Result<ReadStats, ToolError>, Finished), ToolError> {
    let (rx, reader) = backup_store::spawn_reader(path, decode, count_tar, true, ct.clone());
    let finished = process::run(process, Stdout::Capture(CAPTURE), rx, ct).await;
    let stats = reader
        .await
        .map_err(|e| ToolError::internal(format!("backup reader thread: {e}")))?;
    Ok((stats, finished?))
}

/// Compares counts taken now with those recorded in the manifest.
pub fn compare_counts(
    expected: &BTreeMap<String, u64>,
    actual: &BTreeMap<String, u64>,
) -> Vec<CountMismatch> {
    let mut out = Vec::new();
    for (k, e) in expected {
        let a = actual.get(k).copied();
        if a != Some(*e) {
            out.push(CountMismatch {
                name: k.clone(),
                expected: Some(*e),
                actual: a,
            });
        }
    }
    out
}

/// One count that differs from the manifest.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct CountMismatch {
    /// `schema.table`, `db.collection`, or `files` / `directories`.
    pub name: String,
    /// Recorded at backup time (absent: not in the backup).
    pub expected: Option<u64>,
    /// Observed now (absent: missing now).
    pub actual: Option<u64>,
}

/// First line of a `--version` answer, bounded.
pub fn version_line(f: &Finished) -> String {
    let text = String::from_utf8_lossy(&f.stdout);
    let line = text
        .lines()
        .chain(f.stderr_tail.lines())
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown");
    crate::domain::redact::cap(line, 120)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_connection_follows_the_official_image() {
        let c = PgConn::from_env(&["PGUSER=postgres".into()]);
        assert_eq!(
            (c.user.as_str(), c.database.as_str()),
            ("postgres", "postgres")
        );
        let c = PgConn::from_env(&["POSTGRES_USER=app".into(), "POSTGRES_PASSWORD=x".into()]);
        assert_eq!((c.user.as_str(), c.database.as_str()), ("app", "app"));
        let c = PgConn::from_env(&["POSTGRES_USER=app".into(), "POSTGRES_DB=shop".into()]);
        assert_eq!(c.dump_cmd(), ["pg_dump", "-Fc", "-U", "app", "-d", "shop"]);
        assert!(c
            .restore_cmd()
            .contains(&"--single-transaction".to_string()));
    }

    #[test]
    fn counts_and_toc_parse() {
        let counts = parse_counts("public.a\t10\npublic.b\t0\n\n").expect("counts");
        assert_eq!(counts["public.a"], 10);
        assert_eq!(counts["public.b"], 0);
        assert!(parse_counts("garbage").is_err());
        let toc = ";\n; Archive created at ...\n215; 1259 16385 TABLE public items postgres\n3316; 0 16390 TABLE DATA public items postgres\n3317; 0 16391 TABLE DATA public orders postgres\n3318; 0 0 SEQUENCE SET public items_id_seq postgres\n";
        let (entries, tables) = parse_toc(toc);
        assert_eq!(entries, 4);
        assert_eq!(tables, ["public.items", "public.orders"]);
    }

    #[test]
    fn mongo_credentials_come_from_the_environment() {
        assert!(mongo_auth(&[]).is_empty());
        let env = vec![
            "MONGO_INITDB_ROOT_USERNAME=root".to_string(),
            "MONGO_INITDB_ROOT_PASSWORD=pw".to_string(),
        ];
        assert_eq!(
            mongodump_cmd(&env)[..3],
            ["mongodump", "--archive", "--gzip"]
        );
        assert!(mongorestore_cmd(&env).contains(&"--drop".to_string()));
        assert_eq!(mongo_auth(&env).len(), 6);
    }

    #[test]
    fn redis_passwords_never_reach_the_arguments() {
        let c = RedisConn::new(
            &[],
            &[
                "redis-server".into(),
                "--requirepass".into(),
                "s3cret".into(),
            ],
        );
        assert_eq!(c.exec_env(), ["REDISCLI_AUTH=s3cret"]);
        assert!(!c.cli(&["PING"]).iter().any(|a| a.contains("s3cret")));
        let c = RedisConn::new(&["REDIS_PASSWORD=fromenv".into()], &[]);
        assert_eq!(c.secrets(), ["fromenv"]);
        assert!(RedisConn::new(&[], &["redis-server".into()])
            .exec_env()
            .is_empty());
        let c = PgConn::from_env(&["POSTGRES_PASSWORD=pw".into()]);
        assert_eq!(c.exec_env(), ["PGPASSWORD=pw"]);
        assert!(!c.dump_cmd().iter().any(|a| a.contains("pw")));
    }

    #[test]
    fn mismatches_name_what_differs() {
        let e: BTreeMap<String, u64> = [("a".into(), 1), ("b".into(), 2)].into();
        let a: BTreeMap<String, u64> = [("a".into(), 1), ("c".into(), 5)].into();
        assert_eq!(
            compare_counts(&e, &a),
            [CountMismatch {
                name: "b".into(),
                expected: Some(2),
                actual: None
            }]
        );
    }
}
