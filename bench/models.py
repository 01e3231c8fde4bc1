"""The Python side of bench/models.sh.

  python bench/models.py export DATASET.parquet DIR   # encode, split, write DIR/train.csv, DIR/valid.csv
  python bench/models.py sklearn DIR                  # fit scikit-learn models on them
  python bench/models.py lifetimes CDNOW_SUMMARY.csv REPEATS

The split is engage's default for a stacked training set: train on every
cutoff before the last, validate on the last. Text columns are one-hot
encoded, booleans become 0/1, missing values stay missing (each model
imputes as it does in engage: the mean for linear models and linfa's trees,
native missing-value handling for the boosted trees). One JSON object per
model goes to stdout.
"""
import json
import sys
import time

import numpy as np
import pandas as pd


def export(dataset, out):
    df = pd.read_parquet(dataset)
    label = "churned" if "churned" in df else "responded"
    y = df.pop(label).astype(int).rename("y")
    as_of = df.pop("as_of")
    df = df.drop(columns=["customer_id"])
    text = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
    df = pd.get_dummies(df, columns=text, dtype=float).astype(float)
    last = as_of.max()
    for name, rows in [("train", as_of != last), ("valid", as_of == last)]:
        pd.concat([y[rows], df[rows]], axis=1).to_csv(f"{out}/{name}.csv", index=False, na_rep="")
    print(json.dumps({"rows_train": int((as_of != last).sum()), "rows_valid": int((as_of == last).sum()),
                      "features": df.shape[1], "positive_rate": float(y.mean()), "validation_cutoff": str(last)}))


def load(path):
    df = pd.read_csv(path)
    return df.drop(columns=["y"]).to_numpy(dtype=float), df["y"].to_numpy()


def sklearn(out, only=None):
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    import sklearn as sk

    (xt, yt), (xv, yv) = load(f"{out}/train.csv"), load(f"{out}/valid.csv")
    models = {
        "scikit-learn logistic (lbfgs, C=1)": make_pipeline(
            SimpleImputer(strategy="mean"), StandardScaler(), LogisticRegression(C=1.0, max_iter=1000)),
        # engage gbm's defaults: depth 6, 50 rows per leaf, lambda 1, 255 bins,
        # early stopping on 10 % after 20 rounds without improvement.
        "scikit-learn HistGradientBoosting": HistGradientBoostingClassifier(
            max_iter=500, learning_rate=0.1, max_depth=6, max_leaf_nodes=None, min_samples_leaf=50,
            l2_regularization=1.0, early_stopping=True, validation_fraction=0.1, n_iter_no_change=20,
            random_state=42),
        "scikit-learn random forest (100 trees, depth 8)": make_pipeline(
            SimpleImputer(strategy="mean"),
            RandomForestClassifier(n_estimators=100, max_depth=8, min_samples_leaf=50, max_features=0.3,
                                   max_samples=0.7, n_jobs=-1, random_state=42)),
    }
    for name, model in models.items():
        # engage's names for the model kinds: logistic, gbm, forest (tree
        # has no scikit-learn counterpart here).
        short = {"logistic": "logistic", "gbm": "HistGradientBoosting", "forest": "random forest"}
        if only and short.get(only, only) not in name:
            continue
        t = time.perf_counter()
        model.fit(xt, yt)
        fit = time.perf_counter() - t
        auc = roc_auc_score(yv, model.predict_proba(xv)[:, 1])
        print(json.dumps({"side": "scikit-learn " + sk.__version__, "model": name, "fit_seconds": fit, "auc": auc}),
              flush=True)


def lifetimes(summary, repeats):
    import lifetimes as lt
    df = pd.read_csv(summary)
    best, fitter = float("inf"), None
    for _ in range(repeats):
        fitter = lt.BetaGeoFitter()
        t = time.perf_counter()
        fitter.fit(df["x"], df["t_x"], df["T"])
        best = min(best, time.perf_counter() - t)
    p = fitter.params_
    print(json.dumps({"side": "lifetimes " + lt.__version__, "model": "BG/NBD", "fit_seconds": best,
                      "customers": len(df), "r": p["r"], "alpha": p["alpha"], "a": p["a"], "b": p["b"]}))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "export":
        export(sys.argv[2], sys.argv[3])
    elif cmd == "sklearn":
        sklearn(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
    elif cmd == "lifetimes":
        lifetimes(sys.argv[2], int(sys.argv[3]))
    else:
        sys.exit(__doc__)
