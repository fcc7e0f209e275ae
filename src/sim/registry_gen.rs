//! The simulated OS's registry: 203 AitherOS-like services over 12 layers.
//!
//! deploy/services.yaml is this generator's output, committed, so that the
//! fingerprint gate hashes a real file and humans can read the OS they are
//! looking at; a test keeps the two equal. Generation uses its own fixed seed
//! (never the simulation seed): the OS's shape does not change between runs.

use super::rng::Rng;
use crate::registry::{Registry, Service};
use std::collections::{BTreeMap, BTreeSet};

/// Seed of the dependency draw. Changing it changes deploy/services.yaml.
const REGISTRY_SEED: u64 = 0xA17E_0203;

/// Services per layer, in order; the role says what the simulator makes them do.
const LAYERS: [(&str, &[(&str, &str)]); 12] = [
    (
        "infrastructure",
        &[
            ("AitherNATS", "bus"),
            ("AitherPostgres", "storage"),
            ("AitherRedis", "cache"),
            ("AitherMinIO", "storage"),
            ("AitherVault", "security"),
            ("AitherDNS", "infrastructure"),
            ("AitherProxy", "infrastructure"),
            ("AitherRegistryHub", "infrastructure"),
            ("AitherNodeAgent", "infrastructure"),
            ("AitherClock", "infrastructure"),
            ("AitherQueue", "bus"),
            ("AitherEtcd", "storage"),
            ("AitherStorage", "storage"),
            ("AitherNetwork", "infrastructure"),
            ("AitherCertManager", "security"),
            ("AitherLogShipper", "infrastructure"),
            ("AitherSyslog", "infrastructure"),
            ("AitherHostMonitor", "metrics"),
        ],
    ),
    (
        "core",
        &[
            ("AitherFlux", "bus"),
            ("AitherChronicle", "audit"),
            ("AitherPulse", "metrics"),
            ("AitherWatchdog", "supervisor"),
            ("AitherScheduler", "scheduler"),
            ("AitherConfig", "config"),
            ("AitherDiscovery", "config"),
            ("AitherEventStore", "storage"),
            ("AitherHeartbeat", "metrics"),
            ("AitherLogger", "infrastructure"),
            ("AitherTracer", "metrics"),
            ("AitherRateLimiter", "infrastructure"),
            ("AitherCircuit", "infrastructure"),
            ("AitherDeploy", "deploy"),
            ("AitherSpine", "bus"),
            ("AitherBackup", "cron"),
        ],
    ),
    (
        "security",
        &[
            ("AitherAuth", "security"),
            ("AitherGuard", "security"),
            ("AitherShield", "security"),
            ("AitherIdentity", "security"),
            ("AitherPolicy", "security"),
            ("AitherCompliance", "audit"),
            ("AitherKeyring", "security"),
            ("AitherSentinel", "security"),
            ("AitherFirewall", "security"),
            ("AitherTokenService", "security"),
            ("AitherSandbox", "security"),
            ("AitherPermissions", "security"),
            ("AitherThreatIntel", "security"),
            ("AitherSecretsBroker", "security"),
            ("AitherPrivacy", "security"),
        ],
    ),
    (
        "memory",
        &[
            ("AitherMemory", "memory"),
            ("AitherRecall", "memory"),
            ("AitherEpisodic", "memory"),
            ("AitherSemantic", "memory"),
            ("AitherWorkingMemory", "memory"),
            ("AitherVectorStore", "storage"),
            ("AitherKnowledgeGraph", "storage"),
            ("AitherEmbedCache", "cache"),
            ("AitherContextStore", "storage"),
            ("AitherSessionStore", "storage"),
            ("AitherCache", "cache"),
            ("AitherIndexer", "storage"),
            ("AitherSearchIndex", "storage"),
            ("AitherArchive", "storage"),
            ("AitherJournal", "memory"),
            ("AitherDreamStore", "memory"),
            ("AitherProfileStore", "storage"),
            ("AitherDocStore", "storage"),
            ("AitherBlobStore", "storage"),
            ("AitherConsolidator", "memory"),
        ],
    ),
    (
        "perception",
        &[
            ("AitherVision", "perception"),
            ("AitherHearing", "perception"),
            ("AitherSpeech", "perception"),
            ("AitherOCR", "perception"),
            ("AitherSenses", "perception"),
            ("AitherScreen", "perception"),
            ("AitherCamera", "perception"),
            ("AitherAudioIn", "perception"),
            ("AitherTranscribe", "perception"),
            ("AitherSentiment", "perception"),
            ("AitherIntent", "perception"),
            ("AitherLanguage", "perception"),
            ("AitherAttention", "perception"),
            ("AitherPerceive", "perception"),
            ("AitherDocParser", "perception"),
            ("AitherWebWatch", "perception"),
        ],
    ),
    (
        "compute",
        &[
            ("AitherLLMWorkerA", "gpu_worker"),
            ("AitherLLMWorkerB", "gpu_worker"),
            ("AitherForge", "gpu_worker"),
            ("AitherEmbedWorker", "gpu_worker"),
            ("AitherWhisperWorker", "gpu_worker"),
            ("AitherDiffusionWorker", "gpu_worker"),
            ("AitherVisionWorker", "gpu_worker"),
            ("AitherRerankWorker", "gpu_worker"),
            ("AitherGPUScheduler", "scheduler"),
            ("AitherModelRegistry", "storage"),
            ("AitherModelLoader", "service"),
            ("AitherInference", "service"),
            ("AitherBatcher", "service"),
            ("AitherQuantizer", "service"),
            ("AitherTensorCache", "cache"),
            ("AitherCompute", "service"),
            ("AitherHardware", "metrics"),
            ("AitherThermal", "metrics"),
        ],
    ),
    (
        "cognition",
        &[
            ("AitherMind", "cognition"),
            ("AitherReason", "cognition"),
            ("AitherReflex", "cognition"),
            ("AitherIntuition", "cognition"),
            ("AitherPlanner", "cognition"),
            ("AitherCritic", "cognition"),
            ("AitherJudge", "cognition"),
            ("AitherCreativity", "cognition"),
            ("AitherEmotion", "cognition"),
            ("AitherPersona", "cognition"),
            ("AitherGoals", "cognition"),
            ("AitherCuriosity", "cognition"),
            ("AitherMetacog", "cognition"),
            ("AitherDream", "cognition"),
            ("AitherFocus", "cognition"),
            ("AitherSafety", "cognition"),
            ("AitherEthics", "cognition"),
            ("AitherWill", "cognition"),
            ("AitherInsight", "cognition"),
            ("AitherConscience", "cognition"),
        ],
    ),
    (
        "orchestration",
        &[
            ("Orchestrator", "orchestrator"),
            ("AitherRouter", "service"),
            ("AitherDelegator", "service"),
            ("AitherWorkflow", "service"),
            ("AitherTaskQueue", "bus"),
            ("AitherSkillRouter", "service"),
            ("AitherPromptBuilder", "service"),
            ("AitherContextManager", "service"),
            ("AitherToolRouter", "service"),
            ("AitherAgentPool", "service"),
            ("AitherCoordinator", "service"),
            ("AitherFluxContext", "service"),
        ],
    ),
    (
        "agents",
        &[
            ("AitherCoder", "agent"),
            ("AitherResearcher", "agent"),
            ("AitherArtist", "agent"),
            ("AitherWriter", "agent"),
            ("AitherAnalyst", "agent"),
            ("AitherReviewer", "agent"),
            ("AitherTester", "agent"),
            ("AitherDevOps", "agent"),
            ("AitherScout", "agent"),
            ("AitherTutor", "agent"),
            ("AitherScribe", "agent"),
            ("AitherTranslator", "agent"),
            ("AitherCurator", "agent"),
            ("AitherHistorian", "agent"),
            ("AitherArchitect", "agent"),
            ("AitherDebugger", "agent"),
            ("AitherSecurityAgent", "agent"),
            ("AitherDataAgent", "agent"),
            ("AitherMusician", "agent"),
            ("AitherNarrator", "agent"),
            ("AitherPlannerAgent", "agent"),
            ("AitherCompanion", "agent"),
        ],
    ),
    (
        "tools",
        &[
            ("AitherSearch", "tool"),
            ("AitherBrowser", "tool"),
            ("AitherGit", "tool"),
            ("AitherShell", "tool"),
            ("AitherFiles", "tool"),
            ("AitherCalendar", "tool"),
            ("AitherMail", "tool"),
            ("AitherCodeRunner", "tool"),
            ("AitherNotebook", "tool"),
            ("AitherDiagram", "tool"),
            ("AitherImageEdit", "tool"),
            ("AitherPDF", "tool"),
            ("AitherSpreadsheet", "tool"),
            ("AitherWeather", "tool"),
            ("AitherMaps", "tool"),
            ("AitherTerminal", "tool"),
            ("AitherCompiler", "tool"),
            ("AitherLinter", "tool"),
            ("AitherPackage", "tool"),
            ("AitherWebhook", "tool"),
        ],
    ),
    (
        "api",
        &[
            ("AitherGateway", "api"),
            ("AitherAPI", "api"),
            ("AitherGraphQL", "api"),
            ("AitherWebSocket", "api"),
            ("AitherStream", "api"),
            ("AitherMCP", "api"),
            ("AitherOpenAICompat", "api"),
            ("AitherSlackBridge", "api"),
            ("AitherDiscordBridge", "api"),
            ("AitherWebhookIn", "api"),
            ("AitherSDK", "api"),
            ("AitherExport", "api"),
            ("AitherNotify", "api"),
            ("AitherBilling", "api"),
        ],
    ),
    (
        "ui",
        &[
            ("AitherDashboard", "dashboard"),
            ("AitherVeil", "ui"),
            ("AitherCanvas", "ui"),
            ("AitherConsole", "ui"),
            ("AitherChat", "ui"),
            ("AitherStudio", "ui"),
            ("AitherAdmin", "ui"),
            ("AitherMobile", "ui"),
            ("AitherDocs", "ui"),
            ("AitherStatus", "ui"),
            ("AitherSettings", "ui"),
            ("AitherPlayground", "ui"),
        ],
    ),
];

