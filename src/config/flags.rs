//! Flags: the command line's layer of the configuration.
//!
//! A flag that sets a key has that key as its clap id
//! (`#[arg(long = "risk", id = "scorer.risk")]`). The layer is
//! read from the parsed command line by id ([`Flags::from_command_line`]),
//! never from the structs' fields, so a flag reaches a command only through
//! the configuration, above the file and the environment, and only when it
//! was given: its absence never overrides them with a default. The fields
//! keep clap's checks (a bad duration is refused while parsing) and give
//! each subcommand its `--help`.

use super::{Role, DOCS};
use anyhow::{bail, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, Command};
use std::path::PathBuf;
use std::time::Duration;

use crate::units::{parse_duration, parse_size};

/// Flags of every subcommand.
#[derive(Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file (TOML; see deploy/proprio.toml).
    #[arg(long, global = true, env = "PROPRIO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long = "log-json", id = "log.json", global = true)]
    pub log_json: bool,
    /// `--metrics-addr` before the subcommand (`proprio --metrics-addr A run`).
    #[arg(long = "metrics-addr", id = "metrics.addr", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// The NATS credentials and TLS flags before the subcommand
    /// (`proprio --nats-creds F digest`), as they were once global.
    #[command(flatten)]
    pub nats_security: NatsSecurityFlags,
}

/// How to authenticate to NATS and trust its server.
#[derive(Args, Debug, Clone, Default)]
pub struct NatsSecurityFlags {
    /// NATS user (the password comes from PROPRIO_NATS_PASSWORD or the file).
    #[arg(long = "nats-user", id = "nats.user", value_name = "USER")]
    pub user: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    #[arg(long = "nats-creds", id = "nats.creds", value_name = "FILE")]
    pub creds: Option<PathBuf>,
    /// File holding an NKey seed.
    #[arg(long = "nats-nkey", id = "nats.nkey", value_name = "FILE")]
    pub nkey: Option<PathBuf>,
    /// CA certificate(s) (PEM) for the NATS server's certificate.
    #[arg(long = "nats-tls-ca", id = "nats.tls_ca", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS.
    #[arg(long = "nats-tls-cert", id = "nats.tls_cert", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for NATS.
    #[arg(long = "nats-tls-key", id = "nats.tls_key", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

/// Where NATS is and how to connect: every command that talks to it.
#[derive(Args, Debug, Clone, Default)]
pub struct NatsFlags {
    /// NATS server URL(s), comma-separated.
    #[arg(long = "nats", id = "nats.url", value_name = "URL")]
    pub url: Option<String>,
    #[command(flatten)]
    pub security: NatsSecurityFlags,
}

/// Run proprio's roles against a NATS server.
#[derive(Args, Debug, Clone, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
    /// Roles to run, comma-separated.
    #[arg(
        long = "roles",
        id = "run.roles",
        value_name = "ROLES",
        value_enum,
        value_delimiter = ','
    )]
    pub roles: Vec<Role>,
    /// Publish a training tick this often (e.g. 6h); without it, any scheduler may publish `proprio.tick.train`.
    #[arg(long = "train-every", id = "trainer.every", value_name = "DURATION", value_parser = parse_duration)]
    pub train_every: Option<Duration>,
    /// Telemetry subject root.
    #[arg(long = "root", id = "nats.root", value_name = "ROOT")]
    pub root: Option<String>,
    /// Share of normal events whose score alone would alert, for a model trained on a day or more (e.g. 1e-4).
    #[arg(long = "risk", id = "scorer.risk", value_name = "SHARE")]
    pub risk: Option<f64>,
    /// Per source and kind, at most one alert per this much event time.
    #[arg(long = "cooldown", id = "scorer.cooldown", value_name = "DURATION", value_parser = parse_duration)]
    pub cooldown: Option<Duration>,
    /// Back-pressure: events older than this when the scorer takes them are
    /// acknowledged unscored and counted (proprio_scorer_shed_total); 0 = never.
    #[arg(long = "max-lag", id = "scorer.max_lag", value_name = "DURATION", value_parser = parse_duration)]
    pub max_lag: Option<Duration>,
    /// Split the telemetry by source for scorer replicas (1: one shared consumer).
    #[arg(long = "partitions", id = "scorer.partitions", value_name = "N")]
    pub partitions: Option<u32>,
    /// The service registry (axiomatic and topology curricula; part of the fingerprint).
    #[arg(long = "registry", id = "run.registry", value_name = "FILE")]
    pub registry: Option<PathBuf>,
    /// Steps of a cold-start training cycle.
    #[arg(long = "cold-steps", id = "trainer.cold_steps", value_name = "STEPS")]
    pub cold_steps: Option<usize>,
    /// Steps of an incremental training cycle.
    #[arg(
        long = "incremental-steps",
        id = "trainer.incremental_steps",
        value_name = "STEPS"
    )]
    pub incremental_steps: Option<usize>,
    /// A silent source is alerted once quiet for this many times its usual interval.
    #[arg(long = "silence-multiple", id = "silence.multiple", value_name = "N")]
    pub silence_multiple: Option<f64>,
    /// Threads for the model.
    #[arg(long = "threads", id = "run.threads", value_name = "N")]
    pub threads: Option<usize>,
    /// Largest telemetry payload accepted (bytes, or e.g. 64KiB); larger
    /// ones are dead-lettered as too_large.
    #[arg(long = "max-payload", id = "run.max_payload", value_name = "SIZE", value_parser = parse_size)]
    pub max_payload: Option<usize>,
    /// Least time between two digests republished because alerts arrived.
    #[arg(long = "digest-debounce", id = "trainer.digest_debounce", value_name = "DURATION", value_parser = parse_duration)]
    pub digest_debounce: Option<Duration>,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9464).
    #[arg(long = "metrics-addr", id = "metrics.addr", value_name = "ADDR")]
    pub metrics_addr: Option<String>,
}

