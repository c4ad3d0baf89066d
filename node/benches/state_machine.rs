//! Criterion benches of the replicated state machine ([`geocache_node::state_machine::Cache`]),
//! in memory only: no Raft, no sled, no gRPC.
//!
//! Run (short, as on a shared machine):
//!
//! ```text
//! cargo bench -p geocache-node --bench state_machine -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Add a filter (`-- apply/`, `-- get/`, `-- evict/`, `-- snapshot_1m/`) to run one group. The
//! 1M-entry cache behind `snapshot_1m/` and `get/hit_1m` is built once, on first use, outside
//! every measurement; a run filtered to other groups never builds it. The 1M benches take over a
//! second per iteration, so criterion stretches their measurement time past a short
//! `--measurement-time` (it says so): budget about a minute for that group.
//!
//! `cargo test --workspace` neither builds nor runs these benches. `cargo test --benches` (or
//! `cargo bench -- --test`) runs each once as a smoke test, on 10k entries instead of 1M.
//!
//! Values are 100 bytes, each entry its own buffer (as when decoded from the log). Keys are
//! visited in a scattered order, not the sorted order of the cache's `BTreeMap`s.

use std::hint::black_box;
use std::sync::{LazyLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use geocache_node::state_machine::{Cache, CacheSnapshot, Command, Condition, Op, Response, WriteId};

/// Value size of every entry.
const VALUE_BYTES: usize = 100;
/// Keys of the apply and get benches.
const KEYS: usize = 10_000;
/// Keys per `Touch` command.
const TOUCH_BATCH: usize = 100;
/// `max_entries` of the eviction bench.
const CAPACITY: usize = 100_000;
/// Entries of the snapshot benches and `get/hit_1m` when measuring.
const BIG: usize = 1_000_000;
/// The same in test mode (`cargo test --benches`, `cargo bench -- --test`), where criterion runs
/// each bench once only to see that it works: a quick smoke run, not 1M entries in a debug build.
const BIG_IN_TEST_MODE: usize = 10_000;
/// Log time of every command; expiries are far after it, so nothing expires.
const NOW_MS: u64 = 1_700_000_000_000;
/// Clients the exactly-once variant spreads its writes over (the issue's 64-client load).
const CLIENTS: u64 = 64;

fn key(i: usize) -> String {
    format!("key-{i:08}")
}

fn value(i: usize) -> Bytes {
    let mut v = vec![b'v'; VALUE_BYTES];
    v[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Bytes::from(v)
}

/// `0..n` in a scattered order (a stride coprime to `n`), so consecutive operations do not walk
/// the sorted maps in order and hit warm cache lines.
fn scattered(n: usize) -> impl Iterator<Item = usize> {
    let stride = (0..).map(|d| n * 618 / 1000 + d).find(|s| gcd(*s, n) == 1).expect("some stride is coprime");
    (0..n).map(move |i| i * stride % n)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn command(op: Op) -> Command {
    Command { now_ms: NOW_MS, write_id: None, op }
}

fn set(i: usize, expires_at_ms: Option<u64>) -> Command {
    command(Op::Set { key: key(i), value: value(i), expires_at_ms, condition: Condition::Always })
}

/// A cache that applies commands at consecutive log indexes, as the Raft log feeds it.
struct Applier {
    cache: Cache,
    index: u64,
}

impl Applier {
    fn new() -> Applier {
        Applier { cache: Cache::new(), index: 0 }
    }

    fn apply(&mut self, cmd: &Command) -> Response {
        self.index += 1;
        self.cache.apply(self.index, cmd)
    }

    /// Sets keys `0..n` (scattered order), each with its own 100-byte value.
    fn filled(n: usize) -> Applier {
        let mut a = Applier::new();
        for i in scattered(n) {
            a.apply(&set(i, None));
        }
        a
    }
}

/// The 1M-entry cache and its snapshot, built once.
struct Big {
    cache: Cache,
    snapshot: CacheSnapshot,
    /// `snapshot` encoded as the store encodes it (bincode 1, default options).
    bytes: Vec<u8>,
    /// Every key, in scattered order, for reads.
    keys: Vec<String>,
}

/// [`BIG`], or [`BIG_IN_TEST_MODE`] unless criterion measures (its own rule: `--bench` without
/// `--test`; `cargo bench` passes `--bench`, `cargo test --benches` does not).
fn big_entries() -> usize {
    let measuring = std::env::args().any(|a| a == "--bench") && !std::env::args().any(|a| a == "--test");
    if measuring {
        BIG
    } else {
        BIG_IN_TEST_MODE
    }
}

static BIG_CACHE: LazyLock<Big> = LazyLock::new(|| {
    let n = big_entries();
    let start = Instant::now();
    let cache = Applier::filled(n).cache;
    let filled = start.elapsed();
    let snapshot = cache.snapshot();
    let bytes = bincode::serialize(&snapshot).expect("snapshot encodes");
    eprintln!(
        "snapshot_1m: {} entries of {VALUE_BYTES}-byte values, {} bytes encoded ({:.1} MiB, {} bytes per entry); \
         filling the cache by {n} applies took {filled:.2?}",
        cache.len(),
        bytes.len(),
        bytes.len() as f64 / (1024.0 * 1024.0),
        bytes.len() / cache.len(),
    );
    let keys = scattered(n).map(key).collect();
    Big { cache, snapshot, bytes, keys }
});

/// Applying one write, unlimited capacity, over 10k keys that all exist (each `set` replaces a
/// value; after the first pass every key is present).
fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(1));

    // `Set` of a 100-byte value to one of 10k keys, cycling: an overwrite (remove + insert in the
    // entry map and the LRU order). No write id, no expiry.
    let cmds: Vec<Command> = scattered(KEYS).map(|i| set(i, None)).collect();
    let mut a = Applier::filled(KEYS);
    let mut i = 0;
    g.bench_function("set", |b| {
        b.iter(|| {
            let r = a.apply(&cmds[i]);
            i = (i + 1) % cmds.len();
            black_box(r)
        });
    });

    // As `set`, with an expiry an hour ahead: also maintains the expiry index.
    let cmds: Vec<Command> = scattered(KEYS).map(|i| set(i, Some(NOW_MS + 3_600_000))).collect();
    let mut a = Applier::filled(KEYS);
    let mut i = 0;
    g.bench_function("set_ttl", |b| {
        b.iter(|| {
            let r = a.apply(&cmds[i]);
            i = (i + 1) % cmds.len();
            black_box(r)
        });
    });

    // As `set`, carrying a write id, as client writes do: also the exactly-once session check and
    // the stored response, 64 clients each acknowledging all its earlier writes.
    let mut cmds: Vec<Command> = scattered(KEYS).map(|i| set(i, None)).collect();
    let mut a = Applier::filled(KEYS);
    let (mut i, mut n) = (0, 0u64);
    g.bench_function("set_session", |b| {
        b.iter(|| {
            let seq = n / CLIENTS + 1;
            cmds[i].write_id = Some(WriteId { client_id: n % CLIENTS + 1, seq, acked_below: seq });
            let r = a.apply(&cmds[i]);
            i = (i + 1) % cmds.len();
            n += 1;
            black_box(r)
        });
    });

    // `Delete` of a present key from a cache of 10k keys (on average 5k left: the cache is refilled,
    // outside the timing, whenever every key has been deleted).
    let cmds: Vec<Command> = scattered(KEYS).map(|i| command(Op::Delete { key: key(i) })).collect();
    g.bench_function("delete", |b| {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                let mut a = Applier::filled(KEYS);
                let n = left.min(KEYS);
                let start = Instant::now();
                for cmd in &cmds[..n] {
                    let r = a.apply(cmd);
                    debug_assert!(r.applied);
                    black_box(r);
                }
                elapsed += start.elapsed();
                left -= n;
            }
            elapsed
        });
    });

    // One `Touch` of 100 present keys out of 10k (moves each to the most recently used end).
    // Throughput is per key: the time per command is 100x the per-element figure.
    g.throughput(Throughput::Elements(TOUCH_BATCH as u64));
    let order: Vec<usize> = scattered(KEYS).collect();
    let cmds: Vec<Command> =
        order.chunks(TOUCH_BATCH).map(|ks| command(Op::Touch { keys: ks.iter().map(|&i| key(i)).collect() })).collect();
    let mut a = Applier::filled(KEYS);
    let mut i = 0;
    g.bench_function("touch_100", |b| {
        b.iter(|| {
            let r = a.apply(&cmds[i]);
            i = (i + 1) % cmds.len();
            black_box(r)
        });
    });
    g.finish();
}

