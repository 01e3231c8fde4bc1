//! Training runs: split, fit, evaluate and package a model as an artifact.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::Curves;
use crate::split::stratified_folds;
use crate::{
    ARTIFACT_FORMAT_VERSION, ClassifierConfig, Metrics, ModelArtifact, ModelError, TrainingSet,
    TrainingWindow,
};

/// A training configuration: the TOML file `engage train --config` reads
/// (see docs/models.md). Every table and field is optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// The model family (`kind = "logistic" | "gbm"`) and its hyperparameters.
    pub model: ClassifierConfig,
    /// How the validation rows are chosen.
    pub split: SplitConfig,
}

/// How the validation rows are chosen. The default is a time-based
/// backtest when the rows carry several cutoffs (train on the earlier
/// ones, validate on the last), else a stratified hold-out; `folds` asks
/// for stratified k-fold cross-validation instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitConfig {
    /// Hold-out share when there is one cutoff; default 0.2.
    pub valid_share: f64,
    /// Seed of the hold-out or of the fold assignment; default 42.
    pub seed: u64,
    /// Stratified k-fold with this many folds (2..=20): metrics from the
    /// pooled out-of-fold predictions, the model refitted on every row.
    pub folds: Option<usize>,
}

impl Default for SplitConfig {
    fn default() -> Self {
        SplitConfig { valid_share: 0.2, seed: 42, folds: None }
    }
}

impl TrainConfig {
    /// Validates the model and the split settings.
    pub fn check(&self) -> Result<(), ModelError> {
        self.model.check()?;
        let s = &self.split;
        if !(s.valid_share > 0.0 && s.valid_share < 1.0) {
            return Err(ModelError::InvalidParam {
                name: "valid_share",
                value: s.valid_share.to_string(),
                reason: "must be between 0 and 1",
            });
        }
        if let Some(k) = s.folds
            && !(2..=20).contains(&k)
        {
            return Err(ModelError::InvalidParam {
                name: "folds",
                value: k.to_string(),
                reason: "must be in 2..=20",
            });
        }
        Ok(())
    }
}

/// Trains and evaluates per `config.split` (see [`SplitConfig`]).
/// `cutoffs` holds each row's cutoff date when the rows come from several
/// (as `engage dataset` stacks them); `as_of` is the cutoff recorded when
/// there is one. Returns the artifact and the validation curves.
pub fn train(
    set: &TrainingSet,
    cutoffs: Option<&[String]>,
    config: &TrainConfig,
    opts: &TrainOptions,
) -> Result<(ModelArtifact, Curves), ModelError> {
    config.check()?;
    set.check()?;
    let opts = with_last_cutoff(opts, cutoffs);
    let split = &config.split;
    if let Some(k) = split.folds {
        return cross_validate(set, &config.model, k, split.seed, &opts);
    }
    let classes: Vec<u32> = set.y.iter().map(|&v| v as u32).collect();
    let (train_idx, valid_idx, described) = split_rows(&classes, cutoffs, split);
    train_on_split(set, &config.model, &train_idx, &valid_idx, &described, &opts)
}

/// `opts` with the window's cutoff set to the last of `cutoffs`, if any.
pub(crate) fn with_last_cutoff(opts: &TrainOptions, cutoffs: Option<&[String]>) -> TrainOptions {
    let mut opts = opts.clone();
    if let Some(last) = cutoffs.and_then(|c| c.iter().max()) {
        opts.window.as_of = last.clone();
    }
    opts
}

/// The default split of rows (see [`SplitConfig`]): with several cutoffs in
/// `cutoffs` a time-based backtest on the last one, else a hold-out
/// stratified by `classes`. Returns (train, validation, the split in words).
pub(crate) fn split_rows(
    classes: &[u32],
    cutoffs: Option<&[String]>,
    split: &SplitConfig,
) -> (Vec<usize>, Vec<usize>, String) {
    let mut distinct: Vec<&String> = cutoffs.into_iter().flatten().collect();
    distinct.sort();
    distinct.dedup();
    match (cutoffs, distinct.last()) {
        (Some(cutoffs), Some(&last)) if distinct.len() > 1 => {
            let (valid, train): (Vec<usize>, Vec<usize>) =
                (0..cutoffs.len()).partition(|&i| &cutoffs[i] == last);
            let described = format!(
                "time-based backtest: trained on {} rows of {} cutoffs before {last}, validated on {} rows at {last}",
                train.len(),
                distinct.len() - 1,
                valid.len()
            );
            (train, valid, described)
        }
        _ => {
            let (train, valid) = crate::split::stratified_split_by(classes, split.valid_share, split.seed);
            let described = format!(
                "stratified hold-out of {:.0} % (seed {}): trained on {} rows, validated on {}",
                split.valid_share * 100.0,
                split.seed,
                train.len(),
                valid.len()
            );
            (train, valid, described)
        }
    }
}

