//! Processes in pods: `exec` over the API server's websocket (kube-rs
//! `AttachedProcess`, protocol v5 so stdin can be half-closed and pg_restore
//! sees its end), and helper pods with a claim mounted for volume copies.
//! Both come out as the port's engine-neutral [`Process`]: stdout and
//! stderr as chunks, stdin as a writer, the exit code from the status the
//! server sends at the end.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{AttachParams, AttachedProcess, DeleteParams, PostParams};
use kube::Api;
use tokio_util::io::ReaderStream;

use crate::domain::error::ToolError;
use crate::domain::kube::labels;
use crate::engine::process::{Chunk, Exit, Process};
use crate::engine::HelperSpec;

/// Bytes buffered per stream between the websocket and the reader.
const PIPE_BUF: usize = 1024 * 1024;

/// The exit code in a remote command's final status: Success is 0, a
/// NonZeroExitCode failure carries the code in its causes.
pub fn exit_code(status: Option<&Status>) -> Result<i64, ToolError> {
    let Some(s) = status else {
        return Err(ToolError::external(
            "the API server closed the exec stream without an exit status",
        ));
    };
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

fn process_of(
    mut attached: AttachedProcess,
    cleanup: Option<HelperCleanup>,
) -> Result<Process, ToolError> {
    let stdout = attached
        .stdout()
        .ok_or_else(|| ToolError::internal("exec without stdout"))?;
    let stderr = attached
        .stderr()
        .ok_or_else(|| ToolError::internal("exec without stderr"))?;
    let out = ReaderStream::with_capacity(stdout, 64 * 1024).map(|r| r.map(Chunk::Stdout));
    let err = ReaderStream::with_capacity(stderr, 16 * 1024).map(|r| r.map(Chunk::Stderr));
    let output = futures::stream::select(out, err)
        .map(|r| r.map_err(|e| ToolError::external(format!("reading process output failed: {e}"))));
    let input: crate::engine::process::Input = match attached.stdin() {
        Some(w) => Box::pin(w),
        None => Box::pin(tokio::io::sink()),
    };
    Ok(Process {
        output: Box::pin(output),
        input,
        exit: Box::new(PodExit {
            attached: Some(attached),
            cleanup,
        }),
    })
}

/// With stdin attached, the command runs under `sh`, which drains what the
/// command did not read before exiting with its code: a command that stops
/// reading early (`pg_restore --list` reads only the archive's TOC) would
/// otherwise leave the stdin stream blocked between the API server and the
/// kubelet, and with it the exit status behind it (kube-rs sends stdin and
/// reads the status in one loop). Docker closes the stream at exit instead.
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
    let mut params = AttachParams::default()
        .stdin(stdin)
        .stdout(true)
        .stderr(true)
        .max_stdout_buf_size(PIPE_BUF)
        .max_stderr_buf_size(64 * 1024)
        .max_stdin_buf_size(PIPE_BUF);
    if let Some(c) = container {
        params = params.container(c);
    }
    let attached = pods.exec(pod, cmd, &params).await.map_err(|e| {
        ToolError::external(format!(
            "exec {program} in pod {pod}: {}",
            crate::domain::error::error_chain(&e)
        ))
    })?;
    process_of(attached, None)
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
    attached: Option<AttachedProcess>,
    cleanup: Option<HelperCleanup>,
}

impl Exit for PodExit {
    fn code(mut self: Box<Self>) -> BoxFuture<'static, Result<i64, ToolError>> {
        let attached = self.attached.take();
        let cleanup = self.cleanup.take();
        Box::pin(async move {
            let code = match attached {
                Some(mut a) => {
                    let status = match a.take_status() {
                        Some(s) => tokio::time::timeout(Duration::from_secs(10), s)
                            .await
                            .ok()
                            .flatten(),
                        None => None,
                    };
                    let _ = a.join().await;
                    exit_code(status.as_ref())
                }
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
        if let Some(a) = self.attached.take() {
            a.abort();
        }
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
        crate::domain::kube::names::to_dns1123_label(project)
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
        .stderr(true)
        .max_stdout_buf_size(PIPE_BUF)
        .max_stdin_buf_size(PIPE_BUF);
    let cmd = if spec.stdin {
        draining(spec.cmd.clone())
    } else {
        spec.cmd.clone()
    };
    let attached = match pods.exec(&name, cmd, &params).await {
        Ok(a) => a,
        Err(e) => {
            HelperCleanup::remove(cleanup.pods, cleanup.name).await;
            return Err(ToolError::external(format!(
                "exec in helper pod {name}: {}",
                crate::domain::error::error_chain(&e)
            )));
        }
    };
    process_of(attached, Some(cleanup))
}
