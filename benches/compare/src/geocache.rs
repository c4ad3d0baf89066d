//! geocache as compared: three voters on loopback, started through `geocache_node::launcher`
//! (the one way to start local nodes) from the binary given, with default `serve` settings, and
//! clients built like an application's (`geocache-client`, discovery on).

use std::path::Path;
use std::time::Duration;

use geocache_client::{Client, ReadOptions, SetOptions};
use geocache_node::launcher::{self, NodeProcess, NodeSpec, PortReservation, REGIONS};
use geocache_node::loadgen::GeocacheBackend;

use crate::error::{Error, Result};

/// Three geocache voters in a temp dir; killed and removed when dropped.
#[derive(Debug)]
pub struct GeocacheCluster {
    /// Declared before `dir`: the nodes die before their data dirs are removed.
    nodes: Vec<NodeProcess>,
    specs: Vec<NodeSpec>,
    dir: tempfile::TempDir,
}

impl GeocacheCluster {
    /// Starts three voters of `bin`, initialises them as one cluster and waits up to `within`
    /// until they agree on a leader.
    pub async fn start(bin: &Path, within: Duration) -> Result<GeocacheCluster> {
        let dir = tempfile::Builder::new()
            .prefix("geocache-compare-geocache-")
            .tempdir()
            .map_err(Error::io("cannot create a temp dir for geocache"))?;
        // A client and a peer port per node.
        let ports = PortReservation::new(6)?.release();
        let (addrs, peers) = ports.split_at(3);
        let specs: Vec<NodeSpec> = addrs
            .iter()
            .zip(peers)
            .zip(1..)
            .map(|((addr, peer), id)| NodeSpec::in_dir(dir.path(), id, *addr, &REGIONS).with_peer(*peer))
            .collect();
        let mut nodes = Vec::new();
        for spec in &specs {
            nodes.push(NodeProcess::spawn(bin, spec, &[], &[])?);
        }
        let mut cluster = GeocacheCluster { nodes, specs, dir };
        if let Err(e) = cluster.init(within).await {
            return Err(Error::NotReady {
                what: "geocache to elect a leader".into(),
                within,
                detail: format!("{e}\n{}", cluster.log_tails()),
            });
        }
        Ok(cluster)
    }

    async fn init(&mut self, within: Duration) -> std::result::Result<(), launcher::LaunchError> {
        let members = self.specs.iter().map(NodeSpec::member).collect();
        launcher::init(&self.specs[0], members, within).await?;
        let running: Vec<(u64, String)> = self.specs.iter().map(|s| (s.id, s.addr.to_string())).collect();
        launcher::wait_for_leader(|| running.clone(), &launcher::ClientAccess::default(), within).await?;
        Ok(())
    }

    /// The end of every node's log, plus whether each still runs.
    fn log_tails(&mut self) -> String {
        let mut out = String::new();
        for (spec, node) in self.specs.iter().zip(&mut self.nodes) {
            let state = match node.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                _ => "running".to_string(),
            };
            let log = spec.log_path.as_deref().and_then(|p| std::fs::read_to_string(p).ok()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            out.push_str(&format!("--- geocache node {} ({state}), last lines:\n", spec.id));
            out.push_str(&tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
            out.push('\n');
        }
        out
    }

    /// `n` clients with their regions in turn over the nodes', so their reads spread over the
    /// three nodes; writes go to the leader (the client finds it). Each has its own
    /// `geocache-client` (own connections), or with `shared` the clients of one region share
    /// one, as tasks of one application process would.
    pub async fn clients(&self, n: usize, read: ReadOptions, shared: bool) -> Result<Vec<GeocacheBackend>> {
        let endpoints: Vec<String> = self.specs.iter().map(|s| s.addr.to_string()).collect();
        let distinct = if shared { n.min(self.specs.len()) } else { n };
        let mut built = Vec::with_capacity(distinct);
        for i in 0..distinct {
            let region = &self.specs[i % self.specs.len()].region;
            let client = Client::builder()
                .endpoints(endpoints.clone())
                .region(region.clone())
                .build()
                .await
                .map_err(|e| Error::Connect { system: "geocache", message: e.to_string() })?;
            built.push(GeocacheBackend::new(client, read, SetOptions::new()));
        }
        Ok((0..n).map(|i| built[i % distinct].clone()).collect())
    }

    /// Where the nodes keep their data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
