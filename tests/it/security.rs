//! NATS security against real nats-servers: deploy/nats.conf's accounts and
//! least-privilege users, a token, an NKey, TLS with a client certificate.
//! Wrong credentials and a missing permission must end proprio with a clear
//! error and a non-zero exit within seconds, never a hang or a silent retry.

use crate::support;

use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROPRIO_PW: &str = "proprio-pw-4f1c";
const PUBLISHER_PW: &str = "publisher-pw-77a0";
const WATCHER_PW: &str = "watcher-pw-1b2e";
const READER_PW: &str = "reader-pw-9d3c";

/// A nats-server on a config file of our own, killed when dropped.
struct Server {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(conf: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nats.conf");
        std::fs::write(&path, conf).unwrap();
        let port = support::free_port();
        let child = Command::new(support::nats_server_bin())
            .arg("-c")
            .arg(&path)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .args(["-m", &support::free_port().to_string(), "-js", "-sd"])
            .arg(dir.path().join("store"))
            .envs([
                ("PROPRIO_NATS_PASSWORD", PROPRIO_PW),
                ("PUBLISHER_NATS_PASSWORD", PUBLISHER_PW),
                ("WATCHER_NATS_PASSWORD", WATCHER_PW),
                ("READER_NATS_PASSWORD", READER_PW),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        support::wait_listening(port, &format!("nats-server did not start on\n{conf}"));
        Server {
            port,
            child,
            _dir: dir,
        }
    }

    /// deploy/nats.conf itself (its store directory given by -sd instead),
    /// with `edit` applied.
    fn deploy(edit: impl Fn(String) -> String) -> Server {
        let conf = std::fs::read_to_string(repo("deploy/nats.conf")).unwrap();
        let conf: String = conf
            .lines()
            .filter(|l| !l.contains("store_dir:"))
            .map(|l| format!("{l}\n"))
            .collect();
        Server::start(&edit(conf))
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn url_as(&self, user: &str, pw: &str) -> String {
        format!("nats://{user}:{pw}@127.0.0.1:{}", self.port)
    }
}

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

struct Outcome {
    ok: bool,
    stderr: String,
    took: Duration,
}

impl Outcome {
    /// Failed, and fast: the opposite of a hang or a silent retry.
    fn failed_within(&self, limit: Duration) {
        assert!(
            !self.ok && self.took < limit,
            "{:?}\n{}",
            self.took,
            self.stderr
        );
    }
}

/// Runs proprio with `args` and `envs`; fails the test if it is still
/// running after `limit` (the "hang" this file is about).
fn proprio(args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Outcome {
    let t = Instant::now();
    let mut child = Command::new(support::proprio_bin())
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_BACKTRACE", "0")
        .env_remove("NATS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return Outcome {
                ok: status.success(),
                stderr,
                took: t.elapsed(),
            };
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "proprio {args:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const LIMIT: Duration = Duration::from_secs(8);

fn run_as_proprio<'a>(url: &'a str, pw: &'a str) -> ([&'a str; 4], [(&'a str, &'a str); 2]) {
    (
        ["run", "--nats", url, "--registry"],
        [
            ("PROPRIO_NATS_USER", "proprio"),
            ("PROPRIO_NATS_PASSWORD", pw),
        ],
    )
}

fn with_registry<'a>(a: [&'a str; 4], reg: &'a str) -> Vec<&'a str> {
    let mut v = a.to_vec();
    v.push(reg);
    v
}

#[test]
fn deploy_nats_conf_is_valid() {
    let out = Command::new(support::nats_server_bin())
        .arg("-t")
        .arg("-c")
        .arg(repo("deploy/nats.conf"))
        .envs([
            ("PROPRIO_NATS_PASSWORD", "a"),
            ("PUBLISHER_NATS_PASSWORD", "b"),
            ("WATCHER_NATS_PASSWORD", "c"),
            ("READER_NATS_PASSWORD", "d"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wrong_or_missing_credentials_are_clear_and_fast() {
    let s = Server::deploy(|c| c);
    let url = s.url();
    let reg = repo("deploy/services.yaml");
    let reg = reg.to_str().unwrap();
    let (args, _) = run_as_proprio(&url, "");

    let o = proprio(
        &with_registry(args, reg),
        &[
            ("PROPRIO_NATS_USER", "proprio"),
            ("PROPRIO_NATS_PASSWORD", "wr0ng-pass-123"),
        ],
        LIMIT,
    );
    o.failed_within(Duration::from_secs(5));
    assert!(
        o.stderr.contains("refused proprio's credentials"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.contains("nats.user and nats.password"),
        "{}",
        o.stderr
    );
    assert!(
        !o.stderr.contains("wr0ng-pass-123"),
        "the password leaked:\n{}",
        o.stderr
    );

    let o = proprio(&with_registry(args, reg), &[], LIMIT);
    assert!(!o.ok && o.took < Duration::from_secs(5));
    assert!(
        o.stderr.contains("the server requires credentials"),
        "{}",
        o.stderr
    );

    // The operator commands say the same.
    let o = proprio(
        &["digest", "--nats", &s.url_as("proprio", "nope-9")],
        &[],
        LIMIT,
    );
    assert!(
        !o.ok && o.stderr.contains("refused proprio's credentials"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("nope-9"), "{}", o.stderr);
}

#[test]
fn a_missing_permission_is_clear_and_fast() {
    let reg = repo("deploy/services.yaml");
    let reg = reg.to_str().unwrap();

    // proprio started with the telemetry publisher's account: no JetStream,
    // no proprio subjects.
    let s = Server::deploy(|c| c);
    let as_publisher = s.url_as("publisher", PUBLISHER_PW);
    let o = proprio(
        &["run", "--nats", &as_publisher, "--registry", reg],
        &[],
        LIMIT,
    );
    o.failed_within(Duration::from_secs(5));
    assert!(o.stderr.contains("Permissions Violation"), "{}", o.stderr);
    assert!(o.stderr.contains("deploy/nats.conf"), "{}", o.stderr);
    drop(s);

    // proprio's own user without the JetStream API.
    let s = Server::deploy(|c| c.replace(r#"allow: ["$JS.API.>", "#, "allow: ["));
    let url = s.url();
    let (args, envs) = run_as_proprio(&url, PROPRIO_PW);
    let o = proprio(&with_registry(args, reg), &envs, LIMIT);
    o.failed_within(Duration::from_secs(5));
    assert!(
        o.stderr.contains("Permissions Violation for Publish to"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("$JS.API"), "{}", o.stderr);
    drop(s);

    // ... or without its subjects: JetStream works, the trainer's subscription
    // to proprio.tick.train is refused once the roles run.
    let s = Server::deploy(|c| {
        c.replace(
            r#"allow: ["_INBOX.>", "proprio.>"]"#,
            r#"allow: ["_INBOX.>"]"#,
        )
    });
    let url = s.url();
    let (args, envs) = run_as_proprio(&url, PROPRIO_PW);
    let o = proprio(&with_registry(args, reg), &envs, LIMIT);
    o.failed_within(Duration::from_secs(5));
    assert!(
        o.stderr
            .contains("Permissions Violation for Subscription to"),
        "{}",
        o.stderr
    );
}

/// A client that records the permission violations the server reports.
async fn client_as(
    url: &str,
    user: &str,
    pw: &str,
) -> (
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let c = async_nats::ConnectOptions::with_user_and_password(user.into(), pw.into())
        .event_callback(move |ev| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = ev {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(url)
        .await
        .unwrap();
    (c, rx)
}

async fn refused(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str) {
    let e = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap_or_else(|_| panic!("{what}: no permission violation"))
        .unwrap();
    assert!(e.contains("Permissions Violation"), "{what}: {e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_privilege_holds_and_is_enough() {
    let s = Server::deploy(|c| c);
    let metrics = format!("127.0.0.1:{}", support::free_port());
    let reg = repo("deploy/services.yaml");
    let mut child = Command::new(support::proprio_bin())
        .args(["--metrics-addr", &metrics, "run", "--nats", &s.url()])
        .arg("--registry")
        .arg(&reg)
        .envs([
            ("PROPRIO_NATS_USER", "proprio"),
            ("PROPRIO_NATS_PASSWORD", PROPRIO_PW),
            // As docker-compose.yml runs it: scorers partitioned by source.
            ("PROPRIO_SCORER_PARTITIONS", "16"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let child = Kill(&mut child);
    let deadline = Instant::now() + Duration::from_secs(15);
    while proprio::endpoint::probe(&metrics, "/readyz", Duration::from_secs(1)).is_err() {
        assert!(
            child.0.try_wait().unwrap().is_none(),
            "proprio exited under deploy/nats.conf"
        );
        assert!(Instant::now() < deadline, "proprio never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The publisher's telemetry reaches proprio (across accounts)...
    let (publisher, mut pub_errors) = client_as(&s.url(), "publisher", PUBLISHER_PW).await;
    for i in 0..20 {
        let ev = format!(
            r#"{{"ts":{},"metrics":{{"cpu":{}}}}}"#,
            1_700_000_000_000i64 + i,
            20 + i % 3
        );
        publisher
            .publish("os.pulse.checkout", ev.into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let body = proprio::endpoint::probe(&metrics, "/metrics", Duration::from_secs(2)).unwrap();
        let sum = |prefix: &str| -> f64 {
            body.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
                .sum()
        };
        let received = sum(r#"proprio_events_received_total{role="harvester"}"#);
        // The partitioned scorer too: membership bucket, scoring stream and
        // pinned consumers all within the proprio user's permissions.
        let scored = sum("proprio_scorer_partition_events_total");
        let held = sum("proprio_scorer_partition_held");
        if received >= 20.0 && scored >= 20.0 && held == 16.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "telemetry never reached the harvester ({received}) and the partitioned scorer \
             ({scored}, holding {held} partitions)"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ... but it may do nothing else.
    publisher
        .publish("proprio.tick.train", "{}".into())
        .await
        .unwrap();
    publisher.flush().await.unwrap();
    refused(&mut pub_errors, "publisher publishing a tick").await;
    let _sub = publisher.subscribe("proprio.alert.>").await.unwrap();
    publisher.flush().await.unwrap();
    refused(&mut pub_errors, "publisher reading alerts").await;

    // The reader reads the digest from KV, and writes nothing.
    let (reader, mut reader_errors) = client_as(&s.url(), "reader", READER_PW).await;
    let js = async_nats::jetstream::new(reader.clone());
    let kv = js.get_key_value("proprio-state").await.unwrap();
    let digest = kv.get("digest").await.unwrap().expect("the warming digest");
    assert!(String::from_utf8_lossy(&digest).contains("[OS BASELINE]"));
    reader
        .publish("proprio.tick.train", "{}".into())
        .await
        .unwrap();
    reader.flush().await.unwrap();
    refused(&mut reader_errors, "reader publishing a tick").await;

    // proprio's user never publishes telemetry; its digests reach the
    // system's account (the watcher user) through the export.
    let (watcher, _) = client_as(&s.url(), "watcher", WATCHER_PW).await;
    let mut digests = watcher.subscribe("proprio.digest").await.unwrap();
    watcher.flush().await.unwrap();
    let (as_proprio, mut proprio_errors) = client_as(&s.url(), "proprio", PROPRIO_PW).await;
    as_proprio
        .publish("proprio.digest", "hello".into())
        .await
        .unwrap();
    as_proprio
        .publish("os.pulse.fake", "{}".into())
        .await
        .unwrap();
    as_proprio.flush().await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), digests.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&m.payload[..], b"hello");
    refused(&mut proprio_errors, "proprio publishing telemetry").await;

    assert!(
        child.0.try_wait().unwrap().is_none(),
        "proprio kept running throughout"
    );
}

#[test]
fn token_and_nkey_authentication() {
    // Token.
    let s = Server::start("jetstream {}\nauthorization { token: \"t0ken-abc\" }\n");
    let url = s.url();
    let o = proprio(
        &["digest", "--nats", &url],
        &[("PROPRIO_NATS_TOKEN", "t0ken-abc")],
        LIMIT,
    );
    assert!(o.ok, "{}", o.stderr);
    let o = proprio(
        &["digest", "--nats", &url],
        &[("PROPRIO_NATS_TOKEN", "t0ken-xyz")],
        LIMIT,
    );
    assert!(
        !o.ok && o.stderr.contains("check nats.token"),
        "{}",
        o.stderr
    );
    assert!(!o.stderr.contains("t0ken-xyz"));
    // ... also given in the URL.
    let o = proprio(
        &[
            "digest",
            "--nats",
            &format!("nats://t0ken-abc@127.0.0.1:{}", s.port),
        ],
        &[],
        LIMIT,
    );
    assert!(o.ok, "{}", o.stderr);
    drop(s);

    // NKey: the server knows the public key, proprio holds the seed.
    let kp = nkeys::KeyPair::new_user();
    let dir = tempfile::tempdir().unwrap();
    let seed = dir.path().join("proprio.nk");
    std::fs::write(&seed, format!("{}\n", kp.seed().unwrap())).unwrap();
    let s = Server::start(&format!(
        "jetstream {{}}\nauthorization {{ users: [ {{ nkey: {} }} ] }}\n",
        kp.public_key()
    ));
    let url = s.url();
    let with_seed = [
        "--nats-nkey",
        seed.to_str().unwrap(),
        "digest",
        "--nats",
        &url,
    ];
    let o = proprio(&with_seed, &[], LIMIT);
    assert!(o.ok, "{}", o.stderr);
    let other = nkeys::KeyPair::new_user();
    std::fs::write(&seed, other.seed().unwrap()).unwrap();
    let o = proprio(&with_seed, &[], LIMIT);
    assert!(
        !o.ok && o.stderr.contains("check nats.nkey"),
        "{}",
        o.stderr
    );
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `openssl req` with a new RSA key `<name>-key.pem`, writing `out` (a
/// request, or with `-x509` a self-signed certificate).
fn new_key(dir: &Path, name: &str, extra: &[&str], out: &str, subj: &str) -> bool {
    let key = format!("{name}-key.pem");
    let mut args = vec!["req"];
    args.extend_from_slice(extra);
    args.extend([
        "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", out, "-subj", subj,
    ]);
    openssl(dir, &args)
}

#[test]
fn tls_with_a_private_ca_and_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ext = d.join("san.ext");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    let made = new_key(
        d,
        "ca",
        &["-x509", "-days", "2"],
        "ca.pem",
        "/CN=proprio test CA",
    ) && ["server", "client"].iter().all(|n| {
        new_key(d, n, &[], &format!("{n}.csr"), &format!("/CN={n}"))
            && openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{n}.csr"),
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca-key.pem",
                    "-CAcreateserial",
                    "-out",
                    &format!("{n}.pem"),
                    "-days",
                    "2",
                    "-extfile",
                    "san.ext",
                ],
            )
    });
    if !made {
        eprintln!("openssl is not available: TLS test skipped");
        return;
    }
    let p = |f: &str| d.join(f).to_string_lossy().into_owned();
    let s = Server::start(&format!(
        "jetstream {{}}\ntls {{ cert_file: \"{}\", key_file: \"{}\", ca_file: \"{}\", verify: true, timeout: 2 }}\n",
        p("server.pem"),
        p("server-key.pem"),
        p("ca.pem")
    ));
    let url = s.url();
    let (ca, cert, key) = (p("ca.pem"), p("client.pem"), p("client-key.pem"));
    let digest = ["digest", "--nats", &url];
    let client_cert = ["--nats-tls-cert", &cert, "--nats-tls-key", &key];
    let o = proprio(
        &[&["--nats-tls-ca", &ca][..], &client_cert, &digest].concat(),
        &[],
        LIMIT,
    );
    assert!(o.ok, "{}", o.stderr);
    // The same through the environment.
    let o = proprio(
        &["digest", "--nats", &url],
        &[
            ("PROPRIO_NATS_TLS_CA", &ca),
            ("PROPRIO_NATS_TLS_CERT", &cert),
            ("PROPRIO_NATS_TLS_KEY", &key),
        ],
        LIMIT,
    );
    assert!(o.ok, "{}", o.stderr);
    // Without a client certificate the server refuses: a clear error, fast.
    let o = proprio(
        &["--nats-tls-ca", &ca, "digest", "--nats", &url],
        &[],
        LIMIT,
    );
    assert!(!o.ok && o.took < Duration::from_secs(6), "{:?}", o.took);
    assert!(
        o.stderr.contains("NATS at nats://127.0.0.1"),
        "{}",
        o.stderr
    );
    eprintln!(
        "without a client certificate: {}",
        o.stderr.lines().last().unwrap_or("")
    );
    // Without the CA, the server's certificate is not trusted.
    let o = proprio(&[&client_cert[..], &digest].concat(), &[], LIMIT);
    assert!(
        !o.ok && o.stderr.contains("TLS failed") && o.stderr.contains("nats.tls_ca"),
        "{}",
        o.stderr
    );
    eprintln!("without the CA: {}", o.stderr.lines().last().unwrap_or(""));
}
