//! The simulated OS: a deterministic generator of an AitherOS-like system's
//! telemetry (all five curricula, six kinds of events) with labelled faults,
//! for development, tests, the demo and the evaluation.
//!
//! One generator ([`Simulation`], an iterator of [`Event`]s in time order)
//! feeds both the file mode and the live mode, so what a test reads from a
//! file is exactly what a scorer would have heard on the bus.
//!
//! ```no_run
//! use proprio::sim::{default_registry, generate, FaultSpec, SimConfig};
//! let mut cfg = SimConfig::new(default_registry());
//! cfg.hours = 2.0;
//! cfg.faults = FaultSpec::All;
//! let sim = generate(&cfg).unwrap();
//! let faults = sim.faults().to_vec();
//! let events: Vec<_> = sim.collect();
//! # let _ = (faults, events);
//! ```

mod engine;
mod fault;
mod graphs;
mod live;
mod profile;
mod registry_gen;
mod rng;
mod service;
mod text;

pub use engine::{generate, SimConfig, Simulation, DEFAULT_START_MS};
pub use fault::{explains, Fault, FaultKind, FaultSpec};
pub use graphs::GRAPHS;
pub use live::publish;
pub use registry_gen::{check_acyclic, check_layered, default_registry, layer_name, subset};
pub use rng::Rng;

use crate::event::{Event, Kind};
use crate::registry::Registry;
use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Where the registry lives in the repository.
pub const REGISTRY_PATH: &str = "deploy/services.yaml";

/// Arguments of `proprio simulate`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Write the events to FILE as JSON lines (labels included), with
    /// FILE.faults.json (the injected faults), FILE.registry.yaml (the
    /// registry the run starts with) and, when an architecture change is
    /// injected, FILE.registry-after.yaml.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Simulated duration in hours (fractions allowed, e.g. 0.1).
    #[arg(long, default_value_t = 1.0, value_name = "H")]
    pub hours: f64,

    /// Seed: the same arguments and seed give byte-identical output.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,

    /// Faults to inject: all, none, or a comma-separated list of kinds
    /// (latency_spike, oom_death, oom_cascade, port_conflict, localhost_trap,
    /// crash_loop, vram_pressure, startup_order, new_dependency, arch_change).
    /// They are spread over the run after its first 10%.
    #[arg(long, default_value = "all", value_name = "all|none|LIST")]
    pub faults: FaultSpec,

    /// Keep only a dependency-closed subset of at most N services (small, fast runs).
    #[arg(long, value_name = "N")]
    pub services: Option<usize>,

    /// Unix ms of the first simulated instant. Default: 2026-01-01T00:00Z when
    /// writing a file (reproducible), the current time when publishing live
    /// (so receivers' clock-skew checks accept the events).
    #[arg(long, value_name = "T")]
    pub start_ms: Option<i64>,

    /// Registry file [default: deploy/services.yaml, or the built-in copy of it
    /// when that file is not in the current directory].
    #[arg(long, value_name = "PATH")]
    pub registry: Option<PathBuf>,

    /// Write the generated default registry (what deploy/services.yaml holds) to PATH and exit.
    #[arg(long, value_name = "PATH")]
    pub write_registry: Option<PathBuf>,

    /// Publish live to this NATS server (MessagePack on the telemetry
    /// subjects). Without a URL: $NATS_URL, else nats://127.0.0.1:4222. When
    /// neither --out nor --nats is given, $NATS_URL is used if set.
    #[arg(long, value_name = "URL", num_args = 0..=1)]
    pub nats: Option<Option<String>>,

    /// Live pacing: simulated time runs SPEED times faster than real time
    /// (1 = real time; 1000000 or more = as fast as possible).
    #[arg(long, default_value_t = 1.0, value_name = "SPEED")]
    pub speed: f64,

    /// Subject root of the telemetry subjects (`<root>.pulse.<source>`, ...).
    #[arg(long, default_value = "os", value_name = "ROOT")]
    pub root: String,
}

/// What a file run produced.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub events: u64,
    pub labelled: u64,
    pub by_kind: BTreeMap<Kind, u64>,
    pub faults: Vec<Fault>,
    pub first_ts: Option<i64>,
    pub last_ts: Option<i64>,
}

impl Summary {
    fn count(&mut self, ev: &Event) {
        self.events += 1;
        self.labelled += u64::from(ev.label.is_some());
        *self.by_kind.entry(ev.kind()).or_insert(0) += 1;
        self.first_ts.get_or_insert(ev.ts);
        self.last_ts = Some(ev.ts);
    }
}

/// `path` with `suffix` appended to its file name (`x.jsonl` → `x.jsonl.faults.json`).
pub fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The registry to simulate: `path` if given; else deploy/services.yaml if it
/// is here; else the built-in copy.
pub fn load_registry(path: Option<&Path>) -> Result<Registry> {
    match path {
        Some(p) => Registry::load(p),
        None if Path::new(REGISTRY_PATH).exists() => Registry::load(Path::new(REGISTRY_PATH)),
        None => Ok(default_registry()),
    }
}

