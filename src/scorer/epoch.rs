//! Whether the model in service predates the system as it is now. After a
//! fingerprint change the old model keeps scoring (a blind scorer would be
//! worse) until the new epoch's cold start publishes a model; meanwhile its
//! alerts carry `previous_epoch`, so a reader knows they are judged against
//! an architecture that no longer exists.
//!
//! The scorer learns the current fingerprint from the trainer (KV `epoch`)
//! rather than hashing the key files itself: a scorer replica need not have
//! the registry, and one answer for every replica keeps them agreeing.

use crate::bus::Bus;
use crate::contract::{EpochNotice, KEY_EPOCH};
use anyhow::Result;
use async_nats::jetstream::kv::Operation;
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::watch;

/// The current fingerprint epoch, followed in the background.
pub struct EpochWatch {
    current: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl EpochWatch {
    /// Follows KV `epoch` until dropped.
    pub fn spawn(bus: Bus) -> EpochWatch {
        let (tx, current) = watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                if let Err(e) = follow(&bus, &tx).await {
                    tracing::warn!("following the fingerprint epoch: {e:#}; retrying");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        EpochWatch { current, task }
    }

    /// True when the trainer has announced an epoch and `model_fp` is not
    /// it. No announcement (no trainer yet, an older one) marks nothing.
    pub fn previous(&self, model_fp: &str) -> bool {
        is_previous(self.current.borrow().as_deref(), model_fp)
    }
}

impl Drop for EpochWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The rule, apart from the watching.
pub fn is_previous(current: Option<&str>, model_fp: &str) -> bool {
    current.is_some_and(|c| c != model_fp)
}

/// Reads the current value, then every change, into `tx`; returns when the
/// watch ends.
async fn follow(bus: &Bus, tx: &watch::Sender<Option<String>>) -> Result<()> {
    let kv = bus.kv().await?;
    let mut entries = kv.watch_with_history(KEY_EPOCH).await?;
    while let Some(e) = entries.next().await {
        let e = e?;
        let fp = match e.operation {
            Operation::Put => match serde_json::from_slice::<EpochNotice>(&e.value) {
                Ok(n) => Some(n.fingerprint),
                Err(err) => {
                    tracing::warn!("ignoring a malformed epoch notice: {err}");
                    None
                }
            },
            Operation::Delete | Operation::Purge => None,
        };
        tx.send_replace(fp);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_announced_other_epoch_is_previous() {
        assert!(!is_previous(None, "a"));
        assert!(!is_previous(Some("a"), "a"));
        assert!(is_previous(Some("b"), "a"));
    }
}
