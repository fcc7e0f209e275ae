//! `proprio import`: plain log files into event files (JSON lines, the wire
//! contract's file form), so users can feed what they already have.
//!
//! Formats:
//! - `bgl`, loghub's BlueGene/L RAS log: `LABEL EPOCH DATE NODE TIME NODE
//!   TYPE COMPONENT LEVEL MESSAGE`. The first token is the label and is cut
//!   off before anything else is read, so it can never reach the model: `-`
//!   is a normal line, anything else (KERNDTLB, APPSEV, ...) becomes the
//!   event's `label` as is (its fault type is the whole category). source =
//!   the node, level = LEVEL, message = `COMPONENT MESSAGE`, ts = EPOCH
//!   seconds plus the milliseconds of TIME. key = the node (see `--key`).
//! - `hdfs`, loghub's HDFS_v1: `yymmdd hhmmss PID LEVEL COMPONENT: MESSAGE`.
//!   ts = date and time read as UTC; source = COMPONENT; key = the line's
//!   block id (`blk_-?[0-9]+`; every HDFS_v1 line has one, a line without is
//!   keyed by its source and counted); the PID (a thread id) is dropped.
//!   With `--labels anomaly_label.csv` (`BlockId,Label`), every line of an
//!   `Anomaly` block is labelled `hdfs_anomaly-<n>`, n numbering the
//!   anomalous blocks in the order of the CSV from 0: one fault per block,
//!   all of type `hdfs_anomaly`.
//! - `pattern`: `--pattern REGEX` with named groups `message` (required) and
//!   any of `ts`, `source`, `level`, `key`, `label`. A ts is read as epoch
//!   seconds (10 digits, optional fraction), epoch milliseconds (13 digits),
//!   `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM]`, BGL's
//!   `YYYY-MM-DD-HH.MM.SS.micros` or HDFS's `yymmdd hhmmss`; a line without
//!   one takes the previous line's. Without a `source` group, `--source`.
//!
//! Lines that do not parse are skipped and counted. Text is cut to the wire
//! limits (4096 bytes of message, 128 of a name) at a character boundary,
//! since a longer event would be rejected, never truncated, downstream.

use crate::event::{Body, Event, Limits};
use anyhow::{bail, Context, Result};
use regex::Regex;
use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Bgl,
    Hdfs,
    Pattern,
}

/// Arguments of `proprio import`.
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    #[arg(long, value_enum)]
    pub format: Format,
    /// The log file.
    #[arg(long, value_name = "LOG")]
    pub input: PathBuf,
    /// hdfs: anomaly_label.csv (BlockId,Label).
    #[arg(long, value_name = "CSV")]
    pub labels: Option<PathBuf>,
    /// pattern: a regex with named groups message and any of ts, source, level, key, label.
    #[arg(long, value_name = "REGEX")]
    pub pattern: Option<String>,
    /// pattern: the source of lines without a `source` group.
    #[arg(long, default_value = "log", value_name = "NAME")]
    pub source: String,
    /// Give every event this key (one scoring context for the whole file)
    /// instead of the format's (bgl: the node; hdfs: the block id).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Where to write the events (JSON lines).
    #[arg(long, value_name = "EVENTS.jsonl")]
    pub out: PathBuf,
}

/// Cuts `s` to at most `max` bytes at a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

fn name(s: &str) -> String {
    cut(s.to_string(), Limits::default().max_name)
}

