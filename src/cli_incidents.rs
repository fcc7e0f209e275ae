//! `proprio incidents`: list them (KV `proprio-incidents`), show one, or
//! follow their changes (stream `PROPRIO_INCIDENTS`). Like `proprio alerts`,
//! the functions that build output return it (tested), the command prints.

use crate::bus::{self, Bus, BusConfig};
use crate::cli_ops::format_utc;
use crate::config::NatsFlags;
use crate::contract::incident::{Incident, IncidentState};
use crate::contract::{STREAM_INCIDENTS, SUBJECT_INCIDENTS_ALL};
use crate::freshness::{Clock, SystemClock};
use crate::incident::load_all;
use crate::units::parse_duration;
use anyhow::{bail, Context as _, Result};
use futures::StreamExt;
use std::time::Duration;

/// List incidents (open, and resolved within --since), show one, or follow.
#[derive(clap::Args, Debug, Clone)]
pub struct IncidentsArgs {
    #[command(flatten)]
    pub nats: NatsFlags,
    /// Nothing or `list`: the incidents, one line each, oldest first;
    /// `show ID`: one incident in full.
    #[arg(value_name = "list | show ID")]
    pub query: Vec<String>,
    /// Keep printing incidents as they open, grow and resolve.
    #[arg(long, short)]
    pub follow: bool,
    /// Resolved incidents this recent are listed (30s, 10m, 1h, 1d; 0 = all kept).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub since: Duration,
    /// Only the open ones.
    #[arg(long)]
    pub open: bool,
    /// JSON objects instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `proprio incidents` was asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    List,
    Show(String),
}

impl Query {
    /// `[]`, `[list]` or `[show, ID]`; anything else is a clear error.
    pub fn parse(words: &[String]) -> Result<Query> {
        match words {
            [] => Ok(Query::List),
            [w] if w == "list" => Ok(Query::List),
            [w, id] if w == "show" => {
                let ok = !id.is_empty()
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
                if !ok {
                    bail!("{id:?} is not an incident id (ids look like inc-1767225600000-1a2b3c4d)");
                }
                Ok(Query::Show(id.clone()))
            }
            [w] if w == "show" => bail!("show needs an incident id: proprio incidents show ID"),
            _ => bail!(
                "unknown query {:?}: use `proprio incidents`, `proprio incidents list` or `proprio incidents show ID`",
                words.join(" ")
            ),
        }
    }
}

/// One incident as one line: when, state, id, root cause, blast radius.
pub fn incident_line(i: &Incident) -> String {
    let root = match i.root() {
        Some(r) => format!(
            "root={} ({}, rank {:.2})",
            r.source,
            one_line(&r.what),
            r.rank
        ),
        None => "root=?".into(),
    };
    let when = match i.resolved_ts {
        Some(r) => format!("{}..{}", format_utc(i.opened_ts), format_utc(r)),
        None => format!("{}..", format_utc(i.opened_ts)),
    };
    format!(
        "{when} {:<8} {} {root} sources={} alerts={} score={:.1}",
        i.state.as_str(),
        i.id,
        i.sources.len(),
        i.alerts,
        i.score
    )
}

