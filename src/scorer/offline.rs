//! `proprio score`: every event of a file scored in the context of its key.

use super::{score_against, EventScorer, Prepared, Scored};
use crate::curriculum::Renderer;
use crate::event::{read_jsonl, Event, Kind};
use crate::model::checkpoint::Checkpoint;
use crate::model::score::KvCache;
use crate::model::{EventLoss, NativeScorer, ScoreItem};
use anyhow::Result;
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// Checkpoint written by `proprio train`.
    #[arg(long)]
    pub model: PathBuf,
    /// Event file (JSON lines).
    #[arg(long)]
    pub input: PathBuf,
    /// Forward-pass batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Threads for libtorch and the native scorer.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
}

/// One output line of `proprio score`.
#[derive(Debug, serde::Serialize)]
pub struct ScoreLine<'a> {
    pub ts: i64,
    pub source: &'a str,
    pub key: &'a str,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<&'a str>,
    #[serde(flatten)]
    pub scored: &'a Scored,
}

/// Events scored per call of the forward pass driver, to bound memory on big files.
const CHUNK: usize = 4096;

/// Scores events in order, each in the context of the previous events of its
/// key, a batch split across `threads`.
pub fn score_events(
    ck: &Checkpoint,
    events: &[Event],
    batch: usize,
    threads: usize,
) -> Result<Vec<Scored>> {
    let mut out = Vec::with_capacity(events.len());
    score_events_with(ck, events, batch, threads, |_, s| {
        out.push(s);
        Ok(())
    })?;
    Ok(out)
}

/// Streams scores to `sink` in event order.
pub fn score_events_with(
    ck: &Checkpoint,
    events: &[Event],
    batch: usize,
    threads: usize,
    mut sink: impl FnMut(&Event, Scored) -> Result<()>,
) -> Result<()> {
    // Calibrated as a scorer that just took this model would: its shipped
    // tails, then the file's own values ([`super::LiveTails`]).
    let mut tails = super::LiveTails::new(ck.meta.baselines.surprise.clone());
    score_chunks(ck, events.iter(), Read::Every, batch, threads, |chunk| {
        let scored = chunk.prepared.iter().zip(chunk.losses);
        for (ev, pl) in chunk.events.iter().zip(scored) {
            if let (Some(p), Some(l)) = pl {
                sink(ev, score_against(p, l, ev.ts, &mut tails))?;
            }
        }
        Ok(())
    })
}

/// Which events of a stream are scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// Every event, each in the context of every previous one of its key
    /// (`proprio score`: a line per event asked about).
    Every,
    /// As the live scorer reads the stream ([`EventScorer::prepare_live`]):
    /// a pulse repeating its key's previous one is neither scored nor
    /// part of the context (`proprio eval`, which replays the live path).
    Live,
}

/// One chunk of [`score_chunks`]: its events and, for each one scored, its
/// preparation (tokens in context) and its losses and entropies; `None`
/// for an event [`Read::Live`] leaves unscored.
pub struct Chunk<'a> {
    pub events: &'a [&'a Event],
    pub prepared: &'a [Option<Prepared>],
    pub losses: &'a [Option<EventLoss>],
}

/// Scores `events` in order, each in the context of the previous ones of
/// its key ([`super::Contexts`]), rendered the way the model was trained to
/// read, with a per-key cache of keys and values as the live scorer; `per_chunk`
/// sees each chunk's events, their preparation and their losses. Shared by
/// `proprio score` and `proprio eval`, so both score as the live scorer.
pub fn score_chunks<'e>(
    ck: &Checkpoint,
    events: impl Iterator<Item = &'e Event>,
    read: Read,
    batch: usize,
    threads: usize,
    mut per_chunk: impl FnMut(Chunk<'_>) -> Result<()>,
) -> Result<()> {
    let mut scorer = EventScorer::new(
        Renderer::new(&ck.meta.render)?,
        ck.meta.vocab.clone(),
        ck.meta.config.block_size,
        super::Contexts::DEFAULT_MAX_KEYS,
    );
    let native = NativeScorer::new(&ck.gpt, threads);
    let mut cache = KvCache::default();
    let mut events = events.peekable();
    while events.peek().is_some() {
        let chunk: Vec<&Event> = events.by_ref().take(CHUNK).collect();
        let prepared: Vec<Option<Prepared>> = chunk
            .iter()
            .map(|e| match read {
                Read::Every => Some(scorer.prepare_event(e)),
                Read::Live => scorer.prepare_live(e),
            })
            .collect();
        let items: Vec<ScoreItem> = prepared.iter().flatten().map(|p| p.item.clone()).collect();
        let keys: Vec<&str> = prepared.iter().flatten().map(|p| p.key.as_str()).collect();
        let mut losses = native
            .score_cached(&mut cache, &keys, &items, batch)
            .into_iter();
        let losses: Vec<Option<EventLoss>> = prepared
            .iter()
            .map(|p| p.as_ref().and_then(|_| losses.next()))
            .collect();
        per_chunk(Chunk {
            events: &chunk,
            prepared: &prepared,
            losses: &losses,
        })?;
    }
    Ok(())
}

pub fn run(args: ScoreArgs) -> Result<()> {
    let threads = args.threads.max(1) as usize;
    crate::model::set_libtorch_threads(threads);
    let ck = Checkpoint::load(&args.model)?;
    let events = read_jsonl(&args.input)?;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    score_events_with(&ck, &events, args.batch, threads, |ev, s| {
        let line = ScoreLine {
            ts: ev.ts,
            source: &ev.source,
            key: &ev.key,
            kind: ev.kind(),
            label: ev.label.as_deref(),
            scored: &s,
        };
        serde_json::to_writer(&mut w, &line)?;
        w.write_all(b"\n")?;
        Ok(())
    })?;
    w.flush()?;
    Ok(())
}
