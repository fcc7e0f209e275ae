//! The incident message against its vectors: both forms decode to the same
//! incident, proprio encodes exactly the vector's bytes, and the subject,
//! KV key and `Nats-Msg-Id` are the ones the vectors name.

use super::{load, unhex};
use proprio::contract::incident::{Incident, IncidentState};

#[test]
fn incident_vectors_decode_and_round_trip() {
    let f = load("incident.json");
    assert_eq!(f["version"], 1);
    let mut states = Vec::new();
    for v in f["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let want: Incident = serde_json::from_value(v["incident"].clone()).unwrap();
        let json = v["json"].as_str().unwrap().as_bytes();
        let mp = unhex(v["msgpack_hex"].as_str().unwrap());
        assert_eq!(Incident::decode(json).unwrap(), want, "{name} json");
        assert_eq!(Incident::decode(&mp).unwrap(), want, "{name} msgpack");
        assert_eq!(
            hex::encode(want.to_msgpack()),
            v["msgpack_hex"].as_str().unwrap(),
            "{name}: encoder bytes"
        );
        assert_eq!(Incident::decode(want.to_json().as_bytes()).unwrap(), want);
        assert_eq!(want.subject(), v["subject"].as_str().unwrap(), "{name}");
        assert_eq!(want.id, v["kv_key"].as_str().unwrap(), "{name}");
        assert_eq!(want.msg_id(), v["msg_id"].as_str().unwrap(), "{name}");
        // The root is the first suspect; suspects are ranked; the blast
        // radius lists every suspect.
        assert_eq!(want.root().unwrap().source, want.suspects[0].source);
        assert!(want.suspects.windows(2).all(|w| w[0].rank >= w[1].rank));
        let mut radius = want.sources.clone();
        let mut suspects: Vec<_> = want.suspects.iter().map(|s| s.source.clone()).collect();
        radius.sort();
        suspects.sort();
        assert_eq!(radius, suspects, "{name}");
        assert_eq!(
            want.resolved_ts.is_some(),
            want.state == IncidentState::Resolved
        );
        assert_eq!(
            want.confirmed_ts.is_none(),
            want.state == IncidentState::Pending,
            "{name}: confirmed unless pending"
        );
        states.push(want.state);
    }
    assert_eq!(
        states,
        [
            IncidentState::Open,
            IncidentState::Resolved,
            IncidentState::Pending
        ]
    );
}

#[test]
fn broken_incidents_are_errors_not_panics() {
    assert!(Incident::decode(b"").is_err());
    assert!(Incident::decode(b"{\"id\":1}").is_err());
    assert!(Incident::decode(&[0x93, 1, 2, 3]).is_err());
    assert!(Incident::decode(b"{\"id\":\"x\",\"state\":\"maybe\"}").is_err());
    let f = load("incident.json");
    let mut mp = unhex(f["vectors"][0]["msgpack_hex"].as_str().unwrap());
    mp.truncate(mp.len() / 2);
    assert!(Incident::decode(&mp).is_err());
}

#[test]
fn readme_documents_every_incident_field_and_name() {
    let readme = std::fs::read_to_string(super::proto().join("README.md")).unwrap();
    let f = load("incident.json");
    let inc = &f["vectors"][0]["incident"];
    let suspect = &inc["suspects"][0];
    let fields = inc
        .as_object()
        .unwrap()
        .keys()
        .chain(suspect.as_object().unwrap().keys());
    for k in fields {
        assert!(
            readme.contains(&format!("`{k}`")),
            "proto/README.md lacks field {k}"
        );
    }
    use proprio::contract::*;
    for name in [
        STREAM_INCIDENTS,
        BUCKET_INCIDENTS,
        CONSUMER_INCIDENTS,
        SUBJECT_INCIDENTS_ALL,
    ] {
        assert!(
            readme.contains(&format!("`{name}`")),
            "proto/README.md lacks {name}"
        );
    }
}
