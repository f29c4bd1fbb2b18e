//! The command line: `serve`, `tools export`, `healthcheck`, and every tool as
//! a subcommand (`stackpilot select-profile --model llama3.1:8b`). Tool flags
//! are derived from the tool's input schema, so the CLI cannot drift from MCP.
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Arg, ArgAction, Args, Parser, Subcommand};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::app::{App, Mode};
use crate::guard::token::Answer;
use crate::guard::{Call, ConfirmMode, Confirmer, Progress, Reply};
use crate::mcp::http::{HttpOptions, DEFAULT_MAX_BODY};
use crate::tools::def::ToolDef;
use crate::tools::list;

#[derive(Debug, Parser)]
#[command(name = "stackpilot", version, about = "MCP server for a local LLM stack on Docker Compose", after_help = tool_help())]
pub struct Cli {
    /// The stack directory (compose files and .env). Default: the bundled compose/ stack.
    #[arg(long, global = true, env = "STACKPILOT_STACK")]
    pub stack: Option<PathBuf>,
    /// Where the lock, audit log and confirmation key live. Default: <stack>/.stackpilot
    #[arg(long, global = true, env = "STACKPILOT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the stack runs: compose (default) or kubernetes. Default: the stack's
    /// x-stackpilot `target`, else compose.
    #[arg(long, global = true, env = "STACKPILOT_TARGET")]
    pub target: Option<String>,
    /// Kubernetes: the kubeconfig context (default: x-stackpilot kubernetes.context, else the
    /// kubeconfig's current context).
    #[arg(long, global = true, env = "STACKPILOT_KUBE_CONTEXT")]
    pub context: Option<String>,
    /// Kubernetes: the namespace (default: x-stackpilot kubernetes.namespace, else `default`).
    #[arg(long, global = true, env = "STACKPILOT_KUBE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_parser = ["text", "json"], default_value = "text")]
    pub log_format: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP over stdio (default) or Streamable HTTP (--http).
    Serve(ServeArgs),
    /// Tool definitions.
    Tools {
        #[command(subcommand)]
        command: ToolsCommand,
    },
    /// Exit 0 when the URL answers 200 (for container HEALTHCHECKs in images without curl).
    Healthcheck {
        #[arg(long, default_value = "http://127.0.0.1:7331/healthz")]
        url: String,
    },
    #[command(external_subcommand)]
    Tool(Vec<OsString>),
}

#[derive(Debug, Subcommand)]
pub enum ToolsCommand {
    /// Write one JSON file per tool (name, title, description, annotations, schemas) into DIR.
    Export { dir: PathBuf },
    /// List the tools with their annotations.
    List,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Serve Streamable HTTP on this address (e.g. 127.0.0.1:7331) instead of stdio.
    #[arg(long)]
    pub http: Option<std::net::SocketAddr>,
    /// Bearer token required on /mcp; mandatory when binding a non-loopback address.
    #[arg(long, env = "STACKPILOT_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Extra host names accepted in Host/Origin headers.
    #[arg(long = "allowed-host")]
    pub allowed_hosts: Vec<String>,
    /// Request body limit in bytes (413 past it).
    #[arg(long, default_value_t = DEFAULT_MAX_BODY)]
    pub max_body_bytes: usize,
    /// Do not list or run mutating tools.
    #[arg(long, conflicts_with = "allow_destructive")]
    pub read_only: bool,
    /// Run destructive plans without asking (scripted CI); each run is audited.
    #[arg(long)]
    pub allow_destructive: bool,
    /// Seconds a mutating call waits for the stack lock before answering busy.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout_s: u64,
}

fn tool_help() -> String {
    let mut s = String::from("Tools (each also a subcommand; --json for the tool's structured output, --yes to confirm):\n");
    for t in list::all() {
        s.push_str(&format!("  {:<18} {}\n", t.name.replace('_', "-"), t.title));
    }
    s
}

