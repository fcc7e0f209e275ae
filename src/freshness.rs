//! The three freshness gates that keep the model from training on lies:
//!
//! 1. fingerprint: SHA-256 over the key files (registry, compose file, ...).
//!    A checkpoint trained under another fingerprint is discarded (cold
//!    start), and documents harvested under an older fingerprint epoch are not
//!    trained on: they describe an architecture that no longer exists.
//! 2. TTL: documents older than 24 h are dropped.
//! 3. decay: weight = 0.5 ^ (age / 12 h), so stale patterns fade.
//!
//! Time comes from a [`Clock`], so tests can set it.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub const HOUR_MS: i64 = 3600 * 1000;

/// Where "now" comes from.
pub trait Clock: Send + Sync {
    /// Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }
    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst)
    }
    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Gate settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Gates {
    /// Documents older than this are dropped.
    pub ttl_ms: i64,
    /// Age at which a document's weight halves.
    pub half_life_ms: i64,
    /// Files whose content defines the architecture, hashed in this order.
    pub key_files: Vec<PathBuf>,
    /// Settings that change what a document says (a configured rendering,
    /// see [`crate::curriculum::RenderConfig::fingerprint_text`]), hashed
    /// after the files; empty adds nothing.
    pub settings: String,
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            ttl_ms: 24 * HOUR_MS,
            half_life_ms: 12 * HOUR_MS,
            key_files: vec![PathBuf::from("deploy/services.yaml")],
            settings: String::new(),
        }
    }
}

/// What the gates say about one document.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Train on it with this weight.
    Keep(f32),
    /// Older than the TTL.
    Expired,
    /// Harvested under another fingerprint.
    OldEpoch,
}

impl Gates {
    /// The decay weight of a document of age `age_ms` (future timestamps count as now).
    pub fn weight(&self, age_ms: i64) -> f32 {
        let age = age_ms.max(0) as f64;
        0.5f64.powf(age / self.half_life_ms as f64) as f32
    }

    /// Applies all three gates to a document stamped `ts_ms` in epoch `doc_fp`.
    pub fn admit(&self, doc_fp: &str, current_fp: &str, ts_ms: i64, now_ms: i64) -> Verdict {
        if doc_fp != current_fp {
            return Verdict::OldEpoch;
        }
        let age = now_ms - ts_ms;
        if age > self.ttl_ms {
            return Verdict::Expired;
        }
        Verdict::Keep(self.weight(age))
    }

    /// The fingerprint of the key files now (and of the settings).
    pub fn fingerprint(&self) -> Result<String> {
        if self.settings.is_empty() {
            return fingerprint(&self.key_files);
        }
        let files = fingerprint(&self.key_files)?;
        let mut h = Sha256::new();
        h.update(files.as_bytes());
        h.update((self.settings.len() as u64).to_le_bytes());
        h.update(self.settings.as_bytes());
        Ok(hex::encode(h.finalize()))
    }
}

/// SHA-256 over each file's path and content, in the given order. A missing
/// file is hashed as missing rather than refused: deleting a key file is an
/// architecture change like any other.
pub fn fingerprint(paths: &[PathBuf]) -> Result<String> {
    let mut h = Sha256::new();
    for p in paths {
        let name = p.to_string_lossy();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        match std::fs::read(p) {
            Ok(bytes) => {
                h.update((bytes.len() as u64).to_le_bytes());
                h.update(&bytes);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                h.update(u64::MAX.to_le_bytes());
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "reading key file {} for the fingerprint",
                    p.display()
                )))
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// A checkpoint is reused only under the fingerprint it was trained under.
pub fn must_cold_start(checkpoint_fp: Option<&str>, current_fp: &str) -> bool {
    checkpoint_fp != Some(current_fp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decay_and_ttl_with_a_set_clock() {
        let g = Gates::default();
        let clock = ManualClock::new(100 * HOUR_MS);
        let ts = clock.now_ms();
        assert_eq!(g.admit("f", "f", ts, clock.now_ms()), Verdict::Keep(1.0));
        clock.advance(12 * HOUR_MS);
        assert_eq!(g.admit("f", "f", ts, clock.now_ms()), Verdict::Keep(0.5));
        clock.advance(12 * HOUR_MS);
        assert_eq!(g.admit("f", "f", ts, clock.now_ms()), Verdict::Keep(0.25));
        clock.advance(1);
        assert_eq!(g.admit("f", "f", ts, clock.now_ms()), Verdict::Expired);
        assert_eq!(
            g.admit("old", "f", clock.now_ms(), clock.now_ms()),
            Verdict::OldEpoch
        );
    }

    #[test]
    fn fingerprint_changes_with_content_and_order() {
        let d = tempfile::tempdir().unwrap();
        let a = d.path().join("a.yaml");
        let b = d.path().join("b.yaml");
        std::fs::write(&a, "x").unwrap();
        std::fs::write(&b, "y").unwrap();
        let f1 = fingerprint(&[a.clone(), b.clone()]).unwrap();
        assert_eq!(f1, fingerprint(&[a.clone(), b.clone()]).unwrap());
        assert_ne!(f1, fingerprint(&[b.clone(), a.clone()]).unwrap());
        std::fs::write(&b, "z").unwrap();
        let f2 = fingerprint(&[a.clone(), b.clone()]).unwrap();
        assert_ne!(f1, f2);
        std::fs::remove_file(&b).unwrap();
        assert_ne!(f2, fingerprint(&[a, b]).unwrap());
        assert!(must_cold_start(Some(&f1), &f2));
        assert!(must_cold_start(None, &f2));
        assert!(!must_cold_start(Some(&f2), &f2));
    }
}
