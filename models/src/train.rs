//! Training runs: split, fit, evaluate and package a model as an artifact.

use crate::metrics::Curves;
use crate::{
    ARTIFACT_FORMAT_VERSION, ChurnParams, Metrics, ModelArtifact, ModelError, TrainingSet, TrainingWindow,
    stratified_split,
};

/// How to split and label a training run.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Share of rows held out for validation, in (0, 1); default 0.2.
    pub valid_share: f64,
    /// Seed of the stratified split.
    pub seed: u64,
    /// Window recorded in the artifact.
    pub window: TrainingWindow,
}

/// Holds out a stratified validation set, fits on the rest, evaluates on the
/// hold-out and returns the artifact. Deterministic for a seed.
pub fn train_churn(
    set: &TrainingSet,
    params: ChurnParams,
    opts: &TrainOptions,
) -> Result<(ModelArtifact, Curves), ModelError> {
    set.check()?;
    if !(opts.valid_share > 0.0 && opts.valid_share < 1.0) {
        return Err(ModelError::InvalidParam {
            name: "valid_share",
            value: opts.valid_share.to_string(),
            reason: "must be between 0 and 1",
        });
    }
    let (train_idx, valid_idx) = stratified_split(&set.y, opts.valid_share, opts.seed);
    train_on_split(set, params, &train_idx, &valid_idx, "churn", opts)
}

/// Fits on the rows `train_idx` of `set` and validates on `valid_idx` (a
/// time-based backtest, say), for `task` (`churn`, `response`).
pub fn train_on_split(
    set: &TrainingSet,
    params: ChurnParams,
    train_idx: &[usize],
    valid_idx: &[usize],
    task: &str,
    opts: &TrainOptions,
) -> Result<(ModelArtifact, Curves), ModelError> {
    set.check()?;
    let params = params.check()?;
    let (train, valid) = (set.select(train_idx), set.select(valid_idx));
    for (part, rows) in [("training", &train), ("validation", &valid)] {
        if rows.y.iter().all(|&v| v) || rows.y.iter().all(|&v| !v) {
            return Err(ModelError::Data(format!(
                "the {part} rows ({} of {}, {} positive) do not hold both classes",
                rows.y.len(),
                set.y.len(),
                rows.y.iter().filter(|&&v| v).count()
            )));
        }
    }
    let model = params.fit(&train)?;
    let p = model.predict_proba(&valid.x);
    let (metrics, curves) = (Metrics::compute(&valid.y, &p), Curves::compute(&valid.y, &p));
    let fingerprint = set.fingerprint();
    let artifact = ModelArtifact {
        format_version: ARTIFACT_FORMAT_VERSION,
        model_version: format!("{task}-{}-{}", opts.window.as_of, &fingerprint[..12]),
        task: task.into(),
        engage_version: env!("CARGO_PKG_VERSION").into(),
        trained_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        window: opts.window.clone(),
        params,
        train_rows: train.y.len(),
        valid_rows: valid.y.len(),
        split_seed: opts.seed,
        data_fingerprint: fingerprint,
        metrics,
        model,
    };
    Ok((artifact, curves))
}