/// One incident in full: its times, suspects ranked, sources, alert ids.
pub fn incident_detail(i: &Incident) -> String {
    let mut out = vec![
        format!("incident {}  {}", i.id, i.state.as_str()),
        format!("opened   {}", format_utc(i.opened_ts)),
        format!("updated  {}", format_utc(i.updated_ts)),
    ];
    if let Some(r) = i.resolved_ts {
        out.push(format!("resolved {}", format_utc(r)));
    }
    out.push(format!(
        "alerts   {} (strongest score {:.1})",
        i.alerts, i.score
    ));
    out.push("suspects (most likely root cause first):".into());
    for s in &i.suspects {
        out.push(format!(
            "  {:.2}  {}  first {}  alerts={} score={:.1}  {}",
            s.rank,
            s.source,
            format_utc(s.onset_ts),
            s.alerts,
            s.score,
            one_line(&s.what)
        ));
    }
    out.push(format!(
        "blast radius ({}): {}",
        i.sources.len(),
        i.sources.join(", ")
    ));
    out.push(format!(
        "alert ids (latest {}): {}",
        i.alert_ids.len(),
        i.alert_ids.join(" ")
    ));
    out.join("\n")
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// An incident payload as the line to print; an undecodable one is
/// reported on the line rather than stopping the listing.
pub fn render_incident(payload: &[u8], json: bool) -> String {
    match Incident::decode(payload) {
        Ok(i) if json => i.to_json(),
        Ok(i) => incident_line(&i),
        Err(e) => format!("(undecodable incident: {e})"),
    }
}

/// The listing: open incidents, and resolved ones updated since `since_ms`.
pub fn select(mut all: Vec<Incident>, since_ms: i64, open_only: bool) -> Vec<Incident> {
    all.retain(|i| match i.state {
        IncidentState::Pending => false,
        IncidentState::Open => true,
        IncidentState::Resolved => !open_only && i.resolved_ts.unwrap_or(i.updated_ts) >= since_ms,
    });
    all.sort_by(|a, b| a.opened_ts.cmp(&b.opened_ts).then(a.id.cmp(&b.id)));
    all
}

/// What `proprio incidents` prints for a list or show query.
pub async fn query_output(
    bus: &Bus,
    q: &Query,
    args: &IncidentsArgs,
    now_ms: i64,
) -> Result<String> {
    let kv = bus
        .incidents_kv()
        .await
        .context("no incidents on this server yet: is the incidents role running (proprio run)?")?;
    match q {
        Query::List => {
            let since = if args.since.is_zero() {
                i64::MIN
            } else {
                now_ms - args.since.as_millis() as i64
            };
            let incs = select(load_all(&kv).await?, since, args.open);
            let lines: Vec<String> = incs
                .iter()
                .map(|i| {
                    if args.json {
                        i.to_json()
                    } else {
                        incident_line(i)
                    }
                })
                .collect();
            Ok(lines.join("\n"))
        }
        Query::Show(id) => {
            let Some(v) = kv
                .get(id)
                .await
                .with_context(|| format!("reading incident {id}"))?
            else {
                bail!("no incident {id} (proprio incidents lists them)");
            };
            let i =
                Incident::decode(&v).with_context(|| format!("incident {id} is undecodable"))?;
            Ok(if args.json {
                i.to_json()
            } else {
                incident_detail(&i)
            })
        }
    }
}

pub async fn incidents(args: IncidentsArgs, cfg: &BusConfig) -> Result<()> {
    let q = Query::parse(&args.query)?;
    if args.follow && q != Query::List {
        bail!("--follow follows every incident; it takes no `show ID`");
    }
    let bus = Bus::connect(cfg).await?;
    let now = SystemClock.now_ms();
    if !args.follow {
        let out = query_output(&bus, &q, &args, now).await?;
        if !out.is_empty() {
            println!("{out}");
        }
        return Ok(());
    }
    let since = if args.since.is_zero() {
        0
    } else {
        now - args.since.as_millis() as i64
    };
    let stream = bus
        .js()
        .get_stream(STREAM_INCIDENTS)
        .await
        .context("opening the incidents stream (has proprio run against this server?)")?;
    let consumer = stream
        .create_consumer(bus::ordered_since(SUBJECT_INCIDENTS_ALL, since)?)
        .await
        .context("following the incidents stream")?;
    let mut msgs = consumer.messages().await.context("following incidents")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            m = msgs.next() => match m {
                Some(Ok(m)) => println!("{}", render_incident(&m.payload, args.json)),
                Some(Err(e)) => tracing::debug!("following incidents: {e}"),
                None => bail!("the incidents stream went away"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::incident::Suspect;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    fn inc(id: &str, state: IncidentState, opened: i64, resolved: Option<i64>) -> Incident {
        Incident {
            id: id.into(),
            state,
            opened_ts: opened,
            updated_ts: opened + 60_000,
            confirmed_ts: Some(opened),
            resolved_ts: resolved,
            score: 6.0,
            alerts: 3,
            suspects: vec![Suspect {
                source: "C".into(),
                rank: 0.9,
                onset_ts: opened,
                score: 6.0,
                alerts: 2,
                what: "OOM\nkilled".into(),
            }],
            sources: vec!["C".into(), "B".into()],
            alert_ids: vec!["s:1".into(), "s:2".into(), "s:3".into()],
        }
    }

    #[test]
    fn queries_parse_or_say_what_is_wrong() {
        assert_eq!(Query::parse(&[]).unwrap(), Query::List);
        assert_eq!(Query::parse(&words("list")).unwrap(), Query::List);
        assert_eq!(
            Query::parse(&words("show inc-1-ab")).unwrap(),
            Query::Show("inc-1-ab".into())
        );
        let err = |s: &str| Query::parse(&words(s)).unwrap_err().to_string();
        assert!(err("show").contains("needs an incident id"));
        assert!(err("show a.b").contains("is not an incident id"));
        assert!(err("show x>").contains("is not an incident id"));
        assert!(err("lsit").contains("unknown query \"lsit\""));
        assert!(err("show a b").contains("unknown query"));
    }

    #[test]
    fn lines_details_and_selection() {
        let open = inc("inc-1-aa", IncidentState::Open, 0, None);
        assert_eq!(
            incident_line(&open),
            "1970-01-01T00:00:00Z.. open     inc-1-aa root=C (OOM killed, rank 0.90) sources=2 alerts=3 score=6.0"
        );
        let old = inc("inc-2-bb", IncidentState::Resolved, 0, Some(1_000_000));
        let new = inc("inc-3-cc", IncidentState::Resolved, 500, Some(9_000_000));
        let d = incident_detail(&new);
        assert!(d.contains("resolved 1970-01-01T02:30:00Z"), "{d}");
        assert!(d.contains("  0.90  C  first 1970-01-01T00:00:00Z  alerts=2 score=6.0  OOM killed"));
        assert!(d.contains("blast radius (2): C, B"));
        let all = vec![new.clone(), old.clone(), open.clone()];
        let ids = |v: Vec<Incident>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
        assert_eq!(
            ids(select(all.clone(), 2_000_000, false)),
            ["inc-1-aa", "inc-3-cc"]
        );
        assert_eq!(ids(select(all.clone(), i64::MIN, false)).len(), 3);
        assert_eq!(ids(select(all, i64::MIN, true)), ["inc-1-aa"]);
        assert_eq!(
            render_incident(b"junk", false).split(':').next(),
            Some("(undecodable incident")
        );
        assert_eq!(render_incident(&open.to_msgpack(), true), open.to_json());
    }
}
