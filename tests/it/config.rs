//! Configuration: precedence (default < file < environment < flag), a bad
//! key's or value's error naming it, secrets never printed, and the
//! documented example file being exactly the defaults.

use crate::support;

use clap::CommandFactory;
use proprio::config::{Config, Flags, Origin, Role, RunArgs};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[derive(clap::Parser)]
struct Cli {
    #[command(subcommand)]
    c: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Run(RunArgs),
}

/// `proprio run <flags>` parsed as the binary does, over `file` and `env`.
fn with_run_flags(file: &Path, env: Vec<(String, String)>, flags: &[&str]) -> Config {
    let argv = ["proprio", "run"].iter().chain(flags).copied();
    let cmd = Cli::command();
    let m = cmd.clone().try_get_matches_from(argv).unwrap();
    let flags = Flags::from_command_line(&cmd, &m).unwrap();
    Config::load_with(Some(file), env, &flags).unwrap()
}

const FILE: &str = r#"
[nats]
url = "nats://file:4222"
root = "fileroot"

[scorer]
risk = 0.0001
cooldown = "2m"

[run]
roles = ["scorer", "trainer"]
threads = 2

[metrics]
addr = "127.0.0.1:9100"
"#;

#[test]
fn file_then_environment_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "p.toml", FILE);

    // The file over the defaults.
    let c = Config::load(Some(&f), env(&[])).unwrap();
    assert_eq!(c.scorer.risk, 0.0001);
    assert_eq!(c.scorer.cooldown, Duration::from_secs(120));
    assert_eq!(c.nats.url, "nats://file:4222");
    assert_eq!(c.run.threads, 2);
    assert_eq!(
        c.silence.multiple, 3.0,
        "a key the file leaves out keeps its default"
    );
    assert_eq!(c.origin("scorer.risk"), Origin::File(f.clone()));
    assert_eq!(c.origin("silence.multiple"), Origin::Default);

    // The environment over the file (and the older NATS_URL below PROPRIO_NATS_URL).
    let e = env(&[
        ("PROPRIO_SCORER_RISK", "0.00001"),
        ("NATS_URL", "nats://legacy:4222"),
        ("PROPRIO_NATS_URL", "nats://env:4222"),
        ("PROPRIO_RUN_ROLES", "harvester"),
    ]);
    let c = Config::load(Some(&f), e.clone()).unwrap();
    assert_eq!(c.scorer.risk, 0.00001);
    assert_eq!(c.nats.url, "nats://env:4222");
    assert_eq!(c.run.roles, vec![Role::Harvester]);
    assert_eq!(
        c.origin("scorer.risk"),
        Origin::Env("PROPRIO_SCORER_RISK".into())
    );
    let legacy = Config::load(Some(&f), env(&[("NATS_URL", "nats://legacy:4222")])).unwrap();
    assert_eq!(
        legacy.nats.url, "nats://legacy:4222",
        "NATS_URL is read, above the file"
    );

    // Flags over the environment; flags not given leave it alone (their
    // clap defaults must not win over the file or the environment).
    let c = with_run_flags(
        &f,
        e.clone(),
        &["--risk", "0.000001", "--nats", "nats://flag:4222"],
    );
    assert_eq!(c.scorer.risk, 0.000001);
    assert_eq!(c.nats.url, "nats://flag:4222");
    assert_eq!(c.scorer.cooldown, Duration::from_secs(120), "from the file");
    assert_eq!(c.run.roles, vec![Role::Harvester], "from the environment");
    assert_eq!(c.origin("scorer.risk"), Origin::Flag("--risk".into()));

    // What `run` finally gets.
    let a = c.run_settings();
    assert_eq!(
        (a.scorer.risk, a.bus.root.as_str(), a.run.threads),
        (0.000001, "fileroot", 2)
    );
    assert_eq!(a.bus.url, "nats://flag:4222");
    let b = c.bus_config();
    assert_eq!(
        (b.url.as_str(), b.root.as_str()),
        ("nats://flag:4222", "fileroot")
    );
}

