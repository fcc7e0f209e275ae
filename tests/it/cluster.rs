//! A three-node NATS JetStream cluster: three nats-server processes routed
//! on loopback, each with its own store. proprio connects with the servers'
//! URLs as one comma-separated `nats.url` and creates its streams at R3; the
//! node leading the telemetry stream is killed (`kill -9`) while an outside
//! publisher sends 2,000 events a second. No acknowledged event is lost,
//! none is stored twice, proprio's durable consumer goes on delivering, and
//! the killed node, restarted on its store, catches up.

use crate::support::{free_port, nats_server_bin, wait_listening};
use async_nats::jetstream;
use proprio::bus::{Bus, BusConfig};
use proprio::contract::STREAM_TELEMETRY;
use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Node {
    name: String,
    port: u16,
    cluster_port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

/// Three routed servers; killed on drop.
pub(crate) struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    pub(crate) fn start() -> Cluster {
        let nodes: Vec<Node> = (0..3)
            .map(|i| Node {
                name: format!("n{i}"),
                port: free_port(),
                cluster_port: free_port(),
                store: tempfile::tempdir().unwrap(),
                child: None,
            })
            .collect();
        let mut c = Cluster { nodes };
        for i in 0..3 {
            c.spawn(i);
        }
        c
    }

    pub(crate) fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, n)| format!("nats://127.0.0.1:{}", n.cluster_port))
            .collect();
        let n = &mut self.nodes[i];
        let child = Command::new(nats_server_bin())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &n.port.to_string(),
                "-js",
                "-n",
                &n.name,
            ])
            .arg("-sd")
            .arg(n.store.path())
            .args(["--cluster_name", "proprio-test"])
            .args(["--cluster", &format!("nats://127.0.0.1:{}", n.cluster_port)])
            .args(["--routes", &routes.join(",")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        n.child = Some(child);
        wait_listening(n.port, &format!("node {} did not listen", n.name));
    }

    /// `kill -9`: no goodbye to its peers, no flush.
    pub(crate) fn kill(&mut self, name: &str) -> usize {
        let i = self.nodes.iter().position(|n| n.name == name).unwrap();
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        i
    }

    pub(crate) fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Retries `f` until it succeeds or `secs` pass (the cluster electing its
/// JetStream leaders takes a few seconds).
pub(crate) async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("{what}: {e:#}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => panic!("{what}: {e:#}"),
        }
    }
}

async fn telemetry_info(js: &jetstream::Context) -> anyhow::Result<jetstream::stream::Info> {
    Ok(js.get_stream(STREAM_TELEMETRY).await?.info().await?.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_telemetry_leader_loses_no_acknowledged_event() {
    let mut cluster = Cluster::start();
    let cfg = BusConfig {
        replicas: 3,
        ..BusConfig::with_url(cluster.urls())
    };
    let bus = eventually(30, "proprio connecting and creating R3 streams", || async {
        let b = Bus::connect(&cfg).await?;
        b.ensure().await?;
        Ok(b)
    })
    .await;
    let info = telemetry_info(bus.js()).await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(bus.replica_mismatches().await.unwrap(), vec![]);
    // A process configured for one replica leaves the R3 streams alone and
    // says which differ.
    let r1 = Bus::connect(&BusConfig {
        replicas: 1,
        ..cfg.clone()
    })
    .await
    .unwrap();
    r1.ensure().await.unwrap();
    let differ = r1.replica_mismatches().await.unwrap();
    assert_eq!(differ.len(), 8, "{differ:?}");
    assert!(differ.iter().all(|(_, n)| *n == 3), "{differ:?}");
    assert_eq!(
        telemetry_info(bus.js()).await.unwrap().config.num_replicas,
        3
    );

    // proprio's durable consumer, acknowledging what it reads.
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let mut feed = bus
        .feed(STREAM_TELEMETRY, "cluster-test", &format!("{}.>", cfg.root))
        .await
        .unwrap();
    let reader = {
        let seen = seen.clone();
        tokio::spawn(async move {
            loop {
                let m = feed.next().await;
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                *seen.lock().unwrap().entry(id).or_default() += 1;
                let _ = m.ack().await;
            }
        })
    };

    // The outside publisher: 2,000 events a second for 4 s, each retried
    // under its id until the cluster acknowledges it (or 20 s pass).
    let urls = cluster.urls();
    let publisher = async_nats::connect(urls.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let pjs = jetstream::new(publisher);
    let acked: Arc<Mutex<HashSet<String>>> = Arc::default();
    let total = 8_000usize;
    let sender = {
        let acked = acked.clone();
        let root = cfg.root.clone();
        tokio::spawn(async move {
            let t0 = Instant::now();
            let mut pending = Vec::new();
            for i in 0..total {
                let due = t0 + Duration::from_micros(500 * i as u64);
                tokio::time::sleep_until(due.into()).await;
                let (js, acked, root) = (pjs.clone(), acked.clone(), root.clone());
                pending.push(tokio::spawn(async move {
                    let id = format!("ev-{i}");
                    let src = format!("svc{}", i % 20);
                    let body = format!(
                        r#"{{"ts":{},"source":"{src}","kind":"pulse","metrics":{{"cpu":{}}}}}"#,
                        1_767_225_600_000i64 + i as i64,
                        i % 97
                    );
                    let deadline = Instant::now() + Duration::from_secs(20);
                    while Instant::now() < deadline {
                        let msg = jetstream::message::PublishMessage::build()
                            .payload(body.clone().into())
                            .message_id(&id);
                        if let Ok(ack) = js.send_publish(format!("{root}.pulse.{src}"), msg).await {
                            if ack.await.is_ok() {
                                acked.lock().unwrap().insert(id);
                                return;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }));
            }
            for p in pending {
                let _ = p.await;
            }
        })
    };

    // A second in, the node that leads the telemetry stream dies.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let leader = telemetry_info(bus.js())
        .await
        .unwrap()
        .cluster
        .and_then(|c| c.leader)
        .expect("the telemetry stream has a leader");
    let killed = cluster.kill(&leader);
    let t_kill = Instant::now();
    sender.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    // Nearly everything is acknowledged in the end (a publisher retries).
    assert!(
        acked.len() * 100 >= total * 99,
        "{} of {total} acked",
        acked.len()
    );

    // proprio's consumer delivers every acknowledged event.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let missing = {
            let s = seen.lock().unwrap();
            acked.iter().filter(|id| !s.contains_key(*id)).count()
        };
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events never delivered ({:?} after the kill)",
            t_kill.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    reader.abort();
    let redelivered: u32 = seen.lock().unwrap().values().map(|n| n - 1).sum();
    eprintln!(
        "cluster: {} of {total} acked; all delivered {:?} after killing the leader {leader} ({redelivered} redeliveries)",
        acked.len(),
        t_kill.elapsed()
    );

    // Stored once each: the stream holds no id twice.
    let info = eventually(30, "stream info after the kill", || {
        telemetry_info(bus.js())
    })
    .await;
    let stored = info.state.messages as usize;
    assert!(
        stored >= acked.len(),
        "{stored} stored, {} acked",
        acked.len()
    );
    assert!(
        stored <= total,
        "{stored} stored for {total} distinct ids: duplicates"
    );

    // The killed node comes back on its store and catches up.
    cluster.spawn(killed);
    let name = cluster.nodes[killed].name.clone();
    eventually(60, "the restarted node catching up", || async {
        let info = telemetry_info(bus.js()).await?;
        let c = info
            .cluster
            .ok_or_else(|| anyhow::anyhow!("no cluster info"))?;
        let caught_up = c.leader.as_deref() == Some(name.as_str())
            || c.replicas
                .iter()
                .any(|p| p.name == name && p.current && !p.offline);
        anyhow::ensure!(caught_up, "{name} not current yet: {:?}", c.replicas);
        Ok(())
    })
    .await;
}
