//! A service of the simulated OS: its registry entry, its character and its
//! running state, plus what a fault does to it. Shared by the engine, which
//! changes the state, and the graphs, which only read it; living here keeps
//! the two from depending on each other.

use super::profile::{profile, Profile, PROFILE_SEED};
use super::rng::Rng;
use crate::registry::Service;
use std::collections::BTreeMap;

/// A service's dependencies, each with the fault that added it (if one did).
pub(super) type Deps = Vec<(usize, Option<usize>)>;

/// What a fault does to a service while it is on.
#[derive(Debug, Clone)]
pub(super) enum Fx {
    /// Median latency forced to this many ms.
    Latency { p50: f64 },
    /// Memory climbing to the limit between t0 and t1 (the OOM is scripted).
    MemLeak { t0: i64, t1: i64, to: f64 },
    /// Calls to `dep` go to 127.0.0.1 and are refused.
    Refused { dep: usize },
    /// The dependency `dep` is down; requests fail.
    Upstream { dep: usize },
    /// GPU memory held near this percentage.
    Vram { pct: f64 },
}

#[derive(Debug, Clone)]
pub(super) struct Effect {
    pub fault: usize,
    pub fx: Fx,
}

/// A service of the simulated OS and its running state.
pub(super) struct Svc {
    pub name: String,
    pub layer: u8,
    pub port: u16,
    pub role: String,
    /// Current dependencies; the second field is the fault that added the edge.
    pub deps: Deps,
    pub prof: Profile,
    pub rng: Rng,
    /// False for a service an architecture change has not created yet.
    pub exists: bool,
    pub up: bool,
    /// The fault that took the service down, if one did.
    pub down_fault: Option<usize>,
    pub up_since: i64,
    pub mem: f64,
    pub burst: Option<(i64, f64)>,
    pub effect: Option<Effect>,
    /// Every event of this service belongs to this fault (a service an
    /// architecture change created).
    pub label_all: Option<usize>,
    pub busy_until: i64,
    pub version: (u32, u32, u32),
    pub in_cron: bool,
    pub hb_seq: i64,
    pub log_chain: u32,
}

/// A service as the registry describes it, not started yet; `index` maps
/// names to positions (dependencies outside it are dropped).
pub(super) fn new_svc(s: &Service, index: &BTreeMap<&str, usize>, seed: u64, start: i64) -> Svc {
    let prof = profile(&s.name, &s.role);
    let mut vr = Rng::stream(PROFILE_SEED ^ 0x7E5, &s.name);
    Svc {
        name: s.name.clone(),
        layer: s.layer,
        port: s.port,
        role: s.role.clone(),
        deps: s
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()).map(|&i| (i, None)))
            .collect(),
        mem: prof.mem * 0.85,
        prof,
        rng: Rng::stream(seed, &s.name),
        exists: true,
        up: false,
        down_fault: None,
        up_since: start,
        burst: None,
        effect: None,
        label_all: None,
        busy_until: i64::MIN,
        version: (
            vr.int(0, 3) as u32,
            vr.int(0, 30) as u32,
            vr.int(0, 20) as u32,
        ),
        in_cron: false,
        hb_seq: 0,
        log_chain: 0,
    }
}
