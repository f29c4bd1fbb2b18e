//! The tool definition: what every tool file fills in (`pub static TOOL:
//! ToolDef`): name, title, description, truthful hints, schemas and the run
//! function, plus argument parsing that names the failing field. A leaf:
//! tools import it, it imports no tool (`tools::list` names them all).
use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::domain::error::ToolError;
use crate::guard::{Call, Reply};

/// Truthful MCP annotations.
#[derive(Debug, Clone, Copy)]
pub struct Hints {
    pub read_only: bool,
    pub destructive: bool,
    pub idempotent: bool,
    pub open_world: bool,
}

impl Hints {
    /// A tool that only reads: safe to retry, touches nothing outside the stack.
    pub const READ_ONLY: Hints = Hints {
        read_only: true,
        destructive: false,
        idempotent: true,
        open_world: false,
    };
}

pub type RunFn = fn(Arc<Call>, Value) -> BoxFuture<'static, Result<Reply, ToolError>>;

pub struct ToolDef {
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub hints: Hints,
    /// Has a read-only form (select_profile without write_env): under
    /// `--read-only` it stays listed, annotated read-only, and refuses writes.
    pub read_only_subset: bool,
    pub input_schema: fn() -> Arc<JsonObject>,
    pub output_schema: fn() -> Arc<JsonObject>,
    pub run: RunFn,
}

impl ToolDef {
    /// Mutating tools are hidden and refused under `--read-only`.
    pub fn mutating(&self) -> bool {
        !self.hints.read_only
    }

    /// Listed under `--read-only` (read-only tools, and those with a read-only form).
    pub fn available_read_only(&self) -> bool {
        !self.mutating() || self.read_only_subset
    }

    /// The MCP definition; under `--read-only` a tool's read-only form is
    /// annotated as what it then is.
    pub fn to_mcp(&self, read_only_mode: bool) -> Tool {
        self.mcp_with(
            (self.input_schema)(),
            (self.output_schema)(),
            read_only_mode,
        )
    }

    /// Both MCP definitions (normal, `--read-only`) around one pair of schemas.
    pub fn to_mcp_both(&self, input: Arc<JsonObject>, output: Arc<JsonObject>) -> (Tool, Tool) {
        (
            self.mcp_with(input.clone(), output.clone(), false),
            self.mcp_with(input, output, true),
        )
    }

    fn mcp_with(
        &self,
        input: Arc<JsonObject>,
        output: Arc<JsonObject>,
        read_only_mode: bool,
    ) -> Tool {
        let read_only = self.hints.read_only || (read_only_mode && self.read_only_subset);
        let annotations = ToolAnnotations::with_title(self.title)
            .read_only(read_only)
            .destructive(self.hints.destructive && !read_only)
            .idempotent(self.hints.idempotent)
            .open_world(self.hints.open_world);
        Tool::new(self.name, self.description, input)
            .with_title(self.title)
            .with_raw_output_schema(output)
            .with_annotations(annotations)
    }

    /// The exported form (`stackpilot tools export`, the tools/ folder).
    pub fn export(&self) -> Value {
        serde_json::json!({
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "annotations": {
                "title": self.title,
                "readOnlyHint": self.hints.read_only,
                "destructiveHint": self.hints.destructive,
                "idempotentHint": self.hints.idempotent,
                "openWorldHint": self.hints.open_world,
            },
            "inputSchema": Value::Object((*(self.input_schema)()).clone()),
            "outputSchema": Value::Object((*(self.output_schema)()).clone()),
        })
    }
}

/// Parses tool arguments, naming the failing field (`kv_cache_types[1]`) and,
/// for enums, the allowed values.
pub fn parse_args<T: DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    let args = if args.is_null() {
        Value::Object(Default::default())
    } else {
        args
    };
    serde_path_to_error::deserialize::<_, T>(args).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.inner().to_string();
        // serde says `unknown variant `x`, expected one of `a`, `b``; keep it and lift the list.
        // With two variants serde says `expected `a` or `b``.
        let allowed: Option<Vec<String>> = inner
            .split_once("expected one of ")
            .map(|(_, list)| list.split(", ").collect::<Vec<_>>())
            .or_else(|| {
                inner
                    .split_once("unknown variant ")
                    .and_then(|(_, rest)| rest.split_once(", expected `"))
                    .map(|(_, list)| list.split(" or ").collect())
            })
            .map(|list| {
                list.into_iter()
                    .map(|s| s.trim().trim_matches('`').to_string())
                    .collect()
            });
        let field = match (path.as_str(), unknown_field(&inner)) {
            (".", Some(f)) => f,
            (".", None) => "arguments".into(),
            (p, Some(f)) if p == f || p.ends_with(&format!(".{f}")) => p.to_string(),
            (parent, Some(f)) => format!("{parent}.{f}"),
            (_, None) => path,
        };
        let inner = inner
            .split(" at line ")
            .next()
            .unwrap_or(&inner)
            .to_string();
        let mut e = ToolError::invalid(field, inner);
        e.allowed = allowed;
        e
    })
}

/// serde reports unknown and missing fields at the parent's path; name the field itself.
fn unknown_field(msg: &str) -> Option<String> {
    ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| msg.strip_prefix(p))
        .and_then(|rest| rest.split('`').next())
        .map(str::to_string)
}

/// A failed call's structured content: `{"error": {...}}`.
#[derive(schemars::JsonSchema)]
pub struct ErrorOutput {
    pub error: ToolError,
}

/// Every structured result: the tool's output, or an error.
#[derive(schemars::JsonSchema)]
#[serde(untagged)]
pub enum Outcome<T> {
    Ok(T),
    Err(ErrorOutput),
}

/// Output schema for a tool whose result is `T` (errors included, so every
/// structuredContent validates): rmcp's generator for what `Serialize`
/// writes, compacted by `schema::compact_output` (root `type: object`, as MCP
/// requires). tools/list and `tools export` both read it from here.
pub fn output_schema<T: schemars::JsonSchema + std::any::Any>() -> Arc<JsonObject> {
    let schema = rmcp::handler::server::common::schema_for_output::<Outcome<T>>();
    Arc::new(crate::tools::schema::compact_output(&schema))
}

/// Input schema for arguments `T`, in JSON Schema's own vocabulary.
pub fn input_schema<T: schemars::JsonSchema + std::any::Any>() -> Arc<JsonObject> {
    let schema = rmcp::handler::server::common::schema_for_type::<T>();
    Arc::new(crate::tools::schema::standard_input(&schema))
}
