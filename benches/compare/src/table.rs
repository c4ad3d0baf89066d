//! What a comparison measured, and how it is printed: a markdown table (with the setup above it,
//! so a pasted table says what made it) or one JSON object.

use std::time::Duration;

use geocache_node::loadgen::Report;

use crate::workloads::{Measure, Workload, FSYNC_NOTE};

/// One side of one cell.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// The system, with its version for the peers (e.g. `etcd 3.4.23`).
    pub system: String,
    /// Successful operations.
    pub ops: u64,
    pub ops_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Failed operations, and the first failure's message.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Reads that found nothing (every key is written before the reads, so this should be 0).
    pub read_misses: u64,
}

impl Figures {
    /// The `op` row (`"write"` or `"read"`) of `report`.
    pub fn of(system: impl Into<String>, report: &Report, op: &str) -> Figures {
        let mut figures = Figures {
            system: system.into(),
            errors: report.error_count(),
            first_error: report.first_errors.values().next().cloned(),
            read_misses: report.read_misses,
            ..Figures::default()
        };
        if let Some(row) = report.row(op) {
            figures.ops = row.ops;
            figures.ops_per_s = row.ops_per_s;
            figures.p50_ms = row.p50_ms;
            figures.p99_ms = row.p99_ms;
            figures.p999_ms = row.p999_ms;
            figures.max_ms = row.max_ms;
        }
        figures
    }

    fn cell(&self) -> String {
        if self.ops == 0 {
            return format!("nothing succeeded ({} errors)", self.errors);
        }
        let mut text =
            format!("{} ops/s, p50 {}, p99 {}", thousands(self.ops_per_s), latency(self.p50_ms), latency(self.p99_ms));
        if self.errors > 0 {
            text.push_str(&format!(", {} errors", self.errors));
        }
        if self.read_misses > 0 {
            text.push_str(&format!(", {} misses", self.read_misses));
        }
        text
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "system": self.system, "ops": self.ops, "ops_per_s": self.ops_per_s, "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms, "p999_ms": self.p999_ms, "max_ms": self.max_ms, "errors": self.errors,
            "first_error": self.first_error, "read_misses": self.read_misses,
        })
    }
}

/// One workload, one run: geocache and its peer, measured back to back.
#[derive(Clone, Debug)]
pub struct Cell {
    pub workload: Workload,
    /// From 1.
    pub run: u32,
    pub geocache: Figures,
    pub peer: Figures,
}

impl Cell {
    pub fn ratio(&self) -> Option<f64> {
        self.workload.ratio(&self.geocache, &self.peer)
    }

    pub fn goal_met(&self) -> Option<bool> {
        self.workload.goal_met(&self.geocache, &self.peer)
    }

    fn ratio_text(&self) -> String {
        let measure = match self.workload.measure() {
            Measure::Throughput => "ops/s",
            Measure::MedianLatency => "p50",
        };
        match self.ratio() {
            Some(r) => format!("{r:.2}x {} ({measure})", self.workload.peer()),
            None => "n/a".to_string(),
        }
    }
}

/// How the comparison was set up: printed above the table.
#[derive(Clone, Debug)]
pub struct Setup {
    pub clients: usize,
    pub keys: u64,
    pub value_size: usize,
    pub duration: Duration,
    pub runs: u32,
    /// Whether clients shared one connection per node.
    pub shared_connections: bool,
    /// The geocache binary run.
    pub geocache_bin: String,
    /// `None` where the peer was not started (`--only`).
    pub etcd_version: Option<String>,
    pub redis_version: Option<String>,
    /// CPUs this process may use (shared by every server and the load generator).
    pub cpus: usize,
}

/// Everything a comparison measured.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub setup: Setup,
    /// In the order run: by run, then by workload.
    pub cells: Vec<Cell>,
}

