//! Long tools as tasks (the MCP Tasks extension, `io.modelcontextprotocol/
//! tasks`, SEP-2663): when the client declares the extension, a call of a
//! long tool answers at once with a task handle and runs in the background.
//! `tasks/get` shows its status and latest progress message, `tasks/cancel`
//! cancels it with the same cleanup as a cancelled call, and its result
//! stays retrievable for the task's TTL. The task belongs to the server
//! process, not to the request or the HTTP connection: a client that went
//! away finds it again by id over a new connection.
//!
//! A confirmation inside a task is the task's `input_required` state: the
//! person's answer comes back through `tasks/update`; the guard fails closed
//! as always (nothing runs on no answer, decline or cancel). Mutations stay
//! serialized by the stack lock; a task waits for it, then answers `busy`,
//! exactly as a call does.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolResult, ContentBlock, ElicitRequest, ElicitRequestParams, InputRequest, Task,
};
use rmcp::service::{Peer, RoleServer};
use rmcp::task_manager::{TaskContext, TaskExit, TaskManager, TaskOptions};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::guard::token::Answer;
use crate::guard::{Call, ConfirmMode, Confirmer, Progress, Reply};
use crate::tools::def::ToolDef;

/// The tools that may run as tasks (they can take minutes).
pub const LONG_TOOLS: [&str; 12] = [
    "backup",
    "compose_down",
    "compose_up",
    "deploy",
    "kube_apply",
    "pull_model",
    "recover",
    "restore",
    "rollback",
    "run_task",
    "set_kv_cache",
    "verify_backup",
];

/// How long a task lives (from its creation; it is kept as long again once
/// done, for pollers).
pub const TTL_MS: u64 = 2 * 60 * 60 * 1000;

/// How often clients are told to poll.
pub const POLL_MS: u64 = 1000;

/// How long a cancelled task's tool may take to clean up before the task
/// settles as cancelled anyway.
const CLEANUP: Duration = Duration::from_secs(60);

pub fn eligible(tool: &str) -> bool {
    LONG_TOOLS.contains(&tool)
}

/// Progress becomes the task's status message.
struct TaskProgress {
    ctx: TaskContext,
    tool: &'static str,
}

impl Progress for TaskProgress {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let text = match (message, total) {
            (Some(m), _) => m,
            (None, Some(t)) => format!("{progress:.0} of {t:.0}"),
            (None, None) => format!("{progress:.0}"),
        };
        self.ctx
            .set_status_message(format!("{}: {text}", self.tool));
    }
}

/// How a task asks a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// The task's `input_required` state, answered by `tasks/update`
    /// (2026-07-28).
    InputRequired,
    /// An elicitation request on the session that created the task
    /// (2025-11-25 clients that declared elicitation).
    Elicit,
    /// Nobody can be asked: the plan and its token are the task's result.
    TokenOnly,
}

struct TaskConfirmer {
    ctx: TaskContext,
    ask: Ask,
    peer: Peer<RoleServer>,
    asked: AtomicUsize,
}

impl Confirmer for TaskConfirmer {
    fn mode(&self) -> ConfirmMode {
        match self.ask {
            Ask::TokenOnly => ConfirmMode::TokenOnly,
            _ => ConfirmMode::Elicit,
        }
    }

    fn ask(&self, text: String) -> BoxFuture<'_, Result<Answer, String>> {
        Box::pin(async move {
            if self.ask == Ask::Elicit {
                self.ctx
                    .set_status_message("waiting for a person to confirm the plan");
                return crate::mcp::elicit(&self.peer, text).await;
            }
            let n = self.asked.fetch_add(1, Ordering::Relaxed);
            let request = InputRequest::Elicitation(ElicitRequest::new(
                ElicitRequestParams::FormElicitationParams {
                    meta: None,
                    message: text,
                    requested_schema: crate::mcp::confirm_schema()?,
                },
            ));
            self.ctx
                .set_status_message("waiting for a person to confirm the plan");
            let answer = self
                .ctx
                .request_input(format!("{}-{n}", crate::mcp::CONFIRM_KEY), request)
                .await
                .map_err(|_| "the task was cancelled while asking".to_string())?;
            crate::mcp::answer_of(&answer)
                .ok_or_else(|| "the client answered without an action".to_string())
        })
    }
}

/// Starts `def` as a task; the handle is observable before this returns.
pub fn spawn(
    manager: &TaskManager,
    app: Arc<App>,
    def: &'static ToolDef,
    args: Value,
    ask: Ask,
    peer: Peer<RoleServer>,
) -> Task {
    let options = TaskOptions::new()
        .with_ttl_ms(TTL_MS)
        .with_poll_interval_ms(POLL_MS)
        .with_status_message(format!("{}: started", def.name));
    manager.spawn(options, move |ctx| {
        Box::pin(async move {
            let ct = CancellationToken::new();
            let call = Arc::new(Call::new(
                app,
                def.name,
                Arc::new(TaskProgress {
                    ctx: ctx.clone(),
                    tool: def.name,
                }),
                Arc::new(TaskConfirmer {
                    ctx: ctx.clone(),
                    ask,
                    peer,
                    asked: AtomicUsize::new(0),
                }),
                ct.clone(),
                None,
            ));
            let mut run = Box::pin(crate::mcp::run_tool(def, call.clone(), args));
            let result = tokio::select! {
                r = &mut run => r,
                _ = ctx.cancelled() => {
                    // The same cleanup as a cancelled call: the tool sees its
                    // cancellation token and stops what it runs.
                    ct.cancel();
                    let _ = tokio::time::timeout(CLEANUP, &mut run).await;
                    return Err(TaskExit::Cancelled);
                }
            };
            let mut out: CallToolResult = match result {
                Ok(Reply::Done(value)) => crate::mcp::done_result(value),
                // A task never returns input-required: its confirmer asks in place.
                Ok(Reply::InputRequired { message, .. }) => {
                    crate::mcp::error_result(&crate::domain::error::ToolError::internal(format!(
                        "a task cannot hand back an input request: {message}"
                    )))
                }
                Err(e) => crate::mcp::error_result(&e),
            };
            for n in call.notices() {
                out.content.push(ContentBlock::text(format!("note: {n}")));
            }
            ctx.set_status_message(format!("{}: finished", def.name));
            Ok(out)
        })
    })
}

/// The `_meta` mark of a tool that may run as a task (rmcp's `Tool` has no
/// `execution` field in the extension era; the extension's own key carries
/// it).
pub fn annotate(mut tool: rmcp::model::Tool) -> rmcp::model::Tool {
    if eligible(&tool.name) {
        let mut meta = tool.meta.take().unwrap_or_default();
        meta.0.insert(
            rmcp::model::TASKS_EXTENSION_ID.to_string(),
            serde_json::json!({"taskSupport": "optional"}),
        );
        tool.meta = Some(meta);
    }
    tool
}
