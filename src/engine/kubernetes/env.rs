//! A container's environment as the kubelet resolves it from the pod spec:
//! `envFrom` ConfigMaps and Secrets first (with their prefixes), then `env`
//! entries, literal or from ConfigMap / Secret keys, later ones winning.
//! Backups read connection settings from it (POSTGRES_USER, the MongoDB
//! root credentials) and tools mask its secret values; it is never printed.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Secret};
use kube::Api;

use crate::domain::error::ToolError;

/// Where the values come from: one request per referenced object, cached
/// for the resolution of one container.
struct Sources {
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    cm: BTreeMap<String, Option<BTreeMap<String, String>>>,
    sec: BTreeMap<String, Option<BTreeMap<String, String>>>,
}

impl Sources {
    async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, String>>, kube::Error> {
        if !self.cm.contains_key(name) {
            let data = self
                .config_maps
                .get_opt(name)
                .await?
                .map(|c| c.data.unwrap_or_default());
            self.cm.insert(name.to_string(), data);
        }
        Ok(self.cm.get(name).and_then(Option::as_ref))
    }

    async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, String>>, kube::Error> {
        if !self.sec.contains_key(name) {
            let data = self.secrets.get_opt(name).await?.map(|s| {
                let mut out: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                out.extend(s.string_data.unwrap_or_default());
                out
            });
            self.sec.insert(name.to_string(), data);
        }
        Ok(self.sec.get(name).and_then(Option::as_ref))
    }
}

/// `KEY=value` lines in the order the container sees them (the last wins).
pub async fn resolve(
    config_maps: Api<ConfigMap>,
    secrets: Api<Secret>,
    container: &Container,
) -> Result<Vec<String>, ToolError> {
    let mut src = Sources {
        config_maps,
        secrets,
        cm: BTreeMap::new(),
        sec: BTreeMap::new(),
    };
    let fail = |e: kube::Error| {
        ToolError::external(format!(
            "reading the environment of container `{}` failed: {}",
            container.name,
            crate::domain::error::error_chain(&e)
        ))
    };
    let mut out: Vec<String> = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            src.config_map(&r.name).await.map_err(fail)?.cloned()
        } else if let Some(r) = &from.secret_ref {
            src.secret(&r.name).await.map_err(fail)?.cloned()
        } else {
            None
        };
        for (k, v) in data.unwrap_or_default() {
            out.push(format!("{prefix}{k}={v}"));
        }
    }
    for e in container.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(from)) => {
                if let Some(r) = &from.config_map_key_ref {
                    src.config_map(&r.name)
                        .await
                        .map_err(fail)?
                        .and_then(|d| d.get(&r.key).cloned())
                } else if let Some(r) = &from.secret_key_ref {
                    src.secret(&r.name)
                        .await
                        .map_err(fail)?
                        .and_then(|d| d.get(&r.key).cloned())
                } else {
                    // fieldRef / resourceFieldRef: not connection settings.
                    None
                }
            }
            (None, None) => Some(String::new()),
        };
        if let Some(v) = value {
            out.push(format!("{}={v}", e.name));
        }
    }
    Ok(out)
}
