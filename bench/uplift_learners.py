"""Which uplift learner ranks generated customers best? (docs/models.md, "Which learner")

Usage: python3 bench/uplift_learners.py WORLD DATASET
  WORLD    a directory written by `engage generate` (its truth/contacts holds
           each contact's true response probability with and without it)
  DATASET  dataset.parquet written by `engage dataset --task response`

Backtest: train on every cutoff but the last two, rank the validation
contacts of customers in the stages a campaign would target, and report
the mean *true* uplift (p_treatment - p_control from the generator) of the
top and bottom 20 % by predicted uplift, and the rank correlation with the
truth. `fit-on-truth` regresses the true uplift itself on the features:
the most any learner can get from these features. Needs pandas, pyarrow,
scikit-learn, scipy.
"""
import sys

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler

TARGETED = ["active", "at_risk", "new", "reactivated"]
NOT_FEATURES = ["customer_id", "as_of", "campaign_id", "contact_group", "contact_ts", "offer",
                "treatment", "responded", "funnel_depth", "converted"]

world, dataset = sys.argv[1], sys.argv[2]
d = pd.read_parquet(dataset)
truth = pd.read_parquet(f"{world}/truth/contacts").groupby(["campaign_id", "customer_id"]).mean().reset_index()
d = d.merge(truth, on=["campaign_id", "customer_id"], how="left")
tau = (d.p_response_treatment - d.p_response_control).to_numpy()
X = pd.get_dummies(d.drop(columns=NOT_FEATURES + ["p_response_control", "p_response_treatment"]),
                   columns=["preferred_channel", "lifecycle_stage"], dtype=float).astype(float).fillna(-1)
cutoffs = sorted(d.as_of.unique())
train = (d.as_of < cutoffs[-2]).to_numpy()
valid = ~train & d.lifecycle_stage.isin(TARGETED).to_numpy()
X = StandardScaler().fit(X[train]).transform(X)
T = (d.treatment != "control").to_numpy().astype(int)
Y = d.converted.to_numpy().astype(int)
e = T[train].mean()
print(f"{len(d)} contact rows; train {train.sum()} ({(T[train] == 0).sum()} control), "
      f"validation {valid.sum()} in stages {TARGETED}; response rate {Y.mean():.3f}")


def report(name, score):
    s, t = score[valid], tau[valid]
    k = len(s) // 5
    order = np.argsort(-s)
    print(f"| {name} | {t[order[:k]].mean():.4f} | {t[order[-k:]].mean():.4f} | {t.mean():.4f} "
          f"| {spearmanr(s, t).correlation:.2f} |")


def logistic():
    return LogisticRegression(C=1.0, max_iter=3000)


def gbm():
    return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.05, max_depth=3)


def regressor(leaf):
    return HistGradientBoostingRegressor(max_iter=100, learning_rate=0.05, max_depth=3, min_samples_leaf=leaf)


def two_model(make):
    m1 = make().fit(X[train & (T == 1)], Y[train & (T == 1)])
    m0 = make().fit(X[train & (T == 0)], Y[train & (T == 0)])
    return m1.predict_proba(X)[:, 1], m0.predict_proba(X)[:, 1]


print("| learner | top 20 % | bottom 20 % | all | Spearman |\n|---|---|---|---|---|")
report("oracle (the truth)", tau)
report("fit-on-truth (feature ceiling)",
       HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_depth=4)
       .fit(X[train], tau[train]).predict(X))
report("recency (days since last purchase)", d.recency_days.to_numpy(float))
p1, p0 = two_model(logistic)
report("two-model, logistic", p1 - p0)
g1, g0 = two_model(gbm)
report("two-model, gbm", g1 - g0)
inter = LogisticRegression(C=0.1, max_iter=3000).fit(np.hstack([X, T[:, None], X * T[:, None]])[train], Y[train])
ones, zeros = np.ones((len(X), 1)), np.zeros((len(X), 1))
report("S-learner, logistic with treatment interactions",
       inter.predict_proba(np.hstack([X, ones, X]))[:, 1] - inter.predict_proba(np.hstack([X, zeros, 0 * X]))[:, 1])
z = Y * (T - e) / (e * (1 - e))
report("transformed outcome, ridge", Ridge(alpha=100).fit(X[train], z[train]).predict(X))
report("transformed outcome, gbm", regressor(200).fit(X[train], z[train]).predict(X))
d1, d0 = Y - g0, g1 - Y
t1 = regressor(100).fit(X[train & (T == 1)], d1[train & (T == 1)]).predict(X)
t0 = regressor(100).fit(X[train & (T == 0)], d0[train & (T == 0)]).predict(X)
report("X-learner, gbm", e * t0 + (1 - e) * t1)
