//! The MCP face: tool and prompt routing over the registry, the per-call
//! confirmer (elicitation, input-required, or token) and progress sink, and one
//! audit line per mutating call. Transports (stdio, HTTP) serve this handler.
pub mod audit;
pub mod prompts;

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ErrorData, GetPromptRequestParams, GetPromptResponse, Implementation,
    InputRequest, InputRequests, InputRequiredResult, ListPromptsResult, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProgressToken, ProtocolVersion,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{ElicitationError, Peer, RequestContext, RoleServer};
use rmcp::ServerHandler;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::app::App;
use crate::call::{Call, ConfirmMode, Confirmer, InputRetry, Progress, Reply};
use crate::error::{ErrorKind, ToolError};
use crate::guard::Answer;
use crate::registry::{self, ToolDef};

/// The key of our one elicitation in an input-required result.
const CONFIRM_KEY: &str = "confirm";

#[derive(Clone)]
pub struct StackpilotServer {
    app: Arc<App>,
}

impl StackpilotServer {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }

    fn visible(&self) -> Vec<&'static ToolDef> {
        registry::all()
            .into_iter()
            .filter(|t| !(self.app.mode.read_only && t.mutating()))
            .collect()
    }
}

/// The form a person fills to confirm a plan.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmForm {
    /// Tick to run the plan described in the message.
    pub confirm: bool,
}
rmcp::elicit_safe!(ConfirmForm);

struct McpConfirmer {
    peer: Peer<RoleServer>,
    mode: ConfirmMode,
}

impl Confirmer for McpConfirmer {
    fn mode(&self) -> ConfirmMode {
        self.mode
    }

    fn ask(&self, text: String) -> BoxFuture<'_, Result<Answer, String>> {
        Box::pin(async move {
            match self.peer.elicit::<ConfirmForm>(text).await {
                Ok(Some(form)) if form.confirm => Ok(Answer::Accept),
                Ok(_) => Ok(Answer::Decline),
                Err(ElicitationError::UserDeclined) => Ok(Answer::Decline),
                Err(ElicitationError::UserCancelled) => Ok(Answer::Cancel),
                Err(other) => Err(other.to_string()),
            }
        })
    }
}

/// Progress notifications for one call, delivered in the order they were
/// reported: one forwarding task per call drains a queue, so two reports
/// never race each other to the transport (a task per notification could).
/// The task starts with the first report (most calls report nothing) and ends
/// when the call, and with it the sender, is dropped.
struct McpProgress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    queue: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<ProgressNotificationParam>>,
}

impl McpProgress {
    fn new(peer: Peer<RoleServer>, token: Option<ProgressToken>) -> Self {
        Self {
            peer,
            token,
            queue: std::sync::OnceLock::new(),
        }
    }

    fn queue(&self) -> &tokio::sync::mpsc::UnboundedSender<ProgressNotificationParam> {
        self.queue.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ProgressNotificationParam>();
            let peer = self.peer.clone();
            tokio::spawn(async move {
                while let Some(param) = rx.recv().await {
                    if peer.notify_progress(param).await.is_err() {
                        break;
                    }
                }
            });
            tx
        })
    }
}

impl Progress for McpProgress {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let mut param = ProgressNotificationParam::new(token, progress);
        param.total = total;
        param.message = message;
        let _ = self.queue().send(param);
    }
}

fn confirm_mode(context: &RequestContext<RoleServer>) -> ConfirmMode {
    let elicitation = context
        .client_capabilities()
        .and_then(|c| c.elicitation)
        .map(|e| e.form.is_some() || e.url.is_none())
        .unwrap_or(false);
    let modern = context
        .protocol_version()
        .map(|v| v >= ProtocolVersion::V_2026_07_28)
        .unwrap_or(false);
    match (elicitation, modern) {
        (true, true) => ConfirmMode::InputRequired,
        (true, false) => ConfirmMode::Elicit,
        _ => ConfirmMode::TokenOnly,
    }
}

