//! Every tool as a subcommand (`stackpilot select-profile --model llama3.1:8b`):
//! flags derived from the tool's input schema, so the CLI cannot drift from
//! MCP; the result printed for a person (render.rs) or, with `--json`,
//! exactly as the tool's structured output.
use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Arg, ArgAction};
use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::app::Mode;
use crate::guard::token::Answer;
use crate::guard::{Call, ConfirmMode, Confirmer, Reply};
use crate::tools::def::ToolDef;
use crate::tools::list;

use super::progress::CliProgress;
use super::{open_app, render, tool_help, Cli, Command};

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

/// Asks on the terminal (stderr, stdin), with any progress bar put aside.
struct CliConfirmer {
    mode: ConfirmMode,
    progress: Arc<CliProgress>,
}

impl Confirmer for CliConfirmer {
    fn mode(&self) -> ConfirmMode {
        self.mode
    }
    fn ask(&self, text: String) -> BoxFuture<'_, Result<Answer, String>> {
        let progress = self.progress.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                progress.suspend(|| {
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
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }
}

/// The width tables wrap to: the terminal's, when stdout is one.
fn terminal_width() -> Option<u16> {
    if !std::io::stdout().is_terminal() {
        return None;
    }
    console::Term::stdout()
        .size_checked()
        .map(|(_, cols)| cols)
        .filter(|c| *c >= 40)
}

/// Runs `stackpilot <tool> ...`. Exit codes: 0 done, 1 tool error, 2 usage
/// error, 3 not run (confirmation required or declined: nothing changed).
pub async fn run(cli: &Cli, argv: &[OsString]) -> ExitCode {
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
    // Bars for a person at a terminal; plain lines for logs and pipes.
    let bars = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let progress = Arc::new(CliProgress::new(def.name, bars));
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
        progress.clone(),
        Arc::new(CliConfirmer {
            mode: confirm_mode,
            progress: progress.clone(),
        }),
        ct,
        None,
    ));
    let result = crate::mcp::run_tool(def, call.clone(), args).await;
    progress.finish();
    for n in call.notices() {
        eprintln!("note: {n}");
    }
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
        return ExitCode::from(code);
    }
    if let Some(err) = value.get("error") {
        eprintln!("{}", render::error_line(err));
        return ExitCode::from(code);
    }
    print!(
        "{}",
        render::render(def.name, &value).to_text(terminal_width())
    );
    if let Some(token) = value.get("confirm_token").and_then(Value::as_str) {
        eprintln!(
            "\nNothing was changed. To run this plan: add --confirm-token {token} (or --yes)."
        );
    }
    ExitCode::from(code)
}
