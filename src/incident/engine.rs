//! The incident engine: alerts in, incidents out. Pure (no bus, no clock:
//! every time it reads is an alert's `ts` or the `now` it is handed), so it
//! is tested on hand-made topologies and replays the same way every time.
//!
//! The join rule: an alert joins the open incident whose latest alert is
//! within `join_window` of it and which has a member within `max_hops`
//! edges of the alert's source (the source itself included); when several
//! qualify, the oldest (it connects them, but incidents are never merged:
//! their ids and what subscribers were told stay true). Otherwise it opens
//! a new incident. An incident resolves once `quiet` has passed after its
//! latest alert, by event time: the latest alert seen, or the clock the
//! role hands [`Engine::advance`].
//!
//! Memory is bounded: at most `max_open` open incidents (one more to open
//! resolves the one quiet longest first), [`Incident::MAX_SOURCES`] member
//! sources per incident (further sources' alerts are counted, not listed),
//! [`Incident::MAX_ALERT_IDS`] alert ids per incident and
//! [`MAX_RESOLVED_IDS`] of recently resolved ones (redelivery detection),
//! and the topology's `max_edges` observed edges.

use super::rank::{rank, Member};
use super::topology::Topology;
use crate::contract::alert::Alert;
use crate::contract::incident::{Incident, IncidentState};
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashSet, VecDeque};

/// Alert ids of resolved incidents remembered, so a late redelivery of
/// one does not open a new incident.
pub const MAX_RESOLVED_IDS: usize = 8192;
/// Longest `what` of a suspect, in characters.
const MAX_WHAT: usize = 160;

#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// An alert joins an incident whose latest alert is at most this much
    /// older (or newer) than it.
    pub join_window_ms: i64,
    /// An incident resolves this long after its latest alert.
    pub quiet_ms: i64,
    /// Topology distance within which an alert's source joins an incident.
    pub max_hops: usize,
    pub max_open: usize,
    /// Observed topology edges kept (registry edges come on top).
    pub max_edges: usize,
    /// An incident is told (published, stored, counted) only once it is
    /// confirmed: its alerts span at least `confirm_span_ms`, or number at
    /// least `confirm_alerts`, or one scores at least `confirm_score`, or
    /// one is a silence alert (a source silent for several of its usual
    /// intervals has lasted already: the silence watch's own rule) or
    /// names a known failure (e.g. an OOM kill; a diagnosis that only reads
    /// a metric's level, `alert::is_reading`, does not). Until
    /// then it is pending, and a pending incident that goes quiet ends
    /// unconfirmed (its alerts still went out raw). `confirm_alerts` 1
    /// confirms every incident at once.
    pub confirm_span_ms: i64,
    pub confirm_alerts: u32,
    pub confirm_score: f32,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            join_window_ms: 5 * 60_000,
            quiet_ms: 10 * 60_000,
            max_hops: 2,
            max_open: 256,
            max_edges: 20_000,
            confirm_span_ms: 5 * 60_000,
            confirm_alerts: 3,
            confirm_score: 12.0,
        }
    }
}

/// What became of one alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Opened(String),
    Joined(String),
    /// Already counted (a redelivery): nothing changed.
    Duplicate,
}

/// What the engine has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub opened: u64,
    pub resolved: u64,
    /// Resolved early to make room under `max_open`.
    pub evicted: u64,
    /// Incidents opened pending (not yet confirmed).
    pub pending: u64,
    pub joined: u64,
    pub duplicates: u64,
    /// Pending incidents that went quiet before they were confirmed.
    pub unconfirmed: u64,
}

#[derive(Debug, Clone)]
struct Open {
    id: String,
    opened_ts: i64,
    updated_ts: i64,
    alerts: u32,
    score: f32,
    /// When it met the confirmation rule; None while pending.
    confirmed_ts: Option<i64>,
    /// In onset order.
    members: Vec<Member>,
    alert_ids: VecDeque<String>,
}

