//! The decoder's limits (string bytes, entries, non-finite numbers, all
//! configurable) and garbage in: deep nesting, wrong types and mutated
//! vectors are errors with a reason, never a panic.

use super::{decode, load, payloads, T};
use crate::support;
use proprio::event::{Event, Kind, Limits, Reason, Reject, Scalar, WireEvent};
use serde_json::Value;

/// A complete, valid JSON event of `kind`.
fn base(kind: Kind) -> Value {
    let mut v = serde_json::json!({"ts": T, "source": "svc", "kind": kind.as_str()});
    let extra = match kind {
        Kind::Flux => {
            serde_json::json!({"event": "started", "state": "healthy", "attrs": {"a": "x"}})
        }
        Kind::Pulse => serde_json::json!({"metrics": {"cpu": 1.0}}),
        Kind::Log => serde_json::json!({"message": "hi", "level": "info"}),
        Kind::Chronicle => {
            serde_json::json!({"actor": "a", "action": "b", "target": "c", "outcome": "d"})
        }
        Kind::Trace => {
            serde_json::json!({"phase": "act", "request": "r", "summary": "s", "duration_ms": 1.5})
        }
        Kind::Graph => serde_json::json!({"graph": "g", "src": "a", "rel": "calls", "dst": "b"}),
    };
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn decode_json(v: &Value) -> Result<Event, Reject> {
    decode(serde_json::to_string(v).unwrap().as_bytes(), None, None)
}

fn decode_msgpack(v: &Value) -> Result<Event, Reject> {
    let w: WireEvent = serde_json::from_value(v.clone()).unwrap();
    decode(&rmp_serde::to_vec_named(&w).unwrap(), None, None)
}

#[test]
fn string_limits_are_enforced_in_bytes() {
    let names: &[(Kind, &[&str])] = &[
        (Kind::Flux, &["source", "key", "event", "state"]),
        (Kind::Pulse, &["source", "key"]),
        (Kind::Log, &["level"]),
        (Kind::Chronicle, &["actor", "action", "target", "outcome"]),
        (Kind::Trace, &["request"]),
        (Kind::Graph, &["graph", "src", "rel", "dst"]),
    ];
    for (kind, fields) in names {
        for f in *fields {
            let mut v = base(*kind);
            v[*f] = Value::String("n".repeat(128));
            decode_json(&v).unwrap_or_else(|e| panic!("{kind} {f} at 128 bytes: {e}"));
            v[*f] = Value::String("n".repeat(129));
            let e = decode_json(&v).unwrap_err();
            assert_eq!(e.reason, Reason::TooLong, "{kind} {f}");
            assert_eq!(
                e.to_string(),
                format!("too_long: {f} is 129 bytes > limit 128")
            );
            // Bytes, not characters: 65 two-byte characters are 130 bytes.
            v[*f] = Value::String("é".repeat(65));
            assert_eq!(
                decode_msgpack(&v).unwrap_err().reason,
                Reason::TooLong,
                "{kind} {f}"
            );
            // Names must not be empty.
            v[*f] = Value::String(String::new());
            assert_eq!(
                decode_json(&v).unwrap_err().reason,
                Reason::MissingField,
                "{kind} {f}"
            );
        }
    }
    let texts: &[(Kind, &str)] = &[(Kind::Log, "message"), (Kind::Trace, "summary")];
    for (kind, f) in texts {
        let mut v = base(*kind);
        v[*f] = Value::String("t".repeat(4096));
        decode_json(&v).unwrap_or_else(|e| panic!("{kind} {f} at 4096 bytes: {e}"));
        v[*f] = Value::String("t".repeat(4097));
        let e = decode_msgpack(&v).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("too_long: {f} is 4097 bytes > limit 4096")
        );
    }
    let mut v = base(Kind::Flux);
    v["attrs"] = serde_json::json!({"k": "v".repeat(4097)});
    assert_eq!(
        decode_json(&v).unwrap_err().to_string(),
        "too_long: attrs value is 4097 bytes > limit 4096"
    );
    v["attrs"] = serde_json::json!({"k".repeat(129): 1});
    assert_eq!(
        decode_json(&v).unwrap_err().to_string(),
        "too_long: attrs key is 129 bytes > limit 128"
    );
    let mut v = base(Kind::Pulse);
    v["metrics"] = serde_json::json!({"m".repeat(129): 1});
    assert_eq!(
        decode_json(&v).unwrap_err().to_string(),
        "too_long: metric name is 129 bytes > limit 128"
    );
}