/// Hand-written dependencies of the spine: the services the demo and the
/// faults talk about. Their closure is kept small on purpose, so that a
/// `--services 20` subset still holds an orchestrator, the mind, memory, a GPU
/// worker, the dashboard and the recorders of audit entries.
const SPINE: &[(&str, &[&str])] = &[
    ("AitherFlux", &["AitherNATS"]),
    ("AitherChronicle", &["AitherNATS", "AitherPostgres"]),
    ("AitherPulse", &["AitherNATS"]),
    ("AitherWatchdog", &["AitherNATS"]),
    ("AitherScheduler", &["AitherNATS", "AitherPostgres"]),
    ("AitherConfig", &["AitherEtcd", "AitherVault"]),
    ("AitherDeploy", &["AitherNATS", "AitherRegistryHub"]),
    ("AitherBackup", &["AitherPostgres", "AitherMinIO"]),
    ("AitherAuth", &["AitherPostgres", "AitherVault"]),
    ("AitherPolicy", &["AitherConfig", "AitherFlux"]),
    ("AitherMemory", &["AitherPostgres", "AitherFlux"]),
    ("AitherVectorStore", &["AitherPostgres"]),
    ("AitherRecall", &["AitherRedis", "AitherFlux"]),
    ("AitherLLMWorkerA", &["AitherFlux"]),
    ("AitherLLMWorkerB", &["AitherFlux"]),
    ("AitherForge", &["AitherFlux", "AitherMinIO"]),
    ("AitherEmbedWorker", &["AitherFlux", "AitherEmbedCache"]),
    (
        "AitherMind",
        &["AitherMemory", "AitherLLMWorkerA", "AitherVectorStore"],
    ),
    ("AitherReason", &["AitherLLMWorkerB", "AitherMemory"]),
    (
        "Orchestrator",
        &["AitherMind", "AitherMemory", "AitherChronicle"],
    ),
    ("AitherAgentPool", &["AitherMind", "AitherAuth"]),
    ("AitherCoder", &["AitherAgentPool", "AitherReason"]),
    ("AitherArtist", &["AitherAgentPool", "AitherForge"]),
    ("AitherResearcher", &["AitherAgentPool", "AitherRecall"]),
    ("AitherSearch", &["AitherSearchIndex", "AitherResearcher"]),
    ("AitherGateway", &["Orchestrator", "AitherAuth"]),
    ("AitherDashboard", &["AitherGateway", "AitherPulse"]),
    ("AitherVeil", &["AitherGateway"]),
    ("AitherChat", &["AitherGateway", "AitherSessionStore"]),
];

