//! Publishing with the server's acknowledgement: plain, deduplicated by id,
//! an alert, a dead letter.

use super::Bus;
use crate::contract::alert::Alert;
use crate::contract::{
    dlq_subject, raise_subject, DLQ_MAX_PAYLOAD, HEADER_DETAIL, HEADER_REASON, HEADER_SUBJECT,
    HEADER_TRUNCATED,
};
use anyhow::{Context as _, Result};
use async_nats::jetstream::message::PublishMessage as Publish;
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;

impl Bus {
    /// A JetStream publish that returns only once the server has stored it,
    /// so the caller may then acknowledge whatever triggered it.
    pub async fn publish_acked(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
        headers: Option<HeaderMap>,
    ) -> Result<()> {
        let p = message(payload.into(), headers);
        self.send_acked(&subject.into(), p).await.map(|_| ())
    }

    /// Publishes with a `Nats-Msg-Id`; returns false when the stream had
    /// already stored that id (a redelivery, or another replica was first).
    pub async fn publish_once(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
        headers: Option<HeaderMap>,
        msg_id: &str,
    ) -> Result<bool> {
        let p = message(payload.into(), headers).message_id(msg_id);
        let ack = self.send_acked(&subject.into(), p).await?;
        Ok(!ack.duplicate)
    }

    /// Raises an alert: stored once per id on the alerts stream, which
    /// republishes it to subscribers of `proprio.alert.>` (see
    /// [`crate::contract::SUBJECT_RAISE_PREFIX`]). False when the id was
    /// already stored.
    pub async fn publish_alert(&self, alert: &Alert) -> Result<bool> {
        let subject = raise_subject(&alert.source);
        self.publish_once(subject, alert.to_msgpack(), None, &alert.id)
            .await
    }

    async fn send_acked(
        &self,
        subject: &str,
        p: Publish,
    ) -> Result<async_nats::jetstream::publish::PublishAck> {
        let fut = self
            .js
            .send_publish(subject.to_string(), p)
            .await
            .with_context(|| format!("publishing on {subject}"))?;
        fut.await
            .with_context(|| format!("publishing on {subject}: no JetStream ack"))
    }

    /// Dead-letters a message that failed validation: the original bytes,
    /// with why and where from in headers, so its owner can see exactly what
    /// was refused. `msg_id` (e.g. the telemetry stream sequence) keeps a
    /// redelivered bad message from being dead-lettered twice.
    pub async fn publish_dlq(
        &self,
        reason: crate::event::Reason,
        detail: &str,
        original_subject: &str,
        payload: impl Into<Bytes>,
        msg_id: Option<&str>,
    ) -> Result<()> {
        let mut payload: Bytes = payload.into();
        let mut h = HeaderMap::new();
        h.insert(HEADER_REASON, reason.as_str());
        h.insert(HEADER_DETAIL, header_value(detail));
        h.insert(HEADER_SUBJECT, header_value(original_subject));
        // A payload refused for its size, plus headers, may not fit in a
        // message at all; a cut dead letter beats one that is never stored.
        if payload.len() > DLQ_MAX_PAYLOAD {
            h.insert(HEADER_TRUNCATED, payload.len().to_string().as_str());
            payload = payload.slice(..DLQ_MAX_PAYLOAD);
        }
        let subject = dlq_subject(reason.as_str());
        match msg_id {
            Some(id) => self
                .publish_once(subject, payload, Some(h), id)
                .await
                .map(|_| ()),
            None => self.publish_acked(subject, payload, Some(h)).await,
        }
    }
}

/// Header values may not hold line breaks, and a huge one would be refused
/// with the whole message; both are made safe rather than fail the publish.
fn header_value(s: &str) -> HeaderValue {
    let mut clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > 1024 {
        let mut cut = 1024;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    HeaderValue::from(clean)
}

fn message(payload: Bytes, headers: Option<HeaderMap>) -> Publish {
    let p = Publish::build().payload(payload);
    match headers {
        Some(h) => p.headers(h),
        None => p,
    }
}