#[test]
fn the_binary_applies_the_same_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "p.toml", FILE);
    let check = |envs: &[(&str, &str)], flags: &[&str]| -> String {
        let mut cmd = Command::new(support::proprio_bin());
        cmd.args(flags).arg("config").arg("check").arg(&f);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let line = |out: &str, key: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in\n{out}"))
            .to_string()
    };
    let out = check(&[], &[]);
    assert!(
        line(&out, "addr").starts_with(r#"addr = "127.0.0.1:9100""#),
        "{out}"
    );
    let out = check(&[("PROPRIO_METRICS_ADDR", "127.0.0.1:9200")], &[]);
    assert!(
        line(&out, "addr").contains("127.0.0.1:9200")
            && line(&out, "addr").contains("PROPRIO_METRICS_ADDR")
    );
    let out = check(
        &[("PROPRIO_METRICS_ADDR", "127.0.0.1:9200")],
        &["--metrics-addr", "127.0.0.1:9300"],
    );
    assert!(
        line(&out, "addr").contains("127.0.0.1:9300")
            && line(&out, "addr").contains("--metrics-addr")
    );
    // The printed configuration is itself a valid configuration file.
    let again = write(dir.path(), "effective.toml", &out);
    let c = Config::load(Some(&again), env(&[])).unwrap();
    assert_eq!(c.metrics.addr.unwrap().port(), 9300);
    assert_eq!(c.scorer.risk, 0.0001);
}

#[test]
fn an_unknown_key_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.toml",
        "[nats]\nurl = \"nats://x:4222\"\npasword = \"x\"\n",
    );
    let e = format!("{:#}", Config::load(Some(&f), env(&[])).unwrap_err());
    assert!(
        e.contains("`nats.pasword`") && e.contains("did you mean `nats.password`"),
        "{e}"
    );

    let f = write(dir.path(), "bad2.toml", "[scorer]\nrisk = \"high\"\n");
    let e = format!("{:#}", Config::load(Some(&f), env(&[])).unwrap_err());
    assert!(
        e.contains("scorer.risk") && e.contains("high") && e.contains("bad2.toml"),
        "{e}"
    );

    let f = write(dir.path(), "bad3.toml", "[scorrer]\nrisk = 0.001\n");
    let e = format!("{:#}", Config::load(Some(&f), env(&[])).unwrap_err());
    assert!(e.contains("[scorrer]") && e.contains("scorer"), "{e}");

    let e = format!(
        "{:#}",
        Config::load(None, env(&[("PROPRIO_RUN_ROLES", "scorer,judge")])).unwrap_err()
    );
    assert!(
        e.contains("run.roles") && e.contains("PROPRIO_RUN_ROLES") && e.contains("judge"),
        "{e}"
    );

    let e = format!(
        "{:#}",
        Config::load(None, env(&[("PROPRIO_NATS_CREDS", "/nonexistent/p.creds")])).unwrap_err()
    );
    assert!(
        e.contains("nats.creds") && e.contains("/nonexistent/p.creds"),
        "{e}"
    );

    // An unknown PROPRIO_ variable is reported, not fatal.
    let c = Config::load(None, env(&[("PROPRIO_SCORER_RISC", "9")])).unwrap();
    assert!(
        c.warnings[0].contains("PROPRIO_SCORER_RISK"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn a_bad_key_stops_proprio_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "bad.toml", "[trainer]\ncold_step = 10\n");
    let t = std::time::Instant::now();
    // No NATS anywhere: the configuration error comes first, at once.
    let out = Command::new(support::proprio_bin())
        .args(["--config"])
        .arg(&f)
        .args(["run", "--nats", "nats://127.0.0.1:1"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`trainer.cold_step`") && err.contains("trainer.cold_steps"),
        "{err}"
    );

    let out = Command::new(support::proprio_bin())
        .args(["run", "--nats", "nats://127.0.0.1:1"])
        .env("PROPRIO_SCORER_RISK", "-1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("scorer.risk") && err.contains("PROPRIO_SCORER_RISK"),
        "{err}"
    );
}

#[test]
fn secrets_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "s.toml",
        "[nats]\nurl = \"nats://u:url-secret@h:4222\"\nuser = \"proprio\"\npassword = \"file-secret\"\n",
    );
    let out = support::run_ok(
        Command::new(support::proprio_bin())
            .args(["config", "check"])
            .arg(&f),
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains("file-secret") && !text.contains("url-secret"),
        "{text}"
    );
    assert!(text.contains(r#"password = "<redacted>""#), "{text}");
    assert!(text.contains("nats://u:<redacted>@h:4222"), "{text}");
    let dbg = format!("{:?}", Config::load(Some(&f), env(&[])).unwrap());
    assert!(!dbg.contains("file-secret"), "{dbg}");

    // Also in the error of a bad secret value.
    let out = Command::new(support::proprio_bin())
        .args(["config", "check"])
        .arg(&f)
        .env("PROPRIO_NATS_TOKEN", "tok-secret")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success(), "user and token together are refused");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("tok-secret") && !err.contains("file-secret"),
        "{err}"
    );
}