pub struct Engine {
    cfg: EngineConfig,
    topo: Topology,
    /// Oldest first.
    open: Vec<Open>,
    resolved_ids: VecDeque<String>,
    resolved_set: HashSet<String>,
    /// Open incidents changed since last persisted, and resolved ones not
    /// yet persisted (they have left `open`).
    dirty: HashSet<String>,
    resolved: BTreeMap<String, Incident>,
    /// Pending incidents forgotten, whose stored state is to be deleted.
    dropped: std::collections::BTreeSet<String>,
    /// The latest time seen (alert or clock).
    watermark: i64,
    pub counts: Counts,
}

impl Engine {
    pub fn new(cfg: EngineConfig, topo: Topology) -> Engine {
        Engine {
            cfg,
            topo,
            open: Vec::new(),
            resolved_ids: VecDeque::new(),
            resolved_set: HashSet::new(),
            dirty: HashSet::new(),
            resolved: BTreeMap::new(),
            dropped: Default::default(),
            watermark: i64::MIN,
            counts: Counts::default(),
        }
    }

    pub fn topology_mut(&mut self) -> &mut Topology {
        &mut self.topo
    }

    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Open incidents that are confirmed (pending ones are not counted).
    pub fn open_count(&self) -> usize {
        self.open
            .iter()
            .filter(|o| o.confirmed_ts.is_some())
            .count()
    }

    /// Every open incident as it would be published now, oldest first.
    pub fn open_incidents(&self) -> Vec<Incident> {
        self.open.iter().map(|o| self.snapshot(o)).collect()
    }

    /// Takes incidents back from storage (after a restart): the open ones
    /// carry on, the resolved ones' alert ids are remembered (newest kept).
    /// Past `max_open`, the ones quiet longest are resolved. The open ones
    /// count as changed: storing them again costs a deduplicated publish,
    /// and covers a state put in KV whose publish a crash cut off.
    pub fn restore(&mut self, mut stored: Vec<Incident>) {
        stored.sort_by_key(|i| (i.resolved_ts.unwrap_or(i.updated_ts), i.opened_ts));
        for inc in stored {
            self.watermark = self.watermark.max(inc.updated_ts);
            if inc.state == IncidentState::Resolved {
                inc.alert_ids.iter().for_each(|a| self.remember_resolved(a));
                continue;
            }
            if self.open.iter().any(|o| o.id == inc.id) {
                continue;
            }
            let mut members: Vec<Member> = inc.suspects.iter().map(Member::of_suspect).collect();
            members.sort_by(|a, b| a.onset_ts.cmp(&b.onset_ts).then(a.source.cmp(&b.source)));
            members.truncate(Incident::MAX_SOURCES);
            let mut alert_ids: VecDeque<String> = inc.alert_ids.into_iter().collect();
            while alert_ids.len() > Incident::MAX_ALERT_IDS {
                alert_ids.pop_front();
            }
            self.dirty.insert(inc.id.clone());
            let confirmed_ts = match inc.state {
                IncidentState::Pending => None,
                _ => Some(inc.confirmed_ts.unwrap_or(inc.opened_ts)),
            };
            self.open.push(Open {
                id: inc.id,
                opened_ts: inc.opened_ts,
                updated_ts: inc.updated_ts,
                alerts: inc.alerts,
                score: inc.score,
                confirmed_ts,
                members,
                alert_ids,
            });
        }
        self.open.sort_by_key(|o| (o.opened_ts, o.id.clone()));
        while self.open.len() > self.cfg.max_open.max(1) {
            self.evict();
        }
    }

    /// Whether this alert id was already counted.
    pub fn knows(&self, alert_id: &str) -> bool {
        self.resolved_set.contains(alert_id)
            || self
                .open
                .iter()
                .any(|o| o.alert_ids.iter().any(|a| a == alert_id))
    }

