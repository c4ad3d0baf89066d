//! One connection's authentication: Redis 6's `AUTH` and `HELLO ... AUTH` over geocache's
//! tokens and roles ([`crate::auth`]). Pure: no I/O, so every transition is unit-tested here.
//!
//! A connection to a port with `--tokens` starts unauthenticated; a valid token (any username,
//! the token alone decides) gives it that token's role until it closes, and a later valid
//! `AUTH` replaces the role. A wrong token is `-WRONGPASS` and changes nothing: an
//! unauthenticated connection stays so, an authenticated one keeps its role (as in Redis). A
//! connection to a port without tokens is `admin` from the start; `AUTH` there is an error, as
//! on a Redis without a password, and `HELLO ... AUTH` is accepted whatever the password, as
//! Redis's passwordless default user does.
//!
//! Invariants: a command runs only if [`Gate::admit`] let it (checked before it is parsed);
//! a refusal changes nothing; no reply or `Debug` output holds a token.

use super::command::{Credentials, Needs};
use super::reply::Reply;
use crate::auth::{Access, Denied, Role};
use crate::error::Error;

/// Redis's answer to `AUTH` on a server without a password.
const AUTH_WITHOUT_TOKENS: &str = "AUTH <password> called without any password configured for the default user. \
                                   Are you sure your configuration is correct?";

/// Redis's answer to a plain `HELLO` before authentication.
const HELLO_UNAUTHENTICATED: &str = "HELLO must be called with the client already authenticated, otherwise the \
                                     HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client \
                                     and select the RESP protocol version at the same time";

/// What one connection is allowed to do.
#[derive(Clone, Debug)]
pub struct Gate {
    access: Access,
    /// `None` until a valid token is presented (always `Some(Admin)` on a port without tokens).
    role: Option<Role>,
}

impl Gate {
    /// A new connection's gate under `access`.
    pub fn new(access: Access) -> Gate {
        let role = access.authenticate(None).ok();
        Gate { access, role }
    }

    /// The connection's role, once it has one.
    pub fn role(&self) -> Option<Role> {
        self.role
    }

    /// Whether a command that needs `needs` may run: `-NOAUTH` before authentication (unless it
    /// needs nothing), `-NOPERM` if the connection's role is below the one needed.
    pub fn admit(&self, needs: Needs) -> Result<(), Reply> {
        match (needs, self.role) {
            (Needs::Nothing, _) => Ok(()),
            (_, None) => Err(Error::Unauthenticated("Authentication required.".into()).into()),
            (Needs::Authenticated, Some(_)) => Ok(()),
            (Needs::Role(needs), Some(has)) if has >= needs => Ok(()),
            (Needs::Role(needs), Some(has)) => Err(Error::from(Denied::NotAllowed { has, needs }).into()),
        }
    }

    /// `AUTH [username] token`: `+OK` and the token's role, or `-WRONGPASS` and no change.
    pub fn auth(&mut self, credentials: &Credentials) -> Reply {
        if self.access.is_open() {
            return Reply::err(AUTH_WITHOUT_TOKENS);
        }
        match self.present(credentials) {
            Ok(()) => Reply::Ok,
            Err(reply) => reply,
        }
    }

    /// The authentication part of `HELLO [protover [AUTH username token]]`: with `AUTH`, as
    /// [`Gate::auth`] (but any password passes on a port without tokens); without it, `-NOAUTH`
    /// unless the connection is authenticated. `Ok` lets the rest of `HELLO` run.
    pub fn hello(&mut self, credentials: Option<&Credentials>) -> Result<(), Reply> {
        match credentials {
            Some(_) if self.access.is_open() => Ok(()),
            Some(credentials) => self.present(credentials),
            None if self.role.is_none() => Err(Error::Unauthenticated(HELLO_UNAUTHENTICATED.into()).into()),
            None => Ok(()),
        }
    }

