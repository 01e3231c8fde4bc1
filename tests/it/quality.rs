//! Nothing lost, nothing silent: every input row is accepted or written to
//! `rejects/<table>.parquet` with the rule it broke.

use std::collections::BTreeMap;

use engage_pipeline::datafusion::arrow::array::{Array, AsArray};
use engage_pipeline::datafusion::arrow::compute::cast;
use engage_pipeline::datafusion::arrow::compute::concat_batches;
use engage_pipeline::datafusion::arrow::datatypes::DataType;
use engage_pipeline::datafusion::prelude::*;
use engage_pipeline::{DataSource, Engine};

use crate::common::{date, engage, files_under, sample, stderr, tiny};

fn rules(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect()
}

#[tokio::test]
async fn tiny_dataset_counts_and_attribution() {
    let mut engine = Engine::open(&tiny()).await.unwrap();
    let resolved = engine.resolve_identities(None).await.unwrap().resolved.clone();
    let counts = |t: &str| engine.inputs.iter().find(|c| c.table == t).unwrap().clone();
    let tx = counts("transactions");
    assert_eq!((tx.rows, tx.accepted, tx.rejected), (12, 11, 1));
    assert_eq!(tx.rejected_by_rule, rules(&[("unknown_value:channel", 1)]), "t10 has channel `kiosk`");
    let ev = counts("interactions");
    assert_eq!((ev.rows, ev.accepted, ev.rejected), (16, 15, 1));
    assert_eq!(ev.rejected_by_rule, rules(&[("unknown_value:event_type", 1)]), "e15 is `email_bounce`");
    assert_eq!(counts("responses").rows, 9);
    // An absent optional table reads as empty.
    let tmp = tempfile::tempdir().unwrap();
    crate::common::copy_dir(&tiny(), tmp.path());
    std::fs::remove_file(tmp.path().join("responses.csv")).unwrap();
    let without = Engine::open(tmp.path()).await.unwrap();
    let responses = without.inputs.iter().find(|c| c.table == "responses").unwrap();
    assert_eq!((responses.rows, responses.location.as_deref()), (0, None));
    assert_eq!(
        without.query("SELECT * FROM responses").await.unwrap().iter().map(|b| b.num_rows()).sum::<usize>(),
        0
    );
    // t8 (an unknown customer id only) goes to an anonymous key, t10 is rejected.
    assert_eq!(resolved.transactions, 10);
    // e15 (rejected) is not attributed; e8 (cookie only) reaches A through
    // e7, which carried the same cookie and A's email.
    assert_eq!(resolved.interactions, 15);
}

async fn engine_rows(data: &std::path::Path, table: &str) -> u64 {
    let engine = Engine::open(data).await.unwrap();
    let batches = engine.query(&format!("SELECT count(*) FROM {table}")).await.unwrap();
    batches[0].column(0).as_primitive::<engage_pipeline::datafusion::arrow::datatypes::Int64Type>().value(0)
        as u64
}

