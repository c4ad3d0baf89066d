//! Making sure the peers exist: etcd and Redis from Debian's packages (`etcd-server`,
//! `redis-server`). [`ensure_peers_installed`] is the one way the binary and the test get them,
//! so nobody ever installs them by hand; where it may not install (not root, no apt-get), it
//! says what to install instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::error::{Error, Result};

/// The Debian packages that provide the peers.
const PACKAGES: [&str; 2] = ["etcd-server", "redis-server"];

/// Where the peers' server programs are.
#[derive(Clone, Debug)]
pub struct PeerPrograms {
    /// `etcd`.
    pub etcd: PathBuf,
    /// `redis-server`.
    pub redis_server: PathBuf,
}

/// Finds `etcd` and `redis-server`; if either is missing and this process runs as root where
/// `apt-get` exists, installs `etcd-server redis-server` (printing a progress line to stderr;
/// `apt-get update` first only if the install fails without it). Otherwise fails with
/// [`Error::PeersMissing`], saying what to install.
pub fn ensure_peers_installed() -> Result<PeerPrograms> {
    if let Some(programs) = find_peers() {
        return Ok(programs);
    }
    let missing: Vec<&'static str> =
        ["etcd", "redis-server"].into_iter().filter(|p| find_program(p).is_none()).collect();
    let Some(apt_get) = find_program("apt-get") else {
        return Err(Error::PeersMissing { missing, why: "no apt-get on this machine".into() });
    };
    if !running_as_root() {
        return Err(Error::PeersMissing { missing, why: "installing needs root".into() });
    }
    let started = Instant::now();
    eprintln!(
        "geocache-compare: {} missing; installing {} with apt-get (once)...",
        missing.join(" and "),
        PACKAGES.join(" ")
    );
    if let Err(first) = apt_get_install(&apt_get) {
        // A machine that never ran `apt-get update` may have no or stale package lists.
        eprintln!("geocache-compare: apt-get install failed; running apt-get update and trying again...");
        apt(&apt_get, &["update", "-q"]).map_err(|update| Error::Install { output: format!("{first}\n{update}") })?;
        apt_get_install(&apt_get).map_err(|output| Error::Install { output })?;
    }
    eprintln!("geocache-compare: installed {} in {:.0?}", PACKAGES.join(" "), started.elapsed());
    find_peers().ok_or_else(|| Error::PeersMissing {
        missing: ["etcd", "redis-server"].into_iter().filter(|p| find_program(p).is_none()).collect(),
        why: "apt-get installed the packages, yet the programs are not on PATH".into(),
    })
}

fn find_peers() -> Option<PeerPrograms> {
    Some(PeerPrograms { etcd: find_program("etcd")?, redis_server: find_program("redis-server")? })
}

fn apt_get_install(apt_get: &Path) -> std::result::Result<(), String> {
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300"];
    args.extend(PACKAGES);
    apt(apt_get, &args)
}

/// Runs apt-get non-interactively; on failure, the end of its output.
fn apt(apt_get: &Path, args: &[&str]) -> std::result::Result<(), String> {
    let out = Command::new(apt_get)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .map_err(|e| format!("cannot run {}: {e}", apt_get.display()))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    Err(format!(
        "apt-get {} exited with {}:\n{}",
        args.join(" "),
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

/// The first executable file called `name` on `PATH` (then `/usr/sbin` and `/usr/bin`, which a
/// trimmed `PATH` may lack).
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// Whether the effective user is root, read from `/proc/self/status` (no libc call needed).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let uids = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
            // Real, effective, saved, file system.
            uids.split_whitespace().nth(1).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_on_path_and_missing_ones_are_not() {
        assert!(find_program("sh").is_some());
        assert!(find_program("no-such-program-geocache-compare").is_none());
    }
}
