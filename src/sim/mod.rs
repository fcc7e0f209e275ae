//! The simulated OS. (Being written: see the foundation issue.)

/// Arguments of `proprio simulate`.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// Output file of JSON-lines events.
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
}

pub fn run(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("simulate is not built yet")
}
