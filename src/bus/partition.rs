//! Scorer partitions: every event of a source goes to one scorer replica at
//! a time, so the replica that scores a source holds all of its context and
//! baselines.
//!
//! NATS does the splitting. The scoring stream sources the telemetry stream
//! through deterministic subject-mapping partitions (`{{partition(n,2)}}` of
//! the source token), so `os.log.svc3` is stored as
//! `proprio.score.<p>.os.log.svc3`, and every partition has its own durable
//! consumer. Replicas agree on who takes which partition through a
//! membership bucket (a key per live replica, expiring unless renewed) and
//! a balanced assignment every replica computes alike; the consumers' pinned
//! client priority policy makes the server deliver a partition to one
//! replica only, even while replicas briefly disagree about membership.
//! A replica that dies stops renewing its key; the others take its
//! partitions within [`MEMBER_TTL`] plus a beat.

use super::Bus;
use crate::contract::{
    BUCKET_SCORERS, CONSUMER_SCORER, STREAM_SCORING, STREAM_TELEMETRY, SUBJECT_SCORING_PREFIX,
};
use anyhow::{bail, Context as _, Result};
use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy, PriorityPolicy},
    kv,
    stream::{self, RetentionPolicy, StorageType, SubjectTransform},
};
use futures::stream::BoxStream;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_stream::StreamMap;

/// The priority group every replica pulls a partition's consumer in.
pub const GROUP: &str = "scorers";
/// How often a replica renews its membership and rebalances.
pub const BEAT: Duration = Duration::from_secs(2);
/// A replica not heard from for this long has left (its key expires).
pub const MEMBER_TTL: Duration = Duration::from_secs(8);
/// A pinned replica that stops pulling loses its pin after this long; the
/// pull expiry below stays well under it so a live replica keeps its pin.
const PIN_TIMEOUT: Duration = Duration::from_secs(10);
const PULL_EXPIRES: Duration = Duration::from_secs(4);
const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// The telemetry subject a scoring-stream message carries:
/// `proprio.score.<p>.os.log.svc3` → `os.log.svc3`; any other subject as is.
pub fn original_subject(subject: &str) -> &str {
    subject
        .strip_prefix(SUBJECT_SCORING_PREFIX)
        .and_then(|r| r.strip_prefix('.'))
        .and_then(|r| r.split_once('.'))
        .filter(|(p, _)| p.parse::<u32>().is_ok())
        .map_or(subject, |(_, rest)| rest)
}

/// The telemetry stream's sequence of a message the scoring stream sourced
/// (its `Nats-Stream-Source` header: `<stream> <seq> ...`), so an alert's id
/// is the same whether the scorers are partitioned or not.
pub fn source_sequence(headers: Option<&async_nats::HeaderMap>) -> Option<u64> {
    let v = headers?.get("Nats-Stream-Source")?.as_str();
    let mut it = v.split_whitespace();
    let stream = it.next()?;
    let stream = stream.split(':').next()?;
    (stream == STREAM_TELEMETRY).then_some(())?;
    it.next()?.parse().ok()
}

/// Which member takes each partition: balanced (no member more than one
/// partition above another) and stable (a partition stays with the member
/// that ranks it highest while that member has room), so a change of
/// membership moves few sources and thus few contexts. Members are named;
/// every replica computes the same answer from the same set.
pub fn assign(partitions: u32, members: &BTreeSet<String>) -> Vec<String> {
    if members.is_empty() {
        return Vec::new();
    }
    let n = members.len();
    // Every member gets `floor` or `floor + 1` partitions: a partition goes
    // to the member ranking it highest that is still under `floor`, the
    // remainder to the highest-ranked one still under `floor + 1`.
    let floor = partitions as usize / n;
    let ceil = floor + usize::from(partitions as usize % n != 0);
    let mut load = vec![0usize; n];
    let names: Vec<&String> = members.iter().collect();
    (0..partitions)
        .map(|p| {
            let mut ranked: Vec<(u64, usize)> = (0..n).map(|m| (rank(p, names[m]), m)).collect();
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            let under = |cap: usize| ranked.iter().map(|&(_, m)| m).find(|&m| load[m] < cap);
            let m = under(floor).or_else(|| under(ceil)).unwrap_or(ranked[0].1);
            load[m] += 1;
            names[m].clone()
        })
        .collect()
}

fn rank(p: u32, member: &str) -> u64 {
    let h = Sha256::new()
        .chain_update(p.to_be_bytes())
        .chain_update(member.as_bytes())
        .finalize();
    u64::from_be_bytes(h[..8].try_into().unwrap_or_default())
}

fn now() -> Result<async_nats::datetime::DateTime> {
    let ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128);
    async_nats::datetime::from_nanos(ns).map_err(|e| anyhow::anyhow!("the time now: {e}"))
}