/// `sql`'s rows, in one batch.
async fn rows(engine: &Engine, sql: &str) -> engage_pipeline::datafusion::arrow::record_batch::RecordBatch {
    let batches = engine.query(sql).await.unwrap();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// The identity graph built in the contract checks' pass (`Engine::open_at`)
/// resolves as one built by a second pass over the canonical views: the
/// same counts, identity map and attributed events, at a cutoff and over
/// all rows. On the dirty fixture, whose keys repeat (an exact copy and a
/// conflict), the engine builds it again from the deduplicated rows.
#[tokio::test]
async fn the_graph_built_while_checking_resolves_as_a_second_pass() {
    let dirty = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dirty");
    let cases = [
        (sample(), Some(date("2025-09-01"))),
        (sample(), None),
        (dirty.as_path(), Some(date("2025-06-01"))),
        (dirty.as_path(), None),
    ];
    for (data, cutoff) in cases {
        let source = DataSource::new(data);
        let mut once = Engine::open_at(&source, cutoff).await.unwrap();
        let mut twice = Engine::open_source(&source).await.unwrap();
        let case = format!("{} as of {cutoff:?}", data.display());
        assert_resolved_alike(&mut once, &mut twice, cutoff, &case).await;
    }
}

/// Resolves identities as of `cutoff` in both engines and asserts the same
/// counts (the graph's size aside), identity map and attributed events.
async fn assert_resolved_alike(
    once: &mut Engine,
    twice: &mut Engine,
    cutoff: Option<chrono::NaiveDate>,
    case: &str,
) {
    let (a, b) =
        (once.resolve_identities(cutoff).await.unwrap(), twice.resolve_identities(cutoff).await.unwrap());
    let mut a_stats = a.stats.clone();
    a_stats.graph_bytes = b.stats.graph_bytes;
    assert_eq!((&a_stats, &a.resolved), (&b.stats, &b.resolved), "{case}");
    for sql in [
        "SELECT * FROM identity_map ORDER BY identifier_type, identifier_value",
        "SELECT t.* EXCLUDE (customer_no), k.customer_key FROM transactions_resolved t \
         JOIN customer_keys k ON k.customer_no = t.customer_no ORDER BY transaction_id, ts, customer_key",
        "SELECT i.* EXCLUDE (customer_no), k.customer_key FROM interactions_resolved i \
         JOIN customer_keys k ON k.customer_no = i.customer_no \
         ORDER BY customer_key, ts, channel, event_type, duration_s NULLS FIRST",
    ] {
        let rows = rows(once, sql).await;
        assert!(rows.num_rows() > 0, "{case}: {sql}");
        assert_eq!(rows, self::rows(twice, sql).await, "{case}: {sql}");
    }
}

/// A dated graph ([`Engine::open_for_cutoffs`]) resolves each cutoff it
/// serves as a second pass over the canonical views does: the same counts,
/// identity map and attributed events, cutoffs taken in any order, in
/// memory and with the held events spilled under a memory limit. On the
/// dirty fixture the graph is built again, dated, from the deduplicated rows.
#[tokio::test]
async fn one_dated_graph_resolves_every_cutoff_as_a_second_pass() {
    use engage_pipeline::runtime::{ByteSize, EngineSettings};
    let dirty = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dirty");
    let spill = tempfile::tempdir().unwrap();
    let limited = EngineSettings {
        memory_limit: Some(ByteSize(1 << 30)),
        spill_dir: Some(spill.path().to_path_buf()),
        ..EngineSettings::default()
    };
    let sample_cutoffs = [Some(date("2025-09-01")), None, Some(date("2024-06-01")), Some(date("2025-09-01"))];
    let cases = [
        (sample(), None, false),
        (sample(), None, true),
        (sample(), Some(date("2025-12-01")), false),
        (dirty.as_path(), None, false),
    ];
    for (data, latest, spilled) in cases {
        let mut source = DataSource::new(data);
        if spilled {
            source.engine = limited.clone();
        }
        let mut once = Engine::open_for_cutoffs(&source, latest).await.unwrap();
        let mut twice = Engine::open_source(&source).await.unwrap();
        let cutoffs: Vec<Option<_>> = match data == sample() {
            true => sample_cutoffs.iter().copied().filter(|c| latest.is_none() || c.is_some()).collect(),
            false => vec![Some(date("2025-06-01")), None],
        };
        for cutoff in cutoffs {
            let case = format!("{} up to {latest:?}, spilled {spilled}, as of {cutoff:?}", data.display());
            assert_resolved_alike(&mut once, &mut twice, cutoff, &case).await;
        }
    }
}

/// The checked-inputs cache (`EngineSettings::checked_inputs`): an engine that
/// makes an entry and one that uses it have the same contract-check counts
/// as an engine without, and resolve each cutoff as a second pass over the
/// canonical views does, in any order, after the events are released (the
/// graph read again from the entry), in memory and under a memory limit;
/// on the dirty fixture (repeated keys: the graph kept is built again from
/// the deduplicated rows; a row rejected as in the future) too.
#[tokio::test]
async fn kept_checked_inputs_resolve_as_a_second_pass() {
    use engage_pipeline::runtime::{ByteSize, EngineSettings};
    let dirty = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dirty");
    let tmp = tempfile::tempdir().unwrap();
    let limited = EngineSettings {
        memory_limit: Some(ByteSize(1 << 30)),
        spill_dir: Some(tmp.path().join("spill")),
        ..EngineSettings::default()
    };
    // The dirty fixture's transaction in the year 2999 may be due by a later
    // run: its table is checked again, so the graph is made again each time;
    // without it the entry is used.
    let due = tmp.path().join("dirty-without-the-future");
    crate::common::copy_dir(&dirty, &due);
    let transactions = std::fs::read_to_string(due.join("transactions.csv")).unwrap();
    let kept: Vec<&str> = transactions.lines().filter(|l| !l.contains(",2999-")).collect();
    assert_eq!(kept.len() + 1, transactions.lines().count());
    std::fs::write(due.join("transactions.csv"), kept.join("\n") + "\n").unwrap();
    let cases = [(sample(), false), (sample(), true), (dirty.as_path(), false), (due.as_path(), false)];
    for (i, (data, spilled)) in cases.into_iter().enumerate() {
        let mut plain = DataSource::new(data);
        if spilled {
            plain.engine = limited.clone();
        }
        let mut cached = plain.clone();
        cached.engine.checked_inputs = Some(tmp.path().join(format!("checked-{i}")));
        let mut twice = Engine::open_source(&plain).await.unwrap();
        let remade = data == dirty;
        let cutoffs = match data == sample() {
            true => vec![Some(date("2025-09-01")), None, Some(date("2024-06-01"))],
            false => vec![Some(date("2025-06-01")), None],
        };
        for made in [true, false] {
            // The entry's cutoff is its own: a job for one cutoff makes one
            // that serves every other.
            let mut once = Engine::open_at(&cached, cutoffs[0]).await.unwrap();
            let used = once.cache_use().expect("a cache given");
            assert_eq!((used.made, used.checked_again.len()), (made || remade, 0), "{}", data.display());
            assert_eq!(once.inputs, twice.inputs, "{}", data.display());
            for (k, &cutoff) in cutoffs.iter().enumerate() {
                if k == 1 {
                    once.release_events().unwrap();
                }
                let case = format!("{}, spilled {spilled}, made {made}, as of {cutoff:?}", data.display());
                assert_resolved_alike(&mut once, &mut twice, cutoff, &case).await;
            }
        }
    }
}

#[tokio::test]
async fn dirty_rows_are_quarantined_with_their_rule() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dirty");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("features");
    let run = engage(&[
        "features",
        "--data",
        data.to_str().unwrap(),
        "--as-of",
        "2025-06-01",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success(), "{}", stderr(&run));

    // table -> (accepted, duplicates collapsed, rejected per rule)
    let expected: BTreeMap<&str, (u64, u64, BTreeMap<String, u64>)> = [
        ("customers", (2, 1, rules(&[("missing:customer_id", 2)]))),
        (
            "transactions",
            (
                3,
                1,
                rules(&[
                    ("missing:transaction_id", 1),
                    ("missing:ts", 1),
                    ("not_finite:amount", 2),
                    ("out_of_range:ts", 1),
                    ("unknown_value:channel", 1),
                    ("no_identifier", 2),
                    ("conflicting_key:transaction_id", 2),
                    ("in_future:ts", 1),
                    ("unparsable:ts", 1),
                    ("unparsable:amount", 1),
                    ("malformed_csv", 1),
                ]),
            ),
        ),
        (
            "interactions",
            (
                2,
                1,
                rules(&[
                    ("unknown_value:event_type", 1),
                    ("missing:channel", 1),
                    ("not_finite:duration_s", 1),
                    ("malformed_csv", 1),
                ]),
            ),
        ),
        ("campaigns", (1, 0, rules(&[("unknown_value:kind", 1)]))),
        ("contacts", (1, 0, rules(&[("unknown_value:group", 1)]))),
        ("responses", (1, 0, rules(&[("missing:stage", 1), ("not_finite:revenue", 1)]))),
    ]
    .into_iter()
    .collect();

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run_report.json")).unwrap()).unwrap();
    let ctx = SessionContext::new();
    for t in manifest["inputs"].as_array().unwrap() {
        let table = t["table"].as_str().unwrap();
        let n = |field: &str| t[field].as_u64().unwrap();
        let (rows, accepted, rejected, duplicates) =
            (n("rows"), n("accepted"), n("rejected"), n("duplicates"));
        // The invariant: every row read is accepted, rejected or an
        // identical copy of an accepted row.
        assert_eq!(
            rows,
            accepted + rejected + duplicates,
            "{table}: rows read != accepted + rejected + duplicates"
        );
        let by_rule: BTreeMap<String, u64> = serde_json::from_value(t["rejected_by_rule"].clone()).unwrap();
        assert_eq!(rejected, by_rule.values().sum::<u64>(), "{table}");
        let (want_accepted, want_duplicates, want_rules) = &expected[table];
        assert_eq!(
            (accepted, duplicates, &by_rule),
            (*want_accepted, *want_duplicates, want_rules),
            "{table}"
        );
        // The accepted rows are what the jobs see.
        let seen = engine_rows(&data, table).await;
        assert_eq!(seen, accepted, "{table}: rows in the canonical view");

        // The quarantine file holds exactly the rejected rows, each with its rule.
        let path = out.join("rejects").join(format!("{table}.parquet"));
        let batches = ctx
            .read_parquet(path.to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut in_file: BTreeMap<String, u64> = BTreeMap::new();
        for b in &batches {
            let col = cast(b.column_by_name("reject_rule").unwrap(), &DataType::Utf8).unwrap();
            let col = col.as_string::<i32>();
            for i in 0..b.num_rows() {
                assert!(col.is_valid(i));
                *in_file.entry(col.value(i).to_string()).or_default() += 1;
            }
        }
        assert_eq!(&in_file, want_rules, "{table}: rejects file");
    }
    assert_eq!(manifest["inputs"].as_array().unwrap().len(), 6);
    // x17 passes the rules, but its only identifier is no email: counted,
    // not attributed.
    assert_eq!(manifest["resolved"]["unattributed_transactions"], 1, "{}", manifest["resolved"]);
    for t in manifest["inputs"].as_array().unwrap() {
        assert_eq!(t["files"], 1, "{t}");
        assert!(t["bytes"].as_u64().unwrap() > 0, "{t}");
    }
    let stages: Vec<&str> =
        manifest["stages"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    // The feature stage is timed per SQL file, in registry order.
    let features = engage_pipeline::sql::FEATURES.iter().map(|f| f.path);
    let expected: Vec<&str> = ["ingest", "identity"].into_iter().chain(features).chain(["write"]).collect();
    assert_eq!(stages, expected);
    let files = files_under(&out);
    assert_eq!(files.iter().filter(|f| f.starts_with("rejects/")).count(), 6, "{files:?}");

    // Under a memory limit the CSV inputs wait in the spill directory as
    // Parquet instead of in memory: the same counts, rejects and features.
    let spill = tmp.path().join("spill");
    let bounded = tmp.path().join("bounded");
    let (data_arg, out_arg, spill_arg) =
        (data.to_str().unwrap(), bounded.to_str().unwrap(), spill.to_str().unwrap());
    let run = engage(&[
        "features",
        "--data",
        data_arg,
        "--as-of",
        "2025-06-01",
        "--out",
        out_arg,
        "--memory-limit",
        "64MiB",
        "--spill-dir",
        spill_arg,
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bounded.join("run_report.json")).unwrap()).unwrap();
    assert_eq!(report["inputs"], manifest["inputs"]);
    let features = |dir: &std::path::Path| std::fs::read(dir.join("customer_features.parquet")).unwrap();
    assert!(features(&out) == features(&bounded), "the same feature table");
    let source = engage_pipeline::DataSource {
        engine: engage_pipeline::runtime::EngineSettings {
            memory_limit: Some(engage_pipeline::runtime::ByteSize(64 << 20)),
            spill_dir: Some(spill.clone()),
            ..Default::default()
        },
        ..engage_pipeline::DataSource::new(&data)
    };
    let engine = Engine::open_source(&source).await.unwrap();
    let spilled = files_under(&spill);
    for table in ["customers", "transactions", "interactions", "campaigns", "contacts", "responses"] {
        assert!(spilled.iter().any(|f| f.ends_with(&format!("raw_{table}.parquet"))), "{table}: {spilled:?}");
    }
    drop(engine);
    assert_eq!(files_under(&spill), Vec::<String>::new(), "removed with the engine");
}

#[test]
fn identity_matches_the_ground_truth_on_noisy_generated_data() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("identity");
    let data = crate::common::sample().to_str().unwrap();
    let run = engage(&["identity", "--data", data, "--out", out.to_str().unwrap()]);
    assert!(run.status.success(), "{}", stderr(&run));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("run_report.json")).unwrap()).unwrap();
    let q = &report["identity_quality"];
    let (precision, recall) = (q["precision"].as_f64().unwrap(), q["recall"].as_f64().unwrap());
    println!("identity on {} identifiers: precision {precision:.4}, recall {recall:.4}", q["identifiers"]);
    assert!(precision >= 0.995, "pairwise precision {precision:.4} < 0.995");
    assert!(recall >= 0.98, "pairwise recall {recall:.4} < 0.98");
    // The generator shares a family email per hundred customers and a shop
    // phone per 250: flagged, not merged.
    let stats = &report["identity"];
    assert!(stats["shared_identifiers"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(stats["crm_merges"].as_u64().unwrap(), 0, "{stats}");
    assert!(out.join("identity_map.parquet").exists());

    // The report reads back and prints.
    let shown = engage(&["report", "show", out.to_str().unwrap()]);
    assert!(shown.status.success(), "{}", stderr(&shown));
    let text = crate::common::stdout(&shown);
    for needle in [
        "engage identity",
        "transactions",
        "precision",
        "identity:",
        "peak RSS",
        "engine pool MiB",
        "identity_map.parquet",
    ] {
        assert!(text.contains(needle), "report lacks `{needle}`:\n{text}");
    }
    let missing = engage(&["report", "show", tmp.path().to_str().unwrap()]);
    assert!(!missing.status.success());
    assert!(stderr(&missing).contains("run_report.json"), "{}", stderr(&missing));
}
