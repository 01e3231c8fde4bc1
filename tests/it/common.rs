//! Shared test helpers: paths, a generated sample made once per run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use engage_pipeline::generate::{GenerateOptions, generate};

/// The tiny hand-written dataset (see tests/fixtures/tiny/README.md).
pub fn tiny() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// Cutoff of the golden tests.
pub fn tiny_as_of() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2025, 4, 1).unwrap()
}

pub fn date(s: &str) -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Customers in the shared generated sample.
pub const SAMPLE_CUSTOMERS: usize = 8_000;

/// A generated sample shared by the tests of this run (seed 7).
pub fn sample() -> &'static Path {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        generate(&GenerateOptions::new(SAMPLE_CUSTOMERS, 7, &data)).unwrap();
        (tmp, data)
    })
    .1
}

/// The version directory a `train` run printed (`registered DIR (...)`).
pub fn registered(said: &str) -> String {
    let line = said.lines().find_map(|l| l.strip_prefix("registered ")).expect("a registered line");
    line.split(" (").next().unwrap().to_string()
}

/// Runs the real `engage` binary. The erasure list defaults to one that does not
/// exist (no erasures), so a developer's own ~/.engage never leaks in; tests
/// of erasure pass `--erasure-list`.
pub fn engage(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(args)
        .env("ENGAGE_ERASURE_LIST", "/nonexistent/engage-tests/erasure_list.json")
        .output()
        .expect("engage runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(root, &p, out);
                } else {
                    out.push(p.strip_prefix(root).unwrap().display().to_string());
                }
            }
        }
    }
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        let target = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

/// A churn model trained on [`sample`] as of 2026-03-31 and a snapshot
/// scored with it as of 2026-07-01, made once per run.
pub struct Trained {
    pub artifact: engage_models::ModelArtifact,
    /// The model's registry directory (`<models>/churn/<version>/`).
    pub dir: PathBuf,
    /// The snapshot root (`score --out`).
    pub scores: PathBuf,
    _tmp: tempfile::TempDir,
}

pub fn trained() -> &'static Trained {
    static TRAINED: OnceLock<Trained> = OnceLock::new();
    TRAINED.get_or_init(|| {
        let data = sample().to_path_buf();
        // A runtime of its own: callers may be inside another runtime.
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let tmp = tempfile::tempdir().unwrap();
                let run =
                    engage_pipeline::jobs::train_churn_model(&engage_pipeline::jobs::TrainChurnOptions {
                        source: engage_pipeline::DataSource::new(&data),
                        as_of: date("2026-03-31"),
                        horizon_days: 90,
                        models: engage_pipeline::store::DataRoot::local(&tmp.path().join("models")),
                        name: None,
                        config: engage_models::TrainConfig {
                            split: engage_models::SplitConfig { seed: 1, ..Default::default() },
                            ..Default::default()
                        },
                    })
                    .await
                    .unwrap();
                let scores = tmp.path().join("scores");
                engage_pipeline::scoring::score(&engage_pipeline::scoring::ScoreOptions::score(
                    engage_pipeline::DataSource::new(&data),
                    date("2026-07-01"),
                    &engage_pipeline::store::DataRoot::local(&tmp.path().join("models")),
                    &["churn".parse().unwrap()],
                    &scores,
                ))
                .await
                .unwrap();
                Trained { artifact: run.artifact, dir: run.dir.into(), scores, _tmp: tmp }
            })
        })
        .join()
        .unwrap()
    })
}

/// The single integer a `SELECT count(*) ...` style query returns.
pub async fn scalar_i64(ctx: &engage_pipeline::datafusion::prelude::SessionContext, sql: &str) -> i64 {
    use engage_pipeline::datafusion::arrow::array::AsArray;
    use engage_pipeline::datafusion::arrow::datatypes::Int64Type;
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}
