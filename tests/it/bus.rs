//! The NATS plumbing against a real nats-server.

use crate::support;
use crate::support::proc::now_ms;

use async_nats::jetstream::stream;
use futures::StreamExt;
use proprio::alert::mute;
use proprio::bus::{Bus, BusConfig};
use proprio::cli_ops;
use proprio::contract::{self, alert};
use proprio::event::Reason;
use proprio::model_store;
use std::time::{Duration, Instant};
use support::NatsServer;

#[tokio::test]
async fn ensure_creates_everything_and_is_idempotent() {
    let server = NatsServer::start();
    let b = server.connect().await;
    // Two roles starting at once, then a third later.
    let (r1, r2) = tokio::join!(b.ensure(), b.ensure());
    r1.unwrap();
    r2.unwrap();
    b.ensure().await.unwrap();

    let js = b.js();
    let t = js.get_stream(contract::STREAM_TELEMETRY).await.unwrap();
    assert_eq!(t.cached_info().config.subjects, vec!["os.>".to_string()]);
    assert_eq!(
        t.cached_info().config.max_age,
        Duration::from_secs(24 * 3600)
    );
    assert_eq!(t.cached_info().config.storage, stream::StorageType::File);
    let c = js.get_stream(contract::STREAM_CURRICULUM).await.unwrap();
    assert_eq!(
        c.cached_info().config.subjects,
        vec!["proprio.curriculum.>".to_string()]
    );
    let a = js.get_stream(contract::STREAM_ALERTS).await.unwrap();
    assert_eq!(
        a.cached_info().config.max_age,
        Duration::from_secs(7 * 24 * 3600)
    );
    assert_eq!(
        a.cached_info().config.duplicate_window,
        Duration::from_secs(3600)
    );
    let d = js.get_stream(contract::STREAM_DLQ).await.unwrap();
    assert_eq!(
        d.cached_info().config.subjects,
        vec!["proprio.dlq.>".to_string()]
    );
    b.kv().await.unwrap();
    b.js()
        .get_object_store(contract::BUCKET_MODELS)
        .await
        .unwrap();
}

