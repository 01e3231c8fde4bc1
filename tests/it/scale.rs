//! Beyond one machine: the engine under a memory limit, and the pipeline
//! and server on a real S3 endpoint.

use std::path::Path;

use engage_pipeline::DataSource;
use engage_pipeline::datafusion::arrow::util::pretty::pretty_format_batches;
use engage_pipeline::datafusion::parquet::arrow::ArrowWriter;
use engage_pipeline::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use engage_pipeline::generate::{GenerateOptions, generate};
use engage_pipeline::jobs::{FEATURES_FILE, IDENTITY_MAP_FILE, build_features, build_identity};
use engage_pipeline::runtime::{ByteSize, EngineSettings};
use engage_pipeline::store::{DataRoot, StorageOptions};

use crate::common::{date, sample, stderr, stdout};

/// Bytes the input tables take in memory as Arrow arrays.
fn in_memory_size(root: &Path) -> usize {
    let mut total = 0;
    for entry in walk(root) {
        if entry.extension().is_some_and(|e| e == "parquet") && !entry.starts_with(root.join("truth")) {
            let file = std::fs::File::open(&entry).unwrap();
            let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
            total += reader.map(|b| b.unwrap().get_array_memory_size()).sum::<usize>();
        }
    }
    total
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() { out.extend(walk(&p)) } else { out.push(p) }
    }
    out
}

