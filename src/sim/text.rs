//! The words of the simulated OS: log lines, audit fields and reasoning
//! summaries, with the volatile parts (request ids, IPs, durations, UUIDs,
//! hex) real services print. The model has to learn to look past those parts,
//! so they must vary the way real ones do.

use super::rng::Rng;

/// What a log line may mention about the service printing it.
pub(super) struct LogCtx<'a> {
    pub name: &'a str,
    pub role: &'a str,
    pub port: u16,
    /// Current median latency, so printed durations agree with the pulses.
    pub p50: f64,
    /// A dependency the line may call: (name, port).
    pub dep: Option<(&'a str, u16)>,
}

const METHODS: [&str; 5] = ["GET", "GET", "GET", "POST", "PUT"];
const USERS: [&str; 9] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan",
];
const MODELS: [&str; 6] = [
    "aither-70b-q4",
    "aither-8b",
    "sdxl-turbo",
    "whisper-large-v3",
    "bge-m3",
    "llava-13b",
];
const TABLES: [&str; 6] = [
    "memories",
    "sessions",
    "audit_log",
    "embeddings",
    "jobs",
    "users",
];

pub(super) fn user(r: &mut Rng) -> &'static str {
    USERS[r.below(USERS.len())]
}

/// A language model the reasoning phase may run.
pub(super) fn llm(r: &mut Rng) -> &'static str {
    ["aither-70b-q4", "aither-8b", "aither-moe-8x7b", "llava-13b"][r.below(4)]
}

pub(super) fn model(r: &mut Rng) -> &'static str {
    MODELS[r.below(MODELS.len())]
}

/// A duration around `p50` with a long right tail, as latencies are.
pub(super) fn dur(r: &mut Rng, p50: f64) -> f64 {
    (p50 * (0.45 * r.normal()).exp()).max(0.1)
}

/// Milliseconds as services print them: whole numbers, one decimal when small.
pub(super) fn ms(d: f64) -> String {
    if d >= 10.0 {
        format!("{d:.0}")
    } else {
        format!("{d:.1}")
    }
}

pub(super) fn lower(name: &str) -> String {
    name.strip_prefix("Aither")
        .unwrap_or(name)
        .to_ascii_lowercase()
}

fn path(r: &mut Rng, c: &LogCtx) -> String {
    let base = lower(c.name);
    match c.role {
        "gpu_worker" => ["/v1/generate", "/v1/embed", "/v1/infer"][r.below(3)].to_string(),
        "memory" => ["/v1/recall", "/v1/store", "/v1/search"][r.below(3)].to_string(),
        "ui" | "dashboard" => format!("/static/app.{}.js", r.hex(8)),
        "orchestrator" => "/v1/chat".to_string(),
        _ => match r.below(4) {
            0 => format!("/v1/{base}/{}", r.int(1, 99999)),
            1 => format!("/v1/{base}"),
            2 => format!("/v1/{base}/{}", r.uuid()),
            _ => "/health".to_string(),
        },
    }
}

/// A call to a dependency, as the caller logs it.
pub(super) fn dep_call(r: &mut Rng, c: &LogCtx, dep: &str, port: u16) -> String {
    format!(
        "call {dep} {} http://{dep}:{port}/v1/{} -> 200 in {}ms req_id={}",
        METHODS[r.below(METHODS.len())],
        lower(dep),
        ms(dur(r, c.p50 * 0.4)),
        r.hex(16)
    )
}

