//! A Redis Cluster of this test's own: six `redis-server --cluster-enabled yes` (three masters,
//! three replicas) joined by `redis-cli --cluster create`, stopped and removed on drop.
//!
//! The cluster bus listens on each port + 10000, so the ports are taken below the kernel's
//! ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`) where port + 10000 is free too; a
//! port taken by another test meanwhile makes the start try other ports.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Nodes of a test cluster: three masters, each with one replica.
pub const NODES: usize = 6;

/// How long a node may be unreachable before its replica takes over (`cluster-node-timeout`).
pub const NODE_TIMEOUT_MS: u64 = 2_000;

/// One node: its process (none once killed), port and directory.
struct Node {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

pub struct TestCluster {
    nodes: Vec<Node>,
}

impl TestCluster {
    /// Starts six nodes, joins them, and waits until every node says `cluster_state:ok` and
    /// every replica is in sync with its master.
    pub fn start() -> Self {
        for _ in 0..10 {
            let Some(ports) = cluster_ports() else {
                continue;
            };
            let mut cluster = TestCluster {
                nodes: ports
                    .iter()
                    .map(|port| {
                        let dir = std::env::temp_dir().join(format!(
                            "fulfillment-cluster-{port}-{}",
                            uuid::Uuid::new_v4().simple()
                        ));
                        std::fs::create_dir_all(&dir).expect("temp dir");
                        Node {
                            child: Some(spawn_node(*port, &dir)),
                            port: *port,
                            dir,
                        }
                    })
                    .collect(),
            };
            if cluster.all_answer()
                && cluster.create()
                && cluster.wait_until(Duration::from_secs(30), caught_up)
            {
                return cluster;
            }
            drop(cluster);
        }
        panic!("could not start a Redis Cluster (redis-server and redis-cli must be installed)");
    }

