//! The crate's one error type. Variants are ordered by what the person running the comparison
//! can do: fix a flag, install something, point at a binary, look at a log, or read a bug report.

use std::path::PathBuf;
use std::time::Duration;

/// What a comparison can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag is out of range.
    #[error("{0}")]
    InvalidSettings(String),
    /// etcd or Redis is not installed and could not be installed here.
    #[error(
        "{} not found on PATH and not installed automatically ({why}); install the Debian packages \
         etcd-server and redis-server (`apt-get install etcd-server redis-server`, as root)",
        missing.join(" and ")
    )]
    PeersMissing {
        /// The programs not found.
        missing: Vec<&'static str>,
        /// Why they were not installed.
        why: String,
    },
    /// `apt-get install` failed.
    #[error("installing etcd-server and redis-server with apt-get failed:\n{output}")]
    Install {
        /// The end of apt-get's output.
        output: String,
    },
    /// The geocache binary to run is not there.
    #[error("no geocache binary at {}: {hint}", path.display())]
    GeocacheBinary {
        /// Where it was looked for.
        path: PathBuf,
        /// How to get one.
        hint: String,
    },
    /// A program could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A system did not come up, or a process of it died, within the deadline.
    #[error("{what} within {within:?}: {detail}")]
    NotReady {
        /// What was awaited.
        what: String,
        /// How long.
        within: Duration,
        /// What was seen: the last probe's error, and the end of the processes' logs.
        detail: String,
    },
    /// Starting or waiting on geocache nodes failed.
    #[error("geocache: {0}")]
    Launch(#[from] geocache_node::launcher::LaunchError),
    /// A client could not be set up.
    #[error("cannot connect to {system}: {message}")]
    Connect {
        /// The system.
        system: &'static str,
        /// Why.
        message: String,
    },
    /// The load engine failed (a preload write failed, a client task panicked).
    #[error("{system}: {source}")]
    Load {
        /// The system being loaded.
        system: &'static str,
        /// What failed.
        #[source]
        source: geocache_node::loadgen::LoadError,
    },
    /// Local file system trouble (temp dirs, logs).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
