//! The peers' server processes (etcd members, redis-server). geocache's nodes are started by
//! `geocache_node::launcher`, the one way to start those; this is the same contract for
//! programs that are not geocache.
//!
//! Invariants:
//! * A [`PeerProcess`] is killed (SIGKILL) and reaped when dropped.
//! * It also dies if this process dies without running destructors: a watchdog (`sh`) reads a
//!   pipe only this process holds and, at end of file, kills the server. (etcd and redis-server
//!   have nothing like geocache's `--exit-with-stdin`.)
//! * Its stdout and stderr go to a log file, whose end [`PeerProcess::log_tail`] shows when a
//!   server does not come up.

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use geocache_node::launcher;

use crate::error::{Error, Result};

/// Kills `$1` once standard input reaches end of file (or this shell is told to stop reading).
const WATCHDOG: &str = r#"while read -r _; do :; done; kill -9 "$1" 2>/dev/null"#;

/// A running server; killed and reaped when dropped.
#[derive(Debug)]
pub struct PeerProcess {
    name: String,
    child: Child,
    watchdog: Child,
    log: PathBuf,
}

impl PeerProcess {
    /// Starts `program` with `args` as `name` (e.g. `etcd member 2`), output appended to `log`.
    /// Variables named in `env_remove` are not passed on.
    pub fn spawn(name: &str, program: &Path, args: &[String], log: &Path, env_remove: &[String]) -> Result<Self> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(Error::io(format!("cannot open the log {} of {name}", log.display())))?;
        let err = out.try_clone().map_err(Error::io(format!("cannot open the log {}", log.display())))?;
        let mut command = Command::new(program);
        command.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
        for key in env_remove {
            command.env_remove(key);
        }
        let mut child =
            command.spawn().map_err(|source| Error::Spawn { program: program.display().to_string(), source })?;
        let watchdog = Command::new("sh")
            .args(["-c", WATCHDOG, "watchdog", &child.id().to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let watchdog = match watchdog {
            Ok(w) => w,
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Spawn { program: "sh (the watchdog)".into(), source });
            }
        };
        Ok(PeerProcess { name: name.to_string(), child, watchdog, log: log.to_path_buf() })
    }

    /// `Some(description)` if the server has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{} exited ({status})", self.name)),
            Ok(None) => None,
            Err(e) => Some(format!("{}: cannot tell whether it runs: {e}", self.name)),
        }
    }

    /// The last `lines` lines of its log, headed by its name.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(lines).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- {} ({}), last lines:\n{}", self.name, self.log.display(), tail.join("\n"))
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        // The watchdog goes first, so it can never kill a pid the server has already given back.
        let _ = self.watchdog.kill();
        let _ = self.watchdog.wait();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `probe` (an `Err` is "not yet", kept to explain a timeout) until it succeeds, a process
/// of `processes` exits, or `within` passes. On failure the error names `what`, the last probe
/// error and the end of every process's log.
pub async fn wait_ready<T, F, Fut>(
    what: &str,
    within: Duration,
    processes: &mut [PeerProcess],
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::result::Result<T, String>>,
{
    // Shared with each probe's future, which outlives the closure call that made it.
    let last_error = std::rc::Rc::new(std::cell::RefCell::new(String::from("no probe answered")));
    let outcome = launcher::eventually(what, within, || {
        let died: Vec<String> = processes.iter_mut().filter_map(PeerProcess::exited).collect();
        let attempt = probe();
        let last_error = last_error.clone();
        async move {
            if !died.is_empty() {
                return Some(Err(died.join("; ")));
            }
            match attempt.await {
                Ok(value) => Some(Ok(value)),
                Err(e) => {
                    *last_error.borrow_mut() = e;
                    None
                }
            }
        }
    })
    .await;
    let failure = match outcome {
        Ok(Ok(value)) => return Ok(value),
        Ok(Err(died)) => died,
        Err(_) => format!("not ready (last probe: {})", last_error.borrow()),
    };
    let logs: Vec<String> = processes.iter().map(|p| p.log_tail(15)).collect();
    Err(Error::NotReady { what: what.to_string(), within, detail: format!("{failure}\n{}", logs.join("\n")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        Command::new("kill").args(["-0", &pid.to_string()]).stderr(Stdio::null()).status().unwrap().success()
    }

    #[test]
    fn a_dropped_process_and_its_watchdog_are_killed_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        let sleep = crate::install::find_program("sleep").unwrap();
        let log = dir.path().join("sleep.log");
        let mut process = PeerProcess::spawn("sleeper", &sleep, &["60".into()], &log, &[]).unwrap();
        assert!(process.exited().is_none());
        let (pid, watchdog) = (process.child.id(), process.watchdog.id());
        drop(process);
        assert!(!alive(pid), "server {pid} survived");
        assert!(!alive(watchdog), "watchdog {watchdog} survived");
    }

    #[test]
    fn the_watchdog_kills_the_server_when_its_pipe_closes() {
        let dir = tempfile::tempdir().unwrap();
        let sleep = crate::install::find_program("sleep").unwrap();
        let mut process =
            PeerProcess::spawn("sleeper", &sleep, &["60".into()], &dir.path().join("s.log"), &[]).unwrap();
        // What happens when this process dies: its end of the pipe closes.
        drop(process.watchdog.stdin.take());
        let status = process.child.wait().unwrap();
        assert!(!status.success(), "killed, not finished: {status}");
    }

    #[tokio::test]
    async fn waiting_on_a_process_that_exits_fails_at_once_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let sh = crate::install::find_program("sh").unwrap();
        let args = ["-c".to_string(), "echo cannot bind; exit 3".to_string()];
        let process = PeerProcess::spawn("failing", &sh, &args, &dir.path().join("f.log"), &[]).unwrap();
        let mut processes = [process];
        let started = std::time::Instant::now();
        let err = wait_ready("failing to answer", Duration::from_secs(30), &mut processes, || async {
            Err::<(), _>("refused".to_string())
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(20), "did not notice the exit");
        let text = err.to_string();
        assert!(text.contains("failing exited") && text.contains("cannot bind"), "{text}");
    }
}
