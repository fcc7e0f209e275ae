//! `proprio run`: the roles in one process. Every role talks only to NATS,
//! so the same roles can as well run in many processes (`--roles scorer`).

use crate::bus::Bus;
use crate::config::{Role, RunSettings};
use crate::context::{Context, Role as _, Shared};
use crate::contract::SUBJECT_TICK_TRAIN;
use crate::endpoint::Readiness;
use crate::harvester::{Harvester, HarvesterConfig};
use crate::incident::{Incidents, IncidentsConfig};
use crate::metrics::Metrics;
use crate::scorer::role::{Scorer, ScorerConfig};
use crate::silence::{SilenceConfig, SilenceWatch};
use crate::trainer::cycle::{Trainer, TrainerConfig};
use anyhow::{bail, Result};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Handles to the roles started by [`start`], for the demo and tests.
pub struct Running {
    pub scorer: Option<Arc<crate::scorer::role::ScorerStats>>,
    pub harvester: Option<Arc<crate::harvester::HarvestStats>>,
    pub trainer: Option<Arc<crate::trainer::cycle::TrainerStats>>,
    pub silence: Option<Arc<crate::silence::SilenceStats>>,
    pub incidents: Option<Arc<crate::incident::IncidentStats>>,
    bus: Bus,
    readiness: Arc<Readiness>,
    stop: watch::Sender<bool>,
    tasks: Vec<(Role, tokio::task::JoinHandle<Result<()>>)>,
}

impl Running {
    /// The connection the roles share.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// Stops every role and waits for them.
    pub async fn stop(self) -> Result<()> {
        self.readiness.set_not_ready();
        let _ = self.stop.send(true);
        for (role, t) in self.tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(?role, "role failed: {e:#}"),
                Err(e) => tracing::error!(?role, "role panicked: {e}"),
            }
        }
        Ok(())
    }

    /// Waits until a role ends on its own (an error), or `shutdown` resolves.
    pub async fn wait(mut self, shutdown: impl std::future::Future<Output = ()>) -> Result<()> {
        let tasks = std::mem::take(&mut self.tasks);
        let (roles, handles): (Vec<Role>, Vec<_>) = tasks.into_iter().unzip();
        tokio::pin!(shutdown);
        let bus = self.bus.clone();
        let first = tokio::select! {
            _ = &mut shutdown => None,
            (r, i, rest) = futures::future::select_all(handles) => Some((r, roles[i], rest)),
            // A refused permission is a misconfiguration no retry will fix.
            m = bus.denied() => {
                self.readiness.set_not_ready();
                let _ = self.stop.send(true);
                return Err(crate::bus::permission_error(&m));
            }
        };
        self.readiness.set_not_ready();
        let _ = self.stop.send(true);
        if let Some((r, role, rest)) = first {
            for t in rest {
                let _ = t.await;
            }
            match r {
                Ok(Ok(())) => bail!("role {role:?} stopped"),
                Ok(Err(e)) => return Err(e.context(format!("role {role:?} failed"))),
                Err(e) => bail!("role {role:?} panicked: {e}"),
            }
        }
        Ok(())
    }
}

fn stopped(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await.map(|_| ());
    }
}

/// Connects, ensures the streams and buckets, and starts the roles.
pub async fn start(args: &RunSettings) -> Result<Running> {
    start_served(args, Arc::default(), Arc::default()).await
}

