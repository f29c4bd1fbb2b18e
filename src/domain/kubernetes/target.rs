//! Where a stack runs: Compose on a Docker engine (the default), or a
//! Kubernetes namespace of a kubeconfig context. Chosen by the CLI
//! (`--target kubernetes --context C --namespace N`, or the environment) or
//! by the stack's top-level `x-stackpilot` (`target: kubernetes`,
//! `kubernetes: {context, namespace}`); flags win. Validated on
//! construction, so a bad name never reaches the API server.
use serde_json::Value;

use crate::domain::error::ToolError;
use crate::domain::kubernetes::names::is_dns1123_label;

pub const TARGETS: [&str; 2] = ["compose", "kubernetes"];
pub const DEFAULT_NAMESPACE: &str = "default";

/// A Kubernetes namespace of a kubeconfig context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeTarget {
    /// The kubeconfig context; None: the kubeconfig's current context.
    pub context: Option<String>,
    pub namespace: String,
}

impl KubeTarget {
    /// Checks both names; `field_prefix` names the fields in errors (`--` for flags, `` for tool inputs).
    pub fn new(
        context: Option<&str>,
        namespace: Option<&str>,
        context_field: &str,
        namespace_field: &str,
    ) -> Result<Self, ToolError> {
        let context = context
            .map(|c| check_context(context_field, c))
            .transpose()?;
        let namespace = match namespace {
            Some(n) => check_namespace(namespace_field, n)?,
            None => DEFAULT_NAMESPACE.to_string(),
        };
        Ok(Self { context, namespace })
    }

    /// The context as people read it.
    pub fn context_name(&self) -> &str {
        self.context.as_deref().unwrap_or("(current context)")
    }
}

/// A namespace name: a DNS-1123 label.
pub fn check_namespace(field: &str, n: &str) -> Result<String, ToolError> {
    if is_dns1123_label(n) {
        Ok(n.to_string())
    } else {
        Err(ToolError::invalid(
            field,
            format!(
                "`{}` is not a Kubernetes namespace name (1-63 of a-z, 0-9 and `-`, starting and ending with a letter or digit)",
                crate::domain::redact::cap(n, 80)
            ),
        ))
    }
}

/// A kubeconfig context name: printable, no whitespace at the ends, bounded.
pub fn check_context(field: &str, c: &str) -> Result<String, ToolError> {
    let ok =
        !c.is_empty() && c.len() <= 253 && c.trim() == c && !c.chars().any(|ch| ch.is_control());
    if ok {
        Ok(c.to_string())
    } else {
        Err(ToolError::invalid(
            field,
            format!(
                "`{}` is not a kubeconfig context name (1-253 printable characters, no control characters or surrounding spaces)",
                crate::domain::redact::cap(&c.escape_default().to_string(), 80)
            ),
        ))
    }
}

/// The target a stack's top-level x-stackpilot block names (raw YAML, before
/// interpolation: these fields take literal values).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeclaredTarget {
    pub target: Option<String>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

pub fn declared_target(x_stackpilot: Option<&Value>) -> DeclaredTarget {
    let Some(x) = x_stackpilot else {
        return DeclaredTarget::default();
    };
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    let k = x.get("kubernetes");
    DeclaredTarget {
        target: s(x.get("target")),
        context: s(k.and_then(|k| k.get("context"))),
        namespace: s(k.and_then(|k| k.get("namespace"))),
    }
}

/// Resolves the target from flags (`Some` wins) and the declared block.
pub fn resolve(
    flag_target: Option<&str>,
    flag_context: Option<&str>,
    flag_namespace: Option<&str>,
    declared: &DeclaredTarget,
) -> Result<Option<KubeTarget>, ToolError> {
    let (target, field) = match (flag_target, declared.target.as_deref()) {
        (Some(t), _) => (t, "--target"),
        (None, Some(t)) => (t, "x-stackpilot.target"),
        (None, None) => ("compose", "--target"),
    };
    match target {
        "compose" => Ok(None),
        "kubernetes" => {
            let (context, cfield) = match (flag_context, declared.context.as_deref()) {
                (Some(c), _) => (Some(c), "--context"),
                (None, c) => (c, "x-stackpilot.kubernetes.context"),
            };
            let (namespace, nfield) = match (flag_namespace, declared.namespace.as_deref()) {
                (Some(n), _) => (Some(n), "--namespace"),
                (None, n) => (n, "x-stackpilot.kubernetes.namespace"),
            };
            KubeTarget::new(context, namespace, cfield, nfield).map(Some)
        }
        other => Err(ToolError::invalid(
            field,
            format!("unknown target `{}`", crate::domain::redact::cap(other, 40)),
        )
        .allowed(TARGETS)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_win_over_the_declared_block() {
        let declared = declared_target(Some(&json!({
            "target": "kubernetes",
            "kubernetes": {"context": "prod", "namespace": "llm"}
        })));
        let t = resolve(None, None, None, &declared)
            .expect("ok")
            .expect("kube");
        assert_eq!(t.context.as_deref(), Some("prod"));
        assert_eq!(t.namespace, "llm");
        let t = resolve(None, Some("dev"), Some("x"), &declared)
            .expect("ok")
            .expect("kube");
        assert_eq!(
            (t.context.as_deref(), t.namespace.as_str()),
            (Some("dev"), "x")
        );
        assert_eq!(
            resolve(Some("compose"), None, None, &declared).expect("ok"),
            None
        );
    }

    #[test]
    fn bad_names_name_their_field() {
        let e = resolve(
            Some("kubernetes"),
            None,
            Some("Bad_NS"),
            &DeclaredTarget::default(),
        )
        .expect_err("bad ns");
        assert_eq!(e.field.as_deref(), Some("--namespace"));
        let e = resolve(Some("swarm"), None, None, &DeclaredTarget::default()).expect_err("bad");
        assert_eq!(e.field.as_deref(), Some("--target"));
        assert!(e.message.contains("kubernetes"));
        let e = check_context("context", "a\nb").expect_err("control");
        assert_eq!(e.field.as_deref(), Some("context"));
        let d = DeclaredTarget {
            target: Some("kubernetes".into()),
            namespace: Some("-x".into()),
            ..Default::default()
        };
        let e = resolve(None, None, None, &d).expect_err("declared");
        assert_eq!(
            e.field.as_deref(),
            Some("x-stackpilot.kubernetes.namespace")
        );
    }
}