fn log_event(
    ts: i64,
    source: &str,
    key: Option<&str>,
    level: Option<&str>,
    message: String,
    label: Option<String>,
) -> Event {
    let source = if source.is_empty() { "unknown" } else { source };
    Event {
        ts,
        source: name(source),
        key: name(key.filter(|k| !k.is_empty()).unwrap_or(source)),
        body: Body::Log {
            message: cut(message, Limits::default().max_text),
            level: level.filter(|l| !l.is_empty()).map(str::to_string),
        },
        label,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_ms(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: i64) -> Option<i64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(
        ((days_from_civil(y, mo, d) * 24 + h as i64) * 60 + mi as i64) * 60_000
            + s as i64 * 1000
            + ms,
    )
}

/// The civil time in capture groups 1-6 (year, month, day, hour, minute,
/// second), the year counted from `year0`; a group that does not parse is 0.
fn captured_ms(c: &regex::Captures, year0: i64, ms: i64) -> Option<i64> {
    let num = |i: usize| {
        c.get(i)
            .and_then(|m| m.as_str().parse::<i64>().ok())
            .unwrap_or(0)
    };
    let [mo, d, h, mi, s] = [2, 3, 4, 5, 6].map(|i| num(i) as u32);
    civil_ms(year0 + num(1), mo, d, h, mi, s, ms)
}

/// Milliseconds of a decimal fraction's digits (`675872` → 675).
fn frac_ms(f: &str) -> i64 {
    let mut ms = 0i64;
    for (i, c) in f.chars().take(3).enumerate() {
        ms += c.to_digit(10).unwrap_or(0) as i64 * [100, 10, 1][i];
    }
    ms
}

/// Reads a timestamp in one of the forms the module doc lists, as unix ms (UTC).
pub fn parse_ts(s: &str) -> Option<i64> {
    static ISO: OnceLock<Regex> = OnceLock::new();
    static BGL: OnceLock<Regex> = OnceLock::new();
    static HDFS: OnceLock<Regex> = OnceLock::new();
    let s = s.trim();
    if let Some((int, frac)) = s.split_once('.').or(Some((s, ""))) {
        if !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && frac.bytes().all(|b| b.is_ascii_digit())
        {
            let v: i64 = int.parse().ok()?;
            return match int.len() {
                13 if frac.is_empty() => Some(v),
                9 | 10 => Some(v * 1000 + frac_ms(frac)),
                _ => None,
            };
        }
    }
    let iso = ISO.get_or_init(|| {
        Regex::new(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))?\s*(Z|[+-]\d{2}:?\d{2})?$")
            .expect("valid regex")
    });
    if let Some(c) = iso.captures(s) {
        let ms = c.get(7).map_or(0, |m| frac_ms(m.as_str()));
        let mut t = captured_ms(&c, 0, ms)?;
        if let Some(z) = c.get(8).map(|m| m.as_str()).filter(|z| *z != "Z") {
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let digits: String = z[1..].chars().filter(|c| c.is_ascii_digit()).collect();
            let (h, m): (i64, i64) = (digits[..2].parse().ok()?, digits[2..].parse().ok()?);
            t -= sign * (h * 60 + m) * 60_000;
        }
        return Some(t);
    }
    let bgl = BGL.get_or_init(|| {
        Regex::new(r"^(\d{4})-(\d{2})-(\d{2})-(\d{2})\.(\d{2})\.(\d{2})(?:\.(\d+))?$")
            .expect("valid regex")
    });
    if let Some(c) = bgl.captures(s) {
        let ms = c.get(7).map_or(0, |m| frac_ms(m.as_str()));
        return captured_ms(&c, 0, ms);
    }
    let hdfs = HDFS.get_or_init(|| {
        Regex::new(r"^(\d{2})(\d{2})(\d{2}) (\d{2})(\d{2})(\d{2})$").expect("valid regex")
    });
    if let Some(c) = hdfs.captures(s) {
        return captured_ms(&c, 2000, 0);
    }
    None
}

/// One BGL line; None for a blank line.
pub fn parse_bgl(line: &str) -> Result<Option<Event>> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    // The label goes first, and only into `label`.
    let (label, rest) = line.split_once(' ').context("no field after the label")?;
    let label = (label != "-").then(|| label.to_string());
    let mut f = rest.splitn(8, ' ');
    let mut next = |what: &str| {
        f.next()
            .filter(|s| !s.is_empty())
            .with_context(|| format!("missing {what}"))
    };
    let epoch: i64 = next("epoch")?.parse().context("epoch is not a number")?;
    let _date = next("date")?;
    let node = next("node")?;
    let time = next("timestamp")?;
    let _node2 = next("second node")?;
    let _ty = next("type")?;
    let component = next("component")?;
    let rest = f.next().unwrap_or("");
    let (level, message) = rest.split_once(' ').unwrap_or((rest, ""));
    let ms = time.rsplit_once('.').map_or(0, |(_, frac)| {
        if frac.bytes().all(|b| b.is_ascii_digit()) {
            frac_ms(frac)
        } else {
            0
        }
    });
    let message = format!("{component} {message}");
    Ok(Some(log_event(
        epoch * 1000 + ms,
        node,
        None,
        Some(level),
        message,
        label,
    )))
}

fn blk() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"blk_-?[0-9]+").expect("valid regex"))
}

/// HDFS labels: anomalous block id → `hdfs_anomaly-<n>` (CSV order from 0).
pub fn read_hdfs_labels(csv: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    let mut n = 0;
    for (i, line) in csv.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || (i == 0 && line.starts_with("BlockId")) {
            continue;
        }
        let (block, label) = line
            .split_once(',')
            .with_context(|| format!("labels line {}: no comma", i + 1))?;
        match label.trim() {
            "Anomaly" => {
                out.insert(block.trim().to_string(), format!("hdfs_anomaly-{n}"));
                n += 1;
            }
            "Normal" => {}
            other => bail!(
                "labels line {}: label {other:?} is neither Normal nor Anomaly",
                i + 1
            ),
        }
    }
    Ok(out)
}

/// One HDFS line; None for a blank line. `labels` from [`read_hdfs_labels`].
/// The second value is false when the line has no block id.
pub fn parse_hdfs(line: &str, labels: &HashMap<String, String>) -> Result<Option<(Event, bool)>> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Ok(None);
    }
    let mut f = line.splitn(6, ' ');
    let mut next = |what: &str| {
        f.next()
            .filter(|s| !s.is_empty())
            .with_context(|| format!("missing {what}"))
    };
    let date = next("date")?;
    let time = next("time")?;
    let _pid = next("pid")?;
    let level = next("level")?;
    let component = next("component")?;
    let message = f.next().unwrap_or("").to_string();
    let ts = parse_ts(&format!("{date} {time}"))
        .with_context(|| format!("bad date/time {date} {time}"))?;
    let source = component.trim_end_matches(':');
    let block = blk().find(&message).map(|m| m.as_str().to_string());
    let label = block.as_ref().and_then(|b| labels.get(b)).cloned();
    let found = block.is_some();
    Ok(Some((
        log_event(ts, source, block.as_deref(), Some(level), message, label),
        found,
    )))
}