/// Ports the infrastructure really listens on; everything else gets 8000 + 100·layer + index.
const WELL_KNOWN_PORTS: &[(&str, u16)] = &[
    ("AitherNATS", 4222),
    ("AitherPostgres", 5432),
    ("AitherRedis", 6379),
    ("AitherMinIO", 9900),
    ("AitherEtcd", 2379),
];

/// The registry deploy/services.yaml holds.
pub fn default_registry() -> Registry {
    let mut rng = Rng::new(REGISTRY_SEED);
    let spine: BTreeMap<&str, &[&str]> = SPINE.iter().copied().collect();
    let ports: BTreeMap<&str, u16> = WELL_KNOWN_PORTS.iter().copied().collect();
    let by_layer: Vec<Vec<&str>> = LAYERS
        .iter()
        .map(|(_, svcs)| svcs.iter().map(|(n, _)| *n).collect())
        .collect();
    let mut services = Vec::new();
    for (layer, (_, svcs)) in LAYERS.iter().enumerate() {
        for (i, (name, role)) in svcs.iter().enumerate() {
            let depends_on: Vec<String> = match spine.get(name) {
                Some(deps) => deps.iter().map(|d| d.to_string()).collect(),
                None if layer == 0 => Vec::new(),
                None => draw_deps(&mut rng, layer, &by_layer),
            };
            let port = ports
                .get(name)
                .copied()
                .unwrap_or(8000 + 100 * layer as u16 + i as u16);
            services.push(Service {
                name: name.to_string(),
                layer: layer as u8,
                port,
                role: role.to_string(),
                depends_on,
            });
        }
    }
    Registry { services }
}