#[test]
fn entry_limits_are_enforced() {
    for (kind, field, what) in [
        (Kind::Pulse, "metrics", "metrics"),
        (Kind::Flux, "attrs", "attrs"),
    ] {
        let mut v = base(kind);
        let map = |n: usize| -> Value {
            (0..n)
                .map(|i| (format!("m{i:02}"), serde_json::json!(i as f64 + 0.5)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        v[field] = map(64);
        decode_msgpack(&v).unwrap_or_else(|e| panic!("{kind}: 64 entries: {e}"));
        v[field] = map(65);
        let e = decode_msgpack(&v).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("too_many: {what} has 65 entries > limit 64")
        );
        assert_eq!(decode_json(&v).unwrap_err().reason, Reason::TooMany);
    }
}

#[test]
fn non_finite_numbers_are_bad_values() {
    for x in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut w: WireEvent = serde_json::from_value(base(Kind::Pulse)).unwrap();
        w.metrics = Some([("cpu".to_string(), x)].into_iter().collect());
        let e = decode(&rmp_serde::to_vec_named(&w).unwrap(), None, None).unwrap_err();
        assert_eq!(e.reason, Reason::BadValue, "{x}");
        assert_eq!(e.to_string(), format!("bad_value: metric cpu is {x}"));

        let mut w: WireEvent = serde_json::from_value(base(Kind::Flux)).unwrap();
        w.attrs = Some([("x".to_string(), Scalar::Float(x))].into_iter().collect());
        let e = decode(&rmp_serde::to_vec_named(&w).unwrap(), None, None).unwrap_err();
        assert_eq!(e.reason, Reason::BadValue, "attr {x}");

        let mut w: WireEvent = serde_json::from_value(base(Kind::Trace)).unwrap();
        w.duration_ms = Some(x);
        let e = decode(&rmp_serde::to_vec_named(&w).unwrap(), None, None).unwrap_err();
        assert_eq!(e.reason, Reason::BadValue, "duration {x}");
    }
    // JSON has no NaN or infinity: such text is not JSON at all.
    for bad in ["NaN", "Infinity", "-Infinity", "1e999"] {
        let p = format!(r#"{{"ts":{T},"source":"s","kind":"pulse","metrics":{{"cpu":{bad}}}}}"#);
        assert_eq!(
            decode(p.as_bytes(), None, None).unwrap_err().reason,
            Reason::Decode,
            "{bad}"
        );
    }
}

#[test]
fn limits_are_configurable() {
    let small = Limits {
        max_payload: 100,
        max_name: 4,
        max_text: 8,
        max_entries: 1,
        max_skew_ms: 1000,
    };
    let d = |v: Value, now: Option<i64>| {
        Event::decode(
            serde_json::to_string(&v).unwrap().as_bytes(),
            None,
            &small,
            now,
        )
    };
    let mut v = base(Kind::Log);
    v["source"] = "abcd".into();
    v["message"] = "12345678".into();
    d(v.clone(), Some(T + 1000)).unwrap();
    assert_eq!(
        d(v.clone(), Some(T + 1001)).unwrap_err().reason,
        Reason::BadTimestamp
    );
    v["message"] = "123456789".into();
    assert_eq!(d(v.clone(), None).unwrap_err().reason, Reason::TooLong);
    v["message"] = "x".repeat(60).into();
    assert_eq!(d(v, None).unwrap_err().reason, Reason::TooLarge);
    let mut v = base(Kind::Pulse);
    v["source"] = "abcd".into();
    v["metrics"] = serde_json::json!({"a": 1, "b": 2});
    assert_eq!(d(v, None).unwrap_err().reason, Reason::TooMany);
}

// --------------------------------------------------------- garbage in, no panic

fn outcome(p: &[u8], subject: Option<&str>) -> Result<Event, Reject> {
    decode(p, subject, Some(T))
}

const SUBJECTS: [Option<&str>; 4] = [
    None,
    Some("os.pulse.svc"),
    Some("os.log.svc"),
    Some("os.flux.svc.started"),
];

#[test]
fn deep_nesting_is_an_error_not_a_crash() {
    let depth = 30_000; // well past any recursion limit, within 64 KiB
    let mut mp_unknown = vec![0x84];
    for (k, v) in [
        ("ts", rmp_serde::to_vec(&T).unwrap()),
        ("source", rmp_serde::to_vec("s").unwrap()),
        ("kind", rmp_serde::to_vec("flux").unwrap()),
    ] {
        mp_unknown.extend(rmp_serde::to_vec(k).unwrap());
        mp_unknown.extend(v);
    }
    let mut mp_attrs = mp_unknown.clone();
    mp_unknown.extend(rmp_serde::to_vec("x").unwrap());
    mp_attrs.extend(rmp_serde::to_vec("attrs").unwrap());
    mp_attrs.extend([0x81]);
    mp_attrs.extend(rmp_serde::to_vec("a").unwrap());
    for p in [&mut mp_unknown, &mut mp_attrs] {
        p.extend(std::iter::repeat_n(0x91, depth));
        p.push(0x90);
    }
    let nest = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let js_attrs =
        format!(r#"{{"ts":{T},"source":"s","kind":"flux","event":"e","attrs":{{"a":{nest}}}}}"#);
    let js_metrics =
        format!(r#"{{"ts":{T},"source":"s","kind":"pulse","metrics":{{"a":{nest}}}}}"#);
    let js_maps = format!(
        r#"{{"ts":{T},"x":{}1{}}}"#,
        r#"{"a":"#.repeat(depth / 4),
        "}".repeat(depth / 4)
    );
    assert!(js_maps.len() < 64 * 1024 && js_attrs.len() < 64 * 1024 && mp_attrs.len() < 64 * 1024);
    for subject in SUBJECTS {
        for p in [&mp_unknown, &mp_attrs] {
            let e = outcome(p, subject).unwrap_err();
            assert!(
                matches!(e.reason, Reason::Decode | Reason::InvalidUtf8),
                "{subject:?}: {e}"
            );
        }
        for p in [&js_attrs, &js_metrics] {
            let r = outcome(p.as_bytes(), subject);
            if subject != Some("os.log.svc") {
                assert_eq!(r.unwrap_err().reason, Reason::Decode, "{subject:?}");
            }
        }
        let _ = outcome(js_maps.as_bytes(), subject);
    }
}

#[test]
fn wrong_types_are_decode_errors() {
    let wrong = [
        serde_json::json!("text"),
        serde_json::json!(-3),
        serde_json::json!(2.5),
        serde_json::json!(true),
        serde_json::json!([1, "a"]),
        serde_json::json!({"a": {"b": [1]}}),
    ];
    for kind in Kind::ALL {
        for &f in support::EVENT_FIELDS {
            for w in &wrong {
                let mut v = base(kind);
                v[f] = w.clone();
                let js = serde_json::to_vec(&v).unwrap();
                // Encoded from the JSON value, so the wrong type survives.
                let mp = rmp_serde::to_vec_named(&v).unwrap();
                for p in [&js, &mp] {
                    for subject in [None, Some("os.pulse.svc")] {
                        match outcome(p, subject) {
                            Ok(_) => {}
                            Err(e) => assert!(!e.detail.is_empty()),
                        }
                    }
                    // A string where a string belongs is fine; a map where a string belongs is not.
                    if w.is_object() && !matches!(f, "attrs" | "metrics") {
                        assert_eq!(
                            outcome(p, None).unwrap_err().reason,
                            Reason::Decode,
                            "{kind} {f}={w}"
                        );
                    }
                }
            }
        }
    }
    // ts out of i64 range, or negative.
    let big = r#"{"ts":18446744073709551615,"source":"s","kind":"log","message":"m"}"#;
    assert_eq!(
        outcome(big.as_bytes(), None).unwrap_err().reason,
        Reason::Decode
    );
    let neg = r#"{"ts":-5,"source":"s","kind":"log","message":"m"}"#;
    assert_eq!(
        outcome(neg.as_bytes(), None).unwrap_err().reason,
        Reason::BadTimestamp
    );
}

#[test]
fn mutated_vectors_never_panic() {
    let f = load("events.json");
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n = 0;
    for v in f["vectors"].as_array().unwrap() {
        for (_, p) in payloads(v) {
            for _ in 0..300 {
                let mut q = p.clone();
                for _ in 0..(rnd() % 4 + 1) {
                    if q.is_empty() {
                        break;
                    }
                    let i = (rnd() as usize) % q.len();
                    match rnd() % 4 {
                        0 => q[i] = rnd() as u8,
                        1 => q.truncate(i),
                        2 => q.insert(
                            i,
                            [0xc1, 0xdf, 0xff, b'{', b'"', 0x00][(rnd() % 6) as usize],
                        ),
                        _ => {
                            q.remove(i);
                        }
                    }
                }
                for subject in SUBJECTS {
                    let _ = outcome(&q, subject);
                }
                n += 1;
            }
        }
    }
    assert!(n > 10_000);
}
