//! The per-key cache of keys and values: what lets an event cost only its
//! own tokens. The model's position embeddings are absolute, so a key's
//! context cannot slide under its cached keys and values; the caller
//! decides what each event's context is (the scorer's `Contexts`: whole
//! previous events, restarted from about half a block when full) and this
//! cache only remembers, per key, the tokens it last computed and their
//! keys and values. An event reuses the longest cached prefix of its
//! context and computes the rest, so a result never depends on what the
//! cache held: a miss (a restart, an eviction, a new model) recomputes
//! from the token ids and gives the same numbers.

use super::weights::NativeWeights;
use std::collections::HashMap;
use std::sync::Arc;

/// Keys and values of recently scored keys, for one model at a time,
/// bounded by a byte budget: past it, the least recently used keys are
/// dropped (down to three quarters of it) and recomputed from their token
/// ids when next seen.
pub struct KvCache {
    model: Option<Arc<NativeWeights>>,
    map: HashMap<String, Entry>,
    bytes: usize,
    budget: usize,
    clock: u64,
    stats: KvStats,
}

/// What the cache did since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Events scored through the cache.
    pub events: u64,
    /// Positions whose keys and values came from the cache.
    pub reused: u64,
    /// Positions computed.
    pub computed: u64,
    /// Events whose context was not all cached (a key's first event, a
    /// restart of its context, a key evicted or cached under another model).
    pub prefills: u64,
    /// Keys dropped to stay within the budget.
    pub evicted: u64,
    /// Times the cache was emptied for a new model.
    pub model_changes: u64,
}

/// One key: the tokens at positions 0.. and, per layer, their keys then
/// values (2 x n_embd floats a position).
#[derive(Default)]
pub(super) struct Entry {
    pub tokens: Vec<u32>,
    pub kv: Vec<Vec<f32>>,
    used: u64,
}

impl Entry {
    fn bytes(&self) -> usize {
        4 * (self.tokens.capacity() + self.kv.iter().map(Vec::capacity).sum::<usize>())
    }
}

impl Default for KvCache {
    fn default() -> KvCache {
        KvCache::new(KvCache::DEFAULT_BUDGET)
    }
}

impl KvCache {
    /// 32 MiB: 512 bytes a position at the default shape (2 layers x keys
    /// and values x 32 floats), so 64k positions, about 500 keys with a
    /// full 128-token block; enough that a simulated hour (213 keys) is
    /// never evicted, small enough that a scorer with 10,000 keys stays
    /// near its base size.
    pub const DEFAULT_BUDGET: usize = 32 << 20;

    /// An empty cache that keeps at most about `budget` bytes between calls.
    pub fn new(budget: usize) -> KvCache {
        KvCache {
            model: None,
            map: HashMap::new(),
            bytes: 0,
            budget,
            clock: 0,
            stats: KvStats::default(),
        }
    }

    pub fn stats(&self) -> KvStats {
        self.stats
    }

    /// Keys cached now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Bytes of keys, values and tokens held now (the budget bounds it
    /// between calls).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Empties the cache when `model` is not the one its keys and values
    /// were computed with: after a model swap every key restarts.
    pub(super) fn follow(&mut self, model: &Arc<NativeWeights>) {
        if self.model.as_ref().is_some_and(|m| Arc::ptr_eq(m, model)) {
            return;
        }
        if self.model.is_some() {
            self.stats.model_changes += 1;
        }
        self.map.clear();
        self.bytes = 0;
        self.model = Some(model.clone());
    }

    /// Takes `key`'s entry out (a new one if not cached), to be scored on
    /// and put back with [`KvCache::put`].
    pub(super) fn take(&mut self, key: &str, layers: usize) -> Entry {
        match self.map.remove(key) {
            Some(e) => {
                self.bytes -= e.bytes();
                e
            }
            None => Entry {
                kv: vec![Vec::new(); layers],
                ..Entry::default()
            },
        }
    }

    pub(super) fn put(&mut self, key: String, mut e: Entry) {
        e.used = self.clock;
        self.bytes += e.bytes();
        self.map.insert(key, e);
    }

    pub(super) fn count(&mut self, events: u64, reused: u64, computed: u64, prefills: u64) {
        let s = &mut self.stats;
        s.events += events;
        s.reused += reused;
        s.computed += computed;
        s.prefills += prefills;
    }

    /// Ends a call: over the budget, the least recently used keys go (the
    /// ones of this call last), down to three quarters of it, so eviction
    /// is amortised over many calls.
    pub(super) fn end_call(&mut self) {
        self.clock += 1;
        if self.bytes <= self.budget {
            return;
        }
        let mut ages: Vec<(u64, String, usize)> = self
            .map
            .iter()
            .map(|(k, e)| (e.used, k.clone(), e.bytes()))
            .collect();
        ages.sort_unstable();
        let target = self.budget / 4 * 3;
        for (_, k, b) in ages {
            if self.bytes <= target {
                break;
            }
            self.map.remove(&k);
            self.bytes -= b;
            self.stats.evicted += 1;
        }
    }
}