/// Mostly the layer just below, sometimes two below, rarely anywhere lower:
/// the shape of a layered architecture with a few long-range calls.
fn draw_deps(rng: &mut Rng, layer: usize, by_layer: &[Vec<&str>]) -> Vec<String> {
    let want = 1 + usize::from(rng.chance(0.55)) + usize::from(rng.chance(0.2));
    let mut out: Vec<String> = Vec::new();
    let mut tries = 0;
    while out.len() < want && tries < 20 {
        tries += 1;
        let x = rng.f64();
        let l = if x < 0.6 || layer == 1 {
            layer - 1
        } else if x < 0.85 && layer >= 2 {
            layer - 2
        } else {
            rng.below(layer)
        };
        if let Some(d) = rng.pick(&by_layer[l]) {
            if !out.iter().any(|o| o == d) {
                out.push(d.to_string());
            }
        }
    }
    out
}

/// The name of a layer, L0 to L11.
pub fn layer_name(layer: u8) -> &'static str {
    LAYERS
        .get(layer as usize)
        .map(|(n, _)| *n)
        .unwrap_or("unknown")
}

/// Services that should survive a `--services N` cut, most important first:
/// what the demo, the traces and the audit trail need.
const KEEP_FIRST: &[&str] = &[
    "AitherDashboard",
    "AitherWatchdog",
    "AitherForge",
    "AitherScheduler",
    "AitherDeploy",
    "AitherBackup",
    "AitherConfig",
    "AitherPolicy",
    "AitherCoder",
    "AitherArtist",
    "AitherResearcher",
];
const KEEP_ROLES: &[&str] = &[
    "orchestrator",
    "cognition",
    "memory",
    "gpu_worker",
    "dashboard",
    "supervisor",
    "audit",
    "deploy",
    "scheduler",
    "security",
    "agent",
];

/// Each service's position in `reg`, by name.
pub(super) fn name_index(reg: &Registry) -> BTreeMap<&str, usize> {
    reg.services
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect()
}

