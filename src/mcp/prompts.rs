//! MCP prompts, written as markdown files in prompts/ and embedded at build
//! time. A file starts with a front matter block:
//!
//! ```text
//! ---
//! name: provision_stack
//! title: ...
//! description: ...
//! argument: model | required | allowed,values | What it is.
//! ---
//! body with {{model}}, {{name|default}} and {{name|text shown only when set}} placeholders
//! ```
//! `{{x|y}}`: when `y` itself contains `{{x}}` it is shown only if x is set;
//! otherwise `y` is the default value.
use std::collections::BTreeMap;

use rmcp::model::{GetPromptResult, Prompt, PromptArgument, PromptMessage, Role};
use serde_json::Value;

use crate::domain::error::ToolError;

const SOURCES: [&str; 5] = [
    include_str!("../../prompts/choose_model.md"),
    include_str!("../../prompts/diagnose_unhealthy.md"),
    include_str!("../../prompts/provision_stack.md"),
    include_str!("../../prompts/safe_change.md"),
    include_str!("../../prompts/tune_memory.md"),
];

#[derive(Debug, Clone)]
pub struct PromptArg {
    pub name: String,
    pub required: bool,
    pub allowed: Vec<String>,
    pub description: String,
}

#[derive(Debug, Clone)]
pub struct PromptDef {
    pub name: String,
    pub title: String,
    pub description: String,
    pub arguments: Vec<PromptArg>,
    pub body: String,
}

impl PromptDef {
    fn parse(src: &str) -> Option<Self> {
        let rest = src.strip_prefix("---\n")?;
        let (head, body) = rest.split_once("\n---\n")?;
        let mut def = PromptDef {
            name: String::new(),
            title: String::new(),
            description: String::new(),
            arguments: Vec::new(),
            body: body.trim().to_string(),
        };
        for line in head.lines() {
            let (key, value) = line.split_once(':')?;
            let value = value.trim();
            match key.trim() {
                "name" => def.name = value.into(),
                "title" => def.title = value.into(),
                "description" => def.description = value.into(),
                "argument" => {
                    let parts: Vec<&str> = value.splitn(4, '|').map(str::trim).collect();
                    let [name, req, allowed, desc] = parts.as_slice() else {
                        return None;
                    };
                    def.arguments.push(PromptArg {
                        name: (*name).into(),
                        required: *req == "required",
                        allowed: allowed
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                        description: (*desc).into(),
                    });
                }
                _ => return None,
            }
        }
        Some(def)
    }

    pub fn to_mcp(&self) -> Prompt {
        let args = self
            .arguments
            .iter()
            .map(|a| {
                let mut p = PromptArgument::new(a.name.clone());
                p.description = Some(if a.allowed.is_empty() {
                    a.description.clone()
                } else {
                    format!("{} One of: {}.", a.description, a.allowed.join(", "))
                });
                p.required = Some(a.required);
                p
            })
            .collect();
        let mut p = Prompt::new(
            self.name.clone(),
            Some(self.description.clone()),
            Some(args),
        );
        p.title = Some(self.title.clone());
        p
    }
}

/// Every prompt, sorted by name. The sources are fixed at build time and a
/// test parses them all, so a malformed file fails the build's tests.
pub fn all() -> Vec<PromptDef> {
    let mut v: Vec<PromptDef> = SOURCES.iter().filter_map(|s| PromptDef::parse(s)).collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn fill(body: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // Find the matching close, allowing one nested {{x}} inside.
        let mut depth = 1;
        let mut end = None;
        let bytes = after.as_bytes();
        let mut i = 0;
        while i + 1 < bytes.len() {
            if &after[i..i + 2] == "{{" {
                depth += 1;
                i += 2;
            } else if &after[i..i + 2] == "}}" {
                depth -= 1;
                if depth == 0 {
                    end = Some(i);
                    break;
                }
                i += 2;
            } else {
                i += 1;
            }
        }
        let Some(end) = end else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &after[..end];
        let (name, alt) = match inner.split_once('|') {
            Some((n, a)) => (n.trim(), Some(a)),
            None => (inner.trim(), None),
        };
        let value = values.get(name).filter(|v| !v.is_empty());
        match (value, alt) {
            (Some(_), Some(a)) if a.contains(&format!("{{{{{name}}}}}")) => {
                out.push_str(&fill(a, values))
            }
            (Some(v), _) => out.push_str(v),
            (None, Some(a)) if a.contains(&format!("{{{{{name}}}}}")) => {}
            (None, Some(a)) => out.push_str(a),
            (None, None) => {}
        }
        let _ = value;
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

pub fn render(
    name: &str,
    arguments: Option<&serde_json::Map<String, Value>>,
) -> Result<GetPromptResult, ToolError> {
    let prompts = all();
    let def = prompts.iter().find(|p| p.name == name).ok_or_else(|| {
        ToolError::invalid(
            "name",
            format!("unknown prompt `{}`", crate::domain::redact::cap(name, 100)),
        )
        .allowed(prompts.iter().map(|p| p.name.clone()))
    })?;
    let mut values = BTreeMap::new();
    if let Some(args) = arguments {
        for (k, v) in args {
            let Some(spec) = def.arguments.iter().find(|a| &a.name == k) else {
                return Err(ToolError::invalid(k.clone(), "unknown argument")
                    .allowed(def.arguments.iter().map(|a| a.name.clone())));
            };
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            if text.len() > 2000 {
                return Err(ToolError::invalid(k.clone(), "longer than 2000 characters"));
            }
            if !spec.allowed.is_empty() && !spec.allowed.contains(&text) {
                return Err(
                    ToolError::invalid(k.clone(), format!("`{text}` is not allowed"))
                        .allowed(spec.allowed.clone()),
                );
            }
            values.insert(k.clone(), text);
        }
    }
    for a in def.arguments.iter().filter(|a| a.required) {
        if !values.contains_key(&a.name) {
            return Err(ToolError::invalid(a.name.clone(), "is required"));
        }
    }
    let text = fill(&def.body, &values);
    Ok(
        GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
            .with_description(def.description.clone()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_prompt_file_parses() {
        assert_eq!(all().len(), SOURCES.len());
        let names: Vec<String> = all().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "choose_model",
                "diagnose_unhealthy",
                "provision_stack",
                "safe_change",
                "tune_memory"
            ]
        );
    }

    #[test]
    fn placeholders_fill() {
        let mut v = BTreeMap::new();
        assert_eq!(
            fill("a {{x|default}} b{{x| with {{x}}}}", &v),
            "a default b"
        );
        v.insert("x".to_string(), "X".to_string());
        assert_eq!(
            fill("a {{x|default}} b{{x| with {{x}}}}", &v),
            "a X b with X"
        );
    }

    #[test]
    fn required_and_unknown_arguments_are_checked() {
        assert!(render("provision_stack", None).is_err());
        let mut args = serde_json::Map::new();
        args.insert("model".into(), Value::String("llama3.1:8b".into()));
        let r = render("provision_stack", Some(&args)).expect("render");
        let text = serde_json::to_string(&r).expect("json");
        assert!(text.contains("llama3.1:8b"));
        args.insert("bogus".into(), Value::String("x".into()));
        assert!(render("provision_stack", Some(&args)).is_err());
        assert!(render("nope", None).is_err());
    }
}
