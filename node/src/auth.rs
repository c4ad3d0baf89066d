//! Who may do what on the client-facing ports (the gRPC client listener and the Redis port):
//! bearer tokens from `--tokens FILE`, each mapped to a role.
//!
//! Roles are ordered: `read` (get, ttl, status) < `write` (plus set, delete, expire, flush)
//! < `admin` (plus membership changes and configure). A token grants its role and every role
//! below it.
//!
//! The file has one `ROLE TOKEN` per line; blank lines and lines starting with `#` are skipped.
//! Without `--tokens` the client ports are open to anyone who reaches them (the default, for a
//! loopback cluster).
//!
//! Invariants:
//! * A token is never kept, logged or formatted: only its SHA-256 digest is stored, a lookup
//!   hashes the presented token first (so the time a lookup takes says nothing about how much
//!   of a stored token a guess matched), and errors about the file name a line number, never
//!   its text.
//! * The peer listener is not governed by tokens: members authenticate by certificate there
//!   ([`crate::tls`]), and a write a follower forwards was checked at the follower.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What a token allows, lowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads: get, ttl, exists, status.
    Read,
    /// Reads and writes to the cache.
    Write,
    /// Everything, including membership changes and configuration.
    Admin,
}

impl Role {
    /// The name used in the tokens file and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = ();
    fn from_str(s: &str) -> Result<Role, ()> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(()),
        }
    }
}

/// What reading a tokens file can fail with. No variant carries a token.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The file could not be read.
    #[error("cannot read the tokens file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line is not `ROLE TOKEN`.
    #[error("tokens file {} line {line}: {why}", path.display())]
    Line { path: PathBuf, line: usize, why: &'static str },
    /// The file names no token: every client would be refused.
    #[error("tokens file {} holds no token (one `ROLE TOKEN` per line, ROLE read, write or admin)", path.display())]
    Empty { path: PathBuf },
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No token, or one the node does not know.
    Unauthenticated { presented: bool },
    /// A known token whose role is below what the request needs.
    NotAllowed { has: Role, needs: Role },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::Unauthenticated { presented: false } => f.write_str("a token is required"),
            Denied::Unauthenticated { presented: true } => f.write_str("the token is not valid"),
            Denied::NotAllowed { has, needs } => write!(f, "a {has} token cannot do this; it needs {needs}"),
        }
    }
}

impl From<Denied> for crate::error::Error {
    fn from(denied: Denied) -> Self {
        match denied {
            Denied::Unauthenticated { .. } => crate::error::Error::Unauthenticated(denied.to_string()),
            Denied::NotAllowed { .. } => crate::error::Error::PermissionDenied(denied.to_string()),
        }
    }
}

type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The tokens a node accepts, by digest.
#[derive(Clone, Default)]
pub struct Tokens {
    roles: HashMap<Digest, Role>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens {{ {} tokens }}", self.roles.len())
    }
}

impl Tokens {
    /// Reads `--tokens FILE`.
    pub fn load(path: &Path) -> Result<Tokens, TokensError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| TokensError::Read { path: path.to_path_buf(), source })?;
        Tokens::parse(&text, path)
    }

    /// Parses a tokens file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Tokens, TokensError> {
        let mut roles = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| TokensError::Line { path: path.to_path_buf(), line: index + 1, why };
            let mut words = line.split_whitespace();
            let (Some(role), Some(token), None) = (words.next(), words.next(), words.next()) else {
                return Err(bad("expected `ROLE TOKEN` (two words)"));
            };
            let role: Role = role.parse().map_err(|_| bad("the role must be read, write or admin"))?;
            if token.len() < 16 {
                return Err(bad("a token must be at least 16 characters"));
            }
            if roles.insert(digest(token), role).is_some() {
                return Err(bad("this token is given twice"));
            }
        }
        if roles.is_empty() {
            return Err(TokensError::Empty { path: path.to_path_buf() });
        }
        Ok(Tokens { roles })
    }

    /// Builds tokens from `(role, token)` pairs (for tests and `geocache dev`).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (Role, &'a str)>) -> Tokens {
        Tokens { roles: pairs.into_iter().map(|(role, token)| (digest(token), role)).collect() }
    }

    /// The role `token` grants, if it is known.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        self.roles.get(&digest(token)).copied()
    }
}