/// Writes the side files of a run beside `out` and returns the fault list as
/// written (arch_change entries name the registry-after file).
pub fn write_sidecars(sim: &Simulation, out: &Path) -> Result<Vec<Fault>> {
    let mut faults = sim.faults().to_vec();
    let reg_path = sidecar(out, ".registry.yaml");
    std::fs::write(&reg_path, sim.registry().to_yaml())
        .with_context(|| format!("writing {}", reg_path.display()))?;
    if let Some(after) = sim.registry_after() {
        let p = sidecar(out, ".registry-after.yaml");
        std::fs::write(&p, after.to_yaml()).with_context(|| format!("writing {}", p.display()))?;
        // Relative to the faults file, so a run's files can move together.
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        for f in faults
            .iter_mut()
            .filter(|f| f.kind == FaultKind::ArchChange)
        {
            f.registry_after = Some(name.clone());
        }
    }
    let fp = sidecar(out, ".faults.json");
    let json = serde_json::to_string_pretty(&faults)?;
    std::fs::write(&fp, json + "\n").with_context(|| format!("writing {}", fp.display()))?;
    Ok(faults)
}

/// Writes every event of `sim` to `w` as JSON lines.
pub fn write_events(sim: Simulation, w: &mut dyn Write) -> Result<Summary> {
    let mut summary = Summary {
        faults: sim.faults().to_vec(),
        ..Default::default()
    };
    for ev in sim {
        summary.count(&ev);
        serde_json::to_writer(&mut *w, &ev.to_wire())?;
        w.write_all(b"\n")?;
    }
    w.flush()?;
    Ok(summary)
}

/// A whole file run, in-process: events to `out`, side files beside it.
pub fn write_run(cfg: &SimConfig, out: &Path) -> Result<Summary> {
    let sim = generate(cfg)?;
    let faults = write_sidecars(&sim, out)?;
    let f = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, f);
    let mut s = write_events(sim, &mut w)?;
    s.faults = faults;
    Ok(s)
}

fn nats_url(args: &SimArgs) -> Option<String> {
    let env = || {
        std::env::var("NATS_URL")
            .ok()
            .filter(|u| !u.trim().is_empty())
    };
    match &args.nats {
        Some(Some(u)) if !u.trim().is_empty() => Some(u.clone()),
        Some(_) => Some(env().unwrap_or_else(|| "nats://127.0.0.1:4222".into())),
        None if args.out.is_none() => env(),
        None => None,
    }
}

pub fn run(args: SimArgs) -> Result<()> {
    if let Some(p) = &args.write_registry {
        std::fs::write(p, default_registry().to_yaml())
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("wrote the default registry to {}", p.display());
        return Ok(());
    }
    let url = nats_url(&args);
    anyhow::ensure!(
        args.out.is_some() || url.is_some(),
        "nothing to do: give --out FILE and/or --nats URL (or set NATS_URL)"
    );
    let start_ms = match (args.start_ms, &url) {
        (Some(t), _) => t,
        (None, Some(_)) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(DEFAULT_START_MS);
            now - now.rem_euclid(60_000)
        }
        (None, None) => DEFAULT_START_MS,
    };
    let cfg = SimConfig {
        registry: load_registry(args.registry.as_deref())?,
        hours: args.hours,
        seed: args.seed,
        faults: args.faults.clone(),
        services: args.services,
        start_ms,
        running: false,
    };
    let sim = generate(&cfg)?;
    for w in sim.warnings() {
        eprintln!("warning: {w}");
    }
    let services = sim.registry().services.len();
    let faults = match &args.out {
        Some(out) => write_sidecars(&sim, out)?,
        None => sim.faults().to_vec(),
    };
    let clock = Instant::now();
    let mut file = match &args.out {
        Some(out) => Some(BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        )),
        None => None,
    };
    let events = match &url {
        Some(url) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let tee = file.as_mut().map(|w| w as &mut dyn Write);
            let n = rt.block_on(publish(sim, url, &args.root, args.speed, tee))?;
            if let Some(w) = file.as_mut() {
                w.flush()?;
            }
            eprintln!("published {n} events to {url} under {}.>", args.root);
            n
        }
        None => {
            let w = file.as_mut().expect("--out is set when not publishing");
            let s = write_events(sim, w)?;
            let kinds: Vec<String> = s.by_kind.iter().map(|(k, n)| format!("{k}={n}")).collect();
            eprintln!("kinds: {} labelled={}", kinds.join(" "), s.labelled);
            s.events
        }
    };
    let secs = clock.elapsed().as_secs_f64();
    eprintln!(
        "{events} events from {services} services over {} simulated hours ({:.0} per hour) in {secs:.2}s ({:.0} events/s)",
        args.hours,
        events as f64 / args.hours,
        events as f64 / secs.max(1e-9)
    );
    for f in &faults {
        eprintln!(
            "fault {} [{}..{}] {}",
            f.id,
            f.start_ms,
            f.end_ms,
            f.sources.join(",")
        );
    }
    Ok(())
}
