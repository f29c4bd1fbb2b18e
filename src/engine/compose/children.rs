//! The compose CLI processes stackpilot starts never outlive it:
//! - each runs in its own process group (the docker CLI and the compose
//!   plugin it starts die together), killed whole when the handle is dropped
//!   (a cancelled call, a timeout, a panic);
//! - each gets PR_SET_PDEATHSIG(SIGKILL) on Linux, so a SIGKILLed stackpilot
//!   takes its direct child with it;
//! - each is recorded under `<coord dir>/children/<stackpilot's pid>` while it
//!   runs, so the next holder of the stack lock, finding that the previous
//!   holder died without releasing it, kills whatever it left running
//!   (`reap`) before it changes anything.
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Serializes this process's edits of its record file.
static RECORD: Mutex<()> = Mutex::new(());

fn record_file(coord: &Path, pid: u32) -> PathBuf {
    coord.join("children").join(pid.to_string())
}

fn read_groups(path: &Path) -> BTreeSet<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn write_groups(path: &Path, groups: &BTreeSet<i32>) {
    if groups.is_empty() {
        let _ = std::fs::remove_file(path);
        return;
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let text: String = groups.iter().map(|g| format!("{g}\n")).collect();
    let _ = std::fs::write(path, text);
}

fn edit(coord: &Path, f: impl FnOnce(&mut BTreeSet<i32>)) {
    let Ok(_guard) = RECORD.lock() else { return };
    let path = record_file(coord, std::process::id());
    let mut groups = read_groups(&path);
    f(&mut groups);
    write_groups(&path, &groups);
}

/// Prepares a command to run in its own process group, dying with us.
pub fn isolate(cmd: &mut tokio::process::Command) {
    #[cfg(unix)]
    {
        cmd.process_group(0);
        #[cfg(target_os = "linux")]
        // SAFETY: the closure runs in the forked child before exec and only
        // makes one async-signal-safe system call (prctl).
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(io::Error::from)
            });
        }
    }
    cmd.kill_on_drop(true);
}

/// A running child in its own group: recorded while it runs, its whole
/// group killed when dropped before it was reaped.
pub struct GroupChild {
    pub child: tokio::process::Child,
    pgid: Option<i32>,
    coord: PathBuf,
}

impl GroupChild {
    /// Spawns an `isolate`d command and records its group.
    pub fn spawn(cmd: &mut tokio::process::Command, coord: &Path) -> io::Result<Self> {
        let child = cmd.spawn()?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok());
        if let Some(g) = pgid {
            edit(coord, |set| {
                set.insert(g);
            });
        }
        Ok(Self {
            child,
            pgid,
            coord: coord.to_path_buf(),
        })
    }

    /// The child has been waited for: nothing left to kill.
    pub fn reaped(mut self) {
        self.forget();
    }

    fn forget(&mut self) {
        if let Some(g) = self.pgid.take() {
            edit(&self.coord, |set| {
                set.remove(&g);
            });
        }
    }
}

impl Drop for GroupChild {
    fn drop(&mut self) {
        if let Some(g) = self.pgid {
            kill_group(g);
        }
        self.forget();
    }
}

#[cfg(unix)]
fn kill_group(pgid: i32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[cfg(not(unix))]
fn kill_group(_pgid: i32) {}

#[cfg(unix)]
fn group_alive(pgid: i32) -> bool {
    // Where /proc can be read, a group whose members have all exited but are
    // not reaped yet (zombies: a killed shell's orphans wait for init) is not
    // running; the signal probe would count them.
    if let Some(running) = group_running_in_proc(pgid) {
        return running;
    }
    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), None).is_ok()
}

/// Whether a process of group `pgid` runs (is not a zombie), from /proc;
/// None where /proc lists no process.
#[cfg(unix)]
fn group_running_in_proc(pgid: i32) -> Option<bool> {
    let mut seen_any = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        seen_any = true;
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parens.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            return Some(true);
        }
    }
    seen_any.then_some(false)
}

#[cfg(not(unix))]
fn group_alive(_pgid: i32) -> bool {
    false
}

/// Kills what a dead lock holder (`dead_pid`) left running and clears its
/// record; says what it killed.
pub fn reap(coord: &Path, dead_pid: u32) -> Vec<String> {
    if dead_pid == std::process::id() {
        return Vec::new();
    }
    let path = record_file(coord, dead_pid);
    let mut killed = Vec::new();
    for g in read_groups(&path) {
        if group_alive(g) {
            kill_group(g);
            killed.push(format!(
                "process group {g} left running by stackpilot pid {dead_pid}, which died holding the stack lock"
            ));
        }
    }
    let _ = std::fs::remove_file(&path);
    killed
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_child_dies_with_its_group_and_leftovers_are_reaped() {
        let coord = tempfile::tempdir().expect("tempdir");
        // A shell whose own child is in the same group.
        let mut cmd = tokio::process::Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30"]);
        isolate(&mut cmd);
        let child = GroupChild::spawn(&mut cmd, coord.path()).expect("spawn");
        let pgid = child.child.id().expect("pid") as i32;
        assert!(group_alive(pgid));
        let record = record_file(coord.path(), std::process::id());
        assert_eq!(
            read_groups(&record).into_iter().collect::<Vec<_>>(),
            vec![pgid]
        );
        drop(child);
        for _ in 0..50 {
            if !group_alive(pgid) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(!group_alive(pgid), "the whole group is gone");
        assert!(!record.exists(), "the record is cleared");

        // A record left by a dead holder (simulated: another pid's file).
        let mut cmd = tokio::process::Command::new("sleep");
        cmd.arg("30").process_group(0);
        let mut left = cmd.spawn().expect("spawn");
        let g = left.id().expect("pid") as i32;
        write_groups(&record_file(coord.path(), 999_999), &[g].into());
        let killed = reap(coord.path(), 999_999);
        assert_eq!(killed.len(), 1, "{killed:?}");
        let status = tokio::time::timeout(std::time::Duration::from_secs(5), left.wait())
            .await
            .expect("killed")
            .expect("status");
        assert!(!status.success());
        assert!(!record_file(coord.path(), 999_999).exists());
    }
}