/// The feature build under a memory limit about a third of the inputs'
/// in-memory size gives the same table, byte for byte, by spilling (the
/// SQL operators, and the attributed events kept on disk): with spilling
/// off the same limit fails, so the limit binds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_under_a_memory_limit_spill_and_match() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&GenerateOptions::new(40_000, 3, &data)).unwrap();
    // 100 transactions twice over, so that the key check (whose hashes go
    // to disk under the limit) has repeats to find.
    let part = walk(&data.join("transactions")).into_iter().next().unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(part).unwrap()).unwrap();
    let again = reader.build().unwrap().next().unwrap().unwrap().slice(0, 100);
    let file = std::fs::File::create(data.join("transactions/again.parquet")).unwrap();
    let mut writer = ArrowWriter::try_new(file, again.schema(), None).unwrap();
    writer.write(&again).unwrap();
    writer.close().unwrap();
    let size = in_memory_size(&data);
    // A 96 MiB pool (7/8 of the limit): smaller ones leave the feature
    // table's final sort-merge too little room now and then.
    let limit = 110 << 20;
    assert!(size > 2 * limit, "the inputs ({size} bytes in memory) are much larger than the limit");
    let as_of = date("2026-01-01");

    let unbounded = tmp.path().join("unbounded");
    build_features(&DataSource::new(&data), as_of, &unbounded).await.unwrap();

    let spill_dir = tmp.path().join("spill");
    let limited = EngineSettings {
        memory_limit: Some(ByteSize(limit as u64)),
        spill_dir: Some(spill_dir.clone()),
        ..EngineSettings::default()
    };
    let bounded = tmp.path().join("bounded");
    let source = DataSource { engine: limited.clone(), ..DataSource::new(&data) };
    build_features(&source, as_of, &bounded).await.unwrap();
    let read = |dir: &Path| std::fs::read(dir.join(FEATURES_FILE)).unwrap();
    assert!(read(&bounded) == read(&unbounded), "the same feature table under the limit");
    let inputs = |dir: &Path| {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("run_report.json")).unwrap()).unwrap();
        report["inputs"].clone()
    };
    assert_eq!(inputs(&bounded), inputs(&unbounded), "the same contract checks");
    let transactions =
        inputs(&bounded).as_array().unwrap().iter().find(|t| t["table"] == "transactions").cloned();
    assert_eq!(transactions.unwrap()["duplicates"], 100);
    assert_eq!(walk(&spill_dir).len(), 0, "spill files are removed");
    // The report gives the most the engine's pool held in each stage (the
    // operators' reservations and the identity graph): never more than the
    // pool's seven eighths of the limit.
    let pool_peaks = |dir: &Path| -> Vec<f64> {
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("run_report.json")).unwrap()).unwrap();
        let stages = report["stages"].as_array().unwrap().clone();
        stages.iter().map(|s| s["pool_peak_mib"].as_f64().unwrap_or_else(|| panic!("{s}"))).collect()
    };
    let peaks = pool_peaks(&bounded);
    let most = peaks.iter().copied().fold(0.0, f64::max);
    let pool = (limit - limit / 8) as f64 / (1 << 20) as f64;
    assert!(most > 0.0 && most <= pool, "{peaks:?} within {pool} MiB");

    // Under the limit the attributed events and the identity map live on
    // disk while the engine holds them, and go with it.
    let mut engine = engage_pipeline::Engine::open_source(&source).await.unwrap();
    engine.resolve_identities(Some(as_of)).await.unwrap();
    let files = walk(&spill_dir);
    for file in ["transactions_resolved.parquet", "interactions_resolved.parquet", "identity_map.parquet"] {
        assert!(files.iter().any(|f| f.ends_with(file)), "{file} not in {files:?}");
    }
    drop(engine);
    assert_eq!(walk(&spill_dir).len(), 0, "spill files are removed with the engine");
    // `engage identity` writes the same map, and measures the same quality
    // (its SQL reads the map from disk).
    let (unbounded, bounded) = (tmp.path().join("identity-unbounded"), tmp.path().join("identity-bounded"));
    let quality =
        |report: engage_pipeline::report::RunReport| serde_json::to_value(report.identity_quality).unwrap();
    let expected = quality(build_identity(&DataSource::new(&data), &unbounded).await.unwrap());
    assert_eq!(quality(build_identity(&source, &bounded).await.unwrap()), expected);
    assert!(expected["recall"].as_f64().unwrap() > 0.9, "{expected}");
    // (Rows in the order identifiers were first seen, which the parallel
    // scans leave open.)
    let rows = |dir: &Path| {
        let file = std::fs::File::open(dir.join(IDENTITY_MAP_FILE)).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        let text = pretty_format_batches(&batches).unwrap().to_string();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    };
    let expected = rows(&unbounded);
    assert!(expected.len() > 40_000, "{} rows", expected.len());
    assert!(rows(&bounded) == expected, "the same identity map under the limit");
    assert_eq!(walk(&spill_dir).len(), 0, "spill files are removed");

    let no_spill = DataSource {
        engine: EngineSettings { spill_disabled: true, ..limited.clone() },
        ..DataSource::new(&data)
    };
    let err = build_features(&no_spill, as_of, &tmp.path().join("no-spill")).await.unwrap_err();
    let said = err.to_string();
    // (The first query past the limit is the check of the repeated
    // transactions, before the feature SQL, which fails alike.)
    assert!(said.contains("query `") && said.contains("raise --memory-limit"), "{said}");
    assert!(!tmp.path().join("no-spill").join(FEATURES_FILE).exists(), "nothing half-written");

    // The identity graph cannot spill; it is counted against the limit, so
    // a limit under what it took fails where the graph is built, saying so,
    // where it would have gone past the limit unseen. Half of what it took:
    // its vectors' capacities depend on the order rows arrive in, but stay
    // under twice what they hold. (Without the repeated transactions, whose
    // check needs more than that.)
    std::fs::remove_file(data.join("transactions/again.parquet")).unwrap();
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bounded.join("run_report.json")).unwrap()).unwrap();
    let graph = report["identity"]["graph_bytes"].as_u64().unwrap();
    assert!(graph > 40_000 * 16, "{graph} bytes for the graph of 40,000 customers");
    let small = EngineSettings { memory_limit: Some(ByteSize(graph / 2)), ..limited };
    let out = tmp.path().join("small");
    let err = build_features(&DataSource { engine: small, ..DataSource::new(&data) }, as_of, &out)
        .await
        .unwrap_err();
    let said = err.to_string();
    assert!(said.contains("identity graph needs") && said.contains("raise --memory-limit"), "{said}");
    assert!(!out.join(FEATURES_FILE).exists(), "nothing half-written");
    assert_eq!(walk(&spill_dir).len(), 0, "spill files are removed");
}