/// One everyday log line. Returns (message, level, whether it called `dep`).
pub(super) fn normal_log(r: &mut Rng, c: &LogCtx) -> (String, &'static str, bool) {
    let x = r.f64();
    if x < 0.006 {
        let msg = format!(
            "client {}:{} reset connection before response req_id={}",
            r.ip(),
            r.int(30000, 65000),
            r.hex(16)
        );
        return (msg, "error", false);
    }
    if x < 0.02 {
        let msg = format!(
            "slow query took {}ms: SELECT * FROM {} WHERE id = $1 LIMIT {}",
            ms(dur(r, 400.0).max(250.0)),
            TABLES[r.below(TABLES.len())],
            r.int(1, 100)
        );
        return (msg, "warn", false);
    }
    if x < 0.03 {
        if let Some((dep, port)) = c.dep {
            let msg = format!(
                "retrying POST http://{dep}:{port}/v1/{} after {}ms (attempt 2/3) req_id={}",
                lower(dep),
                r.int(50, 400),
                r.hex(16)
            );
            return (msg, "warn", true);
        }
    }
    if x < 0.12 {
        let msg = match r.below(3) {
            0 => format!("cache hit key={} ttl={}s", r.hex(16), r.int(30, 3600)),
            1 => format!(
                "gc pause {}ms heap={}MB",
                ms(r.range(0.3, 12.0)),
                r.int(40, 900)
            ),
            _ => format!(
                "pool stats active={} idle={} waiting=0",
                r.int(1, 32),
                r.int(0, 16)
            ),
        };
        return (msg, "debug", false);
    }
    if x < 0.30 {
        if let Some((dep, port)) = c.dep {
            return (dep_call(r, c, dep, port), "info", true);
        }
    }
    if x < 0.62 {
        if let Some(m) = role_log(r, c) {
            return (m, "info", false);
        }
    }
    let status = match r.below(100) {
        0..=1 => 404,
        2 => 304,
        3..=7 => 201,
        8..=9 => 204,
        _ => 200,
    };
    let msg = if r.chance(0.5) {
        format!(
            "{} \"{} {} HTTP/1.1\" {status} {}B {}ms req_id={}",
            r.ip(),
            METHODS[r.below(METHODS.len())],
            path(r, c),
            r.int(120, 48000),
            ms(dur(r, c.p50)),
            r.hex(16)
        )
    } else {
        format!(
            "request completed method={} path={} status={status} duration_ms={} request_id={}",
            METHODS[r.below(METHODS.len())],
            path(r, c),
            ms(dur(r, c.p50)),
            r.uuid()
        )
    };
    (msg, "info", false)
}

