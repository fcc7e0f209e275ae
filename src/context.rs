//! The runtime context: what every role is handed instead of reaching for
//! process globals. Built once per `proprio run` (module `run`), or
//! by a test around its own bus, clock and metrics.
//!
//! Every role has the same shape ([`Role`]): built from a context and its
//! own settings, run until shutdown, and each message it handles goes
//! through the same three steps: decide (pure, unit-tested), effects
//! (publishes and look-ups), settle (ack, nak or term; see [`settle`]).

use crate::bus::Bus;
use crate::curriculum::RenderConfig;
use crate::endpoint::Readiness;
use crate::event::Limits;
use crate::freshness::{Clock, Gates, SystemClock};
use crate::metrics::Metrics;
use anyhow::Result;
use async_nats::jetstream::{self, AckKind};
use std::future::Future;
use std::sync::Arc;

/// The settings several roles must agree on, so each is given once.
#[derive(Debug, Clone)]
pub struct Shared {
    /// What the harvester dead-letters the scorer must refuse alike.
    pub limits: Limits,
    /// Their key files define the fingerprint epoch the harvester stamps
    /// and the trainer checks.
    pub gates: Gates,
    /// How the harvester renders documents; recorded in the trainer's
    /// checkpoints for the scorers.
    pub render: RenderConfig,
    /// When the scorer alerts; its level is also what the trainer counts an
    /// evaluated flux event as anomalous at.
    pub policy: crate::policy::Policy,
}

impl Default for Shared {
    fn default() -> Shared {
        Shared {
            limits: Limits::default(),
            gates: Gates::default(),
            render: RenderConfig::default(),
            policy: Default::default(),
        }
    }
}

/// What a role is handed. Cloning is cheap: every part is shared.
#[derive(Clone)]
pub struct Context {
    pub bus: Bus,
    /// "Now" for every decision that reads the time.
    pub clock: Arc<dyn Clock>,
    /// Where the roles record their metrics; what /metrics serves.
    pub metrics: Arc<Metrics>,
    /// What /readyz answers from.
    pub readiness: Arc<Readiness>,
    pub shared: Arc<Shared>,
}

impl Context {
    /// The system clock, fresh metrics, not ready.
    pub fn new(bus: Bus, shared: Shared) -> Context {
        Context {
            bus,
            clock: Arc::new(SystemClock),
            metrics: Arc::default(),
            readiness: Arc::default(),
            shared: Arc::new(shared),
        }
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Context {
        self.clock = clock;
        self
    }

    /// Records into, and answers readiness from, what an endpoint serves.
    pub fn served_by(mut self, metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Context {
        self.metrics = metrics;
        self.readiness = readiness;
        self
    }
}

/// A role: built with `new(&Context, settings)`, which registers its
/// counters in the context's metrics, then run until `shutdown` resolves.
pub trait Role: Send + Sized + 'static {
    fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<()>> + Send;
}

/// Settles a JetStream message. A failed ack is logged, not an error: the
/// server redelivers the message, which every role handles idempotently.
pub async fn settle(msg: &jetstream::Message, kind: AckKind) {
    if let Err(e) = msg.ack_with(kind).await {
        tracing::warn!(subject = %msg.subject, "ack failed (the message will be redelivered): {e}");
    }
}
