//! The rendered objects as a Helm chart: `Chart.yaml`, `values.yaml` with
//! the .env-derived settings per service (image, replicas, environment),
//! and one template per object that reads them. Secret values never go into
//! the chart: `values.yaml` holds empty strings for them and
//! `secret-values.yaml` (beside it, listed in `.helmignore`, written 0600)
//! the real ones, for `helm install -f secret-values.yaml`.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::domain::error::ToolError;
use crate::domain::kubernetes::labels;
use crate::domain::kubernetes::names::to_dns1123_label;
use crate::domain::kubernetes::render::{to_yaml, Rendered};

/// One file of the chart: path relative to the chart directory, content,
/// and whether it holds secret values.
#[derive(Debug, Clone, PartialEq)]
pub struct ChartFile {
    pub path: String,
    pub content: String,
    pub secret: bool,
}

/// Placeholders survive YAML emission unquoted (letters and digits only)
/// and are then replaced by template expressions.
struct Placeholders(Vec<(String, String)>);

impl Placeholders {
    fn add(&mut self, expr: String) -> Value {
        let token = format!("HELMPLACEHOLDER{:05}X", self.0.len());
        self.0.push((token.clone(), expr));
        Value::String(token)
    }
}

fn q(key: &str) -> String {
    format!("{:?}", key)
}

/// The chart for a render. `app_version` is stackpilot's version.
pub fn chart(
    rendered: &Rendered,
    project: &str,
    app_version: &str,
) -> Result<Vec<ChartFile>, ToolError> {
    let chart_name = to_dns1123_label(project);
    let mut files = vec![
        ChartFile {
            path: "Chart.yaml".into(),
            content: to_yaml(&json!({
                "apiVersion": "v2",
                "name": chart_name,
                "description": format!("The {project} stack, rendered from its compose files by stackpilot"),
                "type": "application",
                "version": "0.1.0",
                "appVersion": app_version,
            }))?,
            secret: false,
        },
        ChartFile {
            path: ".helmignore".into(),
            content: "# secret values stay out of packaged charts\nsecret-values.yaml\n".into(),
            secret: false,
        },
    ];
    let mut services: BTreeMap<String, Value> = BTreeMap::new();
    let mut secrets: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut secret_values: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for o in &rendered.objects {
        if o.service.is_empty() {
            continue;
        }
        let entry = services
            .entry(o.service.clone())
            .or_insert_with(|| json!({}));
        if matches!(o.kind.as_str(), "Deployment" | "StatefulSet") {
            entry["image"] = o
                .body
                .pointer("/spec/template/spec/containers/0/image")
                .cloned()
                .unwrap_or(Value::Null);
            if let Some(r) = o.body.pointer("/spec/replicas") {
                entry["replicas"] = r.clone();
            }
        }
        if o.kind == "ConfigMap" {
            entry["env"] = json!(rendered.env.get(&o.service).cloned().unwrap_or_default());
        }
        if o.kind == "Secret" {
            let keys = rendered
                .secret_env
                .get(&o.service)
                .cloned()
                .unwrap_or_default();
            secrets.insert(
                o.service.clone(),
                keys.keys().map(|k| (k.clone(), String::new())).collect(),
            );
            secret_values.insert(o.service.clone(), keys);
        }
    }
    files.push(ChartFile {
        path: "values.yaml".into(),
        content: format!(
            "# Settings of the stack, from its .env as compose resolved them. Secret values are\n# not here: pass them with `-f secret-values.yaml` (written beside this chart) or --set.\n{}",
            to_yaml(&json!({"services": services, "secrets": secrets}))?
        ),
        secret: false,
    });
    files.push(ChartFile {
        path: "secret-values.yaml".into(),
        content: to_yaml(&json!({"secrets": secret_values}))?,
        secret: true,
    });
    for o in &rendered.objects {
        let mut ph = Placeholders(Vec::new());
        let mut body = o.body.clone();
        body["metadata"]["namespace"] = ph.add("{{ .Release.Namespace }}".into());
        let svc = q(&o.service);
        match o.kind.as_str() {
            "Deployment" | "StatefulSet" => {
                body["spec"]["template"]["spec"]["containers"][0]["image"] = ph.add(format!(
                    "{{{{ index .Values.services {svc} \"image\" | quote }}}}"
                ));
                if body.pointer("/spec/replicas").is_some() {
                    body["spec"]["replicas"] = ph.add(format!(
                        "{{{{ index .Values.services {svc} \"replicas\" }}}}"
                    ));
                }
                let digest = format!(
                    "{{{{ dict \"config\" (index .Values.services {svc} \"env\" | default dict) \"secret\" (index .Values.secrets {svc} | default dict) | toJson | sha256sum | trunc 16 | quote }}}}"
                );
                body["spec"]["template"]["metadata"]["annotations"][labels::CONFIG_DIGEST] =
                    ph.add(digest);
            }
            "ConfigMap" => {
                if let Some(Value::Object(data)) = body.get_mut("data") {
                    for (k, v) in data.iter_mut() {
                        *v = ph.add(format!(
                            "{{{{ index .Values.services {svc} \"env\" {} | quote }}}}",
                            q(k)
                        ));
                    }
                }
            }
            "Secret" => {
                if let Some(Value::Object(data)) = body.get_mut("data") {
                    for (k, v) in data.iter_mut() {
                        *v = ph.add(format!(
                            "{{{{ index .Values.secrets {svc} {} | b64enc | quote }}}}",
                            q(k)
                        ));
                    }
                }
            }
            _ => {}
        }
        // Literal `{{` in the stack's own text must not be read as a template.
        let mut text = to_yaml(&body)?.replace("{{", "{{ \"{{\" }}");
        for (token, expr) in &ph.0 {
            text = text.replace(token, expr);
        }
        files.push(ChartFile {
            path: format!("templates/{}", o.file_name()),
            content: text,
            secret: false,
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}