fn role_log(r: &mut Rng, c: &LogCtx) -> Option<String> {
    Some(match c.role {
        "gpu_worker" => format!(
            "batch done model={} batch={} tokens={} took {}ms vram={:.1}GiB",
            model(r),
            r.int(1, 16),
            r.int(64, 4096),
            ms(dur(r, c.p50 * 2.0)),
            r.range(9.0, 14.0)
        ),
        "memory" => {
            if r.chance(0.5) {
                format!(
                    "recall query_id={} hits={} top_score={:.3} in {}ms",
                    r.uuid(),
                    r.int(0, 24),
                    r.range(0.55, 0.97),
                    ms(dur(r, c.p50))
                )
            } else {
                format!(
                    "stored memory {} dim=768 namespace={}",
                    r.uuid(),
                    ["episodic", "semantic", "working"][r.below(3)]
                )
            }
        }
        "storage" | "cache" => {
            if r.chance(0.5) {
                format!(
                    "checkpoint complete: wrote {} buffers ({:.1}%); write={:.3}s sync={:.3}s",
                    r.int(20, 4000),
                    r.range(0.1, 8.0),
                    r.range(0.01, 3.0),
                    r.range(0.001, 0.2)
                )
            } else {
                format!(
                    "compaction finished level={} files={} in {}ms",
                    r.int(0, 4),
                    r.int(2, 40),
                    ms(dur(r, 180.0))
                )
            }
        }
        "orchestrator" => format!(
            "routing request req-{} intent={} to {}",
            r.hex(12),
            [
                "chat",
                "code.review",
                "image.generate",
                "search",
                "summarize",
                "plan"
            ][r.below(6)],
            c.dep.map(|d| d.0).unwrap_or("local")
        ),
        "cognition" => format!(
            "thought {} completed tokens_in={} tokens_out={} in {}ms",
            r.uuid(),
            r.int(200, 6000),
            r.int(20, 900),
            ms(dur(r, c.p50))
        ),
        "agent" => format!(
            "agent task {} step {}/{} done in {}ms",
            r.uuid(),
            r.int(1, 5),
            r.int(5, 8),
            ms(dur(r, c.p50 * 3.0))
        ),
        "ui" | "dashboard" => format!(
            "websocket session {} connected from {} user={}",
            r.uuid(),
            r.ip(),
            user(r)
        ),
        "security" => {
            if r.chance(0.5) {
                format!(
                    "token issued sub=user:{} exp=3600 jti={}",
                    user(r),
                    r.uuid()
                )
            } else {
                format!(
                    "policy check allow subject=svc:{} action=read resource=secret/{}",
                    c.name,
                    r.hex(8)
                )
            }
        }
        "bus" => format!(
            "throughput {} msg/s, {} subscribers, consumer lag {}ms",
            r.int(200, 9000),
            r.int(20, 240),
            r.int(0, 40)
        ),
        "perception" => format!(
            "processed frame {} from {} in {}ms",
            r.int(1, 9_999_999),
            ["cam0", "cam1", "mic0", "screen0"][r.below(4)],
            ms(dur(r, c.p50))
        ),
        "tool" => format!(
            "tool invocation {}.{} ok in {}ms call_id={}",
            lower(c.name),
            ["run", "query", "fetch", "list"][r.below(4)],
            ms(dur(r, c.p50)),
            r.hex(12)
        ),
        "api" => format!(
            "proxy {} /v1/{} -> {}:{} 200 {}ms",
            METHODS[r.below(METHODS.len())],
            lower(c.dep.map(|d| d.0).unwrap_or(c.name)),
            c.dep.map(|d| d.0).unwrap_or(c.name),
            c.dep.map(|d| d.1).unwrap_or(c.port),
            ms(dur(r, c.p50))
        ),
        "scheduler" => format!("dispatched job {} to worker-{}", r.uuid(), r.int(0, 15)),
        "metrics" => format!(
            "scraped {} targets in {}ms ({} samples)",
            r.int(50, 210),
            ms(dur(r, 40.0)),
            r.int(2000, 30000)
        ),
        "audit" => format!(
            "appended {} audit entries, segment {}",
            r.int(1, 40),
            r.hex(8)
        ),
        _ => return None,
    })
}

/// Why a crash-looping service dies: one story per fault, told on every cycle.
pub(super) fn crash_reason(r: &mut Rng, name: &str) -> (i64, String) {
    match r.below(5) {
        0 => (
            2,
            format!(
                "panic: runtime error: invalid memory address or nil pointer dereference [signal SIGSEGV: segmentation violation code=0x1 addr=0x{} pc=0x{}]",
                r.hex(2),
                r.hex(6)
            ),
        ),
        1 => (139, "Segmentation fault (core dumped)".to_string()),
        2 => (
            134,
            "terminate called after throwing an instance of 'std::runtime_error' what(): tensor shape mismatch".to_string(),
        ),
        3 => (
            1,
            format!(
                "Unhandled exception: KeyError: 'AITHER_{}_URL' (settings.py line {})",
                lower(name).to_ascii_uppercase(),
                r.int(20, 400)
            ),
        ),
        _ => (
            78,
            format!(
                "FATAL: invalid configuration: field `{}` missing in /etc/aither/{}.yaml",
                ["listen_addr", "pool_size", "model_path", "upstreams"][r.below(4)],
                lower(name)
            ),
        ),
    }
}

/// An orchestrator request's intent and the words around it.
pub(super) fn intent(r: &mut Rng) -> &'static str {
    [
        "chat",
        "code.review",
        "code.generate",
        "image.generate",
        "search.web",
        "summarize",
        "plan.trip",
        "memory.recall",
        "system.health",
    ][r.below(9)]
}
