//! Parsing a command's arguments into a typed [`Command`], with Redis's option rules and error
//! messages. Pure: no node, no I/O, so every rule is unit-tested here.
//!
//! Invariants: a command that parses has every option checked (conflicting options, integers,
//! expiry ranges, UTF-8 keys); anything refused here is answered with an error reply and has
//! changed nothing.

use std::time::Duration;

use bytes::Bytes;

use super::reply::Reply;
use crate::auth::Role;

/// When a `SET` makes its entry expire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetExpiry {
    /// No option: the entry does not expire (any old expiry is dropped).
    None,
    /// `EX`/`PX`: this long after the write.
    After(Duration),
    /// `EXAT`/`PXAT`: at this unix time in ms.
    At(u64),
    /// `KEEPTTL`: whatever expiry the key has now.
    Keep,
}

/// `SET`'s `NX`/`XX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetCondition {
    Always,
    /// `NX`: only if absent.
    IfAbsent,
    /// `XX`: only if present.
    IfPresent,
}

/// The new expiry an `EXPIRE`-family command asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireAt {
    /// `EXPIRE`/`PEXPIRE`: this many ms from now (zero or less: the key is deleted).
    In(i64),
    /// `EXPIREAT`/`PEXPIREAT`: this unix time in ms (in the past: the key is deleted).
    At(i64),
}

/// The read level `CLIENT READLEVEL` picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelArg {
    Linearizable,
    Stale,
    Bounded(Duration),
}

/// `CLIENT` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientCommand {
    SetName(String),
    GetName,
    Id,
    /// `CLIENT SETINFO` (client libraries send it on connect; accepted and ignored).
    SetInfo,
    ReadLevel(LevelArg),
    MinVersion(u64),
}

/// `COMMAND` subcommands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandInfo {
    /// `COMMAND` or `COMMAND INFO name...` (no names: all).
    Info(Vec<String>),
    Count,
    /// `COMMAND DOCS`: answered empty (redis-cli only uses it for hints).
    Docs,
}

/// A password or token given to `AUTH` or `HELLO ... AUTH`. Its `Debug` shows no byte of it, so
/// a command can be formatted or logged whole without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Bytes);