#[test]
fn the_documented_example_is_the_defaults() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/proprio.toml");
    let c = Config::load(Some(&example), env(&[])).unwrap();
    let d = Config::default();
    assert_eq!(c.run_settings(), d.run_settings());
    assert_eq!(c.bus_config(), d.bus_config());
    assert_eq!(
        (c.metrics.addr, c.log.json, c.log.level.as_str()),
        (None, false, "info")
    );
    // Every key is documented in it (set or commented out).
    let text = std::fs::read_to_string(&example).unwrap();
    for k in proprio::config::KEYS.iter() {
        let name = k.path.split_once('.').unwrap().1;
        assert!(
            text.contains(&format!("\n{name} = ")) || text.contains(&format!("# {name} = ")),
            "{} is not in deploy/proprio.toml",
            k.path
        );
    }
}

/// The model's shape, the training settings, the rendering and the key
/// files: from the file and the environment into what the trainer,
/// harvester and `proprio train` use; printed back readable.
#[test]
fn learning_settings_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let masks = write(
        dir.path(),
        "masks.toml",
        "[[mask]]\npattern = '\\d+'\ntoken = \"<|NUM|>\"\n",
    );
    let compose = write(dir.path(), "compose.yml", "services: {}\n");
    let f = write(
        dir.path(),
        "p.toml",
        &format!(
            "[model]\nn_embd = 16\nn_head = 2\n[trainer]\nbatch_size = 64\nlr = 0.03\n\
             [render]\nmetric_format = \"digits\"\nmasks = {:?}\n[run]\nkey_files = [{:?}]\n",
            masks.display().to_string(),
            compose.display().to_string()
        ),
    );
    let c = Config::load(Some(&f), env(&[("PROPRIO_MODEL_BLOCK_SIZE", "64")])).unwrap();
    let l = c.learning().unwrap();
    assert_eq!(
        (l.shape.n_embd, l.shape.n_head, l.shape.n_layer),
        (16, 2, 2)
    );
    assert_eq!(l.shape.block_size, 64);
    assert_eq!((l.batch_size, l.lr, l.weight_decay), (64, 0.03, 0.1));
    assert_eq!(
        l.render.metric_format,
        proprio::curriculum::MetricFormat::Digits
    );
    assert_eq!(l.render.masks.len(), 1);
    assert_eq!(c.run_settings().learning, l);
    // The fingerprint covers the registry, the key files and the rendering.
    let reg = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/services.yaml");
    let g = l.gates(&reg);
    assert_eq!(g.key_files, vec![reg.clone(), compose.clone()]);
    let fp = g.fingerprint().unwrap();
    std::fs::write(&compose, "services: {a: {}}\n").unwrap();
    assert_ne!(g.fingerprint().unwrap(), fp, "a key file changed");
    // The built-in rendering (scaled) is in the fingerprint, so a
    // deployment that rendered the former default (buckets) cold-starts on
    // the new one; buckets itself adds nothing, as before.
    let unmarked = proprio::freshness::fingerprint(std::slice::from_ref(&reg)).unwrap();
    let builtin = proprio::config::Learning::default().gates(&reg);
    assert_ne!(builtin.fingerprint().unwrap(), unmarked);
    let mut buckets = proprio::config::Learning::default();
    buckets.render.metric_format = proprio::curriculum::MetricFormat::Buckets;
    assert_eq!(
        buckets.gates(&reg).fingerprint().unwrap(),
        unmarked,
        "the former default rendering adds nothing to the fingerprint"
    );
    // Printed back, it reads back the same.
    let printed = write(dir.path(), "printed.toml", &c.render());
    let again = Config::load(Some(&printed), env(&[])).unwrap();
    assert_eq!(again.learning().unwrap(), l);
}

#[test]
fn bad_learning_settings_are_errors_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // A configuration whose render.masks is a file holding `masks`.
    let masks_at = |name: &str, masks: &str| {
        let f = write(dir.path(), name, masks);
        format!("[render]\nmasks = {:?}\n", f.display().to_string())
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "[model]\nn_head = 5\n".into(),
            "`model.n_head`",
            "multiple of n_head",
        ),
        ("[trainer]\nlr = -1.0\n".into(), "`trainer.lr`", "positive"),
        (
            "[trainer]\nbatch_size = 0\n".into(),
            "`trainer.batch_size`",
            "at least 1",
        ),
        (
            "[render]\nmetric_format = \"roman\"\n".into(),
            "`render.metric_format`",
            "scaled, buckets or digits",
        ),
        (
            "[render]\nmasks = \"/nonexistent/masks.toml\"\n".into(),
            "`render.masks`",
            "/nonexistent/masks.toml",
        ),
        (
            masks_at(
                "badre.toml",
                "[[mask]]\npattern = '(['\ntoken = \"<|NUM|>\"\n",
            ),
            "`render.masks`",
            "pattern",
        ),
        (
            masks_at(
                "badtok.toml",
                "[[mask]]\npattern = 'x'\ntoken = \"<|NOPE|>\"\n",
            ),
            "`render.masks`",
            "not a special token",
        ),
    ];
    for (i, (text, key, why)) in cases.iter().enumerate() {
        let f = write(dir.path(), &format!("c{i}.toml"), text);
        let err = format!("{:#}", Config::load(Some(&f), env(&[])).unwrap_err());
        assert!(err.contains(key) && err.contains(why), "{text}: {err}");
    }
}

