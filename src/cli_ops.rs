//! The small operator commands: `proprio digest`, `alerts`, `tick`, `mute`.
//! Each is a clap `Args` struct and an async function taking the bus
//! settings (from the configuration, which the `--nats...` flags feed);
//! main.rs only wires them. The functions that build output return it (tested), the command
//! functions print it.

use crate::alert::mute;
use crate::bus::{self, Bus, BusConfig};
use crate::config::NatsFlags;
use crate::contract::alert::{Alert, AlertReason};
use crate::contract::digest::{Digest, BEGIN};
use crate::contract::{
    BUCKET_STATE, KEY_DIGEST, KEY_DIGEST_JSON, STREAM_ALERTS, SUBJECT_RAISE_ALL, SUBJECT_TICK_TRAIN,
};
use crate::freshness::{Clock, SystemClock};
use crate::units::parse_duration;
use anyhow::{bail, Context as _, Result};
use futures::StreamExt;
use std::time::Duration;

/// Print the current digest (the ~50-token health summary) from KV.
#[derive(clap::Args, Debug, Clone)]
pub struct DigestArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
    /// Print the JSON form instead of the text.
    #[arg(long)]
    pub json: bool,
}

/// Print alerts from the alerts stream, one line each.
#[derive(clap::Args, Debug, Clone)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
    /// Keep printing new alerts as they arrive.
    #[arg(long, short)]
    pub follow: bool,
    /// How far back to start (30s, 10m, 1h, 1d; 0 = everything kept).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// One JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Ask the trainer to run a growth cycle now.
#[derive(clap::Args, Debug, Clone)]
pub struct TickArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
}

/// Silence a source's alerts for a while (a maintenance window).
#[derive(clap::Args, Debug, Clone)]
pub struct MuteArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
    /// The source, as it appears in alerts.
    pub source: String,
    /// How long (30s, 10m, 1h, 6h, 1d); 0 lifts the mute.
    #[arg(long = "for", value_parser = parse_duration)]
    pub duration: Duration,
}

// ---- digest ----

/// The digest as stored, or the warming digest when none has been made yet.
pub async fn digest_text(bus: &Bus, json: bool, now_ms: i64) -> Result<String> {
    let key = if json { KEY_DIGEST_JSON } else { KEY_DIGEST };
    // No bucket yet means proprio never ran here: that is "warming" too.
    let stored = match bus.kv().await {
        Ok(kv) => kv
            .get(key)
            .await
            .with_context(|| format!("reading {BUCKET_STATE}/{key}"))?,
        Err(_) => None,
    };
    let warming = Digest::warming(now_ms);
    Ok(match stored {
        None if json => warming.to_json(),
        None => warming.text(),
        Some(b) if json => String::from_utf8_lossy(&b).into_owned(),
        Some(b) => {
            let text = std::str::from_utf8(&b).ok().filter(|t| t.contains(BEGIN));
            match text {
                Some(t) => t.trim_end().to_string(),
                // A structured digest stored where text was expected.
                None => match Digest::decode(&b) {
                    Ok(d) => d.text(),
                    Err(_) => String::from_utf8_lossy(&b).trim_end().to_string(),
                },
            }
        }
    })
}

pub async fn digest(args: DigestArgs, cfg: &BusConfig) -> Result<()> {
    let bus = Bus::connect(cfg).await?;
    println!(
        "{}",
        digest_text(&bus, args.json, SystemClock.now_ms()).await?
    );
    Ok(())
}

// ---- alerts ----

/// One alert as one line: when, why, who, how surprising, what.
pub fn alert_line(a: &Alert) -> String {
    let what = match (&a.diagnosis, a.reason) {
        (Some(d), AlertReason::Silence | AlertReason::Topology) => d.clone(),
        (Some(d), _) => format!("{d}: {}", a.rendered),
        (None, _) => a.rendered.clone(),
    };
    let what: String = what
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "{} {:<8} {} {} score={:.1} {}",
        format_utc(a.ts),
        a.reason.as_str(),
        a.source,
        a.kind,
        a.score,
        what
    )
}

/// An alert payload as the line to print (text or JSON); an undecodable one
/// is reported on the line rather than stopping the listing.
pub fn render_alert(payload: &[u8], json: bool) -> String {
    match Alert::decode(payload) {
        Ok(a) if json => a.to_json(),
        Ok(a) => alert_line(&a),
        Err(e) => format!("(undecodable alert: {e})"),
    }
}

