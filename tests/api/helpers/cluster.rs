//! A Redis Cluster of the test's own (3 masters with their replicas) on loopback, for tests
//! that kill or stall its nodes, which the shared cluster's other tests would suffer from.

use std::time::Duration;

use super::{eventually, free_port, KeyDir, PrivateRedis};

pub struct PrivateCluster {
    pub nodes: Vec<PrivateRedis>,
    /// Where the nodes keep their cluster state (`nodes.conf`).
    _dir: KeyDir,
}

/// One node of `CLUSTER NODES`: its port, whether it is a master, and its slot ranges.
#[derive(Debug, Clone)]
pub struct Node {
    pub id: String,
    pub port: u16,
    /// A replica's master (its id).
    pub master_id: Option<String>,
    pub master: bool,
    pub slots: Vec<(u16, u16)>,
}

impl PrivateCluster {
    /// Three masters with `replicas` replicas each.
    pub async fn start(replicas: usize) -> Self {
        let dir = KeyDir::new();
        let mut nodes = Vec::new();
        for i in 0..3 * (1 + replicas) {
            let config = dir.path().join(format!("nodes-{i}.conf"));
            let bus = free_port().to_string();
            nodes.push(
                PrivateRedis::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    config.to_str().unwrap(),
                    "--cluster-port",
                    &bus,
                    // A killed master's replica takes over about a second later.
                    "--cluster-node-timeout",
                    "1000",
                ])
                .await,
            );
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is installed");
        assert!(
            created.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        let cluster = Self { nodes, _dir: dir };
        cluster.until_settled(3, replicas).await;
        cluster
    }