/// The local read path: `Cache::get` of a key the request hands over as `&str`, returning the
/// value (a `Bytes` clone: a reference count, no copy) with its version and expiry.
fn get(c: &mut Criterion) {
    let mut g = c.benchmark_group("get");
    g.throughput(Throughput::Elements(1));
    let a = Applier::filled(KEYS);
    let keys: Vec<String> = scattered(KEYS).map(key).collect();

    // A present key out of 10k.
    let mut i = 0;
    g.bench_function("hit", |b| {
        b.iter(|| {
            let v = a.cache.get(black_box(&keys[i]), NOW_MS);
            i = (i + 1) % keys.len();
            black_box(v)
        });
    });

    // An absent key (10k present).
    let missing: Vec<String> = (KEYS..2 * KEYS).map(key).collect();
    let mut i = 0;
    g.bench_function("miss", |b| {
        b.iter(|| {
            let v = a.cache.get(black_box(&missing[i]), NOW_MS);
            i = (i + 1) % missing.len();
            black_box(v)
        });
    });

    // A present key out of 10k, under a `std::sync::RwLock` read guard, as `CacheReader::read`
    // takes it on every local read (uncontended here).
    let lock = RwLock::new(a.cache.clone());
    let mut i = 0;
    g.bench_function("hit_locked", |b| {
        b.iter(|| {
            let guard = lock.read().expect("not poisoned");
            let v = guard.get(black_box(&keys[i]), NOW_MS);
            drop(guard);
            i = (i + 1) % keys.len();
            black_box(v)
        });
    });

    // A present key out of 1M: the map no longer fits the CPU caches.
    let mut i = 0;
    g.bench_function("hit_1m", |b| {
        let big = &*BIG_CACHE;
        b.iter(|| {
            let v = big.cache.get(black_box(&big.keys[i]), NOW_MS);
            i = (i + 1) % big.keys.len();
            black_box(v)
        });
    });
    g.finish();
}

