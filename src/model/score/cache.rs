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

/// Keys and values of recently scored keys, for one model at a time. Each
/// key cached holds a whole block's worth (64 KiB at the default shape: 2
/// layers x keys and values x 32 floats x 128 positions, plus its token
/// ids), allocated once and reused for other keys after eviction, so memory
/// is `max_keys` blocks: past that many keys, the least recently used are
/// dropped (down to three quarters) and recomputed from their token ids
/// when next seen.
pub struct KvCache {
    model: Option<Arc<NativeWeights>>,
    map: HashMap<String, Entry>,
    spare: Vec<Entry>,
    max_keys: usize,
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
    /// Keys dropped to stay within `max_keys`.
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
        KvCache::new(KvCache::DEFAULT_MAX_KEYS)
    }
}

impl KvCache {
    /// 256 keys: 16 MiB at the default shape (64 MiB at block 512); a
    /// simulated hour has 213 keys.
    pub const DEFAULT_MAX_KEYS: usize = 256;

    /// An empty cache that keeps at most `max_keys` keys between calls.
    pub fn new(max_keys: usize) -> KvCache {
        KvCache {
            model: None,
            map: HashMap::new(),
            spare: Vec::new(),
            max_keys: max_keys.max(1),
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

    /// Bytes held now, spare blocks included: at most `max_keys` blocks
    /// between calls.
    pub fn bytes(&self) -> usize {
        self.map.values().chain(&self.spare).map(Entry::bytes).sum()
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
        // The blocks are kept only if the shape is the same.
        let same_shape = self.model.as_ref().is_some_and(|m| m.cfg == model.cfg);
        let old = std::mem::take(&mut self.map);
        if same_shape {
            self.spare.extend(old.into_values());
        } else {
            self.spare.clear();
        }
        self.model = Some(model.clone());
    }

    /// Takes `key`'s entry out (a spare or a new block if not cached), to
    /// be scored on and put back with [`KvCache::put`].
    pub(super) fn take(&mut self, key: &str) -> Entry {
        if let Some(e) = self.map.remove(key) {
            return e;
        }
        let mut e = self.spare.pop().unwrap_or_else(|| {
            let cfg = &self.model.as_ref().expect("follow() first").cfg;
            let row = 2 * cfg.n_embd * cfg.block_size;
            Entry {
                tokens: Vec::with_capacity(cfg.block_size),
                kv: (0..cfg.n_layer).map(|_| Vec::with_capacity(row)).collect(),
                used: 0,
            }
        });
        e.tokens.clear();
        e.kv.iter_mut().for_each(Vec::clear);
        e
    }

    pub(super) fn put(&mut self, key: String, mut e: Entry) {
        e.used = self.clock;
        self.map.insert(key, e);
    }

    pub(super) fn count(&mut self, events: u64, reused: u64, computed: u64, prefills: u64) {
        let s = &mut self.stats;
        s.events += events;
        s.reused += reused;
        s.computed += computed;
        s.prefills += prefills;
    }

    /// Ends a call: past `max_keys`, the least recently used keys go (the
    /// ones of this call last), down to three quarters, their blocks kept
    /// as spares up to the limit, so eviction is amortised over many calls
    /// and allocates nothing.
    pub(super) fn end_call(&mut self) {
        self.clock += 1;
        if self.map.len() + self.spare.len() <= self.max_keys {
            return;
        }
        let mut ages: Vec<(u64, String)> =
            self.map.iter().map(|(k, e)| (e.used, k.clone())).collect();
        ages.sort_unstable();
        let drop = self.map.len().saturating_sub(self.max_keys * 3 / 4);
        for (_, k) in ages.into_iter().take(drop) {
            if let Some(e) = self.map.remove(&k) {
                self.spare.push(e);
                self.stats.evicted += 1;
            }
        }
        self.spare
            .truncate(self.max_keys.saturating_sub(self.map.len()));
    }
}
