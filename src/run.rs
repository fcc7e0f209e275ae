//! `proprio run`: the roles in one process. Every role talks only to NATS,
//! so the same roles can as well run in many processes (`--roles scorer`).

use crate::bus::{Bus, BusConfig, SUBJECT_TICK_TRAIN};
use crate::cli_ops::{parse_duration, NatsArgs};
use crate::harvester::{Harvester, HarvesterConfig};
use crate::scorer::role::{Scorer, ScorerConfig};
use crate::silence::{SilenceConfig, SilenceWatch};
use crate::trainer::cycle::{Trainer, TrainerConfig};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Harvester,
    Scorer,
    Trainer,
    Silence,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Harvester, Role::Scorer, Role::Trainer, Role::Silence];

    pub fn parse(s: &str) -> Result<Role> {
        Ok(match s.trim() {
            "harvester" => Role::Harvester,
            "scorer" => Role::Scorer,
            "trainer" => Role::Trainer,
            "silence" => Role::Silence,
            other => bail!("unknown role {other:?} (harvester, scorer, trainer, silence)"),
        })
    }
}

fn parse_roles(s: &str) -> Result<Vec<Role>, String> {
    let mut out = Vec::new();
    for r in s.split(',').filter(|r| !r.trim().is_empty()) {
        let r = Role::parse(r).map_err(|e| e.to_string())?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        return Err("no role given".into());
    }
    Ok(out)
}

/// Run proprio's roles against a NATS server.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Roles to run, comma-separated.
    // `std::vec::Vec`: one value (a comma-separated list) parsed whole,
    // not clap's repeated-flag Vec.
    #[arg(long, default_value = "harvester,scorer,trainer,silence", value_parser = parse_roles)]
    pub roles: std::vec::Vec<Role>,
    /// Publish a training tick this often (e.g. 6h); without it, any scheduler may publish `proprio.tick.train`.
    #[arg(long, value_parser = parse_duration)]
    pub train_every: Option<Duration>,
    /// Telemetry subject root.
    #[arg(long, default_value = "os", env = "PROPRIO_ROOT")]
    pub root: String,
    /// Score at or above which an alert is published.
    #[arg(long, default_value_t = 3.0)]
    pub threshold: f32,
    /// Per source and kind, at most one alert per this much event time.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub cooldown: Duration,
    /// Back-pressure: events older than this when the scorer takes them are
    /// acknowledged unscored and counted (proprio_scorer_shed_total); 0 = never.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub max_lag: Duration,
    /// The service registry (axiomatic and topology curricula; part of the fingerprint).
    #[arg(long, default_value = "deploy/services.yaml")]
    pub registry: PathBuf,
    /// Steps of a cold-start training cycle.
    #[arg(long, default_value_t = 500)]
    pub cold_steps: usize,
    /// Steps of an incremental training cycle.
    #[arg(long, default_value_t = 200)]
    pub incremental_steps: usize,
    /// A silent source is alerted once quiet for this many times its usual interval.
    #[arg(long, default_value_t = 3.0)]
    pub silence_multiple: f64,
    /// Threads for the model.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Largest telemetry payload accepted (bytes, or e.g. 64KiB); larger
    /// ones are dead-lettered as too_large.
    #[arg(long, default_value = "64KiB", value_parser = crate::config::parse_size)]
    pub max_payload: usize,
    /// Least time between two digests republished because alerts arrived.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub digest_debounce: Duration,
    /// Model shape, training settings, rendering, key files: from the
    /// configuration file or the environment only.
    #[arg(skip)]
    pub learning: crate::config::Learning,
}

