//! Cutting commands out of a connection's read buffer.
//!
//! A command is a RESP2 array of bulk strings (what every client sends, whatever protocol it
//! reads replies in) or an inline command (one line of space-separated words, for `nc` and
//! `telnet`). [`scan`] checks the shape and every length in the bytes that have arrived, before
//! anything is decoded or buffered further, so an oversized bulk or a malformed frame is refused
//! as soon as its header arrives; the `redis-protocol` crate then decodes the complete frame into
//! `Bytes` slices of the buffer (no copy).
//!
//! Invariants: a frame [`scan`] accepts has at most [`FrameLimits::max_args`] arguments, none
//! longer than [`FrameLimits::max_bulk`], and no nesting, so the decoder never allocates or
//! recurses on a client's say-so; [`next_command`] consumes exactly one command's bytes or none.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use redis_protocol::resp2::types::BytesFrame;

/// Limits on one command.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    /// Longest bulk string (the larger of the node's value and key limits).
    pub max_bulk: usize,
    /// Most arguments, the command name included (Redis: 1024 * 1024).
    pub max_args: usize,
    /// Longest inline command line (Redis: 64 KiB).
    pub max_inline: usize,
}

/// Why a connection's input cannot be read as commands. Each closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("Protocol error: invalid multibulk length")]
    ArrayLength,
    #[error("Protocol error: invalid bulk length")]
    BulkLength,
    #[error("Protocol error: bulk of {len} bytes exceeds the value limit of {max} bytes")]
    BulkTooLong { len: u64, max: usize },
    #[error("Protocol error: expected '$', got '{0}'")]
    ExpectedBulk(char),
    #[error("Protocol error: too big inline request")]
    InlineTooLong,
    #[error("Protocol error: unbalanced quotes or bad bytes in inline request")]
    Inline,
    #[error("Protocol error: {0}")]
    Decode(String),
}

/// What the buffer holds.
#[derive(Debug, PartialEq, Eq)]
enum Scan {
    /// Not a whole command yet (and nothing wrong so far).
    Incomplete,
    /// A whole RESP array command of this many bytes.
    Array(usize),
    /// A whole inline command line of this many bytes (terminator included).
    Inline(usize),
}

