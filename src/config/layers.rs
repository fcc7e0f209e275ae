//! The layers (default < file < environment < flags), merged by figment
//! and read into [`Config`] by serde.
//!
//! figment is used without its own file and environment providers: its
//! `Env` reads only the process's environment (loading must take the
//! environment as a value, for tests) and parses values into typed data
//! (a password "0123" would become the number 123); its `Toml` brings a
//! second toml version. Each layer here is one small provider of text
//! values; figment does the merging, remembers which layer gave each value
//! (the [`Origin`]) and points errors at the key and its layer.

use super::{find_key, flags::Flags, Config, DOCS, KEYS, SECRETS};
use anyhow::{anyhow, bail, Context as _, Result};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a value came from, for messages and `config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "environment {v}"),
            Origin::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

/// Older environment names, read below their `PROPRIO_` form.
const LEGACY_ENV: &[(&str, &str)] = &[("NATS_URL", "nats.url"), ("PROPRIO_ROOT", "nats.root")];

/// `PROPRIO_` variables that are not configuration keys.
const OTHER_ENV: &[&str] = &["PROPRIO_CONFIG", "PROPRIO_BENCH_ARGS", "PROPRIO_ROOT"];

const DEFAULT: &str = "default";
const FILE: &str = "file";
const ENV: &str = "environment";
const FLAG: &str = "flag";

/// One layer: values at key paths, and for each the name it was given by
/// (an environment variable, a flag), if not the layer's own.
struct Layer {
    kind: &'static str,
    file: Option<PathBuf>,
    values: Dict,
    names: Arc<BTreeMap<String, String>>,
}

impl Layer {
    fn new(kind: &'static str) -> Layer {
        Layer {
            kind,
            file: None,
            values: Dict::new(),
            names: Arc::default(),
        }
    }

    /// Sets `path` (`section.name`) to the text `v`, given as `name`.
    fn set(&mut self, path: &str, v: &str, name: &str) {
        let (section, key) = path.split_once('.').expect("keys are section.name");
        let entry = self
            .values
            .entry(section.to_string())
            .or_insert_with(|| Value::from(Dict::new()));
        if let Value::Dict(_, d) = entry {
            d.insert(key.to_string(), Value::from(v.to_string()));
        }
        Arc::make_mut(&mut self.names).insert(path.to_string(), name.to_string());
    }
}

impl Provider for Layer {
    fn metadata(&self) -> Metadata {
        let names = self.names.clone();
        let md = Metadata::named(self.kind).interpolater(move |_: &Profile, k: &[&str]| {
            names.get(&k.join(".")).cloned().unwrap_or_default()
        });
        match &self.file {
            Some(f) => md.source(f.as_path()),
            None => md,
        }
    }

    fn data(&self) -> figment::Result<Map<Profile, Dict>> {
        Ok(Profile::Default.collect(self.values.clone()))
    }
}

fn origin_of(md: Option<&Metadata>, path: &str) -> Origin {
    let Some(md) = md else {
        return Origin::Default;
    };
    let name = || md.interpolate(&Profile::Default, &path.split('.').collect::<Vec<_>>());
    match md.name.as_ref() {
        FILE => match &md.source {
            Some(figment::Source::File(f)) => Origin::File(f.clone()),
            _ => Origin::Default,
        },
        ENV => Origin::Env(name()),
        FLAG => Origin::Flag(name()),
        _ => Origin::Default,
    }
}

fn defaults() -> Result<Layer> {
    let mut l = Layer::new(DEFAULT);
    match Value::serialize(Config::default())? {
        Value::Dict(_, d) => l.values = d,
        _ => unreachable!("a struct serializes to a dict"),
    }
    Ok(l)
}

/// The sections, in the order of the keys.
fn sections() -> Vec<&'static str> {
    let mut s: Vec<&str> = DOCS
        .iter()
        .map(|(p, _)| p.split('.').next().unwrap_or(p))
        .collect();
    s.dedup();
    s
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The closest of `known` to `name`, if close.
fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    known
        .map(|k| (distance(name, k), k))
        .min()
        .filter(|(d, _)| *d <= 3)
        .map(|(_, k)| k)
}

pub(super) fn suggest(path: &str) -> String {
    closest(path, DOCS.iter().map(|(p, _)| *p))
        .map(|p| format!(" (did you mean `{p}`?)"))
        .unwrap_or_default()
}

/// A TOML file; unknown sections and keys are errors naming them.
fn file(file: &Path) -> Result<Layer> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the configuration file {}", file.display()))?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| anyhow!("{}: not valid TOML: {e}", file.display()))?;
    let known = sections();
    for (section, body) in &table {
        let Some(body) = body.as_table() else {
            bail!(
                "{}: unknown key `{section}`{} (keys live in sections: {})",
                file.display(),
                suggest(section),
                known.join(", ")
            );
        };
        if !known.contains(&section.as_str()) {
            bail!(
                "{}: unknown section [{section}] (known: {})",
                file.display(),
                known.join(", ")
            );
        }
        for name in body.keys() {
            let path = format!("{section}.{name}");
            if find_key(&path).is_none() {
                bail!("{}: unknown key `{path}`{}", file.display(), suggest(&path));
            }
        }
    }
    let mut l = Layer::new(FILE);
    l.file = Some(file.to_path_buf());
    match Value::serialize(&table)? {
        Value::Dict(_, d) => l.values = d,
        _ => unreachable!("a table serializes to a dict"),
    }
    Ok(l)
}

/// The environment: the legacy names (a layer below), the `PROPRIO_` ones,
/// and a warning for each `PROPRIO_` variable that is no key (a typo would
/// otherwise be silently ignored).
fn environment(env: BTreeMap<String, String>) -> (Layer, Layer, Vec<String>) {
    let mut legacy = Layer::new(ENV);
    for (name, path) in LEGACY_ENV {
        if let Some(v) = env.get(*name).filter(|v| !v.trim().is_empty()) {
            legacy.set(path, v, name);
        }
    }
    let mut current = Layer::new(ENV);
    let mut warnings = Vec::new();
    for (name, v) in env.iter().filter(|(n, _)| n.starts_with("PROPRIO_")) {
        match KEYS.iter().find(|k| k.env == *name) {
            Some(k) => current.set(k.path, v, name),
            None if OTHER_ENV.contains(&name.as_str()) => {}
            None => {
                let close = closest(name, KEYS.iter().map(|k| k.env.as_str()))
                    .map(|e| format!(" (did you mean {e}?)"))
                    .unwrap_or_default();
                warnings.push(format!(
                    "environment variable {name} is not a proprio setting{close}; ignored"
                ));
            }
        }
    }
    (legacy, current, warnings)
}

/// The flags given on the command line.
fn flags(f: &Flags) -> Layer {
    let mut l = Layer::new(FLAG);
    for (path, flag, v) in f.given() {
        l.set(path, v, flag);
    }
    l
}

/// A value as shown in a message: secrets redacted.
fn shown(path: &str, v: &Value) -> String {
    if SECRETS.contains(&path) {
        return "<redacted>".into();
    }
    let text = match v {
        Value::String(_, s) => s.clone(),
        Value::Num(_, n) => super::check::num_text(*n),
        Value::Bool(_, b) => b.to_string(),
        Value::Array(_, items) => {
            let items: Vec<String> = items.iter().map(|v| shown(path, v)).collect();
            return format!("[{}]", items.join(", "));
        }
        _ => return "(a table)".into(),
    };
    if path == "nats.url" {
        format!("{:?}", crate::bus::redact_url(&text))
    } else {
        format!("{text:?}")
    }
}

/// figment's error as "`key` = value (from origin): why".
fn explain(fig: &Figment, e: figment::Error) -> anyhow::Error {
    let e = e.into_iter().next().expect("an error has at least one");
    if e.path.is_empty() {
        return anyhow!("configuration: {}", e.kind);
    }
    // The key, not the list item within it.
    let key: Vec<&str> = e.path.iter().take(2).map(String::as_str).collect();
    let path = key.join(".");
    let origin = origin_of(e.metadata.as_ref(), &path);
    // serde's messages may quote the value.
    let why = match SECRETS.contains(&path.as_str()) {
        true => "not a valid value (not shown: a secret)".to_string(),
        false => e.kind.to_string(),
    };
    match fig.find_value(&path) {
        Ok(v) => anyhow!("`{path}` = {} (from {origin}): {why}", shown(&path, &v)),
        Err(_) => anyhow!("`{path}` (from {origin}): {why}"),
    }
}

impl Config {
    /// Defaults, then `file` (if any), then the environment `env`
    /// (name → value; pass `std::env::vars()`). Fully validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        Config::load_with(file, env, &Flags::default())
    }

    /// [`Config::load`] with command-line flags on top. Fully validated.
    pub fn load_with(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Flags,
    ) -> Result<Config> {
        let c = Config::load_unchecked(file, env, flags)?;
        c.validate()?;
        Ok(c)
    }

    /// The layers merged and read, each value checked on its own; the
    /// checks across keys are [`Config::validate`]'s (an offline command
    /// is not stopped by a NATS setting).
    pub fn load_unchecked(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        f: &Flags,
    ) -> Result<Config> {
        let mut fig = Figment::from(defaults()?);
        if let Some(path) = file {
            fig = fig.merge(self::file(path)?);
        }
        let (legacy, current, warnings) = environment(env.into_iter().collect());
        let fig = fig.merge(legacy).merge(current).merge(flags(f));
        let mut c: Config = fig.extract().map_err(|e| explain(&fig, e))?;
        c.warnings = warnings;
        for k in KEYS.iter() {
            let origin = origin_of(fig.find_metadata(k.path), k.path);
            if origin != Origin::Default {
                c.origins.insert(k.path.to_string(), origin);
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert!(suggest("nats.pasword").contains("nats.password"));
        assert!(suggest("zzz.qqqqqqqq").is_empty());
    }

    /// "0s" means never like "0" does, not "shed every event".
    #[test]
    fn a_zero_duration_means_never() {
        for zero in ["0", "0s", "0ms", ""] {
            let env = vec![("PROPRIO_SCORER_MAX_LAG".to_string(), zero.to_string())];
            let c = Config::load(None, env).unwrap();
            assert_eq!(c.scorer.max_lag, None, "{zero:?}");
        }
    }

    #[test]
    fn the_defaults_read_back_as_the_defaults() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn incidents_section_defaults_are_the_engines() {
        let s = crate::config::IncidentsSection::default();
        assert_eq!(s.engine(), crate::incident::EngineConfig::default());
    }

    /// The documented keys are exactly the configuration's fields.
    #[test]
    fn every_field_is_a_documented_key() {
        let Value::Dict(_, d) = Value::serialize(Config::default()).unwrap() else {
            panic!()
        };
        let mut fields: Vec<String> = Vec::new();
        for (section, body) in &d {
            let Value::Dict(_, body) = body else { panic!() };
            fields.extend(body.keys().map(|k| format!("{section}.{k}")));
        }
        fields.sort();
        let mut documented: Vec<String> = DOCS.iter().map(|(p, _)| p.to_string()).collect();
        documented.sort();
        assert_eq!(fields, documented);
        assert_eq!(
            crate::config::env_name("nats.tls_ca"),
            "PROPRIO_NATS_TLS_CA"
        );
    }
}