    /// Three masters speaking TLS only, to clients and to each other (`tls-cluster yes`), with
    /// `cert`/`key` signed by `ca`.
    pub async fn with_tls(
        cert: &std::path::Path,
        key: &std::path::Path,
        ca: &std::path::Path,
    ) -> Self {
        let dir = KeyDir::new();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let config = dir.path().join(format!("nodes-{i}.conf"));
            let bus = free_port().to_string();
            let args = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                config.to_str().unwrap(),
                "--cluster-port",
                &bus,
                "--tls-cluster",
                "yes",
                "--tls-replication",
                "yes",
            ];
            nodes.push(PrivateRedis::with_tls_and(cert, key, ca, &args).await);
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let cli = |args: &[&str]| {
            let mut command = tokio::process::Command::new("redis-cli");
            command
                .args(["--tls", "--cacert", ca.to_str().unwrap()])
                .args(args);
            command
        };
        let created = cli(&["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .await
            .expect("redis-cli is installed");
        assert!(
            created.status.success(),
            "redis-cli --cluster create over TLS: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for node in &nodes {
            let port = node.port.to_string();
            eventually("the TLS cluster ok", Duration::from_secs(30), || async {
                let info = cli(&["-p", &port, "cluster", "info"]).output().await.ok()?;
                String::from_utf8_lossy(&info.stdout)
                    .contains("cluster_state:ok")
                    .then_some(())
            })
            .await;
        }
        Self { nodes, _dir: dir }
    }

    /// `APP_REDIS__NODES` for this cluster.
    pub fn seeds(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The topology as a live node sees it.
    pub async fn topology(&self) -> Vec<Node> {
        for node in &self.nodes {
            if let Some(text) = ask(node, "NODES").await {
                return parse_nodes(&text);
            }
        }
        panic!("no node of the cluster answers");
    }

    /// Waits until every slot is served by `masters` masters with `replicas` replicas each.
    pub async fn until_settled(&self, masters: usize, replicas: usize) {
        eventually("the cluster to settle", Duration::from_secs(30), || async {
            let nodes = self.topology().await;
            let served: u32 = nodes
                .iter()
                .filter(|n| n.master)
                .flat_map(|n| &n.slots)
                .map(|(from, to)| u32::from(to - from) + 1)
                .sum();
            let (with_slots, replicating) = (
                nodes
                    .iter()
                    .filter(|n| n.master && !n.slots.is_empty())
                    .count(),
                nodes.iter().filter(|n| !n.master).count(),
            );
            let settled =
                served == 16384 && with_slots == masters && replicating >= masters * replicas;
            (settled && self.every_node_ok().await).then_some(())
        })
        .await;
    }

    /// Every live node says `cluster_state:ok` (the state spreads over the bus, node by node).
    async fn every_node_ok(&self) -> bool {
        for node in &self.nodes {
            if let Some(info) = ask(node, "INFO").await {
                if !info.contains("cluster_state:ok") {
                    return false;
                }
            }
        }
        true
    }

    /// The master serving `slot` now.
    pub async fn master_of(&self, slot: u16) -> u16 {
        self.topology()
            .await
            .into_iter()
            .find(|n| n.master && n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .expect("the slot is served")
            .port
    }

    /// The ports of the replicas of the master on `master`.
    pub async fn replicas_of(&self, master: u16) -> Vec<u16> {
        let nodes = self.topology().await;
        let id = &nodes.iter().find(|n| n.port == master).expect("a node").id;
        nodes
            .iter()
            .filter(|n| n.master_id.as_ref() == Some(id))
            .map(|n| n.port)
            .collect()
    }

    /// Moves `slot` with its keys to the master on `to`, the way `redis-cli --cluster reshard`
    /// does for each slot: importing/migrating, `MIGRATE` of its keys, then the new owner.
    pub async fn move_slot(&self, slot: u16, to: u16) {
        let from = self.master_of(slot).await;
        let nodes = self.topology().await;
        let id = |port: u16| nodes.iter().find(|n| n.port == port).unwrap().id.clone();
        let (from_id, to_id) = (id(from), id(to));
        let conn = |port: u16| async move {
            redis::Client::open(format!("redis://127.0.0.1:{port}"))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap()
        };
        let (mut source, mut target) = (conn(from).await, conn(to).await);
        let setslot = |state: &str, node: &str| {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("SETSLOT").arg(slot).arg(state).arg(node);
            cmd
        };
        let _: () = setslot("IMPORTING", &from_id)
            .query_async(&mut target)
            .await
            .unwrap();
        let _: () = setslot("MIGRATING", &to_id)
            .query_async(&mut source)
            .await
            .unwrap();
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(10_000)
            .query_async(&mut source)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = redis::cmd("MIGRATE")
                .arg("127.0.0.1")
                .arg(to)
                .arg("")
                .arg(0)
                .arg(5_000)
                .arg("KEYS")
                .arg(&keys)
                .query_async(&mut source)
                .await
                .unwrap();
        }
        for node in nodes.iter().filter(|n| n.master) {
            let _: () = setslot("NODE", &to_id)
                .query_async(&mut conn(node.port).await)
                .await
                .unwrap();
        }
    }

    pub fn node(&mut self, port: u16) -> &mut PrivateRedis {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster")
    }
}

/// `CLUSTER <what>` of one node; `None` when it does not answer (killed, paused).
async fn ask(node: &PrivateRedis, what: &str) -> Option<String> {
    let client = redis::Client::open(node.url()).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("CLUSTER")
        .arg(what)
        .query_async(&mut conn)
        .await
        .ok()
}

/// Parses `CLUSTER NODES`: `id host:port@bus flags master epoch… link slot…`.
pub fn parse_nodes(text: &str) -> Vec<Node> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields.get(1)?.split('@').next()?;
            let port = address.rsplit(':').next()?.parse().ok()?;
            let flags = fields.get(2)?;
            if flags.contains("fail") && !flags.contains("fail?") {
                return None;
            }
            let slots = fields
                .iter()
                .skip(8)
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => s.parse().ok().map(|a| (a, a)),
                })
                .collect();
            let master_id = Some(fields.get(3)?.to_string()).filter(|m| *m != "-");
            Some(Node {
                id: fields[0].to_owned(),
                port,
                master_id,
                master: flags.contains("master"),
                slots,
            })
        })
        .collect()
}

impl super::TestApp {
    /// On a cluster: how many of the test's keys each master holds, by port (the shared
    /// cluster's masters, as the test's Redis connection sees them).
    pub async fn keys_per_master(&self) -> Vec<(u16, usize)> {
        let text: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(&mut self.redis.clone())
            .await
            .unwrap();
        let pattern = format!("{}:*", self.settings.redis.key_prefix);
        let mut held = Vec::new();
        for node in parse_nodes(&text).into_iter().filter(|n| n.master) {
            let mut conn = redis::Client::open(format!("redis://127.0.0.1:{}", node.port))
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(&pattern)
                .query_async(&mut conn)
                .await
                .unwrap();
            held.push((node.port, keys.len()));
        }
        held
    }
}
