//! Processes in pods: `exec` over the API server's websocket (protocol v5,
//! so stdin can be half-closed and pg_restore sees its end; driven by
//! [`super::session`], where reading never waits on writing), and helper
//! pods with a claim mounted for volume copies. Both come out as the port's
//! engine-neutral [`Process`]: stdout and stderr as chunks, stdin as a
//! writer, the exit code from the status the server sends at the end.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, DeleteParams, PostParams};
use kube::Api;

use super::session::{self, ExitStatus, Session};
use crate::domain::error::ToolError;
use crate::domain::kubernetes::labels;
use crate::engine::process::{Exit, Process};
use crate::engine::HelperSpec;

/// The exit code in a remote command's final status: Success is 0, a
/// NonZeroExitCode failure carries the code in its causes.
pub fn exit_code(s: &Status) -> Result<i64, ToolError> {
    if s.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if s.reason.as_deref() == Some("NonZeroExitCode") {
        if let Some(code) = s
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse::<i64>().ok())
        {
            return Ok(code);
        }
    }
    Err(ToolError::external(format!(
        "the command failed to run: {}",
        crate::domain::redact::cap(s.message.as_deref().unwrap_or("no message"), 400)
    )))
}

fn process_of(session: Session, cleanup: Option<HelperCleanup>) -> Process {
    Process {
        output: session.output,
        input: session.input,
        exit: Box::new(PodExit {
            status: Some(session.exit),
            cleanup,
        }),
    }
}

/// With stdin attached, the command runs under `sh`, which drains what the
/// command did not read before exiting with its code. A command that stops
/// reading early (`pg_restore --list` reads only the archive's TOC) and
/// exits otherwise never gets its exit status sent: the runtime's copy into
/// the process's stdin stays blocked and the API server holds the exec open
/// (also with `kubectl exec -i`, measured on the test cluster: no status in
/// 30 s without the wrapper, 0.2 s with it). Docker closes the stream at exit.
pub fn draining(cmd: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        "\"$@\"; rc=$?; cat >/dev/null; exit $rc".into(),
        "sh".into(),
    ];
    out.extend(cmd);
    out
}

/// `exec` in a pod's first container (the service's), no TTY. `env` is
/// passed through `env` (the exec API has no environment of its own).
pub async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: Option<&str>,
    cmd: Vec<String>,
    env: Vec<String>,
    stdin: bool,
) -> Result<Process, ToolError> {
    let program = cmd.first().cloned().unwrap_or_default();
    let cmd: Vec<String> = if env.is_empty() {
        cmd
    } else {
        std::iter::once("env".to_string())
            .chain(env)
            .chain(cmd)
            .collect()
    };
    let cmd = if stdin { draining(cmd) } else { cmd };
    let mut params = AttachParams::default()
        .stdin(stdin)
        .stdout(true)
        .stderr(true);
    if let Some(c) = container {
        params = params.container(c);
    }
    let s = session::open(pods, pod, cmd, &params).await.map_err(|e| {
        ToolError::external(format!(
            "exec {program} in pod {pod}: {}",
            crate::domain::error::error_chain(&e)
        ))
    })?;
    Ok(process_of(s, None))
}

struct HelperCleanup {
    pods: Api<Pod>,
    name: String,
}

impl HelperCleanup {
    async fn remove(pods: Api<Pod>, name: String) {
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        let _ = pods.delete(&name, &dp).await;
    }
}

struct PodExit {
    status: Option<ExitStatus>,
    cleanup: Option<HelperCleanup>,
}

impl Exit for PodExit {
    fn code(mut self: Box<Self>) -> BoxFuture<'static, Result<i64, ToolError>> {
        let status = self.status.take();
        let cleanup = self.cleanup.take();
        Box::pin(async move {
            let code = match status {
                Some(s) => s.status().await.and_then(|s| exit_code(&s)),
                None => Err(ToolError::internal("exit code read twice")),
            };
            if let Some(c) = cleanup {
                HelperCleanup::remove(c.pods, c.name).await;
            }
            code
        })
    }
}

impl Drop for PodExit {
    fn drop(&mut self) {
        // Dropping the session's tasks closes the connection.
        self.status.take();
        if let Some(c) = self.cleanup.take() {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(HelperCleanup::remove(c.pods, c.name));
            }
        }
    }
}

