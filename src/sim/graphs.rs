//! The topology curriculum's source: the OS's graph faculties, each a
//! snapshot of edges derived from the live service table.
//!
//! Every graph is a pure function of the services (names, roles, current
//! dependencies), so a snapshot repeats exactly until the architecture really
//! changes; an edge that appears is news. Per-service choices (which node a
//! service runs on, ...) hash the name, never the simulation seed, so they are
//! the same OS across runs.

use super::rng::fnv1a;
use super::service::Svc;
use super::text::lower;

/// The graphs published on `os.graph.<graph>`, in publishing order.
pub const GRAPHS: [&str; 7] = [
    "ServiceGraph",
    "CodeGraph",
    "ConfigGraph",
    "InfraGraph",
    "APIGraph",
    "FluxGraph",
    "DocGraph",
];

/// One edge; `label` is the fault that put it there, if any.
pub(super) struct Edge {
    pub src: String,
    pub rel: &'static str,
    pub dst: String,
    pub label: Option<usize>,
}

fn handler(role: &str) -> &'static str {
    match role {
        "gpu_worker" => "generate",
        "memory" => "recall",
        "storage" | "cache" => "query",
        "orchestrator" => "route",
        "cognition" => "think",
        "agent" => "run_task",
        "tool" => "invoke",
        "api" => "proxy",
        "ui" | "dashboard" => "render",
        "security" => "authorize",
        "bus" => "publish",
        "perception" => "perceive",
        "scheduler" => "dispatch",
        _ => "handle",
    }
}

fn endpoint(role: &str) -> &'static str {
    match role {
        "gpu_worker" => "POST /v1/generate",
        "memory" => "POST /v1/recall",
        "storage" | "cache" => "POST /v1/query",
        "orchestrator" => "POST /v1/chat",
        "cognition" => "POST /v1/think",
        "agent" => "POST /v1/tasks",
        "tool" => "POST /v1/invoke",
        "api" => "GET /v1/",
        "ui" | "dashboard" => "GET /",
        "security" => "POST /v1/authorize",
        "perception" => "POST /v1/perceive",
        _ => "GET /v1/status",
    }
}

/// Service `s`'s dependencies, each with the label of an edge to it: the
/// fault that added the edge, else one that created either end.
fn deps<'a>(s: &'a Svc, svcs: &'a [Svc]) -> impl Iterator<Item = (&'a Svc, Option<usize>)> {
    s.deps.iter().map(move |&(d, f)| {
        let dep = &svcs[d];
        (dep, f.or(s.label_all).or(dep.label_all))
    })
}

/// The edges of graph `g` (an index into [`GRAPHS`]) over the existing services.
pub(super) fn edges(g: usize, svcs: &[Svc]) -> Vec<Edge> {
    let mut out = Vec::new();
    let live = || svcs.iter().filter(|s| s.exists);
    let mut e = |src: String, rel: &'static str, dst: String, label: Option<usize>| {
        out.push(Edge {
            src,
            rel,
            dst,
            label,
        })
    };
    match GRAPHS.get(g).copied().unwrap_or("") {
        "ServiceGraph" => {
            for s in live() {
                for (dep, label) in deps(s, svcs) {
                    e(s.name.clone(), "calls", dep.name.clone(), label);
                }
            }
        }
        "CodeGraph" => {
            for s in live() {
                let h = handler(&s.role);
                e(
                    format!("{}::main", s.name),
                    "calls",
                    format!("{}::{h}", s.name),
                    s.label_all,
                );
                for (dep, label) in deps(s, svcs) {
                    e(
                        format!("{}::{h}", s.name),
                        "calls",
                        format!("{}::{}", dep.name, handler(&dep.role)),
                        label,
                    );
                }
            }
        }
        "ConfigGraph" => {
            for s in live() {
                e(
                    s.name.clone(),
                    "reads",
                    format!("config/{}.yaml", lower(&s.name)),
                    s.label_all,
                );
                match s.role.as_str() {
                    "gpu_worker" => e(s.name.clone(), "reads", "hardware.yaml".into(), s.label_all),
                    "config" | "deploy" | "supervisor" => {
                        e(s.name.clone(), "reads", "services.yaml".into(), s.label_all)
                    }
                    _ if s.layer <= 1 => e(
                        s.name.clone(),
                        "reads",
                        "docker-compose.aitheros.yml".into(),
                        s.label_all,
                    ),
                    _ => {}
                }
            }
        }
        "InfraGraph" => {
            let mut gpu_nodes = 0u64;
            let mut nodes = 0u64;
            for s in live() {
                let h = fnv1a(&s.name);
                let node = if s.role == "gpu_worker" {
                    gpu_nodes = gpu_nodes.max(h % 4 + 1);
                    format!("gpu-node-{}", h % 4)
                } else {
                    nodes = nodes.max(h % 12 + 1);
                    format!("node-{}", h % 12)
                };
                e(s.name.clone(), "runs_on", node, s.label_all);
            }
            for n in 0..nodes {
                e(
                    format!("node-{n}"),
                    "located_in",
                    format!("rack-{}", n / 4),
                    None,
                );
            }
            for n in 0..gpu_nodes {
                e(
                    format!("gpu-node-{n}"),
                    "located_in",
                    "rack-gpu".into(),
                    None,
                );
            }
        }
        "APIGraph" => {
            for s in live() {
                if s.layer == 0 {
                    continue;
                }
                e(
                    s.name.clone(),
                    "exposes",
                    endpoint(&s.role).into(),
                    s.label_all,
                );
                if s.role == "api" {
                    for (dep, label) in deps(s, svcs) {
                        e(s.name.clone(), "routes_to", dep.name.clone(), label);
                    }
                }
            }
        }
        "FluxGraph" => {
            for s in live() {
                e(
                    s.name.clone(),
                    "publishes",
                    format!("flux.{}", lower(&s.name)),
                    s.label_all,
                );
                if let Some((dep, label)) = deps(s, svcs).next() {
                    e(
                        s.name.clone(),
                        "subscribes",
                        format!("flux.{}", lower(&dep.name)),
                        label,
                    );
                }
            }
        }
        "DocGraph" => {
            for s in live() {
                if fnv1a(&s.name).is_multiple_of(2) || s.layer >= 6 {
                    e(
                        format!("docs/{}.md", lower(&s.name)),
                        "documents",
                        s.name.clone(),
                        s.label_all,
                    );
                }
            }
        }
        _ => {}
    }
    out
}
