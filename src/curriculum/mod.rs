//! The five curricula: every event becomes one line of text ("a sentence")
//! with special tokens for the OS concepts, and the registry becomes the
//! axiomatic and topology lines.
//!
//! Two choices here decide what the model can learn:
//! - volatile parts of free text (ids, hex, IPs, UUIDs, long numbers) are
//!   masked, so that randomness is not mistaken for surprise; loopback
//!   addresses are kept, since calling localhost is itself a failure pattern;
//! - metric values are written compactly (2 significant digits with an SI
//!   suffix, or a magnitude bucket), so that a value's size is a few tokens,
//!   or, for a pulse, relative to its own series ([`Scaler`]), so that what
//!   is usual reads the same for every series. That makes rendering a walk
//!   over the stream: every reader keeps its own [`Scaler`].

mod render;
mod repeats;
mod said;
mod sample;
mod scale;
mod settings;
mod sudden;

pub use render::{escape, Renderer};
pub use repeats::Repeats;
pub use said::Said;
pub use sample::{Sample, Sampler, Sampling};
pub use scale::{Reading, Scaled, Scaler, Word};
pub use settings::{MaskSpec, MetricFormat, RenderConfig};

use crate::event::{Event, Kind};
use crate::registry::Registry;
use serde::{Deserialize, Serialize};

/// The five curricula.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Curriculum {
    Axiomatic,
    Nervous,
    Temporal,
    Reasoning,
    Topology,
}

impl Curriculum {
    pub const ALL: [Curriculum; 5] = [
        Curriculum::Axiomatic,
        Curriculum::Nervous,
        Curriculum::Temporal,
        Curriculum::Reasoning,
        Curriculum::Topology,
    ];

    pub fn of(kind: Kind) -> Curriculum {
        match kind {
            Kind::Flux => Curriculum::Nervous,
            Kind::Pulse | Kind::Log | Kind::Chronicle => Curriculum::Temporal,
            Kind::Trace => Curriculum::Reasoning,
            Kind::Graph => Curriculum::Topology,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Curriculum::Axiomatic => "axiomatic",
            Curriculum::Nervous => "nervous",
            Curriculum::Temporal => "temporal",
            Curriculum::Reasoning => "reasoning",
            Curriculum::Topology => "topology",
        }
    }
}

/// A rendered curriculum document: what the harvester publishes on
/// `proprio.curriculum.<curriculum>` and the trainer harvests. It carries the
/// fingerprint epoch it was rendered under, so the trainer can refuse
/// documents that describe an architecture that no longer exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// Event time, unix milliseconds.
    pub ts: i64,
    /// The scoring context (the event's key); training streams are per key.
    pub key: String,
    pub source: String,
    /// The event's kind; none for the registry's documents.
    pub kind: Option<Kind>,
    pub curriculum: Curriculum,
    /// The rendered line.
    pub text: String,
    /// Fingerprint epoch at harvest time.
    pub fingerprint: String,
}

impl Document {
    pub fn of_event(r: &Renderer, scaler: &mut Scaler, ev: &Event, fingerprint: &str) -> Document {
        Document {
            ts: ev.ts,
            key: ev.key.clone(),
            source: ev.source.clone(),
            kind: Some(ev.kind()),
            curriculum: Curriculum::of(ev.kind()),
            text: r.render(ev, scaler),
            fingerprint: fingerprint.to_string(),
        }
    }

    /// The registry's documents (axiomatic and topology), stamped `now_ms`.
    pub fn of_registry(
        r: &Renderer,
        reg: &Registry,
        fingerprint: &str,
        now_ms: i64,
    ) -> Vec<Document> {
        let mk = |curriculum: Curriculum, key: &str, text: String| Document {
            ts: now_ms,
            key: key.to_string(),
            source: "registry".to_string(),
            kind: None,
            curriculum,
            text,
            fingerprint: fingerprint.to_string(),
        };
        let mut out: Vec<Document> = r
            .axiomatic(reg)
            .into_iter()
            .map(|t| mk(Curriculum::Axiomatic, "registry.axiomatic", t))
            .collect();
        out.extend(
            r.topology(reg)
                .into_iter()
                .map(|t| mk(Curriculum::Topology, "registry.topology", t)),
        );
        out
    }

    pub fn to_msgpack(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("a Document always serializes")
    }

    pub fn from_msgpack(b: &[u8]) -> Result<Document, rmp_serde::decode::Error> {
        rmp_serde::from_slice(b)
    }
}

/// Bounds a walk's per-key state: drops the half of `map` heard from
/// longest ago (`last_ts` of each entry).
fn forget_older_half<K, V>(map: &mut std::collections::HashMap<K, V>, last_ts: impl Fn(&V) -> i64) {
    let mut ts: Vec<i64> = map.values().map(&last_ts).collect();
    ts.sort_unstable();
    let Some(&cut) = ts.get(ts.len() / 2) else {
        return;
    };
    map.retain(|_, v| last_ts(v) > cut);
}