/// A helper pod with a claim at /data: it idles (`sleep`), the command runs
/// in it through exec (so no output is lost before an attach), and the pod
/// is deleted when the process is finished or dropped. Placed on the node
/// of the claim's current user (a ReadWriteOnce claim mounts on one node).
pub async fn helper(
    pods: &Api<Pod>,
    project: &str,
    spec: &HelperSpec,
    node: Option<String>,
) -> Result<Process, ToolError> {
    let name = format!(
        "{}-helper-{}",
        crate::domain::kubernetes::names::to_dns1123_label(project)
            .chars()
            .take(40)
            .collect::<String>(),
        hex::encode(rand::random::<[u8; 4]>())
    );
    let helper_labels: BTreeMap<String, String> = BTreeMap::from([
        (labels::HELPER.to_string(), "true".to_string()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
        (labels::PROJECT.to_string(), project.to_string()),
    ]);
    let mut pod_json = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": helper_labels},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "automountServiceAccountToken": false,
            "containers": [{
                "name": "helper",
                "image": spec.image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "86400"],
                "securityContext": {"runAsUser": 0, "runAsGroup": 0},
            }],
        }
    });
    if let Some((claim, ro)) = &spec.volume {
        pod_json["spec"]["volumes"] = serde_json::json!([{
            "name": "data",
            "persistentVolumeClaim": {"claimName": claim, "readOnly": ro}
        }]);
        pod_json["spec"]["containers"][0]["volumeMounts"] =
            serde_json::json!([{"name": "data", "mountPath": "/data", "readOnly": ro}]);
    }
    if let Some(n) = node {
        pod_json["spec"]["nodeName"] = serde_json::Value::String(n);
    }
    let pod: Pod = serde_json::from_value(pod_json)
        .map_err(|e| ToolError::internal(format!("helper pod: {e}")))?;
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(|e| {
            ToolError::external(format!(
                "creating helper pod from {} failed: {}",
                spec.image,
                crate::domain::error::error_chain(&e)
            ))
        })?;
    let cleanup = HelperCleanup {
        pods: pods.clone(),
        name: name.clone(),
    };
    // Up to 60 s for the image and the mount; an unschedulable or failing
    // helper is reported with the reason the kubelet gives.
    let ready = async {
        let mut last = String::new();
        for _ in 0..300 {
            match pods.get_opt(&name).await {
                Ok(Some(p)) => {
                    let state = super::pods::state_of(&p);
                    if state == "running" {
                        return Ok(());
                    }
                    let d = super::pods::detail_of(&p, &[], Vec::new());
                    if let Some(e) = d.error {
                        last = e;
                        if last.starts_with("ErrImage")
                            || last.starts_with("ImagePull")
                            || last.starts_with("InvalidImageName")
                        {
                            break;
                        }
                    }
                    if state == "exited" {
                        last = format!("the helper exited (code {:?})", d.exit_code);
                        break;
                    }
                }
                Ok(None) => {
                    last = "the helper pod disappeared".into();
                    break;
                }
                Err(e) => last = crate::domain::error::error_chain(&e),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(ToolError::external(format!(
            "helper pod from {} did not start: {}",
            spec.image,
            if last.is_empty() {
                "timed out after 60 s".to_string()
            } else {
                crate::domain::redact::cap(&last, 400)
            }
        )))
    };
    if let Err(e) = ready.await {
        HelperCleanup::remove(cleanup.pods, cleanup.name).await;
        return Err(e);
    }
    let params = AttachParams::default()
        .container("helper")
        .stdin(spec.stdin)
        .stdout(true)
        .stderr(true);
    let cmd = if spec.stdin {
        draining(spec.cmd.clone())
    } else {
        spec.cmd.clone()
    };
    let s = match session::open(pods, &name, cmd, &params).await {
        Ok(a) => a,
        Err(e) => {
            HelperCleanup::remove(cleanup.pods, cleanup.name).await;
            return Err(ToolError::external(format!(
                "exec in helper pod {name}: {}",
                crate::domain::error::error_chain(&e)
            )));
        }
    };
    Ok(process_of(s, Some(cleanup)))
}
