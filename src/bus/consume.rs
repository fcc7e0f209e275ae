//! Consuming: the durable pull [`Feed`] a role loops on, bounded reads of
//! a stream since an instant, and the redelivery back-off.

use super::Bus;
use anyhow::{anyhow, Context as _, Result};
use async_nats::jetstream::{
    self,
    consumer::{self, pull, AckPolicy, DeliverPolicy},
};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

impl Bus {
    /// The shared durable pull consumer of a role: every replica binding the
    /// same `name` splits the work. Explicit acks; a message that keeps
    /// failing is dropped by the server after a bounded number of deliveries
    /// rather than blocking the role forever. An existing consumer is reused
    /// as is. Starts from the stream's beginning the first time.
    async fn durable_pull(
        &self,
        stream: &str,
        name: &str,
        filter: &str,
    ) -> Result<consumer::Consumer<pull::Config>> {
        let s = self
            .js
            .get_stream(stream)
            .await
            .with_context(|| format!("opening stream {stream} (run ensure first)"))?;
        s.get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_string()),
                filter_subject: filter.to_string(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: MAX_DELIVER,
                max_ack_pending: 4096,
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("binding consumer {name} on {stream}"))
    }

    /// A never-ending feed of a durable pull consumer's messages that
    /// rebinds after the consumer or the server went away.
    pub async fn feed(&self, stream: &str, name: &str, filter: &str) -> Result<Feed> {
        let mut f = Feed {
            bus: self.clone(),
            stream: stream.to_string(),
            name: name.to_string(),
            filter: filter.to_string(),
            messages: None,
            backoff: Duration::ZERO,
        };
        f.messages = Some(f.bind().await?);
        Ok(f)
    }

    /// Every message on `filter` in `stream` stamped at or after `since_ms`,
    /// as (payload, server timestamp ms), in stream order. Stops at the last
    /// message present when called, so it always returns.
    pub async fn read_since(
        &self,
        stream: &str,
        filter: &str,
        since_ms: i64,
    ) -> Result<Vec<(Bytes, i64)>> {
        let mut out = Vec::new();
        self.scan_since(stream, filter, since_ms, |m, ts| {
            out.push((m.payload.clone(), ts));
        })
        .await?;
        Ok(out)
    }

    /// Like [`Bus::read_since`], handing each message (subject and headers
    /// included) to `f` instead of collecting payloads.
    pub async fn scan_since(
        &self,
        stream: &str,
        filter: &str,
        since_ms: i64,
        mut f: impl FnMut(&async_nats::Message, i64),
    ) -> Result<u64> {
        let mut s = self
            .js
            .get_stream(stream)
            .await
            .with_context(|| format!("opening stream {stream}"))?;
        let last = s.info().await.context("stream info")?.state.last_sequence;
        let consumer = s
            .create_consumer(ordered_since(filter, since_ms)?)
            .await
            .with_context(|| format!("reading {stream} since {since_ms}"))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(0);
        }
        let mut msgs = consumer.messages().await.context("reading messages")?;
        let mut n = 0;
        loop {
            // A stream trimmed under us can leave nothing more to read; the
            // idle timeout keeps this a bounded read.
            let next = match tokio::time::timeout(Duration::from_secs(5), msgs.next()).await {
                Ok(Some(m)) => m.context("reading messages")?,
                Ok(None) | Err(_) => break,
            };
            let Ok(info) = next.info() else { continue };
            let (seq, pending, ts) = (info.stream_sequence, info.pending, datetime_ms(&info));
            if seq > last {
                break;
            }
            f(&next.message, ts);
            n += 1;
            if pending == 0 || seq == last {
                break;
            }
        }
        Ok(n)
    }
}

/// Unix milliseconds of a JetStream timestamp (the server's receive time).
pub fn datetime_ms(t: &async_nats::jetstream::message::Info<'_>) -> i64 {
    (t.published.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Deliveries before the server gives up on a message. With the roles'
/// back-off between attempts this rides out a few minutes of outage
/// downstream without retrying a poisonous message forever.
pub(super) const MAX_DELIVER: i64 = 10;

/// The delay before redelivering a message whose work failed, growing with
/// the attempts so an outage downstream is not hammered.
pub fn nak_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 6) as u32 - 1;
    Duration::from_secs((1u64 << exp).min(30))
}

