//! The real `engage` binary: the demo end to end, serving its output, and
//! bad input (clear error, non-zero exit, nothing written).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

use engage_pipeline::datafusion::arrow::array::{ArrayRef, StringArray};
use engage_pipeline::datafusion::arrow::datatypes::{Field, Schema};
use engage_pipeline::datafusion::arrow::record_batch::RecordBatch;
use engage_pipeline::datafusion::parquet::arrow::ArrowWriter;

use crate::common::{copy_dir, engage, files_under, stderr, stdout, tiny};

#[test]
fn demo_runs_end_to_end_and_its_scores_can_be_served() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = engage(&["demo", "--dir", dir.to_str().unwrap(), "--customers", "3000", "--seed", "3"]);
    assert!(out.status.success(), "demo failed: {}", stderr(&out));
    let text = stdout(&out);
    for needle in ["customers", "transactions", "ROC AUC", "top-decile lift", "serve the scores", "features "]
    {
        assert!(text.contains(needle), "summary lacks `{needle}`:\n{text}");
    }
    let files = files_under(&dir);
    assert!(files.iter().any(|f| f == "features/customer_features.parquet"), "{files:?}");
    assert!(
        files.iter().any(|f| f.starts_with("models/churn/churn-") && f.ends_with("/model.json")),
        "{files:?}"
    );
    assert!(files.iter().any(|f| f == "scores/CURRENT"), "{files:?}");
    // Training and scoring leave run reports that `report show` reads.
    let train_report =
        files.iter().find(|f| f.starts_with("models/churn/") && f.ends_with("/run_report.json"));
    let score_report =
        files.iter().find(|f| f.starts_with("scores/snapshots/") && f.ends_with("/run_report.json"));
    for (report, needles) in [
        (train_report, ["engage train churn", "ROC AUC", "training set", "peak RSS"]),
        (score_report, ["engage score", "churn probability mean", "median", "peak RSS"]),
    ] {
        let report = report.unwrap_or_else(|| panic!("no run report: {files:?}"));
        let shown = engage(&["report", "show", dir.join(report).to_str().unwrap()]);
        assert!(shown.status.success(), "{}", stderr(&shown));
        let text = stdout(&shown);
        for needle in needles {
            assert!(text.contains(needle), "{report} lacks `{needle}`:\n{text}");
        }
    }
    assert!(!files.iter().any(|f| f.contains(".tmp") || f.contains(".staging/")), "leftovers: {files:?}");

    // The command the summary prints serves those scores.
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_engage"))
            .args([
                "serve",
                "--scores",
                dir.join("scores").to_str().unwrap(),
                "--bind",
                "127.0.0.1:0",
                "--insecure-no-auth",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    let mut lines = BufReader::new(child.0.stderr.take().unwrap());
    while !line.contains("http://") {
        line.clear();
        assert!(lines.read_line(&mut line).unwrap() > 0, "the server printed no address");
    }
    let addr = line.trim().rsplit("http://").next().unwrap().to_string();
    let resp = ureq::get(&format!("http://{addr}/v1/customers/C0000001/scores")).call();
    drop(child);
    let body: serde_json::Value = resp.unwrap().body_mut().read_json().unwrap();
    assert_eq!(body["customer_id"], "C0000001");
    assert!(body["churn_probability"].as_f64().is_some(), "{body}");

    // A second run replaces the demo's own directory...
    let again = engage(&["demo", "--dir", dir.to_str().unwrap(), "--customers", "500", "--seed", "3"]);
    assert!(again.status.success(), "{}", stderr(&again));
    // ...but never a directory it did not make.
    let foreign = tmp.path().join("mine");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("keep.txt"), "precious").unwrap();
    let refused = engage(&["demo", "--dir", foreign.to_str().unwrap(), "--customers", "100"]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("not made by `engage demo`"), "{}", stderr(&refused));
    assert_eq!(std::fs::read_to_string(foreign.join("keep.txt")).unwrap(), "precious");
}

