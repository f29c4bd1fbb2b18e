//! The command line: `serve`, `tools export`, `healthcheck`, and every tool as
//! a subcommand (tool.rs). What a person reads is rendered in render.rs and
//! views.rs; progress bars and lines are progress.rs.
mod progress;
mod render;
mod tool;
mod views;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};

use crate::app::{App, Mode};
use crate::mcp::http::{HttpOptions, DEFAULT_MAX_BODY};
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
    /// Live MCP sessions (2025-11-25 era) at most; `initialize` past it gets 503.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_sessions: u32,
    /// Live MCP sessions per client address at most; past it 429.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_sessions_per_client: u32,
    /// Seconds an idle session lives while the session table is at most a quarter full
    /// (it shrinks to 10 s as the table fills).
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    pub session_idle_s: u64,
    /// Do not list or run mutating tools (STACKPILOT_READ_ONLY=true does the same; an mcpb
    /// bundle's user setting sets it).
    #[arg(
        long,
        env = "STACKPILOT_READ_ONLY",
        conflicts_with = "allow_destructive"
    )]
    pub read_only: bool,
    /// Run destructive plans without asking (scripted CI); each run is audited.
    #[arg(long)]
    pub allow_destructive: bool,
    /// Seconds a mutating call waits for the stack lock before answering busy.
    #[arg(long, default_value_t = 30)]
    pub lock_timeout_s: u64,
}

pub(crate) fn tool_help() -> String {
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
    crate::adapters::logging::init(format, default_level);
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

pub(crate) fn open_app(cli: &Cli, mode: Mode) -> anyhow::Result<Arc<App>> {
    let dir = cli.stack.clone().unwrap_or_else(default_stack_dir);
    let stack = crate::adapters::stack_dir::open(&dir, cli.state_dir.as_deref())?;
    let declared = crate::adapters::stack_dir::declared_target(&stack);
    let target = crate::domain::kubernetes::target::resolve(
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
            // The tool definitions are built while the client connects, so
            // the first tools/list finds them ready.
            std::thread::spawn(list::warm);
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
                                sessions: crate::mcp::sessions::SessionLimits {
                                    max_sessions: args.max_sessions as usize,
                                    max_per_client: args.max_sessions_per_client as usize,
                                    idle: std::time::Duration::from_secs(args.session_idle_s),
                                    idle_min: std::time::Duration::from_secs(10),
                                },
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
                print!("{}", tools_table());
                ExitCode::SUCCESS
            }
        },
        Command::Healthcheck { url } => healthcheck(url).await,
        Command::Tool(argv) => {
            init_tracing(&cli.log_format, "warn");
            tool::run(&cli, argv).await
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

/// `tools list`: one row per tool with its annotations.
fn tools_table() -> String {
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let rows = list::all()
        .iter()
        .map(|t| {
            let h = t.hints;
            vec![
                t.name.to_string(),
                yes(h.read_only),
                yes(h.destructive),
                yes(h.idempotent),
                yes(h.open_world),
                t.title.to_string(),
            ]
        })
        .collect();
    let mut doc = render::Doc::default();
    doc.table(
        "tools",
        &[
            "name",
            "read-only",
            "destructive",
            "idempotent",
            "open world",
            "title",
        ],
        rows,
    );
    doc.to_text(None)
}