/// An ordered (ephemeral, flow-controlled) consumer starting at `since_ms`.
pub fn ordered_since(filter: &str, since_ms: i64) -> Result<pull::OrderedConfig> {
    Ok(pull::OrderedConfig {
        filter_subject: filter.to_string(),
        deliver_policy: start_at(since_ms)?,
        ..Default::default()
    })
}

/// `DeliverPolicy::ByStartTime` at a unix-ms instant (all, for 0 or less).
fn start_at(since_ms: i64) -> Result<DeliverPolicy> {
    if since_ms <= 0 {
        return Ok(DeliverPolicy::All);
    }
    let start_time = async_nats::datetime::from_nanos(since_ms as i128 * 1_000_000)
        .map_err(|e| anyhow!("start time {since_ms} ms: {e}"))?;
    Ok(DeliverPolicy::ByStartTime { start_time })
}

/// What a batch is cut from: a [`Feed`], or the scorer's partitions.
pub trait Pull {
    /// The next message, waiting for one; cancel-safe.
    fn next(&mut self) -> impl std::future::Future<Output = jetstream::Message> + Send;
}

impl Pull for Feed {
    fn next(&mut self) -> impl std::future::Future<Output = jetstream::Message> + Send {
        Feed::next(self)
    }
}

/// A batch starting with `first`: every message already delivered (up
/// to `max`) goes in at once, and only when `linger` is given does it
/// wait, until then, for the batch to fill. Adaptive batching, as vector
/// and Benthos do it: a trickle is sent as it comes instead of waiting
/// for company, and a backlog still makes full batches, since while one
/// is processed the next accumulates.
pub async fn cut<P: Pull>(
    feed: &mut P,
    first: jetstream::Message,
    max: usize,
    linger: Option<Duration>,
) -> Vec<jetstream::Message> {
    use futures::FutureExt;
    let mut batch = vec![first];
    while batch.len() < max {
        match feed.next().now_or_never() {
            Some(m) => batch.push(m),
            None => break,
        }
    }
    if let Some(wait) = linger {
        let deadline = tokio::time::Instant::now() + wait;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, feed.next()).await {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
    }
    batch
}

/// Messages of a durable pull consumer, forever: transient errors (a missed
/// heartbeat while the server restarts, the consumer deleted by an operator)
/// are logged and the consumer rebound with back-off, so a role's loop is
/// just `while let Some(m) = feed.next().await`.
pub struct Feed {
    bus: Bus,
    stream: String,
    name: String,
    filter: String,
    messages: Option<pull::Stream>,
    backoff: Duration,
}

impl Feed {
    async fn bind(&self) -> Result<pull::Stream> {
        let c = self
            .bus
            .durable_pull(&self.stream, &self.name, &self.filter)
            .await?;
        c.stream()
            .max_messages_per_batch(256)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .with_context(|| format!("pulling from {}", self.name))
    }

    /// The next message; waits (rebinding as needed) until there is one.
    /// Cancel-safe: meant to be raced against a shutdown signal.
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            if self.messages.is_none() {
                if !self.backoff.is_zero() {
                    tokio::time::sleep(self.backoff).await;
                }
                match self.bind().await {
                    Ok(m) => self.messages = Some(m),
                    Err(e) => {
                        tracing::warn!(consumer = %self.name, "rebinding: {e:#}");
                        self.bump();
                        continue;
                    }
                }
            }
            let Some(msgs) = self.messages.as_mut() else {
                continue;
            };
            match msgs.next().await {
                Some(Ok(m)) => {
                    self.backoff = Duration::ZERO;
                    return m;
                }
                Some(Err(e)) => {
                    use pull::MessagesErrorKind as K;
                    match e.kind() {
                        K::MissingHeartbeat | K::Pull | K::NoResponders | K::Other => {
                            tracing::debug!(consumer = %self.name, "pull: {e}");
                            self.bump();
                            tokio::time::sleep(self.backoff).await;
                        }
                        _ => {
                            tracing::warn!(consumer = %self.name, "pull: {e}; rebinding");
                            self.messages = None;
                            self.bump();
                        }
                    }
                }
                None => {
                    self.messages = None;
                    self.bump();
                }
            }
        }
    }

    /// A batch starting with `first`; see [`cut`].
    pub async fn cut(
        &mut self,
        first: jetstream::Message,
        max: usize,
        linger: Option<Duration>,
    ) -> Vec<jetstream::Message> {
        cut(self, first, max, linger).await
    }

    fn bump(&mut self) {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    }
}
