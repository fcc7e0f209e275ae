//! `proprio metricbench`: how well proprio reads health metrics, against
//! the detectors a metrics system would use, on labelled series with known
//! answers (issue 16, item 4).
//!
//! The protocol:
//!
//! 1. **Series** ([`gen`]): a few hundred (source, metric) series, seeded,
//!    several noise shapes, a daily cycle, gaps, a sample every
//!    `--interval-s`. The first `--train-days` are anomaly-free; the test
//!    part holds the labelled anomaly windows.
//! 2. **Parts.** Fit: the training part minus its newest `--calib-days`;
//!    calibration: those newest days (not fitted on, anomaly-free); test:
//!    the rest.
//! 3. **Detectors.** The baselines ([`baselines`]: windowed Gaussian, robust
//!    z with a scale floor, seasonal), causal over each series' samples
//!    (their trailing windows fill on the fit part). proprio: each sample
//!    becomes a pulse event (`source` = the series' host, `key` =
//!    `host/metric`, so its context is the series' own recent samples, one
//!    metric per event); the model is trained on the fit events with `proprio
//!    eval`'s code and production defaults (500 steps), and every
//!    calibration and test event is scored as eval scores it: the live
//!    score in its key's context, then the live decision's evidence
//!    ([`crate::eval::model_evidence`]).
//! 4. **Thresholds and scoring** ([`score`]): the same label-free budget
//!    rule for every detector (θ such that at most `--budget` false alarms
//!    per series per day on the calibration part), NAB-like window
//!    scoring. proprio gets a second row at the production alert level
//!    (what the live scorer would raise, no calibration to the budget).
//!
//! Alerts are per sample; the product's cooldown (60 s per source and
//! kind) never binds at a 5-minute interval per series, and the benchmark
//! credits each alert to its own series.

pub mod baselines;
pub mod gen;
pub mod score;

