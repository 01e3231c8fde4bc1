//! Uplift: how much contacting a customer (with each offer) changes the
//! chance that they respond, learnt from treatment/control contact history.
//!
//! The two-model approach, generalised to several treatments: one
//! classifier on the control rows and one on the rows of each treatment
//! arm; a customer's uplift for arm k is P(respond | x, k) − P(respond | x,
//! control). Evaluated with the Qini curve and coefficient and the observed
//! uplift in the top k % (see docs/models.md). Memory is the feature matrix
//! plus one copy of each arm's rows while its model fits: linear in the
//! rows, with no pairwise structures.

use ndarray::Array2;
use serde::{Deserialize, Serialize};

use crate::artifact::{load_json, null_as_nan, save_json};
use crate::metrics::by_score_descending;
use crate::registry::{ModelMeta, REGISTRY_FORMAT_VERSION};
use crate::train::{TrainConfig, TrainOptions, model_version, split_rows, with_last_cutoff};
use crate::{ARTIFACT_FORMAT_VERSION, Classifier, ClassifierConfig, ModelError, TrainingSet, TrainingWindow};

/// The arm name of control rows unless told otherwise.
pub const CONTROL: &str = "control";
/// Most treatment arms one uplift model takes.
pub const MAX_TREATMENTS: usize = 20;
/// Fewest treated rows a treatment needs for a model of its own: a
/// response model fitted on a few dozen rows extrapolates wildly, and its
/// spurious uplift would make it every customer's best offer.
pub const MIN_ARM_ROWS: usize = 200;
/// The shares of top-ranked rows at which uplift is reported.
pub const TOP_SHARES: [f64; 4] = [0.1, 0.2, 0.3, 0.5];

/// Labelled rows, each with the arm it received.
#[derive(Debug, Clone)]
pub struct UpliftSet {
    /// Features, ids and the response label (`y`).
    pub set: TrainingSet,
    /// Per row: 0 = control, k = `treatments[k - 1]`.
    pub arm: Vec<usize>,
    /// The treatment arms, sorted.
    pub treatments: Vec<String>,
    /// Per row: for a control row held out from one treatment (a
    /// campaign's control group for its offer), that arm; `None` for a
    /// control shared by every arm (an A/B/n test) and for treated rows.
    /// Evaluation compares each arm's treated rows only with its own
    /// controls and the shared ones.
    pub control_arm: Vec<Option<usize>>,
}

impl UpliftSet {
    /// Names each row's arm from `arms` (one per row); rows whose arm is
    /// `control` are the control group, every other distinct value is a
    /// treatment. Errors when there is no control or no treatment row, or
    /// more than [`MAX_TREATMENTS`] treatments.
    pub fn new(set: TrainingSet, arms: &[String], control: &str) -> Result<UpliftSet, ModelError> {
        set.check()?;
        if arms.len() != set.y.len() {
            return Err(ModelError::Data(format!(
                "internal: {} treatment values for {} rows",
                arms.len(),
                set.y.len()
            )));
        }
        let mut treatments: Vec<String> = arms.iter().filter(|a| *a != control).cloned().collect();
        treatments.sort();
        treatments.dedup();
        if treatments.is_empty() {
            return Err(ModelError::Data(format!(
                "every row is in the control group `{control}`: uplift needs treated rows"
            )));
        }
        if treatments.len() > MAX_TREATMENTS {
            return Err(ModelError::Data(format!(
                "{} treatment arms (at most {MAX_TREATMENTS}): {} ...",
                treatments.len(),
                treatments[..5].join(", ")
            )));
        }
        let arm: Vec<usize> = arms
            .iter()
            .map(|a| if a == control { 0 } else { treatments.binary_search(a).expect("listed") + 1 })
            .collect();
        if !arm.contains(&0) {
            return Err(ModelError::Data(format!(
                "no row is in the control group `{control}` (arms: {}): uplift needs a control group",
                treatments.join(", ")
            )));
        }
        let control_arm = vec![None; arm.len()];
        Ok(UpliftSet { set, arm, treatments, control_arm })
    }

    /// Pairs each control row with the treatment it was held out from:
    /// `held_out_from[i]` names it (e.g. the campaign's offer). Names that
    /// are no treatment arm leave the row shared. Errors on a length mismatch.
    pub fn with_control_arms(mut self, held_out_from: &[Option<String>]) -> Result<UpliftSet, ModelError> {
        if held_out_from.len() != self.arm.len() {
            return Err(ModelError::Data(format!(
                "internal: {} control arms for {} rows",
                held_out_from.len(),
                self.arm.len()
            )));
        }
        for (i, name) in held_out_from.iter().enumerate() {
            if self.arm[i] == 0 {
                self.control_arm[i] =
                    name.as_ref().and_then(|n| self.treatments.binary_search(n).ok()).map(|k| k + 1);
            }
        }
        Ok(self)
    }