impl Secret {
    /// The token as text; `None` if it is not UTF-8 (then it matches no token: the tokens file
    /// is text).
    pub fn expose(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The credentials of `AUTH` or `HELLO ... AUTH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// Ignored: geocache has no users, the token alone decides (any name is accepted, so a
    /// client that always sends `default`, or its own user name, works).
    pub username: Option<String>,
    pub token: Secret,
}

/// One parsed command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: Bytes,
        expiry: SetExpiry,
        condition: SetCondition,
        get: bool,
    },
    Del {
        keys: Vec<String>,
    },
    Exists {
        keys: Vec<String>,
    },
    MGet {
        keys: Vec<String>,
    },
    MSet {
        pairs: Vec<(String, Bytes)>,
    },
    Expire {
        key: String,
        at: ExpireAt,
    },
    Persist {
        key: String,
    },
    Ttl {
        key: String,
        millis: bool,
    },
    IncrBy {
        key: String,
        delta: i64,
    },
    Ping(Option<Bytes>),
    Echo(Bytes),
    Select(i64),
    Info(Vec<String>),
    Client(ClientCommand),
    Command(CommandInfo),
    /// `AUTH [username] token`.
    Auth(Credentials),
    /// `HELLO [protover [AUTH user pass] [SETNAME name]]`.
    Hello {
        protocol: Option<i64>,
        auth: Option<Credentials>,
        name: Option<String>,
    },
    Quit,
    DbSize,
    FlushDb,
    LastVersion,
}

/// What a connection must have before a command runs (with `--tokens`; a port without tokens
/// lets every connection do everything).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Needs {
    /// Runs on a connection that has not authenticated (`AUTH`, `HELLO`, `QUIT`, as in Redis).
    Nothing,
    /// Any valid token: the command touches only the connection's own state.
    Authenticated,
    /// A token of at least this role: the command reads or writes the cache.
    Role(Role),
}

/// What `COMMAND` reports about one command, so redis-cli can start, and what it needs.
#[derive(Clone, Copy, Debug)]
pub struct CommandSpec {
    pub name: &'static str,
    /// Redis arity, the name included; negative: at least that many.
    pub arity: i64,
    pub flags: &'static [&'static str],
    pub first_key: i64,
    pub last_key: i64,
    pub key_step: i64,
    /// What the connection needs to run it.
    pub needs: Needs,
}

const fn spec(
    name: &'static str,
    arity: i64,
    flags: &'static [&'static str],
    keys: (i64, i64, i64),
    needs: Needs,
) -> CommandSpec {
    CommandSpec { name, arity, flags, first_key: keys.0, last_key: keys.1, key_step: keys.2, needs }
}

const READ: Needs = Needs::Role(Role::Read);
const WRITE: Needs = Needs::Role(Role::Write);
const AUTHENTICATED: Needs = Needs::Authenticated;

/// Every command this server knows, and the one table of what each needs: reads (and `INFO`,
/// which shows the keyspace and the leader) need `read`, anything that changes the cache needs
/// `write`, commands on the connection's own state need any token, and only `AUTH`, `HELLO`
/// and `QUIT` run before one (Redis's `no-auth` commands; `PING` is refused, as in Redis).
pub const TABLE: &[CommandSpec] = &[
    spec("get", 2, &["readonly", "fast"], (1, 1, 1), READ),
    spec("set", -3, &["write", "denyoom"], (1, 1, 1), WRITE),
    spec("del", -2, &["write"], (1, -1, 1), WRITE),
    spec("exists", -2, &["readonly", "fast"], (1, -1, 1), READ),
    spec("mget", -2, &["readonly", "fast"], (1, -1, 1), READ),
    spec("mset", -3, &["write", "denyoom"], (1, -1, 2), WRITE),
    spec("expire", -3, &["write", "fast"], (1, 1, 1), WRITE),
    spec("pexpire", -3, &["write", "fast"], (1, 1, 1), WRITE),
    spec("expireat", -3, &["write", "fast"], (1, 1, 1), WRITE),
    spec("pexpireat", -3, &["write", "fast"], (1, 1, 1), WRITE),
    spec("persist", 2, &["write", "fast"], (1, 1, 1), WRITE),
    spec("ttl", 2, &["readonly", "fast"], (1, 1, 1), READ),
    spec("pttl", 2, &["readonly", "fast"], (1, 1, 1), READ),
    spec("incr", 2, &["write", "denyoom", "fast"], (1, 1, 1), WRITE),
    spec("decr", 2, &["write", "denyoom", "fast"], (1, 1, 1), WRITE),
    spec("incrby", 3, &["write", "denyoom", "fast"], (1, 1, 1), WRITE),
    spec("decrby", 3, &["write", "denyoom", "fast"], (1, 1, 1), WRITE),
    spec("ping", -1, &["fast"], (0, 0, 0), AUTHENTICATED),
    spec("echo", 2, &["fast"], (0, 0, 0), AUTHENTICATED),
    spec("select", 2, &["loading", "fast"], (0, 0, 0), AUTHENTICATED),
    spec("info", -1, &["loading"], (0, 0, 0), READ),
    spec("client", -2, &["loading"], (0, 0, 0), AUTHENTICATED),
    spec("command", -1, &["loading"], (0, 0, 0), AUTHENTICATED),
    spec("auth", -2, &["fast", "loading", "no_auth"], (0, 0, 0), Needs::Nothing),
    spec("hello", -1, &["fast", "loading", "no_auth"], (0, 0, 0), Needs::Nothing),
    spec("quit", -1, &["fast", "no_auth"], (0, 0, 0), Needs::Nothing),
    spec("dbsize", 1, &["readonly", "fast"], (0, 0, 0), READ),
    spec("flushdb", -1, &["write"], (0, 0, 0), WRITE),
    spec("flushall", -1, &["write"], (0, 0, 0), WRITE),
    spec("geocache.lastversion", 1, &["fast"], (0, 0, 0), AUTHENTICATED),
];

/// The table entry of the command `args` names, with its arity checked: what Redis checks
/// before authentication, so an unauthenticated client still learns of a typo.
pub fn lookup(args: &[Bytes]) -> Result<&'static CommandSpec, Reply> {
    let Some((name, rest)) = args.split_first() else {
        return Err(Reply::err("empty command"));
    };
    let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
    let Some(spec) = TABLE.iter().find(|entry| entry.name == lower) else {
        return Err(unknown_command(name, rest));
    };
    let given = args.len() as i64;
    if (spec.arity > 0 && given != spec.arity) || (spec.arity < 0 && given < -spec.arity) {
        return Err(Reply::err(format!("wrong number of arguments for '{lower}' command")));
    }
    Ok(spec)
}

/// Parses `args` (the command name first). Errors are the reply to send; the connection stays.
pub fn parse(args: Vec<Bytes>) -> Result<Command, Reply> {
    let spec = lookup(&args)?;
    let (name, rest) = args.split_first().expect("lookup found a name");
    let lower = spec.name;
    let mut words = Words { rest, at: 0 };
    let command = match lower {
        "get" => Command::Get { key: words.key()? },
        "set" => parse_set(&mut words)?,
        "del" => Command::Del { keys: words.keys()? },
        "exists" => Command::Exists { keys: words.keys()? },
        "mget" => Command::MGet { keys: words.keys()? },
        "mset" => {
            if rest.len() % 2 != 0 {
                return Err(Reply::err("wrong number of arguments for 'mset' command"));
            }
            let mut pairs = Vec::with_capacity(rest.len() / 2);
            while !words.done() {
                pairs.push((words.key()?, words.bytes()?));
            }
            Command::MSet { pairs }
        }
        "expire" | "pexpire" | "expireat" | "pexpireat" => {
            let key = words.key()?;
            let n = words.int()?;
            let ms = if lower.starts_with('p') { Some(n) } else { n.checked_mul(1000) };
            let ms = ms.ok_or_else(|| Reply::err(format!("invalid expire time in '{lower}' command")))?;
            if !words.done() {
                // Redis 7's NX/XX/GT/LT are not supported.
                return Err(Reply::err(format!(
                    "unsupported option for '{lower}' (NX, XX, GT and LT are not supported)"
                )));
            }
            let at = if lower.ends_with("at") { ExpireAt::At(ms) } else { ExpireAt::In(ms) };
            Command::Expire { key, at }
        }
        "persist" => Command::Persist { key: words.key()? },
        "ttl" | "pttl" => Command::Ttl { key: words.key()?, millis: lower == "pttl" },
        "incr" => Command::IncrBy { key: words.key()?, delta: 1 },
        "decr" => Command::IncrBy { key: words.key()?, delta: -1 },
        "incrby" => Command::IncrBy { key: words.key()?, delta: words.int()? },
        "decrby" => {
            let key = words.key()?;
            let delta = words.int()?.checked_neg().ok_or_else(|| Reply::err("decrement would overflow"))?;
            Command::IncrBy { key, delta }
        }
        "ping" => match rest.len() {
            0 => Command::Ping(None),
            1 => Command::Ping(Some(words.bytes()?)),
            _ => return Err(Reply::err("wrong number of arguments for 'ping' command")),
        },
        "echo" => Command::Echo(words.bytes()?),
        "select" => Command::Select(words.int()?),
        "info" => {
            let mut sections = Vec::new();
            while let Some(section) = words.next_upper() {
                sections.push(section.to_ascii_lowercase());
            }
            Command::Info(sections)
        }
        "client" => Command::Client(parse_client(&mut words)?),
        "command" => Command::Command(parse_command_info(&mut words)?),
        "auth" => Command::Auth(parse_auth(&mut words)?),
        "hello" => parse_hello(&mut words)?,
        "quit" => Command::Quit,
        "dbsize" => Command::DbSize,
        "flushdb" | "flushall" => {
            // ASYNC and SYNC are the same here: the clear is one replicated command.
            match words.next_upper().as_deref() {
                None | Some("ASYNC") | Some("SYNC") if words.done() => Command::FlushDb,
                _ => return Err(syntax_error()),
            }
        }
        "geocache.lastversion" => Command::LastVersion,
        _ => return Err(unknown_command(name, rest)),
    };
    if !words.done() {
        return Err(syntax_error());
    }
    Ok(command)
}

fn parse_set(words: &mut Words<'_>) -> Result<Command, Reply> {
    let key = words.key()?;
    let value = words.bytes()?;
    let mut expiry = SetExpiry::None;
    let mut condition = SetCondition::Always;
    let mut get = false;
    while let Some(option) = words.next_upper() {
        let mut set_expiry = |e: SetExpiry| {
            if expiry != SetExpiry::None {
                return Err(syntax_error());
            }
            expiry = e;
            Ok(())
        };
        match option.as_str() {
            "NX" | "XX" if condition != SetCondition::Always => return Err(syntax_error()),
            "NX" => condition = SetCondition::IfAbsent,
            "XX" => condition = SetCondition::IfPresent,
            "GET" => get = true,
            "KEEPTTL" => set_expiry(SetExpiry::Keep)?,
            "EX" | "PX" | "EXAT" | "PXAT" => {
                let n = words.int()?;
                let scale = if option.starts_with('P') { 1 } else { 1000 };
                let ms = n
                    .checked_mul(scale)
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| Reply::err("invalid expire time in 'set' command"))?;
                let ms = ms as u64;
                set_expiry(if option.ends_with("AT") {
                    SetExpiry::At(ms)
                } else {
                    SetExpiry::After(Duration::from_millis(ms))
                })?;
            }
            _ => return Err(syntax_error()),
        }
    }
    Ok(Command::Set { key, value, expiry, condition, get })
}

fn parse_client(words: &mut Words<'_>) -> Result<ClientCommand, Reply> {
    let sub = words.next_upper().unwrap_or_default();
    Ok(match sub.as_str() {
        "SETNAME" => {
            let name = words.text()?;
            if name.bytes().any(|b| !(b'!'..=b'~').contains(&b)) {
                return Err(Reply::err("Client names cannot contain spaces, newlines or special characters."));
            }
            ClientCommand::SetName(name)
        }
        "GETNAME" => ClientCommand::GetName,
        "ID" => ClientCommand::Id,
        "SETINFO" => {
            words.bytes()?;
            words.bytes()?;
            ClientCommand::SetInfo
        }
        "READLEVEL" => ClientCommand::ReadLevel(match words.next_upper().as_deref() {
            Some("LINEARIZABLE") => LevelArg::Linearizable,
            Some("STALE") => LevelArg::Stale,
            Some("BOUNDED") => {
                let ms = words.int()?;
                if ms <= 0 {
                    return Err(Reply::err("a bounded read level needs a staleness bound in ms > 0"));
                }
                LevelArg::Bounded(Duration::from_millis(ms as u64))
            }
            _ => return Err(Reply::err("read level must be linearizable, stale or bounded <ms>")),
        }),
        "MINVERSION" => {
            let v = words.int()?;
            ClientCommand::MinVersion(u64::try_from(v).map_err(|_| Reply::err("a version is never negative"))?)
        }
        _ => {
            return Err(Reply::err(format!(
                "unknown subcommand '{}'. Try CLIENT SETNAME, GETNAME, ID, READLEVEL or MINVERSION.",
                sub.to_ascii_lowercase()
            )))
        }
    })
}

fn parse_command_info(words: &mut Words<'_>) -> Result<CommandInfo, Reply> {
    Ok(match words.next_upper().as_deref() {
        None => CommandInfo::Info(Vec::new()),
        Some("COUNT") => CommandInfo::Count,
        Some("DOCS") => {
            while words.bytes().is_ok() {}
            CommandInfo::Docs
        }
        Some("INFO") => {
            let mut names = Vec::new();
            while let Ok(name) = words.text() {
                names.push(name.to_ascii_lowercase());
            }
            CommandInfo::Info(names)
        }
        Some(other) => {
            return Err(Reply::err(format!(
                "unknown subcommand '{}'. Try COMMAND, COMMAND COUNT or COMMAND INFO.",
                other.to_ascii_lowercase()
            )))
        }
    })
}

/// `AUTH token` or `AUTH username token`.
fn parse_auth(words: &mut Words<'_>) -> Result<Credentials, Reply> {
    let first = words.bytes()?;
    if words.done() {
        return Ok(Credentials { username: None, token: Secret(first) });
    }
    let username = String::from_utf8_lossy(&first).into_owned();
    Ok(Credentials { username: Some(username), token: Secret(words.bytes()?) })
}

fn parse_hello(words: &mut Words<'_>) -> Result<Command, Reply> {
    let protocol = if words.done() {
        None
    } else {
        Some(words.int().map_err(|_| Reply::err("Protocol version is not an integer or out of range"))?)
    };
    let mut name = None;
    let mut auth = None;
    while let Some(option) = words.next_upper() {
        match option.as_str() {
            "AUTH" => {
                let username = String::from_utf8_lossy(&words.bytes()?).into_owned();
                auth = Some(Credentials { username: Some(username), token: Secret(words.bytes()?) });
            }
            "SETNAME" => name = Some(words.text()?),
            _ => return Err(syntax_error()),
        }
    }
    Ok(Command::Hello { protocol, auth, name })
}

fn syntax_error() -> Reply {
    Reply::err("syntax error")
}

/// Redis's wording, with up to the first few arguments quoted.
fn unknown_command(name: &Bytes, rest: &[Bytes]) -> Reply {
    let args: String = rest.iter().take(8).map(|a| format!("'{}' ", String::from_utf8_lossy(a))).collect();
    Reply::err(format!("unknown command '{}', with args beginning with: {args}", String::from_utf8_lossy(name)))
}

/// The arguments after the command name, taken in order.
struct Words<'a> {
    rest: &'a [Bytes],
    at: usize,
}

impl Words<'_> {
    fn done(&self) -> bool {
        self.at >= self.rest.len()
    }

    fn bytes(&mut self) -> Result<Bytes, Reply> {
        let word = self.rest.get(self.at).cloned().ok_or_else(syntax_error)?;
        self.at += 1;
        Ok(word)
    }

    fn text(&mut self) -> Result<String, Reply> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Reply::err("argument must be valid UTF-8"))
    }

    /// A key: geocache keys are UTF-8 strings.
    fn key(&mut self) -> Result<String, Reply> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Reply::err("key must be valid UTF-8"))
    }

    fn keys(&mut self) -> Result<Vec<String>, Reply> {
        let mut keys = Vec::new();
        while !self.done() {
            keys.push(self.key()?);
        }
        Ok(keys)
    }

    fn int(&mut self) -> Result<i64, Reply> {
        let word = self.bytes()?;
        std::str::from_utf8(&word)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| Reply::err("value is not an integer or out of range"))
    }

    /// The next word upper-cased, if any (for option names).
    fn next_upper(&mut self) -> Option<String> {
        let word = self.rest.get(self.at)?;
        self.at += 1;
        Some(String::from_utf8_lossy(word).to_ascii_uppercase())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(line: &str) -> Result<Command, Reply> {
        parse(line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect())
    }

    fn error(line: &str) -> String {
        match cmd(line) {
            Err(Reply::Error(prefix, message)) => format!("{prefix} {message}"),
            other => panic!("{line}: {other:?}"),
        }
    }

    fn set(line: &str) -> (SetExpiry, SetCondition, bool) {
        match cmd(line) {
            Ok(Command::Set { expiry, condition, get, .. }) => (expiry, condition, get),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn names_are_case_insensitive_and_arity_is_checked() {
        assert_eq!(cmd("gEt k").unwrap(), Command::Get { key: "k".into() });
        assert_eq!(error("GET"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error("GET a b"), "ERR wrong number of arguments for 'get' command");
        assert_eq!(error("DEL"), "ERR wrong number of arguments for 'del' command");
        assert_eq!(error("MSET a 1 b"), "ERR wrong number of arguments for 'mset' command");
    }

    #[test]
    fn unknown_commands_name_themselves() {
        assert_eq!(error("LPUSH list a"), "ERR unknown command 'LPUSH', with args beginning with: 'list' 'a' ");
    }

    #[test]
    fn set_options() {
        let s = |ms| SetExpiry::After(Duration::from_millis(ms));
        assert_eq!(set("SET k v"), (SetExpiry::None, SetCondition::Always, false));
        assert_eq!(set("SET k v ex 10"), (s(10_000), SetCondition::Always, false));
        assert_eq!(set("SET k v PX 5 NX"), (s(5), SetCondition::IfAbsent, false));
        assert_eq!(set("SET k v XX GET KEEPTTL"), (SetExpiry::Keep, SetCondition::IfPresent, true));
        assert_eq!(set("SET k v EXAT 2"), (SetExpiry::At(2000), SetCondition::Always, false));
        assert_eq!(set("SET k v PXAT 2"), (SetExpiry::At(2), SetCondition::Always, false));
        assert_eq!(error("SET k v NX XX"), "ERR syntax error");
        assert_eq!(error("SET k v EX 1 PX 1"), "ERR syntax error");
        assert_eq!(error("SET k v EX 1 KEEPTTL"), "ERR syntax error");
        assert_eq!(error("SET k v EX"), "ERR syntax error");
        assert_eq!(error("SET k v EX 0"), "ERR invalid expire time in 'set' command");
        assert_eq!(error("SET k v EX -5"), "ERR invalid expire time in 'set' command");
        assert_eq!(error("SET k v EX 9223372036854775807"), "ERR invalid expire time in 'set' command");
        assert_eq!(error("SET k v EX ten"), "ERR value is not an integer or out of range");
        assert_eq!(error("SET k v BOGUS"), "ERR syntax error");
    }

    #[test]
    fn expire_family() {
        let at = |line| match cmd(line) {
            Ok(Command::Expire { at, .. }) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at("EXPIRE k 10"), ExpireAt::In(10_000));
        assert_eq!(at("PEXPIRE k -1"), ExpireAt::In(-1));
        assert_eq!(at("EXPIREAT k 5"), ExpireAt::At(5000));
        assert_eq!(at("PEXPIREAT k 5"), ExpireAt::At(5));
        assert_eq!(error("EXPIRE k 9223372036854775807"), "ERR invalid expire time in 'expire' command");
        assert!(error("EXPIRE k 10 NX").starts_with("ERR unsupported option"));
        assert_eq!(cmd("PTTL k").unwrap(), Command::Ttl { key: "k".into(), millis: true });
    }

    #[test]
    fn counters() {
        assert_eq!(cmd("INCR k").unwrap(), Command::IncrBy { key: "k".into(), delta: 1 });
        assert_eq!(cmd("DECR k").unwrap(), Command::IncrBy { key: "k".into(), delta: -1 });
        assert_eq!(cmd("INCRBY k -7").unwrap(), Command::IncrBy { key: "k".into(), delta: -7 });
        assert_eq!(cmd("DECRBY k 7").unwrap(), Command::IncrBy { key: "k".into(), delta: -7 });
        assert_eq!(error("INCRBY k 1.5"), "ERR value is not an integer or out of range");
        assert_eq!(error("DECRBY k -9223372036854775808"), "ERR decrement would overflow");
    }

    #[test]
    fn client_and_read_levels() {
        let client = |line| match cmd(line) {
            Ok(Command::Client(c)) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!(client("CLIENT READLEVEL stale"), ClientCommand::ReadLevel(LevelArg::Stale));
        assert_eq!(
            client("client readlevel BOUNDED 250"),
            ClientCommand::ReadLevel(LevelArg::Bounded(Duration::from_millis(250)))
        );
        assert_eq!(client("CLIENT READLEVEL linearizable"), ClientCommand::ReadLevel(LevelArg::Linearizable));
        assert_eq!(client("CLIENT MINVERSION 42"), ClientCommand::MinVersion(42));
        assert_eq!(client("CLIENT SETNAME worker-1"), ClientCommand::SetName("worker-1".into()));
        assert_eq!(client("CLIENT SETINFO LIB-NAME redis-rs"), ClientCommand::SetInfo);
        assert!(error("CLIENT READLEVEL bounded 0").starts_with("ERR a bounded read level needs"));
        assert!(error("CLIENT READLEVEL bounded").starts_with("ERR syntax error"));
        assert!(error("CLIENT READLEVEL sometimes").starts_with("ERR read level must be"));
        assert!(error("CLIENT MINVERSION -1").starts_with("ERR a version is never negative"));
        assert!(error("CLIENT KILL x").starts_with("ERR unknown subcommand 'kill'"));
        assert!(error("CLIENT GETNAME extra").starts_with("ERR syntax error"));
    }

    #[test]
    fn connection_commands() {
        assert_eq!(cmd("PING").unwrap(), Command::Ping(None));
        assert_eq!(cmd("PING hi").unwrap(), Command::Ping(Some(Bytes::from_static(b"hi"))));
        assert_eq!(cmd("HELLO 3").unwrap(), Command::Hello { protocol: Some(3), auth: None, name: None });
        assert_eq!(
            cmd("HELLO 2 SETNAME me").unwrap(),
            Command::Hello { protocol: Some(2), auth: None, name: Some("me".into()) }
        );
        assert_eq!(cmd("HELLO").unwrap(), Command::Hello { protocol: None, auth: None, name: None });
        assert_eq!(cmd("FLUSHDB ASYNC").unwrap(), Command::FlushDb);
        assert_eq!(error("FLUSHDB LATER"), "ERR syntax error");
        assert_eq!(cmd("COMMAND").unwrap(), Command::Command(CommandInfo::Info(vec![])));
        assert_eq!(cmd("COMMAND DOCS").unwrap(), Command::Command(CommandInfo::Docs));
        assert_eq!(cmd("geocache.LastVersion").unwrap(), Command::LastVersion);
        assert_eq!(cmd("INFO Geo keyspace").unwrap(), Command::Info(vec!["geo".into(), "keyspace".into()]));
    }

    #[test]
    fn auth_takes_a_token_and_maybe_a_username() {
        let secret = |t: &str| Secret(Bytes::copy_from_slice(t.as_bytes()));
        assert_eq!(cmd("AUTH tok").unwrap(), Command::Auth(Credentials { username: None, token: secret("tok") }));
        assert_eq!(
            cmd("auth default tok").unwrap(),
            Command::Auth(Credentials { username: Some("default".into()), token: secret("tok") })
        );
        assert_eq!(error("AUTH"), "ERR wrong number of arguments for 'auth' command");
        assert_eq!(error("AUTH a b c"), "ERR syntax error");
        assert_eq!(
            cmd("HELLO 3 AUTH alice tok SETNAME me").unwrap(),
            Command::Hello {
                protocol: Some(3),
                auth: Some(Credentials { username: Some("alice".into()), token: secret("tok") }),
                name: Some("me".into())
            }
        );
        assert_eq!(error("HELLO 3 AUTH alice"), "ERR syntax error");
        // The token never shows in a parsed command's Debug output.
        let shown = format!("{:?} {:?}", cmd("AUTH hunter2-hunter2").unwrap(), cmd("HELLO 3 AUTH u hunter2-hunter2"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// The one table of what each command needs, spelled out: a new command must be added here
    /// too, so nobody gives it a gate by accident.
    #[test]
    fn every_command_needs_what_it_touches() {
        let expected = [
            (Needs::Role(Role::Read), &["get", "mget", "exists", "ttl", "pttl", "dbsize", "info"][..]),
            (
                Needs::Role(Role::Write),
                &[
                    "set",
                    "mset",
                    "del",
                    "expire",
                    "pexpire",
                    "expireat",
                    "pexpireat",
                    "persist",
                    "incr",
                    "decr",
                    "incrby",
                    "decrby",
                    "flushdb",
                    "flushall",
                ][..],
            ),
            (Needs::Authenticated, &["ping", "echo", "select", "client", "command", "geocache.lastversion"][..]),
            (Needs::Nothing, &["auth", "hello", "quit"][..]),
        ];
        let mut named = 0;
        for (needs, names) in expected {
            for name in names {
                let spec = TABLE.iter().find(|s| s.name == *name).unwrap_or_else(|| panic!("{name} is not in TABLE"));
                assert_eq!(spec.needs, needs, "{name}");
                named += 1;
            }
        }
        assert_eq!(named, TABLE.len(), "a command in TABLE is missing from this test");
        // Redis's own flags agree: every "write" command needs write, every "readonly" one read.
        for spec in TABLE {
            if spec.flags.contains(&"write") {
                assert_eq!(spec.needs, Needs::Role(Role::Write), "{}", spec.name);
            }
            if spec.flags.contains(&"readonly") {
                assert_eq!(spec.needs, Needs::Role(Role::Read), "{}", spec.name);
            }
        }
    }

    #[test]
    fn lookup_checks_name_and_arity_before_anything_else() {
        let args = |line: &str| line.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect::<Vec<_>>();
        assert_eq!(lookup(&args("Set k v")).unwrap().name, "set");
        assert_eq!(lookup(&args("SET k")).unwrap_err(), Reply::err("wrong number of arguments for 'set' command"));
        assert!(lookup(&args("LPUSH k v")).unwrap_err().is_error());
        assert_eq!(lookup(&[]).unwrap_err(), Reply::err("empty command"));
    }

    #[test]
    fn keys_must_be_utf8() {
        let args = vec![Bytes::from_static(b"GET"), Bytes::from_static(b"\xff")];
        assert_eq!(parse(args).unwrap_err(), Reply::err("key must be valid UTF-8"));
    }
}
