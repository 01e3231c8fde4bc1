//! Forgetting a person: `engage forget` removes them from everything engage
//! wrote and every later run leaves them out; nothing shows their values.

use std::path::Path;

use engage_pipeline::datafusion::arrow::array::AsArray;
use engage_pipeline::datafusion::arrow::compute::cast;
use engage_pipeline::datafusion::arrow::datatypes::DataType;
use engage_pipeline::datafusion::prelude::*;

use crate::common::{engage, sample, stderr, stdout, trained};

/// Rows of the Parquet file or directory at `path` matching `predicate`.
async fn count(path: &Path, predicate: &str) -> u64 {
    let ctx = SessionContext::new();
    ctx.register_parquet("t", path.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    crate::common::scalar_i64(&ctx, &format!("SELECT count(*) FROM t WHERE {predicate}")).await as u64
}

/// The person's identifiers as the identity map has them: (type, value).
async fn identifiers_of(map: &Path, key: &str) -> Vec<(String, String)> {
    let ctx = SessionContext::new();
    ctx.register_parquet("m", map.to_str().unwrap(), ParquetReadOptions::default()).await.unwrap();
    let sql =
        format!("SELECT identifier_type, identifier_value FROM m WHERE customer_key = '{key}' ORDER BY 1, 2");
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    let mut out = Vec::new();
    for b in batches {
        let text = |i: usize| cast(b.column(i), &DataType::Utf8).unwrap();
        let (t, v) = (text(0), text(1));
        let (t, v) = (t.as_string::<i32>(), v.as_string::<i32>());
        for i in 0..b.num_rows() {
            out.push((t.value(i).to_string(), v.value(i).to_string()));
        }
    }
    out
}

#[tokio::test]
async fn forgotten_person_leaves_every_output_and_every_later_run() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("state/erasure_list.json");
    let list = list.to_str().unwrap();
    let data = sample().to_str().unwrap();
    let out = |name: &str| tmp.path().join(name);
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--erasure-list", list]);
        let o = engage(&all);
        assert!(o.status.success(), "engage {args:?}: {}", stderr(&o));
        stdout(&o)
    };
    let customer = "C0000001";

    // Outputs written before the request: identity map, features, a snapshot.
    run(&["identity", "--data", data, "--out", out("identity").to_str().unwrap()]);
    run(&["features", "--data", data, "--as-of", "2026-07-01", "--out", out("features").to_str().unwrap()]);
    let models = trained().dir.parent().unwrap().parent().unwrap().to_str().unwrap();
    let scores = out("scores");
    run(&[
        "score",
        "--data",
        data,
        "--as-of",
        "2026-07-01",
        "--models",
        models,
        "--out",
        scores.to_str().unwrap(),
    ]);
    let map = out("identity").join("identity_map.parquet");
    let ids = identifiers_of(&map, customer).await;
    let email = ids.iter().find(|(t, _)| t == "email").expect("the customer has an email").1.clone();
    assert!(ids.len() >= 3, "a person known by several identifiers: {ids:?}");
    let features = out("features").join("customer_features.parquet");
    let snapshot = std::fs::read_to_string(scores.join("CURRENT")).unwrap();
    let snapshot = scores.join("snapshots").join(snapshot.trim());
    assert_eq!(count(&features, &format!("customer_id = '{customer}'")).await, 1);
    assert_eq!(count(&snapshot.join("scores.parquet"), &format!("customer_id = '{customer}'")).await, 1);
    let rows_before: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snapshot.join("manifest.json")).unwrap()).unwrap();
    // A contact list handed to a campaign tool, as CSV.
    let list_csv = scores.join("lists/W1.csv");
    std::fs::create_dir_all(list_csv.parent().unwrap()).unwrap();
    std::fs::write(
        &list_csv,
        format!("campaign_id,customer_id,group\nW1,{customer},treatment\nW1,C0000002,control\n"),
    )
    .unwrap();

    // Forget them by email, written the way a person types it.
    let typed = format!("  {} ", email.to_uppercase());
    let said = run(&[
        "forget",
        "--data",
        data,
        "--id-type",
        "email",
        "--id",
        &typed,
        "--scrub",
        out("identity").to_str().unwrap(),
        "--scrub",
        out("features").to_str().unwrap(),
        "--scrub",
        scores.to_str().unwrap(),
    ]);
    assert!(said.contains("found in the data"), "{said}");
    assert!(said.contains("rows removed"), "{said}");
    for (_, value) in &ids {
        assert!(!said.contains(value.as_str()), "forget printed an identifier: {said}");
    }
    let stored = std::fs::read_to_string(list).unwrap();
    for (_, value) in &ids {
        assert!(!stored.contains(value.as_str()), "the erasure list holds an identifier in clear");
    }

    // Gone from what was written...
    assert_eq!(count(&map, &format!("customer_key = '{customer}'")).await, 0);
    for (t, v) in &ids {
        let pred = format!("identifier_type = '{t}' AND identifier_value = '{v}'");
        assert_eq!(count(&map, &pred).await, 0, "{t} still in the identity map");
    }
    assert_eq!(count(&features, &format!("customer_id = '{customer}'")).await, 0);
    assert!(count(&features, "true").await > 1000, "everyone else is still there");
    assert_eq!(count(&snapshot.join("scores.parquet"), &format!("customer_id = '{customer}'")).await, 0);
    assert_eq!(count(&snapshot.join("features.parquet"), &format!("customer_id = '{customer}'")).await, 0);
    assert_eq!(
        std::fs::read_to_string(&list_csv).unwrap(),
        "campaign_id,customer_id,group\nW1,C0000002,control\n",
        "contact lists in CSV are scrubbed too"
    );
    let rows_after: serde_json::Value =
        serde_json::from_slice(&std::fs::read(snapshot.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(rows_after["rows"].as_u64().unwrap(), rows_before["rows"].as_u64().unwrap() - 1);

    // ...and from every later run.
    let later = out("later");
    run(&["features", "--data", data, "--as-of", "2026-07-01", "--out", later.to_str().unwrap()]);
    assert_eq!(
        count(&later.join("customer_features.parquet"), &format!("customer_id = '{customer}'")).await,
        0
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(later.join("run_report.json")).unwrap()).unwrap();
    assert_eq!(report["identity"]["erased_customers"], 1, "{}", report["identity"]);
    let resolved = &report["resolved"];
    assert!(
        resolved["erased_transactions"].as_u64().unwrap() + resolved["erased_interactions"].as_u64().unwrap()
            > 0
    );
    let again = out("identity-later");
    run(&["identity", "--data", data, "--out", again.to_str().unwrap()]);
    let later_map = again.join("identity_map.parquet");
    for (t, v) in &ids {
        let pred = format!("identifier_type = '{t}' AND identifier_value = '{v}'");
        assert_eq!(count(&later_map, &pred).await, 0, "{t} came back");
    }
    // Without the list (another installation), the person is in the data.
    let o = engage(&["identity", "--data", data, "--out", out("no-list").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        count(&out("no-list").join("identity_map.parquet"), &format!("customer_key = '{customer}'")).await,
        ids.len() as u64
    );
    // The source data was not touched.
    assert_eq!(count(&sample().join("customers"), &format!("customer_id = '{customer}'")).await, 1);
}

#[test]
fn forget_rejects_a_bad_identifier_without_echoing_it() {
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("erasure_list.json");
    let data = sample().to_str().unwrap();
    let o = engage(&[
        "forget",
        "--data",
        data,
        "--id-type",
        "email",
        "--id",
        "secret-value-no-at",
        "--erasure-list",
        list.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("not a valid email"), "{err}");
    assert!(!err.contains("secret-value-no-at"), "{err}");
    assert!(!list.exists(), "nothing written");
}