/// deploy/masks.toml, the file users copy, is the built-in list.
#[test]
fn the_documented_masks_are_the_built_in_ones() {
    use proprio::curriculum::{MetricFormat, RenderConfig};
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/masks.toml");
    let loaded = RenderConfig::load(
        MetricFormat::Scaled,
        std::time::Duration::from_secs(1800),
        Some(&p),
    )
    .unwrap();
    assert_eq!(loaded, RenderConfig::default());
}

/// `proprio train` trains the configured shape and rendering, and `proprio
/// score`, with no configuration, renders the way the checkpoint says.
#[test]
fn train_follows_the_configuration_and_score_follows_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for i in 0..300 {
        lines.push_str(&format!(
            "{{\"ts\":{},\"source\":\"svc{}\",\"kind\":\"pulse\",\"metrics\":{{\"cpu\":{}.5,\"mem_mb\":4200}}}}\n",
            1_767_225_600_000i64 + i * 1000,
            i % 3,
            10 + i % 7
        ));
    }
    let events = write(dir.path(), "e.jsonl", &lines);
    let cfg = write(
        dir.path(),
        "p.toml",
        "[model]\nn_embd = 16\nn_head = 2\nblock_size = 64\n[trainer]\nbatch_size = 8\n[render]\nmetric_format = \"digits\"\n",
    );
    let model = dir.path().join("m.ck");
    support::run_ok(
        Command::new(support::proprio_bin())
            .arg("--config")
            .arg(&cfg)
            .args(["train", "--steps", "5", "--threads", "1", "--input"])
            .arg(&events)
            .arg("--out")
            .arg(&model),
    );
    let ck = proprio::model::checkpoint::Checkpoint::load(&model).unwrap();
    assert_eq!((ck.meta.config.n_embd, ck.meta.config.block_size), (16, 64));
    assert_eq!(
        ck.meta.render.metric_format,
        proprio::curriculum::MetricFormat::Digits
    );
    let out = support::run_ok(
        Command::new(support::proprio_bin())
            .args(["score", "--threads", "1", "--model"])
            .arg(&model)
            .arg("--input")
            .arg(&events)
            .env_remove("PROPRIO_CONFIG"),
    );
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(first.contains("mem_mb=4.2k"), "{first}");

    // A configuration `proprio train` cannot read stops it (it would
    // otherwise train a model other than the configured one).
    let bad = write(dir.path(), "bad.toml", "[model]\nn_embd = \"wide\"\n");
    let out = Command::new(support::proprio_bin())
        .arg("--config")
        .arg(&bad)
        .args(["train", "--steps", "5", "--input"])
        .arg(&events)
        .arg("--out")
        .arg(dir.path().join("x.ck"))
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("model.n_embd"));
}

/// deploy/masks-bgl.toml loads, and masks the digit runs the built-in list keeps.
#[test]
fn the_bgl_masks_mask_every_digit_run() {
    use proprio::curriculum::{MetricFormat, RenderConfig, Renderer};
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/masks-bgl.toml");
    let bgl = RenderConfig::load(
        MetricFormat::Buckets,
        std::time::Duration::from_secs(1800),
        Some(&p),
    )
    .unwrap();
    assert_eq!(
        bgl.masks[..bgl.masks.len() - 1],
        RenderConfig::default().masks[..]
    );
    let line = "KERNEL 1234 microseconds spent in the rbs signal handler during 56 calls";
    let builtin = Renderer::new(&RenderConfig::default()).unwrap().mask(line);
    assert!(
        builtin.contains("1234") && builtin.contains("56"),
        "{builtin}"
    );
    let masked = Renderer::new(&bgl).unwrap().mask(line);
    assert_eq!(
        masked,
        "KERNEL <|NUM|> microseconds spent in the rbs signal handler during <|NUM|> calls"
    );
}