fn answer_of(response: &Value) -> Option<Answer> {
    match response.get("action").and_then(Value::as_str)? {
        "accept" => {
            let confirmed = response
                .get("content")
                .and_then(|c| c.get("confirm"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Some(if confirmed {
                Answer::Accept
            } else {
                Answer::Decline
            })
        }
        "decline" => Some(Answer::Decline),
        _ => Some(Answer::Cancel),
    }
}

/// A tool failure as a result the agent can act on.
pub fn error_result(err: &ToolError) -> CallToolResult {
    let mut text = err.message.clone();
    if let Some(step) = &err.next_step {
        text.push_str(&format!("\nnext step: {step}"));
    }
    let mut result = CallToolResult::error(vec![ContentBlock::text(text)]);
    result.structured_content = Some(serde_json::json!({ "error": err }));
    result
}

fn done_result(value: Value) -> CallToolResult {
    let text = serde_json::to_string_pretty(&value).unwrap_or_default();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

fn input_required(state: String, message: String) -> Result<InputRequiredResult, ErrorData> {
    let schema = serde_json::from_value(serde_json::json!({
        "type": "object",
        "properties": {
            "confirm": { "type": "boolean", "title": "Run this plan", "description": "Tick to run the plan described in the message." }
        },
        "required": ["confirm"]
    }))
    .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
    let mut requests = InputRequests::new();
    requests.insert(
        CONFIRM_KEY.to_string(),
        InputRequest::Elicitation(ElicitRequest::new(
            ElicitRequestParams::FormElicitationParams {
                meta: None,
                message,
                requested_schema: schema,
            },
        )),
    );
    Ok(InputRequiredResult::new(Some(requests), Some(state)))
}

/// Runs one tool for any face and writes the audit line for mutating tools.
pub async fn run_tool(
    def: &'static ToolDef,
    call: Arc<Call>,
    args: Value,
) -> Result<Reply, ToolError> {
    let started = Instant::now();
    let audit_args = crate::redact::redact_json(&args);
    let result = (def.run)(call.clone(), args).await;
    tracing::info!(
        tool = def.name,
        duration_ms = started.elapsed().as_millis() as u64,
        outcome = if result.is_ok() { "ok" } else { "error" },
        "tool call"
    );
    if def.mutating() {
        audit::write(&call, def.name, audit_args, &result, started.elapsed());
    }
    result
}

impl ServerHandler for StackpilotServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_prompts().build())
            .with_server_info(Implementation::new("stackpilot", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "stackpilot provisions and operates a local LLM stack on Docker Compose. Start with \
                 detect_hardware and select_profile. Mutating tools plan first; destructive plans need a \
                 person's confirmation (elicitation, or return the confirm_token after showing them the plan).",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.visible().iter().map(|t| t.to_mcp()).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.visible()
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| t.to_mcp())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let Some(def) = registry::find(&name) else {
            let known: Vec<&str> = self.visible().iter().map(|t| t.name).collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; tools: {}",
                    crate::redact::cap(&name, 100),
                    known.join(", ")
                ),
                None,
            ));
        };
        if self.app.mode.read_only && def.mutating() {
            let err = ToolError::new(
                ErrorKind::NotAllowed,
                format!("`{name}` changes the stack and this server runs with --read-only"),
            )
            .next_step("restart stackpilot without --read-only to use mutating tools");
            return Ok(error_result(&err).into());
        }
        let retry = request.request_state.clone().map(|state| InputRetry {
            state,
            answer: request
                .input_responses
                .as_ref()
                .and_then(|r| r.get(CONFIRM_KEY))
                .and_then(answer_of),
        });
        let call = Arc::new(Call::new(
            self.app.clone(),
            def.name,
            Arc::new(McpProgress::new(
                context.peer.clone(),
                context.meta.get_progress_token(),
            )),
            Arc::new(McpConfirmer {
                peer: context.peer.clone(),
                mode: confirm_mode(&context),
            }),
            context.ct.clone(),
            retry,
        ));
        let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        match run_tool(def, call, args).await {
            Ok(Reply::Done(value)) => Ok(done_result(value).into()),
            Ok(Reply::InputRequired { state, message }) => {
                Ok(input_required(state, message)?.into())
            }
            Err(err) => Ok(error_result(&err).into()),
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        Ok(ListPromptsResult::with_all_items(
            prompts::all().iter().map(|p| p.to_mcp()).collect(),
        ))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        prompts::render(&request.name, request.arguments.as_ref())
            .map(GetPromptResponse::from)
            .map_err(|e| ErrorData::invalid_params(e.message, None))
    }
}
