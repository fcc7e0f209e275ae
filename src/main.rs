//! The `proprio` command line. Parsing only: each subcommand hands its
//! arguments to the library module that does the work.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use proprio::cli_ops;

#[derive(Parser)]
#[command(
    name = "proprio",
    version,
    about = "Proprioception for a microservice system: a tiny GPT trained on its own telemetry; loss is the anomaly score."
)]
struct Cli {
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(flatten)]
    global: proprio::config::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop on this machine: NATS, every role, the simulated OS with faults; prints alerts and a summary.
    Demo(proprio::demo::DemoArgs),
    /// Run proprio's roles (harvester, scorer, trainer, silence watch) on NATS.
    Run(proprio::run::RunArgs),
    /// Generate the simulated OS's labelled telemetry, to a file or live onto NATS.
    Simulate(proprio::sim::SimArgs),
    /// Train a model on an event file (offline growth loop: validate, train, evaluate).
    Train(proprio::trainer::offline::TrainArgs),
    /// Score every event of a file; one JSON line per event (loss, score, surprising span).
    Score(proprio::scorer::offline::ScoreArgs),
    /// Print the current digest (the ~50-token health summary) from KV.
    Digest(cli_ops::DigestArgs),
    /// Print alerts from the alerts stream.
    Alerts(cli_ops::AlertsArgs),
    /// Ask the trainer to run a growth cycle now.
    Tick(cli_ops::TickArgs),
    /// Silence a source's alerts for a while (a maintenance window).
    Mute(cli_ops::MuteArgs),
    /// Benchmark scoring and training against the PyTorch reference figures.
    Bench(proprio::model::bench::BenchArgs),
    /// Validate a configuration file and print the effective configuration (secrets redacted).
    Config(proprio::config::ConfigArgs),
    /// Ask a running proprio's /readyz (exit 0 when ready): for container health checks.
    Health(proprio::endpoint::HealthArgs),
    /// Evaluate detection: train, score labelled events, report P/R/F1, AUROC, AUPRC, time to detect, vs baselines.
    Eval(proprio::eval::EvalArgs),
    /// Turn a plain log file (bgl, hdfs, or a line pattern) into an event file.
    Import(proprio::import::ImportArgs),
}

fn main() -> anyhow::Result<()> {
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Command::Config(a) = &cli.command {
        proprio::logging::init(cli.log_json);
        return proprio::config::command(a, &cli.global, cli.log_json);
    }
    let on_nats = matches!(
        cli.command,
        Command::Run(_)
            | Command::Digest(_)
            | Command::Alerts(_)
            | Command::Tick(_)
            | Command::Mute(_)
    );
    let run_flags = match &cli.command {
        Command::Run(a) => Some((a, matches.subcommand_matches("run"))),
        _ => None,
    };
    // Configuration (file < environment < flags), logging, NATS settings.
    let learns = matches!(cli.command, Command::Train(_) | Command::Eval(_));
    let cfg = proprio::config::startup(&cli.global, cli.log_json, on_nats, learns, run_flags)?;
    let url = |given: &str, sub: &str| cfg.nats_url_for(given, matches.subcommand_matches(sub));
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Run(_) => rt()?.block_on(proprio::run::run_with_metrics(
            cfg.run_args(),
            cfg.metrics.addr,
        )),
        Command::Demo(a) => rt()?.block_on(proprio::demo::run(a)),
        Command::Simulate(a) => proprio::sim::run(a),
        Command::Train(mut a) => {
            a.learning = cfg.learning()?;
            proprio::trainer::offline::run(a)
        }
        Command::Score(a) => proprio::scorer::offline::run(a),
        Command::Digest(mut a) => {
            a.nats.nats = url(&a.nats.nats, "digest");
            rt()?.block_on(cli_ops::digest(a))
        }
        Command::Alerts(mut a) => {
            a.nats.nats = url(&a.nats.nats, "alerts");
            rt()?.block_on(cli_ops::alerts(a))
        }
        Command::Tick(mut a) => {
            a.nats.nats = url(&a.nats.nats, "tick");
            rt()?.block_on(cli_ops::tick(a))
        }
        Command::Mute(mut a) => {
            a.nats.nats = url(&a.nats.nats, "mute");
            rt()?.block_on(cli_ops::mute(a))
        }
        Command::Bench(a) => proprio::model::bench::bench(a),
        Command::Config(_) => Ok(()),
        Command::Health(a) => proprio::endpoint::health_command(&a),
        Command::Eval(mut a) => {
            a.learning = cfg.learning()?;
            proprio::eval::run(a)
        }
        Command::Import(a) => proprio::import::run(a),
    }
}
