//! proprio: proprioception for a microservice system.
//!
//! A tiny GPT is trained continuously on the system's own telemetry; the loss
//! it assigns to each new event is that event's anomaly score. The map, in the
//! order data flows (see DESIGN.md):
//!
//! - [`event`]: the wire event (proto/README.md), decoding and validation.
//! - [`registry`]: the service registry, what the OS *is*.
//! - [`sim`]: a simulated OS producing labelled telemetry of all five curricula.
//! - [`curriculum`]: every event rendered as one line of text with special tokens.
//! - [`tokenizer`]: bytes plus the special tokens of proto/tokens.txt.
//! - [`model`]: the GPT, its training, scoring and checkpoints (libtorch via tch).
//! - [`freshness`]: the three gates: fingerprint, TTL, decay.
//! - [`baseline`]: per-key robust baselines that turn a loss into a score.

pub mod alert;
pub mod baseline;
pub mod bus;
pub mod cli_ops;
pub mod config;
pub mod contract;
pub mod curriculum;
pub mod context;
pub mod demo;
pub mod endpoint;
pub mod eval;
pub mod event;
pub mod freshness;
pub mod harvester;
pub mod import;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod model_store;
pub mod registry;
pub mod run;
pub mod scorer;
pub mod silence;
pub mod sim;
pub mod startup;
pub mod tokenizer;
pub mod trainer;
pub mod units;
