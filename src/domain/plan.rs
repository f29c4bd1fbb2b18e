//! Plans: what a mutating tool will change, what each change costs, and a
//! digest that pins the plan so a confirmation can only ever apply to the plan
//! the person saw.
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What one step costs if it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub struct StepCost {
    /// Data that cannot be recovered from the stack afterwards.
    pub data_loss: bool,
    /// A service stops serving for a while.
    pub downtime: bool,
    /// Ollama models are unloaded from memory.
    pub models_unloaded: bool,
}

/// One change a plan would make.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct PlanStep {
    /// Verb: `set`, `overwrite`, `create`, `recreate`, `remove`, ...
    pub action: String,
    /// What it acts on: an .env key, a service, a volume, a file.
    pub target: String,
    /// Why, in one line.
    pub detail: String,
    /// Value before the change, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    /// Value after the change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
    /// Needs a person's confirmation.
    pub destructive: bool,
    pub cost: StepCost,
}

/// The full plan of one tool call. Same inputs and same observed state give the
/// same plan, byte for byte, and so the same digest.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema, PartialEq)]
pub struct Plan {
    pub tool: String,
    /// The stack this plan is for (see `Stack::id`).
    pub stack_id: String,
    /// One line a person can confirm or decline.
    pub summary: String,
    /// Changes, sorted by (target, action).
    pub steps: Vec<PlanStep>,
    /// Any step needs confirmation.
    pub destructive: bool,
    /// sha256 (hex) of the canonical JSON of tool, stack_id, summary and steps.
    pub digest: String,
}

impl Plan {
    pub fn new(tool: &str, stack_id: &str, summary: String, mut steps: Vec<PlanStep>) -> Self {
        steps.sort_by(|a, b| (&a.target, &a.action).cmp(&(&b.target, &b.action)));
        let destructive = steps.iter().any(|s| s.destructive);
        let digest = digest_of(&serde_json::json!({
            "tool": tool,
            "stack_id": stack_id,
            "summary": summary,
            "steps": steps,
        }));
        Self {
            tool: tool.to_string(),
            stack_id: stack_id.to_string(),
            summary,
            steps,
            destructive,
            digest,
        }
    }

    pub fn changes(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| s.action != "unchanged")
            .count()
    }

    /// What a person is asked: the summary and every destructive step.
    pub fn confirmation_text(&self) -> String {
        let mut text = format!("{}\n", self.summary);
        for s in self.steps.iter().filter(|s| s.destructive) {
            text.push_str(&format!("- {} {}: {}\n", s.action, s.target, s.detail));
        }
        text.push_str(&format!("plan digest {}", &self.digest[..16]));
        text
    }
}

/// sha256 over canonical JSON: object keys sorted, no whitespace.
pub fn digest_of(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    hex::encode(Sha256::digest(out.as_bytes()))
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                write_canonical(&map[k.as_str()], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(target: &str, destructive: bool) -> PlanStep {
        PlanStep {
            action: "set".into(),
            target: target.into(),
            detail: "d".into(),
            before: None,
            after: Some(json!("x")),
            destructive,
            cost: StepCost::default(),
        }
    }

    #[test]
    fn digest_is_stable_and_order_independent() {
        let a = Plan::new(
            "t",
            "s",
            "sum".into(),
            vec![step("B", false), step("A", true)],
        );
        let b = Plan::new(
            "t",
            "s",
            "sum".into(),
            vec![step("A", true), step("B", false)],
        );
        assert_eq!(a.digest, b.digest);
        assert_eq!(
            serde_json::to_string(&a).ok(),
            serde_json::to_string(&b).ok()
        );
        assert!(a.destructive);
        let c = Plan::new("t", "other-stack", "sum".into(), vec![step("A", true)]);
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn canonical_json_sorts_keys() {
        assert_eq!(
            digest_of(&json!({"b":1,"a":[{"d":2,"c":3}]})),
            digest_of(&json!({"a":[{"c":3,"d":2}],"b":1}))
        );
    }
}