impl Comparison {
    /// The setup as a list, the table, per-run ratios (with several runs) and what went wrong
    /// (errors, reads that missed), in markdown.
    pub fn markdown(&self) -> String {
        let s = &self.setup;
        let mut out = String::new();
        out.push_str("geocache side by side with etcd and Redis, all on 127.0.0.1, driven by one load generator:\n\n");
        let (geocache_clients, etcd_clients, redis_clients) = if s.shared_connections {
            ("the clients of each region share one `geocache-client`", "one connection per member", "one connection")
        } else {
            (
                "each client its own `geocache-client`",
                "each client its own connection",
                "each client its own connection",
            )
        };
        out.push_str(&format!(
            "* geocache: 3 voters, default `serve` settings ({}); {geocache_clients}, regions in turn, so reads \
             spread over the 3 nodes and writes go to the leader\n",
            s.geocache_bin
        ));
        if let Some(v) = &s.etcd_version {
            out.push_str(&format!(
                "* etcd {v}: 3 members, default settings (it fsyncs its WAL on every commit); {etcd_clients}; \
                 writes to the leader, linearizable reads spread over the 3 members\n"
            ));
        }
        if let Some(v) = &s.redis_version {
            out.push_str(&format!("* Redis {v}: 1 node, `--save '' --appendonly no`; {redis_clients}\n"));
        }
        out.push_str(&format!(
            "* closed loop, {} clients (1 in the 1-client row), one request in flight each; {}-byte values; \
             {} keys drawn uniformly, each written once before the cells; {:?} per cell, geocache then its peer; \
             {} run(s)\n",
            s.clients,
            s.value_size,
            thousands(s.keys as f64),
            s.duration,
            s.runs
        ));
        out.push_str(&format!(
            "* {} CPUs shared by every server and the load generator: only ratios from the same run mean anything\n\n",
            s.cpus
        ));
        out.push_str("| workload | geocache | peer | ratio | goal (issue 9) |\n|---|---|---|---|---|\n");
        for cell in &self.cells {
            let mut title = cell.workload.title(s.clients);
            if s.runs > 1 {
                title.push_str(&format!(", run {}", cell.run));
            }
            if cell.workload.is_write() {
                title.push_str(&format!(" ({FSYNC_NOTE})"));
            }
            let goal = match cell.goal_met() {
                Some(true) => format!("{}: met", cell.workload.goal()),
                Some(false) => format!("{}: not met", cell.workload.goal()),
                None => cell.workload.goal().to_string(),
            };
            out.push_str(&format!(
                "| {title} | {} | {}: {} | {} | {goal} |\n",
                cell.geocache.cell(),
                cell.peer.system,
                cell.peer.cell(),
                cell.ratio_text()
            ));
        }
        if s.runs > 1 {
            out.push('\n');
            for workload in Workload::ALL {
                let mut ratios: Vec<f64> =
                    self.cells.iter().filter(|c| c.workload == workload).filter_map(Cell::ratio).collect();
                if ratios.is_empty() {
                    continue;
                }
                let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}x")).collect();
                ratios.sort_by(f64::total_cmp);
                let n = ratios.len();
                let median = if n % 2 == 1 { ratios[n / 2] } else { (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0 };
                out.push_str(&format!(
                    "* {}: ratio per run {} (median {median:.2}x)\n",
                    workload.title(s.clients),
                    each.join(", ")
                ));
            }
        }
        let mut notes = Vec::new();
        for cell in &self.cells {
            for side in [&cell.geocache, &cell.peer] {
                if let Some(error) = &side.first_error {
                    notes.push(format!(
                        "* {} (run {}), {}: {} errors, the first: {error}",
                        cell.workload.id(),
                        cell.run,
                        side.system,
                        side.errors
                    ));
                }
                if side.read_misses > 0 {
                    notes.push(format!(
                        "* {} (run {}), {}: {} reads found no value although every key was written first",
                        cell.workload.id(),
                        cell.run,
                        side.system,
                        side.read_misses
                    ));
                }
            }
        }
        if !notes.is_empty() {
            out.push_str("\nWhat went wrong:\n\n");
            out.push_str(&notes.join("\n"));
            out.push('\n');
        }
        out
    }