    /// Leaves out the treatments with fewer than `min_rows` treated rows,
    /// with their rows and the control rows held out from them. Returns the
    /// smaller set, the kept rows' indices and what was left out.
    pub fn without_small_arms(&self, min_rows: usize) -> (UpliftSet, Vec<usize>, Vec<DroppedArm>) {
        let mut treated = vec![0usize; self.treatments.len() + 1];
        self.arm.iter().for_each(|&a| treated[a] += 1);
        let small: Vec<bool> = (0..=self.treatments.len()).map(|k| k > 0 && treated[k] < min_rows).collect();
        let dropped = (1..=self.treatments.len())
            .filter(|&k| small[k])
            .map(|k| DroppedArm { treatment: self.arm_name(k).to_string(), treated_rows: treated[k] })
            .collect();
        let kept: Vec<usize> = (0..self.arm.len())
            .filter(|&i| !small[self.arm[i]] && !self.control_arm[i].is_some_and(|k| small[k]))
            .collect();
        // Old arm index -> new one (control stays 0).
        let mut remap = vec![0usize; self.treatments.len() + 1];
        let mut treatments = Vec::new();
        for k in 1..=self.treatments.len() {
            if !small[k] {
                treatments.push(self.treatments[k - 1].clone());
                remap[k] = treatments.len();
            }
        }
        let set = UpliftSet {
            set: self.set.select(&kept),
            arm: kept.iter().map(|&i| remap[self.arm[i]]).collect(),
            treatments,
            control_arm: kept.iter().map(|&i| self.control_arm[i].map(|k| remap[k])).collect(),
        };
        (set, kept, dropped)
    }

    /// The rows at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> UpliftSet {
        UpliftSet {
            set: self.set.select(idx),
            arm: idx.iter().map(|&i| self.arm[i]).collect(),
            treatments: self.treatments.clone(),
            control_arm: idx.iter().map(|&i| self.control_arm[i]).collect(),
        }
    }

    /// The name of arm `k` (0 = control).
    pub fn arm_name(&self, k: usize) -> &str {
        if k == 0 { CONTROL } else { &self.treatments[k - 1] }
    }

    /// SHA-256 over the training set and each row's arm.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.set.fingerprint().as_bytes());
        for (&a, c) in self.arm.iter().zip(&self.control_arm) {
            h.update(self.arm_name(a).as_bytes());
            h.update([0u8]);
            if let Some(k) = c {
                h.update(self.arm_name(*k).as_bytes());
            }
            h.update([0u8]);
        }
        format!("{:x}", h.finalize())
    }
}

/// One classifier for the control group and one per treatment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FittedUplift {
    /// Input columns, in order (the same for every arm's model).
    pub feature_names: Vec<String>,
    /// Response model of the control group.
    pub control: Classifier,
    /// Treatment names, sorted; `models[k]` is `treatments[k]`'s model.
    pub treatments: Vec<String>,
    pub models: Vec<Classifier>,
}

/// Response probabilities of every row under control and each treatment.
#[derive(Debug, Clone, PartialEq)]
pub struct UpliftScores {
    /// P(respond | x, control), one per row.
    pub control: Vec<f64>,
    /// P(respond | x, treatment k): rows x treatments.
    pub treated: Array2<f64>,
}

impl UpliftScores {
    /// Uplift of treatment `k` (0-based over the treatments) for `row`.
    pub fn uplift(&self, row: usize, k: usize) -> f64 {
        self.treated[[row, k]] - self.control[row]
    }

    /// The treatment with the largest uplift for `row`: (index, uplift).
    pub fn best(&self, row: usize) -> (usize, f64) {
        (0..self.treated.ncols())
            .map(|k| (k, self.uplift(row, k)))
            .fold((0, f64::NEG_INFINITY), |a, b| if b.1 > a.1 { b } else { a })
    }
}

impl FittedUplift {
    /// Fits the control model and each treatment's model on its arm's rows
    /// of `data`; every arm needs responders and non-responders.
    pub fn fit(data: &UpliftSet, config: &ClassifierConfig) -> Result<FittedUplift, ModelError> {
        config.check()?;
        let fit_arm = |k: usize| -> Result<Classifier, ModelError> {
            let rows: Vec<usize> = (0..data.arm.len()).filter(|&i| data.arm[i] == k).collect();
            let positives = rows.iter().filter(|&&i| data.set.y[i]).count();
            if positives == 0 || positives == rows.len() {
                return Err(ModelError::Data(format!(
                    "arm `{}` has {} training rows with {positives} responders: its model needs both outcomes",
                    data.arm_name(k),
                    rows.len()
                )));
            }
            config.fit(&data.set.select(&rows))
        };
        let control = fit_arm(0)?;
        let models = (1..=data.treatments.len()).map(fit_arm).collect::<Result<Vec<_>, _>>()?;
        Ok(FittedUplift {
            feature_names: data.set.feature_names.clone(),
            control,
            treatments: data.treatments.clone(),
            models,
        })
    }