/// The bundled stack: `compose/` next to the binary's source tree, or the
/// current directory's `compose/`.
fn default_stack_dir() -> PathBuf {
    let here = PathBuf::from("compose");
    if here.join("docker-compose.yml").exists() {
        return here;
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compose")
}

/// Logs go to stderr only: on stdio, stdout carries nothing but JSON-RPC.
fn init_tracing(format: &str, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STACKPILOT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let _ = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stackpilot: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

fn open_app(cli: &Cli, mode: Mode) -> anyhow::Result<Arc<App>> {
    let dir = cli.stack.clone().unwrap_or_else(default_stack_dir);
    let stack = crate::adapters::stack_dir::open(&dir, cli.state_dir.as_deref())?;
    let declared = crate::adapters::stack_dir::declared_target(&stack);
    let target = crate::domain::kube::target::resolve(
        cli.target.as_deref(),
        cli.context.as_deref(),
        cli.namespace.as_deref(),
        &declared,
    )
    .map_err(|e| anyhow::anyhow!("{}", e.message))?;
    Ok(Arc::new(App::with_target(stack, mode, target)))
}

async fn run(cli: Cli) -> ExitCode {
    match &cli.command {
        Command::Serve(args) => {
            init_tracing(&cli.log_format, "info");
            let mode = Mode {
                read_only: args.read_only,
                allow_destructive: args.allow_destructive,
                lock_timeout: std::time::Duration::from_secs(args.lock_timeout_s),
                transport: if args.http.is_some() { "http" } else { "stdio" },
            };
            let result = match open_app(&cli, mode) {
                Ok(app) => match args.http {
                    Some(addr) => {
                        crate::mcp::http::serve(
                            app,
                            HttpOptions {
                                addr,
                                auth_token: args.auth_token.clone(),
                                max_body_bytes: args.max_body_bytes,
                                allowed_hosts: args.allowed_hosts.clone(),
                            },
                        )
                        .await
                    }
                    None => crate::mcp::stdio::serve(app).await,
                },
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("stackpilot: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Tools { command } => match command {
            ToolsCommand::Export { dir } => match export_tools(dir) {
                Ok(n) => {
                    println!("wrote {n} tool definitions to {}", dir.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("stackpilot: {e:#}");
                    ExitCode::from(1)
                }
            },
            ToolsCommand::List => {
                for t in list::all() {
                    let h = t.hints;
                    println!(
                        "{:<18} read_only={:<5} destructive={:<5} idempotent={:<5} open_world={:<5} {}",
                        t.name, h.read_only, h.destructive, h.idempotent, h.open_world, t.title
                    );
                }
                ExitCode::SUCCESS
            }
        },
        Command::Healthcheck { url } => healthcheck(url).await,
        Command::Tool(argv) => {
            init_tracing(&cli.log_format, "warn");
            run_tool_command(&cli, argv).await
        }
    }
}

async fn healthcheck(url: &str) -> ExitCode {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(_) => return ExitCode::from(1),
    };
    match client.get(url).send().await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("unhealthy: {} answered {}", url, r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            ExitCode::from(1)
        }
    }
}

pub fn export_tools(dir: &Path) -> anyhow::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let tools = list::all();
    for t in tools {
        let mut text = serde_json::to_string_pretty(&t.export())?;
        text.push('\n');
        std::fs::write(dir.join(format!("{}.json", t.name)), text)?;
    }
    Ok(tools.len())
}

/// How a schema property is given on the command line.
enum Kind {
    Flag,
    List,
    Text,
    Json,
}

fn kind_of(prop: &Value) -> Kind {
    let types: Vec<&str> = match prop.get("type") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if types.contains(&"boolean") {
        Kind::Flag
    } else if types.contains(&"array") {
        Kind::List
    } else if types.contains(&"string") && types.iter().all(|t| *t == "string" || *t == "null") {
        Kind::Text
    } else {
        Kind::Json
    }
}

fn tool_command(def: &ToolDef) -> clap::Command {
    let schema = (def.input_schema)();
    let mut cmd = clap::Command::new(def.name.replace('_', "-"))
        .about(def.description)
        .no_binary_name(true)
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the tool's structured output as JSON"),
        )
        .arg(
            Arg::new("yes")
                .long("yes")
                .action(ArgAction::SetTrue)
                .help("Confirm destructive steps"),
        )
        .arg(
            Arg::new("args-json")
                .long("args-json")
                .value_name("JSON")
                .help("All arguments as one JSON object"),
        )
        .arg(
            Arg::new("stack")
                .long("stack")
                .value_name("DIR")
                .help("The stack directory"),
        )
        .arg(
            Arg::new("state-dir")
                .long("state-dir")
                .value_name("DIR")
                .help("The state directory"),
        )
        .arg(
            Arg::new("lock-timeout-s")
                .long("lock-timeout-s")
                .value_name("SECONDS")
                .value_parser(clap::value_parser!(u64))
                .help("Seconds to wait for the stack lock before answering busy (default 30)"),
        );
    if let Some(Value::Object(props)) = schema.get("properties") {
        for (name, prop) in props {
            let flag = name.replace('_', "-");
            let help = prop
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let arg = Arg::new(name.clone()).long(flag).help(help);
            let arg = match kind_of(prop) {
                Kind::Flag => arg.action(ArgAction::SetTrue),
                Kind::List => arg
                    .value_delimiter(',')
                    .action(ArgAction::Append)
                    .value_name("A,B"),
                Kind::Text => arg.value_name("TEXT"),
                Kind::Json => arg.value_name("VALUE"),
            };
            cmd = cmd.arg(arg);
        }
    }
    cmd
}

fn scalar(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn args_from_matches(def: &ToolDef, m: &clap::ArgMatches) -> Result<Value, String> {
    let mut args = match m.get_one::<String>("args-json") {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(o)) => o,
            _ => return Err("--args-json must be a JSON object".into()),
        },
        None => Map::new(),
    };
    let schema = (def.input_schema)();
    if let Some(Value::Object(props)) = schema.get("properties") {
        for (name, prop) in props {
            match kind_of(prop) {
                Kind::Flag => {
                    if m.get_flag(name) {
                        args.insert(name.clone(), Value::Bool(true));
                    }
                }
                Kind::List => {
                    if let Some(values) = m.get_many::<String>(name) {
                        args.insert(
                            name.clone(),
                            Value::Array(values.map(|v| scalar(v)).collect()),
                        );
                    }
                }
                Kind::Text => {
                    if let Some(v) = m.get_one::<String>(name) {
                        args.insert(name.clone(), Value::String(v.clone()));
                    }
                }
                Kind::Json => {
                    if let Some(v) = m.get_one::<String>(name) {
                        args.insert(name.clone(), scalar(v));
                    }
                }
            }
        }
    }
    Ok(Value::Object(args))
}

