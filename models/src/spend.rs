//! Supervised spend model: a Tweedie GLM with a log link on standardised
//! features, predicting a customer's spend over a horizon from their
//! features. Spend is zero for many customers and skewed for the rest; the
//! Tweedie family with power in (1, 2) (compound Poisson-Gamma) is the usual
//! model for such amounts. A second opinion beside BG/NBD + Gamma-Gamma,
//! which see only purchase counts, timing and amounts.
//!
//! Fitted by Newton's method on scikit-learn's objective for
//! `TweedieRegressor`: mean half deviance plus `l2 / 2 · |w|²` (intercept
//! not penalised). linfa-linear 0.8 has this GLM, but its L-BFGS line
//! search did not return on our data (see docs/models.md); the objective is
//! convex with a small Hessian (features x features), so Newton converges
//! in a few steps.

use ndarray::{Array1, Array2, Axis};
use serde::{Deserialize, Serialize};

use crate::ModelError;
use crate::churn::Scaling;

/// Hyperparameters of the spend model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpendParams {
    /// Tweedie power, in (1, 2) for amounts with exact zeros; default 1.5.
    pub power: f64,
    /// L2 penalty on the standardised coefficients (scikit-learn's `alpha`:
    /// the objective is the mean half deviance plus `l2 / 2 · |w|²`); >= 0,
    /// default 0.01.
    pub l2: f64,
    /// Newton iteration cap; > 0, default 100.
    pub max_iterations: usize,
}

impl Default for SpendParams {
    fn default() -> Self {
        SpendParams { power: 1.5, l2: 0.01, max_iterations: 100 }
    }
}

impl SpendParams {
    /// Validates every parameter.
    pub fn check(&self) -> Result<(), ModelError> {
        if !(self.power > 1.0 && self.power < 2.0) {
            return Err(ModelError::InvalidParam {
                name: "power",
                value: self.power.to_string(),
                reason: "must be between 1 and 2 (compound Poisson-Gamma)",
            });
        }
        if !(self.l2.is_finite() && self.l2 >= 0.0) {
            return Err(ModelError::InvalidParam {
                name: "l2",
                value: self.l2.to_string(),
                reason: "must be a finite number >= 0",
            });
        }
        if self.max_iterations == 0 {
            return Err(ModelError::InvalidParam {
                name: "max_iterations",
                value: "0".into(),
                reason: "must be > 0",
            });
        }
        Ok(())
    }

    /// Fits on rows `x` (columns `feature_names`, `NaN` = missing) and
    /// amounts `y` (>= 0; some must be positive).
    pub fn fit(
        &self,
        feature_names: &[String],
        x: &Array2<f64>,
        y: &[f64],
    ) -> Result<FittedSpend, ModelError> {
        self.check()?;
        if x.nrows() != y.len() || x.ncols() != feature_names.len() {
            return Err(ModelError::Data(format!(
                "internal: spend matrix {}x{} with {} amounts and {} names",
                x.nrows(),
                x.ncols(),
                y.len(),
                feature_names.len()
            )));
        }
        if let Some(row) = y.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(ModelError::Data(format!(
                "spend of row {row} is {}; expected an amount >= 0",
                y[row]
            )));
        }
        if !y.iter().any(|&v| v > 0.0) {
            return Err(ModelError::Data(format!("{} rows and none spent anything", y.len())));
        }
        let scaling = Scaling::fit(x);
        let z = standardise(&scaling, x);
        let (coefficients, intercept, iterations, converged) =
            newton(&z, y, self.power, self.l2, self.max_iterations);
        let eta = z.dot(&Array1::from(coefficients.clone())) + intercept;
        let eta_range =
            eta.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        Ok(FittedSpend {
            feature_names: feature_names.to_vec(),
            scaling,
            coefficients,
            intercept,
            params: self.clone(),
            iterations,
            converged,
            eta_range,
        })
    }
}

/// A fitted spend model: plain data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedSpend {
    /// Feature columns, in coefficient order.
    pub feature_names: Vec<String>,
    pub scaling: Scaling,
    /// Coefficients on the standardised scale: each multiplies the expected
    /// spend by `exp(coefficient)` per standard deviation.
    pub coefficients: Vec<f64>,
    pub intercept: f64,
    pub params: SpendParams,
    /// Newton iterations used, and whether the gradient vanished (max
    /// |gradient| < 1e-8) before the cap.
    pub iterations: usize,
    pub converged: bool,
    /// The linear predictor's range on the training rows: predictions are
    /// clamped to it, so a customer far outside the training data (the log
    /// link turns a large value into an enormous amount) gets the largest
    /// spend seen in training, not an extrapolation.
    pub eta_range: (f64, f64),
}