/// A child process that is killed and reaped when the test ends, pass or fail.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `engage features` on `data`; asserts failure, an error containing
/// every `needle`, and no output directory.
fn features_fail(data: &Path, needles: &[&str]) {
    let out_dir = data.parent().unwrap().join("features-out");
    let out = engage(&[
        "features",
        "--data",
        data.to_str().unwrap(),
        "--as-of",
        "2025-04-01",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert!(!out.status.success(), "expected failure, got success");
    assert_eq!(out.status.code(), Some(1));
    for needle in needles {
        assert!(err.contains(needle), "error lacks `{needle}`:\n{err}");
    }
    assert!(!out_dir.exists(), "a failed run wrote {}", out_dir.display());
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(schema.clone(), columns.into_iter().map(|(_, a)| a).collect()).unwrap();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn strings(v: &[&str]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

#[test]
fn missing_required_table_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::copy(tiny().join("customers.csv"), data.join("customers.csv")).unwrap();
    features_fail(&data, &["required table `transactions` not found", "transactions.parquet"]);
}

#[test]
fn missing_column_is_named_with_table_and_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&tiny(), &data);
    let csv = std::fs::read_to_string(data.join("transactions.csv")).unwrap();
    let without_amount: String = csv
        .lines()
        .map(|l| {
            let mut f: Vec<&str> = l.split(',').collect();
            f.remove(2);
            f.join(",") + "\n"
        })
        .collect();
    std::fs::write(data.join("transactions.csv"), without_amount).unwrap();
    features_fail(&data, &["transactions.amount: column missing", "transactions.csv"]);
}

#[test]
fn wrong_column_type_names_expected_and_found() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&tiny(), &data);
    std::fs::remove_file(data.join("customers.csv")).unwrap();
    let n = |v: Vec<Option<&str>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
    write_parquet(
        &data.join("customers.parquet"),
        vec![
            ("customer_id", strings(&["A"])),
            ("signup_date", strings(&["2024-01-01"])), // text, not a date
            ("email", n(vec![None])),
            ("phone", n(vec![None])),
            ("loyalty_id", n(vec![None])),
            ("region", n(vec![None])),
            (
                "consent_email",
                Arc::new(engage_pipeline::datafusion::arrow::array::BooleanArray::from(vec![true])),
            ),
            (
                "consent_sms",
                Arc::new(engage_pipeline::datafusion::arrow::array::BooleanArray::from(vec![true])),
            ),
            (
                "consent_call",
                Arc::new(engage_pipeline::datafusion::arrow::array::BooleanArray::from(vec![true])),
            ),
        ],
    );
    features_fail(&data, &["customers.signup_date: expected Date32, found Utf8", "customers.parquet"]);
}

#[test]
fn unreadable_parquet_file_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&tiny(), &data);
    std::fs::remove_file(data.join("transactions.csv")).unwrap();
    std::fs::create_dir_all(data.join("transactions")).unwrap();
    let bad = data.join("transactions").join("part-0.parquet");
    std::fs::write(&bad, b"this is not parquet at all").unwrap();
    features_fail(&data, &["cannot read", "part-0.parquet", "as Parquet"]);
}

