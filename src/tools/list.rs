//! The tool table: the one place that names every tool. Both faces (MCP and
//! CLI) and `tools export` read it, so a tool's name, schemas and annotations
//! exist in exactly one place: its own file.
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use rmcp::model::{JsonObject, Tool};
use serde_json::Value;

use crate::tools::def::ToolDef;

/// Every tool, sorted by name.
pub fn all() -> &'static [&'static ToolDef] {
    static ALL: OnceLock<Vec<&'static ToolDef>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut tools: Vec<&'static ToolDef> = vec![
            &crate::tools::backup::backup::TOOL,
            &crate::tools::stack::compose_down::TOOL,
            &crate::tools::stack::compose_up::TOOL,
            &crate::tools::deploy::deploy::TOOL,
            &crate::tools::hardware::detect_hardware::TOOL,
            &crate::tools::health::health::TOOL,
            &crate::tools::ops::init_env::TOOL,
            &crate::tools::kubernetes::kube_apply::TOOL,
            &crate::tools::kubernetes::kube_render::TOOL,
            &crate::tools::backup::list_backups::TOOL,
            &crate::tools::models::list_models::TOOL,
            &crate::tools::ops::logs::TOOL,
            &crate::tools::backup::prune_backups::TOOL,
            &crate::tools::models::pull_model::TOOL,
            &crate::tools::health::recover::TOOL,
            &crate::tools::models::remove_model::TOOL,
            &crate::tools::backup::restore::TOOL,
            &crate::tools::deploy::rollback::TOOL,
            &crate::tools::ops::run_task::TOOL,
            &crate::tools::hardware::select_profile::TOOL,
            &crate::tools::models::set_kv_cache::TOOL,
            &crate::tools::stack::stack_status::TOOL,
            &crate::tools::backup::verify_backup::TOOL,
        ];
        tools.sort_by_key(|t| t.name);
        tools
    })
}

pub fn find(name: &str) -> Option<&'static ToolDef> {
    all().iter().copied().find(|t| t.name == name)
}

/// Every tool's exported definition (tools/<name>.json), embedded at build
/// time. `stackpilot tools export tools` writes them from the ToolDefs above
/// and the tests fail when they differ (tests/cli.rs, and the unit test
/// below), so serving these is serving the code's schemas without building
/// them at startup: schemars and the compaction cost about as much as the
/// rest of a cold start together.
macro_rules! exported {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_str!(concat!("../../tools/", $name, ".json")))),*]
    };
}

static EXPORTED: &[(&str, &str)] = exported![
    "backup",
    "compose_down",
    "compose_up",
    "deploy",
    "detect_hardware",
    "health",
    "init_env",
    "kube_apply",
    "kube_render",
    "list_backups",
    "list_models",
    "logs",
    "prune_backups",
    "pull_model",
    "recover",
    "remove_model",
    "restore",
    "rollback",
    "run_task",
    "select_profile",
    "set_kv_cache",
    "stack_status",
    "verify_backup",
];

/// A tool's (input, output) schemas from its embedded export; None when it
/// has none (a tool added without `tools export`: its schemas are then built).
fn exported_schemas(name: &str) -> Option<(Arc<JsonObject>, Arc<JsonObject>)> {
    let (_, text) = EXPORTED.iter().find(|(n, _)| *n == name)?;
    let mut v: Value = serde_json::from_str(text).ok()?;
    let take = |v: &mut Value, key: &str| match v.get_mut(key).map(Value::take) {
        Some(Value::Object(o)) => Some(Arc::new(o)),
        _ => None,
    };
    Some((take(&mut v, "inputSchema")?, take(&mut v, "outputSchema")?))
}

/// The MCP definitions, built once: the HTTP transport looks a tool up on
/// every request, and rebuilding schemas each time would dominate a call.
fn mcp_tools() -> &'static HashMap<(&'static str, bool), Tool> {
    static CACHE: OnceLock<HashMap<(&'static str, bool), Tool>> = OnceLock::new();
    CACHE.get_or_init(|| {
        all()
            .iter()
            .flat_map(|t| {
                let (input, output) = exported_schemas(t.name).unwrap_or_else(|| {
                    tracing::warn!(
                        tool = t.name,
                        "no exported definition in tools/: building its schemas"
                    );
                    ((t.input_schema)(), (t.output_schema)())
                });
                let (normal, read_only) = t.to_mcp_both(input, output);
                [((t.name, false), normal), ((t.name, true), read_only)]
            })
            .collect()
    })
}

pub fn mcp_tool(def: &ToolDef, read_only_mode: bool) -> Tool {
    mcp_tools()
        .get(&(def.name, read_only_mode))
        .cloned()
        .unwrap_or_else(|| def.to_mcp(read_only_mode))
}

/// Builds the definitions now (a server calls it on a spare thread at start,
/// so the first tools/list does not wait for the schemas).
pub fn warm() {
    let _ = mcp_tools();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_definitions_are_the_codes() {
        assert_eq!(
            EXPORTED.len(),
            all().len(),
            "one tools/<name>.json per tool"
        );
        for t in all() {
            let (input, output) = exported_schemas(t.name)
                .unwrap_or_else(|| panic!("tools/{}.json is embedded and parses", t.name));
            assert!(
                input == (t.input_schema)() && output == (t.output_schema)(),
                "tools/{}.json differs from the code: run `stackpilot tools export tools`",
                t.name
            );
            let exported: Value = serde_json::from_str(
                EXPORTED
                    .iter()
                    .find(|(n, _)| *n == t.name)
                    .map(|(_, s)| *s)
                    .unwrap_or(""),
            )
            .unwrap_or_default();
            assert_eq!(exported, t.export(), "tools/{}.json", t.name);
        }
    }
}