impl FittedSpend {
    /// Expected spend of each row of `x` (columns in `feature_names` order).
    pub fn predict(&self, x: &Array2<f64>) -> Vec<f64> {
        let z = standardise(&self.scaling, x).dot(&Array1::from(self.coefficients.clone()));
        let (lo, hi) = self.eta_range;
        z.iter().map(|v| (v + self.intercept).clamp(lo, hi).exp()).collect()
    }
}

/// Standard deviations beyond which a feature value is capped.
const CAP_SD: f64 = 5.0;

/// Standardised features capped at ±[`CAP_SD`]: with a log link one
/// extreme value (a spend trend of 400x) would otherwise dominate.
fn standardise(scaling: &Scaling, x: &Array2<f64>) -> Array2<f64> {
    scaling.transform(x).mapv(|v| v.clamp(-CAP_SD, CAP_SD))
}

/// Minimises (1/n) Σ [μ^(2−ρ)/(2−ρ) − y μ^(1−ρ)/(1−ρ)] + l2/2 |w|², μ =
/// exp(b + z·w) (the Tweedie mean half deviance up to a constant), by
/// Newton steps with step halving. Returns (w, b, iterations, converged).
fn newton(
    z: &Array2<f64>,
    y: &[f64],
    rho: f64,
    l2: f64,
    max_iterations: usize,
) -> (Vec<f64>, f64, usize, bool) {
    let (n, p) = z.dim();
    let nf = n as f64;
    // Parameters: [b, w_1 .. w_p].
    let mut theta = vec![0.0; p + 1];
    theta[0] = (y.iter().sum::<f64>() / nf).ln();
    let eta = |theta: &[f64]| -> Array1<f64> {
        z.dot(&ndarray::ArrayView1::from(&theta[1..])).mapv(|v| v + theta[0])
    };
    let objective = |theta: &[f64]| -> f64 {
        let e = eta(theta);
        let loss: f64 = e
            .iter()
            .zip(y)
            .map(|(&e, &y)| (e * (2.0 - rho)).exp() / (2.0 - rho) - y * (e * (1.0 - rho)).exp() / (1.0 - rho))
            .sum::<f64>()
            / nf;
        loss + l2 / 2.0 * theta[1..].iter().map(|w| w * w).sum::<f64>()
    };
    let mut value = objective(&theta);
    for iteration in 1..=max_iterations {
        let e = eta(&theta);
        // Per row: d loss / d eta and d² loss / d eta².
        let mut g = vec![0.0; p + 1];
        let mut h = Array2::<f64>::zeros((p + 1, p + 1));
        for (i, row) in z.axis_iter(Axis(0)).enumerate() {
            let mu = e[i].exp();
            let scale = mu.powf(1.0 - rho);
            let (gi, hi) = (scale * (mu - y[i]), scale * ((2.0 - rho) * mu - (1.0 - rho) * y[i]));
            g[0] += gi;
            h[[0, 0]] += hi;
            for j in 0..p {
                let v = row[j];
                g[j + 1] += gi * v;
                h[[0, j + 1]] += hi * v;
                let hv = hi * v;
                for k in j..p {
                    h[[j + 1, k + 1]] += hv * row[k];
                }
            }
        }
        for a in 0..=p {
            g[a] /= nf;
            for b in a..=p {
                h[[a, b]] /= nf;
                h[[b, a]] = h[[a, b]];
            }
        }
        for j in 1..=p {
            g[j] += l2 * theta[j];
            h[[j, j]] += l2;
        }
        if g.iter().all(|v| v.abs() < 1e-8) {
            return (theta[1..].to_vec(), theta[0], iteration - 1, true);
        }
        let Some(step) = solve_spd(h, &g) else {
            return (theta[1..].to_vec(), theta[0], iteration, false);
        };
        let mut t = 1.0;
        loop {
            let next: Vec<f64> = theta.iter().zip(&step).map(|(a, d)| a - t * d).collect();
            let v = objective(&next);
            if v <= value || t < 1e-10 {
                let done = (value - v).abs() <= 1e-15 * value.abs().max(1.0);
                theta = next;
                value = v;
                if done {
                    return (theta[1..].to_vec(), theta[0], iteration, true);
                }
                break;
            }
            t /= 2.0;
        }
    }
    (theta[1..].to_vec(), theta[0], max_iterations, false)
}