#[tokio::test]
async fn ensure_leaves_existing_resources_alone() {
    let server = NatsServer::start();
    let b = server.connect().await;
    // An operator made the alerts stream first, with their own retention.
    b.js()
        .create_stream(stream::Config {
            name: contract::STREAM_ALERTS.into(),
            subjects: vec!["proprio.raise.>".into()],
            max_age: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .unwrap();
    b.ensure().await.unwrap();
    let a = b.js().get_stream(contract::STREAM_ALERTS).await.unwrap();
    assert_eq!(a.cached_info().config.max_age, Duration::from_secs(3600));
}

/// Connects to `url`, which must fail within seconds and say so; the error.
async fn refused_fast(url: &str) -> String {
    let t0 = Instant::now();
    let err = Bus::connect(&BusConfig::with_url(url)).await.unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    let msg = format!("{err:#}");
    assert!(msg.contains("cannot connect to NATS"), "{msg}");
    msg
}

#[tokio::test]
async fn connecting_to_a_dead_port_fails_fast_and_clearly() {
    let port = support::free_port();
    let msg = refused_fast(&format!("nats://127.0.0.1:{port}")).await;
    assert!(msg.contains(&port.to_string()), "{msg}");
}

/// A cluster's servers as one comma-separated `nats.url` (the README's
/// Scaling section): the dead first one is skipped, the live one serves; a
/// malformed entry is a clear error naming it.
#[tokio::test]
async fn a_comma_separated_server_list_connects_to_a_live_one() {
    let server = NatsServer::start();
    let dead = support::free_port();
    let urls = format!("nats://127.0.0.1:{dead}, {}", server.url);
    let b = Bus::connect(&BusConfig::with_url(&urls)).await.unwrap();
    b.ensure().await.unwrap();
    let err = Bus::connect(&BusConfig::with_url(format!(
        "{},nats://host:notaport",
        server.url
    )))
    .await
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("nats://host:notaport"),
        "{err:#}"
    );
}

#[tokio::test]
async fn a_root_overlapping_proprio_is_refused() {
    let server = NatsServer::start();
    let cfg = BusConfig {
        root: "proprio".into(),
        ..BusConfig::with_url(&server.url)
    };
    assert!(Bus::connect(&cfg).await.is_err());
}

#[tokio::test]
async fn dlq_carries_reason_detail_subject_and_original_bytes() {
    let server = NatsServer::start();
    let b = server.bus().await;
    b.publish_dlq(
        Reason::Decode,
        "not a map\nsecond line",
        "os.pulse.svc",
        &b"\xff\x00junk"[..],
        None,
    )
    .await
    .unwrap();
    let mut n = 0;
    b.scan_since(contract::STREAM_DLQ, "proprio.dlq.decode", 0, |m, _| {
        let h = m.headers.as_ref().unwrap();
        assert_eq!(h.get(contract::HEADER_REASON).unwrap().as_str(), "decode");
        assert_eq!(
            h.get(contract::HEADER_DETAIL).unwrap().as_str(),
            "not a map second line"
        );
        assert_eq!(
            h.get(contract::HEADER_SUBJECT).unwrap().as_str(),
            "os.pulse.svc"
        );
        assert_eq!(&m.payload[..], b"\xff\x00junk");
        n += 1;
    })
    .await
    .unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn read_since_returns_the_window_and_stops() {
    let server = NatsServer::start();
    let b = server.bus().await;
    for i in 0..3 {
        b.publish_acked("proprio.curriculum.temporal", format!("old{i}"), None)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cut = now_ms();
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..5 {
        b.publish_acked("proprio.curriculum.nervous", format!("new{i}"), None)
            .await
            .unwrap();
    }
    let t0 = Instant::now();
    let all = b
        .read_since(
            contract::STREAM_CURRICULUM,
            contract::SUBJECT_CURRICULUM_ALL,
            0,
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    let recent = b
        .read_since(
            contract::STREAM_CURRICULUM,
            contract::SUBJECT_CURRICULUM_ALL,
            cut,
        )
        .await
        .unwrap();
    let texts: Vec<_> = recent
        .iter()
        .map(|(p, _)| String::from_utf8_lossy(p).to_string())
        .collect();
    assert_eq!(texts, ["new0", "new1", "new2", "new3", "new4"]);
    assert!(recent.iter().all(|(_, ts)| *ts >= cut));
    let filtered = b
        .read_since(
            contract::STREAM_CURRICULUM,
            "proprio.curriculum.temporal",
            0,
        )
        .await
        .unwrap();
    assert_eq!(filtered.len(), 3);
    let none = b
        .read_since(contract::STREAM_ALERTS, contract::SUBJECT_RAISE_ALL, 0)
        .await
        .unwrap();
    assert!(none.is_empty());
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "reads must not wait for more"
    );
}

#[tokio::test]
async fn publish_once_dedups_by_id() {
    let server = NatsServer::start();
    let b = server.bus().await;
    assert!(b
        .publish_once("proprio.raise.a", "x", None, "id-1")
        .await
        .unwrap());
    assert!(!b
        .publish_once("proprio.raise.a", "x", None, "id-1")
        .await
        .unwrap());
    assert!(b
        .publish_once("proprio.raise.a", "y", None, "id-2")
        .await
        .unwrap());
    assert_eq!(raised(&b).await, 2);
}

/// How many raises the alerts stream holds.
async fn raised(b: &Bus) -> usize {
    b.read_since(contract::STREAM_ALERTS, contract::SUBJECT_RAISE_ALL, 0)
        .await
        .unwrap()
        .len()
}

/// A subscriber to `proprio.alert.>` sees an alert once, however often it is
/// raised: the alerts stream stores it once per id and republishes only what
/// it stored.
#[tokio::test]
async fn a_raised_alert_reaches_subscribers_once() {
    let server = NatsServer::start();
    let b = server.bus().await;
    let mut sub = b.client().subscribe("proprio.alert.>").await.unwrap();
    b.client().flush().await.unwrap();
    let a = |id: &str, source: &str| alert::Alert {
        id: id.into(),
        ts: now_ms(),
        source: source.into(),
        key: source.into(),
        kind: proprio::event::Kind::Log,
        score: 9.0,
        loss: 5.0,
        baseline: alert::AlertBaseline {
            median: 1.0,
            scale: 0.5,
            of: alert::BaselineOf::Key,
        },
        rendered: "log x OOMKilled".into(),
        span: alert::Span {
            text: "OOMKilled".into(),
            start: 0,
            end: 1,
            loss: 6.0,
        },
        diagnosis: None,
        model: None,
        reason: alert::AlertReason::Surprise,
        previous_epoch: false,
    };
    assert!(b.publish_alert(&a("T:1", "svc.a")).await.unwrap());
    assert!(!b.publish_alert(&a("T:1", "svc.a")).await.unwrap());
    assert!(b.publish_alert(&a("T:2", "svc-b")).await.unwrap());
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        let al = alert::Alert::decode(&m.payload).unwrap();
        got.push((m.subject.to_string(), al.id));
    }
    assert_eq!(
        got,
        [
            ("proprio.alert.svc_a".to_string(), "T:1".to_string()),
            ("proprio.alert.svc-b".to_string(), "T:2".to_string())
        ]
    );
    assert_eq!(raised(&b).await, 2);
}

#[tokio::test]
async fn publish_acked_fails_when_no_stream_captures_the_subject() {
    let server = NatsServer::start();
    let b = server.bus().await;
    let t0 = Instant::now();
    assert!(b.publish_acked("nobody.listens", "x", None).await.is_err());
    assert!(t0.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn kv_mutes_and_models() {
    let server = NatsServer::start();
    let b = server.bus().await;
    assert_eq!(b.get("nope").await.unwrap(), None);
    b.put(contract::KEY_MODEL, "v1").await.unwrap();
    assert_eq!(
        &b.get(contract::KEY_MODEL).await.unwrap().unwrap()[..],
        b"v1"
    );

    let now = now_ms();
    assert_eq!(mute::until(&b, "AitherMind").await.unwrap(), None);
    mute::set(&b, "AitherMind", now + 60_000).await.unwrap();
    assert_eq!(
        mute::until(&b, "AitherMind").await.unwrap(),
        Some(now + 60_000)
    );
    assert!(mute::is_muted(&b, "AitherMind", now).await.unwrap());
    assert!(
        !mute::is_muted(&b, "AitherMind", now + 60_001)
            .await
            .unwrap(),
        "expired"
    );
    assert!(!mute::is_muted(&b, "other", now).await.unwrap());
    // A source name that is not a valid KV key can still be muted.
    mute::set(&b, "gpu:0 worker", now + 1000).await.unwrap();
    assert!(mute::is_muted(&b, "gpu:0 worker", now).await.unwrap());

    // Through the CLI: --for 1h, then --for 0.
    let said = cli_ops::set_mute(&b, "AitherMind", Duration::from_secs(3600), now)
        .await
        .unwrap();
    assert!(said.starts_with("muted AitherMind until "), "{said}");
    assert_eq!(
        mute::until(&b, "AitherMind").await.unwrap(),
        Some(now + 3_600_000)
    );
    let said = cli_ops::set_mute(&b, "AitherMind", Duration::ZERO, now)
        .await
        .unwrap();
    assert_eq!(said, "unmuted AitherMind");
    assert_eq!(mute::until(&b, "AitherMind").await.unwrap(), None);

    let model: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    model_store::put(&b, "m-1", &model).await.unwrap();
    assert_eq!(model_store::get(&b, "m-1").await.unwrap().unwrap(), model);
    assert_eq!(model_store::get(&b, "m-2").await.unwrap(), None);
}

#[tokio::test]
async fn digest_command_prints_warming_then_the_stored_digest() {
    let server = NatsServer::start();
    let b = server.connect().await;
    // Before proprio ever ran here.
    let t = cli_ops::digest_text(&b, false, now_ms()).await.unwrap();
    assert!(t.starts_with("[OS BASELINE]\nbaseline: warming"), "{t}");
    let j = cli_ops::digest_text(&b, true, now_ms()).await.unwrap();
    assert!(j.contains("\"warming\""), "{j}");

    b.ensure().await.unwrap();
    let text = "[OS BASELINE]\nbaseline: trained (loss=0.82), 3 anomalies in 24h\nrecent: none\n[/OS BASELINE]";
    b.put(contract::KEY_DIGEST, text).await.unwrap();
    b.put(contract::KEY_DIGEST_JSON, "{\"state\":\"trained\"}")
        .await
        .unwrap();
    assert_eq!(cli_ops::digest_text(&b, false, 0).await.unwrap(), text);
    assert_eq!(
        cli_ops::digest_text(&b, true, 0).await.unwrap(),
        "{\"state\":\"trained\"}"
    );
}

#[tokio::test]
async fn alerts_command_lists_stored_alerts_one_line_each() {
    let server = NatsServer::start();
    let b = server.bus().await;
    // An alert as any publisher would write it, in JSON.
    let alert = serde_json::json!({
        "id": "PROPRIO_TELEMETRY:7", "ts": 1_714_533_127_000i64, "source": "AitherMind",
        "key": "AitherMind", "kind": "log", "score": 4.25, "loss": 3.1,
        "baseline": {"median": 1.0, "scale": 0.5, "of": "key"},
        "rendered": "log AitherMind OOMKilled", "span": {"text": "OOMKilled", "start": 2, "end": 5, "loss": 6.0},
        "diagnosis": "OOM killed", "model": "m-1", "reason": "surprise"
    });
    b.publish_acked("proprio.raise.AitherMind", alert.to_string(), None)
        .await
        .unwrap();
    b.publish_acked("proprio.raise.x", "garbage", None)
        .await
        .unwrap();
    let lines = cli_ops::alert_lines(&b, 0, false).await.unwrap();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        lines[0],
        "2024-05-01T03:12:07Z surprise AitherMind log score=4.2 OOM killed: log AitherMind OOMKilled"
    );
    assert!(lines[1].starts_with("(undecodable alert"), "{}", lines[1]);
    let json = cli_ops::alert_lines(&b, 0, true).await.unwrap();
    let v: serde_json::Value = serde_json::from_str(&json[0]).unwrap();
    assert_eq!(v["source"], "AitherMind");
}

#[tokio::test]
async fn tick_reaches_a_subscriber() {
    let server = NatsServer::start();
    let b = server.connect().await;
    let mut sub = b
        .client()
        .subscribe(contract::SUBJECT_TICK_TRAIN)
        .await
        .unwrap();
    b.client().flush().await.unwrap();
    cli_ops::send_tick(&b, 42).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(v["ts"], 42);
}

#[tokio::test]
async fn a_server_refusing_us_fails_fast_and_clearly() {
    let server = NatsServer::start_with_args(&["--user", "ops", "--pass", "secret"]);
    refused_fast(&server.url).await;
}

#[tokio::test]
async fn an_oversized_dead_letter_is_cut_not_lost() {
    let server = NatsServer::start();
    let b = server.bus().await;
    let big = vec![b'x'; 900 * 1024];
    b.publish_dlq(Reason::TooLarge, "too big", "os.log.svc", big, None)
        .await
        .unwrap();
    let mut n = 0;
    b.scan_since(
        contract::STREAM_DLQ,
        contract::SUBJECT_DLQ_ALL,
        0,
        |m, _| {
            let h = m.headers.as_ref().unwrap();
            assert_eq!(
                h.get(contract::HEADER_TRUNCATED).unwrap().as_str(),
                "921600"
            );
            assert_eq!(m.payload.len(), contract::DLQ_MAX_PAYLOAD);
            n += 1;
        },
    )
    .await
    .unwrap();
    assert_eq!(n, 1);
}

/// Adaptive batching ([`proprio::bus::Feed::cut`]): what is already
/// delivered goes into the batch at once, up to its size; without a linger a
/// lone message does not wait for company; with one it waits, and no longer.
#[tokio::test]
async fn a_batch_takes_what_is_there_and_waits_only_when_asked() {
    let server = NatsServer::start();
    let b = server.bus().await;
    for i in 0..300 {
        b.publish_acked("os.svc.flux.a", format!("{{\"i\":{i}}}"), None)
            .await
            .unwrap();
    }
    let mut feed = b
        .feed(contract::STREAM_TELEMETRY, "cut-test", "os.>")
        .await
        .unwrap();
    let first = feed.next().await;
    // Let the pull's first batch arrive in full.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let batch = feed.cut(first, 100, None).await;
    assert_eq!(batch.len(), 100, "what is there fills the batch at once");
    for m in &batch {
        m.ack().await.unwrap();
    }
    // Drain the rest, then a lone message.
    let mut left = 200;
    while left > 0 {
        let first = feed.next().await;
        let batch = feed.cut(first, 256, None).await;
        left -= batch.len();
        for m in &batch {
            m.ack().await.unwrap();
        }
    }
    b.publish_acked("os.svc.flux.a", "{\"lone\":1}", None)
        .await
        .unwrap();
    let first = feed.next().await;
    let t = Instant::now();
    let batch = feed.cut(first, 256, None).await;
    assert_eq!(batch.len(), 1);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
    batch[0].ack().await.unwrap();
    // Asked to linger, it waits for company until the deadline.
    b.publish_acked("os.svc.flux.a", "{\"lone\":2}", None)
        .await
        .unwrap();
    let first = feed.next().await;
    let t = Instant::now();
    let batch = feed.cut(first, 256, Some(Duration::from_millis(200))).await;
    let waited = t.elapsed();
    assert_eq!(batch.len(), 1);
    assert!(
        waited >= Duration::from_millis(190) && waited < Duration::from_secs(2),
        "{waited:?}"
    );
}
