//! `engage nightly` end to end on the generated sample: every promoted
//! model scored, segments as configured, retention, idempotent re-runs,
//! and real kills of the process that must leave the current snapshot
//! intact.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use engage_pipeline::datafusion::arrow::array::{Array, AsArray, RecordBatch};
use engage_pipeline::datafusion::arrow::compute::concat_batches;
use engage_pipeline::datafusion::arrow::datatypes::{DataType, Float64Type};
use engage_pipeline::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use engage_pipeline::segments::{SegmentConfig, SegmentInput};
use engage_serving::ScoreService;

use crate::common::{copy_dir, engage, sample, stderr, stdout, trained};

/// A registry with the sample's churn model (promoted) and a CLV model
/// trained with `engage train clv`, and a config scoring with both.
struct Setup {
    _tmp: tempfile::TempDir,
    config: PathBuf,
    scores: PathBuf,
}

/// A registry at `models` with the sample's churn model and a CLV model
/// trained with `engage train clv`, both promoted.
pub fn churn_and_clv_registry(models: &Path) {
    // `trained().dir` is <models>/churn/<version>.
    copy_dir(trained().dir.parent().unwrap().parent().unwrap(), models);
    let o = engage(&[
        "train",
        "clv",
        "--data",
        sample().to_str().unwrap(),
        "--as-of",
        "2026-03-31",
        "--models",
        models.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(promoted"), "{}", stdout(&o));
}

fn setup(keep: usize) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    churn_and_clv_registry(&tmp.path().join("models"));
    let config = tmp.path().join("nightly.toml");
    std::fs::write(
        &config,
        format!(
            "as_of = \"2026-07-01\"\n[data]\nroot = \"{}\"\n[models]\nregistry = \"models\"\n[output]\nscores = \"scores\"\nkeep = {keep}\n",
            sample().display()
        ),
    )
    .unwrap();
    let scores = tmp.path().join("scores");
    Setup { _tmp: tmp, config, scores }
}

fn nightly(s: &Setup, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["nightly", "--config", s.config.to_str().unwrap()];
    args.extend(extra);
    engage(&args)
}

pub fn read_scores(dir: &Path) -> RecordBatch {
    read_parquet(&dir.join("scores.parquet"))
}

fn read_parquet(path: &Path) -> RecordBatch {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

pub fn floats(b: &RecordBatch, c: &str) -> Vec<Option<f64>> {
    let col = b.column_by_name(c).unwrap_or_else(|| panic!("no column {c}"));
    let col = col.as_primitive::<Float64Type>();
    (0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i))).collect()
}

pub fn texts(b: &RecordBatch, c: &str) -> Vec<Option<String>> {
    let col = b.column_by_name(c).unwrap_or_else(|| panic!("no column {c}"));
    // DataFusion reads text as Utf8View, the parquet reader as Utf8.
    let col = engage_pipeline::datafusion::arrow::compute::cast(col, &DataType::Utf8).unwrap();
    let col = col.as_string::<i32>();
    (0..col.len()).map(|i| col.is_valid(i).then(|| col.value(i).to_string())).collect()
}

pub fn current(scores: &Path) -> String {
    std::fs::read_to_string(scores.join("CURRENT")).unwrap().trim().to_string()
}

pub fn snapshots(scores: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(scores.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    ids.sort();
    ids
}

#[test]
fn nightly_scores_every_promoted_model_segments_and_keeps_the_newest() {
    let s = setup(2);
    let out = nightly(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    for needle in
        ["engage nightly", "churn probability mean", "clv mean", "p alive mean", "contact strategy:"]
    {
        assert!(said.contains(needle), "no `{needle}` in\n{said}");
    }
    // Progress lines for the scheduler's log (stderr is not a terminal here).
    let log = stderr(&out);
    for stage in ["ingest", "identity", "features", "score", "write scores", "write"] {
        assert!(log.contains(&format!("engage nightly: {stage} done")), "no {stage} progress:\n{log}");
    }
    let first = current(&s.scores);
    assert!(first.starts_with("2026-07-01_"), "{first}");
    let dir = s.scores.join("snapshots").join(&first);
    let b = read_scores(&dir);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["format_version"], 3);
    assert_eq!(manifest["rows"].as_u64().unwrap() as usize, b.num_rows());
    let models = manifest["models"].as_object().unwrap();
    assert_eq!(models.keys().collect::<Vec<_>>(), ["churn", "clv"], "{manifest}");
    assert_eq!(models["churn"], trained().artifact.model_version.as_str());

    let churn = floats(&b, "churn_probability");
    let clv = floats(&b, "clv");
    let alive = floats(&b, "p_alive");
    let stage = texts(&b, "lifecycle_stage");
    assert!(churn.iter().all(|p| p.is_some_and(|p| (0.0..=1.0).contains(&p))));
    assert!(floats(&b, "uplift").iter().all(Option::is_none), "no uplift model, no uplift");
    // CLV exists exactly for customers who bought before the cutoff
    // (prospects have none), and is positive.
    for i in 0..b.num_rows() {
        assert_eq!(clv[i].is_some(), stage[i].as_deref() != Some("prospect"), "row {i}: {:?}", stage[i]);
        assert_eq!(clv[i].is_some(), alive[i].is_some());
        assert!(clv[i].is_none_or(|v| v > 0.0) && alive[i].is_none_or(|p| (0.0..=1.0).contains(&p)));
    }
    // Value tiers: top 20 % / next 30 % / rest of the customers with a CLV.
    let tiers = texts(&b, "value_tier");
    let with_clv = clv.iter().flatten().count() as f64;
    let share = |t: &str| tiers.iter().filter(|v| v.as_deref() == Some(t)).count() as f64 / with_clv;
    assert!((share("high") - 0.2).abs() < 0.01 && (share("medium") - 0.3).abs() < 0.01, "{}", share("high"));
    // Every row's segments are what the documented default rules say.
    let config = SegmentConfig::default();
    let values: Vec<f64> = clv.iter().flatten().copied().collect();
    let limits = config.value_limits(&values);
    let (strategy, treatment, band) =
        (texts(&b, "contact_strategy"), texts(&b, "recommended_treatment"), texts(&b, "risk_band"));
    for i in 0..b.num_rows() {
        let input = SegmentInput { stage: stage[i].as_deref(), clv: clv[i], churn_probability: churn[i] };
        let seg = config.assign(&input, limits);
        assert_eq!(tiers[i].as_deref(), seg.value_tier, "row {i}");
        assert_eq!(band[i].as_deref(), seg.risk_band, "row {i}");
        assert_eq!(strategy[i].as_deref(), Some(seg.strategy.name()), "row {i}");
        assert_eq!(treatment[i].as_deref(), Some(seg.treatment.name()), "row {i}");
    }
    let distinct: std::collections::BTreeSet<_> = treatment.iter().flatten().collect();
    assert!(distinct.len() >= 4, "the sample spans several treatments: {distinct:?}");
    // The server reads it: scores, segments and every model's version.
    let svc = ScoreService::load(&s.scores).unwrap();
    let c = svc.scores_for(b.column(0).as_string::<i32>().value(0)).unwrap();
    assert_eq!((c.churn_probability, c.clv), (churn[0], clv[0]));
    assert_eq!(c.contact_strategy, strategy[0].clone().unwrap());
    assert_eq!(c.model_versions.len(), 2);

    // The same as-of again: the same scores, a new snapshot replacing the
    // superseded one.
    let out = nightly(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let second = current(&s.scores);
    assert_ne!(second, first);
    assert_eq!(snapshots(&s.scores), std::slice::from_ref(&second));
    let again = read_scores(&s.scores.join("snapshots").join(&second));
    for c in ["customer_id", "lifecycle_stage", "value_tier", "contact_strategy", "recommended_treatment"] {
        assert_eq!(texts(&again, c), texts(&b, c), "{c}");
    }
    for c in ["churn_probability", "clv", "p_alive", "expected_purchases", "reason_1_impact"] {
        assert_eq!(floats(&again, c), floats(&b, c), "{c}");
    }
    // Retention keeps the two newest as-of dates, and always the current one.
    for as_of in ["2026-06-01", "2026-05-01"] {
        let out = nightly(&s, &["--as-of", as_of]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let kept = snapshots(&s.scores);
    let dates: Vec<&str> = kept.iter().map(|id| &id[..10]).collect();
    assert_eq!(dates, ["2026-05-01", "2026-06-01", "2026-07-01"], "{kept:?}");
    assert!(current(&s.scores).starts_with("2026-05-01"));
}

/// Kills `engage nightly` at points spread over a run: each time the
/// snapshot that was current stays current and loads; the next full run
/// succeeds and clears what the killed runs left.
#[test]
fn a_killed_nightly_run_leaves_the_current_snapshot_intact() {
    let s = setup(3);
    let t = Instant::now();
    let out = nightly(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let full = t.elapsed();
    let before = current(&s.scores);
    let manifest = std::fs::read(s.scores.join("snapshots").join(&before).join("manifest.json")).unwrap();
    let rows = ScoreService::load(&s.scores).unwrap().len();
    let mut interrupted = 0;
    for k in 1..=6 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_engage"))
            .args(["nightly", "--config", s.config.to_str().unwrap(), "--as-of", "2026-06-15"])
            .env("ENGAGE_ERASURE_LIST", "/nonexistent/engage-tests/erasure_list.json")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(k as f64 / 7.0));
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap(); // SIGKILL: no cleanup runs
        child.wait().unwrap();
        let now = current(&s.scores);
        if finished {
            // The run won the race: its snapshot is current and whole.
            assert!(now.starts_with("2026-06-15"), "{now}");
        } else if now == before {
            interrupted += 1;
            assert_eq!(
                std::fs::read(s.scores.join("snapshots").join(&before).join("manifest.json")).unwrap(),
                manifest
            );
            assert_eq!(ScoreService::load(&s.scores).unwrap().len(), rows, "kill {k}");
        }
        // Whatever was current loads completely.
        ScoreService::load(&s.scores).unwrap_or_else(|e| panic!("kill {k}: {e}"));
    }
    assert!(interrupted >= 3, "only {interrupted} of 6 kills landed before publishing");
    let out = nightly(&s, &["--as-of", "2026-06-15"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(current(&s.scores).starts_with("2026-06-15"));
    let staged = std::fs::read_dir(s.scores.join(".staging")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(staged, 0, "killed runs' staging is cleared");
    assert_eq!(ScoreService::load(&s.scores).unwrap().len(), rows);
}

#[test]
fn a_second_run_on_the_same_root_is_refused_and_bad_configs_name_the_field() {
    let tmp = tempfile::tempdir().unwrap();
    let scores = tmp.path().join("scores");
    std::fs::create_dir_all(&scores).unwrap();
    let config = tmp.path().join("n.toml");
    let text = format!(
        "[data]\nroot = \"{}\"\n[models]\nregistry = \"{}\"\n[output]\nscores = \"scores\"\n",
        sample().display(),
        trained().dir.parent().unwrap().parent().unwrap().display()
    );
    std::fs::write(&config, &text).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(scores.join(".lock"))
        .unwrap();
    lock.lock().unwrap();
    let out = engage(&["nightly", "--config", config.to_str().unwrap(), "--as-of", "2026-07-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("another scoring run holds"), "{}", stderr(&out));
    assert!(!scores.join("CURRENT").exists());
    drop(lock);

    std::fs::write(&config, format!("{text}[[segments.rules]]\nstage = [\"asleep\"]\nstrategy = \"high_touch\"\ntreatment = \"retain\"\n")).unwrap();
    let out = engage(&["nightly", "--config", config.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("n.toml") && e.contains("segments.rules[0].stage") && e.contains("`asleep`"), "{e}");
    assert!(!scores.join("CURRENT").exists());

    // A registry without the named model.
    std::fs::write(&config, text.replace("[output]", "clv = \"lifetime\"\n[output]")).unwrap();
    let out = engage(&["nightly", "--config", config.to_str().unwrap(), "--as-of", "2026-07-01"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("lifetime"), "{}", stderr(&out));
    assert!(!scores.join("CURRENT").exists());
}

/// Rows of a Parquet file or directory, through DataFusion.
async fn table(path: &Path) -> Vec<RecordBatch> {
    use engage_pipeline::datafusion::prelude::{ParquetReadOptions, SessionContext};
    let ctx = SessionContext::new();
    ctx.read_parquet(path.to_str().unwrap(), ParquetReadOptions::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
}

fn all_texts(batches: &[RecordBatch], c: &str) -> Vec<Option<String>> {
    batches.iter().flat_map(|b| texts(b, c)).collect()
}

/// Campaigns in the nightly config: a wave and a trigger with every kind
/// of suppression, a universal holdout and a do-not-contact list, run on
/// two nights; each selection checked against the raw input tables.
#[tokio::test]
async fn audiences_select_suppress_hold_out_and_record_contacts() {
    use engage_pipeline::audience::unit_hash;
    use engage_pipeline::datafusion::arrow::datatypes::UInt64Type;
    use engage_pipeline::datafusion::prelude::{ParquetReadOptions, SessionContext};

    let s = setup(3);
    let data = s.config.parent().unwrap().join("data");
    copy_dir(sample(), &data);
    // The do-not-contact list: every 7th customer.
    let customers = table(&data.join("customers")).await;
    let ids: Vec<String> = all_texts(&customers, "customer_id").into_iter().flatten().collect();
    let dnc: Vec<&String> = ids.iter().step_by(7).collect();
    let mut csv = String::from("customer_id\n");
    dnc.iter().for_each(|c| csv += &format!("{c}\n"));
    std::fs::write(s.config.parent().unwrap().join("dnc.csv"), csv).unwrap();
    let config = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace(&format!("\"{}\"", sample().display()), "\"data\"");
    let wave_where = "risk_band IN ('high', 'medium') AND lifecycle_stage <> 'prospect'";
    std::fs::write(
        &s.config,
        format!(
            "{config}[audiences]\nuniversal_holdout = 0.05\ndo_not_contact = \"dnc.csv\"\n\
             [[campaigns]]\nid = \"W-RETAIN\"\nkind = \"wave\"\ndates = [\"2026-07-01\"]\nchannel = \"email\"\n\
             offer = \"10pct_off\"\nwhere = \"{wave_where}\"\nrank_by = \"churn_probability * coalesce(clv, 0)\"\n\
             limit = 400\ncontrol_share = 0.2\n\
             [[campaigns]]\nid = \"T-COMPLAINT\"\nkind = \"trigger\"\nchannel = \"call\"\n\
             where = \"days_since_last_complaint <= 60\"\nrank_by = \"clv\"\nbudget = 60.0\ncost_per_contact = 2.0\n\
             exclude_stages = []\n"
        ),
    )
    .unwrap();

    let out = nightly(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(
        said.contains(
            "audience W-RETAIN (wave by churn_probability * coalesce(clv, 0), email, offer 10pct_off)"
        ),
        "{said}"
    );
    let snap = s.scores.join("snapshots").join(current(&s.scores));
    let summaries: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snap.join("audiences/summary.json")).unwrap()).unwrap();
    let wave = &summaries[0];
    assert_eq!(wave["campaign_id"], "W-RETAIN");
    let list = table(&snap.join("audiences/W-RETAIN.parquet")).await;
    let selected: Vec<String> = all_texts(&list, "customer_id").into_iter().flatten().collect();
    let groups: Vec<String> = all_texts(&list, "group").into_iter().flatten().collect();
    assert_eq!(selected.len(), 400, "{wave}");
    let csv_rows = std::fs::read_to_string(snap.join("audiences/W-RETAIN.csv")).unwrap().lines().count();
    assert_eq!(csv_rows, 401, "CSV: header and the same rows");
    let control = groups.iter().filter(|g| *g == "control").count();
    assert!((50..=110).contains(&control), "{control} of 400 in control (20 %)");
    for (c, g) in selected.iter().zip(&groups) {
        assert_eq!(g == "control", unit_hash("W-RETAIN", c) < 0.2, "{c}: control by the stable hash");
    }

    // Every count, recomputed from the raw inputs and the snapshot.
    let scores = read_scores(&snap);
    let ctx = SessionContext::new();
    ctx.register_batch("scores", scores.clone()).unwrap();
    for t in ["customers", "contacts", "responses", "campaigns"] {
        ctx.register_parquet(t, sample().join(t).to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
    }
    let column = |sql: String| {
        let ctx = ctx.clone();
        async move {
            let b = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            all_texts(&b, "customer_id").into_iter().flatten().collect::<std::collections::HashSet<String>>()
        }
    };
    let candidates = column(format!("SELECT customer_id FROM scores WHERE {wave_where}")).await;
    let no_consent = column("SELECT customer_id FROM customers WHERE consent_email IS NOT TRUE".into()).await;
    let churned = column("SELECT customer_id FROM scores WHERE lifecycle_stage = 'churned'".into()).await;
    let capped = column(
        "SELECT customer_id FROM contacts WHERE \"group\" = 'treatment' AND ts < TIMESTAMP '2026-07-01T00:00:00Z' \
         AND ts >= TIMESTAMP '2026-06-01T00:00:00Z' GROUP BY customer_id HAVING count(*) >= 3"
            .into(),
    )
    .await;
    let responded = column(
        "SELECT customer_id FROM responses WHERE ts < TIMESTAMP '2026-07-01T00:00:00Z' AND ts >= TIMESTAMP '2026-06-01T00:00:00Z'".into(),
    )
    .await;
    let running = column(
        "SELECT k.customer_id FROM contacts k JOIN campaigns c USING (campaign_id) WHERE k.\"group\" = 'treatment' \
         AND k.ts < TIMESTAMP '2026-07-01T00:00:00Z' AND (c.end_date IS NULL OR c.end_date >= DATE '2026-07-01') \
         AND (c.start_date IS NULL OR c.start_date <= DATE '2026-07-01')"
            .into(),
    )
    .await;
    let dnc: std::collections::HashSet<String> = dnc.into_iter().cloned().collect();
    let mut expected = std::collections::BTreeMap::new();
    let mut eligible = Vec::new();
    for c in &candidates {
        let reason = if unit_hash("engage universal holdout", c) < 0.05 {
            "universal_holdout"
        } else if dnc.contains(c) {
            "do_not_contact"
        } else if no_consent.contains(c) {
            "no_consent"
        } else if churned.contains(c) {
            "excluded_stage"
        } else if responded.contains(c) {
            "responded_recently"
        } else if capped.contains(c) {
            "frequency_cap"
        } else if running.contains(c) {
            "running_campaign"
        } else {
            eligible.push(c.clone());
            continue;
        };
        *expected.entry(reason).or_insert(0u64) += 1;
    }
    assert_eq!(wave["candidates"].as_u64().unwrap() as usize, candidates.len(), "{wave}");
    for (reason, n) in &expected {
        assert_eq!(wave["suppressed"][reason].as_u64().unwrap(), *n, "{reason}: {wave}");
    }
    assert!(expected.len() >= 5, "the sample exercises most suppressions: {expected:?}");
    assert_eq!(wave["eligible"].as_u64().unwrap() as usize, eligible.len());
    // The 400 selected are the top of the eligible by the rank expression.
    let (churn, clv) = (floats(&scores, "churn_probability"), floats(&scores, "clv"));
    let by_id: std::collections::HashMap<&str, f64> = (0..scores.num_rows())
        .map(|i| (scores.column(0).as_string::<i32>().value(i), churn[i].unwrap() * clv[i].unwrap_or(0.0)))
        .collect();
    let rank = |c: &str| by_id[c];
    let chosen: std::collections::HashSet<&String> = selected.iter().collect();
    let lowest_chosen = selected.iter().map(|c| rank(c)).fold(f64::INFINITY, f64::min);
    for c in eligible.iter().filter(|c| !chosen.contains(c)) {
        assert!(rank(c) <= lowest_chosen, "{c} ranks above the selection but was left out");
    }
    let ranks = list[0].column_by_name("rank").unwrap().as_primitive::<UInt64Type>();
    assert_eq!(ranks.value(0), 1);

    // The trigger: a budget of 60 at 2.0 pays 30 treatment contacts.
    let trigger = &summaries[1];
    assert_eq!(trigger["campaign_id"], "T-COMPLAINT");
    assert!(
        trigger["treatment"].as_u64().unwrap() <= 30 && trigger["selected"].as_u64().unwrap() > 0,
        "{trigger}"
    );
    assert_eq!(trigger["cost"].as_f64().unwrap(), 2.0 * trigger["treatment"].as_f64().unwrap());

    // The contacts are recorded in the data, and the next run reads them.
    let recorded = table(&data.join("contacts/engage-W-RETAIN-2026-07-01.parquet")).await;
    assert_eq!(all_texts(&recorded, "customer_id").into_iter().flatten().collect::<Vec<_>>(), selected);
    assert!(data.join("campaigns/engage-W-RETAIN.parquet").exists());

    // Re-running the night selects the same people and replaces the record.
    let out = nightly(&s, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let snap2 = s.scores.join("snapshots").join(current(&s.scores));
    let again = table(&snap2.join("audiences/W-RETAIN.parquet")).await;
    assert_eq!(all_texts(&again, "customer_id"), all_texts(&list, "customer_id"));
    assert_eq!(all_texts(&again, "group"), all_texts(&list, "group"));
    let files = std::fs::read_dir(data.join("contacts")).unwrap().count();

    // The next night: the wave is not due; the trigger skips whom it selected.
    let first_trigger: Vec<String> =
        all_texts(&table(&snap2.join("audiences/T-COMPLAINT.parquet")).await, "customer_id")
            .into_iter()
            .flatten()
            .collect();
    let out = nightly(&s, &["--as-of", "2026-07-02"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(s.scores.join("snapshots").join(current(&s.scores)).join("run_report.json")).unwrap(),
    )
    .unwrap();
    let inputs = report["inputs"].as_array().unwrap();
    let contacts = inputs.iter().find(|t| t["table"] == "contacts").unwrap();
    assert_eq!(contacts["rejected"], 0, "engage's own contact records meet the contract: {contacts}");
    let audiences = report["audiences"].as_array().unwrap();
    assert_eq!(audiences.len(), 1, "only the trigger is due");
    assert!(
        audiences[0]["suppressed"]["cooldown"].as_u64().unwrap() >= first_trigger.len() as u64 / 2,
        "{}",
        audiences[0]
    );
    let next = s.scores.join("snapshots").join(current(&s.scores)).join("audiences/T-COMPLAINT.parquet");
    let second: Vec<String> = all_texts(&table(&next).await, "customer_id").into_iter().flatten().collect();
    assert!(
        second.iter().all(|c| !first_trigger.contains(c)),
        "a trigger contacts a customer once per cooldown"
    );
    assert_eq!(std::fs::read_dir(data.join("contacts")).unwrap().count(), files + 1);

    // Ad hoc: `engage audience` on the current snapshot, without recording.
    let adhoc = s.config.parent().unwrap().join("adhoc");
    let out = engage(&[
        "audience",
        "--config",
        s.config.to_str().unwrap(),
        "--campaign",
        "W-RETAIN",
        "--out",
        adhoc.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("audience W-RETAIN") && stdout(&out).contains("as of 2026-07-02"),
        "{}",
        stdout(&out)
    );
    assert!(adhoc.join("W-RETAIN.csv").exists());
    assert_eq!(
        std::fs::read_dir(data.join("contacts")).unwrap().count(),
        files + 1,
        "a dry run records nothing"
    );
    let unknown =
        engage(&["audience", "--config", s.config.to_str().unwrap(), "--campaign", "NOPE", "--out", "x"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("W-RETAIN, T-COMPLAINT"), "{}", stderr(&unknown));
}

/// `engage campaigns report` on the sample: every campaign's groups and
/// responders per stage, checked against the raw tables for one campaign.
#[tokio::test]
async fn campaigns_report_measures_response_and_lift() {
    use engage_pipeline::datafusion::prelude::{ParquetReadOptions, SessionContext};
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("n.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nroot = \"{}\"\n[models]\nregistry = \"models\"\n[output]\nscores = \"scores\"\n\
             [audiences]\nuniversal_holdout = 0.05\n\
             [[campaigns]]\nid = \"W001\"\nkind = \"wave\"\ndates = [\"2024-02-01\"]\nchannel = \"email\"\n\
             rank_by = \"clv\"\nlimit = 10\nbudget = 100.0\ncost_per_contact = 0.25\n",
            sample().display()
        ),
    )
    .unwrap();
    let out_dir = tmp.path().join("report");
    let out = engage(&[
        "campaigns",
        "report",
        "--config",
        config.to_str().unwrap(),
        "--as-of",
        "2026-07-01",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    assert!(said.contains("campaign results as of 2026-07-01") && said.contains("purchase"), "{said}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("campaigns.json")).unwrap()).unwrap();
    let html = std::fs::read_to_string(out_dir.join("campaigns.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("Rate: purchase"));
    let campaigns = report["campaigns"].as_array().unwrap();

    let ctx = SessionContext::new();
    for t in ["contacts", "responses", "campaigns"] {
        ctx.register_parquet(t, sample().join(t).to_str().unwrap(), ParquetReadOptions::default())
            .await
            .unwrap();
    }
    let count = |sql: String| {
        let ctx = ctx.clone();
        async move { crate::common::scalar_i64(&ctx, &sql).await as u64 }
    };
    let ids: Vec<&str> = campaigns.iter().map(|c| c["campaign_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len() as u64, count("SELECT count(DISTINCT campaign_id) FROM contacts".into()).await);
    // A campaign with a control group, checked by hand-written SQL.
    let c = campaigns.iter().find(|c| c["stages"][0]["control"]["customers"].as_u64().unwrap() > 50).unwrap();
    let id = c["campaign_id"].as_str().unwrap();
    for (group, key) in [("treatment", "treatment"), ("control", "control")] {
        let contacted = count(format!(
            "SELECT count(DISTINCT customer_id) FROM contacts WHERE campaign_id = '{id}' AND \"group\" = '{group}'"
        ))
        .await;
        let bought = count(format!(
            "WITH k AS (SELECT customer_id, min(ts) AS ts FROM contacts WHERE campaign_id = '{id}' AND \"group\" = '{group}' GROUP BY customer_id) \
             SELECT count(DISTINCT k.customer_id) FROM k JOIN responses r ON r.customer_id = k.customer_id AND r.campaign_id = '{id}' \
             AND r.stage = 'purchase' AND r.ts >= k.ts AND r.ts < k.ts + INTERVAL '30 days'"
        ))
        .await;
        let purchase = c["stages"].as_array().unwrap().iter().find(|s| s["stage"] == "purchase").unwrap();
        assert_eq!(purchase[key]["customers"].as_u64().unwrap(), contacted, "{id} {group}");
        assert_eq!(purchase[key]["responders"].as_u64().unwrap(), bought, "{id} {group}");
    }
    // The lift is the difference of the rates, its interval around it.
    let any = &c["stages"][0];
    let (t, k) = (&any["treatment"], &any["control"]);
    let rate = |g: &serde_json::Value| g["responders"].as_f64().unwrap() / g["customers"].as_f64().unwrap();
    let lift = &any["lift"];
    assert!((lift["absolute"].as_f64().unwrap() - (rate(t) - rate(k))).abs() < 1e-12);
    assert!(lift["absolute_low"].as_f64().unwrap() < lift["absolute"].as_f64().unwrap());
    // Costs come from the config's campaigns.
    let w001 = campaigns.iter().find(|c| c["campaign_id"] == "W001").expect("the sample has W001");
    let treated = w001["stages"][0]["treatment"]["customers"].as_f64().unwrap();
    assert_eq!(w001["cost"].as_f64().unwrap(), 0.25 * treated);
    // The universal holdout against everyone else, over the 90 days before.
    let h = &report["universal_holdout"];
    assert_eq!(h["since"], "2026-04-02");
    let held = (1..=crate::common::SAMPLE_CUSTOMERS)
        .filter(|i| {
            engage_pipeline::audience::unit_hash("engage universal holdout", &format!("C{i:07}")) < 0.05
        })
        .count() as u64;
    assert_eq!(h["holdout"]["customers"].as_u64().unwrap(), held);
    assert_eq!(h["marketed"]["customers"].as_u64().unwrap(), crate::common::SAMPLE_CUSTOMERS as u64 - held);
    assert!(h["marketed"]["responders"].as_u64().unwrap() > 1000, "{h}");
    assert!(said.contains("universal holdout since 2026-04-02"), "{said}");
    assert!(html.contains("Universal holdout"));
}

/// Scoring reads the feature table back a slice of customers at a time;
/// slices of 97 (many, the last one short) must publish what one slice
/// does, value tiers included (their CLV limits span every customer).
#[test]
fn scoring_a_slice_at_a_time_publishes_what_one_slice_does() {
    use engage_pipeline::scoring::{ScoreOptions, score};
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("models");
    churn_and_clv_registry(&models);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |slice_rows: usize, out: &str| {
        let mut opts = ScoreOptions::score(
            engage_pipeline::DataSource::new(sample()),
            crate::common::date("2026-07-01"),
            &engage_pipeline::store::DataRoot::local(&models),
            &["churn".parse().unwrap(), "clv".parse().unwrap()],
            &tmp.path().join(out),
        );
        opts.slice_rows = slice_rows;
        rt.block_on(score(&opts)).unwrap()
    };
    let (whole, sliced) = (run(usize::MAX, "whole"), run(97, "sliced"));
    let (a, b) = (read_scores(&whole.snapshot_dir), read_scores(&sliced.snapshot_dir));
    assert!(a.num_rows() > 3 * 97, "{} customers: too few for several slices", a.num_rows());
    assert_eq!(a.schema(), b.schema());
    for (i, field) in a.schema().fields().iter().enumerate() {
        if field.name() != "scored_at" {
            assert_eq!(a.column(i), b.column(i), "column {}", field.name());
        }
    }
    assert!(texts(&a, "value_tier").contains(&Some("high".into())), "no value tiers to compare");
    let summary = |run: &engage_pipeline::scoring::ScoreRun| {
        let mut s = run.report.snapshot.clone().unwrap();
        s.snapshot_id.clear();
        s
    };
    assert_eq!(summary(&whole), summary(&sliced));
    for file in ["features.parquet", "identities.parquet"] {
        let (a, b) =
            (read_parquet(&whole.snapshot_dir.join(file)), read_parquet(&sliced.snapshot_dir.join(file)));
        assert_eq!(a, b, "{file}");
    }
    // The purchase summaries scoring walked are not published.
    let published = crate::common::files_under(&whole.snapshot_dir);
    assert!(!published.iter().any(|f| f.contains("purchase_summaries")), "{published:?}");
}