/// The access rule of a client port: open, or tokens.
#[derive(Clone, Debug, Default)]
pub struct Access {
    tokens: Option<std::sync::Arc<Tokens>>,
}

impl Access {
    /// Anyone may do anything (no `--tokens`).
    pub fn open() -> Access {
        Access { tokens: None }
    }

    /// Only holders of `tokens`, each within its role.
    pub fn with_tokens(tokens: Tokens) -> Access {
        Access { tokens: Some(std::sync::Arc::new(tokens)) }
    }

    /// Whether tokens are required at all.
    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// The role a connection or request presenting `token` has (`Admin` when the port is open).
    pub fn authenticate(&self, token: Option<&str>) -> Result<Role, Denied> {
        let Some(tokens) = &self.tokens else { return Ok(Role::Admin) };
        let token = token.ok_or(Denied::Unauthenticated { presented: false })?;
        tokens.role_of(token).ok_or(Denied::Unauthenticated { presented: true })
    }

    /// [`Access::authenticate`], then whether that role covers `needs`.
    pub fn check(&self, token: Option<&str>, needs: Role) -> Result<Role, Denied> {
        let has = self.authenticate(token)?;
        if has < needs {
            return Err(Denied::NotAllowed { has, needs });
        }
        Ok(has)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "read-token-0123456789";
    const WRITE: &str = "write-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    fn access() -> Access {
        let text = format!("# who may do what\n\nread {READ}\nwrite   {WRITE}\n  admin {ADMIN}  \n");
        Access::with_tokens(Tokens::parse(&text, Path::new("tokens")).unwrap())
    }

    #[test]
    fn each_role_covers_those_below_it() {
        let access = access();
        assert_eq!(access.check(Some(READ), Role::Read), Ok(Role::Read));
        assert_eq!(
            access.check(Some(READ), Role::Write),
            Err(Denied::NotAllowed { has: Role::Read, needs: Role::Write })
        );
        assert_eq!(access.check(Some(WRITE), Role::Write), Ok(Role::Write));
        assert!(access.check(Some(WRITE), Role::Admin).is_err());
        assert_eq!(access.check(Some(ADMIN), Role::Admin), Ok(Role::Admin));
        assert_eq!(access.check(Some(ADMIN), Role::Read), Ok(Role::Admin));
    }

    #[test]
    fn missing_and_unknown_tokens_are_unauthenticated() {
        let access = access();
        assert_eq!(access.check(None, Role::Read), Err(Denied::Unauthenticated { presented: false }));
        assert_eq!(access.check(Some("nope"), Role::Read), Err(Denied::Unauthenticated { presented: true }));
        // A prefix or an extension of a real token is a different token.
        assert!(access.check(Some(&READ[..READ.len() - 1]), Role::Read).is_err());
        assert!(access.check(Some(&format!("{READ}x")), Role::Read).is_err());
    }

    #[test]
    fn an_open_port_allows_everything() {
        let open = Access::open();
        assert!(open.is_open());
        assert_eq!(open.check(None, Role::Admin), Ok(Role::Admin));
    }

    #[test]
    fn bad_files_name_the_line_and_never_show_a_token() {
        let secret = "s3cret-s3cret-s3cret";
        for (text, line) in [
            (format!("read {READ}\nsuper {secret}\n"), 2),
            (format!("write {secret} extra\n"), 1),
            (format!("read {secret}\n\nadmin {secret}\n"), 3),
            ("read short\n".to_string(), 1),
            ("admin\n".to_string(), 1),
        ] {
            let err = Tokens::parse(&text, Path::new("/etc/geocache/tokens")).unwrap_err();
            let shown = format!("{err} {err:?}");
            assert!(matches!(err, TokensError::Line { line: l, .. } if l == line), "{text:?}: {shown}");
            assert!(!shown.contains(secret) && !shown.contains("short"), "{shown}");
        }
        assert!(matches!(Tokens::parse("# nothing\n", Path::new("t")), Err(TokensError::Empty { .. })));
        let tokens = Tokens::parse(&format!("read {READ}\n"), Path::new("t")).unwrap();
        assert!(!format!("{tokens:?}").contains(READ));
    }
}
