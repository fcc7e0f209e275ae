//! Model checkpoints on the bus: the bytes in the `proprio-models` object
//! store, the [`ModelNotice`] of the model in service in KV `model`. The
//! trainer writes both, scorers read them; neither needs to know how the
//! bus stores objects.

use crate::bus::Bus;
use crate::contract::{ModelNotice, BUCKET_MODELS, KEY_MODEL};
use anyhow::{Context as _, Result};
use async_nats::jetstream::object_store;
use tokio::io::AsyncReadExt;

/// The model in service, from KV (None before the first, or when unreadable).
pub async fn current(bus: &Bus) -> Result<Option<ModelNotice>> {
    match bus.get(KEY_MODEL).await? {
        Some(b) => Ok(serde_json::from_slice(&b).ok()),
        None => Ok(None),
    }
}

/// The `proprio-models` object store (the bus's `ensure` creates it).
async fn open(bus: &Bus) -> Result<object_store::ObjectStore> {
    bus.js()
        .get_object_store(BUCKET_MODELS)
        .await
        .with_context(|| format!("opening object store {BUCKET_MODELS} (run ensure first)"))
}

pub async fn put(bus: &Bus, name: &str, bytes: &[u8]) -> Result<()> {
    let store = open(bus).await?;
    let mut reader = bytes;
    store
        .put(name, &mut reader)
        .await
        .with_context(|| format!("storing model {name} in {BUCKET_MODELS}"))?;
    Ok(())
}

/// None when there is no such object.
pub async fn get(bus: &Bus, name: &str) -> Result<Option<Vec<u8>>> {
    let store = open(bus).await?;
    let mut obj = match store.get(name).await {
        Ok(o) => o,
        Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("reading model {name} from {BUCKET_MODELS}"))
        }
    };
    let mut out = Vec::new();
    obj.read_to_end(&mut out)
        .await
        .with_context(|| format!("reading model {name} from {BUCKET_MODELS}"))?;
    Ok(Some(out))
}
