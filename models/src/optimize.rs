//! Minimisers shared by the models: BFGS for smooth objectives with a
//! gradient (BG/NBD, logistic regression).

/// Minimises `f` (value and gradient) from `start` with BFGS and a
/// backtracking (Armijo) line search. Stops when every gradient component
/// is below `tolerance` or a step no longer changes the value (relative
/// 1e-15).
/// Returns the minimiser, the iterations and whether it stopped that way
/// within `max_iterations`.
pub(crate) fn bfgs(
    f: impl Fn(&[f64]) -> (f64, Vec<f64>),
    start: &[f64],
    max_iterations: usize,
    tolerance: f64,
) -> (Vec<f64>, usize, bool) {
    let n = start.len();
    let identity = |scale: f64| -> Vec<Vec<f64>> {
        (0..n).map(|i| (0..n).map(|j| if i == j { scale } else { 0.0 }).collect()).collect()
    };
    let mut x = start.to_vec();
    let (mut value, mut grad) = f(&x);
    if !value.is_finite() {
        return (x, 0, false);
    }
    let mut h = identity(1.0 / grad.iter().map(|g| g.abs()).fold(1.0, f64::max));
    for iteration in 1..=max_iterations {
        if grad.iter().all(|g| g.abs() < tolerance) {
            return (x, iteration - 1, true);
        }
        let mut d: Vec<f64> = (0..n).map(|i| -(0..n).map(|j| h[i][j] * grad[j]).sum::<f64>()).collect();
        let mut slope: f64 = d.iter().zip(&grad).map(|(a, b)| a * b).sum();
        if slope >= 0.0 {
            h = identity(1.0 / grad.iter().map(|g| g.abs()).fold(1.0, f64::max));
            d = grad.iter().map(|g| -g * h[0][0]).collect();
            slope = d.iter().zip(&grad).map(|(a, b)| a * b).sum();
        }
        let mut t = 1.0;
        let (next, next_value, next_grad) = loop {
            let candidate: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + t * b).collect();
            let (v, g) = f(&candidate);
            if v.is_finite() && v <= value + 1e-4 * t * slope {
                break (candidate, v, g);
            }
            t /= 2.0;
            if t < 1e-20 {
                return (x, iteration, false);
            }
        };
        let s: Vec<f64> = next.iter().zip(&x).map(|(a, b)| a - b).collect();
        let y: Vec<f64> = next_grad.iter().zip(&grad).map(|(a, b)| a - b).collect();
        let sy: f64 = s.iter().zip(&y).map(|(a, b)| a * b).sum();
        let stalled = (value - next_value).abs() <= 1e-15 * value.abs().max(1.0);
        (x, value, grad) = (next, next_value, next_grad);
        if stalled {
            return (x, iteration, true);
        }
        if sy > 1e-300 {
            // H' = (I - ρ s yᵀ) H (I - ρ y sᵀ) + ρ s sᵀ
            let rho = 1.0 / sy;
            let hy: Vec<f64> = (0..n).map(|i| (0..n).map(|j| h[i][j] * y[j]).sum()).collect();
            let yhy: f64 = y.iter().zip(&hy).map(|(a, b)| a * b).sum();
            for i in 0..n {
                for j in 0..n {
                    h[i][j] += -rho * (s[i] * hy[j] + hy[i] * s[j]) + (rho * rho * yhy + rho) * s[i] * s[j];
                }
            }
        }
    }
    (x, max_iterations, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bfgs_finds_the_rosenbrock_minimum() {
        let f = |p: &[f64]| {
            let (x, y) = (p[0], p[1]);
            let v = (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
            (v, vec![-2.0 * (1.0 - x) - 400.0 * x * (y - x * x), 200.0 * (y - x * x)])
        };
        let (best, _, converged) = bfgs(f, &[-1.2, 1.0], 1_000, 1e-6);
        assert!(converged);
        assert!((best[0] - 1.0).abs() < 1e-5 && (best[1] - 1.0).abs() < 1e-5, "{best:?}");
    }
}
