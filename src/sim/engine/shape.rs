//! The OS's shape as the generators need it: who records the audit trail,
//! who calls whom, in which order services boot.

use super::Simulation;

/// Services that write the audit trail (the chronicle's sources).
#[derive(Default)]
pub(super) struct Recorders {
    pub auth: Option<usize>,
    pub vault: Option<usize>,
    pub policy: Option<usize>,
    pub config: Option<usize>,
    pub deploy: Option<usize>,
    pub scheduler: Option<usize>,
    pub watchdog: Option<usize>,
    pub memory: Option<usize>,
    pub backup: Option<usize>,
}

impl Simulation {
    fn find_svc(&self, names: &[&str], roles: &[&str]) -> Option<usize> {
        let by_name = names
            .iter()
            .find_map(|n| self.svcs.iter().position(|s| s.name == *n));
        by_name
            .or_else(|| {
                roles
                    .iter()
                    .find_map(|r| self.svcs.iter().position(|s| s.role == *r))
            })
            .or_else(|| self.svcs.iter().position(|s| s.role == "audit"))
            .or(if self.svcs.is_empty() { None } else { Some(0) })
    }

    pub(super) fn find_roles(&mut self) {
        self.rec = Recorders {
            auth: self.find_svc(&["AitherAuth"], &["security"]),
            vault: self.find_svc(&["AitherVault"], &["security"]),
            policy: self.find_svc(&["AitherPolicy"], &["security"]),
            config: self.find_svc(&["AitherConfig"], &["config"]),
            deploy: self.find_svc(&["AitherDeploy"], &["deploy"]),
            scheduler: self.find_svc(&["AitherScheduler"], &["scheduler"]),
            watchdog: self.find_svc(&["AitherWatchdog"], &["supervisor"]),
            memory: self.find_svc(&["AitherMemory"], &["memory"]),
            backup: self.svcs.iter().position(|s| s.role == "cron"),
        };
        self.trace_agents = (0..self.svcs.len())
            .filter(|&i| matches!(self.svcs[i].role.as_str(), "orchestrator" | "agent"))
            .collect();
        self.agents = (0..self.svcs.len())
            .filter(|&i| self.svcs[i].role == "agent")
            .collect();
        let named = [
            "AitherPostgres",
            "AitherVectorStore",
            "AitherSearchIndex",
            "AitherMinIO",
            "AitherBackup",
        ];
        self.cron_targets = named
            .iter()
            .filter_map(|n| self.svcs.iter().position(|s| s.name == *n))
            .collect();
        if self.cron_targets.is_empty() {
            self.cron_targets = (0..self.svcs.len())
                .filter(|&i| self.svcs[i].role == "storage")
                .take(3)
                .collect();
        }
        let recs = [
            self.rec.auth,
            self.rec.vault,
            self.rec.policy,
            self.rec.config,
            self.rec.deploy,
            self.rec.scheduler,
            self.rec.watchdog,
            self.rec.backup,
        ];
        self.reserved.extend(recs.into_iter().flatten());
    }

    pub(super) fn dependents(&self, i: usize) -> Vec<usize> {
        (0..self.svcs.len())
            .filter(|&j| self.svcs[j].exists && self.svcs[j].deps.iter().any(|&(d, _)| d == i))
            .collect()
    }

    /// What a reasoning agent calls: its dependencies, and for the
    /// orchestrator every agent it may delegate to.
    pub(super) fn calls(&self, a: usize) -> Vec<usize> {
        let mut c: Vec<usize> = self.svcs[a].deps.iter().map(|&(d, _)| d).collect();
        if self.svcs[a].role == "orchestrator" {
            c.extend(self.agents.iter().copied());
        }
        c
    }

    /// Reasoning agents whose traces a fault on `affected` shows up in.
    pub(super) fn callers(&self, affected: &[usize]) -> Vec<usize> {
        self.trace_agents
            .iter()
            .copied()
            .filter(|&a| {
                !affected.contains(&a) && self.calls(a).iter().any(|c| affected.contains(c))
            })
            .collect()
    }

    /// Dependencies first; ties by layer then registry order. A cycle (only
    /// possible in a hand-edited registry) is broken rather than refused.
    pub(super) fn topo_order(&self) -> Vec<usize> {
        let n = self.svcs.len();
        let mut indeg: Vec<usize> = self.svcs.iter().map(|s| s.deps.len()).collect();
        let mut done = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let next = (0..n)
                .filter(|&i| !done[i] && indeg[i] == 0)
                .min_by_key(|&i| (self.svcs[i].layer, i))
                .or_else(|| (0..n).filter(|&i| !done[i]).min_by_key(|&i| (indeg[i], i)));
            let Some(i) = next else { break };
            done[i] = true;
            order.push(i);
            for j in 0..n {
                if !done[j] {
                    let k = self.svcs[j].deps.iter().filter(|&&(d, _)| d == i).count();
                    indeg[j] = indeg[j].saturating_sub(k);
                }
            }
        }
        order
    }
}