    /// One alert: first the incidents it proves quiet are resolved, then it
    /// joins an open incident or opens one.
    pub fn observe(&mut self, alert: &Alert) -> Verdict {
        if self.knows(&alert.id) {
            self.counts.duplicates += 1;
            return Verdict::Duplicate;
        }
        self.advance(alert.ts);
        let near = self.topo.near(&alert.source, self.cfg.max_hops);
        let join = self.cfg.join_window_ms;
        let target = self
            .open
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                alert.ts.saturating_sub(o.updated_ts) <= join
                    && o.opened_ts.saturating_sub(alert.ts) <= join
                    && o.members.iter().any(|m| near.contains(&m.source))
            })
            .min_by(|(_, a), (_, b)| a.opened_ts.cmp(&b.opened_ts).then(a.id.cmp(&b.id)))
            .map(|(i, _)| i);
        let i = match target {
            Some(i) => {
                join_alert(&mut self.open[i], alert);
                self.counts.joined += 1;
                i
            }
            None => {
                while self.open.len() >= self.cfg.max_open.max(1) {
                    self.evict();
                }
                self.open.push(open_with(alert));
                self.counts.pending += 1;
                self.open.len() - 1
            }
        };
        // A silence alert has lasted already (the silence watch's own
        // rule); a diagnosis that names a failure is one recognised (one
        // that reads a metric's level must last like any surprise).
        let sure = alert.reason == crate::contract::alert::AlertReason::Silence
            || alert
                .diagnosis
                .as_deref()
                .is_some_and(|d| !crate::alert::is_reading(d));
        if self.open[i].confirmed_ts.is_none() && (sure || self.confirms(&self.open[i])) {
            self.open[i].confirmed_ts = Some(alert.ts);
            self.counts.opened += 1;
        }
        let id = self.open[i].id.clone();
        self.dirty.insert(id.clone());
        match target {
            Some(_) => Verdict::Joined(id),
            None => Verdict::Opened(id),
        }
    }

    /// Whether an incident's alerts meet the confirmation rule.
    fn confirms(&self, o: &Open) -> bool {
        let c = &self.cfg;
        o.alerts >= c.confirm_alerts
            || o.updated_ts.saturating_sub(o.opened_ts) >= c.confirm_span_ms
            || o.score >= c.confirm_score
    }

    /// Resolves every open incident quiet for `quiet` at `now_ms`; returns
    /// how many.
    pub fn advance(&mut self, now_ms: i64) -> usize {
        self.watermark = self.watermark.max(now_ms);
        let quiet = self.cfg.quiet_ms;
        let (done, keep): (Vec<Open>, Vec<Open>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|o| o.updated_ts.saturating_add(quiet) <= self.watermark);
        self.open = keep;
        let n = done.len();
        for o in done {
            let at = o.updated_ts.saturating_add(quiet);
            self.resolve(o, at);
        }
        n
    }

    /// Resolves the incident quiet longest, now, to make room.
    fn evict(&mut self) {
        let Some(i) = (0..self.open.len()).min_by_key(|&i| self.open[i].updated_ts) else {
            return;
        };
        let o = self.open.remove(i);
        self.counts.evicted += 1;
        let at = self.watermark.max(o.updated_ts);
        self.resolve(o, at);
    }

    fn resolve(&mut self, o: Open, at: i64) {
        o.alert_ids.iter().for_each(|a| self.remember_resolved(a));
        if o.confirmed_ts.is_none() {
            // Never told: forgotten, its stored pending state dropped.
            self.dirty.remove(&o.id);
            self.dropped.insert(o.id);
            self.counts.unconfirmed += 1;
            return;
        }
        let mut inc = self.snapshot(&o);
        inc.state = IncidentState::Resolved;
        inc.resolved_ts = Some(at);
        self.dirty.remove(&o.id);
        self.resolved.insert(o.id, inc);
        self.counts.resolved += 1;
    }

    fn remember_resolved(&mut self, id: &str) {
        if self.resolved_set.insert(id.to_string()) {
            self.resolved_ids.push_back(id.to_string());
            while self.resolved_ids.len() > MAX_RESOLVED_IDS {
                if let Some(old) = self.resolved_ids.pop_front() {
                    self.resolved_set.remove(&old);
                }
            }
        }
    }

    /// The incidents changed since they were last persisted, in a stable
    /// order (resolved ones first: they free their ids' slots).
    pub fn changed(&self) -> Vec<Incident> {
        let mut out: Vec<Incident> = self.resolved.values().cloned().collect();
        let mut open: Vec<Incident> = self
            .open
            .iter()
            .filter(|o| self.dirty.contains(&o.id))
            .map(|o| self.snapshot(o))
            .collect();
        open.sort_by(|a, b| a.id.cmp(&b.id));
        out.extend(open);
        out
    }

    /// Pending incidents that ended unconfirmed and whose stored pending
    /// state is still to be deleted.
    pub fn dropped(&self) -> Vec<String> {
        self.dropped.iter().cloned().collect()
    }

    /// A dropped incident's pending state is deleted.
    pub fn forgotten(&mut self, id: &str) {
        self.dropped.remove(id);
    }

    /// `inc` (from [`Engine::changed`]) is stored: no longer changed, unless
    /// it has changed again since.
    pub fn persisted(&mut self, inc: &Incident) {
        match inc.state {
            IncidentState::Resolved => {
                if self.resolved.get(&inc.id) == Some(inc) {
                    self.resolved.remove(&inc.id);
                }
            }
            IncidentState::Open | IncidentState::Pending => {
                let told = inc.state == IncidentState::Open;
                let same = self.open.iter().any(|o| {
                    o.id == inc.id && o.alerts == inc.alerts && o.confirmed_ts.is_some() == told
                });
                if same {
                    self.dirty.remove(&inc.id);
                }
            }
        }
    }

    fn snapshot(&self, o: &Open) -> Incident {
        Incident {
            id: o.id.clone(),
            state: match o.confirmed_ts {
                Some(_) => IncidentState::Open,
                None => IncidentState::Pending,
            },
            confirmed_ts: o.confirmed_ts,
            opened_ts: o.opened_ts,
            updated_ts: o.updated_ts,
            resolved_ts: None,
            score: o.score,
            alerts: o.alerts,
            suspects: rank(&o.members, &self.topo),
            sources: o.members.iter().map(|m| m.source.clone()).collect(),
            alert_ids: o.alert_ids.iter().cloned().collect(),
        }
    }
}