/// Stratified k-fold: each fold is predicted by a model fitted on the
/// others; the metrics are over the pooled out-of-fold predictions; the
/// returned model is fitted on every row.
fn cross_validate(
    set: &TrainingSet,
    config: &ClassifierConfig,
    k: usize,
    seed: u64,
    opts: &TrainOptions,
) -> Result<(ModelArtifact, Curves), ModelError> {
    let folds = stratified_folds(&set.y, k, seed);
    let mut p = vec![f64::NAN; set.y.len()];
    let mut fold_auc = Vec::with_capacity(k);
    for f in 0..k {
        let (valid, train): (Vec<usize>, Vec<usize>) = (0..set.y.len()).partition(|&i| folds[i] == f);
        check_both_classes(set, &train, &format!("training rows of fold {}", f + 1))?;
        check_both_classes(set, &valid, &format!("validation rows of fold {}", f + 1))?;
        let model = config.fit(&set.select(&train))?;
        let held_out = set.select(&valid);
        let fold_p = model.predict_proba(&held_out.x);
        fold_auc.push(crate::metrics::roc_auc(&held_out.y, &fold_p));
        for (i, v) in valid.into_iter().zip(fold_p) {
            p[i] = v;
        }
    }
    let (metrics, curves) = (Metrics::compute(&set.y, &p), Curves::compute(&set.y, &p));
    let mean = fold_auc.iter().sum::<f64>() / k as f64;
    let sd = (fold_auc.iter().map(|a| (a - mean).powi(2)).sum::<f64>() / (k - 1) as f64).sqrt();
    let described = format!(
        "stratified {k}-fold cross-validation (seed {seed}) over {} rows: metrics from the out-of-fold predictions, \
         fold ROC AUC {mean:.3} ± {sd:.3}; the model is refitted on every row",
        set.y.len()
    );
    let model = config.fit(set)?;
    Ok((package(set, config, model, metrics, set.y.len(), set.y.len(), &described, opts), curves))
}

fn check_both_classes(set: &TrainingSet, rows: &[usize], part: &str) -> Result<(), ModelError> {
    let positives = rows.iter().filter(|&&i| set.y[i]).count();
    if positives == 0 || positives == rows.len() {
        return Err(ModelError::Data(format!(
            "the {part} ({} of {}, {positives} positive) do not hold both classes",
            rows.len(),
            set.y.len(),
        )));
    }
    Ok(())
}

/// What a training run records besides the data.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Registry name (usually the task).
    pub name: String,
    /// What the model predicts: `churn`, `response`.
    pub task: String,
    /// Window recorded in the artifact.
    pub window: TrainingWindow,
}

/// `<name>-<as_of>-<12 hex digits>` from the data fingerprint and the
/// configuration: the same data and settings give the same version.
pub fn model_version(
    name: &str,
    as_of: &str,
    data_fingerprint: &str,
    config: &impl serde::Serialize,
) -> String {
    let mut h = Sha256::new();
    h.update(data_fingerprint.as_bytes());
    h.update(serde_json::to_vec(config).expect("config serialises"));
    let digest = format!("{:x}", h.finalize());
    format!("{name}-{as_of}-{}", &digest[..12])
}

/// Fits on the rows `train_idx` of `set` and validates on `valid_idx` (a
/// time-based backtest or a stratified hold-out, described by `split`).
/// Returns the artifact and the validation curves.
pub fn train_on_split(
    set: &TrainingSet,
    config: &ClassifierConfig,
    train_idx: &[usize],
    valid_idx: &[usize],
    split: &str,
    opts: &TrainOptions,
) -> Result<(ModelArtifact, Curves), ModelError> {
    set.check()?;
    config.check()?;
    check_both_classes(set, train_idx, "training rows")?;
    check_both_classes(set, valid_idx, "validation rows")?;
    let (train, valid) = (set.select(train_idx), set.select(valid_idx));
    let model = config.fit(&train)?;
    let p = model.predict_proba(&valid.x);
    let (metrics, curves) = (Metrics::compute(&valid.y, &p), Curves::compute(&valid.y, &p));
    Ok((package(set, config, model, metrics, train.y.len(), valid.y.len(), split, opts), curves))
}

#[allow(clippy::too_many_arguments)]
fn package(
    set: &TrainingSet,
    config: &ClassifierConfig,
    model: crate::Classifier,
    metrics: Metrics,
    train_rows: usize,
    valid_rows: usize,
    split: &str,
    opts: &TrainOptions,
) -> ModelArtifact {
    let fingerprint = set.fingerprint();
    ModelArtifact {
        format_version: ARTIFACT_FORMAT_VERSION,
        model_version: model_version(&opts.name, &opts.window.as_of, &fingerprint, config),
        name: opts.name.clone(),
        task: opts.task.clone(),
        engage_version: env!("CARGO_PKG_VERSION").into(),
        trained_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        window: opts.window.clone(),
        params: config.clone(),
        split: split.into(),
        train_rows,
        valid_rows,
        data_fingerprint: fingerprint,
        metrics,
        model,
    }
}