/// Handles to the roles started by [`start`], for the demo and tests.
pub struct Running {
    pub scorer: Option<Arc<crate::scorer::role::ScorerStats>>,
    pub harvester: Option<Arc<crate::harvester::HarvestStats>>,
    pub trainer: Option<Arc<crate::trainer::cycle::TrainerStats>>,
    pub silence: Option<Arc<crate::silence::SilenceStats>>,
    bus: Bus,
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
        crate::metrics::health().set_not_ready();
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
                crate::metrics::health().set_not_ready();
                let _ = self.stop.send(true);
                return Err(crate::bus::permission_error(&m));
            }
        };
        crate::metrics::health().set_not_ready();
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
pub async fn start(args: &RunArgs) -> Result<Running> {
    crate::model::set_libtorch_threads(args.threads);
    let bus = Bus::connect(&BusConfig {
        root: args.root.clone(),
        ..BusConfig::with_url(args.nats.nats.clone())
    })
    .await?;
    bus.guarded(bus.ensure()).await?;
    let gates = args.learning.gates(&args.registry);
    // Harvester and scorer must refuse the same payloads.
    let limits = crate::event::Limits {
        max_payload: args.max_payload,
        ..Default::default()
    };
    let (stop, rx) = watch::channel(false);
    let mut r = Running {
        scorer: None,
        harvester: None,
        trainer: None,
        silence: None,
        bus: bus.clone(),
        stop,
        tasks: Vec::new(),
    };
    for role in &args.roles {
        let bus = bus.clone();
        let shutdown = stopped(&rx);
        let task = match role {
            Role::Harvester => {
                let h = Harvester::new(
                    bus,
                    HarvesterConfig {
                        gates: gates.clone(),
                        limits: limits.clone(),
                        render: args.learning.render.clone(),
                        ..Default::default()
                    },
                );
                r.harvester = Some(h.stats());
                tokio::spawn(h.run(shutdown))
            }
            Role::Scorer => {
                let s = Scorer::new(
                    bus,
                    ScorerConfig {
                        limits: limits.clone(),
                        threshold: args.threshold,
                        cooldown_ms: args.cooldown.as_millis() as i64,
                        max_lag: (!args.max_lag.is_zero()).then_some(args.max_lag),
                        threads: args.threads.max(1),
                        ..Default::default()
                    },
                )
                .await;
                let s = bus_guard(&r.bus, s).await?;
                r.scorer = Some(s.stats());
                tokio::spawn(s.run(shutdown))
            }
            Role::Trainer => {
                let t = Trainer::new(
                    bus.clone(),
                    TrainerConfig {
                        registry: args.registry.clone(),
                        gates: gates.clone(),
                        cold_steps: args.cold_steps,
                        incremental_steps: args.incremental_steps,
                        batch: args.learning.batch_size,
                        lr: args.learning.lr,
                        weight_decay: args.learning.weight_decay,
                        shape: args.learning.shape,
                        render: args.learning.render.clone(),
                        threshold: args.threshold,
                        digest_debounce: args.digest_debounce,
                        threads: args.threads.max(1),
                        ..Default::default()
                    },
                );
                r.trainer = Some(t.stats());
                if let Some(every) = args.train_every {
                    let client = bus.client().clone();
                    let stop = stopped(&rx);
                    tokio::spawn(async move {
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
                    });
                }
                tokio::spawn(t.run(shutdown))
            }
            Role::Silence => {
                let w = SilenceWatch::new(
                    bus,
                    SilenceConfig {
                        multiple: args.silence_multiple,
                        ..Default::default()
                    },
                    Arc::new(crate::freshness::SystemClock),
                );
                r.silence = Some(w.stats());
                tokio::spawn(w.run(shutdown))
            }
        };
        r.tasks.push((*role, task));
    }
    crate::metrics::global().watch(crate::metrics::StatsSources {
        scorer: r.scorer.clone(),
        harvester: r.harvester.clone(),
        trainer: r.trainer.clone(),
        silence: r.silence.clone(),
    });
    tokio::spawn(crate::metrics::poll_consumers(
        r.bus.clone(),
        Duration::from_secs(5),
        stopped(&rx),
    ));
    crate::metrics::health().set_ready(r.bus.client().clone());
    tracing::info!(roles = ?args.roles, "proprio running");
    Ok(r)
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
/// /healthz answers (and /readyz says why not) while proprio starts.
pub async fn run_with_metrics(
    args: RunArgs,
    metrics_addr: Option<std::net::SocketAddr>,
) -> Result<()> {
    let _server = match metrics_addr {
        Some(a) => Some(crate::metrics::serve(a).await?),
        None => None,
    };
    run(args).await
}

/// `proprio run` until Ctrl-C or SIGTERM.
pub async fn run(args: RunArgs) -> Result<()> {
    let running = start(&args).await?;
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