/// A generic line pattern with named groups.
pub struct LinePattern {
    re: Regex,
    source: String,
}

impl LinePattern {
    pub fn new(pattern: &str, default_source: &str) -> Result<LinePattern> {
        let re = Regex::new(pattern).with_context(|| format!("--pattern {pattern:?}"))?;
        anyhow::ensure!(
            re.capture_names().flatten().any(|n| n == "message"),
            "--pattern needs a named group `message` (e.g. (?P<message>.*))"
        );
        Ok(LinePattern {
            re,
            source: default_source.to_string(),
        })
    }

    /// The event of a line, or None when the line does not match (or its ts
    /// does not parse); `prev_ts` stands in for a missing ts group.
    pub fn parse(&self, line: &str, prev_ts: i64) -> Option<Event> {
        let line = line.trim_end_matches(['\r', '\n']);
        let c = self.re.captures(line)?;
        let g = |n: &str| c.name(n).map(|m| m.as_str());
        let ts = match g("ts") {
            Some(t) => parse_ts(t)?,
            None => prev_ts,
        };
        let label = g("label")
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "-")
            .map(str::to_string);
        Some(log_event(
            ts,
            g("source").unwrap_or(&self.source),
            g("key"),
            g("level"),
            g("message").unwrap_or("").to_string(),
            label,
        ))
    }
}

/// Counts of an import.
#[derive(Debug, Default, Clone, PartialEq, serde::Serialize)]
pub struct ImportSummary {
    pub lines: u64,
    pub events: u64,
    pub labelled: u64,
    pub skipped: u64,
    /// hdfs: lines without a block id.
    pub without_block: u64,
}

/// Converts `input` lines into events written to `out`.
pub fn import(
    args: &ImportArgs,
    input: impl BufRead,
    out: &mut dyn Write,
) -> Result<ImportSummary> {
    let labels = match (&args.format, &args.labels) {
        (Format::Hdfs, Some(p)) => {
            read_hdfs_labels(&std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)?
        }
        (Format::Hdfs, None) => HashMap::new(),
        (_, Some(_)) => bail!("--labels is for --format hdfs (bgl lines carry their label; pattern: use a `label` group)"),
        _ => HashMap::new(),
    };
    let pattern = match args.format {
        Format::Pattern => Some(LinePattern::new(
            args.pattern
                .as_deref()
                .context("--format pattern needs --pattern REGEX")?,
            &args.source,
        )?),
        _ => None,
    };
    let mut s = ImportSummary::default();
    let mut prev_ts = 0;
    let mut skipped_shown = 0;
    for (i, line) in input.split(b'\n').enumerate() {
        let line = line?;
        let line = String::from_utf8_lossy(&line);
        s.lines += 1;
        let ev = match args.format {
            Format::Bgl => parse_bgl(&line).map_err(|e| e.to_string()),
            Format::Hdfs => parse_hdfs(&line, &labels)
                .map_err(|e| e.to_string())
                .map(|o| {
                    o.map(|(e, found)| {
                        s.without_block += u64::from(!found);
                        e
                    })
                }),
            Format::Pattern => {
                if line.trim().is_empty() {
                    Ok(None)
                } else {
                    pattern
                        .as_ref()
                        .expect("set for pattern")
                        .parse(&line, prev_ts)
                        .map(Some)
                        .ok_or_else(|| "no match".to_string())
                }
            }
        };
        match ev {
            Ok(Some(mut e)) => {
                if let Some(k) = &args.key {
                    e.key = name(k);
                }
                prev_ts = e.ts;
                s.events += 1;
                s.labelled += u64::from(e.label.is_some());
                out.write_all(e.to_json().as_bytes())?;
                out.write_all(b"\n")?;
            }
            Ok(None) => s.lines -= 1,
            Err(why) => {
                s.skipped += 1;
                if skipped_shown < 5 {
                    skipped_shown += 1;
                    eprintln!("import: line {} skipped: {why}", i + 1);
                }
            }
        }
    }
    out.flush()?;
    Ok(s)
}

pub fn run(args: ImportArgs) -> Result<()> {
    let f = std::fs::File::open(&args.input)
        .with_context(|| format!("opening {}", args.input.display()))?;
    let out = std::fs::File::create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut w = BufWriter::with_capacity(1 << 20, out);
    let s = import(&args, std::io::BufReader::with_capacity(1 << 20, f), &mut w)?;
    eprintln!(
        "import: {} lines, {} events ({} labelled), {} skipped{} -> {}",
        s.lines,
        s.events,
        s.labelled,
        s.skipped,
        if s.without_block > 0 {
            format!(", {} without a block id", s.without_block)
        } else {
            String::new()
        },
        args.out.display()
    );
    println!("{}", serde_json::to_string(&s)?);
    Ok(())
}
