//! A host Ollama's service manager: systemd on Linux (a drop-in for
//! ollama.service, daemon-reload, restart, `systemctl show`, the journal) and
//! launchd on macOS (`launchctl setenv` / `getenv`). Commands run with
//! argument lists, never through a shell, each bounded in time.
//!
//! Overrides for unusual layouts (and the tests, which run a stand-in
//! systemctl): STACKPILOT_SYSTEMCTL, STACKPILOT_JOURNALCTL, STACKPILOT_LAUNCHCTL
//! (programs) and STACKPILOT_SYSTEMD_UNIT_DIR (default /etc/systemd/system).
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::domain::error::{ErrorKind, ToolError};

/// The unit Ollama's Linux installer creates.
pub const OLLAMA_UNIT: &str = "ollama.service";
/// stackpilot's drop-in, under `<unit dir>/ollama.service.d/`.
pub const DROPIN_NAME: &str = "stackpilot.conf";
const SHORT: Duration = Duration::from_secs(15);
const RESTART: Duration = Duration::from_secs(120);

fn program(env: &str, default: &str) -> PathBuf {
    std::env::var_os(env)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(default))
}

fn on_path(p: &Path) -> bool {
    if p.components().count() > 1 {
        return p.is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(p).is_file()))
        .unwrap_or(false)
}

