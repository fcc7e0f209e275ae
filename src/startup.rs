//! What the binary does before a command runs: the configuration (file <
//! environment < flags) and logging set up from it. Here rather than in
//! config, which the roles' settings depend on, so that config depends on
//! no role (nor on logging, which depends on metrics).

use crate::config::{Config, Flags, GlobalArgs};
use anyhow::Result;

/// How much a command depends on its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// It talks to NATS: a bad key is an error here, before anything starts.
    Nats,
    /// It trains (`train`, `eval`): a configuration it cannot read is an
    /// error, since it would otherwise train another model than configured.
    Learning,
    /// Only logging: a bad configuration is a warning.
    Logging,
}

/// The configuration (file < environment < flags) and logging set up from
/// it; a command on NATS connects with `bus_config()` of what this returns.
pub fn startup(g: &GlobalArgs, flags: &Flags, needs: Needs) -> Result<Config> {
    // Only a command on NATS has the whole configuration checked: an
    // offline one is not stopped by a NATS setting.
    let file = g.config.as_deref();
    let loaded = match needs {
        Needs::Nats => Config::load_with(file, std::env::vars(), flags),
        _ => Config::load_unchecked(file, std::env::vars(), flags),
    };
    let c = match (loaded, needs) {
        (Ok(c), _) => c,
        (Err(e), Needs::Logging) => {
            crate::logging::init(g.log_json);
            tracing::warn!("configuration not applied: {e:#}");
            return Ok(Config::default());
        }
        (Err(e), _) => {
            if needs == Needs::Learning {
                crate::logging::init(g.log_json);
            }
            return Err(e);
        }
    };
    crate::logging::init_with(c.log.json, Some(&c.log.level));
    if needs == Needs::Nats {
        for w in &c.warnings {
            tracing::warn!("{w}");
        }
    }
    Ok(c)
}