/// A dependency-closed subset of at most `n` services: a small OS for tests
/// that still has the roles the simulator's faults and traces need.
pub fn subset(reg: &Registry, n: usize) -> Registry {
    if n >= reg.services.len() {
        return reg.clone();
    }
    let index = name_index(reg);
    let closure = |start: usize| -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            if seen.insert(i) {
                for d in &reg.services[i].depends_on {
                    if let Some(&j) = index.get(d.as_str()) {
                        stack.push(j);
                    }
                }
            }
        }
        seen
    };
    let mut kept: BTreeSet<usize> = BTreeSet::new();
    let mut order: Vec<usize> = KEEP_FIRST
        .iter()
        .filter_map(|n| index.get(n).copied())
        .collect();
    for role in KEEP_ROLES {
        order.extend(
            reg.services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.role == *role)
                .map(|(i, _)| i),
        );
    }
    let mut by_layer: Vec<usize> = (0..reg.services.len()).collect();
    by_layer.sort_by_key(|&i| reg.services[i].layer);
    order.extend(by_layer);
    for i in order {
        if kept.len() >= n {
            break;
        }
        if kept.contains(&i) {
            continue;
        }
        let c = closure(i);
        if kept.union(&c).count() <= n {
            kept.extend(c);
        }
    }
    Registry {
        services: reg
            .services
            .iter()
            .enumerate()
            .filter(|(i, _)| kept.contains(i))
            .map(|(_, s)| s.clone())
            .collect(),
    }
}

/// Layers in 0..12, dependencies strictly downward: the invariant that makes
/// the startup order well defined (and the graph acyclic).
pub fn check_layered(reg: &Registry) -> Result<(), String> {
    let layer: BTreeMap<&str, u8> = reg
        .services
        .iter()
        .map(|s| (s.name.as_str(), s.layer))
        .collect();
    let mut ports = BTreeSet::new();
    for s in &reg.services {
        if !ports.insert(s.port) {
            return Err(format!("port {} used twice (by {})", s.port, s.name));
        }
        for d in &s.depends_on {
            match layer.get(d.as_str()) {
                Some(&l) if l < s.layer => {}
                Some(&l) => {
                    return Err(format!(
                        "{} (L{}) depends on {} (L{l}), not a lower layer",
                        s.name, s.layer, d
                    ))
                }
                None => return Err(format!("{} depends on unknown {}", s.name, d)),
            }
        }
    }
    Ok(())
}

/// No dependency cycle (what an architecture change must preserve even
/// when a split service calls its new sibling in the same layer).
pub fn check_acyclic(reg: &Registry) -> Result<(), String> {
    let index = name_index(reg);
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; reg.services.len()];
    for root in 0..reg.services.len() {
        if state[root] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        state[root] = 1;
        while let Some(&mut (i, ref mut next)) = stack.last_mut() {
            let deps = &reg.services[i].depends_on;
            if *next < deps.len() {
                let d = &deps[*next];
                *next += 1;
                let Some(&j) = index.get(d.as_str()) else {
                    return Err(format!("{} depends on unknown {d}", reg.services[i].name));
                };
                match state[j] {
                    0 => {
                        state[j] = 1;
                        stack.push((j, 0));
                    }
                    1 => {
                        return Err(format!(
                            "dependency cycle through {} and {}",
                            reg.services[i].name, reg.services[j].name
                        ))
                    }
                    _ => {}
                }
            } else {
                state[i] = 2;
                stack.pop();
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let r = default_registry();
        assert_eq!(r.services.len(), 203);
        r.check().unwrap();
        check_layered(&r).unwrap();
        check_acyclic(&r).unwrap();
        let mut cyclic = r.clone();
        cyclic.services[0].depends_on.push("AitherDashboard".into());
        assert!(check_acyclic(&cyclic).is_err());
        for l in 0..12u8 {
            assert!(r.services.iter().any(|s| s.layer == l));
        }
        for s in &r.services {
            if s.layer > 0 {
                assert!(!s.depends_on.is_empty(), "{} has no deps", s.name);
            }
        }
    }

    #[test]
    fn small_subset_keeps_spine() {
        let r = subset(&default_registry(), 20);
        assert_eq!(r.services.len(), 20);
        r.check().unwrap();
        for n in [
            "Orchestrator",
            "AitherMind",
            "AitherDashboard",
            "AitherWatchdog",
        ] {
            assert!(r.get(n).is_some(), "{n} missing");
        }
        assert!(r.services.iter().any(|s| s.role == "gpu_worker"));
        assert!(r.services.iter().any(|s| s.role == "memory"));
    }
}