/// `batches` as sorted lines of text, floats to 6 decimals (sums add up
/// in another order under a memory limit or on a cluster).
fn rounded_lines(batches: &[engage_pipeline::datafusion::arrow::array::RecordBatch]) -> Vec<String> {
    use engage_pipeline::datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch};
    use engage_pipeline::datafusion::arrow::datatypes::Float64Type;
    let rounded: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            let columns = b.columns().iter().map(|c| match c.as_primitive_opt::<Float64Type>() {
                Some(f) => {
                    std::sync::Arc::new(f.unary::<_, Float64Type>(|v| (v * 1e6).round() / 1e6)) as ArrayRef
                }
                None => c.clone(),
            });
            RecordBatch::try_new(b.schema(), columns.collect()).unwrap()
        })
        .collect();
    let text = pretty_format_batches(&rounded).unwrap().to_string();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

/// The campaign SQL (results, contact history, response labels) under a
/// memory limit. There engage plans sort-merge joins, and DataFusion 55's
/// fails on an outer join whose `ON` filters on the joined side's columns
/// ("Column 'ts' is declared as non-nullable but contains null values",
/// first seen in the 3M nightly run, BENCHMARKS.md). With this many
/// contacts and responses the planner does not fall back to a hash join
/// for a small side. Same answers as without a limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_sql_under_a_memory_limit_matches_the_unbounded_engine() {
    use engage_pipeline::datafusion::arrow::array::RecordBatch;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    generate(&GenerateOptions::new(40_000, 3, &data)).unwrap();
    let limited = EngineSettings {
        memory_limit: Some(ByteSize(256 << 20)),
        spill_dir: Some(tmp.path().join("spill")),
        ..EngineSettings::default()
    };
    let mut answers = Vec::new();
    for source in [DataSource::new(&data), DataSource { engine: limited, ..DataSource::new(&data) }] {
        let mut engine = engage_pipeline::Engine::open_source(&source).await.unwrap();
        let as_of = date("2026-07-01");
        let results = engine.campaign_results(as_of, 30).await.unwrap();
        let file = tmp.path().join(format!("contacts-{}.parquet", answers.len()));
        engine.write_contact_history(as_of, 90, 30, &file).await.unwrap();
        let (_, history) = engage_pipeline::output::read_parquet(&file, 8192, None).unwrap();
        let history: Vec<RecordBatch> = history.map(Result::unwrap).collect();
        let labels =
            engine.labels(engage_pipeline::Task::Response, date("2026-03-01"), 60, 30).await.unwrap();
        // Rows in a fixed order (contact_history.sql leaves it open), sums
        // to 6 decimals (they add in another order under the limit).
        answers.push([results, history, labels].map(|batches| rounded_lines(&batches)));
    }
    for (i, name) in ["campaign results", "contact history", "response labels"].into_iter().enumerate() {
        assert!(answers[0][i].len() > 100, "{name}: {} lines", answers[0][i].len());
        let differ: Vec<_> =
            answers[0][i].iter().zip(&answers[1][i]).filter(|(a, b)| a != b).take(3).collect();
        assert!(answers[0][i] == answers[1][i], "{name} differ under the memory limit: {differ:?}");
    }
}

/// A moto S3 server on loopback (`pip install 'moto[server]'`; `.ci/run`
/// installs it), stopped on drop.
struct S3 {
    child: std::process::Child,
    endpoint: String,
}

