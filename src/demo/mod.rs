//! `proprio demo` (what `make demo` runs): the whole living loop on one
//! machine. A nats-server (NATS_URL if set, else one started from the
//! project's tools folder), every role, the simulated OS published live at
//! high speed: a normal warm-up, the first training cycle, then a run with
//! every fault injected. Alerts are printed as they happen, one line each;
//! the summary says which faults were caught and how fast, how many alerts
//! no fault explains ([`tally`]: same source, inside the fault's window),
//! and prints the digest. Incidents (`proprio.incident.>`) are printed as
//! they open and resolve and counted the same way. Library logs stay quiet
//! unless `-v`.

mod incidents;
mod tally;

use crate::bus::{Bus, BusConfig};
use crate::config::{IncidentsSection, RunSection, RunSettings, TrainerSection};
use crate::contract::alert::{Alert, AlertReason};
use crate::contract::incident::Incident;
use crate::contract::{KEY_DIGEST, SUBJECT_ALERTS_ALL, SUBJECT_TICK_TRAIN};
use crate::scorer::span::readable;
use crate::sim::{Fault, FaultSpec, SimConfig};
use anyhow::{bail, Context, Result};
use futures::StreamExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally::{tally, Sighting, GRACE_MS};

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// NATS server to use; without it (and without NATS_URL) the demo starts its own.
    #[arg(long, env = "NATS_URL")]
    pub nats: Option<String>,
    /// nats-server binary for the demo's own server.
    #[arg(long, default_value = ".tools/bin/nats-server")]
    pub nats_server: PathBuf,
    /// The service registry.
    #[arg(long, default_value = "deploy/services.yaml")]
    pub registry: PathBuf,
    /// Simulated minutes of normal telemetry before the first training cycle.
    #[arg(long, default_value_t = 30.0)]
    pub warmup_minutes: f64,
    /// Simulated minutes of telemetry with every fault injected.
    #[arg(long, default_value_t = 90.0)]
    pub fault_minutes: f64,
    /// Simulated time runs this many times faster than real time.
    #[arg(long, default_value_t = 90.0)]
    pub speed: f64,
    /// Keep only this many services (all 203 by default).
    #[arg(long)]
    pub services: Option<usize>,
    /// Training steps of the first (cold) cycle.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Show the roles' and libraries' logs (info and up); without it only
    /// errors, so the demo's own lines stay readable. RUST_LOG still wins.
    #[arg(short, long)]
    pub verbose: bool,
}

/// The demo's log filter without `-v`: its own lines are the output (the
/// roles' warnings repeat what it prints: silences, for one), errors only.
pub const QUIET_LOG: &str = "error";
/// With `-v`: the roles at info, the NATS client only when it complains.
pub const VERBOSE_LOG: &str = "info,async_nats=warn";