fn consumer_name(p: u32) -> String {
    format!("{CONSUMER_SCORER}-p{p}")
}

impl Bus {
    fn scoring_transforms(&self, partitions: u32) -> Vec<SubjectTransform> {
        // The source is the second token of `<root>.<kind>.<source>[.<event>]`
        // (a graph's name for `<root>.graph.<name>`), one token by contract.
        let r = &self.root;
        let p = format!("{SUBJECT_SCORING_PREFIX}.{{{{partition({partitions},2)}}}}");
        vec![
            SubjectTransform {
                source: format!("{r}.*.*"),
                destination: format!("{p}.{r}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}"),
            },
            SubjectTransform {
                source: format!("{r}.*.*.*"),
                destination: format!(
                    "{p}.{r}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}"
                ),
            },
        ]
    }

    /// The scoring stream (the telemetry, partitioned by source; a work
    /// queue, so an event leaves it once scored) and the membership bucket,
    /// created when missing. An existing stream split another way is an
    /// error naming both counts: the partitions are where sources live, so
    /// they are not changed under running replicas.
    pub async fn ensure_scoring(&self, partitions: u32) -> Result<()> {
        if partitions < 2 {
            bail!("scorer partitions: {partitions}; partitioning needs at least 2");
        }
        let transforms = self.scoring_transforms(partitions);
        let cfg = stream::Config {
            name: STREAM_SCORING.to_string(),
            description: Some(format!(
                "proprio: the telemetry in {partitions} partitions by source, one scorer each"
            )),
            retention: RetentionPolicy::WorkQueue,
            max_age: Duration::from_secs(24 * 3600),
            storage: StorageType::File,
            num_replicas: self.replicas,
            sources: Some(vec![stream::Source {
                name: STREAM_TELEMETRY.to_string(),
                // From its creation on: turning partitions on in a running
                // deployment must not re-source a day of telemetry only to
                // shed it as stale.
                start_time: Some(now()?),
                subject_transforms: transforms.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        };
        self.ensure_stream_via(STREAM_SCORING, || self.js.create_stream(cfg.clone()))
            .await?;
        let s = self.js.get_stream(STREAM_SCORING).await?;
        let have = s
            .cached_info()
            .config
            .sources
            .iter()
            .flatten()
            .find(|s| s.name == STREAM_TELEMETRY)
            .map(|s| s.subject_transforms.clone())
            .unwrap_or_default();
        if have != transforms {
            let split = have
                .first()
                .map_or("no partitions".to_string(), |t| t.destination.clone());
            bail!(
                "stream {STREAM_SCORING} splits the telemetry as {split:?}, but \
                 scorer.partitions is {partitions}: stop the scorers and delete the stream \
                 (nats stream rm {STREAM_SCORING}) to change it, or configure the count it has"
            );
        }
        let members = kv::Config {
            bucket: BUCKET_SCORERS.to_string(),
            description: "proprio: live scorer replicas, each key renewed every beat".into(),
            history: 1,
            max_age: MEMBER_TTL,
            storage: StorageType::Memory,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.ensure_stream_via(&format!("KV_{BUCKET_SCORERS}"), || {
            self.js.create_key_value(members.clone())
        })
        .await?;
        Ok(())
    }

    /// This replica's partitioned feed, as member `me`. The first beat runs
    /// at once, so a lone replica takes every partition on its first call.
    pub async fn partitioned(
        &self,
        partitions: u32,
        me: &str,
        counts: Arc<PartitionCounts>,
    ) -> Result<PartitionFeed> {
        self.ensure_scoring(partitions).await?;
        let members = self
            .js
            .get_key_value(BUCKET_SCORERS)
            .await
            .with_context(|| format!("opening KV bucket {BUCKET_SCORERS}"))?;
        let stream = self.js.get_stream(STREAM_SCORING).await?;
        Ok(PartitionFeed {
            bus: self.clone(),
            stream,
            members,
            me: me.to_string(),
            partitions,
            owned: StreamMap::new(),
            owners: Vec::new(),
            due: Instant::now(),
            counts,
        })
    }

    async fn partition_consumer(
        &self,
        stream: &jetstream::stream::Stream,
        p: u32,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>> {
        let name = consumer_name(p);
        stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("{SUBJECT_SCORING_PREFIX}.{p}.>"),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(30),
                    max_deliver: super::consume::MAX_DELIVER,
                    max_ack_pending: 4096,
                    deliver_policy: DeliverPolicy::All,
                    priority_policy: PriorityPolicy::PinnedClient,
                    priority_groups: vec![GROUP.to_string()],
                    priority_timeout: PIN_TIMEOUT,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("binding consumer {name} on {STREAM_SCORING}"))
    }
}

/// Events received per partition and which partitions this replica holds,
/// for /metrics.
#[derive(Debug, Default)]
pub struct PartitionCounts {
    received: Vec<AtomicU64>,
    held: Vec<AtomicU64>,
    /// The partitions' metric labels. Leaked once per scorer: the metrics
    /// report takes static labels, and the count is fixed for a process.
    labels: Vec<&'static str>,
}

impl PartitionCounts {
    pub fn new(partitions: u32) -> PartitionCounts {
        let n = partitions as usize;
        PartitionCounts {
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
            held: (0..n).map(|_| AtomicU64::new(0)).collect(),
            labels: (0..n)
                .map(|p| &*Box::leak(p.to_string().into_boxed_str()))
                .collect(),
        }
    }

    /// (label, events received, held now) for every partition.
    pub fn snapshot(&self) -> Vec<(&'static str, u64, bool)> {
        (0..self.received.len())
            .map(|p| {
                (
                    self.labels[p],
                    self.received[p].load(Ordering::Relaxed),
                    self.held[p].load(Ordering::Relaxed) == 1,
                )
            })
            .collect()
    }
}

/// The messages of the partitions this replica holds, merged; see the
/// module doc. [`PartitionFeed::tend`] between batches keeps membership and
/// holdings current; [`PartitionFeed::next`] only reads.
pub struct PartitionFeed {
    bus: Bus,
    stream: jetstream::stream::Stream,
    members: kv::Store,
    me: String,
    partitions: u32,
    owned: StreamMap<u32, BoxStream<'static, jetstream::Message>>,
    /// The last assignment this replica acted on.
    owners: Vec<String>,
    due: Instant,
    counts: Arc<PartitionCounts>,
}

impl PartitionFeed {
    /// When the next beat is due: an idle scorer wakes for it.
    pub fn due(&self) -> Instant {
        self.due
    }

    /// The partitions held now.
    pub fn held(&self) -> Vec<u32> {
        self.owned.keys().copied().collect()
    }

    /// When a beat is due: renews this replica's membership, reads the
    /// others', and takes up or lets go of partitions to match the
    /// assignment. A failed beat is logged and retried at the next one;
    /// what is held stays held meanwhile.
    pub async fn tend(&mut self) {
        if Instant::now() < self.due {
            return;
        }
        self.due = Instant::now() + BEAT;
        if let Err(e) = self.beat().await {
            tracing::warn!("scorer partitions: {e:#}");
        }
    }

    async fn beat(&mut self) -> Result<()> {
        self.members
            .put(&self.me, bytes::Bytes::new())
            .await
            .context("renewing membership")?;
        let mut keys = self.members.keys().await.context("listing members")?;
        let mut members = BTreeSet::new();
        while let Some(k) = keys.next().await {
            members.insert(k.context("listing members")?);
        }
        members.insert(self.me.clone());
        let owners = assign(self.partitions, &members);
        for p in 0..self.partitions {
            let mine = owners[p as usize] == self.me;
            let held = self.owned.contains_key(&p);
            if mine && !held {
                // The last owner left without letting go (killed), or this
                // replica's own pull ended: that pin would hold the
                // partition until it timed out.
                let before = self.owners.get(p as usize);
                if before.is_some_and(|b| b == &self.me || !members.contains(b)) {
                    unpin(&self.stream, p).await;
                }
                let feed = take(&self.bus, &self.stream, p, self.counts.clone()).await?;
                self.owned.insert(p, feed);
                self.counts.held[p as usize].store(1, Ordering::Relaxed);
                tracing::info!(partition = p, member = %self.me, "scorer partition taken");
            } else if !mine && held {
                self.release(p).await;
                tracing::info!(partition = p, member = %self.me, "scorer partition handed over");
            }
        }
        self.owners = owners;
        Ok(())
    }

    /// Lets go of partition `p` and releases its pin, so the new owner
    /// starts now rather than after the pin times out. Called between
    /// batches, so everything taken from `p` is settled already; what the
    /// server had sent but this replica not yet taken is redelivered to the
    /// new owner after the ack wait.
    async fn release(&mut self, p: u32) {
        drop(self.owned.remove(&p));
        self.counts.held[p as usize].store(0, Ordering::Relaxed);
        unpin(&self.stream, p).await;
    }

    /// The next message of any partition held; pending while none is held.
    /// Cancel-safe.
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            if self.owned.is_empty() {
                std::future::pending::<()>().await;
            }
            if let Some((_, m)) = self.owned.next().await {
                return m;
            }
        }
    }

    /// Leaves the group (an orderly shutdown): every partition is handed
    /// back and the membership key removed, so the others take over at
    /// their next beat instead of after [`MEMBER_TTL`].
    pub async fn leave(mut self) {
        for p in self.held() {
            self.release(p).await;
        }
        if let Err(e) = self.members.delete(&self.me).await {
            tracing::debug!("leaving the scorer group: {e}");
        }
    }
}

/// The pull stream of partition `p`, counting what it delivers.
async fn take(
    bus: &Bus,
    stream: &jetstream::stream::Stream,
    p: u32,
    counts: Arc<PartitionCounts>,
) -> Result<BoxStream<'static, jetstream::Message>> {
    let c = bus.partition_consumer(stream, p).await?;
    let name = consumer_name(p);
    let pulls = c
        .stream()
        .group(GROUP)
        .max_messages_per_batch(256)
        .heartbeat(PULL_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .with_context(|| format!("pulling from {name}"))?;
    // A transient pull error (a missed heartbeat, the server restarting)
    // is logged and skipped after a pause, as the client library re-pulls;
    // any other (the consumer deleted) ends the stream, and the next beat
    // takes the partition afresh.
    Ok(pulls
        .then(move |m| {
            let name = name.clone();
            async move {
                if let Err(e) = &m {
                    tracing::debug!(consumer = %name, "pull: {e}");
                    if transient(e) {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
                m
            }
        })
        .take_while(|m| std::future::ready(m.as_ref().err().is_none_or(transient)))
        .filter_map(move |m| {
            let m = m.ok();
            if m.is_some() {
                counts.received[p as usize].fetch_add(1, Ordering::Relaxed);
            }
            std::future::ready(m)
        })
        .boxed())
}

fn transient(e: &pull::MessagesError) -> bool {
    use pull::MessagesErrorKind as K;
    matches!(
        e.kind(),
        K::MissingHeartbeat | K::Pull | K::NoResponders | K::Other
    )
}

async fn unpin(stream: &jetstream::stream::Stream, p: u32) {
    if let Err(e) = stream.unpin_consumer(&consumer_name(p), GROUP).await {
        tracing::debug!(partition = p, "unpin: {e}");
    }
}

/// A member name for this process: the host and a random suffix, so two
/// replicas on one host differ and a restarted one is a new member.
pub fn member_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "scorer".into());
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("{host}-{:08x}", rand_u32())
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let h = Sha256::new()
        .chain_update(t.to_be_bytes())
        .chain_update(std::process::id().to_be_bytes())
        .finalize();
    u32::from_be_bytes(h[..4].try_into().unwrap_or_default())
}

impl std::fmt::Debug for PartitionFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionFeed")
            .field("me", &self.me)
            .field("held", &self.held())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_telemetry_subject_comes_back_from_a_partition() {
        assert_eq!(
            original_subject("proprio.score.3.os.log.svc3"),
            "os.log.svc3"
        );
        assert_eq!(
            original_subject("proprio.score.12.os.flux.a.crash"),
            "os.flux.a.crash"
        );
        assert_eq!(original_subject("os.log.svc3"), "os.log.svc3");
        assert_eq!(
            original_subject("proprio.score.x.os.log"),
            "proprio.score.x.os.log"
        );
    }

    #[test]
    fn the_assignment_is_balanced_and_moves_little() {
        let two = assign(16, &set(&["a", "b"]));
        let a = two.iter().filter(|m| *m == "a").count();
        assert_eq!((a, 16 - a), (8, 8));
        let three = assign(16, &set(&["a", "b", "c"]));
        for m in ["a", "b", "c"] {
            let n = three.iter().filter(|x| *x == m).count();
            assert!((5..=6).contains(&n), "{m} has {n}");
        }
        // c joining takes partitions from a and b; none moves between a and b.
        let moved_ab = two
            .iter()
            .zip(&three)
            .filter(|(x, y)| *y != "c" && x != y)
            .count();
        assert!(moved_ab <= 2, "{moved_ab} partitions moved between a and b");
        // Everyone computes the same; a lone member takes all.
        assert_eq!(two, assign(16, &set(&["b", "a"])));
        assert!(assign(8, &set(&["a"])).iter().all(|m| m == "a"));
        assert!(assign(8, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_sourced_message_keeps_its_telemetry_sequence() {
        let mut h = async_nats::HeaderMap::new();
        h.insert(
            "Nats-Stream-Source",
            "PROPRIO_TELEMETRY 42 os.*.* proprio.score",
        );
        assert_eq!(source_sequence(Some(&h)), Some(42));
        let mut other = async_nats::HeaderMap::new();
        other.insert("Nats-Stream-Source", "ELSEWHERE 42");
        assert_eq!(source_sequence(Some(&other)), None);
        assert_eq!(source_sequence(None), None);
    }
}