    /// Checks a token against the port's tokens and takes its role if it is valid.
    fn present(&mut self, credentials: &Credentials) -> Result<(), Reply> {
        // A token that is not UTF-8 is in no tokens file: wrong like any other.
        let role = credentials.token.expose().and_then(|token| self.access.authenticate(Some(token)).ok());
        match role {
            Some(role) => {
                self.role = Some(role);
                Ok(())
            }
            None => Err(Reply::Error("WRONGPASS", "invalid username-password pair or user is disabled.".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::auth::Tokens;
    use crate::resp::command::{parse, Command};

    const READ: &str = "read-token-0123456789";
    const WRITE: &str = "write-token-0123456789";

    fn gate() -> Gate {
        Gate::new(Access::with_tokens(Tokens::from_pairs([(Role::Read, READ), (Role::Write, WRITE)])))
    }

    /// The credentials of an `AUTH ...` line.
    fn auth(line: &str) -> Credentials {
        match parse(line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect()) {
            Ok(Command::Auth(credentials)) => credentials,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn error(result: Result<(), Reply>) -> String {
        match result {
            Err(Reply::Error(prefix, message)) => format!("{prefix} {message}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_connection_may_only_authenticate_or_quit() {
        let gate = gate();
        assert_eq!(gate.role(), None);
        assert_eq!(gate.admit(Needs::Nothing), Ok(()));
        for needs in [Needs::Authenticated, Needs::Role(Role::Read), Needs::Role(Role::Write)] {
            assert_eq!(error(gate.admit(needs)), "NOAUTH Authentication required.");
        }
    }

    #[test]
    fn a_wrong_token_changes_nothing_and_a_valid_one_gives_its_role() {
        let mut gate = gate();
        for wrong in ["AUTH nope", "AUTH default nope", &format!("AUTH {}", &READ[1..])] {
            assert_eq!(
                gate.auth(&auth(wrong)),
                Reply::Error("WRONGPASS", "invalid username-password pair or user is disabled.".into())
            );
            assert_eq!(gate.role(), None, "{wrong}");
        }
        assert_eq!(gate.auth(&auth(&format!("AUTH {READ}"))), Reply::Ok);
        assert_eq!(gate.role(), Some(Role::Read));
        assert_eq!(gate.admit(Needs::Authenticated), Ok(()));
        assert_eq!(gate.admit(Needs::Role(Role::Read)), Ok(()));
        assert_eq!(error(gate.admit(Needs::Role(Role::Write))), "NOPERM a read token cannot do this; it needs write");
        // A wrong token later keeps the role the connection had (as in Redis).
        assert!(gate.auth(&auth("AUTH nope")).is_error());
        assert_eq!(gate.role(), Some(Role::Read));
        // Any username: the token alone decides.
        assert_eq!(gate.auth(&auth(&format!("AUTH alice {WRITE}"))), Reply::Ok);
        assert_eq!(gate.role(), Some(Role::Write));
        assert_eq!(gate.admit(Needs::Role(Role::Write)), Ok(()));
        assert_eq!(error(gate.admit(Needs::Role(Role::Admin))), "NOPERM a write token cannot do this; it needs admin");
    }

    #[test]
    fn hello_authenticates_or_needs_an_authenticated_connection() {
        let mut gate = gate();
        assert!(
            error(gate.hello(None)).starts_with("NOAUTH HELLO must be called with the client already authenticated")
        );
        let wrong = Credentials { username: Some("default".into()), ..auth("AUTH nope") };
        assert!(error(gate.hello(Some(&wrong))).starts_with("WRONGPASS"));
        assert_eq!(gate.role(), None);
        assert_eq!(gate.hello(Some(&auth(&format!("AUTH default {WRITE}")))), Ok(()));
        assert_eq!(gate.role(), Some(Role::Write));
        assert_eq!(gate.hello(None), Ok(()));
    }

    #[test]
    fn a_port_without_tokens_is_admin_and_refuses_auth_like_redis() {
        let mut gate = Gate::new(Access::open());
        assert_eq!(gate.role(), Some(Role::Admin));
        assert_eq!(gate.admit(Needs::Role(Role::Write)), Ok(()));
        assert!(gate.auth(&auth("AUTH anything")).is_error());
        assert_eq!(gate.hello(Some(&auth("AUTH default anything"))), Ok(()));
        assert_eq!(gate.hello(None), Ok(()));
        assert_eq!(gate.role(), Some(Role::Admin));
    }

    #[test]
    fn no_token_shows_in_debug_output() {
        let mut gate = gate();
        let credentials = auth(&format!("AUTH default {READ}"));
        assert_eq!(gate.auth(&credentials), Reply::Ok);
        let shown = format!("{credentials:?} {gate:?} {:?}", Command::Auth(credentials.clone()));
        assert!(!shown.contains(READ), "{shown}");
    }
}
