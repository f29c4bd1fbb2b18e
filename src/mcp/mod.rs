//! The MCP face: tool and prompt routing over the tool table, the per-call
//! confirmer (elicitation, input-required, or token) and progress sink, one
//! audit line per mutating call; long tools as tasks (`tasks`), resources
//! with live updates (`resources`, `live`), argument completion
//! (`completion`), and log messages for clients that set a level.
//! Transports (stdio, HTTP) serve this handler.
pub mod audit;
pub mod completion;
pub mod http;
pub mod jsonrpc;
pub mod live;
pub mod prompts;
pub mod resources;
pub mod sessions;
pub mod stdio;
pub mod tasks;

use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ElicitRequest,
    ElicitRequestParams, ElicitationSchema, ErrorData, GetPromptRequestParams, GetPromptResponse,
    Implementation, InputRequest, InputRequests, InputRequiredResult, ListPromptsResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
    ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::model::{
    CancelTaskParams, CompleteRequestParams, CompleteResult, CompletionInfo, CreateTaskResult,
    GetTaskParams, GetTaskResult, ListResourceTemplatesResult, ListResourcesResult,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, SubscribeRequestParams,
    SubscriptionFilter, UnsubscribeRequestParams, UpdateTaskParams,
};
#[allow(deprecated)]
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam, SetLevelRequestParams};
use rmcp::service::{Peer, RequestContext, RoleServer, SubscriptionContext};
use rmcp::task_manager::TaskManager;
use rmcp::ServerHandler;
use serde_json::Value;

use crate::app::App;
use crate::domain::error::{ErrorKind, ToolError};
use crate::guard::token::Answer;
use crate::guard::{Call, ConfirmMode, Confirmer, InputRetry, Progress, Reply};
use crate::tools::def::ToolDef;
use crate::tools::list;

/// The key of our one elicitation in an input-required result.
pub(crate) const CONFIRM_KEY: &str = "confirm";

/// What every session of one server process shares: its tasks (found by id
/// from any connection) and its live subscriptions.
pub struct Shared {
    pub tasks: TaskManager,
    pub live: Arc<live::Live>,
}

impl Shared {
    pub fn new(app: Arc<App>) -> Arc<Self> {
        Arc::new(Self {
            tasks: TaskManager::new(),
            live: live::Live::new(app),
        })
    }
}

#[derive(Clone)]
pub struct StackpilotServer {
    app: Arc<App>,
    shared: Arc<Shared>,
    /// This session's 2025-11-25 resource subscription (one per session,
    /// growing a URI at a time).
    legacy_sub: Arc<std::sync::Mutex<Option<u64>>>,
    /// The level this session asked log messages at (`logging/setLevel`).
    #[allow(deprecated)]
    log_level: Arc<std::sync::Mutex<Option<LoggingLevel>>>,
}

impl StackpilotServer {
    pub fn new(app: Arc<App>) -> Self {
        let shared = Shared::new(app.clone());
        Self::with_shared(app, shared)
    }

    pub fn with_shared(app: Arc<App>, shared: Arc<Shared>) -> Self {
        Self {
            app,
            shared,
            legacy_sub: Default::default(),
            log_level: Default::default(),
        }
    }

    /// Tells a client that asked for log messages (`logging/setLevel` at
    /// `info` or below) how a tool call ended: one line per call.
    #[allow(deprecated)]
    fn log_call(&self, peer: &Peer<RoleServer>, tool: &str, outcome: &str, started: Instant) {
        let wanted = self.log_level.lock().ok().and_then(|l| *l);
        let Some(level) = wanted else { return };
        let at = if outcome == "error" {
            LoggingLevel::Error
        } else {
            LoggingLevel::Info
        };
        if severity(at) < severity(level) {
            return;
        }
        let mut param = LoggingMessageNotificationParam::new(
            at,
            serde_json::json!({
                "tool": tool,
                "outcome": outcome,
                "duration_ms": started.elapsed().as_millis() as u64,
            }),
        );
        param.logger = Some("stackpilot".into());
        let peer = peer.clone();
        tokio::spawn(async move {
            let _ = peer.notify_logging_message(param).await;
        });
    }

