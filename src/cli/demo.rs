//! `engage demo`: the main job on the embedded default (local files,
//! in-process engine), end to end, with a short summary.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::NaiveDate;
use engage_models::registry::ModelRef;
use engage_models::{SplitConfig, TrainConfig};
use engage_pipeline::DataSource;
use engage_pipeline::generate::{GenerateOptions, generate};
use engage_pipeline::jobs::{
    TrainChurnOptions, TrainClvOptions, build_features, train_churn_model, train_clv_model,
};
use engage_pipeline::scoring::{ScoreOptions, score};
use engage_pipeline::store::DataRoot;

/// Marker file that says a directory belongs to the demo and may be replaced.
const MARKER: &str = ".engage-demo";

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Working directory; replaced on each run (only if an earlier demo made it).
    #[arg(long, default_value = "target/engage-demo")]
    dir: PathBuf,
    /// Customers to generate.
    #[arg(long, default_value_t = 50_000)]
    customers: usize,
    /// Seed of the generator and the validation split.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    let dir = &args.dir;
    prepare(dir)?;
    let data = dir.join("data");
    let (train_as_of, score_as_of) = (date(2026, 3, 31), date(2026, 7, 1));
    let horizon = 90;
    let total = Instant::now();

    let t = Instant::now();
    let opts = GenerateOptions::new(args.customers, args.seed, data.clone());
    tokio::task::spawn_blocking(move || generate(&opts)).await?.context("generating sample data")?;
    let gen_secs = t.elapsed().as_secs_f64();

    // Fresh synthetic data: no erasure list applies.
    let source = DataSource::new(&data);
    let features =
        build_features(&source, score_as_of, &dir.join("features")).await.context("building features")?;
    let trained = train_churn_model(&TrainChurnOptions {
        source: source.clone(),
        as_of: train_as_of,
        horizon_days: horizon,
        models: DataRoot::local(&dir.join("models")),
        name: None,
        config: TrainConfig {
            split: SplitConfig { seed: args.seed, ..SplitConfig::default() },
            ..TrainConfig::default()
        },
    })
    .await
    .context("training the churn model")?;
    let t = Instant::now();
    let clv = train_clv_model(&TrainClvOptions {
        source: source.clone(),
        as_of: train_as_of,
        time_unit: engage_models::clv::TimeUnit::Weeks,
        models: DataRoot::local(&dir.join("models")),
        name: None,
        pareto_nbd: false,
    })
    .await
    .context("training the CLV models")?;
    let clv_secs = t.elapsed().as_secs_f64();
    let models = [
        (&trained.artifact.name, &trained.artifact.model_version),
        (&clv.artifact.name, &clv.artifact.model_version),
    ]
    .map(|(name, version)| ModelRef { name: name.clone(), version: Some(version.clone()) });
    let scored = score(&ScoreOptions::score(
        source.clone(),
        score_as_of,
        &DataRoot::local(&dir.join("models")),
        &models,
        &dir.join("scores"),
    ))
    .await
    .context("scoring")?;
    let train_report = trained.report.as_ref().expect("trained from the contract tables");

    let m = &trained.artifact.metrics;
    println!("engage demo: {} customers, seed {}", args.customers, args.seed);
    println!();
    println!("input tables ({})", data.display());
    for t in &features.report.inputs {
        println!("  {:<13} {:>11} rows  {:>6} rejected by contract rules", t.table, t.rows, t.rejected);
    }
    let id = features.report.identity.as_ref().expect("features report identity");
    let resolved = features.report.resolved.as_ref().expect("features report attribution");
    println!(
        "  identity: {} identifiers -> {} CRM customers + {} anonymous; {} shared identifiers flagged",
        id.identifiers, id.crm_customers, id.anonymous, id.shared_identifiers
    );
    println!(
        "  events attributed to CRM customers: {} transactions, {} interactions",
        resolved.transactions, resolved.interactions
    );
    println!();
    println!("stages");
    println!("  generate  {:>7.1}s", gen_secs);
    println!(
        "  features  {:>7.1}s  {} customers x {} features as of {}",
        features.report.stages.iter().map(|s| s.seconds).sum::<f64>(),
        features.rows,
        features.columns.len() - 1,
        score_as_of
    );
    println!(
        "  train     {:>7.1}s  churn in {horizon} days after {train_as_of}: {} train / {} validation rows, churn rate {:.3}",
        train_report.stages.iter().map(|s| s.seconds).sum::<f64>(),
        trained.artifact.train_rows,
        trained.artifact.valid_rows,
        m.positive_rate
    );
    println!("  clv       {:>7.1}s  BG/NBD + Gamma-Gamma on purchases before {train_as_of}", clv_secs);
    println!(
        "  score     {:>7.1}s  {} customers as of {}",
        scored.report.stages.iter().map(|s| s.seconds).sum::<f64>(),
        scored.manifest.rows,
        score_as_of
    );
    println!("  total     {:>7.1}s", total.elapsed().as_secs_f64());
    println!();
    println!(
        "churn model {}: validation ROC AUC {:.3}, top-decile lift {:.2}, log loss {:.3}, Brier {:.3}",
        trained.artifact.model_version, m.roc_auc, m.top_decile_lift, m.log_loss, m.brier
    );
    if let Some(summary) = &scored.report.snapshot {
        for column in ["contact_strategy", "recommended_treatment"] {
            let counts: Vec<String> =
                summary.segments[column].iter().map(|(value, n)| format!("{value} {n}")).collect();
            println!("{}: {}", column.replace('_', " "), counts.join(", "));
        }
    }
    println!();
    println!("outputs");
    println!("  data      {}", data.display());
    println!("  features  {}", features.output.display());
    println!("  models    {}", dir.join("models").display());
    println!("  scores    {}", scored.snapshot_dir.display());
    println!();
    println!("serve the scores (on this machine only: no API keys; see docs/serving.md):");
    println!("  cargo run --release -- serve --scores {} --insecure-no-auth", dir.join("scores").display());
    println!("  curl http://127.0.0.1:8080/v1/customers/C0000001/scores");
    println!("  open http://127.0.0.1:8080/dashboard (docs/dashboard.md)");
    println!("the nightly job on these models (config in the repository):");
    println!("  cargo run --release -- nightly --config engage.example.toml");
    Ok(())
}

/// Empties the demo directory, refusing to touch one the demo did not make.
fn prepare(dir: &Path) -> Result<()> {
    if dir.exists() {
        let is_demo = dir.join(MARKER).exists();
        let is_empty =
            std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?.next().is_none();
        if !is_demo && !is_empty {
            bail!(
                "--dir {}: exists and was not made by `engage demo`; pick another directory",
                dir.display()
            );
        }
        std::fs::remove_dir_all(dir)
            .with_context(|| format!("removing the previous demo in {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join(MARKER), "made by engage demo; replaced on each run\n")
        .with_context(|| format!("writing {}", dir.join(MARKER).display()))?;
    Ok(())
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}
