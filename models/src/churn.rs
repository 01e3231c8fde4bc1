//! Churn classifier: L2-regularised logistic regression on standardised
//! features with mean imputation of missing values and optional class
//! weights, trained through linfa's `Fit` interface by BFGS on the same
//! objective as scikit-learn's `LogisticRegression`.

use linfa::prelude::*;
use ndarray::{Array1, Array2, ArrayBase, Axis, Data, Ix2};
use serde::{Deserialize, Serialize};

use crate::gbm::sigmoid;
use crate::optimize::bfgs;
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
        ChurnValidParams { l2: 1.0, max_iterations: 200, gradient_tolerance: 1e-4, positive_weight: 1.0 }
    }
}

/// Unchecked hyperparameters; [`ChurnParams::check`] or `fit` validates them.
#[derive(Debug, Clone)]
pub struct ChurnParams(ChurnValidParams);

/// Hyperparameters known to be in range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ChurnValidParams {
    /// L2 penalty on standardised coefficients (scikit-learn's `1 / C`);
    /// >= 0, default 1.0.
    pub l2: f64,
    /// BFGS iteration cap; > 0, default 200.
    pub max_iterations: u64,
    /// Stop when every component of the objective's gradient (weighted
    /// mean log loss plus penalty over the total weight) falls below this
    /// positive number; default 1e-4 (scikit-learn's `tol` for lbfgs on
    /// the same objective).
    pub gradient_tolerance: f64,
    /// Class weight of the positive rows (their log loss counts this many
    /// times); 1e-6 to 1e6, default 1.0. Left out of the JSON at its
    /// default, so engage versions before class weights read the artifact.
    #[serde(skip_serializing_if = "is_one")]
    pub positive_weight: f64,
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
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
        if !(1e-6..=1e6).contains(&p.positive_weight) {
            return Err(ModelError::InvalidParam {
                name: "positive_weight",
                value: p.positive_weight.to_string(),
                reason: "must be between 1e-6 and 1e6",
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
    /// Positive rows weigh `positive_weight` in the loss (as linfa sample
    /// weights of the dataset handed to [`Fit::fit`]).
    pub fn fit(&self, train: &TrainingSet) -> Result<FittedChurn, ModelError> {
        train.check()?;
        let mut data = DatasetBase::new(train.x.view(), Array1::from(train.y.clone()))
            .with_feature_names(train.feature_names.clone());
        if self.positive_weight != 1.0 {
            let weight = self.positive_weight as f32;
            data = data.with_weights(train.y.iter().map(|&v| if v { weight } else { 1.0 }).collect());
        }
        Fit::fit(self, &data)
    }
}

/// linfa's training interface: records (owned or a view) with `NaN` for
/// missing values, boolean targets, optional sample weights (each row's
/// log loss is multiplied by its weight; linfa-logistic ignores weights,
/// which is one reason engage fits the model itself, see docs/models.md).
/// Stops when the gradient is below `gradient_tolerance` or after
/// `max_iterations`.
impl<D: Data<Elem = f64>> Fit<ArrayBase<D, Ix2>, Array1<bool>, ModelError> for ChurnValidParams {
    type Object = FittedChurn;

    fn fit(&self, data: &DatasetBase<ArrayBase<D, Ix2>, Array1<bool>>) -> Result<FittedChurn, ModelError> {
        ChurnParams::from(self.clone()).check()?;
        let (records, y) = (data.records(), data.targets());
        if records.nrows() != y.len() {
            return Err(ModelError::Data(format!("{} records but {} targets", records.nrows(), y.len())));
        }
        let positives = y.iter().filter(|&&v| v).count();
        if positives == 0 || positives == y.len() {
            return Err(ModelError::Data(format!(
                "{} rows with {positives} positives: both classes are needed",
                y.len()
            )));
        }
        let weights: Vec<f64> = match data.weights() {
            None => vec![1.0; y.len()],
            Some(w) if w.len() == y.len() && w.iter().all(|v| v.is_finite() && *v >= 0.0) => {
                w.iter().map(|&v| v as f64).collect()
            }
            Some(w) => {
                return Err(ModelError::Data(format!(
                    "{} sample weights for {} rows, or a weight that is negative or not finite",
                    w.len(),
                    y.len()
                )));
            }
        };
        if weights.iter().sum::<f64>() <= 0.0 {
            return Err(ModelError::Data("every sample weight is 0".into()));
        }
        let scaling = Scaling::fit(records);
        let x = scaling.transform(records);
        let y = y.to_vec();
        let loss = LogLoss::new(&x, &y, &weights, self.l2);
        let (params, iterations, converged) = bfgs(
            |p| loss.value_and_gradient(p),
            &vec![0.0; x.ncols() + 1],
            self.max_iterations as usize,
            self.gradient_tolerance,
        );
        let (coefficients, intercept) = params.split_at(x.ncols());
        let feature_names = match data.feature_names() {
            [] => (0..x.ncols()).map(|j| format!("x{j}")).collect(),
            names => names.to_vec(),
        };
        Ok(FittedChurn {
            feature_names,
            scaling,
            coefficients: coefficients.to_vec(),
            intercept: intercept[0],
            convergence: Some(Convergence { iterations, converged }),
        })
    }
}

/// The objective scikit-learn's `LogisticRegression` minimises: the
/// weighted mean log loss plus `l2 / 2 · |w|²` over the total weight
/// (intercept not penalised). Evaluated in blocks of rows spread over the
/// cores; the blocks' sums are added in block order, so the result does
/// not depend on the number of cores.
struct LogLoss<'a> {
    x: &'a [f64],
    features: usize,
    y: &'a [bool],
    weights: &'a [f64],
    l2: f64,
    total_weight: f64,
}

/// Rows per block of [`LogLoss`].
const LOSS_BLOCK: usize = 8192;

impl<'a> LogLoss<'a> {
    fn new(x: &'a Array2<f64>, y: &'a [bool], weights: &'a [f64], l2: f64) -> LogLoss<'a> {
        LogLoss {
            x: x.as_slice().expect("Scaling::transform returns a standard-layout matrix"),
            features: x.ncols(),
            y,
            weights,
            l2,
            total_weight: weights.iter().sum(),
        }
    }

    /// Objective and gradient at `params` = (coefficients, intercept).
    fn value_and_gradient(&self, params: &[f64]) -> (f64, Vec<f64>) {
        let blocks = self.y.len().div_ceil(LOSS_BLOCK);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(blocks).max(1);
        let mut sums: Vec<(f64, Vec<f64>)> = vec![(0.0, Vec::new()); blocks];
        let per_thread = blocks.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (t, slots) in sums.chunks_mut(per_thread).enumerate() {
                s.spawn(move || {
                    for (k, slot) in slots.iter_mut().enumerate() {
                        *slot = self.block(t * per_thread + k, params);
                    }
                });
            }
        });
        let p = self.features;
        let mut value = 0.0;
        let mut grad = vec![0.0; p + 1];
        for (v, g) in &sums {
            value += v;
            grad.iter_mut().zip(g).for_each(|(a, b)| *a += b);
        }
        let (w, _) = params.split_at(p);
        value += 0.5 * self.l2 * w.iter().map(|v| v * v).sum::<f64>();
        grad.iter_mut().zip(w).for_each(|(g, v)| *g += self.l2 * v);
        (value / self.total_weight, grad.into_iter().map(|g| g / self.total_weight).collect())
    }

    /// Weighted log loss and its gradient summed over block `b`'s rows.
    fn block(&self, b: usize, params: &[f64]) -> (f64, Vec<f64>) {
        let p = self.features;
        let (w, intercept) = (&params[..p], params[p]);
        let mut value = 0.0;
        let mut grad = vec![0.0; p + 1];
        let rows = b * LOSS_BLOCK..((b + 1) * LOSS_BLOCK).min(self.y.len());
        for i in rows {
            let row = &self.x[i * p..(i + 1) * p];
            let z = intercept + row.iter().zip(w).map(|(a, b)| a * b).sum::<f64>();
            let y = if self.y[i] { 1.0 } else { 0.0 };
            // log(1 + e^z) - y·z, without overflow for large |z|.
            let softplus = if z > 0.0 { z + (-z).exp().ln_1p() } else { z.exp().ln_1p() };
            let s = self.weights[i];
            value += s * (softplus - y * z);
            let g = s * (sigmoid(z) - y);
            grad.iter_mut().zip(row).for_each(|(a, v)| *a += g * v);
            grad[p] += g;
        }
        (value, grad)
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
    pub(crate) fn fit<D: Data<Elem = f64>>(x: &ArrayBase<D, Ix2>) -> Scaling {
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

    /// Standardises `x`, mapping missing or non-finite values to 0; the
    /// result is row-major whatever the layout of `x`.
    pub fn transform<D: Data<Elem = f64>>(&self, x: &ArrayBase<D, Ix2>) -> Array2<f64> {
        let mut out = x.as_standard_layout().into_owned();
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
    /// How the fit ended (`None` in models saved before engage recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub convergence: Option<Convergence>,
}

/// How an iterative fit ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// Iterations used.
    pub iterations: usize,
    /// Whether the gradient met the tolerance; `false` when the fit stopped
    /// at `max_iterations` with the best coefficients found so far.
    pub converged: bool,
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
        z.iter().map(|v| sigmoid(v + self.intercept)).collect()
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
    fn records_whether_the_fit_converged_and_warns_when_not() {
        let set = toy();
        let done = ChurnModel::params().fit(&set).unwrap();
        let c = done.convergence.unwrap();
        assert!(c.converged && c.iterations > 1 && c.iterations < 200, "{c:?}");
        assert_eq!(crate::Classifier::Logistic(done).convergence_warning("the churn model"), None);
        let cut = ChurnModel::params().max_iterations(2).fit(&set).unwrap();
        assert_eq!(cut.convergence, Some(Convergence { iterations: 2, converged: false }));
        let warning =
            crate::Classifier::Logistic(cut.clone()).convergence_warning("the churn model").unwrap();
        assert!(warning.contains("the churn model stopped after 2 iterations"), "{warning}");
        // Stored with the model; models saved before it was recorded still load.
        let json = serde_json::to_value(&cut).unwrap();
        assert_eq!(json["convergence"], serde_json::json!({ "iterations": 2, "converged": false }));
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("convergence");
        let loaded: FittedChurn = serde_json::from_value(old).unwrap();
        assert_eq!(loaded.convergence, None);
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

    /// One binary feature without a penalty: the maximum-likelihood model
    /// predicts each group's observed rate, and with positives weighted w
    /// each group's observed odds times w. Exact, so it pins the objective,
    /// the weights and the convergence tolerance.
    #[test]
    fn reproduces_observed_rates_and_weighted_odds() {
        // Group 0: 30 of 200 positive; group 1: 120 of 300; 40 copies make
        // 20,000 rows, three blocks of LOSS_BLOCK.
        let mut x = Vec::new();
        let mut y = Vec::new();
        for _ in 0..40 {
            for i in 0..500 {
                x.push(if i >= 200 { 1.0 } else { 0.0 });
                y.push(if i >= 200 { i - 200 < 120 } else { i < 30 });
            }
        }
        let n = y.len();
        let set = TrainingSet {
            ids: (0..n).map(|i| i.to_string()).collect(),
            feature_names: vec!["group".into()],
            x: Array2::from_shape_vec((n, 1), x).unwrap(),
            y,
        };
        let probe = Array2::from_shape_vec((2, 1), vec![0.0, 1.0]).unwrap();
        let odds = |p: f64| p / (1.0 - p);
        for weight in [1.0, 3.0] {
            let params = ChurnValidParams {
                l2: 0.0,
                gradient_tolerance: 1e-9,
                positive_weight: weight,
                ..Default::default()
            };
            let p = params.fit(&set).unwrap().predict_proba(&probe);
            for (k, rate) in [(0, 30.0 / 200.0), (1, 120.0 / 300.0)] {
                let expected = weight * odds(rate);
                assert!(
                    (odds(p[k]) - expected).abs() < 1e-6 * expected,
                    "weight {weight} group {k}: {} vs {expected}",
                    odds(p[k])
                );
            }
        }
        let err = ChurnValidParams { positive_weight: 0.0, ..Default::default() };
        let err = ChurnParams::from(err).check().unwrap_err();
        assert!(matches!(err, ModelError::InvalidParam { name: "positive_weight", .. }), "{err}");
    }

    /// The blocked, threaded objective equals a plain sum over the rows,
    /// and its gradient (penalty and weights included) matches central
    /// finite differences.
    #[test]
    fn loss_and_gradient_match_a_plain_sum_and_finite_differences() {
        let n = 3 * LOSS_BLOCK + 17;
        let x = Array2::from_shape_fn((n, 3), |(i, j)| (((i * (j + 3) * 7919) % 1000) as f64 / 250.0) - 2.0);
        let y: Vec<bool> = (0..n).map(|i| (i * 31) % 7 < 3).collect();
        let weights: Vec<f64> = y.iter().map(|&v| if v { 2.5 } else { 1.0 }).collect();
        let l2 = 0.7;
        let loss = LogLoss::new(&x, &y, &weights, l2);
        let params = [0.3, -0.2, 0.5, 0.1];
        let (value, grad) = loss.value_and_gradient(&params);
        let total: f64 = weights.iter().sum();
        let plain: f64 = (0..n)
            .map(|i| {
                let z = params[3] + (0..3).map(|j| params[j] * x[[i, j]]).sum::<f64>();
                let p = 1.0 / (1.0 + (-z).exp());
                -weights[i] * if y[i] { p.ln() } else { (1.0 - p).ln() }
            })
            .sum::<f64>()
            / total
            + 0.5 * l2 * (0.09 + 0.04 + 0.25) / total;
        assert!((value - plain).abs() < 1e-12, "{value} vs {plain}");
        for k in 0..4 {
            let h = 1e-6;
            let (mut up, mut down) = (params, params);
            up[k] += h;
            down[k] -= h;
            let numeric = (loss.value_and_gradient(&up).0 - loss.value_and_gradient(&down).0) / (2.0 * h);
            assert!((grad[k] - numeric).abs() < 1e-7, "parameter {k}: {} vs {numeric}", grad[k]);
        }
    }

    /// Through linfa's interface: a view trains like the owned matrix,
    /// unnamed columns get names, bad weights and shapes are errors.
    #[test]
    fn linfa_fit_checks_its_dataset() {
        let set = toy();
        let params = ChurnValidParams::default();
        let targets = Array1::from(set.y.clone());
        let unnamed = Fit::fit(&params, &DatasetBase::new(set.x.view(), targets.clone())).unwrap();
        assert_eq!(unnamed.feature_names, ["x0", "x1"]);
        assert_eq!(unnamed.coefficients, params.fit(&set).unwrap().coefficients);
        let short = DatasetBase::new(set.x.slice(ndarray::s![..10, ..]), targets.clone());
        assert!(matches!(Fit::fit(&params, &short), Err(ModelError::Data(_))));
        let n = set.y.len();
        for weights in [vec![1.0f32; n - 1], vec![-1.0; n], vec![0.0; n]] {
            let data = DatasetBase::new(set.x.view(), targets.clone()).with_weights(Array1::from(weights));
            let err = Fit::fit(&params, &data).unwrap_err();
            assert!(matches!(err, ModelError::Data(_)), "{err}");
        }
    }

    #[test]
    fn one_class_is_a_data_error() {
        let mut train = toy();
        train.y = vec![false; train.y.len()];
        assert!(matches!(ChurnModel::params().fit(&train), Err(ModelError::Data(_))));
    }
}