/// [`start`], recording into `metrics` and answering `readiness` for an
/// endpoint that serves them.
async fn start_served(
    args: &RunSettings,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> Result<Running> {
    crate::model::set_libtorch_threads(args.run.threads);
    let bus = Bus::connect(&args.bus).await?;
    bus.guarded(bus.ensure()).await?;
    let shared = Shared {
        // Harvester and scorer must refuse the same payloads.
        limits: crate::event::Limits {
            max_payload: args.run.max_payload,
            ..Default::default()
        },
        gates: args.learning.gates(&args.run.registry),
        render: args.learning.render.clone(),
        policy: args.scorer.policy(),
    };
    let ctx = Context::new(bus.clone(), shared).served_by(metrics.clone(), readiness.clone());
    let (stop, rx) = watch::channel(false);
    let mut r = Running {
        scorer: None,
        harvester: None,
        trainer: None,
        silence: None,
        incidents: None,
        bus: bus.clone(),
        readiness,
        stop,
        tasks: Vec::new(),
    };
    for role in &args.run.roles {
        let shutdown = stopped(&rx);
        let task = match role {
            Role::Harvester => {
                let cfg = HarvesterConfig {
                    sampling: args.learning.sampling,
                    ..HarvesterConfig::default()
                };
                let h = Harvester::new(&ctx, cfg);
                r.harvester = Some(h.stats());
                tokio::spawn(h.run(shutdown))
            }
            Role::Scorer => {
                let cfg = ScorerConfig {
                    cooldown_ms: args.scorer.cooldown.as_millis() as i64,
                    max_lag: args.scorer.max_lag,
                    partitions: args.scorer.partitions,
                    threads: args.run.threads.max(1),
                    ..Default::default()
                };
                let s = bus_guard(&r.bus, Scorer::new(&ctx, cfg).await).await?;
                r.scorer = Some(s.stats());
                tokio::spawn(s.run(shutdown))
            }
            Role::Trainer => {
                let t = Trainer::new(
                    &ctx,
                    TrainerConfig {
                        registry: args.run.registry.clone(),
                        cold_steps: args.trainer.cold_steps,
                        incremental_steps: args.trainer.incremental_steps,
                        batch: args.learning.batch_size,
                        lr: args.learning.lr,
                        weight_decay: args.learning.weight_decay,
                        shape: args.learning.shape,
                        vocab: args.learning.vocab,
                        digest_debounce: args.trainer.digest_debounce,
                        epoch_wait: crate::trainer::epoch::EpochWait {
                            min_docs: args.trainer.epoch_min_docs,
                            min_age: args.trainer.epoch_min_age,
                        },
                        epoch_check: args.trainer.epoch_check,
                        threads: args.run.threads.max(1),
                        ..Default::default()
                    },
                );
                r.trainer = Some(t.stats());
                if let Some(every) = args.trainer.every {
                    tokio::spawn(tick_train(bus.client().clone(), every, stopped(&rx)));
                }
                tokio::spawn(t.run(shutdown))
            }
            Role::Silence => {
                let cfg = SilenceConfig {
                    multiple: args.silence.multiple,
                    ..Default::default()
                }
                .at_speed(args.speed);
                let w = SilenceWatch::new(&ctx, cfg);
                r.silence = Some(w.stats());
                tokio::spawn(w.run(shutdown))
            }
            Role::Incidents => {
                let cfg = IncidentsConfig {
                    engine: args.incidents.engine(),
                    registry: Some(args.run.registry.clone()),
                    new_edges: args
                        .incidents
                        .new_edges
                        .then_some(args.incidents.edge_warmup),
                    ..Default::default()
                };
                let i = Incidents::new(&ctx, cfg);
                r.incidents = Some(i.stats());
                tokio::spawn(i.run(shutdown))
            }
        };
        r.tasks.push((*role, task));
    }
    tokio::spawn(crate::metrics::poll_consumers(
        r.bus.clone(),
        metrics,
        Duration::from_secs(5),
        stopped(&rx),
    ));
    r.readiness.set_ready(r.bus.client().clone());
    tracing::info!(roles = ?args.run.roles, "proprio running");
    Ok(r)
}

/// Publishes a training tick every `every` until `stop`.
async fn tick_train(
    client: async_nats::Client,
    every: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut iv = tokio::time::interval(every);
    iv.tick().await;
    loop {
        tokio::select! {
            _ = iv.tick() => {
                if let Err(e) = client.publish(SUBJECT_TICK_TRAIN, "{}".into()).await {
                    tracing::warn!("training tick not published: {e}");
                }
            }
            _ = &mut stop => break,
        }
    }
}

/// A start-up result, replaced by the server's permission violation when
/// there was one (the refused request itself would only have timed out).
async fn bus_guard<T>(bus: &Bus, r: Result<T>) -> Result<T> {
    match (r, bus.permission_denied()) {
        (Err(_), Some(m)) => Err(crate::bus::permission_error(&m)),
        (r, _) => r,
    }
}

/// `proprio run` with the HTTP endpoint (/metrics, /healthz, /readyz) on
/// `metrics_addr` when given. The endpoint is up before NATS is reached, so
/// /healthz answers (and /readyz says why not) while proprio starts. Runs
/// until Ctrl-C or SIGTERM.
pub async fn run_with_metrics(
    args: RunSettings,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<()> {
    let (metrics, readiness) = (Arc::<Metrics>::default(), Arc::<Readiness>::default());
    let _server = match metrics_addr {
        Some(a) => Some(crate::endpoint::serve(a, metrics.clone(), readiness.clone()).await?),
        None => None,
    };
    let running = start_served(&args, metrics, readiness).await?;
    running
        .wait(async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        })
        .await
}