fn is_key(id: &str) -> bool {
    DOCS.iter().any(|(p, _)| *p == id)
}

/// The flag of a key (`--risk` for `scorer.risk`), if it has one.
/// `proprio run` takes every flag there is, but `--log-json`.
pub fn flag_of(path: &str) -> Option<String> {
    let run = RunArgs::augment_args(Command::new("run"));
    let global = GlobalArgs::augment_args(Command::new("proprio"));
    let flag = run
        .get_arguments()
        .chain(global.get_arguments())
        .find(|a| a.get_id() == path)
        .and_then(|a| a.get_long())
        .map(|l| format!("--{l}"));
    flag
}

/// The command line as `proprio --help` shows it: the copies of
/// subcommand flags accepted before the subcommand are hidden (each
/// subcommand's help lists its own), and every key flag's help names its
/// key and its default, if it has one.
pub fn command_line(cmd: Command) -> Command {
    let defaults = super::check::default_texts();
    let note = move |a: clap::Arg| {
        let id = a.get_id().as_str().to_string();
        if !is_key(&id) {
            return a;
        }
        let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
        match defaults.get(&id) {
            Some(d) => a.help(format!("{help} [key: {id}] [default: {d}]")),
            None => a.help(format!("{help} [key: {id}]")),
        }
    };
    let cmd = cmd.mut_args(|a| {
        if is_key(a.get_id().as_str()) && !a.is_global_set() {
            a.hide(true)
        } else {
            a
        }
    });
    cmd.mut_subcommands(|s| s.mut_args(note.clone()))
}

/// The key flags given on a command line: `(key, flag, value)`.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    given: Vec<(String, String, String)>,
}

impl Flags {
    /// Reads the key flags given before and after the subcommand. A flag
    /// given before a subcommand that does not take it is an error (it
    /// would otherwise be silently ignored), but for `config`, which
    /// shows their effect.
    pub fn from_command_line(cmd: &Command, m: &ArgMatches) -> Result<Flags> {
        let mut f = Flags::default();
        f.read(cmd, m);
        if let Some((name, sub_m)) = m.subcommand() {
            let Some(sub) = cmd.find_subcommand(name) else {
                return Ok(f);
            };
            for (path, flag, _) in &f.given {
                let global = cmd
                    .get_arguments()
                    .any(|a| a.get_id() == path && a.is_global_set());
                let takes = sub.get_arguments().any(|a| a.get_id() == path);
                if name != "config" && !global && !takes {
                    bail!("{flag} is not an option of `proprio {name}`");
                }
            }
            f.read(sub, sub_m);
        }
        Ok(f)
    }

    fn read(&mut self, cmd: &Command, m: &ArgMatches) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if !is_key(id) || m.value_source(id) != Some(ValueSource::CommandLine) {
                continue;
            }
            let value = if a.get_action().takes_values() {
                let raw = m.get_raw(id).into_iter().flatten();
                raw.map(|v| v.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                "true".to_string()
            };
            let flag = format!("--{}", a.get_long().unwrap_or(id));
            self.given.retain(|(p, _, _)| p != id);
            self.given.push((id.to_string(), flag, value));
        }
    }

    /// `(key, flag, value)` of each flag given.
    pub fn given(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.given
            .iter()
            .map(|(p, f, v)| (p.as_str(), f.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser, Subcommand};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        c: Sub,
    }

    #[derive(Subcommand)]
    enum Sub {
        Run(RunArgs),
        Import,
    }

    fn flags(argv: &[&str]) -> Result<Vec<(String, String, String)>> {
        let cmd = Cli::command();
        let m = cmd.clone().try_get_matches_from(argv)?;
        let f = Flags::from_command_line(&cmd, &m)?;
        Ok(f.given)
    }

    #[test]
    fn given_flags_only_before_and_after_the_subcommand() {
        let g = flags(&[
            "p",
            "--nats-creds",
            "c",
            "run",
            "--risk",
            "1e-4",
            "--roles",
            "scorer,trainer",
        ])
        .unwrap();
        let s = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            g,
            vec![
                s("nats.creds", "--nats-creds", "c"),
                s("run.roles", "--roles", "scorer,trainer"),
                s("scorer.risk", "--risk", "1e-4"),
            ]
        );
        assert!(flags(&["p", "--log-json", "import"]).is_ok());
        let e = flags(&["p", "--nats-tls-ca", "x", "import"]).unwrap_err();
        assert!(e.to_string().contains("--nats-tls-ca"), "{e}");
        assert!(
            flags(&["p", "run", "--cooldown", "6"]).is_err(),
            "clap checks values"
        );
    }

    #[test]
    fn every_flag_is_a_key() {
        let run = RunArgs::augment_args(Command::new("run"));
        for a in run.get_arguments() {
            assert!(is_key(a.get_id().as_str()), "{}", a.get_id());
        }
        assert_eq!(flag_of("trainer.every").as_deref(), Some("--train-every"));
        assert_eq!(flag_of("log.json").as_deref(), Some("--log-json"));
        assert_eq!(flag_of("nats.password"), None);
    }
}
