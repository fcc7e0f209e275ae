//! `proprio import`: BGL, HDFS and line-pattern importers on sample lines
//! (written here, not copied from the data sets), and, when the shared data
//! folder is present, on the real files.

use proprio::event::{read_jsonl, Body, Event, Limits};
use proprio::import::{
    import, parse_bgl, parse_hdfs, parse_ts, read_hdfs_labels, Format, ImportArgs, LinePattern,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn msg(e: &Event) -> (&str, Option<&str>) {
    match &e.body {
        Body::Log { message, level } => (message.as_str(), level.as_deref()),
        _ => panic!("not a log event"),
    }
}

fn args(format: Format) -> ImportArgs {
    ImportArgs {
        format,
        input: PathBuf::new(),
        labels: None,
        pattern: None,
        source: "log".into(),
        key: None,
        out: PathBuf::new(),
    }
}

#[test]
fn timestamps() {
    assert_eq!(parse_ts("1117838570"), Some(1_117_838_570_000));
    assert_eq!(parse_ts("1117838570.25"), Some(1_117_838_570_250));
    assert_eq!(parse_ts("1117838570250"), Some(1_117_838_570_250));
    assert_eq!(parse_ts("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(parse_ts("2005-06-03 15:42:50.675"), Some(1_117_813_370_675));
    assert_eq!(
        parse_ts("2005-06-03T17:42:50+02:00"),
        Some(1_117_813_370_000)
    );
    assert_eq!(
        parse_ts("2005-06-03-15.42.50.675872"),
        Some(1_117_813_370_675)
    );
    assert_eq!(parse_ts("081109 203530"), Some(1_226_262_930_000));
    assert_eq!(parse_ts("2024-02-30x"), None);
    assert_eq!(parse_ts("yesterday"), None);
}

#[test]
fn bgl_label_is_cut_off_and_never_reaches_the_text() {
    let normal = "- 1117838570 2005.06.03 R02-M1-N0-C:J12-U11 2005-06-03-15.42.50.675872 R02-M1-N0-C:J12-U11 RAS KERNEL INFO instruction cache parity error corrected";
    let e = parse_bgl(normal).unwrap().unwrap();
    assert_eq!(e.label, None);
    assert_eq!(e.ts, 1_117_838_570_675);
    assert_eq!(e.source, "R02-M1-N0-C:J12-U11");
    assert_eq!(e.key, e.source);
    assert_eq!(
        msg(&e),
        (
            "KERNEL instruction cache parity error corrected",
            Some("INFO")
        )
    );

    let bad = "KERNDTLB 1118536327 2005.06.11 R30-M0-N9-C:J16-U01 2005-06-11-17.32.07.581048 R30-M0-N9-C:J16-U01 RAS KERNEL FATAL data TLB error interrupt";
    let e = parse_bgl(bad).unwrap().unwrap();
    assert_eq!(e.label.as_deref(), Some("KERNDTLB"));
    assert_eq!(msg(&e), ("KERNEL data TLB error interrupt", Some("FATAL")));
    // The label is in no field the model sees.
    let json = e.to_json();
    let mut wire: serde_json::Value = serde_json::from_str(&json).unwrap();
    wire.as_object_mut().unwrap().remove("label");
    assert!(!wire.to_string().contains("KERNDTLB"), "{wire}");
    let r = proprio::curriculum::Renderer::default();
    assert!(!r.render(&e, &mut r.scaler()).contains("KERNDTLB"));

    let null = "- 1118268322 2005.06.08 NULL 2005-06-08-15.05.22.347520 NULL NULL DISCOVERY WARNING Node card is not fully functional";
    let e = parse_bgl(null).unwrap().unwrap();
    assert_eq!(e.source, "NULL");
    assert_eq!(
        msg(&e),
        (
            "DISCOVERY Node card is not fully functional",
            Some("WARNING")
        )
    );
    assert!(parse_bgl("").unwrap().is_none());
    assert!(parse_bgl("- notanumber x").is_err());
}

#[test]
fn hdfs_block_is_the_key_and_labels_join_from_the_csv() {
    let labels = read_hdfs_labels(
        "BlockId,Label\nblk_-1608999687919862906,Normal\nblk_7503483334202473044,Anomaly\nblk_-3544583377289625738,Anomaly\n",
    )
    .unwrap();
    assert_eq!(labels.len(), 2);
    assert_eq!(labels["blk_7503483334202473044"], "hdfs_anomaly-0");
    assert_eq!(labels["blk_-3544583377289625738"], "hdfs_anomaly-1");

    let line = "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010";
    let (e, found) = parse_hdfs(line, &labels).unwrap().unwrap();
    assert!(found);
    assert_eq!(e.key, "blk_-1608999687919862906");
    assert_eq!(e.source, "dfs.DataNode$DataXceiver");
    assert_eq!(e.ts, 1_226_262_918_000);
    assert_eq!(e.label, None);
    assert_eq!(
        msg(&e),
        ("Receiving block blk_-1608999687919862906 src: /10.250.19.102:54106 dest: /10.250.19.102:50010", Some("INFO"))
    );
    let line = "081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: 10.251.73.220:50010 is added to blk_7503483334202473044 size 67108864";
    let (e, _) = parse_hdfs(line, &labels).unwrap().unwrap();
    assert_eq!(e.key, "blk_7503483334202473044");
    assert_eq!(e.label.as_deref(), Some("hdfs_anomaly-0"));
    assert_eq!(
        proprio::eval::metrics::label_type(e.label.as_deref().unwrap()),
        "hdfs_anomaly"
    );
    let (e, found) = parse_hdfs("081109 204005 35 INFO dfs.Foo: no block here", &labels)
        .unwrap()
        .unwrap();
    assert!(!found);
    assert_eq!(e.key, "dfs.Foo");
    assert!(read_hdfs_labels("BlockId,Label\nblk_1,Maybe\n").is_err());
}

#[test]
fn line_pattern_with_named_groups() {
    let p = LinePattern::new(
        r"^(?P<ts>\S+ \S+) \[(?P<source>[^\]]+)\] (?P<level>\w+): (?P<message>.*)$",
        "app",
    )
    .unwrap();
    let e = p
        .parse(
            "2024-05-01 12:00:01.5 [billing] ERROR: payment 42 failed",
            0,
        )
        .unwrap();
    assert_eq!(e.ts, parse_ts("2024-05-01T12:00:01.500Z").unwrap());
    assert_eq!(e.source, "billing");
    assert_eq!(msg(&e), ("payment 42 failed", Some("ERROR")));
    assert!(p.parse("garbage", 0).is_none());
    // No ts/source groups: the previous ts and the default source.
    let p = LinePattern::new(r"^(?P<message>.+)$", "app").unwrap();
    let e = p.parse("hello", 77).unwrap();
    assert_eq!((e.ts, e.source.as_str()), (77, "app"));
    assert!(
        LinePattern::new(r"^(?P<msg>.*)$", "app").is_err(),
        "a message group is required"
    );
}

#[test]
fn import_writes_valid_events_within_the_limits() {
    let long = "x".repeat(5000);
    let text = format!(
        "- 1117838570 2005.06.03 R02 2005-06-03-15.42.50.675872 R02 RAS KERNEL INFO ok\n\
         \n\
         APPSEV 1117838571 2005.06.03 R03 2005-06-03-15.42.51.000001 R03 RAS APP FATAL {long}\n\
         broken\n"
    );
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("bgl.jsonl");
    let mut a = args(Format::Bgl);
    a.key = Some("all".into());
    let mut buf = Vec::new();
    let s = import(&a, text.as_bytes(), &mut buf).unwrap();
    assert_eq!((s.lines, s.events, s.labelled, s.skipped), (3, 2, 1, 1));
    std::fs::write(&out, &buf).unwrap();
    let evs = read_jsonl(&out).unwrap();
    assert_eq!(evs.len(), 2);
    assert!(evs.iter().all(|e| e.key == "all"));
    assert!(msg(&evs[1]).0.len() <= Limits::default().max_text);
    assert_eq!(evs[1].label.as_deref(), Some("APPSEV"));

    let mut a = args(Format::Pattern);
    a.pattern = Some(r"^(?P<label>\S+) (?P<message>.*)$".into());
    let mut buf = Vec::new();
    let s = import(&a, "- fine\nBAD broken\n".as_bytes(), &mut buf).unwrap();
    assert_eq!((s.events, s.labelled), (2, 1));
    let mut a = args(Format::Pattern);
    a.labels = Some(PathBuf::from("x.csv"));
    a.pattern = Some("(?P<message>.*)".into());
    assert!(
        import(&a, "x\n".as_bytes(), &mut Vec::new()).is_err(),
        "--labels is hdfs only"
    );
}

fn data_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data")).to_path_buf()
}

/// The real BGL sample, when ../shared/data is here: 2,000 lines, 143 labelled.
#[test]
fn real_bgl_sample_when_present() {
    let p = data_dir().join("bgl_2k/BGL_2k.log");
    if !p.exists() {
        eprintln!(
            "SKIPPED: {} is absent (real data lives in ../shared/data)",
            p.display()
        );
        return;
    }
    let mut a = args(Format::Bgl);
    a.input = p.clone();
    let f = std::fs::File::open(&p).unwrap();
    let mut buf = Vec::new();
    let s = import(&a, std::io::BufReader::new(f), &mut buf).unwrap();
    assert_eq!((s.events, s.labelled, s.skipped), (2000, 143, 0));
    // No category token survives into any message.
    let cats: HashMap<String, ()> = std::fs::read_to_string(&p)
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').next())
        .filter(|c| *c != "-")
        .map(|c| (c.to_string(), ()))
        .collect();
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("bgl.jsonl");
    std::fs::write(&out, &buf).unwrap();
    for e in read_jsonl(&out).unwrap() {
        let m = msg(&e).0;
        assert!(!cats.keys().any(|c| m.contains(c.as_str())), "{m}");
    }
}

/// The real HDFS sample, when ../shared/data is here: every line has its block
/// as key, 5,750 blocks of which 212 are labelled anomalous (data README).
#[test]
fn real_hdfs_sample_when_present() {
    let dir = data_dir().join("hdfs_part1");
    let p = dir.join("HDFS_2pct_part1.log");
    if !p.exists() {
        eprintln!(
            "SKIPPED: {} is absent (real data lives in ../shared/data)",
            p.display()
        );
        return;
    }
    let mut a = args(Format::Hdfs);
    a.input = p.clone();
    a.labels = Some(dir.join("anomaly_label.csv"));
    let f = std::fs::File::open(&p).unwrap();
    let mut buf = Vec::new();
    let s = import(&a, std::io::BufReader::new(f), &mut buf).unwrap();
    assert_eq!((s.lines, s.events, s.skipped), (125_942, 125_942, 0));
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("hdfs.jsonl");
    std::fs::write(&out, &buf).unwrap();
    let evs = read_jsonl(&out).unwrap();
    let mut blocks: HashMap<&str, bool> = HashMap::new();
    for e in &evs {
        assert!(e.key.starts_with("blk_"), "{}", e.key);
        // The key is the block the line names.
        assert!(msg(e).0.contains(e.key.as_str()), "{}", msg(e).0);
        *blocks.entry(e.key.as_str()).or_default() |= e.label.is_some();
    }
    assert_eq!(blocks.len(), 5_750);
    assert_eq!(blocks.values().filter(|&&a| a).count(), 212);
    // A labelled block is labelled on every one of its lines.
    let labelled: usize = evs.iter().filter(|e| blocks[e.key.as_str()]).count();
    assert_eq!(labelled as u64, s.labelled);
}