    /// A warning per arm whose fit stopped before converging.
    pub fn convergence_warnings(&self) -> Vec<String> {
        std::iter::once(self.control.convergence_warning("the control arm"))
            .chain(
                self.treatments
                    .iter()
                    .zip(&self.models)
                    .map(|(t, m)| m.convergence_warning(&format!("arm `{t}`"))),
            )
            .flatten()
            .collect()
    }

    /// Every row's response probability under control and each treatment.
    pub fn predict(&self, x: &Array2<f64>) -> UpliftScores {
        let control = self.control.predict_proba(x);
        let mut treated = Array2::zeros((x.nrows(), self.models.len()));
        for (k, m) in self.models.iter().enumerate() {
            for (i, p) in m.predict_proba(x).into_iter().enumerate() {
                treated[[i, k]] = p;
            }
        }
        UpliftScores { control, treated }
    }

    /// Errors unless `names` are exactly the training features, in order.
    pub fn check_features(&self, model: &str, names: &[String]) -> Result<(), ModelError> {
        self.control.check_features(model, names)
    }
}

/// How well a treatment's predicted uplift ranks the validation rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmMetrics {
    pub treatment: String,
    /// Validation rows of this treatment and of the control group.
    pub treated_rows: usize,
    pub control_rows: usize,
    /// Response rates observed in each group.
    pub treated_rate: f64,
    pub control_rate: f64,
    /// `treated_rate − control_rate`: the average effect of this treatment.
    pub observed_uplift: f64,
    /// Mean predicted uplift over these rows (compare with `observed_uplift`).
    pub predicted_uplift: f64,
    /// Qini coefficient: the area between the Qini curve and random
    /// targeting over that of the best possible ranking (1 = perfect, 0 =
    /// no better than random, < 0 = worse). NaN (`null`) when undefined.
    #[serde(deserialize_with = "null_as_nan")]
    pub qini: f64,
    /// Observed uplift (treated − control response rate) among the top
    /// share of rows by predicted uplift, for each of [`TOP_SHARES`];
    /// `None` where the top holds no treated or no control row.
    pub uplift_at: Vec<(f64, Option<f64>)>,
    /// ROC AUC of this treatment's response model on its own rows (NaN
    /// when they hold one outcome).
    #[serde(deserialize_with = "null_as_nan")]
    pub response_auc: f64,
}

/// Validation metrics of an uplift model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpliftMetrics {
    /// Validation rows (every arm).
    pub rows: usize,
    /// Qini coefficient, averaged over the treatments (those where it is
    /// defined) weighted by their treated rows.
    #[serde(deserialize_with = "null_as_nan")]
    pub qini: f64,
    /// ROC AUC of the control model on the control rows.
    #[serde(deserialize_with = "null_as_nan")]
    pub control_response_auc: f64,
    /// Per validated treatment (those with validation rows).
    pub arms: Vec<ArmMetrics>,
    /// Treatments with a model but no validation row of their own or no
    /// control row to compare with (e.g. an offer no campaign used in the
    /// last cutoff's horizon).
    pub unvalidated: Vec<String>,
    /// Treatments left out for too few treated rows ([`MIN_ARM_ROWS`]).
    #[serde(default)]
    pub dropped: Vec<DroppedArm>,
}

/// A treatment left out of an uplift model, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedArm {
    pub treatment: String,
    /// Its treated rows, fewer than [`MIN_ARM_ROWS`].
    pub treated_rows: usize,
}

/// The charts of one treatment's validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmCurves {
    pub treatment: String,
    /// Qini curve: (share of rows targeted by predicted uplift, incremental
    /// responders per row of the whole set), 101 points.
    pub qini: Vec<[f64; 2]>,
    /// The same for the best possible ranking.
    pub perfect: Vec<[f64; 2]>,
    /// Ten equal-count bins by predicted uplift, highest first.
    pub deciles: Vec<UpliftBin>,
}

/// One bin of rows ranked by predicted uplift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpliftBin {
    pub treated_rows: usize,
    pub control_rows: usize,
    /// Mean predicted uplift.
    pub predicted: f64,
    /// Treated minus control response rate; `None` if a group is empty.
    pub observed: Option<f64>,
}

/// Incremental responders after each row of `order` (length n + 1, from 0):
/// Q(i) = R_t(i) − R_c(i) · N_t(i) / N_c(i), the treated responders minus
/// the control responders scaled to the treated count (Radcliffe's Qini).
fn qini_points(order: &[usize], y: &[bool], treated: &[bool]) -> Vec<f64> {
    let (mut nt, mut nc, mut rt, mut rc) = (0.0, 0.0, 0.0, 0.0);
    let mut q = Vec::with_capacity(order.len() + 1);
    q.push(0.0);
    for &i in order {
        let yi = y[i] as u8 as f64;
        if treated[i] {
            nt += 1.0;
            rt += yi;
        } else {
            nc += 1.0;
            rc += yi;
        }
        q.push(if nc > 0.0 { rt - rc * nt / nc } else { rt });
    }
    q
}