impl S3 {
    fn start() -> S3 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 runs (moto is installed by .ci/run: pip install 'moto[server]')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let mut s3 = S3 { child, endpoint };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s3;
            }
            if let Some(status) = s3.child.try_wait().unwrap() {
                panic!("moto exited ({status}): pip install 'moto[server]'");
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("moto did not listen on {}", s3.endpoint);
    }

    fn create_bucket(&self, name: &str) {
        ureq::put(&format!("{}/{name}", self.endpoint)).send_empty().unwrap();
    }

    /// The environment a client of this server needs.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
        ]
    }

    fn root(&self, url: &str) -> DataRoot {
        let options: StorageOptions =
            self.env().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect();
        DataRoot::parse_with("--data", url, &options).unwrap()
    }

    fn engage(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_engage"))
            .args(args)
            .envs(self.env())
            .env("ENGAGE_ERASURE_LIST", "/nonexistent/engage-tests/erasure_list.json")
            .output()
            .unwrap()
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two commands changing `churn`'s promotions through the bucket at once
/// (each on its own copy of the registry's index): the one that writes
/// `promotions.json` second finds it changed, writes nothing and fails;
/// run again, its change lands on top of the first one's. Both when the
/// file existed (a conditional update) and when it did not (a conditional
/// create). Leaves `older` promoted, as found.
fn concurrent_promotions_on_the_bucket(
    rt: &tokio::runtime::Runtime,
    registry: &DataRoot,
    versions: &[String],
    older: &str,
) {
    use engage_pipeline::publish::ModelStore;
    let newer = versions.iter().find(|v| *v != older).unwrap();
    let open = || rt.block_on(ModelStore::open(registry)).unwrap();
    let stack = || {
        let bytes = rt.block_on(registry.read("churn/promotions.json")).unwrap().expect("promotions.json");
        let p: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        p["stack"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    for existed in [true, false] {
        if !existed {
            rt.block_on(registry.delete("churn/promotions.json")).unwrap();
        }
        let (first, second) = (open(), open());
        first.registry().promote("churn", newer).unwrap();
        second.registry().promote("churn", older).unwrap();
        rt.block_on(first.push()).unwrap();
        let after_first = stack();
        assert_eq!(after_first.last().unwrap(), newer, "existed: {existed}");
        let err = rt.block_on(second.push()).unwrap_err();
        assert!(matches!(err, engage_pipeline::PipelineError::Changed { .. }), "existed: {existed}: {err:?}");
        let said = err.to_string();
        assert!(
            said.contains("s3://engage/models/churn/promotions.json")
                && said.contains("run the command again"),
            "{said}"
        );
        assert_eq!(stack(), after_first, "the first command's promotion stands (existed: {existed})");
        let again = open();
        again.registry().promote("churn", older).unwrap();
        rt.block_on(again.push()).unwrap();
        let both = stack();
        assert_eq!(both[both.len() - 2..], [newer.clone(), older.to_string()], "existed: {existed}");
    }
}

/// The whole loop on a real S3 endpoint: inputs read from a bucket,
/// features written to it, nightly snapshots published to it (store
/// settings from the config's `[storage]`), and a server following it,
/// picking up the next night's snapshot; retention deletes old snapshots
/// from the bucket, but not the one just replaced.
#[test]
fn pipeline_and_server_run_on_s3() {
    let s3 = S3::start();
    s3.create_bucket("engage");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(s3.root("s3://engage/data").upload_dir("", sample(), &[])).unwrap();

    // Features from and to the bucket equal features from and to disk.
    let local = tmp.path().join("features");
    let by_path = crate::common::engage(&[
        "features",
        "--data",
        sample().to_str().unwrap(),
        "--as-of",
        "2026-01-01",
        "--out",
        local.to_str().unwrap(),
    ]);
    assert!(by_path.status.success(), "{}", stderr(&by_path));
    let on_s3 = s3.engage(&[
        "features",
        "--data",
        "s3://engage/data",
        "--as-of",
        "2026-01-01",
        "--out",
        "s3://engage/features",
    ]);
    assert!(on_s3.status.success(), "{}", stderr(&on_s3));
    let features = s3.root("s3://engage/features");
    let remote = rt.block_on(features.read(FEATURES_FILE)).unwrap().expect("features in the bucket");
    assert!(remote == std::fs::read(local.join(FEATURES_FILE)).unwrap(), "the same feature table");
    let report = rt.block_on(features.read("run_report.json")).unwrap().expect("the run report");
    let report: serde_json::Value = serde_json::from_slice(&report).unwrap();
    assert!(report["inputs"][0]["location"].as_str().unwrap().starts_with("s3://engage/data"), "{report}");
    let outputs: Vec<&str> =
        report["outputs"].as_array().unwrap().iter().map(|o| o.as_str().unwrap()).collect();
    assert!(outputs.contains(&"s3://engage/features/customer_features.parquet"), "{outputs:?}");

    // A missing bucket names the URL.
    let missing =
        s3.engage(&["features", "--data", "s3://nobucket/data", "--as-of", "2026-01-01", "--out", "x"]);
    assert_eq!(missing.status.code(), Some(1));
    let said = stderr(&missing);
    let cause = said
        .lines()
        .find(|l| l.contains("caused by: s3://nobucket/data"))
        .unwrap_or_else(|| panic!("{said}"));
    assert!(said.contains("NoSuchBucket"), "the store's own reason: {cause}\n{said}");

    // The model registry on the bucket: train into it (the first version
    // is promoted), promote another, and score from it below.
    let train = |as_of: &str| {
        let out = s3.engage(&[
            "train",
            "churn",
            "--data",
            "s3://engage/data",
            "--as-of",
            as_of,
            "--models",
            "s3://engage/models",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let said = train("2026-03-31");
    assert!(said.contains("registered s3://engage/models/churn/churn-2026-03-31-"), "{said}");
    assert!(said.contains("(promoted"), "{said}");
    assert!(train("2026-02-28").contains("not promoted"));
    let registry = s3.root("s3://engage/models");
    let (_, mut versions) = rt.block_on(registry.list("churn")).unwrap();
    versions.sort();
    assert_eq!(versions.len(), 2, "{versions:?}");
    let older = versions.iter().find(|v| v.contains("2026-02-28")).unwrap().clone();
    for version in &versions {
        for file in ["model.json", "meta.json", "report.html", "run_report.json"] {
            let object = rt.block_on(registry.read(&format!("churn/{version}/{file}"))).unwrap();
            assert!(object.is_some(), "{version}/{file} in the bucket");
        }
    }
    let promote =
        s3.engage(&["models", "promote", "--models", "s3://engage/models", &format!("churn@{older}")]);
    assert!(promote.status.success(), "{}", stderr(&promote));
    let promotions = rt.block_on(registry.read("churn/promotions.json")).unwrap().unwrap();
    let promotions: serde_json::Value = serde_json::from_slice(&promotions).unwrap();
    assert_eq!(promotions["stack"].as_array().unwrap().last().unwrap(), older.as_str());
    let listed = s3.engage(&["models", "list", "--models", "s3://engage/models"]);
    let marked: Vec<String> =
        stdout(&listed).lines().filter(|l| l.starts_with('*')).map(String::from).collect();
    assert!(marked.len() == 1 && marked[0].contains(&older), "{}", stdout(&listed));
    // Errors name the registry's URL, not the local copy.
    let unknown = s3.engage(&["models", "promote", "--models", "s3://engage/models", "churn@nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    let said = stderr(&unknown);
    assert!(said.contains("s3://engage/models") && said.contains("no version \"nope\""), "{said}");
    assert!(!said.contains("/tmp"), "{said}");
    concurrent_promotions_on_the_bucket(&rt, &registry, &versions, &older);

    // Nightly: data and models from the bucket, snapshots published to it.
    let storage: String =
        s3.env().iter().map(|(k, v)| format!("{} = \"{v}\"\n", k.to_ascii_lowercase())).collect();
    let config = tmp.path().join("nightly.toml");
    std::fs::write(
        &config,
        format!(
            "[data]\nroot = \"s3://engage/data\"\n[models]\nregistry = \"s3://engage/models\"\n\
             [output]\nscores = \"scores\"\npublish_to = \"s3://engage/scores\"\nkeep = 1\n[storage]\n{storage}"
        ),
    )
    .unwrap();
    // Only the config carries the store settings here.
    let nightly = |as_of: &str| {
        let out = crate::common::engage(&["nightly", "--config", config.to_str().unwrap(), "--as-of", as_of]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("pushed snapshot"), "{}", stdout(&out));
        // CURRENT replaced only if unchanged: the store took the condition.
        assert!(!stderr(&out).contains("written unconditionally"), "{}", stderr(&out));
        std::fs::read_to_string(tmp.path().join("scores/CURRENT")).unwrap().trim().to_string()
    };
    let first = nightly("2026-06-01");
    let manifest = tmp.path().join(format!("scores/snapshots/{first}/manifest.json"));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
    assert_eq!(manifest["models"]["churn"], older.as_str(), "scored with the promoted version");
    let scores = s3.root("s3://engage/scores");
    let pointer = rt.block_on(scores.read("CURRENT")).unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(&pointer).trim(), first);

    // A server following the bucket serves the first snapshot ...
    let cache = tmp.path().join("cache");
    let mut server = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_engage"))
            .args(["serve", "--scores", "s3://engage/scores", "--cache-dir", cache.to_str().unwrap()])
            .args(["--bind", "127.0.0.1:0", "--insecure-no-auth"])
            .envs(s3.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut log = std::io::BufReader::new(server.0.stderr.take().unwrap());
    let addr = loop {
        let mut line = String::new();
        assert!(std::io::BufRead::read_line(&mut log, &mut line).unwrap() > 0, "the server stopped");
        if let Some((_, a)) = line.trim().rsplit_once("http://") {
            break a.to_string();
        }
    };
    let served = || -> String {
        let body: serde_json::Value =
            ureq::get(&format!("http://{addr}/v1/snapshot")).call().unwrap().body_mut().read_json().unwrap();
        body["snapshot_id"].as_str().unwrap().to_string()
    };
    assert_eq!(served(), first);
    let lookup = ureq::get(&format!("http://{addr}/v1/customers/C0000001/scores")).call().unwrap();
    assert_eq!(lookup.status(), 200);

    // ... and the next night's once it is published; retention (keep 1)
    // removed the first from the bucket.
    let second = nightly("2026-06-15");
    assert_ne!(first, second);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while served() != second {
        assert!(std::time::Instant::now() < deadline, "the server never picked up {second}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let (_, mut ids) = rt.block_on(scores.list("snapshots")).unwrap();
    ids.sort();
    assert_eq!(ids, vec![first.clone(), second.clone()], "the replaced snapshot stays for one run");
    let third = nightly("2026-06-22");
    let (_, mut ids) = rt.block_on(scores.list("snapshots")).unwrap();
    ids.sort();
    assert_eq!(ids, vec![second, third], "retention on the bucket: keep 1, plus the one just replaced");
}

/// A child process killed when dropped, also when a test fails.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The feature table as one batch.
#[cfg(feature = "ballista")]
fn read_features(dir: &Path) -> engage_pipeline::datafusion::arrow::record_batch::RecordBatch {
    use engage_pipeline::datafusion::arrow::compute::concat_batches;
    let file = std::fs::File::open(dir.join(FEATURES_FILE)).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().build().unwrap();
    let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
    concat_batches(&batches[0].schema(), &batches).unwrap()
}

/// The feature tables in `local` and `cluster` hold the same columns,
/// types, rows and values (floats to 1e-9 relative: sums may add up in
/// another order).
#[cfg(feature = "ballista")]
fn assert_same_features(local: &Path, cluster: &Path) {
    use engage_pipeline::datafusion::arrow::array::{Array, AsArray};
    use engage_pipeline::datafusion::arrow::datatypes::{DataType, Float64Type};
    let (a, b) = (read_features(local), read_features(cluster));
    assert_eq!(a.schema(), b.schema());
    assert_eq!(a.num_rows(), b.num_rows());
    assert!(a.num_rows() > 1000);
    for (i, field) in a.schema().fields().iter().enumerate() {
        let (x, y) = (a.column(i), b.column(i));
        if field.data_type() == &DataType::Float64 {
            let (x, y) = (x.as_primitive::<Float64Type>(), y.as_primitive::<Float64Type>());
            for r in 0..x.len() {
                assert_eq!(x.is_valid(r), y.is_valid(r), "{} row {r}", field.name());
                let (p, q) = (x.value(r), y.value(r));
                assert!((p - q).abs() <= 1e-9 * p.abs().max(1.0), "{} row {r}: {p} vs {q}", field.name());
            }
        } else {
            assert_eq!(x, y, "{}", field.name());
        }
    }
}

/// The feature SQL on a Ballista cluster (standalone: scheduler and
/// executor in this process, talking gRPC on loopback) gives the feature
/// table the in-process engine gives: same columns, types, rows, values
/// (floats to 1e-9 relative: sums may add up in another order).
#[cfg(feature = "ballista")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn features_on_ballista_equal_the_local_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let as_of = date("2026-01-01");
    let local = tmp.path().join("local");
    build_features(&DataSource::new(sample()), as_of, &local).await.unwrap();
    let settings = EngineSettings {
        url: Some("ballista://standalone".into()),
        stage_dir: Some(tmp.path().join("stage").display().to_string()),
        ..EngineSettings::default()
    };
    let cluster = tmp.path().join("ballista");
    let run = build_features(&DataSource { engine: settings, ..DataSource::new(sample()) }, as_of, &cluster)
        .await
        .unwrap();
    for stage in ["staging for ballista", "features on ballista"] {
        assert!(run.report.stages.iter().any(|s| s.name == stage), "{stage}: ran on the cluster");
    }
    assert_same_features(&local, &cluster);
    assert_eq!(walk(&tmp.path().join("stage")).len(), 0, "staged tables are removed");
}

/// The cluster's inputs staged on an object store (a real S3 endpoint)
/// instead of a shared directory: the same feature table, and the staged
/// objects are deleted afterwards.
#[cfg(feature = "ballista")]
#[test]
fn features_on_ballista_staged_on_s3() {
    let s3 = S3::start();
    s3.create_bucket("engage");
    let tmp = tempfile::tempdir().unwrap();
    let (local, cluster) = (tmp.path().join("local"), tmp.path().join("cluster"));
    let data = sample().to_str().unwrap();
    let common = ["features", "--data", data, "--as-of", "2026-01-01", "--out"];
    let run = s3.engage(&[&common[..], &[local.to_str().unwrap()]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let on_cluster =
        [cluster.to_str().unwrap(), "--engine", "ballista://standalone", "--stage-dir", "s3://engage/stage"];
    let run = s3.engage(&[&common[..], &on_cluster[..]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cluster.join("run_report.json")).unwrap()).unwrap();
    assert!(
        report["stages"].as_array().unwrap().iter().any(|s| s["name"] == "features on ballista"),
        "{report}"
    );
    assert_same_features(&local, &cluster);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let left = rt.block_on(s3.root("s3://engage/stage").list_all("")).unwrap();
    assert!(left.is_empty(), "staged objects left: {left:?}");
    // The stage is on the store: a bucket that is not there fails the run.
    let elsewhere = [on_cluster[0], on_cluster[1], on_cluster[2], on_cluster[3], "s3://nobucket/stage"];
    let run = s3.engage(&[&common[..], &elsewhere[..]].concat());
    assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
    assert!(stderr(&run).contains("nobucket"), "{}", stderr(&run));
}

/// After the feature table, the scoring SQL over the same staged inputs
/// runs on the cluster too: the same CLV purchase summaries, contact
/// history, campaign results and holdout purchases as in process.
#[cfg(feature = "ballista")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_sql_on_ballista_equals_the_local_engine() {
    use engage_pipeline::report::Stopwatch;
    let tmp = tempfile::tempdir().unwrap();
    let as_of = date("2026-01-01");
    let settings = EngineSettings {
        url: Some("ballista://standalone".into()),
        stage_dir: Some(tmp.path().join("stage").display().to_string()),
        ..EngineSettings::default()
    };
    let read = |path: &Path| {
        let (_, batches) = engage_pipeline::output::read_parquet(path, 8192, None).unwrap();
        rounded_lines(&batches.map(Result::unwrap).collect::<Vec<_>>())
    };
    let mut answers = Vec::new();
    for source in [DataSource::new(sample()), DataSource { engine: settings, ..DataSource::new(sample()) }] {
        let on_cluster = source.engine.url.is_some();
        let mut engine = engage_pipeline::Engine::open_source(&source).await.unwrap();
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        let file = |name: &str| dir.path().join(name);
        engine.write_features(as_of, &file("features.parquet"), &mut Stopwatch::start()).await.unwrap();
        assert_eq!(engine.scores_on_cluster(), on_cluster);
        engine.write_purchase_summaries(as_of, &file("summaries.parquet")).await.unwrap();
        engine.write_contact_history(as_of, 365, 30, &file("contacts.parquet")).await.unwrap();
        let results = engine.campaign_results(as_of, 30).await.unwrap();
        let holdout = engine.purchases_between(date("2025-10-01"), as_of).await.unwrap();
        answers.push([
            read(&file("summaries.parquet")),
            read(&file("contacts.parquet")),
            rounded_lines(&results),
            rounded_lines(&holdout),
        ]);
        engine.release_events().unwrap();
        assert!(!engine.scores_on_cluster(), "the cluster session goes with the events");
    }
    for (i, name) in
        ["purchase summaries", "contact history", "campaign results", "holdout"].into_iter().enumerate()
    {
        assert!(answers[0][i].len() > 10, "{name}: {} lines", answers[0][i].len());
        assert!(answers[0][i] == answers[1][i], "{name} differ on the cluster");
    }
    assert_eq!(walk(&tmp.path().join("stage")).len(), 0, "staged tables are removed");
}

/// A run killed while it spills (`kill -9`: nothing of it cleans up) leaves
/// its spill directories; the next run with the same spill directory
/// removes them, says so, and cleans up its own.
#[test]
fn a_killed_runs_spill_directories_are_removed_by_the_next_run() {
    let tmp = tempfile::tempdir().unwrap();
    let spill = tmp.path().join("spill");
    let args = |out: &str| {
        [
            "features",
            "--data",
            sample().to_str().unwrap(),
            "--as-of",
            "2026-07-01",
            "--memory-limit",
            "256MiB",
            "--spill-dir",
            spill.to_str().unwrap(),
            "--out",
            tmp.path().join(out).to_str().unwrap(),
        ]
        .map(String::from)
    };
    let spilled = || -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&spill) else { return Vec::new() };
        entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
    };
    let mut killed = std::process::Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(args("killed"))
        .env("ENGAGE_ERASURE_LIST", "/nonexistent/engage-tests/erasure_list.json")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed as soon as it has a spill directory with its owner file.
    while !std::fs::read_dir(&spill)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("engage-") && e.path().join(".owner").is_file())
    {
        assert!(killed.try_wait().unwrap().is_none(), "the run ended before it was killed");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    killed.kill().unwrap();
    killed.wait().unwrap();
    let left = spilled();
    assert!(!left.is_empty(), "a killed run leaves its spill directories");

    let out = crate::common::engage(&args("next").each_ref().map(String::as_str));
    assert!(out.status.success(), "{}", stderr(&out));
    for dir in &left {
        assert!(
            stderr(&out).contains(&format!("{dir}, left behind by a run that did not finish")),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(spilled(), Vec::<String>::new(), "nothing left in the spill directory");
}
