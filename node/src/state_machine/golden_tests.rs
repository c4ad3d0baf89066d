//! Golden scripts: `testscripts/<scenario>.txt` drives a [`Cache`] line by line, and the
//! transcript must equal `testscripts/<scenario>.out` byte for byte. Regenerate the transcripts
//! with `UPDATE_GOLDENFILES=1 cargo test -p geocache-node --lib state_machine` and review the
//! diff like code.
//!
//! Every script is also replayed once per line with the cache swapped, just before that line, for
//! one restored from a bincode round trip of its snapshot; transcript and final state must not
//! change.
//!
//! Script syntax, one command per line (`#` comments and blank lines are copied through):
//!
//! ```text
//! set KEY=VALUE [ttl_at=T] [if=absent|present|version:V]   VALUE `x*40` means 40 x's
//! delete KEY
//! expire KEY (ttl_at=T | persist)
//! touch KEY...
//! tick
//! configure [max_entries=N] [max_bytes=N]
//! clear                                                    every entry (Redis FLUSHDB)
//! get KEY... [at=T]                                        a local read at local time T
//! dump
//! ```
//!
//! Every applied command takes `at=T` (its `now_ms`, default 0, which leaves the clock alone),
//! `id=CLIENT:SEQ[:ACKED_BELOW]` (a write id) and `index=I` (its log index, default the last
//! applied + 1). An applied command prints `[index] response`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::cache::describe_value;
use super::session::{describe_expiry, describe_response};
use super::*;

fn script_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/state_machine/testscripts")
}

/// The scripts, sorted by name.
fn scripts() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(script_dir())
        .expect("read testscripts/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scripts in {}", script_dir().display());
    paths
}

/// What running a script produced.
struct Run {
    transcript: String,
    final_dump: String,
    final_hash: u64,
}

/// Runs `script`; if `restore_at` is `Some(n)`, the cache is replaced by a restored copy of
/// itself just before line `n` (0-based).
fn run_script(name: &str, script: &str, restore_at: Option<usize>) -> Run {
    let mut cache = Cache::new();
    let mut out = String::new();
    for (n, line) in script.lines().enumerate() {
        if restore_at == Some(n) {
            let bytes = bincode::serialize(&cache.snapshot()).expect("serialize snapshot");
            cache = Cache::restore(bincode::deserialize(&bytes).expect("deserialize snapshot"));
        }
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let _ = writeln!(out, "> {trimmed}");
        if let Err(e) = run_line(&mut cache, trimmed, &mut out) {
            panic!("{name}:{}: {e}: {trimmed}", n + 1);
        }
        cache.check_invariants();
    }
    Run { transcript: out, final_dump: cache.dump(), final_hash: cache.state_hash() }
}