#[test]
fn generate_is_deterministic_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for dir in [&a, &b] {
        let out = engage(&["generate", "--customers", "300", "--seed", "11", "--out", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let files = files_under(&a);
    assert_eq!(files, files_under(&b));
    for f in &files {
        assert_eq!(std::fs::read(a.join(f)).unwrap(), std::fs::read(b.join(f)).unwrap(), "{f} differs");
    }
    let again = engage(&["generate", "--customers", "300", "--seed", "12", "--out", a.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not empty"), "{}", stderr(&again));
}

#[test]
fn failed_scoring_leaves_the_current_snapshot_alone() {
    let trained = crate::common::trained();
    let tmp = tempfile::tempdir().unwrap();
    let scores = tmp.path().join("scores");
    copy_dir(&trained.scores, &scores);
    let before = files_under(&scores);
    let current = std::fs::read_to_string(scores.join("CURRENT")).unwrap();

    // Registry versions next to the trained one: a model whose features
    // the data does not have, and a model from a future engage.
    let models = tmp.path().join("models");
    let version = |name: &str, artifact: &serde_json::Value| {
        let dir = models.join("churn").join(name);
        copy_dir(&trained.dir, &dir);
        let mut meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("meta.json")).unwrap()).unwrap();
        meta["version"] = name.into();
        std::fs::write(dir.join("meta.json"), serde_json::to_vec(&meta).unwrap()).unwrap();
        std::fs::write(dir.join("model.json"), serde_json::to_vec(artifact).unwrap()).unwrap();
        format!("churn@{name}")
    };
    let mut artifact: serde_json::Value =
        serde_json::from_slice(&std::fs::read(trained.dir.join("model.json")).unwrap()).unwrap();
    artifact["model"]["feature_names"][0] = "shoe_size".into();
    let wrong_features = version("wrong", &artifact);
    artifact["format_version"] = 99.into();
    let future = version("future", &artifact);

    let data = crate::common::sample().to_str().unwrap();
    for (model, needle) in [(&wrong_features, "shoe_size"), (&future, "format version 99")] {
        let out = engage(&[
            "score",
            "--data",
            data,
            "--as-of",
            "2026-07-01",
            "--models",
            models.to_str().unwrap(),
            "--model",
            model,
            "--out",
            scores.to_str().unwrap(),
        ]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains(needle), "{}", stderr(&out));
        assert_eq!(files_under(&scores), before, "a failed run changed the snapshot root");
        assert_eq!(std::fs::read_to_string(scores.join("CURRENT")).unwrap(), current);
    }
}

#[test]
fn data_root_by_file_url_reads_the_same_as_by_path() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tiny().canonicalize().unwrap().display());
    for (data, out) in [(tiny().to_str().unwrap().to_string(), "by-path"), (url, "by-url")] {
        let out = tmp.path().join(out);
        let run =
            engage(&["features", "--data", &data, "--as-of", "2025-04-01", "--out", out.to_str().unwrap()]);
        assert!(run.status.success(), "{data}: {}", stderr(&run));
    }
    let read = |d: &str| std::fs::read(tmp.path().join(d).join("customer_features.parquet")).unwrap();
    assert_eq!(read("by-path"), read("by-url"));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("by-url/run_report.json")).unwrap()).unwrap();
    assert!(report["inputs"][0]["location"].as_str().unwrap().starts_with("file://"), "{report}");
}