    fn visible(&self) -> Vec<&'static ToolDef> {
        list::all()
            .iter()
            .copied()
            .filter(|t| !self.app.mode.read_only || t.available_read_only())
            .collect()
    }
}

/// RFC 5424 order: debug lowest.
#[allow(deprecated)]
fn severity(level: LoggingLevel) -> u8 {
    match level {
        LoggingLevel::Debug => 0,
        LoggingLevel::Info => 1,
        LoggingLevel::Notice => 2,
        LoggingLevel::Warning => 3,
        LoggingLevel::Error => 4,
        LoggingLevel::Critical => 5,
        LoggingLevel::Alert => 6,
        LoggingLevel::Emergency => 7,
    }
}

fn poisoned() -> ErrorData {
    ErrorData::internal_error("a lock was poisoned", None)
}

/// The form a person fills to confirm a plan; the same in both protocol eras.
pub(crate) fn confirm_schema() -> Result<ElicitationSchema, String> {
    serde_json::from_value(serde_json::json!({
        "type": "object",
        "properties": {
            "confirm": {
                "type": "boolean",
                "title": "Run this plan",
                "description": "Tick to run the plan described in the message."
            }
        },
        "required": ["confirm"]
    }))
    .map_err(|e| e.to_string())
}

/// How long a person has to answer an elicitation (the confirm token's lifetime).
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

struct McpConfirmer {
    peer: Peer<RoleServer>,
    mode: ConfirmMode,
}

impl Confirmer for McpConfirmer {
    fn mode(&self) -> ConfirmMode {
        self.mode
    }

    fn ask(&self, text: String) -> BoxFuture<'_, Result<Answer, String>> {
        Box::pin(elicit(&self.peer, text))
    }
}

/// Asks the person behind `peer` to confirm a plan (an elicitation request).
pub(crate) async fn elicit(peer: &Peer<RoleServer>, text: String) -> Result<Answer, String> {
    let params = ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: text,
        requested_schema: confirm_schema()?,
    };
    let result = peer
        .create_elicitation_with_timeout(params, Some(ASK_TIMEOUT))
        .await
        .map_err(|e| e.to_string())?;
    let value = serde_json::to_value(&result).map_err(|e| e.to_string())?;
    answer_of(&value).ok_or_else(|| "the client answered without an action".to_string())
}

/// Sends a call's progress notifications in the order they were reported
/// (MCP requires progress to increase): one forwarding task per call, made on
/// the first report, ending when the call is dropped.
struct McpProgress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
    tx: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<ProgressNotificationParam>>,
}

impl McpProgress {
    fn new(peer: Peer<RoleServer>, token: Option<ProgressToken>) -> Self {
        Self {
            peer,
            token,
            tx: std::sync::OnceLock::new(),
        }
    }
}

impl Progress for McpProgress {
    fn report(&self, progress: f64, total: Option<f64>, message: Option<String>) {
        let Some(token) = self.token.clone() else {
            return;
        };
        let tx = self.tx.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let peer = self.peer.clone();
            tokio::spawn(async move {
                while let Some(param) = rx.recv().await {
                    let _ = peer.notify_progress(param).await;
                }
            });
            tx
        });
        let mut param = ProgressNotificationParam::new(token, progress);
        param.total = total;
        param.message = message;
        let _ = tx.send(param);
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