/// Takes the next whole command off the front of `buf`: `Ok(None)` if more bytes are needed.
/// An empty array or an empty inline line is skipped (Redis ignores both).
pub fn next_command(buf: &mut BytesMut, limits: &FrameLimits) -> Result<Option<Vec<Bytes>>, FrameError> {
    loop {
        match scan(buf, limits)? {
            Scan::Incomplete => return Ok(None),
            Scan::Inline(len) => {
                let line = buf.split_to(len).freeze();
                let args = inline_args(&line)?;
                if !args.is_empty() {
                    return Ok(Some(args));
                }
            }
            Scan::Array(len) => {
                let decoded = decode_bytes_mut(buf).map_err(|e| FrameError::Decode(e.to_string()))?;
                let Some((frame, consumed, _)) = decoded else {
                    // The scan saw a whole frame; the decoder must too.
                    return Err(FrameError::Decode("frame ended early".into()));
                };
                debug_assert_eq!(consumed, len);
                let args = match frame {
                    BytesFrame::Array(items) => items
                        .into_iter()
                        .map(|item| match item {
                            BytesFrame::BulkString(b) => Ok(b),
                            _ => Err(FrameError::ExpectedBulk('?')),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    // `*-1`: a null array, which Redis also skips.
                    BytesFrame::Null => Vec::new(),
                    _ => return Err(FrameError::Decode("not an array".into())),
                };
                if !args.is_empty() {
                    return Ok(Some(args));
                }
            }
        }
    }
}

/// Checks the command at the front of `buf` against `limits` and finds where it ends.
fn scan(buf: &[u8], limits: &FrameLimits) -> Result<Scan, FrameError> {
    let Some(&first) = buf.first() else { return Ok(Scan::Incomplete) };
    if first != b'*' {
        return match find_crlf_or_lf(buf) {
            Some(end) => Ok(Scan::Inline(end)),
            None if buf.len() > limits.max_inline => Err(FrameError::InlineTooLong),
            None => Ok(Scan::Incomplete),
        };
    }
    let Some((count, mut at)) = header(buf, 0, limits.max_inline)? else { return Ok(Scan::Incomplete) };
    let count = match count {
        -1 => return Ok(Scan::Array(at)),
        n if n < 0 || n as u64 > limits.max_args as u64 => return Err(FrameError::ArrayLength),
        n => n as u64,
    };
    for _ in 0..count {
        let Some(&kind) = buf.get(at) else { return Ok(Scan::Incomplete) };
        if kind != b'$' {
            return Err(FrameError::ExpectedBulk(char::from(kind)));
        }
        let Some((len, after)) = header(buf, at, limits.max_inline)? else { return Ok(Scan::Incomplete) };
        let len = u64::try_from(len).map_err(|_| FrameError::BulkLength)?;
        if len > limits.max_bulk as u64 {
            return Err(FrameError::BulkTooLong { len, max: limits.max_bulk });
        }
        // `len` is at most max_bulk, a usize.
        let end = after + len as usize;
        if buf.len() < end + 2 {
            return Ok(Scan::Incomplete);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(FrameError::BulkLength);
        }
        at = end + 2;
    }
    Ok(Scan::Array(at))
}

/// Reads `<type byte><decimal>\r\n` at `at`: the number and where the line ends, `None` if the
/// line has not fully arrived.
fn header(buf: &[u8], at: usize, max_line: usize) -> Result<Option<(i64, usize)>, FrameError> {
    let line = &buf[at + 1..];
    let Some(cr) = line.iter().position(|&b| b == b'\r') else {
        return if line.len() > 32.min(max_line) { Err(FrameError::BulkLength) } else { Ok(None) };
    };
    if cr > 20 {
        return Err(FrameError::BulkLength);
    }
    match line.get(cr + 1) {
        None => return Ok(None),
        Some(b'\n') => {}
        Some(_) => return Err(FrameError::BulkLength),
    }
    let number = std::str::from_utf8(&line[..cr]).ok().and_then(|s| s.parse::<i64>().ok());
    let bad = if buf[at] == b'*' { FrameError::ArrayLength } else { FrameError::BulkLength };
    let number = number.ok_or(bad)?;
    Ok(Some((number, at + 1 + cr + 2)))
}

fn find_crlf_or_lf(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|i| i + 1)
}

/// Splits an inline command line into words. Double and single quotes group words (as Redis's
/// `sdssplitargs`, without its escapes beyond `\"` inside double quotes).
fn inline_args(line: &Bytes) -> Result<Vec<Bytes>, FrameError> {
    let mut text = &line[..];
    while let Some((&last, rest)) = text.split_last() {
        if last == b'\n' || last == b'\r' {
            text = rest;
        } else {
            break;
        }
    }
    let mut args = Vec::new();
    let mut rest = text;
    loop {
        while rest.first().is_some_and(|b| b.is_ascii_whitespace()) {
            rest = &rest[1..];
        }
        let Some(&first) = rest.first() else { break };
        let mut word = Vec::new();
        if first == b'"' || first == b'\'' {
            let mut i = 1;
            loop {
                match rest.get(i) {
                    None => return Err(FrameError::Inline),
                    Some(b'\\') if first == b'"' && rest.get(i + 1).is_some() => {
                        word.push(rest[i + 1]);
                        i += 2;
                    }
                    Some(&b) if b == first => {
                        i += 1;
                        break;
                    }
                    Some(&b) => {
                        word.push(b);
                        i += 1;
                    }
                }
            }
            // A closing quote must end the word.
            if rest.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                return Err(FrameError::Inline);
            }
            rest = &rest[i..];
        } else {
            let end = rest.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(rest.len());
            word.extend_from_slice(&rest[..end]);
            rest = &rest[end..];
        }
        args.push(Bytes::from(word));
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits { max_bulk: 10, max_args: 4, max_inline: 64 };

    fn next(input: &[u8]) -> (Result<Option<Vec<Bytes>>, FrameError>, usize) {
        let mut buf = BytesMut::from(input);
        let result = next_command(&mut buf, &LIMITS);
        (result, buf.len())
    }

    fn words(args: &[&str]) -> Option<Vec<Bytes>> {
        Some(args.iter().map(|a| Bytes::copy_from_slice(a.as_bytes())).collect())
    }

    #[test]
    fn a_whole_array_is_taken_and_the_rest_left() {
        let (cmd, left) = next(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(cmd.unwrap(), words(&["GET", "k"]));
        assert_eq!(left, 14);
    }

    #[test]
    fn a_partial_frame_waits_for_more_at_every_cut() {
        let frame = b"*2\r\n$3\r\nSET\r\n$10\r\n0123456789\r\n";
        for cut in 0..frame.len() {
            let (cmd, left) = next(&frame[..cut]);
            assert_eq!(cmd.unwrap(), None, "cut at {cut}");
            assert_eq!(left, cut, "nothing consumed at {cut}");
        }
        assert_eq!(next(frame).0.unwrap(), words(&["SET", "0123456789"]));
    }

    #[test]
    fn an_oversized_bulk_is_refused_from_its_header_alone() {
        let (cmd, _) = next(b"*2\r\n$3\r\nSET\r\n$11\r\n");
        assert_eq!(cmd.unwrap_err(), FrameError::BulkTooLong { len: 11, max: 10 });
    }

    #[test]
    fn malformed_frames_are_refused() {
        assert_eq!(next(b"*5\r\n").0.unwrap_err(), FrameError::ArrayLength, "over max_args");
        assert_eq!(next(b"*x\r\n").0.unwrap_err(), FrameError::ArrayLength);
        assert_eq!(next(b"*1\r\n:5\r\n").0.unwrap_err(), FrameError::ExpectedBulk(':'));
        assert_eq!(next(b"*1\r\n*1\r\n").0.unwrap_err(), FrameError::ExpectedBulk('*'), "no nesting");
        assert_eq!(next(b"*1\r\n$-3\r\n").0.unwrap_err(), FrameError::BulkLength);
        assert_eq!(next(b"*1\r\n$2\r\nabcd\r\n").0.unwrap_err(), FrameError::BulkLength, "no CRLF after bulk");
        assert_eq!(next(b"*1\r\n$1x\r\n").0.unwrap_err(), FrameError::BulkLength);
        assert_eq!(next(b"*1\r\n$1\rx").0.unwrap_err(), FrameError::BulkLength);
        assert_eq!(next(b"*1\r\n$11111111111111111111111111111111111").0.unwrap_err(), FrameError::BulkLength);
    }

    #[test]
    fn empty_and_null_arrays_are_skipped() {
        let (cmd, left) = next(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(cmd.unwrap(), words(&["PING"]));
        assert_eq!(left, 0);
    }

    #[test]
    fn inline_commands_split_on_spaces_and_quotes() {
        assert_eq!(next(b"PING\r\n").0.unwrap(), words(&["PING"]));
        assert_eq!(next(b"set k \"a b\" 'c'\n").0.unwrap(), words(&["set", "k", "a b", "c"]));
        assert_eq!(next(b"\r\nPING\r\n").0.unwrap(), words(&["PING"]), "empty lines skipped");
        assert_eq!(next(b"PING").0.unwrap(), None);
        assert_eq!(next(b"set k \"a\n").0.unwrap_err(), FrameError::Inline);
        assert_eq!(next(&[b'a'; 65]).0.unwrap_err(), FrameError::InlineTooLong);
    }
}