/// `--checked-inputs DIR`: the first run makes an entry, the next uses it, and both
/// write what a run without it writes (features, rejects, counts). A table
/// outside the identity graph whose files changed is checked again with
/// the rest kept; a changed identity-graph table, or an entry that cannot
/// be read, makes a new entry, and the one it replaces is removed.
#[test]
fn checked_inputs_are_kept_between_runs_and_made_again_when_files_change() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&tiny(), &data);
    let cache = tmp.path().join("checked");
    let by_url = format!("file://{}", data.canonicalize().unwrap().display());
    let features_of = |data: &str, out: &str, cached: bool, more: &[&str]| {
        let out = tmp.path().join(out);
        let mut args = vec!["features", "--data", data, "--as-of", "2025-04-01"];
        args.extend(["--out", out.to_str().unwrap()]);
        if cached {
            args.extend(["--checked-inputs", cache.to_str().unwrap()]);
        }
        args.extend(more);
        let run = engage(&args);
        assert!(run.status.success(), "{}", stderr(&run));
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("run_report.json")).unwrap()).unwrap();
        (out, report, stderr(&run))
    };
    let features = |out: &str, cached: bool| features_of(data.to_str().unwrap(), out, cached, &[]);
    // Every file but the report, byte for byte, and the contract-check counts.
    let assert_same = |a: &(std::path::PathBuf, serde_json::Value, String),
                       b: &(std::path::PathBuf, serde_json::Value, String)| {
        let files = files_under(&a.0);
        assert!(files.contains(&"customer_features.parquet".to_string()), "{files:?}");
        assert_eq!(files, files_under(&b.0));
        for f in files.iter().filter(|f| *f != "run_report.json") {
            assert_eq!(std::fs::read(a.0.join(f)).unwrap(), std::fs::read(b.0.join(f)).unwrap(), "{f}");
        }
        // Counts alike; a location is as the root was spelled.
        let counts = |r: &serde_json::Value| {
            let mut inputs = r["inputs"].clone();
            inputs
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .for_each(|t| drop(t.as_object_mut().unwrap().remove("location")));
            inputs
        };
        assert_eq!(counts(&a.1), counts(&b.1));
    };
    let listed = || {
        let names = std::fs::read_dir(&cache).unwrap().flatten();
        let mut names: Vec<String> = names.map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let entries = || {
        let mut names = listed();
        names.retain(|n| n.starts_with("entry-"));
        names
    };
    let used = |r: &serde_json::Value| {
        let c = &r["checked_inputs"];
        (c["made"].as_bool().unwrap(), c["checked_again"].clone(), c["entry"].as_str().unwrap().to_string())
    };

    let plain = features("plain", false);
    assert!(plain.1.get("checked_inputs").is_none(), "{}", plain.1);
    let made = features("made", true);
    assert_same(&plain, &made);
    let (was_made, again, first) = used(&made.1);
    assert!(was_made && again == serde_json::json!([]));
    let kept = features("kept", true);
    assert_same(&plain, &kept);
    assert_eq!(used(&kept.1), (false, serde_json::json!([]), first.clone()));
    // The same root spelled as a URL.
    let kept = features_of(&by_url, "kept-by-url", true, &[]);
    assert_same(&plain, &kept);
    assert_eq!(used(&kept.1), (false, serde_json::json!([]), first.clone()));

    // The same bytes in a new file: a table the graph does not read is
    // checked again, one it reads makes a new entry.
    let rewrite = |table: &str| {
        let path = data.join(format!("{table}.csv"));
        let next = data.join(format!("{table}.csv.new"));
        std::fs::copy(&path, &next).unwrap();
        std::fs::rename(&next, &path).unwrap();
    };
    rewrite("contacts");
    let plain = features("plain-contacts", false);
    let rechecked = features("rechecked", true);
    assert_same(&plain, &rechecked);
    assert_eq!(used(&rechecked.1), (false, serde_json::json!(["contacts"]), first.clone()));
    let shown = engage(&["report", "show", rechecked.0.to_str().unwrap()]);
    assert!(
        stdout(&shown).contains(&format!("checked inputs: {first} (read; checked again: contacts)")),
        "{}",
        stdout(&shown)
    );
    // The entry keeps what was checked again.
    let kept = features("kept-rechecked", true);
    assert_same(&plain, &kept);
    assert_eq!(used(&kept.1), (false, serde_json::json!([]), first.clone()));
    rewrite("transactions");
    // What runs killed while making an entry leave: one killed before its
    // lock file had its name, one before it had one, one as it named its
    // entry in CURRENT.
    let half = cache.join("entry-1-20260101T000000.0");
    std::fs::create_dir(&half).unwrap();
    std::fs::write(half.join(".lock.new"), b"").unwrap();
    // (No process has a number past the kernel's largest, 2^22.)
    std::fs::create_dir(cache.join("entry-4194399-20260101T000000.0")).unwrap();
    std::fs::write(cache.join("CURRENT.entry-3-20260101T000000.0"), b"entry-3-20260101T000000.0").unwrap();
    let plain = features("plain-transactions", false);
    let remade = features("remade", true);
    assert_same(&plain, &remade);
    assert!(remade.2.contains("the files of transactions changed: making a new entry"), "{}", remade.2);
    let (was_made, again, second) = used(&remade.1);
    assert!(was_made && again == serde_json::json!([]) && second != first);
    let second_name = Path::new(&second).file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        listed(),
        ["CURRENT".to_string(), second_name],
        "the replaced entry and what killed runs left are removed"
    );
    assert!(!Path::new(&first).exists());

    // An entry whose graph cannot be read is passed over, said so.
    std::fs::write(Path::new(&second).join("graph_nodes.parquet"), b"not parquet").unwrap();
    let repaired = features("repaired", true);
    assert_same(&plain, &repaired);
    assert!(
        repaired.2.contains("checked-inputs cache") && repaired.2.contains("graph_nodes.parquet"),
        "{}",
        repaired.2
    );
    let (was_made, _, third) = used(&repaired.1);
    assert!(was_made && third != second);
    assert_eq!(entries().len(), 1, "{:?}", entries());

    // A person forgotten: the entry that holds their identifiers goes.
    let list = tmp.path().join("erasure_list.json");
    let (data, list) = (data.to_str().unwrap(), list.to_str().unwrap());
    let forget =
        ["forget", "--data", data, "--id-type", "email", "--id", "ann@example.com", "--erasure-list", list];
    let forgot = engage(&forget);
    assert!(forgot.status.success(), "{}", stderr(&forgot));
    let forgotten = features_of(data, "forgotten", true, &["--erasure-list", list]);
    let (was_made, _, fourth) = used(&forgotten.1);
    assert!(was_made && fourth != third && !Path::new(&third).exists());
}