/// Runs a program to completion; a non-zero exit is an error with its stderr.
async fn run(program: &Path, args: &[&str], timeout: Duration) -> Result<String, ToolError> {
    let what = format!("{} {}", program.display(), args.join(" "));
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .map_err(|_| {
            ToolError::external(format!(
                "`{what}` did not finish within {} s",
                timeout.as_secs()
            ))
        })?
        .map_err(|e| ToolError::external(format!("cannot run `{what}`: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(ToolError::external(format!(
            "`{what}` failed ({}): {}",
            out.status,
            crate::domain::redact::cap(stderr.trim(), 600)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// systemd's `Environment=` value as `systemctl show --value` prints it:
/// space-separated assignments, a value with spaces in double quotes.
pub fn parse_environment(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut tokens = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in text.trim().chars() {
        match ch {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    tokens.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    for t in tokens {
        if let Some((k, v)) = t.split_once('=') {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// The drop-in stackpilot writes: one `Environment=` line per key.
pub fn render_dropin(pairs: &[(&str, String)]) -> String {
    let mut s = String::from(
        "# Written by stackpilot set_kv_cache: Ollama's KV cache settings.\n\
         # Change them with set_kv_cache; removing this file restores the unit's own settings.\n\
         [Service]\n",
    );
    for (k, v) in pairs {
        s.push_str(&format!("Environment=\"{k}={v}\"\n"));
    }
    s
}

/// Ollama under systemd.
#[derive(Debug, Clone)]
pub struct Systemd {
    pub unit: String,
    pub unit_dir: PathBuf,
    systemctl: PathBuf,
    journalctl: PathBuf,
}

impl Systemd {
    /// The host's systemd, for ollama.service; an error when there is no systemctl.
    pub fn ollama() -> Result<Self, ToolError> {
        let systemctl = program("STACKPILOT_SYSTEMCTL", "systemctl");
        if !on_path(&systemctl) {
            return Err(ToolError::external(format!(
                "no host Ollama under systemd: `{}` is not available on this machine",
                systemctl.display()
            ))
            .next_step(
                "run Ollama as the stack's ollama service (compose_up) and use target compose",
            ));
        }
        // sd_booted(3): systemd is the init system when this directory exists.
        // (A stand-in systemctl named by STACKPILOT_SYSTEMCTL is trusted as is.)
        if std::env::var_os("STACKPILOT_SYSTEMCTL").is_none()
            && !Path::new("/run/systemd/system").is_dir()
        {
            return Err(ToolError::external(
                "no host Ollama under systemd: systemd is not the init system here (no /run/systemd/system)",
            )
            .next_step("run Ollama as the stack's ollama service (compose_up) and use target compose"));
        }
        Ok(Self {
            unit: OLLAMA_UNIT.into(),
            unit_dir: program("STACKPILOT_SYSTEMD_UNIT_DIR", "/etc/systemd/system"),
            systemctl,
            journalctl: program("STACKPILOT_JOURNALCTL", "journalctl"),
        })
    }

    pub fn dropin_path(&self) -> PathBuf {
        self.unit_dir
            .join(format!("{}.d", self.unit))
            .join(DROPIN_NAME)
    }

    /// The unit's environment as systemd will start it.
    pub async fn environment(&self) -> Result<BTreeMap<String, String>, ToolError> {
        let out = run(
            &self.systemctl,
            &["show", &self.unit, "--property=Environment", "--value"],
            SHORT,
        )
        .await?;
        Ok(parse_environment(&out))
    }

    /// The unit exists and its drop-in directory can be written.
    pub async fn preflight(&self) -> Result<(), ToolError> {
        let state = run(
            &self.systemctl,
            &["show", &self.unit, "--property=LoadState", "--value"],
            SHORT,
        )
        .await?;
        if state.trim() != "loaded" {
            return Err(ToolError::external(format!(
                "systemd has no {} (LoadState {}): no host Ollama to configure",
                self.unit,
                state.trim()
            ))
            .next_step(
                "install Ollama (its installer creates ollama.service), or use target compose",
            ));
        }
        let mut dir = self.dropin_path();
        dir.pop();
        let mut probe = dir.clone();
        while !probe.exists() {
            if !probe.pop() {
                break;
            }
        }
        if nix::unistd::access(&probe, nix::unistd::AccessFlags::W_OK).is_err() {
            return Err(ToolError::new(
                ErrorKind::External,
                format!(
                    "cannot write {}: {} is not writable by this user; nothing was changed",
                    self.dropin_path().display(),
                    probe.display()
                ),
            )
            .next_step("run stackpilot as root (or with write access to the systemd unit directory) for target systemd"));
        }
        Ok(())
    }

    /// Writes the drop-in atomically, reloads systemd and restarts the unit;
    /// on a failure the previous drop-in (or none) is put back and the unit
    /// restarted with it.
    pub async fn apply(
        &self,
        pairs: &[(&str, String)],
        ct: &CancellationToken,
    ) -> Result<(), ToolError> {
        let path = self.dropin_path();
        let previous = std::fs::read_to_string(&path).ok();
        write_atomic(&path, &render_dropin(pairs))?;
        let steps = async {
            run(&self.systemctl, &["daemon-reload"], SHORT).await?;
            run(&self.systemctl, &["restart", &self.unit], RESTART).await
        };
        let result = tokio::select! {
            r = steps => r,
            _ = ct.cancelled() => Err(ToolError::new(ErrorKind::Cancelled, "set_kv_cache was cancelled during the restart")),
        };
        let Err(e) = result else { return Ok(()) };
        let restored = match previous {
            Some(text) => write_atomic(&path, &text),
            None => std::fs::remove_file(&path).map_err(|e| ToolError::internal(e.to_string())),
        };
        let back = match restored {
            Ok(()) => {
                let again = async {
                    run(&self.systemctl, &["daemon-reload"], SHORT).await?;
                    run(&self.systemctl, &["restart", &self.unit], RESTART).await
                }
                .await;
                match again {
                    Ok(_) => "the previous drop-in was put back and the unit restarted with it"
                        .to_string(),
                    Err(e2) => format!(
                        "the previous drop-in was put back, but restarting failed: {}",
                        e2.message
                    ),
                }
            }
            Err(io) => format!("putting the previous drop-in back failed: {}", io.message),
        };
        Err(ToolError::new(e.kind, format!("{}; {back}", e.message)))
    }

    /// The unit's recent log (Ollama's startup lines), when journalctl is there.
    pub async fn journal_tail(&self) -> Option<String> {
        if !on_path(&self.journalctl) {
            return None;
        }
        run(
            &self.journalctl,
            &["-u", &self.unit, "-n", "200", "-o", "cat", "--no-pager"],
            SHORT,
        )
        .await
        .ok()
    }
}

fn write_atomic(path: &Path, text: &str) -> Result<(), ToolError> {
    crate::adapters::files::write_atomic(path, text.as_bytes(), Some(0o644))
        .map_err(|e| ToolError::external(format!("writing {}: {e}", path.display())))
}

/// `launchctl getenv KEY` (None when unset).
pub async fn launchctl_getenv(key: &str) -> Result<Option<String>, ToolError> {
    let out = run(
        &program("STACKPILOT_LAUNCHCTL", "launchctl"),
        &["getenv", key],
        SHORT,
    )
    .await?;
    let v = out.trim_end_matches('\n').to_string();
    Ok((!v.is_empty()).then_some(v))
}

/// `launchctl setenv KEY VALUE`: seen by apps launched afterwards.
pub async fn launchctl_setenv(key: &str, value: &str) -> Result<(), ToolError> {
    run(
        &program("STACKPILOT_LAUNCHCTL", "launchctl"),
        &["setenv", key, value],
        SHORT,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_as_systemctl_prints_it() {
        let env = parse_environment(
            "OLLAMA_HOST=0.0.0.0 \"PATH=/usr/bin:/opt/a b\" OLLAMA_KV_CACHE_TYPE=q8_0\n",
        );
        assert_eq!(env["OLLAMA_HOST"], "0.0.0.0");
        assert_eq!(env["PATH"], "/usr/bin:/opt/a b");
        assert_eq!(env["OLLAMA_KV_CACHE_TYPE"], "q8_0");
        assert!(parse_environment("").is_empty());
    }

    #[test]
    fn dropin_has_one_environment_line_per_key() {
        let text = render_dropin(&[
            ("OLLAMA_KV_CACHE_TYPE", "q8_0".into()),
            ("OLLAMA_FLASH_ATTENTION", "1".into()),
        ]);
        assert!(text.contains("[Service]\n"));
        assert!(text.contains("Environment=\"OLLAMA_KV_CACHE_TYPE=q8_0\"\n"));
        assert!(text.contains("Environment=\"OLLAMA_FLASH_ATTENTION=1\"\n"));
    }
}