    /// The seed URLs, for `REDIS_CLUSTER_NODES`.
    pub fn seeds(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// `REDIS_CLUSTER_NODES`' value.
    pub fn nodes_env(&self) -> String {
        self.seeds().join(",")
    }

    /// The port of the master that serves `slot` now.
    pub fn master_of(&self, slot: u16) -> Option<u16> {
        self.live_ports()
            .into_iter()
            .find_map(|port| master_of_slot(port, slot))
    }

    /// Ports of the masters that serve slots now.
    pub fn masters(&self) -> Vec<u16> {
        let mut masters: Vec<u16> = self
            .live_ports()
            .into_iter()
            .filter(|port| {
                cli(*port, &["ROLE"])
                    .lines()
                    .next()
                    .is_some_and(|l| l == "master")
            })
            .collect();
        masters.sort_unstable();
        masters
    }

    /// SIGKILLs the node on `port` (its replica takes over after the node timeout).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        if let Some(mut child) = node.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Makes the node on `port` announce `announced` as its port (its cluster bus stays where it
    /// is), so that clients reach it there (a proxy's port), and waits until every node says so.
    pub fn announce(&self, port: u16, announced: u16) {
        let bus = (port + 10_000).to_string();
        assert_eq!(
            cli(port, &["CONFIG", "SET", "cluster-announce-bus-port", &bus]).trim(),
            "OK"
        );
        let announced_text = announced.to_string();
        assert_eq!(
            cli(
                port,
                &["CONFIG", "SET", "cluster-announce-port", &announced_text]
            )
            .trim(),
            "OK"
        );
        let id = cli(port, &["CLUSTER", "MYID"]).trim().to_owned();
        let needle = format!(":{announced}@{bus}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.live_ports().into_iter().all(|p| {
            cli(p, &["CLUSTER", "NODES"])
                .lines()
                .any(|l| l.starts_with(&id) && l.contains(&needle))
        }) {
            assert!(
                Instant::now() < deadline,
                "the cluster never learned node {port}'s announced port {announced}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts the node on `port` again, on its directory: it rejoins the cluster (as a replica of
    /// whoever took over its slots) and syncs.
    pub fn restart(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .expect("a node of this cluster");
        assert!(node.child.is_none(), "node {port} is running");
        node.child = Some(spawn_node(port, &node.dir));
    }

    /// Waits until every live node says `cluster_state:ok` and every live master's replicas are
    /// online (under load their offsets trail by a moment).
    pub fn wait_ok(&self, within: Duration) -> bool {
        self.wait_until(within, replicas_online)
    }

    fn wait_until(&self, within: Duration, replication_ok: fn(u16) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let ports = self.live_ports();
            let ok = ports.iter().all(|port| {
                cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
                    && replication_ok(*port)
            });
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    fn live_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.port)
            .collect()
    }

    fn all_answer(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        for node in &mut self.nodes {
            loop {
                // Our own node must answer, not a server another test started on the port.
                if let Some(child) = &node.child
                    && crate::served_by(&cli(node.port, &["INFO", "server"]), child.id())
                    && cli(node.port, &["PING"]).trim() == "PONG"
                {
                    break;
                }
                let exited = node
                    .child
                    .as_mut()
                    .is_none_or(|c| matches!(c.try_wait(), Ok(Some(_))));
                if exited || Instant::now() > deadline {
                    return false; // a port taken meanwhile
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        true
    }

    fn create(&self) -> bool {
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)));
        args.extend(["--cluster-replicas", "1", "--cluster-yes"].map(str::to_owned));
        Command::new("redis-cli")
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = std::fs::remove_dir_all(&node.dir);
        }
    }
}

fn spawn_node(port: u16, dir: &std::path::Path) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        // A replica takes over however long it was out of touch, and the masters that are up
        // keep serving their slots while one is down.
        .args(["--cluster-replica-validity-factor", "0"])
        .args(["--cluster-require-full-coverage", "no"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server must be installed to run these tests (apt-get install redis-server)")
}

/// Six ports below the ephemeral range whose cluster bus ports (+10000) are free too.
fn cluster_ports() -> Option<Vec<u16>> {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    let high = ephemeral_low.checked_sub(10_001)?;
    let low = 2_000u16;
    if high <= low + 100 {
        return None;
    }
    let mut ports = Vec::new();
    let mut held = Vec::new();
    for _ in 0..200 {
        let port = low + (rand_u16() % (high - low));
        if ports.contains(&port) {
            continue;
        }
        // Held until all six are found, so no two of ours collide; released before the start.
        if let (Ok(a), Ok(b)) = (
            StdListener::bind(("127.0.0.1", port)),
            StdListener::bind(("127.0.0.1", port + 10_000)),
        ) {
            held.push((a, b));
            ports.push(port);
            if ports.len() == NODES {
                return Some(ports);
            }
        }
    }
    None
}

fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(u16::MAX)) as u16
}

/// `redis-cli -p <port> <args>`'s output ("" when it fails).
fn cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The master port serving `slot`, as the node on `port` sees it (`CLUSTER NODES`: one line a
/// node, `<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots...>`).
fn master_of_slot(port: u16, slot: u16) -> Option<u16> {
    cli(port, &["CLUSTER", "NODES"]).lines().find_map(|line| {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let flags = parts.get(2)?;
        if !flags.contains("master") || flags.contains("fail") {
            return None;
        }
        let serves = parts.iter().skip(8).any(|range| {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            matches!((start.parse::<u16>(), end.parse::<u16>()), (Ok(s), Ok(e)) if (s..=e).contains(&slot))
        });
        if !serves {
            return None;
        }
        let address = parts.get(1)?.split('@').next()?;
        address.rsplit_once(':')?.1.parse().ok()
    })
}

/// A master whose replicas are all online, or a replica whose link is up and not syncing.
fn replicas_online(port: u16) -> bool {
    let info = cli(port, &["INFO", "replication"]);
    if info.contains("role:slave") {
        return info.contains("master_link_status:up")
            && info.contains("master_sync_in_progress:0");
    }
    info.lines()
        .filter(|l| l.starts_with("slave") && l.contains("ip="))
        .all(|l| l.contains("state=online"))
}

/// [`replicas_online`], and a master's replicas at its offset (an idle cluster: just created).
fn caught_up(port: u16) -> bool {
    let info = cli(port, &["INFO", "replication"]);
    let offset = field(&info, "master_repl_offset");
    replicas_online(port)
        && info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("ip="))
            .all(|l| offset.is_some_and(|o| l.contains(&format!("offset={o},"))))
}

fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
}
