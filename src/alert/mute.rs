//! Mutes: an operator's maintenance window for a source (`proprio mute`),
//! stored in the state bucket under [`mute_key`] so every scorer and silence
//! watcher replica sees the same one. The value is the end as decimal unix
//! ms, readable with `nats kv get`.

use crate::bus::Bus;
use crate::contract::mute_key;
use anyhow::Result;

/// Mutes `source` until `until_ms` (unix ms); a time in the past (or 0)
/// unmutes.
pub async fn set(bus: &Bus, source: &str, until_ms: i64) -> Result<()> {
    let key = mute_key(source);
    if until_ms <= 0 {
        return bus.delete(&key).await;
    }
    bus.put(&key, until_ms.to_string()).await
}

/// When the mute on `source` ends (it may already have), if there is one.
/// An unreadable value counts as no mute: alerts are never silenced by
/// accident.
pub async fn until(bus: &Bus, source: &str) -> Result<Option<i64>> {
    let v = bus.get(&mute_key(source)).await?;
    Ok(v.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<i64>().ok()))
}

pub async fn is_muted(bus: &Bus, source: &str, now_ms: i64) -> Result<bool> {
    Ok(until(bus, source).await?.is_some_and(|u| u > now_ms))
}
