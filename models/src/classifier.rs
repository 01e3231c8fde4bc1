//! The classifier families engage trains for churn and response, behind one
//! face: fit, probability, per-row explanations, feature importance.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::gbm::{FittedGbm, GbmParams};
use crate::{ChurnModel, ChurnValidParams, FittedChurn, ModelError, TrainingSet};

/// Which model to fit and with what hyperparameters; the `[model]` table of
/// a training config (see docs/models.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClassifierConfig {
    /// L2-regularised logistic regression with class weights ([`crate::ChurnModel`]).
    Logistic(ChurnValidParams),
    /// Histogram gradient boosting ([`crate::gbm`]).
    Gbm(GbmParams),
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig::Logistic(ChurnModel::params().check().expect("defaults are valid"))
    }
}

impl ClassifierConfig {
    /// `logistic` or `gbm`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClassifierConfig::Logistic(_) => "logistic",
            ClassifierConfig::Gbm(_) => "gbm",
        }
    }

    /// The defaults of a kind.
    pub fn default_for(kind: &str) -> Option<ClassifierConfig> {
        match kind {
            "logistic" => Some(ClassifierConfig::default()),
            "gbm" => Some(ClassifierConfig::Gbm(GbmParams::default())),
            _ => None,
        }
    }

    /// Validates the hyperparameters.
    pub fn check(&self) -> Result<(), ModelError> {
        match self {
            ClassifierConfig::Logistic(p) => crate::ChurnParams::from(p.clone()).check().map(|_| ()),
            ClassifierConfig::Gbm(p) => p.check(),
        }
    }

    /// Fits on `train`.
    pub fn fit(&self, train: &TrainingSet) -> Result<Classifier, ModelError> {
        self.check()?;
        Ok(match self {
            ClassifierConfig::Logistic(p) => Classifier::Logistic(p.fit(train)?),
            ClassifierConfig::Gbm(p) => Classifier::Gbm(p.fit(train)?),
        })
    }
}

/// A fitted classifier: plain serde data inside a [`crate::ModelArtifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Classifier {
    Logistic(FittedChurn),
    Gbm(FittedGbm),
}

impl Classifier {
    /// The input columns, in order.
    pub fn feature_names(&self) -> &[String] {
        match self {
            Classifier::Logistic(m) => &m.feature_names,
            Classifier::Gbm(m) => &m.feature_names,
        }
    }

    /// A warning when an iterative fit stopped at its iteration limit
    /// before converging (`model` names it in the message).
    pub fn convergence_warning(&self, model: &str) -> Option<String> {
        match self {
            Classifier::Logistic(FittedChurn {
                convergence: Some(crate::Convergence { iterations, converged: false }),
                ..
            }) => Some(format!(
                "warning: the logistic fit of {model} stopped after {iterations} iterations (max_iterations) before \
                 its gradient met gradient_tolerance; its coefficients are the best found. Raise max_iterations in \
                 the [model] table, or look for a feature that separates the classes on its own"
            )),
            _ => None,
        }
    }

    /// Probability of the positive class per row of `x` (columns in
    /// [`Classifier::feature_names`] order).
    pub fn predict_proba(&self, x: &Array2<f64>) -> Vec<f64> {
        match self {
            Classifier::Logistic(m) => m.predict_proba(x),
            Classifier::Gbm(m) => m.predict_proba(x),
        }
    }

    /// Each feature's additive share of each row's log-odds: exact for both
    /// families (coefficient times standardised value; path attribution for
    /// boosted trees).
    pub fn contributions(&self, x: &Array2<f64>) -> Array2<f64> {
        match self {
            Classifier::Logistic(m) => m.contributions(x),
            Classifier::Gbm(m) => m.contributions(x),
        }
    }

    /// Per row, up to `k` features that raise the score most: (feature
    /// index, log-odds contribution), contributions > 0, largest first.
    /// What a call-center agent reads as "why is this customer at risk".
    pub fn top_reasons(&self, x: &Array2<f64>, k: usize) -> Vec<Vec<(usize, f64)>> {
        self.contributions(x)
            .rows()
            .into_iter()
            .map(|row| {
                let mut up: Vec<(usize, f64)> =
                    row.iter().copied().enumerate().filter(|(_, c)| *c > 0.0).collect();
                up.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
                up.truncate(k);
                up
            })
            .collect()
    }

    /// What the report charts as the model's view of the features: a title
    /// and (feature, weight) pairs.
    pub fn importance(&self) -> (&'static str, Vec<(String, f64)>) {
        match self {
            Classifier::Logistic(m) => (
                "Feature weights (standardised; + raises the score)",
                m.feature_names.iter().cloned().zip(m.coefficients.iter().copied()).collect(),
            ),
            Classifier::Gbm(m) => (
                "Feature importance (share of split gain)",
                m.feature_names.iter().cloned().zip(m.importance.iter().copied()).collect(),
            ),
        }
    }

    /// Errors unless `names` are exactly the training features, in order.
    pub fn check_features(&self, model: &str, names: &[String]) -> Result<(), ModelError> {
        if names != self.feature_names() {
            return Err(ModelError::FeatureMismatch {
                model: model.to_string(),
                expected: self.feature_names().to_vec(),
                found: names.to_vec(),
            });
        }
        Ok(())
    }
}