fn run_line(cache: &mut Cache, line: &str, out: &mut String) -> Result<(), String> {
    let mut tokens = line.split_whitespace();
    let verb = tokens.next().expect("non-empty line");
    let rest: Vec<&str> = tokens.collect();
    // `set`'s first token is KEY=VALUE, not an option.
    let (set_pair, rest) = match (verb, rest.split_first()) {
        ("set", Some((pair, rest))) => (Some(*pair), rest),
        ("set", None) => return Err("set needs KEY=VALUE".into()),
        _ => (None, &rest[..]),
    };
    let mut words = Vec::new();
    let mut opts = BTreeMap::new();
    for token in rest {
        match token.split_once('=') {
            Some((k, v)) => {
                opts.insert(k, v);
            }
            None => words.push(token.to_string()),
        }
    }
    let mut opt = |name: &str| opts.remove(name);
    let num = |s: Option<&str>| -> Result<Option<u64>, String> {
        s.map(|s| s.parse().map_err(|_| format!("not a number: {s}"))).transpose()
    };
    let one_key = |words: &[String]| match words {
        [key] => Ok(key.clone()),
        _ => Err(format!("expected one key, got {words:?}")),
    };

    let op = match verb {
        "get" => {
            let now_ms = num(opt("at"))?.unwrap_or(0);
            check_no_options(opts)?;
            for key in &words {
                match cache.get(key, now_ms) {
                    Some(e) => writeln!(
                        out,
                        "{key} = {} version={} expires_at={}",
                        describe_value(&e.value),
                        e.version,
                        describe_expiry(e.expires_at_ms)
                    ),
                    None => writeln!(out, "{key} = none"),
                }
                .expect("write to String");
            }
            return Ok(());
        }
        "dump" => {
            check_no_options(opts)?;
            out.push_str(&cache.dump());
            return Ok(());
        }
        "set" => {
            let (key, value) = set_pair.and_then(|p| p.split_once('=')).ok_or("set needs KEY=VALUE")?;
            let condition = match opt("if") {
                None => Condition::Always,
                Some("absent") => Condition::IfAbsent,
                Some("present") => Condition::IfPresent,
                Some(c) => match c.strip_prefix("version:") {
                    Some(v) => Condition::IfVersion(num(Some(v))?.expect("some")),
                    None => return Err(format!("bad condition {c}")),
                },
            };
            if !words.is_empty() {
                return Err(format!("unexpected {words:?}"));
            }
            Op::Set { key: key.to_string(), value: expand_value(value)?, expires_at_ms: num(opt("ttl_at"))?, condition }
        }
        "delete" => Op::Delete { key: one_key(&words)? },
        "expire" => {
            let expires_at_ms = num(opt("ttl_at"))?;
            if words.last().is_some_and(|w| w == "persist") && expires_at_ms.is_none() {
                words.pop();
            } else if expires_at_ms.is_none() {
                return Err("expire needs ttl_at=T or persist".into());
            }
            Op::Expire { key: one_key(&words)?, expires_at_ms }
        }
        "touch" => Op::Touch { keys: std::mem::take(&mut words) },
        "tick" => Op::Tick,
        "clear" => Op::Clear,
        "configure" => Op::Configure { max_entries: num(opt("max_entries"))?, max_bytes: num(opt("max_bytes"))? },
        _ => return Err(format!("unknown command {verb}")),
    };
    if !words.is_empty() && !matches!(op, Op::Touch { .. } | Op::Delete { .. } | Op::Expire { .. }) {
        return Err(format!("unexpected {words:?}"));
    }
    let now_ms = num(opt("at"))?.unwrap_or(0);
    let write_id = opt("id").map(parse_write_id).transpose()?;
    let index = num(opt("index"))?.unwrap_or(cache.last_applied_index() + 1);
    check_no_options(opts)?;
    if index <= cache.last_applied_index() {
        return Err(format!("index {index} not after {}", cache.last_applied_index()));
    }
    let response = cache.apply(index, &Command { now_ms, write_id, op });
    let _ = writeln!(out, "[{index}] {}", describe_response(&response));
    Ok(())
}

fn check_no_options(opts: BTreeMap<&str, &str>) -> Result<(), String> {
    match opts.keys().next() {
        Some(k) => Err(format!("unknown option {k}")),
        None => Ok(()),
    }
}

/// `abc` is itself; `x*40` is 40 x's.
fn expand_value(value: &str) -> Result<Bytes, String> {
    if let Some((unit, count)) = value.rsplit_once('*') {
        let count: usize = count.parse().map_err(|_| format!("bad repeat count in {value}"))?;
        return Ok(Bytes::from(unit.repeat(count)));
    }
    Ok(Bytes::copy_from_slice(value.as_bytes()))
}

fn parse_write_id(s: &str) -> Result<WriteId, String> {
    let parts: Vec<u64> =
        s.split(':').map(|p| p.parse().map_err(|_| format!("bad write id {s}"))).collect::<Result<_, _>>()?;
    match parts[..] {
        [client_id, seq] => Ok(WriteId { client_id, seq, acked_below: 0 }),
        [client_id, seq, acked_below] => Ok(WriteId { client_id, seq, acked_below }),
        _ => Err(format!("write id is CLIENT:SEQ[:ACKED_BELOW], got {s}")),
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn golden_scripts() {
    let update = std::env::var_os("UPDATE_GOLDENFILES").is_some_and(|v| v == "1");
    let mut mismatched = Vec::new();
    for path in scripts() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let script = read(&path);
        assert!(script.starts_with('#'), "{name} must start with a comment saying what it proves");
        let run = run_script(&name, &script, None);
        let golden = path.with_extension("out");
        if update {
            std::fs::write(&golden, &run.transcript).expect("write golden file");
        } else if !golden.exists() || read(&golden) != run.transcript {
            eprintln!("=== {name}: got\n{}=== end {name}", run.transcript);
            mismatched.push(name);
        }
    }
    assert!(
        mismatched.is_empty(),
        "transcripts differ from the .out files: {mismatched:?}; rerun with UPDATE_GOLDENFILES=1 \
         and review the diff"
    );
}

#[test]
fn golden_scripts_replay_from_any_snapshot() {
    for path in scripts() {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let script = read(&path);
        let reference = run_script(&name, &script, None);
        for n in 0..script.lines().count() {
            let replay = run_script(&name, &script, Some(n));
            assert_eq!(replay.final_dump, reference.final_dump, "{name}: restored before line {n}");
            assert_eq!(replay.final_hash, reference.final_hash, "{name}: restored before line {n}");
            assert_eq!(replay.transcript, reference.transcript, "{name}: restored before line {n}");
        }
    }
}
