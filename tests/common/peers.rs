//! The official MCP tools the tests talk to (scripts/peers/mcp-tools.sh):
//! the conformance suite, the Inspector CLI, kubernetes-mcp-server, mcpb.
//! Installed into a cache outside the clone by `mcp-tools.sh install` (the
//! test command does it); found here through `mcp-tools.sh env`.
use std::collections::HashMap;
use std::process::Command;

use super::root;

/// The tools' paths by variable (`STACKPILOT_CONFORMANCE`, ...), or None when
/// they are not installed outside CI (the caller skips, saying why). Under
/// `CI=true` a missing tool fails the test.
pub fn peers() -> Option<HashMap<String, String>> {
    let out = Command::new("bash")
        .arg(root().join("scripts/peers/mcp-tools.sh"))
        .arg("env")
        .output()
        .expect("run scripts/peers/mcp-tools.sh env");
    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if !out.status.success() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true: the MCP peer tools are missing: {why}");
        }
        assert_eq!(out.status.code(), Some(3), "mcp-tools.sh env failed: {why}");
        eprintln!(
            "SKIP: the MCP peer tools are not installed ({why}); run scripts/peers/mcp-tools.sh install"
        );
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect(),
    )
}