pub(crate) fn answer_of(response: &Value) -> Option<Answer> {
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

pub(crate) fn done_result(value: Value) -> CallToolResult {
    // The same JSON as text, for clients that read only `content`.
    let text = serde_json::to_string(&value).unwrap_or_default();
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(value);
    result
}

fn input_required(state: String, message: String) -> Result<InputRequiredResult, ErrorData> {
    let schema = confirm_schema().map_err(|e| ErrorData::internal_error(e, None))?;
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

/// How a call ended, as metrics and logs name it: `ok`, `error`,
/// `confirmation_required`, `declined` (or cancelled) or `input_required`.
pub fn outcome_of(result: &Result<Reply, ToolError>) -> &'static str {
    match result {
        Err(_) => "error",
        Ok(Reply::InputRequired { .. }) => "input_required",
        Ok(Reply::Done(v)) if v.get("confirmation_required").is_some() => "confirmation_required",
        Ok(Reply::Done(v)) if v.get("declined").is_some() => "declined",
        Ok(Reply::Done(_)) => "ok",
    }
}

/// Runs one tool for any face: counts it (metrics), logs one event with its
/// duration and outcome, and writes the audit line for mutating tools.
pub async fn run_tool(
    def: &'static ToolDef,
    call: Arc<Call>,
    args: Value,
) -> Result<Reply, ToolError> {
    let started = Instant::now();
    let audit_args = crate::domain::redact::redact_json(&args);
    let result = (def.run)(call.clone(), args).await;
    // Nothing a tool returns carries a secret value stackpilot knows (the
    // .env's, the compose model's, the instances'), whatever the shape.
    let secrets = call.app.known_secrets();
    let result = mask_reply(result, &secrets);
    let elapsed = started.elapsed();
    let outcome = outcome_of(&result);
    call.app
        .metrics
        .tool_call(def.name, outcome, elapsed.as_secs_f64());
    tracing::info!(
        tool = def.name,
        duration_ms = elapsed.as_millis() as u64,
        outcome,
        transport = call.app.mode.transport,
        "tool call"
    );
    if def.mutating() {
        let mut audit_args = audit_args;
        crate::domain::redact::redact_json_strings(&mut audit_args, &secrets);
        audit::write(&call, def.name, audit_args, &result, elapsed);
    }
    result
}

/// Masks every secret value and shape in a tool's reply (outputs keep
/// their structure, so they still match the tool's output schema).
pub fn mask_reply(
    result: Result<Reply, ToolError>,
    secrets: &[String],
) -> Result<Reply, ToolError> {
    match result {
        Ok(Reply::Done(mut value)) => {
            crate::domain::redact::redact_json_strings(&mut value, secrets);
            Ok(Reply::Done(value))
        }
        Ok(Reply::InputRequired { state, message }) => Ok(Reply::InputRequired {
            state,
            message: crate::domain::redact::mask(&message, secrets),
        }),
        Err(mut e) => {
            e.redact(secrets);
            Err(e)
        }
    }
}

impl ServerHandler for StackpilotServer {
    fn get_info(&self) -> ServerConfig {
        #[allow(deprecated)]
        let capabilities = ServerCapabilities::builder()
            .enable_logging()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_resources_subscribe()
            .enable_tools()
            .enable_tasks()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("stackpilot", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "stackpilot provisions and operates a local LLM stack on Docker Compose. Start with \
                 detect_hardware and select_profile. Mutating tools plan first; destructive plans need a \
                 person's confirmation (elicitation, or return the confirm_token after showing them the plan). \
                 The stack's state is also readable as resources (stackpilot://stack/status and others); \
                 long tools run as tasks for clients that declare the tasks extension.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.visible()
                .iter()
                .map(|t| tasks::annotate(list::mcp_tool(t, self.app.mode.read_only)))
                .collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.visible()
            .into_iter()
            .find(|t| t.name == name)
            .map(|t| tasks::annotate(list::mcp_tool(t, self.app.mode.read_only)))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let Some(def) = list::find(&name) else {
            let known: Vec<&str> = self.visible().iter().map(|t| t.name).collect();
            return Err(ErrorData::invalid_params(
                format!(
                    "unknown tool `{}`; tools: {}",
                    crate::domain::redact::cap(&name, 100),
                    known.join(", ")
                ),
                None,
            ));
        };
        if self.app.mode.read_only && !def.available_read_only() {
            let err = ToolError::new(
                ErrorKind::NotAllowed,
                format!("`{name}` changes the stack and this server runs with --read-only"),
            )
            .next_step("restart stackpilot without --read-only to use mutating tools");
            return Ok(error_result(&err).into());
        }
        let wants_task = context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        if wants_task && tasks::eligible(def.name) && request.request_state.is_none() {
            let ask = match confirm_mode(&context) {
                ConfirmMode::InputRequired => tasks::Ask::InputRequired,
                ConfirmMode::Elicit => tasks::Ask::Elicit,
                _ => tasks::Ask::TokenOnly,
            };
            let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
            let task = tasks::spawn(
                &self.shared.tasks,
                self.app.clone(),
                def,
                args,
                ask,
                context.peer.clone(),
            );
            return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
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
        let started = Instant::now();
        let result = run_tool(def, call.clone(), args).await;
        self.log_call(&context.peer, def.name, outcome_of(&result), started);
        let notes = call.notices();
        match result {
            Ok(Reply::Done(value)) => {
                let mut result = done_result(value);
                // Notes go beside the structured output, never into it (its
                // schema is the tool's).
                for n in notes {
                    result
                        .content
                        .push(ContentBlock::text(format!("note: {n}")));
                }
                Ok(result.into())
            }
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

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        Ok(ListResourcesResult::with_all_items(resources::list()))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let contents = resources::contents(&self.app, &request.uri)
            .await
            .map_err(|e| resources::error(&request.uri, &e))?;
        Ok(ReadResourceResult::new(vec![contents]).into())
    }

    #[allow(deprecated)]
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let uri =
            live::subscribable(&request.uri).map_err(|e| resources::error(&request.uri, &e))?;
        let mut sub = self.legacy_sub.lock().map_err(|_| poisoned())?;
        match *sub {
            Some(id) if self.shared.live.has(id) => {
                self.shared.live.update(id, |uris| {
                    uris.insert(uri);
                });
            }
            _ => {
                // One forwarding task per session: it ends when the session
                // does (a failed send), which drops the subscription.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let id = self.shared.live.subscribe([uri].into(), tx);
                let peer = context.peer.clone();
                let live = self.shared.live.clone();
                tokio::spawn(async move {
                    while let Some(uri) = rx.recv().await {
                        let param = rmcp::model::ResourceUpdatedNotificationParam::new(uri);
                        if peer.notify_resource_updated(param).await.is_err() {
                            break;
                        }
                    }
                    live.unsubscribe(id);
                });
                *sub = Some(id);
            }
        }
        Ok(())
    }

    #[allow(deprecated)]
    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let sub = self.legacy_sub.lock().map_err(|_| poisoned())?;
        if let Some(id) = *sub {
            self.shared.live.update(id, |uris| {
                uris.remove(&request.uri);
            });
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let uris: Vec<String> = requested
            .resource_subscriptions
            .as_ref()?
            .iter()
            .filter(|u| live::subscribable(u).is_ok())
            .cloned()
            .collect();
        if uris.is_empty() {
            return None;
        }
        let mut accepted = SubscriptionFilter::new();
        accepted.resource_subscriptions = Some(uris);
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let uris: std::collections::BTreeSet<String> = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let id = self.shared.live.subscribe(uris, tx);
        loop {
            tokio::select! {
                _ = context.cancelled() => break,
                uri = rx.recv() => match uri {
                    Some(uri) => {
                        if context.sink().notify_resource_updated(uri).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        self.shared.live.unsubscribe(id);
        Ok(())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, ErrorData> {
        let values = completion::complete(&self.app, &request).await;
        let info = CompletionInfo::new(values)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(CompleteResult::new(info))
    }

    #[allow(deprecated)]
    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        *self.log_level.lock().map_err(|_| poisoned())? = Some(request.level);
        Ok(())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        Ok(GetTaskResult::new(
            self.shared.tasks.get_task(&request.task_id)?,
        ))
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        let responses: Vec<(String, Value)> = request
            .input_responses
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
            .collect();
        self.shared.tasks.update_task(&request.task_id, responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.shared.tasks.cancel_task(&request.task_id)
    }
}