/// Solves `a x = b` for a symmetric positive definite `a` (Cholesky);
/// `None` if `a` is not positive definite.
fn solve_spd(mut a: Array2<f64>, b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    for j in 0..n {
        let mut d = a[[j, j]];
        for k in 0..j {
            d -= a[[j, k]] * a[[j, k]];
        }
        if d <= 0.0 || !d.is_finite() {
            return None;
        }
        let d = d.sqrt();
        a[[j, j]] = d;
        for i in j + 1..n {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= a[[i, k]] * a[[j, k]];
            }
            a[[i, j]] = s / d;
        }
    }
    let mut x = b.to_vec();
    for i in 0..n {
        for k in 0..i {
            x[i] -= a[[i, k]] * x[k];
        }
        x[i] /= a[[i, i]];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            x[i] -= a[[k, i]] * x[k];
        }
        x[i] /= a[[i, i]];
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Gamma, Poisson};

    #[test]
    fn recovers_a_log_linear_mean_from_compound_poisson_gamma_amounts() {
        // Purchases ~ Poisson(exp(0.2 + 0.5 x0)), each Gamma(2, 20): mean
        // spend exp(0.2 + 0.5 x0) * 40; x1 is noise with missing values.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let n = 4000;
        let mut x = Array2::zeros((n, 2));
        let mut y = Vec::new();
        for i in 0..n {
            let x0: f64 = rng.gen_range(-2.0..2.0);
            x[[i, 0]] = x0;
            x[[i, 1]] = if i % 10 == 0 { f64::NAN } else { rng.gen_range(-1.0..1.0) };
            let k = Poisson::new((0.2 + 0.5 * x0).exp()).unwrap().sample(&mut rng) as usize;
            let amount: f64 = (0..k).map(|_| Gamma::new(2.0, 20.0).unwrap().sample(&mut rng)).sum();
            y.push(amount);
        }
        let names = vec!["x0".to_string(), "x1".to_string()];
        let params = SpendParams { l2: 0.0, ..SpendParams::default() };
        let m = params.fit(&names, &x, &y).unwrap();
        // Slope per raw unit of x0: coefficient / standard deviation.
        let slope = m.coefficients[0] / m.scaling.std[0];
        assert!((slope - 0.5).abs() < 0.05, "slope {slope}");
        assert!(m.coefficients[1].abs() < 0.05, "noise {}", m.coefficients[1]);
        let p = m.predict(&ndarray::array![[0.0, 0.0], [1.0, f64::NAN]]);
        assert!((p[0] - 0.2f64.exp() * 40.0).abs() < 0.1 * p[0], "{p:?}");
        assert!((p[1] / p[0] - 0.5f64.exp()).abs() < 0.1, "one unit of x0 multiplies spend by e^0.5: {p:?}");
        // A row far outside the training data gets the largest training
        // prediction, not exp(0.5 * 1000).
        let far = m.predict(&ndarray::array![[1000.0, 0.0]])[0];
        let largest = m.predict(&x).into_iter().fold(0.0, f64::max);
        assert!((far - largest).abs() < 1e-9 * largest, "{far} vs {largest}");
        let metrics = crate::metrics::RegressionMetrics::compute(&y, &m.predict(&x));
        assert!(metrics.gini > 0.3 && metrics.r2 > 0.0, "{metrics:?}");
    }

    #[test]
    fn refuses_bad_params_and_amounts() {
        let names = vec!["x".to_string()];
        let x = ndarray::array![[1.0], [2.0]];
        let err =
            SpendParams { power: 2.5, ..SpendParams::default() }.fit(&names, &x, &[1.0, 0.0]).unwrap_err();
        assert!(err.to_string().contains("`power`"), "{err}");
        let err = SpendParams::default().fit(&names, &x, &[1.0, -3.0]).unwrap_err();
        assert!(err.to_string().contains("row 1 is -3"), "{err}");
        let err = SpendParams::default().fit(&names, &x, &[0.0, 0.0]).unwrap_err();
        assert!(err.to_string().contains("none spent anything"), "{err}");
    }
}