/// Area under a Qini curve over x in [0, 1] (trapezoids, step 1/n).
fn area(q: &[f64]) -> f64 {
    let n = (q.len() - 1).max(1) as f64;
    q.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum::<f64>() / n
}

/// The best possible ranking: treated responders first, control
/// responders last.
fn perfect_order(y: &[bool], treated: &[bool]) -> Vec<usize> {
    let key: Vec<f64> = (0..y.len()).map(|i| (y[i] as i8 * if treated[i] { 1 } else { -1 }) as f64).collect();
    by_score_descending(&key)
}

/// Qini coefficient of ranking rows by `score` (treated and control rows
/// of one treatment): (A − A_random) / (A_perfect − A_random), with A the
/// area under the Qini curve and A_random that of the straight line to
/// the same end point. NaN if the perfect ranking is no better than random.
pub fn qini_coefficient(y: &[bool], treated: &[bool], score: &[f64]) -> f64 {
    let model = qini_points(&by_score_descending(score), y, treated);
    let perfect = qini_points(&perfect_order(y, treated), y, treated);
    coefficient(&model, &perfect)
}

/// The Qini coefficient from the curve of a ranking and of the perfect one.
fn coefficient(model: &[f64], perfect: &[f64]) -> f64 {
    let random = model[model.len() - 1] / 2.0;
    let best = area(perfect) - random;
    if best <= 0.0 { f64::NAN } else { (area(model) - random) / best }
}

/// Treated minus control response rate among the top `share` of rows by
/// `score`; `None` when that top holds no treated or no control row.
pub fn uplift_at(y: &[bool], treated: &[bool], score: &[f64], share: f64) -> Option<f64> {
    uplift_in_top(&by_score_descending(score), y, treated, share)
}

/// [`uplift_at`] for rows already ranked (`order`, best first).
fn uplift_in_top(order: &[usize], y: &[bool], treated: &[bool], share: f64) -> Option<f64> {
    let top = ((share * order.len() as f64).ceil() as usize).min(order.len());
    group_uplift(&order[..top], y, treated)
}

/// Treated minus control response rate over `rows`.
fn group_uplift(rows: &[usize], y: &[bool], treated: &[bool]) -> Option<f64> {
    let (mut nt, mut nc, mut rt, mut rc) = (0usize, 0usize, 0usize, 0usize);
    for &i in rows {
        if treated[i] {
            nt += 1;
            rt += y[i] as usize;
        } else {
            nc += 1;
            rc += y[i] as usize;
        }
    }
    (nt > 0 && nc > 0).then(|| rt as f64 / nt as f64 - rc as f64 / nc as f64)
}

/// Samples a Qini curve at 101 evenly spaced shares, per row of the set.
fn sampled(q: &[f64]) -> Vec<[f64; 2]> {
    let n = q.len() - 1;
    (0..=100)
        .map(|k| {
            let i = (k * n + 50) / 100;
            [k as f64 / 100.0, q[i] / n.max(1) as f64]
        })
        .collect()
}