use crate::config::Learning;
use crate::event::{Body, Event};
use anyhow::{Context, Result};
use gen::{AnomalyKind, GenConfig, Series};
use score::{budget_threshold, Scored, Tally};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `proprio metricbench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Number of series (four metrics per host).
    #[arg(long, default_value_t = 240)]
    pub series: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 300)]
    pub interval_s: u64,
    /// Days in all.
    #[arg(long, default_value_t = 4.0)]
    pub days: f64,
    /// Anomaly-free days at the start (fit and calibration).
    #[arg(long, default_value_t = 2.0)]
    pub train_days: f64,
    /// Newest days of the training part that set the thresholds (not fitted on).
    #[arg(long, default_value_t = 1.0)]
    pub calib_days: f64,
    /// False alarms per series per day each threshold is calibrated to.
    #[arg(long, default_value_t = 1.0)]
    pub budget: f64,
    /// Trailing window of the baselines, hours.
    #[arg(long, default_value_t = 24.0)]
    pub window_h: f64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seed of the model's training alone [default: --seed]: the same
    /// series under another training run, to see how much of a difference
    /// between two builds the model's own variation explains.
    #[arg(long, value_name = "N")]
    pub train_seed: Option<u64>,
    /// Leave proprio out (the baselines alone take seconds).
    #[arg(long)]
    pub no_model: bool,
    /// Training steps of the model.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Use this checkpoint instead of training one.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Save the trained checkpoint here.
    #[arg(long, value_name = "FILE")]
    pub save_model: Option<PathBuf>,
    /// Threads for libtorch and the scorer.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the events (JSON lines, labelled) here, and the windows to FILE.windows.json.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Write each test sample proprio read (JSON lines: series, time,
    /// value, rendered line, live score, evidence, window kind) here.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    /// The configured alert policy (`[scorer]`) the live level replays.
    #[arg(skip)]
    pub configured: Option<crate::policy::Policy>,
}

impl BenchArgs {
    fn gen(&self) -> GenConfig {
        GenConfig {
            series: self.series,
            interval_s: self.interval_s,
            days: self.days,
            train_days: self.train_days,
            seed: self.seed,
            start_ms: crate::sim::DEFAULT_START_MS,
        }
    }
}

/// A baseline: its name, its scores per sample of a series, a note.
type Baseline<'a> = (&'a str, &'a dyn Fn(&Series) -> Vec<f32>, &'a str);

/// One detector's row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub detector: String,
    pub threshold: f32,
    pub recall: Option<f64>,
    pub false_alarms_per_series_day: f64,
    pub window_score: Option<f64>,
    pub auroc: Option<f64>,
    pub tally: Tally,
    pub note: String,
}

/// The benchmark's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub series: usize,
    pub windows: usize,
    pub test_days: f64,
    pub calib_days: f64,
    pub budget: f64,
    pub rows: Vec<Row>,
    pub model: Option<serde_json::Value>,
    pub seconds: f64,
}

/// The parts' boundaries (ms): calibration from `calib`, test from `test`.
struct Cuts {
    calib: i64,
    test: i64,
}

fn row(name: &str, sc: &Scored<'_>, thr: f32, cuts: &Cuts, days: f64, note: String) -> Row {
    let tally = sc.tally(thr, cuts.test);
    Row {
        detector: name.into(),
        threshold: thr,
        recall: tally.recall(),
        false_alarms_per_series_day: tally.false_alarms as f64
            / (sc.series.len() as f64 * days).max(1e-9),
        window_score: tally.normalised(),
        auroc: sc.auroc(cuts.test),
        tally,
        note,
    }
}

/// Runs the benchmark.
pub fn evaluate(args: &BenchArgs, learning: &Learning) -> Result<Report> {
    let started = Instant::now();
    let cfg = args.gen();
    anyhow::ensure!(args.series > 0, "--series must be positive");
    anyhow::ensure!(args.interval_s > 0, "--interval-s must be positive");
    anyhow::ensure!(
        args.calib_days > 0.0 && args.calib_days < args.train_days && args.train_days < args.days,
        "expected 0 < --calib-days < --train-days < --days"
    );
    anyhow::ensure!(args.budget >= 0.0, "--budget must not be negative");
    let series = gen::generate(&cfg);
    let cuts = Cuts {
        calib: cfg.test_start_ms() - (args.calib_days * 86_400_000.0) as i64,
        test: cfg.test_start_ms(),
    };
    let test_days = args.days - args.train_days;
    let budget = (args.budget * args.series as f64 * args.calib_days).floor() as usize;
    let window = ((args.window_h * 3600.0) / args.interval_s as f64)
        .round()
        .max(1.0) as usize;
    if let Some(p) = &args.out {
        write_events(p, &series, &cfg)?;
    }
    let mut rows = Vec::new();
    let baselines: [Baseline<'_>; 3] = [
        (
            "windowed gaussian",
            &|s| baselines::windowed_gaussian(s, window),
            "NAB's: |z| over the trailing window",
        ),
        (
            "robust z (floored)",
            &|s| baselines::robust_z(s, window),
            "median/MAD over the trailing window, scale floored",
        ),
        (
            "seasonal",
            &|s| baselines::seasonal(s, cfg.interval_ms(), window),
            "same time of day on up to 7 previous days",
        ),
    ];
    for (name, f, note) in baselines {
        let scores: Vec<Vec<f32>> = series.iter().map(f).collect();
        let sc = Scored {
            series: &series,
            scores: &scores,
        };
        let thr = budget_threshold(&sc.between(cuts.calib, cuts.test), budget);
        rows.push(row(name, &sc, thr, &cuts, test_days, note.into()));
    }
    let mut model = None;
    if !args.no_model {
        let (r, m) = proprio_rows(args, learning, &series, &cuts, budget, test_days)?;
        rows.splice(0..0, r);
        model = m;
    }
    Ok(Report {
        series: series.len(),
        windows: series.iter().map(|s| s.windows.len()).sum(),
        test_days,
        calib_days: args.calib_days,
        budget: args.budget,
        rows,
        model,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The events proprio receives: one pulse per sample, in time order, with
/// the sample each came from.
fn events(series: &[Series]) -> (Vec<Event>, Vec<(usize, usize)>) {
    let mut all: Vec<(i64, usize, usize)> = Vec::new();
    for (i, s) in series.iter().enumerate() {
        all.extend(s.ts.iter().enumerate().map(|(k, &t)| (t, i, k)));
    }
    all.sort_unstable();
    let ev = all
        .iter()
        .map(|&(t, i, k)| {
            let s = &series[i];
            Event {
                ts: t,
                source: s.source.clone(),
                key: format!("{}/{}", s.source, s.metric),
                body: Body::Pulse {
                    metrics: BTreeMap::from([(s.metric.clone(), s.values[k])]),
                },
                label: s
                    .window_of(t)
                    .map(|w| format!("{}-{}", s.windows[w].kind.as_str(), i * 10 + w)),
            }
        })
        .collect();
    (ev, all.iter().map(|&(_, i, k)| (i, k)).collect())
}

fn write_events(p: &std::path::Path, series: &[Series], cfg: &GenConfig) -> Result<()> {
    use std::io::Write;
    let (ev, _) = events(series);
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(p).with_context(|| format!("writing {}", p.display()))?,
    );
    for e in &ev {
        writeln!(f, "{}", e.to_json())?;
    }
    f.flush()?;
    let windows: Vec<serde_json::Value> = series
        .iter()
        .filter(|s| !s.windows.is_empty())
        .map(|s| serde_json::json!({"source": s.source, "metric": s.metric, "windows": s.windows}))
        .collect();
    let side = crate::sim::sidecar(p, ".windows.json");
    let meta = serde_json::json!({"test_start_ms": cfg.test_start_ms(), "series": windows});
    std::fs::write(&side, serde_json::to_string_pretty(&meta)? + "\n")
        .with_context(|| format!("writing {}", side.display()))?;
    eprintln!("metricbench: wrote {} and {}", p.display(), side.display());
    Ok(())
}

/// proprio's rows: the budget threshold, and the production level.
fn proprio_rows(
    args: &BenchArgs,
    learning: &Learning,
    series: &[Series],
    cuts: &Cuts,
    budget: usize,
    test_days: f64,
) -> Result<(Vec<Row>, Option<serde_json::Value>)> {
    let (ev, at) = events(series);
    let (mut fit, mut calib, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (j, e) in ev.iter().enumerate() {
        if e.ts < cuts.calib {
            fit.push(j);
        } else if e.ts < cuts.test {
            calib.push(j);
        } else {
            test.push(j);
        }
    }
    let mut eargs = crate::eval::EvalArgs::new("<metricbench>");
    eargs.steps = args.steps;
    eargs.model = args.model.clone();
    eargs.save_model = args.save_model.clone();
    eargs.seed = args.train_seed.unwrap_or(args.seed);
    eargs.threads = args.threads;
    eargs.configured = args.configured;
    let (ci, ti) = (calib.clone(), test.clone());
    let (skipped, lines) = live_repeats(learning, &ev, &ti, args.dump.is_some())?;
    // What the dump names of each test event, taken before eval takes them.
    let named: Vec<(String, i64)> = match &args.dump {
        Some(_) => ti.iter().map(|&e| (ev[e].key.clone(), ev[e].ts)).collect(),
        None => Vec::new(),
    };
    let m = crate::eval::model_evidence(&eargs, learning, ev, fit, calib, test)?;
    if let Some(p) = &args.dump {
        write_dump(p, series, &at, &ti, &named, &lines, &m.test_live, &m.test)?;
    }
    let blank = || -> Vec<Vec<f32>> {
        series
            .iter()
            .map(|s| vec![f32::NAN; s.values.len()])
            .collect()
    };
    let (mut evidence, mut live) = (blank(), blank());
    for (j, &e) in ci.iter().enumerate() {
        let (i, k) = at[e];
        evidence[i][k] = m.calib[j];
    }
    for (j, &e) in ti.iter().enumerate() {
        let (i, k) = at[e];
        evidence[i][k] = m.test[j];
        live[i][k] = m.test_live[j];
    }
    let sc = Scored {
        series,
        scores: &evidence,
    };
    let raw = Scored {
        series,
        scores: &live,
    }
    .auroc(cuts.test);
    let top = |v: &[f32]| {
        v.iter()
            .copied()
            .filter(|x| !x.is_nan())
            .fold(0.0f32, f32::max)
    };
    let note = format!(
        "{}; AUROC of the live score before the evidence {}; highest test live score {:.2}, evidence {:.2}; {:.1} % of the test events repeat their key's previous pulse line and are left unscored, as live",
        m.note,
        raw.map_or("-".into(), |a| format!("{a:.3}")),
        top(&m.test_live),
        top(&m.test),
        100.0 * skipped as f64 / ti.len().max(1) as f64
    );
    let thr = budget_threshold(&sc.between(cuts.calib, cuts.test), budget);
    Ok((
        vec![
            row(
                "proprio (budget θ)",
                &sc,
                thr,
                cuts,
                test_days,
                note.clone(),
            ),
            row(
                "proprio (live level)",
                &sc,
                m.level,
                cuts,
                test_days,
                "the production alert level, -log10(risk)".into(),
            ),
        ],
        m.model,
    ))
}

/// `--dump`: one JSON line per test sample.
#[allow(clippy::too_many_arguments)]
fn write_dump(
    p: &std::path::Path,
    series: &[Series],
    at: &[(usize, usize)],
    test: &[usize],
    named: &[(String, i64)],
    lines: &[String],
    live: &[f32],
    evidence: &[f32],
) -> Result<()> {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(p).with_context(|| format!("writing {}", p.display()))?,
    );
    let num = |x: f32| (!x.is_nan()).then_some(x);
    for (j, (&e, (key, ts))) in test.iter().zip(named).enumerate() {
        let (i, k) = at[e];
        let s = &series[i];
        let window = s.window_of(*ts).map(|w| s.windows[w].kind.as_str());
        let row = serde_json::json!({
            "key": key, "ts": ts, "value": s.values[k], "shape": s.shape.as_str(),
            "rendered": lines.get(e), "live": num(live[j]), "evidence": num(evidence[j]),
            "window": window,
        });
        writeln!(f, "{row}")?;
    }
    f.flush()?;
    Ok(())
}

/// How many of the `test` events the live scorer leaves unscored as
/// repeats of their key's previous pulse ([`crate::curriculum::Repeats`]),
/// as eval's replay does; and, if `keep`, every event's line from that
/// one walk over the stream (for `--dump`).
fn live_repeats(
    learning: &Learning,
    ev: &[Event],
    test: &[usize],
    keep: bool,
) -> Result<(usize, Vec<String>)> {
    let r = crate::curriculum::Renderer::new(&learning.render)?;
    let mut rep = crate::curriculum::Repeats::new(usize::MAX);
    let first = test.first().copied().unwrap_or(ev.len());
    let (mut n, mut lines) = (0, Vec::new());
    let mut sc = r.scaler();
    for (j, e) in ev.iter().enumerate() {
        let line = r.render(e, &mut sc);
        let again = rep.repeats(e, &line);
        n += usize::from(again && j >= first);
        if keep {
            lines.push(line);
        }
    }
    Ok((n, lines))
}

fn f3(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

impl Report {
    /// The table: one row per detector, then recall per anomaly type.
    pub fn table(&self) -> String {
        let mut s = format!(
            "metrics benchmark: {} series, {} windows, {} test days; thresholds for {} false alarm(s)/series/day on {} calibration day(s)\n\n",
            self.series, self.windows, self.test_days, self.budget, self.calib_days
        );
        s += "| detector | window recall | false alarms/series/day | window score | AUROC | θ |\n|---|---|---|---|---|---|\n";
        for r in &self.rows {
            s += &format!(
                "| {} | {} | {:.2} | {} | {} | {:.3} |\n",
                r.detector,
                f3(r.recall),
                r.false_alarms_per_series_day,
                r.window_score.map_or("-".into(), |v| format!("{v:.1}")),
                f3(r.auroc),
                r.threshold
            );
        }
        s += "\nwindow recall per anomaly type (detected/windows)\n\n| detector |";
        for k in AnomalyKind::ALL {
            s += &format!(" {} |", k.as_str());
        }
        s += "\n|---|";
        s += &"---|".repeat(AnomalyKind::ALL.len());
        s.push('\n');
        for r in &self.rows {
            s += &format!("| {} |", r.detector);
            for k in AnomalyKind::ALL {
                let (w, d) = r.tally.by_kind.get(&k).copied().unwrap_or((0, 0));
                s += &format!(" {d}/{w} |");
            }
            s.push('\n');
        }
        s += "\nfalse alarms per noise shape (test days)\n\n| detector |";
        for k in gen::Shape::ALL {
            s += &format!(" {} |", k.as_str());
        }
        s += "\n|---|";
        s += &"---|".repeat(gen::Shape::ALL.len());
        s.push('\n');
        for r in &self.rows {
            s += &format!("| {} |", r.detector);
            for k in gen::Shape::ALL {
                let n = r.tally.false_by_shape.get(&k).copied().unwrap_or(0);
                s += &format!(" {n} |");
            }
            s.push('\n');
        }
        s += "\n";
        for r in &self.rows {
            s += &format!("- {}: {}\n", r.detector, r.note);
        }
        s += &format!("\n{:.0} s\n", self.seconds);
        s
    }
}

/// `proprio metricbench`: the table on stdout, the JSON report with `--json`.
pub fn run(args: BenchArgs, learning: Learning) -> Result<()> {
    crate::model::set_libtorch_threads(args.threads.max(1) as usize);
    let report = evaluate(&args, &learning)?;
    print!("{}", report.table());
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("metricbench: wrote {}", p.display());
    }
    Ok(())
}
