//! proprio: proprioception for a microservice system.
//!
//! A tiny GPT is trained continuously on the system's own telemetry; the loss
//! it assigns to each new event is that event's anomaly score. The map, from
//! the entry points down (docs/ARCHITECTURE.md has the pictures); a module
//! uses only the ones below it.
//!
//! Entry points:
//! - [`startup`]: configuration and logging before a command runs.
//! - [`run`]: `proprio run`, the roles in one process around one [`context`].
//! - [`demo`], [`cli_ops`], [`cli_incidents`], [`import`], [`eval`]: `proprio demo`, the
//!   operator commands (`digest`, `alerts`, `tick`, `mute`; `incidents`), `import`, `eval`.
//! - [`decision_bench`]: `proprio bench`: the engine's figures, then what the decision
//!   and incident stages cost per event, on the live code.
//! - [`metricbench`]: `proprio metricbench`: labelled metric series, proprio (through
//!   [`eval`]'s model path) against metric baselines, NAB-like window scores.
//!
//! Roles (each: decide, effects, settle):
//! - [`harvester`]: telemetry into curriculum documents; bad input dead-lettered.
//! - [`scorer`]: per-key contexts (cached keys and values in the model thread), surprisal to calibrated score (the
//!   shipped tails, updated online), the alert decision (evidence against the
//!   [`policy`], cooldown, mute), the role.
//! - [`silence`]: the silence watch, a source that stopped publishing.
//! - [`incident`]: alerts grouped into incidents over the topology, root
//!   cause ranked, blast radius; the pure engine and the `incidents` role.
//! - [`trainer`]: the growth loop (GATHER, VALIDATE, TRAIN, EVALUATE, PUBLISH) and the digest.
//!
//! Runtime:
//! - [`context`]: what every role is handed: bus, clock, metrics, shared settings.
//! - [`metrics`]: the Prometheus registry the roles report into.
//! - [`endpoint`]: `/metrics`, `/healthz`, `/readyz` and `proprio health`.
//! - [`logging`]: log set-up; repeated lines rate-limited.
//! - [`config`]: the layered configuration (default < file < environment < flags).
//! - [`units`]: durations and sizes as people write them.
//! - [`median`]: the one median of the crate.
//! - [`policy`]: the alert policy (risk, evidence window and count).
//!
//! Plumbing:
//! - [`bus`]: NATS: connect, streams/KV/object store, publish patterns, the feed.
//! - [`model_store`]: checkpoints in the object store, the current model's notice.
//! - [`alert`]: the diagnoser of known failure patterns, and mutes.
//! - [`contract`]: the wire contract: names, subjects, `Alert`, `Incident`, `Digest`, `ModelNotice`.
//!
//! Learning:
//! - [`model`]: the GPT, its training, native scoring and checkpoints (libtorch via tch).
//! - [`freshness`]: the three gates: fingerprint, TTL, decay.
//! - [`baseline`]: per-key robust loss baselines, and the per-kind calibration of
//!   the surprisal shipped with each model.
//! - [`tail`]: peaks-over-threshold tails: a statistic's rarity among normal events.
//! - [`rarity`]: an event template's own rarity at its surprise, a cap on the tail's score.
//! - [`signature`]: a known failure signature's rarity among normal events, a floor under it.
//! - [`curriculum`]: every event rendered as one line of text with special
//!   tokens; a pulse repeating its key's last one is nothing new.
//! - [`tokenizer`]: the special tokens of proto/tokens.txt.
//! - [`vocab`]: the model's vocabulary, learned at a cold start when configured (names and
//!   byte-pair merges over bytes), carried in the checkpoint.
//!
//! Ground:
//! - [`event`]: the wire event (proto/README.md), decoding and validation.
//! - [`registry`]: the service registry, what the OS *is*.
//! - [`sim`]: a simulated OS producing labelled telemetry of all five curricula.

pub mod alert;
pub mod baseline;
pub mod bus;
pub mod cli_incidents;
pub mod cli_ops;
pub mod config;
pub mod context;
pub mod contract;
pub mod curriculum;
pub mod decision_bench;
pub mod demo;
pub mod endpoint;
pub mod eval;
pub mod event;
pub mod freshness;
pub mod harvester;
pub mod import;
pub mod incident;
pub mod logging;
pub mod median;
pub mod metricbench;
pub mod metrics;
pub mod model;
pub mod model_store;
pub mod policy;
pub mod rarity;
pub mod registry;
pub mod run;
pub mod scorer;
pub mod signature;
pub mod silence;
pub mod sim;
pub mod startup;
pub mod tail;
pub mod tokenizer;
pub mod trainer;
pub mod units;
pub mod vocab;