/// Metrics and charts of `model` on the validation rows `valid`.
pub fn evaluate(model: &FittedUplift, valid: &UpliftSet) -> (UpliftMetrics, Vec<ArmCurves>) {
    let scores = model.predict(&valid.set.x);
    let y = &valid.set.y;
    let all_control: Vec<usize> = (0..y.len()).filter(|&i| valid.arm[i] == 0).collect();
    let (mut arms, mut curves) = (Vec::new(), Vec::new());
    let mut unvalidated = Vec::new();
    for (k, name) in model.treatments.iter().enumerate() {
        let treated_rows: Vec<usize> = (0..y.len()).filter(|&i| valid.arm[i] == k + 1).collect();
        // This arm's own controls and the shared ones.
        let control_rows: Vec<usize> = all_control
            .iter()
            .copied()
            .filter(|&i| valid.control_arm[i].is_none_or(|c| c == k + 1))
            .collect();
        if treated_rows.is_empty() || control_rows.is_empty() {
            unvalidated.push(name.clone());
            continue;
        }
        let rows: Vec<usize> = treated_rows.iter().chain(&control_rows).copied().collect();
        let ys: Vec<bool> = rows.iter().map(|&i| y[i]).collect();
        let treated: Vec<bool> = rows.iter().map(|&i| valid.arm[i] != 0).collect();
        let score: Vec<f64> = rows.iter().map(|&i| scores.uplift(i, k)).collect();
        let rate = |rows: &[usize]| rows.iter().filter(|&&i| y[i]).count() as f64 / rows.len().max(1) as f64;
        let (treated_rate, control_rate) = (rate(&treated_rows), rate(&control_rows));
        let order = by_score_descending(&score);
        let model_curve = qini_points(&order, &ys, &treated);
        let perfect_curve = qini_points(&perfect_order(&ys, &treated), &ys, &treated);
        let deciles = (0..10)
            .map(|d| {
                let bin = &order[d * rows.len() / 10..(d + 1) * rows.len() / 10];
                UpliftBin {
                    treated_rows: bin.iter().filter(|&&i| treated[i]).count(),
                    control_rows: bin.iter().filter(|&&i| !treated[i]).count(),
                    predicted: bin.iter().map(|&i| score[i]).sum::<f64>() / bin.len().max(1) as f64,
                    observed: group_uplift(bin, &ys, &treated),
                }
            })
            .collect();
        let tp: Vec<f64> = treated_rows.iter().map(|&i| scores.treated[[i, k]]).collect();
        let ty: Vec<bool> = treated_rows.iter().map(|&i| y[i]).collect();
        arms.push(ArmMetrics {
            treatment: name.clone(),
            treated_rows: treated_rows.len(),
            control_rows: control_rows.len(),
            treated_rate,
            control_rate,
            observed_uplift: treated_rate - control_rate,
            predicted_uplift: score.iter().sum::<f64>() / score.len().max(1) as f64,
            qini: coefficient(&model_curve, &perfect_curve),
            uplift_at: TOP_SHARES.iter().map(|&s| (s, uplift_in_top(&order, &ys, &treated, s))).collect(),
            response_auc: crate::metrics::roc_auc(&ty, &tp),
        });
        curves.push(ArmCurves {
            treatment: name.clone(),
            qini: sampled(&model_curve),
            perfect: sampled(&perfect_curve),
            deciles,
        });
    }
    let defined = arms.iter().filter(|a| a.qini.is_finite());
    let (sum, weight) =
        defined.fold((0.0, 0.0), |(s, w), a| (s + a.qini * a.treated_rows as f64, w + a.treated_rows as f64));
    let qini = if weight > 0.0 { sum / weight } else { f64::NAN };
    let cy: Vec<bool> = all_control.iter().map(|&i| y[i]).collect();
    let cp: Vec<f64> = all_control.iter().map(|&i| scores.control[i]).collect();
    let metrics = UpliftMetrics {
        rows: y.len(),
        qini,
        control_response_auc: crate::metrics::roc_auc(&cy, &cp),
        arms,
        unvalidated,
        dropped: Vec::new(),
    };
    (metrics, curves)
}

/// A trained uplift model with what is needed to use and audit it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpliftArtifact {
    /// [`ARTIFACT_FORMAT_VERSION`] at write time.
    pub format_version: u32,
    /// `<name>-<as_of>-<12 hex digits>`, as for classifiers.
    pub model_version: String,
    pub name: String,
    /// `uplift`.
    pub task: String,
    pub engage_version: String,
    /// UTC time of training (RFC 3339).
    pub trained_at: String,
    pub window: TrainingWindow,
    /// The model family of every arm's classifier.
    pub params: ClassifierConfig,
    /// How the validation rows were chosen, in words.
    pub split: String,
    pub train_rows: usize,
    pub valid_rows: usize,
    /// SHA-256 over features, labels and arms.
    pub data_fingerprint: String,
    pub metrics: UpliftMetrics,
    pub model: FittedUplift,
}

impl UpliftArtifact {
    /// Writes the artifact atomically.
    pub fn save(&self, path: &std::path::Path) -> Result<(), ModelError> {
        save_json(self, path)
    }

    /// Reads an artifact and checks its format version.
    pub fn load(path: &std::path::Path) -> Result<UpliftArtifact, ModelError> {
        load_json(path)
    }

    /// What the registry lists and shows about this model.
    pub fn meta(&self) -> ModelMeta {
        ModelMeta {
            format_version: REGISTRY_FORMAT_VERSION,
            name: self.name.clone(),
            version: self.model_version.clone(),
            task: self.task.clone(),
            kind: format!("uplift:{}", self.params.kind()),
            engage_version: self.engage_version.clone(),
            trained_at: self.trained_at.clone(),
            as_of: self.window.as_of.clone(),
            horizon_days: self.window.horizon_days,
            split: self.split.clone(),
            features: self.model.feature_names.clone(),
            config: serde_json::to_value(&self.params).expect("config serialises"),
            data_fingerprint: self.data_fingerprint.clone(),
            metrics: serde_json::to_value(&self.metrics).expect("metrics serialise"),
        }
    }
}

