//! A service's character (baseline load, latency, memory, pulse and log
//! cadence), drawn from its name and role alone. Kept apart from the engine so
//! the numbers that make one service look unlike another sit in one place.

use super::rng::Rng;

/// Salt of the per-service profile streams: a service's character (its
/// baseline latency, memory, pulse interval) depends on its name only, so a
/// model trained on one seed's run meets the same OS in another seed's run.
pub(super) const PROFILE_SEED: u64 = 0x0050_F11E;

/// A service's character: stable per name.
#[derive(Debug, Clone)]
pub(super) struct Profile {
    pub pulse_ms: i64,
    pub cpu: f64,
    pub mem: f64,
    pub mem_limit: f64,
    pub rps: f64,
    pub p50: f64,
    pub tail: f64,
    pub err: f64,
    pub vram: Option<f64>,
    pub io: Option<f64>,
    /// Mean time between log lines at full load.
    pub log_ms: f64,
    pub startup_s: (f64, f64),
    /// Mean time between flux work events (job completed, ...), if any.
    pub work_ms: Option<f64>,
}

pub(super) fn profile(name: &str, role: &str) -> Profile {
    let mut r = Rng::stream(PROFILE_SEED, name);
    let pulse_ms = 10_000 + 1000 * r.int(0, 50);
    let (cpu, mem, rps, p50, log_s, startup_s) = match role {
        "gpu_worker" => (
            r.range(25.0, 45.0),
            r.range(6000.0, 14000.0),
            r.range(0.5, 4.0),
            r.range(150.0, 600.0),
            25.0,
            (12.0, 40.0),
        ),
        "orchestrator" => (
            r.range(20.0, 35.0),
            r.range(1500.0, 3000.0),
            r.range(2.0, 6.0),
            r.range(80.0, 140.0),
            15.0,
            (3.0, 8.0),
        ),
        "cognition" => (
            r.range(15.0, 30.0),
            r.range(800.0, 2500.0),
            r.range(1.0, 5.0),
            r.range(120.0, 300.0),
            40.0,
            (2.0, 6.0),
        ),
        "memory" => (
            r.range(10.0, 25.0),
            r.range(1200.0, 4000.0),
            r.range(5.0, 40.0),
            r.range(8.0, 40.0),
            30.0,
            (2.0, 5.0),
        ),
        "storage" | "cache" => (
            r.range(8.0, 30.0),
            r.range(500.0, 8000.0),
            r.range(20.0, 300.0),
            r.range(0.8, 8.0),
            45.0,
            (1.0, 4.0),
        ),
        "bus" => (
            r.range(10.0, 30.0),
            r.range(200.0, 1200.0),
            r.range(200.0, 3000.0),
            r.range(0.3, 3.0),
            60.0,
            (1.0, 3.0),
        ),
        "api" => (
            r.range(10.0, 30.0),
            r.range(300.0, 900.0),
            r.range(10.0, 120.0),
            r.range(15.0, 60.0),
            12.0,
            (1.5, 4.0),
        ),
        "ui" | "dashboard" => (
            r.range(3.0, 12.0),
            r.range(150.0, 500.0),
            r.range(2.0, 30.0),
            r.range(20.0, 80.0),
            35.0,
            (1.0, 3.0),
        ),
        "agent" => (
            r.range(5.0, 20.0),
            r.range(400.0, 1500.0),
            r.range(0.2, 2.0),
            r.range(300.0, 1500.0),
            60.0,
            (2.0, 5.0),
        ),
        "tool" => (
            r.range(3.0, 15.0),
            r.range(150.0, 800.0),
            r.range(0.5, 10.0),
            r.range(30.0, 300.0),
            70.0,
            (1.0, 3.0),
        ),
        "perception" => (
            r.range(10.0, 35.0),
            r.range(600.0, 2500.0),
            r.range(1.0, 20.0),
            r.range(30.0, 150.0),
            45.0,
            (2.0, 6.0),
        ),
        "security" | "audit" | "config" => (
            r.range(3.0, 12.0),
            r.range(150.0, 600.0),
            r.range(5.0, 80.0),
            r.range(2.0, 20.0),
            45.0,
            (1.0, 3.0),
        ),
        _ => (
            r.range(5.0, 20.0),
            r.range(200.0, 1000.0),
            r.range(1.0, 50.0),
            r.range(10.0, 80.0),
            60.0,
            (1.0, 4.0),
        ),
    };
    // The article's AitherMind answers in ~200 ms before its spike to 3 s.
    let p50 = if name == "AitherMind" {
        r.range(192.0, 208.0)
    } else {
        p50
    };
    let mem_limit = ((mem * r.range(1.6, 2.2)) / 256.0).ceil() * 256.0;
    Profile {
        pulse_ms,
        cpu,
        mem,
        mem_limit,
        rps,
        p50,
        tail: r.range(2.0, 3.5),
        err: r.range(0.0005, 0.008),
        vram: (role == "gpu_worker").then(|| r.range(40.0, 58.0)),
        io: matches!(role, "storage" | "memory").then(|| r.range(2.0, 30.0)),
        log_ms: log_s * 1000.0,
        startup_s,
        work_ms: match role {
            "gpu_worker" => Some(45_000.0),
            "memory" => Some(600_000.0),
            "scheduler" => Some(120_000.0),
            _ => None,
        },
    }
}
