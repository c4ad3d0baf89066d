//! Replies and their encoding in RESP2 or RESP3, and the one mapping from the node's [`Error`] to
//! a Redis error reply.
//!
//! Invariants: an error reply is one line (`-PREFIX message\r\n`, any CR or LF in the message
//! replaced by a space), so a reply can never end early or inject another; the prefix depends
//! only on the error's variant, never on its text.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::Error;

/// The protocol a connection reads replies in (`HELLO 2|3`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Resp2,
    Resp3,
}

/// One reply, before encoding.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+OK`
    Ok,
    /// A simple string (no CR or LF).
    Simple(String),
    /// An error: the prefix word (`ERR`, `TRYAGAIN`, ...) and the message.
    Error(&'static str, String),
    Int(i64),
    Bulk(Bytes),
    /// RESP2 null bulk `$-1`, RESP3 null `_`.
    Nil,
    Array(Vec<Reply>),
    /// RESP3 map; in RESP2 a flat array of keys and values.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub fn err(message: impl Into<String>) -> Reply {
        Reply::Error("ERR", message.into())
    }

    pub fn bulk(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(..))
    }

    /// About how many bytes the encoding takes (exact for bulks, which dominate), computed
    /// without encoding, so an oversized reply can be refused before it is built.
    pub fn encoded_len(&self) -> usize {
        match self {
            Reply::Bulk(b) => b.len() + 16,
            Reply::Array(items) => 16 + items.iter().map(Reply::encoded_len).sum::<usize>(),
            Reply::Map(pairs) => 16 + pairs.iter().map(|(k, v)| k.encoded_len() + v.encoded_len()).sum::<usize>(),
            Reply::Simple(s) | Reply::Error(_, s) => s.len() + 16,
            Reply::Ok | Reply::Int(_) | Reply::Nil => 24,
        }
    }

    /// Appends the encoding of this reply in `protocol` to `out`.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) {
        match self {
            Reply::Ok => out.put_slice(b"+OK\r\n"),
            Reply::Simple(s) => line(out, b'+', s),
            Reply::Error(prefix, message) => line(out, b'-', &format!("{prefix} {message}")),
            Reply::Int(n) => line(out, b':', &n.to_string()),
            Reply::Bulk(b) => {
                line(out, b'$', &b.len().to_string());
                out.put_slice(b);
                out.put_slice(b"\r\n");
            }
            Reply::Nil => match protocol {
                Protocol::Resp2 => out.put_slice(b"$-1\r\n"),
                Protocol::Resp3 => out.put_slice(b"_\r\n"),
            },
            Reply::Array(items) => {
                line(out, b'*', &items.len().to_string());
                for item in items {
                    item.encode(protocol, out);
                }
            }
            Reply::Map(pairs) => {
                match protocol {
                    Protocol::Resp2 => line(out, b'*', &(pairs.len() * 2).to_string()),
                    Protocol::Resp3 => line(out, b'%', &pairs.len().to_string()),
                }
                for (key, value) in pairs {
                    key.encode(protocol, out);
                    value.encode(protocol, out);
                }
            }
        }
    }
}

/// `<kind><text>\r\n`, with CR and LF in `text` made spaces so the line cannot end early.
fn line(out: &mut BytesMut, kind: u8, text: &str) {
    out.put_u8(kind);
    out.extend(text.bytes().map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }));
    out.put_slice(b"\r\n");
}

/// The one mapping from the node's errors to Redis error replies. The prefix says what a client
/// can do: `TRYAGAIN` nothing was applied and retrying (here or at another node) may succeed;
/// `STALE` this replica is too far behind for the connection's bounded read level; `TIMEOUT`
/// the write may or may not have applied; `ERR` the request itself is wrong (or, for
/// `ERR internal`, the node is unhealthy).
impl From<&Error> for Reply {
    fn from(e: &Error) -> Reply {
        let detail = e.detail();
        match e {
            Error::InvalidArgument(_) | Error::NotFound(_) | Error::FailedPrecondition(_) => {
                Reply::Error("ERR", detail)
            }
            Error::PermissionDenied(_) => Reply::Error("NOPERM", detail),
            Error::Unauthenticated(_) => Reply::Error("NOAUTH", detail),
            Error::NotLeader { leader: None } => Reply::Error("TRYAGAIN", "no leader yet".into()),
            Error::NotLeader { .. } | Error::Unavailable(_) => Reply::Error("TRYAGAIN", detail),
            Error::Overloaded(_) => Reply::Error("TRYAGAIN", format!("overloaded: {detail}")),
            Error::StaleReplica { .. } => Reply::Error("STALE", detail),
            Error::Timeout(_) => Reply::Error("TIMEOUT", format!("{detail} (the write may or may not have applied)")),
            Error::Storage(_) | Error::DataDirInUse(_) | Error::Tls(_) | Error::Fatal(_) => {
                Reply::Error("ERR", format!("internal error: {detail}"))
            }
        }
    }
}

impl From<Error> for Reply {
    fn from(e: Error) -> Reply {
        Reply::from(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(reply: &Reply, protocol: Protocol) -> String {
        let mut out = BytesMut::new();
        reply.encode(protocol, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn nil_and_maps_differ_by_protocol() {
        assert_eq!(encoded(&Reply::Nil, Protocol::Resp2), "$-1\r\n");
        assert_eq!(encoded(&Reply::Nil, Protocol::Resp3), "_\r\n");
        let map = Reply::Map(vec![(Reply::bulk("proto"), Reply::Int(3))]);
        assert_eq!(encoded(&map, Protocol::Resp2), "*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(encoded(&map, Protocol::Resp3), "%1\r\n$5\r\nproto\r\n:3\r\n");
        let array = Reply::Array(vec![Reply::Bulk(Bytes::from_static(b"a\r\nb")), Reply::Nil, Reply::Int(-2)]);
        assert_eq!(encoded(&array, Protocol::Resp2), "*3\r\n$4\r\na\r\nb\r\n$-1\r\n:-2\r\n");
    }

    #[test]
    fn an_error_stays_on_one_line() {
        assert_eq!(encoded(&Reply::err("bad\r\n+OK"), Protocol::Resp2), "-ERR bad  +OK\r\n");
    }

    #[test]
    fn each_error_has_its_prefix() {
        let prefix = |e: Error| match Reply::from(e) {
            Reply::Error(prefix, message) => format!("{prefix} {message}"),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            prefix(Error::InvalidArgument("value exceeds 4194304 bytes".into())),
            "ERR value exceeds 4194304 bytes"
        );
        assert_eq!(prefix(Error::NotLeader { leader: None }), "TRYAGAIN no leader yet");
        assert!(prefix(Error::Unavailable("no quorum".into())).starts_with("TRYAGAIN no quorum"));
        assert!(prefix(Error::Overloaded("busy".into())).starts_with("TRYAGAIN overloaded: busy"));
        assert_eq!(prefix(Error::StaleReplica { bound_ms: Some(380), max_ms: 200 }), "STALE bound 380ms exceeds 200ms");
        assert!(prefix(Error::Timeout("x".into())).starts_with("TIMEOUT x"));
        assert!(prefix(Error::Fatal("x".into())).starts_with("ERR internal error"));
        assert!(prefix(Error::PermissionDenied("x".into())).starts_with("NOPERM"));
    }
}