/// Trains an uplift model: the default split of [`SplitConfig`] (a
/// backtest on the last cutoff when `cutoffs` hold several, else a
/// hold-out stratified by arm and label), one classifier per arm of
/// `config.model`, evaluated on the validation rows. k-fold is refused:
/// Qini on pooled out-of-fold predictions of differently fitted models is
/// not one ranking.
pub fn train_uplift(
    data: &UpliftSet,
    cutoffs: Option<&[String]>,
    config: &TrainConfig,
    opts: &TrainOptions,
) -> Result<(UpliftArtifact, Vec<ArmCurves>), ModelError> {
    config.check()?;
    data.set.check()?;
    if let Some(k) = config.split.folds {
        return Err(ModelError::InvalidParam {
            name: "folds",
            value: k.to_string(),
            reason: "uplift models validate on a backtest or hold-out, not k-fold",
        });
    }
    let (kept_set, kept, dropped) = data.without_small_arms(MIN_ARM_ROWS);
    if kept_set.treatments.is_empty() {
        return Err(ModelError::Data(format!(
            "no treatment has {MIN_ARM_ROWS} treated rows (the fewest a model of its own needs): {}",
            dropped
                .iter()
                .map(|d| format!("{} {}", d.treatment, d.treated_rows))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let kept_cutoffs: Option<Vec<String>> = cutoffs.map(|c| kept.iter().map(|&i| c[i].clone()).collect());
    let (data, cutoffs) = (&kept_set, kept_cutoffs.as_deref());
    let opts = with_last_cutoff(opts, cutoffs);
    let classes: Vec<u32> =
        (0..data.arm.len()).map(|i| (data.arm[i] * 2 + data.set.y[i] as usize) as u32).collect();
    let (train_idx, valid_idx, split) = split_rows(&classes, cutoffs, &config.split);
    let (train, valid) = (data.select(&train_idx), data.select(&valid_idx));
    if !valid.arm.contains(&0) || !valid.arm.iter().any(|&a| a > 0) {
        return Err(ModelError::Data(format!(
            "the validation rows need control and treated rows; they hold {} control and {} treated ({split})",
            valid.arm.iter().filter(|&&a| a == 0).count(),
            valid.arm.iter().filter(|&&a| a > 0).count()
        )));
    }
    let model = FittedUplift::fit(&train, &config.model)?;
    let (mut metrics, curves) = evaluate(&model, &valid);
    metrics.dropped = dropped;
    let fingerprint = data.fingerprint();
    let artifact = UpliftArtifact {
        format_version: ARTIFACT_FORMAT_VERSION,
        model_version: model_version(&opts.name, &opts.window.as_of, &fingerprint, &config.model),
        name: opts.name.clone(),
        task: "uplift".into(),
        engage_version: env!("CARGO_PKG_VERSION").into(),
        trained_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        window: opts.window.clone(),
        params: config.model.clone(),
        split,
        train_rows: train_idx.len(),
        valid_rows: valid_idx.len(),
        data_fingerprint: fingerprint,
        metrics,
        model,
    };
    Ok((artifact, curves))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SplitConfig;

    #[test]
    fn qini_points_by_hand() {
        // Rows in score order: T1, C0, T0, C1 (treated?, responded).
        let y = [true, false, false, true];
        let treated = [true, false, true, false];
        let q = qini_points(&[0, 1, 2, 3], &y, &treated);
        // After T1: 1; after C0: 1 - 0·1/1 = 1; after T0: 1 - 0·2/1 = 1;
        // after C1: 1 - 1·2/2 = 0.
        assert_eq!(q, vec![0.0, 1.0, 1.0, 1.0, 0.0]);
        // Trapezoids of width 1/4: (0.5 + 1 + 1 + 0.5) / 4.
        assert!((area(&q) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn qini_coefficient_is_one_for_the_perfect_ranking_and_negative_reversed() {
        let y = [true, false, false, true, true, false, false, false];
        let treated = [true, true, false, false, true, false, true, false];
        let perfect: Vec<f64> =
            (0..8).map(|i| (y[i] as i8 * if treated[i] { 1 } else { -1 }) as f64).collect();
        assert!((qini_coefficient(&y, &treated, &perfect) - 1.0).abs() < 1e-12);
        let reversed: Vec<f64> = perfect.iter().map(|s| -s).collect();
        assert!(qini_coefficient(&y, &treated, &reversed) < 0.0);
    }

    #[test]
    fn uplift_at_the_top_by_hand() {
        // Top half by score: rows 0..4 = T1, T0, C0, C0 -> 0.5 - 0 = 0.5.
        let y = [true, false, false, false, true, true];
        let treated = [true, true, false, false, true, false];
        let score = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        assert_eq!(uplift_at(&y, &treated, &score, 4.0 / 6.0), Some(0.5));
        // The top row alone has no control row.
        assert_eq!(uplift_at(&y, &treated, &score, 0.1), None);
        // Everything: 2/3 - 1/3.
        assert!((uplift_at(&y, &treated, &score, 1.0).unwrap() - 1.0 / 3.0).abs() < 1e-12);
    }

    /// Simulated contacts: response 0.2 organically; offer A adds 0.3 when
    /// x0 > 0 and nothing otherwise; offer B adds 0.1 everywhere.
    fn simulated(n: usize, seed: u64) -> UpliftSet {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Array2::zeros((n, 2));
        let (mut y, mut arms) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (x0, x1): (f64, f64) = (rng.gen_range(-1.0..1.0), rng.gen_range(-1.0..1.0));
            x[[i, 0]] = x0;
            x[[i, 1]] = x1;
            let effect = [if x0 > 0.0 { 0.3 } else { 0.0 }, 0.1];
            let arm = rng.gen_range(0..3usize);
            let p = 0.2 + if arm == 0 { 0.0 } else { effect[arm - 1] };
            y.push(rng.r#gen::<f64>() < p);
            arms.push(["control", "A", "B"][arm].to_string());
        }
        let set = TrainingSet {
            ids: (0..n).map(|i| i.to_string()).collect(),
            feature_names: vec!["x0".into(), "x1".into()],
            x,
            y,
        };
        UpliftSet::new(set, &arms, CONTROL).unwrap()
    }

    #[test]
    fn two_model_uplift_recovers_simulated_effects_per_offer() {
        let data = simulated(12_000, 3);
        assert_eq!(data.treatments, vec!["A".to_string(), "B".to_string()]);
        let config = TrainConfig::default();
        let opts = TrainOptions {
            name: "uplift".into(),
            task: "uplift".into(),
            window: TrainingWindow { as_of: "table".into(), horizon_days: 0 },
        };
        let (art, curves) = train_uplift(&data, None, &config, &opts).unwrap();
        // On fresh rows, offer A's ranking (its effect depends on x0) comes
        // close to the Qini of ranking by the true effect.
        let valid = simulated(6_000, 4);
        let (metrics, _) = evaluate(&art.model, &valid);
        let rows: Vec<usize> = (0..valid.arm.len()).filter(|&i| valid.arm[i] <= 1).collect();
        let ys: Vec<bool> = rows.iter().map(|&i| valid.set.y[i]).collect();
        let treated: Vec<bool> = rows.iter().map(|&i| valid.arm[i] == 1).collect();
        let truth: Vec<f64> =
            rows.iter().map(|&i| if valid.set.x[[i, 0]] > 0.0 { 0.3 } else { 0.0 }).collect();
        let oracle = qini_coefficient(&ys, &treated, &truth);
        let a = &metrics.arms[0];
        println!("Qini of offer A: model {:.3}, true effect {oracle:.3}", a.qini);
        assert!(oracle > 0.05 && a.qini > 0.8 * oracle, "model {} against the truth's {oracle}", a.qini);
        let top = a.uplift_at[1].1.unwrap();
        assert!(top > 0.2, "uplift of A in the top 20 %: {top}");
        let b = &art.metrics.arms[1];
        // Offer B's effect is flat: on average about 0.1.
        assert!((b.observed_uplift - 0.1).abs() < 0.04, "{b:?}");
        assert!((b.predicted_uplift - 0.1).abs() < 0.04, "{b:?}");
        assert_eq!(curves.len(), 2);
        assert_eq!(curves[0].qini.len(), 101);
        // Predicted uplift of A by x0: high where x0 > 0.
        let x = ndarray::array![[0.8, 0.0], [-0.8, 0.0]];
        let s = art.model.predict(&x);
        assert!(s.uplift(0, 0) > s.uplift(1, 0) + 0.15, "{s:?}");
        assert_eq!(s.best(0).0, 0, "offer A is best where x0 > 0");
        // The artifact reads back identically.
        let dir = tempfile_dir();
        let path = dir.join("model.json");
        art.save(&path).unwrap();
        assert_eq!(UpliftArtifact::load(&path).unwrap(), art);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn each_offer_is_judged_against_its_own_control_group() {
        // Offer A went to a population that buys at 50 % anyway (A's
        // control group), offer B to one that buys at 10 %. A adds 10
        // points, B 5. Pooling the two control groups would credit A with
        // 30 points and B with -15.
        let (mut rows, mut arms, mut held_out) = (Vec::new(), Vec::new(), Vec::new());
        let mut add = |population: f64, arm: &str, from: &str, rate: f64, n: usize| {
            for i in 0..n {
                rows.push((population, (i as f64) < rate * n as f64));
                arms.push(arm.to_string());
                held_out.push(Some(from.to_string()));
            }
        };
        add(0.0, "control", "A", 0.5, 1000);
        add(0.0, "A", "A", 0.6, 1000);
        add(1.0, "control", "B", 0.1, 1000);
        add(1.0, "B", "B", 0.15, 1000);
        let set = TrainingSet {
            ids: (0..rows.len()).map(|i| i.to_string()).collect(),
            feature_names: vec!["population".into()],
            x: Array2::from_shape_fn((rows.len(), 1), |(i, _)| rows[i].0),
            y: rows.iter().map(|r| r.1).collect(),
        };
        let data = UpliftSet::new(set, &arms, CONTROL).unwrap().with_control_arms(&held_out).unwrap();
        let model = FittedUplift::fit(&data, &ClassifierConfig::default()).unwrap();
        let (m, _) = evaluate(&model, &data);
        let (a, b) = (&m.arms[0], &m.arms[1]);
        assert_eq!((a.control_rows, b.control_rows), (1000, 1000));
        assert!((a.observed_uplift - 0.10).abs() < 1e-9 && (b.observed_uplift - 0.05).abs() < 1e-9, "{m:?}");
        // Without the pairing, both share the 2,000 control rows.
        let shared = UpliftSet::new(data.set.clone(), &arms, CONTROL).unwrap();
        let (m, _) = evaluate(&model, &shared);
        assert_eq!(m.arms[0].control_rows, 2000);
        assert!((m.arms[0].observed_uplift - 0.30).abs() < 1e-9);
    }

    #[test]
    fn treatments_with_too_few_rows_get_no_model() {
        let data = simulated(3000, 5);
        // Offer C: 150 of B's rows, and 40 control rows held out from it.
        let mut arms: Vec<String> = data.arm.iter().map(|&a| data.arm_name(a).to_string()).collect();
        let b_rows: Vec<usize> = (0..arms.len()).filter(|&i| arms[i] == "B").take(150).collect();
        b_rows.iter().for_each(|&i| arms[i] = "C".into());
        let held: Vec<Option<String>> =
            (0..arms.len()).map(|i| (arms[i] == CONTROL && i % 25 == 0).then(|| "C".to_string())).collect();
        let held_from_c = held.iter().flatten().count();
        let set = UpliftSet::new(data.set.clone(), &arms, CONTROL).unwrap().with_control_arms(&held).unwrap();
        let (kept, idx, dropped) = set.without_small_arms(MIN_ARM_ROWS);
        assert_eq!(dropped, vec![DroppedArm { treatment: "C".into(), treated_rows: 150 }]);
        assert_eq!(kept.treatments, ["A", "B"]);
        assert_eq!(idx.len(), 3000 - 150 - held_from_c);
        assert!(idx.iter().all(|&i| arms[i] != "C" && held[i].is_none()));
        // The arms are renumbered: B is now 2 (it was 2 of A, B, C too; A stays 1).
        assert!(idx.iter().zip(&kept.arm).all(|(&i, &a)| kept.arm_name(a) == arms[i]));
        let config =
            TrainConfig { split: SplitConfig { seed: 3, ..Default::default() }, ..Default::default() };
        let opts = TrainOptions {
            name: "uplift".into(),
            task: "uplift".into(),
            window: TrainingWindow { as_of: "table".into(), horizon_days: 0 },
        };
        let (art, _) = train_uplift(&set, None, &config, &opts).unwrap();
        assert_eq!(art.model.treatments, ["A", "B"]);
        assert_eq!(art.metrics.dropped.len(), 1);
        // Every treatment too small is an error that names them.
        let e = set.without_small_arms(10_000).0.treatments.len();
        assert_eq!(e, 0);
        let err = train_uplift(
            &UpliftSet::new(data.set.select(&(0..300).collect::<Vec<_>>()), &arms[..300], CONTROL).unwrap(),
            None,
            &config,
            &opts,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no treatment has 200 treated rows") && err.contains("A "), "{err}");
    }

    #[test]
    fn undefined_metrics_read_back_as_nan() {
        let m = UpliftMetrics {
            rows: 3,
            qini: f64::NAN,
            control_response_auc: f64::NAN,
            arms: Vec::new(),
            unvalidated: Vec::new(),
            dropped: Vec::new(),
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains("\"qini\":null"), "{json}");
        let back: UpliftMetrics = serde_json::from_str(&json).unwrap();
        assert!(back.qini.is_nan() && back.control_response_auc.is_nan());
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("engage-uplift-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn refuses_data_without_a_control_group_and_k_fold() {
        let set = TrainingSet {
            ids: vec!["a".into(), "b".into()],
            feature_names: vec!["x".into()],
            x: ndarray::array![[1.0], [2.0]],
            y: vec![true, false],
        };
        let err = UpliftSet::new(set.clone(), &["A".into(), "B".into()], CONTROL).unwrap_err();
        assert!(err.to_string().contains("no row is in the control group `control`"), "{err}");
        let err = UpliftSet::new(set, &["control".into(), "control".into()], CONTROL).unwrap_err();
        assert!(err.to_string().contains("uplift needs treated rows"), "{err}");
        let data = simulated(300, 1);
        let config = TrainConfig {
            split: SplitConfig { folds: Some(5), ..SplitConfig::default() },
            ..TrainConfig::default()
        };
        let opts = TrainOptions {
            name: "u".into(),
            task: "uplift".into(),
            window: TrainingWindow { as_of: "table".into(), horizon_days: 0 },
        };
        let err = train_uplift(&data, None, &config, &opts).unwrap_err();
        assert!(err.to_string().contains("folds"), "{err}");
    }
}
