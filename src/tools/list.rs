//! The tool table: the one place that names every tool. Both faces (MCP and
//! CLI) and `tools export` read it, so a tool's name, schemas and annotations
//! exist in exactly one place: its own file.
use std::collections::HashMap;
use std::sync::OnceLock;

use rmcp::model::Tool;

use crate::tools::def::ToolDef;

/// Every tool, sorted by name.
pub fn all() -> &'static [&'static ToolDef] {
    static ALL: OnceLock<Vec<&'static ToolDef>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut tools: Vec<&'static ToolDef> = vec![
            &crate::tools::backup::backup::TOOL,
            &crate::tools::stack::compose_down::TOOL,
            &crate::tools::stack::compose_up::TOOL,
            &crate::tools::hardware::detect_hardware::TOOL,
            &crate::tools::health::health::TOOL,
            &crate::tools::kube::kube_apply::TOOL,
            &crate::tools::kube::kube_render::TOOL,
            &crate::tools::backup::list_backups::TOOL,
            &crate::tools::models::list_models::TOOL,
            &crate::tools::backup::prune_backups::TOOL,
            &crate::tools::models::pull_model::TOOL,
            &crate::tools::health::recover::TOOL,
            &crate::tools::models::remove_model::TOOL,
            &crate::tools::backup::restore::TOOL,
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

/// The MCP definitions, built once: the HTTP transport looks a tool up on
/// every request, and rebuilding schemas each time would dominate a call.
pub fn mcp_tool(def: &ToolDef, read_only_mode: bool) -> Tool {
    static CACHE: OnceLock<HashMap<(&'static str, bool), Tool>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        all()
            .iter()
            .flat_map(|t| {
                [
                    ((t.name, false), t.to_mcp(false)),
                    ((t.name, true), t.to_mcp(true)),
                ]
            })
            .collect()
    });
    cache
        .get(&(def.name, read_only_mode))
        .cloned()
        .unwrap_or_else(|| def.to_mcp(read_only_mode))
}