/// An incident's id: from its first alert alone (its time and a hash of
/// its id), so the same alerts give the same id in any replica or replay.
/// A KV key and one subject token: `inc-<ts>-<8 hex>`.
pub fn incident_id(first: &Alert) -> String {
    let h = Sha256::digest(first.id.as_bytes());
    format!("inc-{}-{}", first.ts, hex::encode(&h[..4]))
}

/// What an alert says, for its suspect: the diagnosis, else the surprising
/// span, else the reason; one line, bounded.
pub fn what_of(a: &Alert) -> String {
    let w = a
        .diagnosis
        .clone()
        .filter(|d| !d.trim().is_empty())
        .or_else(|| Some(a.span.text.clone()).filter(|t| !t.trim().is_empty()))
        .unwrap_or_else(|| a.reason.as_str().to_string());
    w.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_WHAT)
        .collect()
}

fn member_of(a: &Alert) -> Member {
    Member {
        source: a.source.clone(),
        onset_ts: a.ts,
        score: finite(a.score),
        alerts: 1,
        what: what_of(a),
    }
}

/// A NaN or infinite score from the wire counts as 0, so it cannot poison
/// maxima and ranks.
fn finite(x: f32) -> f32 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

fn open_with(a: &Alert) -> Open {
    Open {
        id: incident_id(a),
        opened_ts: a.ts,
        updated_ts: a.ts,
        alerts: 1,
        score: finite(a.score),
        confirmed_ts: None,
        members: vec![member_of(a)],
        alert_ids: VecDeque::from([a.id.clone()]),
    }
}

fn join_alert(o: &mut Open, a: &Alert) {
    o.alerts = o.alerts.saturating_add(1);
    o.updated_ts = o.updated_ts.max(a.ts);
    o.opened_ts = o.opened_ts.min(a.ts);
    o.score = o.score.max(finite(a.score));
    let room = o.members.len() < Incident::MAX_SOURCES;
    match o.members.iter_mut().find(|m| m.source == a.source) {
        Some(m) => {
            m.alerts = m.alerts.saturating_add(1);
            m.onset_ts = m.onset_ts.min(a.ts);
            if finite(a.score) > m.score {
                m.score = finite(a.score);
                m.what = what_of(a);
            }
        }
        None if room => o.members.push(member_of(a)),
        None => {}
    }
    o.members
        .sort_by(|x, y| x.onset_ts.cmp(&y.onset_ts).then(x.source.cmp(&y.source)));
    o.alert_ids.push_back(a.id.clone());
    while o.alert_ids.len() > Incident::MAX_ALERT_IDS {
        o.alert_ids.pop_front();
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