struct CliProgress;
impl Progress for CliProgress {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let pct = total
            .filter(|t| *t > 0.0)
            .map(|t| format!(" {:.0}%", 100.0 * progress / t))
            .unwrap_or_default();
        eprintln!("progress{pct} {}", message.unwrap_or_default());
    }
}

struct CliConfirmer {
    mode: ConfirmMode,
}

impl Confirmer for CliConfirmer {
    fn mode(&self) -> ConfirmMode {
        self.mode
    }
    fn ask(&self, text: String) -> BoxFuture<'_, Result<Answer, String>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut err = std::io::stderr();
                let _ = write!(err, "{text}\nRun this plan? [y/N] ");
                let _ = err.flush();
                let mut line = String::new();
                match std::io::stdin().read_line(&mut line) {
                    Ok(0) => Ok(Answer::Cancel),
                    Ok(_) if matches!(line.trim(), "y" | "Y" | "yes") => Ok(Answer::Accept),
                    Ok(_) => Ok(Answer::Decline),
                    Err(e) => Err(e.to_string()),
                }
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

/// Exit codes: 0 done, 1 tool error, 2 usage error, 3 not run (confirmation
/// required or declined: nothing changed).
async fn run_tool_command(cli: &Cli, argv: &[OsString]) -> ExitCode {
    let Some(name) = argv.first().and_then(|s| s.to_str()) else {
        eprintln!("stackpilot: missing tool name\n{}", tool_help());
        return ExitCode::from(2);
    };
    let Some(def) = list::find(&name.replace('-', "_")) else {
        eprintln!("stackpilot: unknown command `{name}`\n{}", tool_help());
        return ExitCode::from(2);
    };
    let matches = match tool_command(def).try_get_matches_from(&argv[1..]) {
        Ok(m) => m,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let as_json = matches.get_flag("json");
    let args = match args_from_matches(def, &matches) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stackpilot: {e}");
            return ExitCode::from(2);
        }
    };
    let mut mode = Mode {
        transport: "cli",
        ..Mode::default()
    };
    if let Some(secs) = matches.get_one::<u64>("lock-timeout-s") {
        mode.lock_timeout = std::time::Duration::from_secs(*secs);
    }
    let cli = Cli {
        stack: matches
            .get_one::<String>("stack")
            .map(PathBuf::from)
            .or_else(|| cli.stack.clone()),
        state_dir: matches
            .get_one::<String>("state-dir")
            .map(PathBuf::from)
            .or_else(|| cli.state_dir.clone()),
        target: cli.target.clone(),
        context: cli.context.clone(),
        namespace: cli.namespace.clone(),
        log_format: cli.log_format.clone(),
        command: Command::Tool(Vec::new()),
    };
    let app = match open_app(&cli, mode) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stackpilot: {e:#}");
            return ExitCode::from(1);
        }
    };
    let confirm_mode = if matches.get_flag("yes") {
        ConfirmMode::Yes
    } else if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() && !as_json {
        ConfirmMode::Elicit
    } else {
        ConfirmMode::TokenOnly
    };
    // Ctrl-C cancels the call (a pull stops and reports what it kept) instead
    // of killing the process mid-step.
    let ct = CancellationToken::new();
    let on_interrupt = ct.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let call = Arc::new(Call::new(
        app,
        def.name,
        Arc::new(CliProgress),
        Arc::new(CliConfirmer { mode: confirm_mode }),
        ct,
        None,
    ));
    let result = crate::mcp::run_tool(def, call, args).await;
    let (value, code) = match result {
        Ok(Reply::Done(v)) => {
            let halted = v.get("confirmation_required").is_some() || v.get("declined").is_some();
            (v, if halted { 3 } else { 0 })
        }
        Ok(Reply::InputRequired { .. }) => (Value::Null, 3),
        Err(e) => (serde_json::json!({ "error": e }), 1),
    };
    if as_json {
        println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        print!("{}", render_table(&value));
        if let Some(token) = value.get("confirm_token").and_then(Value::as_str) {
            eprintln!(
                "\nNothing was changed. To run this plan: add --confirm-token {token} (or --yes)."
            );
        }
    }
    ExitCode::from(code)
}

/// A readable two-column view of any structured output.
pub fn render_table(value: &Value) -> String {
    let mut rows: Vec<(String, String)> = Vec::new();
    flatten("", value, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).min(48);
    rows.into_iter()
        .map(|(k, v)| format!("{k:<width$}  {v}\n"))
        .collect()
}

fn flatten(prefix: &str, value: &Value, rows: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, rows);
            }
        }
        Value::Array(items)
            if items.iter().all(|i| !i.is_object() && !i.is_array())
                && items.iter().map(|i| scalar_text(i).len()).sum::<usize>() < 100 =>
        {
            let text: Vec<String> = items.iter().map(scalar_text).collect();
            rows.push((
                prefix.to_string(),
                if text.is_empty() {
                    "-".into()
                } else {
                    text.join(", ")
                },
            ));
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), v, rows);
            }
        }
        other => rows.push((prefix.to_string(), scalar_text(other))),
    }
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}