/// A nats-server the demo started, stopped on drop.
struct OwnServer {
    child: Child,
    _store: tempdir::Dir,
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

mod tempdir {
    /// A temporary directory removed on drop (the demo's JetStream store).
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn start_server(bin: &std::path::Path) -> Result<(OwnServer, String)> {
    if !bin.exists() {
        bail!(
            "{} not found: run `make setup` (or set NATS_URL)",
            bin.display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let store = std::env::temp_dir().join(format!("proprio-demo-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&store)?;
    let child = Command::new(bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = OwnServer {
        child,
        _store: tempdir::Dir(store),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("nats-server did not start listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((server, format!("nats://127.0.0.1:{port}")))
}

fn now_ms() -> i64 {
    crate::freshness::Clock::now_ms(&crate::freshness::SystemClock)
}

/// Simulated telemetry starting now; `running`: the OS is already up (a
/// phase continuing the one before), not booting.
fn sim(
    args: &DemoArgs,
    minutes: f64,
    faults: FaultSpec,
    seed: u64,
    running: bool,
) -> Result<crate::sim::Simulation> {
    let mut cfg = SimConfig::new(crate::sim::load_registry(Some(&args.registry))?);
    cfg.hours = minutes / 60.0;
    cfg.seed = seed;
    cfg.faults = faults;
    cfg.services = args.services;
    cfg.start_ms = now_ms();
    cfg.running = running;
    crate::sim::generate(&cfg)
}

/// Runs the demo with `defaults` (the configuration file, the
/// environment, the flags) under the demo's own choices: its server, its
/// registry, its training steps, its pace.
pub async fn run(args: DemoArgs, defaults: RunSettings) -> Result<()> {
    let t0 = Instant::now();
    let (_server, url) = match &args.nats {
        Some(u) => (None, u.clone()),
        None => {
            let (s, u) = start_server(&args.nats_server)?;
            (Some(s), u)
        }
    };
    println!("== proprio demo on {url}");
    let running = crate::run::start(&RunSettings {
        bus: BusConfig::with_url(url.clone()),
        run: RunSection {
            registry: args.registry.clone(),
            ..defaults.run
        },
        trainer: TrainerSection {
            cold_steps: args.steps,
            incremental_steps: args.steps / 2,
            digest_debounce: Duration::from_secs(2),
            ..defaults.trainer
        },
        // The silence watch judges the simulated OS's rhythms, which run
        // `speed` times faster than the wall clock it reads.
        speed: args.speed,
        // Each phase's simulated time starts at the wall clock's now, so
        // the live phase's event time overlaps the warm-up's: the history
        // the new-dependency watch learns the graph from is the warm-up
        // (the simulated graphs publish every edge at boot).
        incidents: IncidentsSection {
            edge_warmup: Duration::from_secs_f64(args.warmup_minutes.max(1.0) * 60.0),
            ..defaults.incidents
        },
        ..defaults
    })
    .await?;
    let bus = Bus::connect(&BusConfig::with_url(url.clone())).await?;

    // Alerts, printed as they happen.
    let alerts: Arc<Mutex<Vec<(Alert, Instant)>>> = Arc::default();
    let clock: Arc<Mutex<Option<LiveClock>>> = Arc::default();
    let mut sub = bus.client().subscribe(SUBJECT_ALERTS_ALL).await?;
    let (seen, live_clock) = (alerts.clone(), clock.clone());
    let printer = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let Ok(a) = Alert::decode(&m.payload) else {
                continue;
            };
            let at = Instant::now();
            let c = live_clock.lock().ok().and_then(|c| *c);
            println!("{}", alert_line(&a, at, c.as_ref()));
            if let Ok(mut v) = seen.lock() {
                v.push((a, at));
            }
        }
    });

    // Incidents, printed as they open and resolve: per id its latest state
    // and when it was first heard of.
    let incidents: Arc<Mutex<Vec<(Incident, Instant)>>> = Arc::default();
    let mut isub = bus.client().subscribe(incidents::SUBJECT).await?;
    let (iseen, iclock) = (incidents.clone(), clock.clone());
    let iprinter = tokio::spawn(async move {
        while let Some(m) = isub.next().await {
            let Ok(i) = Incident::decode(&m.payload) else {
                continue;
            };
            let at = Instant::now();
            let Ok(mut v) = iseen.lock() else { continue };
            let known = v.iter().position(|(k, _)| k.id == i.id);
            let news = match known {
                None => true,
                Some(k) => v[k].0.state != i.state,
            };
            if news {
                let c = iclock.lock().ok().and_then(|c| *c);
                let when = match c {
                    Some(c) => format!("+{:.1}m", c.sim_offset_min(at)),
                    None => "warm-up".into(),
                };
                println!(
                    "  {when:>7} INCIDENT {} {}",
                    shorten(&i.id, 16),
                    incidents::describe(&i)
                );
            }
            match known {
                Some(k) => v[k].0 = i,
                None => v.push((i, at)),
            }
        }
    });

    // 1. Warm-up: normal telemetry, then the first training cycle.
    let warm = sim(
        &args,
        args.warmup_minutes,
        FaultSpec::None,
        args.seed,
        false,
    )?;
    println!(
        "== warm-up: {:.0} simulated minutes of normal telemetry at {}x",
        args.warmup_minutes, args.speed
    );
    let n_warm = crate::sim::publish(warm, &url, "os", args.speed, None).await?;
    let h = running.harvester.clone().context("harvester")?;
    wait(Duration::from_secs(60), || {
        h.harvested.load(Ordering::Relaxed)
            + h.collapsed.load(Ordering::Relaxed)
            + h.sampled_out.load(Ordering::Relaxed)
            >= n_warm
    })
    .await;
    println!("== training the first model ({} steps)", args.steps);
    // Telemetry keeps flowing while the model trains, as it would in
    // production (and so the silence watch hears every source).
    let filler = sim(&args, 24.0 * 60.0, FaultSpec::None, args.seed + 2, true)?;
    let t_train = Instant::now();
    bus.client()
        .publish(SUBJECT_TICK_TRAIN, "{}".into())
        .await?;
    let s = running.scorer.clone().context("scorer")?;
    let tr = running.trainer.clone().context("trainer")?;
    let trained = wait(Duration::from_secs(240), || {
        s.swaps.load(Ordering::Relaxed) >= 1 || tr.failed.load(Ordering::Relaxed) > 0
    });
    tokio::select! {
        _ = trained => {}
        r = crate::sim::publish(filler, &url, "os", args.speed, None) => { r?; }
    }
    if s.swaps.load(Ordering::Relaxed) == 0 {
        bail!("the first training cycle did not produce a model (run with -v to see the log)");
    }
    let model = crate::model_store::current(&bus).await?;
    if let Some(m) = &model {
        println!(
            "   model {} trained in {:.1}s (validation loss {:.3}); scorers switched",
            m.version,
            t_train.elapsed().as_secs_f64(),
            m.val_loss
        );
    }

    // 2. Faults: every kind, injected into live telemetry.
    let faulty = sim(
        &args,
        args.fault_minutes,
        FaultSpec::All,
        args.seed + 1,
        true,
    )?;
    let faults: Vec<Fault> = faulty.faults().to_vec();
    let fault_t0 = faulty.start_ms();
    println!(
        "== live: {:.0} simulated minutes at {}x with {} faults injected",
        args.fault_minutes,
        args.speed,
        faults.len()
    );
    for f in &faults {
        println!(
            "   {:<18} at +{:>5.1} min on {}",
            f.id,
            (f.start_ms - fault_t0) as f64 / 60_000.0,
            shorten(&f.sources.join(","), 60)
        );
    }
    let wall_start = Instant::now();
    let live = LiveClock {
        t0_ms: fault_t0,
        wall: wall_start,
        speed: args.speed,
    };
    if let Ok(mut c) = clock.lock() {
        *c = Some(live);
    }
    // Every event the scorer has read, scored or left out (a pulse repeating
    // its key's last one is not scored, as the curriculum leaves it out).
    let read_before = s.received();
    let n_live = crate::sim::publish(faulty, &url, "os", args.speed, None).await?;
    // Once publishing stops every source falls silent: that is the demo's
    // end, not a fault, so it is muted as an operator mutes a maintenance
    // window (and silences after this are not counted either).
    crate::alert::mute::set(&bus, crate::silence::ALL_SOURCES, now_ms() + 3_600_000).await?;
    let wall_end = Instant::now();
    // Let scoring drain, and a silent death be noticed.
    let target = read_before + n_live;
    wait(Duration::from_secs(60), || {
        s.received() >= target * 99 / 100
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let digest = bus
        .get(KEY_DIGEST)
        .await?
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    printer.abort();
    iprinter.abort();

    // 3. Summary.
    let alerts = alerts.lock().map(|v| v.clone()).unwrap_or_default();
    println!("\n== summary ({:.0}s)", t0.elapsed().as_secs_f64());
    println!(
        "   events published {}, scored {}, alerts {} ({} silence)",
        n_warm + n_live,
        s.scored.load(Ordering::Relaxed),
        alerts.len(),
        alerts
            .iter()
            .filter(|(a, _)| a.reason == AlertReason::Silence)
            .count()
    );
    // Only the live run counts (alerts before it saw no fault; silences
    // after publishing stopped are the demo's end, not faults).
    let live_alerts: Vec<&(Alert, Instant)> = alerts
        .iter()
        .filter(|(a, at)| {
            *at >= wall_start && (a.reason == AlertReason::Surprise || *at <= wall_end)
        })
        .collect();
    let seen: Vec<Sighting> = live_alerts
        .iter()
        .map(|(a, at)| Sighting {
            ts: live.sim_ts(a, *at),
            sources: vec![a.source.clone()],
        })
        .collect();
    let t = tally(&seen, &faults, GRACE_MS);
    for (f, first) in faults.iter().zip(&t.first) {
        match first {
            Some(j) => {
                let (a, _) = live_alerts[*j];
                println!(
                    "   caught  {:<18} in {:>6.0}s simulated, by {} on {} ({})",
                    f.id,
                    (seen[*j].ts - f.start_ms).max(0) as f64 / 1000.0,
                    a.reason.as_str(),
                    a.source,
                    what(a)
                );
            }
            None => println!("   missed  {}", f.id),
        }
    }
    let sim_hours = args.fault_minutes / 60.0;
    println!(
        "   faults caught {}/{}; live alerts {}, explained by a fault {}, false {} ({:.1} per simulated hour)",
        t.caught(),
        faults.len(),
        seen.len(),
        seen.len() - t.false_count(),
        t.false_count(),
        t.false_count() as f64 / sim_hours
    );
    println!(
        "   (an alert is explained only on one of a fault's sources, between its start and {}s after its end)",
        GRACE_MS / 1000
    );
    let incidents = incidents.lock().map(|v| v.clone()).unwrap_or_default();
    summarize_incidents(
        &incidents,
        &live_alerts,
        &live,
        (wall_start, wall_end),
        &faults,
    );
    println!("\n{digest}");
    running.stop().await?;
    Ok(())
}

/// Incidents against the faults, by the alerts' rule; an incident's time is
/// its first alert's as the demo saw it (a silence: when it was noticed).
/// Like the alerts, only the live run counts: an incident opened once
/// publishing stopped by no live alert is the demo's end (everything falls
/// silent), not a fault.
fn summarize_incidents(
    incidents: &[(Incident, Instant)],
    live_alerts: &[&(Alert, Instant)],
    live: &LiveClock,
    (wall_start, wall_end): (Instant, Instant),
    faults: &[Fault],
) {
    let timed: Vec<(Incident, i64)> = incidents
        .iter()
        .filter(|(_, at)| *at >= wall_start)
        .filter_map(|(i, at)| {
            let first = live_alerts
                .iter()
                .find(|(a, _)| a.ts == i.opened_ts && i.sources.contains(&a.source));
            if first.is_none() && *at > wall_end {
                return None;
            }
            let ts = first.map_or(i.opened_ts, |(a, at)| live.sim_ts(a, *at));
            Some((i.clone(), ts))
        })
        .collect();
    if timed.is_empty() {
        println!("   incidents: none received on {}", incidents::SUBJECT);
        return;
    }
    let (t, root_hit) = incidents::judge(&timed, faults, GRACE_MS);
    for ((f, first), hit) in faults.iter().zip(&t.first).zip(&root_hit) {
        if let (Some(j), Some(hit)) = (first, hit) {
            let (i, ts) = &timed[*j];
            println!(
                "   incident {:<16} for {:<18} in {:>6.0}s simulated, root cause {} ({})",
                shorten(&i.id, 16),
                f.id,
                (ts - f.start_ms).max(0) as f64 / 1000.0,
                i.root().map_or("none", |r| r.source.as_str()),
                if *hit { "right" } else { "wrong" }
            );
        }
    }
    println!(
        "   incidents {}: faults caught {}/{}, root cause right for {} of them, false incidents {}",
        timed.len(),
        t.caught(),
        faults.len(),
        root_hit.iter().filter(|h| **h == Some(true)).count(),
        t.false_count()
    );
}

/// The live run's clock: simulated time starts at `t0_ms` when the wall
/// clock is at `wall` and runs `speed` times faster.
#[derive(Debug, Clone, Copy)]
struct LiveClock {
    t0_ms: i64,
    wall: Instant,
    speed: f64,
}

impl LiveClock {
    /// Simulated minutes into the live run at wall time `at`.
    fn sim_offset_min(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.wall).as_secs_f64() * self.speed / 60.0
    }

    /// An alert's time in simulated ms: a surprise carries its event's
    /// time; a silence is noticed on the wall clock, at `at`.
    fn sim_ts(&self, a: &Alert, at: Instant) -> i64 {
        match a.reason {
            AlertReason::Surprise | AlertReason::Topology => a.ts,
            AlertReason::Silence => {
                let wall_ms = if at >= self.wall {
                    at.duration_since(self.wall).as_secs_f64() * 1000.0
                } else {
                    -(self.wall.duration_since(at).as_secs_f64() * 1000.0)
                };
                self.t0_ms + (wall_ms * self.speed) as i64
            }
        }
    }
}

/// What an alert says, for a person: its diagnosis, else the field that
/// surprised the model.
fn what(a: &Alert) -> String {
    match (&a.diagnosis, a.reason) {
        (Some(d), _) => d.clone(),
        (None, AlertReason::Silence) => "fell silent".into(),
        (None, AlertReason::Surprise | AlertReason::Topology) => {
            shorten(&readable(&a.span.text), 50)
        }
    }
}

/// One alert, one line: when (simulated minutes into the live run, or the
/// warm-up), source, kind, score and what it says.
fn alert_line(a: &Alert, at: Instant, clock: Option<&LiveClock>) -> String {
    let when = match clock {
        Some(c) => format!("+{:.1}m", (c.sim_ts(a, at) - c.t0_ms) as f64 / 60_000.0),
        None => "warm-up".into(),
    };
    format!(
        "  {when:>7} ALERT {:<22} {:<9} z {:>6.1}  {}",
        shorten(&a.source, 22),
        a.kind.as_str(),
        a.score,
        what(a)
    )
}

async fn wait(limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn shorten(s: &str, n: usize) -> String {
    let s: String = s.chars().filter(|c| !c.is_control()).collect();
    if s.chars().count() <= n {
        s
    } else {
        format!("{}...", s.chars().take(n).collect::<String>())
    }
}
