//! The `proprio` command line. Parsing only: each subcommand hands its
//! arguments to the library module that does the work.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "proprio", version, about = "Proprioception for a microservice system: a tiny GPT trained on its own telemetry; loss is the anomaly score.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the simulated OS's labelled telemetry, to a file or live onto NATS.
    Simulate(proprio::sim::SimArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Simulate(args) => proprio::sim::run(args),
    }
}
