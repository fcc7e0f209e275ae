//! Creating what the roles need on the server when it is missing: the
//! streams, the state and incidents buckets and the model object store. Existing ones are
//! left as an operator tuned them.

use super::Bus;
use crate::contract::{
    BUCKET_INCIDENTS, BUCKET_MODELS, BUCKET_SCORERS, BUCKET_STATE, STREAM_ALERTS,
    STREAM_CURRICULUM, STREAM_DLQ, STREAM_INCIDENTS, STREAM_SCORING, STREAM_TELEMETRY,
    SUBJECT_ALERTS_ALL, SUBJECT_CURRICULUM_ALL, SUBJECT_DLQ_ALL, SUBJECT_INCIDENTS_ALL,
    SUBJECT_RAISE_ALL,
};
use anyhow::{anyhow, Context as _, Result};
use async_nats::jetstream::{
    context::GetStreamErrorKind,
    kv, object_store,
    stream::{self, StorageType},
};
use std::time::Duration;

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl Bus {
    fn stream_configs(&self) -> Vec<stream::Config> {
        let mk = |name: &str, subject: String, max_age: Duration, desc: &str| stream::Config {
            name: name.to_string(),
            subjects: vec![subject],
            max_age,
            storage: StorageType::File,
            num_replicas: self.replicas,
            description: Some(desc.to_string()),
            ..Default::default()
        };
        vec![
            mk(
                STREAM_TELEMETRY,
                self.telemetry_filter(),
                DAY,
                "proprio: the system's telemetry, as published",
            ),
            mk(
                STREAM_CURRICULUM,
                SUBJECT_CURRICULUM_ALL.into(),
                DAY,
                "proprio: rendered, sampled curriculum documents",
            ),
            stream::Config {
                // A redelivered event or a second silence watcher re-publishes
                // the same alert id; an hour of dedup covers both.
                duplicate_window: HOUR,
                republish: Some(stream::Republish {
                    source: SUBJECT_RAISE_ALL.into(),
                    destination: SUBJECT_ALERTS_ALL.into(),
                    headers_only: false,
                }),
                ..mk(
                    STREAM_ALERTS,
                    SUBJECT_RAISE_ALL.into(),
                    7 * DAY,
                    "proprio: alerts (surprise and silence)",
                )
            },
            stream::Config {
                // Each message is one state of an incident, named by
                // `<id>:<alerts>:<state>`: a role restarted between storing
                // and acking re-publishes the same name, stored once.
                duplicate_window: HOUR,
                ..mk(
                    STREAM_INCIDENTS,
                    SUBJECT_INCIDENTS_ALL.into(),
                    7 * DAY,
                    "proprio: incidents (alerts grouped, root cause ranked), each open, update, resolve",
                )
            },
            mk(
                STREAM_DLQ,
                SUBJECT_DLQ_ALL.into(),
                7 * DAY,
                "proprio: telemetry that failed validation, with the reason",
            ),
        ]
    }

    /// Creates every stream, bucket and object store the roles use, when
    /// missing. Existing ones are left exactly as they are, since an operator
    /// may have tuned them (retention, replicas); calling it from every role
    /// at start-up, concurrently, is safe.
    pub async fn ensure(&self) -> Result<()> {
        for cfg in self.stream_configs() {
            self.ensure_stream(cfg).await?;
        }
        let state = kv::Config {
            bucket: BUCKET_STATE.to_string(),
            description: "proprio: digest, model metadata, mutes, trainer lock".into(),
            history: 1,
            storage: StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.ensure_stream_via(&format!("KV_{BUCKET_STATE}"), || {
            self.js.create_key_value(state.clone())
        })
        .await?;
        let incidents = kv::Config {
            bucket: BUCKET_INCIDENTS.to_string(),
            description: "proprio: incidents by id, their current state".into(),
            history: 1,
            // A resolved incident is kept a week, like the alerts it groups.
            max_age: 7 * DAY,
            storage: StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.ensure_stream_via(&format!("KV_{BUCKET_INCIDENTS}"), || {
            self.js.create_key_value(incidents.clone())
        })
        .await?;
        let models = object_store::Config {
            bucket: BUCKET_MODELS.to_string(),
            description: Some("proprio: model checkpoints".into()),
            storage: StorageType::File,
            num_replicas: self.replicas,
            ..Default::default()
        };
        self.ensure_stream_via(&format!("OBJ_{BUCKET_MODELS}"), || {
            self.js.create_object_store(models.clone())
        })
        .await?;
        for (name, have) in self.replica_mismatches().await? {
            tracing::warn!(
                stream = %name,
                "has {have} replica(s), nats.replicas is {}: left as is (to follow the setting: \
                 nats stream edit {name} --replicas {})",
                self.replicas,
                self.replicas
            );
        }
        Ok(())
    }

    /// proprio's streams (buckets and object store included) whose replica
    /// count is not `nats.replicas`, with the count they have: `ensure`
    /// never re-creates an existing stream, so a changed setting (or an
    /// operator's choice) shows here and in a warning, not silently.
    pub async fn replica_mismatches(&self) -> Result<Vec<(String, usize)>> {
        let mut names: Vec<String> = self.stream_configs().into_iter().map(|c| c.name).collect();
        names.extend([
            format!("KV_{BUCKET_STATE}"),
            format!("KV_{BUCKET_INCIDENTS}"),
            format!("OBJ_{BUCKET_MODELS}"),
            // Only when the scorers are partitioned; absent ones are skipped.
            STREAM_SCORING.to_string(),
            format!("KV_{BUCKET_SCORERS}"),
        ]);
        let mut out = Vec::new();
        for name in names {
            let Ok(s) = self.js.get_stream(&name).await else {
                continue;
            };
            let have = s.cached_info().config.num_replicas;
            if have != self.replicas {
                out.push((name, have));
            }
        }
        Ok(out)
    }

    async fn ensure_stream(&self, cfg: stream::Config) -> Result<()> {
        let name = cfg.name.clone();
        let wanted = cfg.subjects.clone();
        let existed = self
            .ensure_stream_via(&name, || self.js.create_stream(cfg.clone()))
            .await?;
        if existed {
            if let Ok(s) = self.js.get_stream(&name).await {
                let have = &s.cached_info().config.subjects;
                if !wanted.iter().all(|w| have.contains(w)) {
                    tracing::warn!(
                        stream = %name,
                        "existing stream captures {have:?}, not {wanted:?}; left as is"
                    );
                }
            }
        }
        Ok(())
    }

    /// Creates the stream `name` (through `create`) when it does not exist;
    /// returns whether it already existed. A concurrent creator winning the
    /// race is success, not an error.
    pub(super) async fn ensure_stream_via<F, Fut, T, E>(
        &self,
        name: &str,
        create: F,
    ) -> Result<bool>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, E>>,
        E: std::error::Error + Send + Sync + 'static,
    {
        match self.js.get_stream(name).await {
            Ok(_) => return Ok(true),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(je) if je.code() == 404 => {}
                _ => {
                    return Err(anyhow!(e)).with_context(|| {
                        format!("looking up stream {name} (is JetStream enabled on the server? nats-server -js)")
                    })
                }
            },
        }
        match create().await {
            Ok(_) => {
                tracing::info!(stream = name, "created");
                Ok(false)
            }
            Err(e) => match self.js.get_stream(name).await {
                Ok(_) => Ok(true),
                Err(_) => {
                    Err(anyhow::Error::new(e)).with_context(|| format!("creating stream {name}"))
                }
            },
        }
    }
}
