//! Churn classifier: L2-regularised logistic regression (linfa-logistic) on
//! standardised features with mean imputation of missing values.

use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, Axis, ShapeBuilder};
use serde::{Deserialize, Serialize};

use crate::{ModelError, TrainingSet};

/// Entry point: `ChurnModel::params().l2(0.1).fit(&train)`.
pub struct ChurnModel;

impl ChurnModel {
    /// Default hyperparameters (see [`ChurnParams`]).
    pub fn params() -> ChurnParams {
        ChurnParams(ChurnValidParams::default())
    }
}

impl Default for ChurnValidParams {
    fn default() -> Self {
        ChurnValidParams { l2: 1.0, max_iterations: 200, gradient_tolerance: 1e-4 }
    }
}

/// Unchecked hyperparameters; [`ChurnParams::check`] or `fit` validates them.
#[derive(Debug, Clone)]
pub struct ChurnParams(ChurnValidParams);

/// Hyperparameters known to be in range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnValidParams {
    /// L2 penalty on standardised coefficients (linfa's `alpha`); >= 0, default 1.0.
    pub l2: f64,
    /// L-BFGS iteration cap; > 0, default 200.
    pub max_iterations: u64,
    /// Stop when the norm of the gradient of the summed log loss falls
    /// below this; > 0, default 1e-4 (scikit-learn's `tol` for lbfgs on the
    /// same objective).
    pub gradient_tolerance: f64,
}

impl From<ChurnValidParams> for ChurnParams {
    fn from(p: ChurnValidParams) -> Self {
        ChurnParams(p)
    }
}

impl ChurnParams {
    /// Sets the L2 penalty.
    pub fn l2(mut self, l2: f64) -> Self {
        self.0.l2 = l2;
        self
    }

    /// Sets the iteration cap.
    pub fn max_iterations(mut self, n: u64) -> Self {
        self.0.max_iterations = n;
        self
    }

    /// Validates every parameter.
    pub fn check(self) -> Result<ChurnValidParams, ModelError> {
        let p = self.0;
        if !(p.l2.is_finite() && p.l2 >= 0.0) {
            return Err(ModelError::InvalidParam {
                name: "l2",
                value: p.l2.to_string(),
                reason: "must be a finite number >= 0",
            });
        }
        if p.max_iterations == 0 {
            return Err(ModelError::InvalidParam {
                name: "max_iterations",
                value: "0".into(),
                reason: "must be > 0",
            });
        }
        if !(p.gradient_tolerance.is_finite() && p.gradient_tolerance > 0.0) {
            return Err(ModelError::InvalidParam {
                name: "gradient_tolerance",
                value: p.gradient_tolerance.to_string(),
                reason: "must be a finite number > 0",
            });
        }
        Ok(p)
    }

    /// Checks the parameters, then fits.
    pub fn fit(self, train: &TrainingSet) -> Result<FittedChurn, ModelError> {
        self.check()?.fit(train)
    }
}

impl ChurnValidParams {
    /// Fits on `train`. Needs both classes present and at least one row.
    pub fn fit(&self, train: &TrainingSet) -> Result<FittedChurn, ModelError> {
        train.check()?;
        let positives = train.y.iter().filter(|&&v| v).count();
        if positives == 0 || positives == train.y.len() {
            return Err(ModelError::Data(format!(
                "{} rows with {positives} positives: both classes are needed",
                train.y.len()
            )));
        }
        let scaling = Scaling::fit(&train.x);
        let x = scaling.transform(&train.x);
        // Column-major: without BLAS, ndarray multiplies a row-major matrix
        // by a vector through a generic path and packs it for every
        // transposed product; column-major keeps linfa's gradient cheap.
        let mut fortran = Array2::zeros(x.dim().f());
        fortran.assign(&x);
        let x = fortran;
        let y: Array1<usize> = train.y.iter().map(|&v| v as usize).collect();
        let fitted = LogisticRegression::default()
            .alpha(self.l2)
            .max_iterations(self.max_iterations)
            .gradient_tolerance(self.gradient_tolerance)
            .fit(&Dataset::new(x, y))
            .map_err(ModelError::Fit)?;
        // linfa's "positive" class is the more frequent one; store the
        // linear predictor of class 1 (churned) either way.
        let sign = if fitted.labels().pos.class == 1 { 1.0 } else { -1.0 };
        Ok(FittedChurn {
            feature_names: train.feature_names.clone(),
            scaling,
            coefficients: fitted.params().iter().map(|w| sign * w).collect(),
            intercept: sign * fitted.intercept(),
        })
    }
}

/// Per-feature standardisation learnt on the training rows. Missing values
/// (`NaN`) are imputed with the training mean, i.e. 0 after scaling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    /// Training mean of each feature (ignoring missing values; 0 if all missing).
    pub mean: Vec<f64>,
    /// Training standard deviation (1 where it is 0 or undefined).
    pub std: Vec<f64>,
}