/// The alerts stored since `since_ms`, one line each, oldest first.
pub async fn alert_lines(bus: &Bus, since_ms: i64, json: bool) -> Result<Vec<String>> {
    let mut out = Vec::new();
    bus.scan_since(STREAM_ALERTS, SUBJECT_RAISE_ALL, since_ms, |m, _| {
        out.push(render_alert(&m.payload, json))
    })
    .await
    .context("reading the alerts stream (has proprio run against this server?)")?;
    Ok(out)
}

pub async fn alerts(args: AlertsArgs, cfg: &BusConfig) -> Result<()> {
    let bus = Bus::connect(cfg).await?;
    let since = if args.since.is_zero() {
        0
    } else {
        SystemClock.now_ms() - args.since.as_millis() as i64
    };
    if !args.follow {
        for line in alert_lines(&bus, since, args.json).await? {
            println!("{line}");
        }
        return Ok(());
    }
    let stream = bus
        .js()
        .get_stream(STREAM_ALERTS)
        .await
        .context("opening the alerts stream (has proprio run against this server?)")?;
    let consumer = stream
        .create_consumer(bus::ordered_since(SUBJECT_RAISE_ALL, since)?)
        .await
        .context("following the alerts stream")?;
    let mut msgs = consumer.messages().await.context("following alerts")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            m = msgs.next() => match m {
                Some(Ok(m)) => println!("{}", render_alert(&m.payload, args.json)),
                Some(Err(e)) => tracing::debug!("following alerts: {e}"),
                None => bail!("the alerts stream went away"),
            },
        }
    }
}

// ---- tick ----

/// Publishes one training tick. Core NATS: a tick nobody hears is simply
/// not acted on, and the next scheduled one will come.
pub async fn send_tick(bus: &Bus, now_ms: i64) -> Result<()> {
    let payload = serde_json::json!({ "ts": now_ms, "origin": "proprio tick" }).to_string();
    bus.client()
        .publish(SUBJECT_TICK_TRAIN, payload.into())
        .await
        .context("publishing the tick")?;
    bus.client().flush().await.context("flushing the tick")?;
    Ok(())
}

pub async fn tick(cfg: &BusConfig) -> Result<()> {
    let bus = Bus::connect(cfg).await?;
    send_tick(&bus, SystemClock.now_ms()).await?;
    println!("tick published on {SUBJECT_TICK_TRAIN}");
    Ok(())
}

// ---- mute ----

/// Sets (or, for a zero duration, lifts) a mute; returns what was done.
pub async fn set_mute(bus: &Bus, source: &str, duration: Duration, now_ms: i64) -> Result<String> {
    bus.kv()
        .await
        .context("no proprio state on this server yet: start proprio (proprio run) first")?;
    if duration.is_zero() {
        mute::set(bus, source, 0).await?;
        return Ok(format!("unmuted {source}"));
    }
    let until = now_ms.saturating_add(duration.as_millis() as i64);
    mute::set(bus, source, until).await?;
    Ok(format!(
        "muted {source} until {} ({})",
        format_utc(until),
        crate::units::format_duration_human(duration.as_millis() as i64)
    ))
}

pub async fn mute(args: MuteArgs, cfg: &BusConfig) -> Result<()> {
    if args.source.trim().is_empty() {
        bail!("mute: the source is empty");
    }
    let bus = Bus::connect(cfg).await?;
    println!(
        "{}",
        set_mute(&bus, &args.source, args.duration, SystemClock.now_ms()).await?
    );
    Ok(())
}

/// Unix ms as `2024-05-01T03:12:07Z` (UTC), without a date library.
pub fn format_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_parse() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(subcommand)]
            c: C,
        }
        #[derive(clap::Subcommand)]
        enum C {
            Mute(MuteArgs),
            Alerts(AlertsArgs),
        }
        let cli = Cli::try_parse_from(["p", "mute", "svc", "--for", "1h", "--nats", "nats://h:1"])
            .unwrap();
        let C::Mute(m) = cli.c else { panic!() };
        assert_eq!(
            (m.source.as_str(), m.duration),
            ("svc", Duration::from_secs(3600))
        );
        assert_eq!(m.nats.url.as_deref(), Some("nats://h:1"));
        let cli = Cli::try_parse_from(["p", "alerts", "-f", "--since", "10m"]).unwrap();
        let C::Alerts(a) = cli.c else { panic!() };
        assert!(a.follow && !a.json);
        assert_eq!(a.since, Duration::from_secs(600));
        assert!(Cli::try_parse_from(["p", "mute", "svc", "--for", "6"]).is_err());
    }

    #[test]
    fn utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_714_533_127_000), "2024-05-01T03:12:07Z");
    }
}
