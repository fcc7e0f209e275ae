//! Logs: human-readable on a terminal, JSON lines with `--log-json`, level
//! from RUST_LOG (default info, or the configured `log.level`). Written to
//! stderr so stdout stays data.
//!
//! Warnings and errors are rate-limited per call site: during an outage the
//! same line would otherwise repeat for every message (a flood that hides
//! the first, useful one). Each call site may log [`BURST`] lines per
//! [`WINDOW`]; the rest are counted, and once the window is over one line
//! says how many were suppressed (and `proprio_log_messages_suppressed_total`
//! counts them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::EnvFilter;

/// Lines a call site may log per window before it is suppressed.
pub const BURST: u32 = 10;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Target of the "suppressed" summaries (never limited themselves).
const SUMMARY_TARGET: &str = "proprio::log";

pub fn init(json: bool) {
    init_with(json, None);
}

/// Installs the subscriber: `level` (an EnvFilter directive) unless
/// RUST_LOG is set; JSON lines when `json`.
pub fn init_with(json: bool, level: Option<&str>) {
    let filter = EnvFilter::try_from_default_env()
        .ok()
        .or_else(|| level.and_then(|l| EnvFilter::try_new(l).ok()))
        .unwrap_or_else(|| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(RateLimit)
        .with(fmt)
        .try_init();
}

#[derive(Debug)]
struct Window {
    start: Instant,
    logged: u32,
    suppressed: u64,
    level: Level,
    file: &'static str,
    line: u32,
    message: &'static str,
}

/// Lines suppressed since start, [error, warn]: the limit is process-wide,
/// as the subscriber is.
static SUPPRESSED: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];

/// Lines suppressed so far per level ("error", "warn"), the levels with any.
pub fn suppressed() -> Vec<(&'static str, u64)> {
    ["error", "warn"]
        .into_iter()
        .zip(&SUPPRESSED)
        .map(|(l, n)| (l, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn windows() -> &'static Mutex<HashMap<tracing::callsite::Identifier, Window>> {
    static W: OnceLock<Mutex<HashMap<tracing::callsite::Identifier, Window>>> = OnceLock::new();
    W.get_or_init(Default::default)
}

/// The per-call-site limit on WARN and ERROR events.
pub struct RateLimit;

impl<S: Subscriber> Layer<S> for RateLimit {
    fn event_enabled(&self, event: &Event<'_>, _cx: Context<'_, S>) -> bool {
        let meta = event.metadata();
        if *meta.level() > Level::WARN || meta.target() == SUMMARY_TARGET {
            return true;
        }
        admit(meta)
    }
}

fn admit(meta: &'static tracing::Metadata<'static>) -> bool {
    let Ok(mut w) = windows().lock() else {
        return true;
    };
    let now = Instant::now();
    let e = w.entry(meta.callsite()).or_insert_with(|| Window {
        start: now,
        logged: 0,
        suppressed: 0,
        level: *meta.level(),
        file: meta.file().unwrap_or("?"),
        line: meta.line().unwrap_or(0),
        message: meta.name(),
    });
    if now.duration_since(e.start) >= WINDOW && e.suppressed == 0 {
        e.start = now;
        e.logged = 0;
    }
    if e.logged < BURST {
        e.logged += 1;
        return true;
    }
    e.suppressed += 1;
    let i = usize::from(e.level != Level::ERROR);
    SUPPRESSED[i].fetch_add(1, Ordering::Relaxed);
    reporter();
    false
}

/// A thread that, once a window with suppressed lines is over, logs how
/// many there were. (Logging from inside the subscriber would be dropped:
/// tracing does not re-enter a subscriber.)
fn reporter() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = std::thread::Builder::new()
            .name("proprio-log-limit".into())
            .spawn(|| loop {
                std::thread::sleep(Duration::from_secs(1));
                for (w, n) in due(Instant::now()) {
                    // A tracing level is fixed per call site, hence one per level.
                    macro_rules! summary {
                        ($log:ident) => {
                            tracing::$log!(
                                target: SUMMARY_TARGET,
                                suppressed = n,
                                callsite = %format!("{}:{}", w.1, w.2),
                                "{n} more like this suppressed in the last {}s ({})",
                                WINDOW.as_secs(),
                                w.3
                            )
                        };
                    }
                    match w.0 {
                        Level::ERROR => summary!(error),
                        _ => summary!(warn),
                    }
                }
            });
    });
}

/// Windows that are over and suppressed something: reset, and returned.
fn due(now: Instant) -> Vec<((Level, &'static str, u32, &'static str), u64)> {
    let Ok(mut w) = windows().lock() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in w.values_mut() {
        if e.suppressed > 0 && now.duration_since(e.start) >= WINDOW {
            out.push(((e.level, e.file, e.line, e.message), e.suppressed));
            e.suppressed = 0;
            e.logged = 0;
            e.start = now;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    struct Count(Arc<AtomicUsize>);
    impl<S: Subscriber> Layer<S> for Count {
        fn on_event(&self, _e: &Event<'_>, _cx: Context<'_, S>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn a_repeated_warning_is_limited_per_call_site() {
        let n = Arc::new(AtomicUsize::new(0));
        let sub = tracing_subscriber::registry()
            .with(RateLimit)
            .with(Count(n.clone()));
        tracing::subscriber::with_default(sub, || {
            for i in 0..50 {
                tracing::warn!("the same failure {i}");
            }
            for i in 0..3 {
                tracing::warn!("another call site {i}");
            }
            for i in 0..30 {
                tracing::info!("info is never limited {i}");
            }
        });
        assert_eq!(n.load(Ordering::Relaxed), BURST as usize + 3 + 30);
    }
}