/// `Set` of a new key into a cache held at `max_entries` = 100k, so every set first evicts the
/// least recently used entry. Keys cycle over 200k, so the key being set was evicted 100k sets ago.
fn evict(c: &mut Criterion) {
    let mut g = c.benchmark_group("evict");
    g.throughput(Throughput::Elements(1));
    let cmds: Vec<Command> = (0..2 * CAPACITY).map(|i| set(i, None)).collect();
    let mut a = Applier::new();
    a.apply(&command(Op::Configure { max_entries: Some(CAPACITY as u64), max_bytes: None }));
    for cmd in &cmds[..CAPACITY] {
        a.apply(cmd);
    }
    let mut i = CAPACITY;
    g.bench_function("set_at_capacity_100k", |b| {
        b.iter(|| {
            let r = a.apply(&cmds[i]);
            debug_assert!(r.applied && !r.existed);
            i = (i + 1) % cmds.len();
            black_box(r)
        });
    });
    assert_eq!(a.cache.len(), CAPACITY);
    g.finish();
}

/// Snapshot build and restore of a 1M-entry cache, split as the store does them: build is
/// `clone` (`Cache::clone`, the only step under the state machine's read lock, so the only one
/// apply waits for), then, off the lock, `copy` (`Cache::snapshot` of the clone) and `encode`
/// (bincode); restore (install) is `decode` then `restore` (`Cache::restore`). Each iteration is
/// the whole 1M; dropping the result is not timed.
fn snapshot_1m(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot_1m");
    g.sample_size(10);
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(big_entries() as u64));

    // `Cache::clone`: what the snapshot builder does under the lock (persistent maps: O(1)).
    g.bench_function("clone", |b| {
        let big = &*BIG_CACHE;
        b.iter_with_large_drop(|| big.cache.clone());
    });

    // `Cache::snapshot`: copy the state into a `CacheSnapshot` (keys cloned, values ref-counted).
    g.bench_function("copy", |b| {
        let big = &*BIG_CACHE;
        b.iter_with_large_drop(|| big.cache.snapshot());
    });

    // bincode encoding of the snapshot into one buffer.
    g.bench_function("encode", |b| {
        let big = &*BIG_CACHE;
        b.iter_with_large_drop(|| bincode::serialize(&big.snapshot).expect("encodes"));
    });

    // bincode decoding of the bytes back into a `CacheSnapshot`.
    g.bench_function("decode", |b| {
        let big = &*BIG_CACHE;
        b.iter_with_large_drop(|| bincode::deserialize::<CacheSnapshot>(&big.bytes).expect("decodes"));
    });

    // `Cache::restore`: rebuild the entry map, LRU order and expiry index from a decoded snapshot.
    g.bench_function("restore", |b| {
        let big = &*BIG_CACHE;
        b.iter_batched(|| big.snapshot.clone(), Cache::restore, BatchSize::PerIteration);
    });
    g.finish();
}

criterion_group!(benches, apply, get, evict, snapshot_1m);
criterion_main!(benches);
