//! The `proprio` command line. Parsing only: the configuration is built
//! from the file, the environment and the flags, and each subcommand hands
//! it, with its own arguments, to the library module that does the work.

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use proprio::cli_ops;
use proprio::config;
use proprio::startup::{startup, Needs};

#[derive(Parser)]
#[command(
    name = "proprio",
    version,
    about = "Proprioception for a microservice system: a tiny GPT trained on its own telemetry; loss is the anomaly score."
)]
struct Cli {
    #[command(flatten)]
    global: config::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The whole loop on this machine: NATS, every role, the simulated OS with faults; prints alerts and a summary.
    Demo(proprio::demo::DemoArgs),
    /// Run proprio's roles (harvester, scorer, trainer, silence watch, incidents) on NATS.
    Run(config::RunArgs),
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
    /// List incidents (alerts grouped, root cause ranked), show one, or follow them.
    Incidents(proprio::cli_incidents::IncidentsArgs),
    /// Ask the trainer to run a growth cycle now.
    Tick(cli_ops::TickArgs),
    /// Silence a source's alerts for a while (a maintenance window).
    Mute(cli_ops::MuteArgs),
    /// Benchmark scoring and training (against the PyTorch reference figures), and the decision and incident stages.
    Bench(proprio::model::bench::BenchArgs),
    /// Validate a configuration file and print the effective configuration (secrets redacted).
    Config(config::ConfigArgs),
    /// Ask a running proprio's /readyz (exit 0 when ready): for container health checks.
    Health(proprio::endpoint::HealthArgs),
    /// Evaluate detection: train, score labelled events, report P/R/F1, AUROC, AUPRC, time to detect, vs baselines.
    Eval(proprio::eval::EvalArgs),
    /// The metrics benchmark: labelled metric series, proprio against metric baselines, window scores.
    Metricbench(proprio::metricbench::BenchArgs),
    /// Turn a plain log file (bgl, hdfs, or a line pattern) into an event file.
    Import(proprio::import::ImportArgs),
}

fn main() -> anyhow::Result<()> {
    let cmd = config::flags::command_line(Cli::command());
    let matches = cmd.clone().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let flags = config::Flags::from_command_line(&cmd, &matches)?;
    let needs = match &cli.command {
        Command::Config(a) => {
            proprio::logging::init(cli.global.log_json);
            return config::command(a, &flags);
        }
        Command::Run(_)
        | Command::Digest(_)
        | Command::Alerts(_)
        | Command::Incidents(_)
        | Command::Tick(_)
        | Command::Mute(_) => Needs::Nats,
        // The demo runs every role as configured: a configuration it cannot
        // read would demonstrate another detector.
        Command::Train(_) | Command::Eval(_) | Command::Metricbench(_) | Command::Demo(_) => {
            Needs::Learning
        }
        _ => Needs::Logging,
    };
    if let Command::Demo(a) = &cli.command {
        // The demo's filter first: the configured one below then finds
        // logging installed (RUST_LOG still wins over both).
        let level = if a.verbose {
            proprio::demo::VERBOSE_LOG
        } else {
            proprio::demo::QUIET_LOG
        };
        proprio::logging::init_with(cli.global.log_json, Some(level));
    }
    let cfg = startup(&cli.global, &flags, needs)?;
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Run(_) => rt()?.block_on(proprio::run::run_with_metrics(
            cfg.run_settings(),
            cfg.metrics.addr,
        )),
        Command::Demo(a) => rt()?.block_on(proprio::demo::run(a, cfg.run_settings())),
        Command::Simulate(a) => proprio::sim::run(a),
        Command::Train(a) => proprio::trainer::offline::run(a, cfg.learning()?),
        Command::Score(a) => proprio::scorer::offline::run(a),
        Command::Digest(a) => rt()?.block_on(cli_ops::digest(a, &cfg.bus_config())),
        Command::Alerts(a) => rt()?.block_on(cli_ops::alerts(a, &cfg.bus_config())),
        Command::Incidents(a) => {
            rt()?.block_on(proprio::cli_incidents::incidents(a, &cfg.bus_config()))
        }
        Command::Tick(_) => rt()?.block_on(cli_ops::tick(&cfg.bus_config())),
        Command::Mute(a) => rt()?.block_on(cli_ops::mute(a, &cfg.bus_config())),
        Command::Bench(a) => proprio::decision_bench::bench(a),
        Command::Config(_) => Ok(()),
        Command::Health(a) => proprio::endpoint::health_command(&a),
        Command::Eval(a) => proprio::eval::run(
            proprio::eval::EvalArgs {
                configured: Some(cfg.scorer.policy()),
                configured_incidents: Some(cfg.incidents.engine()),
                ..a
            },
            cfg.learning()?,
        ),
        Command::Metricbench(a) => proprio::metricbench::run(
            proprio::metricbench::BenchArgs {
                configured: Some(cfg.scorer.policy()),
                ..a
            },
            cfg.learning()?,
        ),
        Command::Import(a) => proprio::import::run(a),
    }
}