impl Scaling {
    pub(crate) fn fit(x: &Array2<f64>) -> Scaling {
        let mut mean = Vec::with_capacity(x.ncols());
        let mut std = Vec::with_capacity(x.ncols());
        for col in x.axis_iter(Axis(1)) {
            let vals: Vec<f64> = col.iter().copied().filter(|v| v.is_finite()).collect();
            let n = vals.len() as f64;
            let m = if vals.is_empty() { 0.0 } else { vals.iter().sum::<f64>() / n };
            let var = if vals.len() < 2 {
                0.0
            } else {
                vals.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (n - 1.0)
            };
            mean.push(m);
            std.push(if var > 0.0 { var.sqrt() } else { 1.0 });
        }
        Scaling { mean, std }
    }

    /// Standardises `x`, mapping missing or non-finite values to 0.
    pub fn transform(&self, x: &Array2<f64>) -> Array2<f64> {
        let mut out = x.clone();
        for (j, mut col) in out.axis_iter_mut(Axis(1)).enumerate() {
            col.mapv_inplace(|v| if v.is_finite() { (v - self.mean[j]) / self.std[j] } else { 0.0 });
        }
        out
    }
}

/// A fitted churn model: plain data, serialised inside a [`crate::ModelArtifact`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedChurn {
    /// Feature columns, in the order the coefficients use.
    pub feature_names: Vec<String>,
    /// Standardisation applied before the linear predictor.
    pub scaling: Scaling,
    /// One coefficient per feature, on the standardised scale.
    pub coefficients: Vec<f64>,
    /// Intercept of the linear predictor.
    pub intercept: f64,
}

impl FittedChurn {
    /// Each feature's contribution to each row's log-odds: coefficient
    /// times the standardised value (a missing value, imputed with the
    /// training mean, contributes 0). Exact for this model: a row's
    /// contributions plus the intercept are its log-odds.
    pub fn contributions(&self, x: &Array2<f64>) -> Array2<f64> {
        let mut z = self.scaling.transform(x);
        for (j, mut col) in z.axis_iter_mut(Axis(1)).enumerate() {
            col *= self.coefficients[j];
        }
        z
    }

    /// Probability of churn for each row of `x`, whose columns must be
    /// `self.feature_names` in that order.
    pub fn predict_proba(&self, x: &Array2<f64>) -> Vec<f64> {
        let z = self.scaling.transform(x).dot(&Array1::from(self.coefficients.clone()));
        z.iter().map(|v| 1.0 / (1.0 + (-(v + self.intercept)).exp())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> TrainingSet {
        // Churn when x0 is high; x1 is noise with a missing value.
        let n = 200;
        let mut x = Array2::zeros((n, 2));
        let mut y = Vec::new();
        for i in 0..n {
            let v = (i as f64) / n as f64;
            x[[i, 0]] = v * 10.0;
            x[[i, 1]] = if i == 3 { f64::NAN } else { ((i * 7) % 13) as f64 };
            y.push(v + 0.2 * (((i * 31) % 17) as f64 / 17.0 - 0.5) > 0.5);
        }
        TrainingSet {
            ids: (0..n).map(|i| i.to_string()).collect(),
            feature_names: vec!["x0".into(), "x1".into()],
            x,
            y,
        }
    }

    #[test]
    fn contributions_add_up_to_the_log_odds_and_rank_the_reasons() {
        let set = toy();
        let model = ChurnModel::params().check().unwrap().fit(&set).unwrap();
        let p = model.predict_proba(&set.x);
        let c = model.contributions(&set.x);
        for (i, row) in c.rows().into_iter().enumerate() {
            let log_odds = (p[i] / (1.0 - p[i])).ln();
            assert!((row.sum() + model.intercept - log_odds).abs() < 1e-9, "row {i}");
        }
        // The row with x1 missing: x1 contributes nothing.
        assert_eq!(c[[3, 1]], 0.0);
        // High x0 raises churn: the riskiest row's first reason is x0.
        let reasons = crate::Classifier::Logistic(model).top_reasons(&set.x, 2);
        assert_eq!(reasons[199][0].0, 0);
        assert!(reasons.iter().flatten().all(|(_, v)| *v > 0.0));
        assert!(reasons.iter().all(|r| r.len() <= 2 && r.windows(2).all(|w| w[0].1 >= w[1].1)));
    }

    #[test]
    fn rejects_bad_params() {
        let err = ChurnModel::params().l2(-1.0).check().unwrap_err();
        assert!(matches!(err, ModelError::InvalidParam { name: "l2", .. }), "{err}");
        let err = ChurnModel::params().max_iterations(0).check().unwrap_err();
        assert!(matches!(err, ModelError::InvalidParam { name: "max_iterations", .. }));
    }

    #[test]
    fn learns_a_monotone_signal() {
        let train = toy();
        let fitted = ChurnModel::params().l2(0.01).fit(&train).unwrap();
        assert!(fitted.coefficients[0] > 1.0, "{:?}", fitted.coefficients);
        let p = fitted.predict_proba(&train.x);
        assert!(p.iter().all(|v| v.is_finite()));
        assert!(crate::metrics::roc_auc(&train.y, &p) > 0.95);
    }

    #[test]
    fn one_class_is_a_data_error() {
        let mut train = toy();
        train.y = vec![false; train.y.len()];
        assert!(matches!(ChurnModel::params().fit(&train), Err(ModelError::Data(_))));
    }
}
