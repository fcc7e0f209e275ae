//! The `proprio` command line. Parsing only: each subcommand hands its
//! arguments to the library module that does the work.

use clap::{Parser, Subcommand};
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    proprio::logging::init(cli.log_json);
    let rt = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    match cli.command {
        Command::Run(a) => rt()?.block_on(proprio::run::run(a)),
        Command::Simulate(a) => proprio::sim::run(a),
        Command::Train(a) => proprio::trainer::offline::run(a),
        Command::Score(a) => proprio::scorer::offline::run(a),
        Command::Digest(a) => rt()?.block_on(cli_ops::digest(a)),
        Command::Alerts(a) => rt()?.block_on(cli_ops::alerts(a)),
        Command::Tick(a) => rt()?.block_on(cli_ops::tick(a)),
        Command::Mute(a) => rt()?.block_on(cli_ops::mute(a)),
        Command::Bench(a) => proprio::model::bench::bench(a),
    }
}