    /// The setup and every cell as one JSON object.
    pub fn json(&self) -> serde_json::Value {
        let s = &self.setup;
        let cells: Vec<serde_json::Value> = self
            .cells
            .iter()
            .map(|c| {
                serde_json::json!({
                    "workload": c.workload.id(),
                    "title": c.workload.title(s.clients),
                    "run": c.run,
                    "clients": c.workload.clients(s.clients),
                    "ratio": c.ratio(),
                    "ratio_of": match c.workload.measure() {
                        Measure::Throughput => "ops_per_s",
                        Measure::MedianLatency => "p50_ms",
                    },
                    "goal": c.workload.goal(),
                    "goal_met": c.goal_met(),
                    "note": c.workload.is_write().then_some(FSYNC_NOTE),
                    "geocache": c.geocache.json(),
                    "peer": c.peer.json(),
                })
            })
            .collect();
        serde_json::json!({
            "setup": {
                "clients": s.clients, "keys": s.keys, "value_size": s.value_size,
                "duration_s": s.duration.as_secs_f64(), "runs": s.runs, "shared_connections": s.shared_connections, "geocache_bin": s.geocache_bin,
                "etcd_version": s.etcd_version, "redis_version": s.redis_version, "cpus": s.cpus,
            },
            "cells": cells,
        })
    }
}

/// `12345.6` as `12,346`.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A latency with the precision that matters at its size: `87 µs`, `2.06 ms`, `29.7 ms`, `266 ms`.
fn latency(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_people_read_them() {
        assert_eq!(thousands(0.4), "0");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(12345.6), "12,346");
        assert_eq!(thousands(1_000_000.0), "1,000,000");
        assert_eq!(latency(0.087), "87 µs");
        assert_eq!(latency(2.061), "2.06 ms");
        assert_eq!(latency(29.71), "29.7 ms");
        assert_eq!(latency(266.2), "266 ms");
    }

    #[test]
    fn the_table_has_a_row_per_cell_with_the_fsync_note_beside_writes() {
        let figures = |system: &str, ops_per_s: f64| Figures {
            system: system.into(),
            ops: 10,
            ops_per_s,
            p50_ms: 1.0,
            p99_ms: 3.0,
            ..Figures::default()
        };
        let cells = Workload::ALL
            .iter()
            .map(|&workload| Cell {
                workload,
                run: 1,
                geocache: figures("geocache", 2000.0),
                peer: figures(if workload == Workload::StaleReads { "Redis 7" } else { "etcd 3" }, 4000.0),
            })
            .collect();
        let setup = Setup {
            clients: 64,
            keys: 10_000,
            value_size: 100,
            duration: Duration::from_secs(10),
            runs: 1,
            shared_connections: false,
            geocache_bin: "target/release/geocache".into(),
            etcd_version: Some("3".into()),
            redis_version: Some("7".into()),
            cpus: 2,
        };
        let table = Comparison { setup, cells }.markdown();
        let rows: Vec<&str> = table.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| workload")).collect();
        assert_eq!(rows.len(), 4, "{table}");
        assert!(rows[0].starts_with(&format!("| writes, 64 clients ({FSYNC_NOTE})")), "{table}");
        assert!(rows[1].contains(FSYNC_NOTE) && !rows[2].contains(FSYNC_NOTE), "{table}");
        assert!(rows[0].contains("| 0.50x etcd (ops/s) | >= 3x etcd, p99 <= 10 ms: not met |"), "{table}");
        assert!(rows[1].contains("| 1.00x etcd (p50) |"), "{table}");
        assert!(rows[3].contains("Redis 7: 4,000 ops/s, p50 1.00 ms, p99 3.00 ms | 0.50x Redis (ops/s)"), "{table}");
        assert!(!table.contains("What went wrong"), "{table}");
    }
}
