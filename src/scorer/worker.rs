//! The model's own thread. A tch `Tensor` is Send but not Sync, so rather than
//! lock a model across async tasks, one thread owns it and async code talks
//! to it over channels. A new model is swapped in between two requests, so
//! every batch is scored by exactly one model, start to finish. The thread
//! also owns the per-key cache of keys and values ([`KvCache`]): it belongs
//! to the model in service and restarts with each swap.

use crate::baseline::Baselines;
use crate::model::checkpoint::Checkpoint;
use crate::model::score::KvCache;
use crate::model::{EventLoss, NativeScorer, ScoreItem};
use std::sync::mpsc;
use std::sync::Arc;
use tokio::sync::oneshot;

/// What a batch was scored with.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub version: String,
    pub baselines: Arc<Baselines>,
    pub val_loss: f32,
    pub created_at_ms: i64,
    /// How the model reads events: the scorer renders and cuts contexts so.
    pub render: Arc<crate::curriculum::RenderConfig>,
    pub block_size: usize,
    /// The vocabulary the model reads.
    pub vocab: Arc<crate::vocab::Vocab>,
    /// The fingerprint epoch it was trained under.
    pub fingerprint: String,
}

enum Request {
    Score {
        keys: Vec<String>,
        items: Vec<ScoreItem>,
        reply: oneshot::Sender<Option<(Vec<EventLoss>, ModelInfo)>>,
    },
    Swap {
        ckpt: Box<Checkpoint>,
        reply: oneshot::Sender<ModelInfo>,
    },
    Info {
        reply: oneshot::Sender<Option<ModelInfo>>,
    },
}

/// A handle to the model thread; cheap to clone.
#[derive(Clone)]
pub struct ModelWorker {
    tx: mpsc::Sender<Request>,
}

impl ModelWorker {
    /// Starts the thread, with `ckpt` in service if given. `batch` bounds the
    /// forward pass's batch size; `threads` is how many threads a batch is
    /// split across.
    pub fn spawn(ckpt: Option<Checkpoint>, batch: usize, threads: usize) -> ModelWorker {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("proprio-model".into())
            .spawn(move || serve(rx, ckpt, batch.max(1), threads))
            .expect("spawning the model thread");
        ModelWorker { tx }
    }

    /// Scores items with the model in service, `keys[i]` naming item i's
    /// key (its cached keys and values are reused); `None` while there is no
    /// model ("warming").
    pub async fn score(
        &self,
        keys: Vec<String>,
        items: Vec<ScoreItem>,
    ) -> Option<(Vec<EventLoss>, ModelInfo)> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Score { keys, items, reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// Puts `ckpt` in service for every later request.
    pub async fn swap(&self, ckpt: Checkpoint) -> anyhow::Result<ModelInfo> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Swap {
                ckpt: Box::new(ckpt),
                reply,
            })
            .map_err(|_| anyhow::anyhow!("the model thread has stopped"))?;
        Ok(rx.await?)
    }

    pub async fn info(&self) -> Option<ModelInfo> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Request::Info { reply }).ok()?;
        rx.await.ok().flatten()
    }
}

fn info_of(c: &Checkpoint) -> ModelInfo {
    ModelInfo {
        version: c.meta.version.clone(),
        baselines: Arc::new(c.meta.baselines.clone()),
        val_loss: c.meta.val_loss,
        created_at_ms: c.meta.created_at_ms,
        render: Arc::new(c.meta.render.clone()),
        block_size: c.meta.config.block_size,
        vocab: c.meta.vocab.clone(),
        fingerprint: c.meta.fingerprint.clone(),
    }
}

/// The model in service: its native scorer (the weights copied once, at
/// the swap) and what it is.
fn in_service(c: &Checkpoint, threads: usize) -> (NativeScorer, ModelInfo) {
    (NativeScorer::new(&c.gpt, threads), info_of(c))
}

fn serve(rx: mpsc::Receiver<Request>, ckpt: Option<Checkpoint>, batch: usize, threads: usize) {
    let mut current = ckpt.map(|c| in_service(&c, threads));
    let mut cache = KvCache::default();
    while let Ok(req) = rx.recv() {
        match req {
            Request::Score { keys, items, reply } => {
                let out = current.as_ref().map(|(native, info)| {
                    let losses = native.score_cached(&mut cache, &keys, &items, batch);
                    (losses, info.clone())
                });
                let _ = reply.send(out);
            }
            Request::Swap { ckpt, reply } => {
                let (native, info) = in_service(&ckpt, threads);
                current = Some((native, info.clone()));
                // The old model's keys and values are of no use to the new one.
                cache = KvCache::default();
                let _ = reply.send(info);
            }
            Request::Info { reply } => {
                let _ = reply.send(current.as_ref().map(|(_, i)| i.clone()));
            }
        }
    }
}