#[test]
fn data_root_with_an_unknown_scheme_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let run = engage(&[
        "features",
        "--data",
        "ftp://host/x",
        "--as-of",
        "2025-04-01",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.status.code(), Some(1));
    let err = stderr(&run);
    assert!(err.contains("--data") && err.contains("unknown scheme `ftp`"), "{err}");
    assert!(!out.exists(), "nothing written");
}

/// The same transactions as the tiny CSV, in Parquet with other physical
/// types the contract accepts: the features must not change by a bit.
#[test]
fn safe_casts_read_the_same_values() {
    use engage_pipeline::datafusion::arrow::array::{
        DictionaryArray, Int32Array, LargeStringArray, StringViewArray, TimestampMillisecondArray,
    };
    use engage_pipeline::datafusion::arrow::datatypes::Int32Type;

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(&tiny(), &data);
    let csv = std::fs::read_to_string(data.join("transactions.csv")).unwrap();
    std::fs::remove_file(data.join("transactions.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    let col = |i: usize| rows.iter().map(|r| Some(r[i]).filter(|v| !v.is_empty())).collect::<Vec<_>>();
    let millis: Vec<i64> = col(1)
        .iter()
        .map(|v| {
            let t =
                chrono::NaiveDateTime::parse_from_str(v.unwrap().trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S");
            t.unwrap().and_utc().timestamp_millis()
        })
        .collect();
    let amounts: Vec<i32> = col(2).iter().map(|v| v.unwrap().parse::<f64>().unwrap() as i32).collect();
    write_parquet(
        &data.join("transactions.parquet"),
        vec![
            ("transaction_id", Arc::new(LargeStringArray::from(col(0)))),
            ("ts", Arc::new(TimestampMillisecondArray::from(millis))), // ms, no zone
            ("amount", Arc::new(Int32Array::from(amounts))),
            ("channel", Arc::new(col(3).into_iter().collect::<DictionaryArray<Int32Type>>())),
            ("customer_id", Arc::new(StringViewArray::from(col(4)))),
            ("email", Arc::new(LargeStringArray::from(col(5)))),
            ("loyalty_id", Arc::new(StringArray::from(col(6)))),
        ],
    );
    let features = |data: &Path, out: &str| {
        let out = tmp.path().join(out);
        let run = engage(&[
            "features",
            "--data",
            data.to_str().unwrap(),
            "--as-of",
            "2025-04-01",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(run.status.success(), "{}", stderr(&run));
        std::fs::read(out.join("customer_features.parquet")).unwrap()
    };
    assert_eq!(features(&tiny(), "csv"), features(&data, "parquet"));
}

#[test]
fn features_list_prints_the_registry_and_building_still_needs_its_flags() {
    let list = engage(&["features", "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = stdout(&list);
    for needle in ["recency_days", "Int64", "value", "email_open_rate_90d", "engagement"] {
        assert!(text.contains(needle), "lacks `{needle}`:\n{text}");
    }
    assert_eq!(text.lines().count(), engage_pipeline::registry::features().len());
    let md = stdout(&engage(&["features", "list", "--markdown"]));
    assert!(md.starts_with("| feature | type | group | description |"), "{md}");
    let missing = engage(&["features", "--data", tiny().to_str().unwrap()]);
    assert_eq!(missing.status.code(), Some(2), "clap usage error");
    assert!(stderr(&missing).contains("--as-of"), "{}", stderr(&missing));
}

#[tokio::test]
async fn lifecycle_command_writes_history_and_transitions() {
    use engage_pipeline::datafusion::prelude::{ParquetReadOptions, SessionContext};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("lifecycle");
    let (data, out_arg) = (tiny(), out.to_str().unwrap().to_string());
    let args = ["lifecycle", "--data", data.to_str().unwrap(), "--out", &out_arg];
    let o = engage(&[&args[..], &["--every", "16w", "--from", "2024-12-15", "--to", "2025-08-01"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    // Three cutoffs: 2024-12-15, 2025-04-06, 2025-07-27; B joins at the
    // second, C at the third (see the golden lifecycle files).
    let header = text.lines().find(|l| l.starts_with("as_of")).expect("a stage table");
    assert!(header.contains("prospect") && header.contains("reactivated"), "{text}");
    assert!(text.contains("12 rows of history at 3 cutoffs"), "{text}");
    let ctx = SessionContext::new();
    for (table, file) in [("h", "lifecycle_history.parquet"), ("t", "lifecycle_transitions.parquet")] {
        let path = out.join(file);
        ctx.register_parquet(table, path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    }
    assert_eq!(crate::common::scalar_i64(&ctx, "SELECT count(*) FROM h").await, 12);
    // Transitions cover every customer at the cutoffs after the first.
    assert_eq!(crate::common::scalar_i64(&ctx, "SELECT CAST(sum(customers) AS BIGINT) FROM t").await, 9);
    assert!(out.join("run_report.json").exists());

    let one = engage(&[&args[..], &["--as-of", "2025-04-01"]].concat());
    assert_eq!(one.status.code(), Some(1));
    assert!(stderr(&one).contains("two or more cutoffs"), "{}", stderr(&one));
}

#[tokio::test]
async fn dataset_command_writes_response_and_spend_sets() {
    use engage_pipeline::datafusion::prelude::{ParquetReadOptions, SessionContext};
    let tmp = tempfile::tempdir().unwrap();
    let data = tiny();
    let data = data.to_str().unwrap();
    let run = |args: &[&str]| {
        let o = engage(args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let count = |dir: &Path, sql: &str| {
        let (dir, sql) = (dir.to_path_buf(), sql.to_string());
        async move {
            let ctx = SessionContext::new();
            let file = dir.join("dataset.parquet");
            ctx.register_parquet("ds", file.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
            crate::common::scalar_i64(&ctx, &sql).await
        }
    };

    let response = tmp.path().join("response");
    let said = run(&[
        "dataset",
        "--data",
        data,
        "--task",
        "response",
        "--as-of",
        "2025-04-01",
        "--out",
        response.to_str().unwrap(),
    ]);
    assert!(said.contains("engage dataset response"), "{said}");
    // A's W3 contact (clicked the next day), D's W2 contact (no response),
    // E's T1 contact (bought: converted) and B's T1 control record (bought anyway).
    assert_eq!(count(&response, "SELECT count(*) FROM ds").await, 4);
    assert_eq!(
        count(
            &response,
            "SELECT count(*) FROM ds WHERE converted AND treatment IN ('free_shipping', 'control')"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &response,
            "SELECT count(*) FROM ds WHERE responded AND customer_id = 'A' AND contact_group = 'treatment'"
        )
        .await,
        1
    );
    assert_eq!(
        count(&response, "SELECT count(*) FROM ds WHERE lifecycle_stage = 'active' AND customer_id = 'A'")
            .await,
        1
    );

    let spend = tmp.path().join("spend");
    run(&[
        "dataset",
        "--data",
        data,
        "--task",
        "spend",
        "--every",
        "4w",
        "--from",
        "2025-01-01",
        "--to",
        "2025-04-01",
        "--out",
        spend.to_str().unwrap(),
    ]);
    assert_eq!(
        count(&spend, "SELECT count(DISTINCT as_of) FROM ds").await,
        4,
        "2025-01-01, 01-29, 02-26, 03-26"
    );
    assert_eq!(count(&spend, "SELECT count(*) FROM ds WHERE as_of = DATE '2025-03-26' AND customer_id = 'A' AND future_spend = 979.0").await, 1, "t4 -20 + t5 999 (t1 is the day before)");

    let none = engage(&[
        "dataset",
        "--data",
        data,
        "--task",
        "churn",
        "--out",
        tmp.path().join("x").to_str().unwrap(),
    ]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("--as-of"), "{}", stderr(&none));
}
