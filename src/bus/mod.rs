//! NATS plumbing every role stands on, a transport only: connecting
//! (`connect`, with `security`), creating the streams and buckets the roles
//! need (`setup`), and the few publish and consume patterns they share
//! (`publish`, `consume`), the scorer replicas' `partition`s; the state bucket's get/put here. The names and
//! payloads it carries are the [`crate::contract`]'s; mutes live with the
//! alerts (`alert::mute`), checkpoints in `model_store`, both built on this.
//!
//! Everything between roles goes through here, so the guarantees live here
//! too: a JetStream publish is only "done" when the server has acknowledged
//! it, a durable consumer acknowledges explicitly and gives up after a bounded
//! number of deliveries, and nothing read from the wire can panic.

mod connect;
mod consume;
pub mod partition;
mod publish;
mod security;
mod setup;

pub use connect::{connect_client, permission_error, BusConfig, DEFAULT_URL};
pub use consume::{cut, datetime_ms, nak_delay, ordered_since, Feed, Pull};
pub use security::{redact_url, NatsSecurity};

use crate::contract::{BUCKET_INCIDENTS, BUCKET_STATE};
use anyhow::{Context as _, Result};
use async_nats::jetstream::{self, kv};
use bytes::Bytes;

/// A connection plus the JetStream context, cheap to clone (one per role).
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    root: String,
    replicas: usize,
    /// The first permission violation the server reported, if any.
    denied: tokio::sync::watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("root", &self.root).finish()
    }
}

impl Bus {
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<root>.>`: every telemetry subject.
    pub fn telemetry_filter(&self) -> String {
        format!("{}.>", self.root)
    }

    /// The `proprio-state` bucket (digest, model metadata, mutes, lock).
    pub async fn kv(&self) -> Result<kv::Store> {
        self.js
            .get_key_value(BUCKET_STATE)
            .await
            .with_context(|| format!("opening KV bucket {BUCKET_STATE} (run ensure first)"))
    }

    /// The `proprio-incidents` bucket (incidents by id).
    pub async fn incidents_kv(&self) -> Result<kv::Store> {
        self.js
            .get_key_value(BUCKET_INCIDENTS)
            .await
            .with_context(|| format!("opening KV bucket {BUCKET_INCIDENTS} (run ensure first)"))
    }

    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<()> {
        self.kv()
            .await?
            .put(key, value.into())
            .await
            .with_context(|| format!("writing {BUCKET_STATE}/{key}"))?;
        Ok(())
    }

    /// None when the key was never written or was deleted.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.kv()
            .await?
            .get(key)
            .await
            .with_context(|| format!("reading {BUCKET_STATE}/{key}"))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.kv()
            .await?
            .delete(key)
            .await
            .with_context(|| format!("deleting {BUCKET_STATE}/{key}"))
    }
}
