//! Golden tests: every SQL view on the tiny hand-written dataset, compared
//! with expected rows committed under tests/golden/ (values checked by hand,
//! see docs/features.md). `UPDATE_GOLDEN=1` rewrites them; review the diff
//! like code.

use std::path::Path;

use engage_pipeline::Engine;
use engage_pipeline::Task;
use engage_pipeline::datafusion::arrow::util::pretty::pretty_format_batches;
use engage_pipeline::sql::{
    AUDIENCE_ELIGIBILITY, CAMPAIGN_RESULTS, CONTACT_HISTORY, FEATURES, HOLDOUT, LABELS, LIFECYCLE,
    PURCHASE_DAYS, PURCHASE_SUMMARY,
};

use crate::common::{date, sample, tiny, tiny_as_of};

fn check(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing: run with UPDATE_GOLDEN=1 and review it", path.display()));
    assert_eq!(actual, expected, "view `{name}` differs from {}", path.display());
}

/// `view` in `order` as a table; in a view with customer numbers (which
/// hold for one resolution only) each row shows the customer's key instead.
async fn dump(engine: &Engine, view: &str, order: &str) -> String {
    let first = engine.query(&format!("SELECT * FROM {view} LIMIT 1")).await.unwrap();
    let numbered = first.iter().any(|b| b.schema().column_with_name("customer_no").is_some());
    let sql = match numbered {
        true => format!(
            "SELECT v.* EXCLUDE (customer_no), k.customer_key FROM {view} v
             LEFT JOIN customer_keys k ON k.customer_no = v.customer_no ORDER BY {order}"
        ),
        false => format!("SELECT * FROM {view} ORDER BY {order}"),
    };
    let batches = engine.query(&sql).await.unwrap();
    format!("{}\n", pretty_format_batches(&batches).unwrap())
}

#[tokio::test]
async fn every_sql_view_matches_its_golden_file() {
    let mut engine = Engine::open(&tiny()).await.unwrap();
    engine.features(tiny_as_of()).await.unwrap();
    let days = engine.purchase_days(tiny_as_of()).await.unwrap();
    check(PURCHASE_DAYS.name, &dump(&engine, PURCHASE_DAYS.name, "customer_id, day").await);
    // Scoring's one-pass summaries equal the summaries training computes
    // from the purchase days.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("summaries.parquet");
    let rows = engine.write_purchase_summaries(tiny_as_of(), &file).await.unwrap();
    check(PURCHASE_SUMMARY.name, &dump(&engine, PURCHASE_SUMMARY.name, "customer_id").await);
    let end_day = (tiny_as_of() - date("1970-01-01")).num_days() - 1;
    let expected = engage_models::clv::summarize(days.iter().map(|(c, d, v)| (c, *d, *v)), end_day, 7.0);
    assert_eq!(rows as usize, expected.len());
    let mut expected: Vec<_> = expected.into_iter().collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    // Read in customer order, as scoring walks them beside the feature table.
    let mut summaries = engage_pipeline::PurchaseSummaries::open(&file, tiny_as_of(), 7.0).unwrap();
    assert_eq!(summaries.get("").unwrap(), None, "no one before the first customer");
    for (c, rfm) in &expected {
        let got = summaries.get(c).unwrap().unwrap_or_else(|| panic!("no summary of {c}"));
        assert_eq!((got.frequency, got.recency, got.age), (rfm.frequency, rfm.recency, rfm.age), "{c}");
        assert!((got.monetary - rfm.monetary).abs() < 1e-9, "{c}: {} vs {}", got.monetary, rfm.monetary);
    }
    let err = summaries.get(&expected[0].0).unwrap_err().to_string();
    assert!(err.contains("customer_id order"), "{err}");
    // The feature views hold the identity as of the cutoff; the labels
    // below resolve identities again from all rows, which replaces them.
    for file in FEATURES {
        check(file.name, &dump(&engine, file.name, "customer_id").await);
    }
    engine.churn_labels(tiny_as_of(), 90).await.unwrap();
    engine.labels(Task::Spend, tiny_as_of(), 90, 0).await.unwrap();
    engine.labels(Task::Response, tiny_as_of(), 90, 14).await.unwrap();
    // The identity map and attributed events from all rows, as the labels use them.
    check("identity_map", &dump(&engine, "identity_map", "identifier_type, identifier_value").await);
    check("transactions_resolved", &dump(&engine, "transactions_resolved", "transaction_id").await);
    check("interactions_resolved", &dump(&engine, "interactions_resolved", "ts, event_type").await);
    for file in LABELS {
        check(file.name, &dump(&engine, file.name, "1, 2").await);
        // Training on a dataset never takes a label column as a feature.
        let batches = engine.query(&format!("SELECT * FROM {}", file.name)).await.unwrap();
        for f in batches[0].schema().fields().iter().filter(|f| f.name() != "customer_id") {
            assert!(
                engage_pipeline::LABEL_COLUMNS.contains(&f.name().as_str()),
                "{}.{}",
                file.name,
                f.name()
            );
        }
    }
    // Campaign SQL reads the input tables only. W1's eligibility a year
    // back from the cutoff; results of every contact before 2025-08-01.
    engine.audience_eligibility(tiny_as_of(), "W1", 365, 365, 365).await.unwrap();
    check(AUDIENCE_ELIGIBILITY.name, &dump(&engine, AUDIENCE_ELIGIBILITY.name, "customer_id").await);
    engine.campaign_results(date("2025-08-01"), 30).await.unwrap();
    check(
        CAMPAIGN_RESULTS.name,
        &dump(&engine, CAMPAIGN_RESULTS.name, "campaign_id, \"group\", responded, depth").await,
    );
    let contacts = tempfile::tempdir().unwrap();
    let written = contacts.path().join("contacts.parquet");
    let rows = engine.write_contact_history(date("2025-08-01"), 365, 30, &written).await.unwrap();
    assert!(rows > 0 && written.exists(), "{rows} contact history rows written");
    check(CONTACT_HISTORY.name, &dump(&engine, CONTACT_HISTORY.name, "customer_id, campaign_id").await);
    engine.purchases_between(date("2025-01-01"), tiny_as_of()).await.unwrap();
    check(HOLDOUT.name, &dump(&engine, HOLDOUT.name, "customer_id").await);
    // Every registered SQL file has a golden file.
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for file in FEATURES.iter().chain(LABELS).chain(LIFECYCLE).chain([
        &PURCHASE_DAYS,
        &PURCHASE_SUMMARY,
        &AUDIENCE_ELIGIBILITY,
        &CAMPAIGN_RESULTS,
        &CONTACT_HISTORY,
    ]) {
        assert!(golden.join(format!("{}.txt", file.name)).exists(), "no golden file for {}", file.path);
    }
}

/// Lifecycle history at three cutoffs (stages by hand in docs/features.md:
/// at 2024-12-15 A is new, D a prospect, E dormant and B not yet a
/// customer; at 2025-08-01 A and B are at risk, E reactivated, C new to
/// the population as a prospect).
#[tokio::test]
async fn lifecycle_history_matches_its_golden_files() {
    let mut engine = Engine::open(&tiny()).await.unwrap();
    let cutoffs = [date("2024-12-15"), tiny_as_of(), date("2025-08-01")];
    let (history, transitions) = engine.lifecycle_history(&cutoffs).await.unwrap();
    let [h, t] = LIFECYCLE else { unreachable!() };
    check(h.name, &format!("{}\n", pretty_format_batches(&history).unwrap()));
    check(t.name, &format!("{}\n", pretty_format_batches(&transitions).unwrap()));
}

/// The registry (the `-- feature:` lines of the SQL) names every column of
/// the feature table with its real type, and docs/features.md carries it.
#[tokio::test]
async fn feature_registry_matches_the_table_and_the_docs() {
    let mut engine = Engine::open(&tiny()).await.unwrap();
    let batches = engine.features(tiny_as_of()).await.unwrap();
    let actual: Vec<(String, String)> = batches[0]
        .schema()
        .fields()
        .iter()
        .skip(1)
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    let features = engage_pipeline::registry::features();
    let registered: Vec<(String, String)> =
        features.iter().map(|f| (f.name.clone(), f.data_type.clone())).collect();
    assert_eq!(registered, actual, "the registry and the feature table differ");

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/features.md");
    let docs = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- registry:start -->\n", "<!-- registry:end -->");
    let (a, b) = (docs.find(start).expect("start marker") + start.len(), docs.find(end).expect("end marker"));
    let generated = engage_pipeline::registry::markdown(&features);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, format!("{}{generated}{}", &docs[..a], &docs[b..])).unwrap();
        return;
    }
    assert_eq!(&docs[a..b], generated, "docs/features.md is out of date: run with UPDATE_GOLDEN=1");
}

/// Every lifecycle stage, by moving the day limits over the tiny data (see
/// docs/features.md for the purchases: A first bought 121 days before the
/// cutoff and last 6.6; B last bought 0 days before, 395 days after the
/// purchase before; D never; E last 304 days before).
#[tokio::test]
async fn lifecycle_stages_follow_their_rules() {
    use engage_pipeline::datafusion::arrow::array::AsArray;
    use engage_pipeline::{DataSource, LifecycleRules};
    let d = LifecycleRules::default();
    let cases = [
        (d, ["active", "reactivated", "prospect", "dormant"]),
        (LifecycleRules { new_days: 130, ..d }, ["new", "reactivated", "prospect", "dormant"]),
        (
            LifecycleRules { at_risk_days: 310, dormant_days: 400, ..d },
            ["active", "active", "prospect", "at_risk"],
        ),
        (
            LifecycleRules { at_risk_days: 200, dormant_days: 300, ..d },
            ["active", "reactivated", "prospect", "churned"],
        ),
    ];
    for (rules, expected) in cases {
        let source = DataSource { lifecycle: rules, ..DataSource::new(&tiny()) };
        let mut engine = Engine::open_source(&source).await.unwrap();
        engine.features(tiny_as_of()).await.unwrap();
        let batches = engine
            .query("SELECT lifecycle_stage FROM lifecycle_features ORDER BY customer_id")
            .await
            .unwrap();
        let stages: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let c = b.column(0).as_string::<i32>();
                (0..b.num_rows()).map(|i| c.value(i).to_string()).collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(stages, expected, "{rules:?}");
    }
    let bad = DataSource { lifecycle: LifecycleRules { at_risk_days: 50, ..d }, ..DataSource::new(&tiny()) };
    assert!(Engine::open_source(&bad).await.is_err(), "at_risk below active is refused");
}

/// `sql/features/lifecycle.sql` finds the purchase before the last in one
/// pass (no self-join); on the generated sample its stages equal the
/// rules' plain reading, with the gap to the latest purchase strictly
/// before the last found by a self-join, for the default limits and for
/// an active window as long as the dormant one.
#[tokio::test]
async fn lifecycle_stages_equal_the_rules_read_with_a_self_join() {
    use engage_pipeline::{DataSource, LifecycleRules};
    let as_of = date("2026-03-01");
    let d = LifecycleRules::default();
    for rules in [d, LifecycleRules { active_days: 200, at_risk_days: 200, dormant_days: 200, ..d }] {
        let source = DataSource { lifecycle: rules, ..DataSource::new(sample()) };
        let mut engine = Engine::open_source(&source).await.unwrap();
        engine.features(as_of).await.unwrap();
        let LifecycleRules { new_days, active_days, at_risk_days, dormant_days } = rules;
        let days = |ts: &str| {
            format!("(date_part('epoch', TIMESTAMP '{as_of} 00:00:00') - date_part('epoch', {ts})) / 86400.0")
        };
        let reference = format!(
            "WITH tx AS (SELECT k.customer_key AS customer_id, t.ts
                         FROM transactions_resolved t JOIN customer_keys k USING (customer_no)
                         WHERE t.ts < TIMESTAMP '{as_of} 00:00:00' AND t.amount > 0),
             span AS (SELECT customer_id, min(ts) AS first_purchase, max(ts) AS last_purchase FROM tx GROUP BY customer_id),
             prev AS (SELECT t.customer_id, max(t.ts) AS prev_purchase FROM tx t
                      JOIN span s ON s.customer_id = t.customer_id AND t.ts < s.last_purchase GROUP BY t.customer_id),
             stage AS (
               SELECT s.customer_id,
                      CASE WHEN {first} <= {new_days} THEN 'new'
                           WHEN {last} <= {active_days}
                                AND (date_part('epoch', s.last_purchase) - date_part('epoch', p.prev_purchase)) / 86400.0
                                    > {dormant_days} THEN 'reactivated'
                           WHEN {last} <= {active_days} THEN 'active'
                           WHEN {last} <= {at_risk_days} THEN 'at_risk'
                           WHEN {last} <= {dormant_days} THEN 'dormant'
                           ELSE 'churned' END AS stage
               FROM span s LEFT JOIN prev p ON p.customer_id = s.customer_id)
             SELECT count(*) AS customers,
                    sum(CASE WHEN coalesce(s.stage, 'prospect') <> l.lifecycle_stage THEN 1 ELSE 0 END) AS differ,
                    sum(CASE WHEN l.lifecycle_stage = 'reactivated' THEN 1 ELSE 0 END) AS reactivated
             FROM lifecycle_features l LEFT JOIN stage s ON s.customer_id = l.customer_id",
            first = days("s.first_purchase"),
            last = days("s.last_purchase"),
        );
        let [customers, differ, reactivated] = counts(&engine, &reference).await;
        assert!(
            customers > 1_000 && reactivated > 10,
            "{rules:?}: {customers} customers, {reactivated} reactivated"
        );
        assert_eq!(differ, 0, "{rules:?}: {differ} of {customers} stages differ from the rules");
    }
}

/// The one row of whole numbers `sql` answers.
async fn counts<const N: usize>(engine: &Engine, sql: &str) -> [i64; N] {
    use engage_pipeline::datafusion::arrow::array::AsArray;
    use engage_pipeline::datafusion::arrow::datatypes::Int64Type;
    let batches = engine.query(sql).await.unwrap();
    std::array::from_fn(|i| batches[0].column(i).as_primitive::<Int64Type>().value(0))
}

/// `sql/features/value.sql` takes the gaps between purchases from each
/// customer's sorted purchase days, not from a window; on the generated
/// sample its regularity equals the standard deviation over the mean of
/// the gaps a `lag` window finds, within rounding, NULL where that is.
#[tokio::test]
async fn purchase_regularity_equals_the_gaps_a_window_finds() {
    let as_of = date("2026-03-01");
    let mut engine = Engine::open(sample()).await.unwrap();
    engine.features(as_of).await.unwrap();
    let reference = format!(
        "WITH tx AS (SELECT k.customer_key AS customer_id, t.ts
                     FROM transactions_resolved t JOIN customer_keys k USING (customer_no)
                     WHERE t.ts < TIMESTAMP '{as_of} 00:00:00' AND t.amount > 0
                       AND (date_part('epoch', TIMESTAMP '{as_of} 00:00:00') - date_part('epoch', t.ts)) / 86400.0 <= 730),
         gaps AS (SELECT customer_id,
                         (date_part('epoch', ts) - date_part('epoch', lag(ts) OVER (PARTITION BY customer_id ORDER BY ts))) / 86400.0 AS gap
                  FROM tx),
         cv AS (SELECT customer_id,
                       CASE WHEN count(gap) >= 2 THEN stddev_pop(gap) / nullif(avg(gap), 0) END AS cv
                FROM gaps GROUP BY customer_id)
         SELECT count(*) AS customers,
                count(cv.cv) AS with_cv,
                sum(CASE WHEN (cv.cv IS NULL) <> (v.interpurchase_days_cv IS NULL)
                           OR abs(cv.cv - v.interpurchase_days_cv) > 1e-9 THEN 1 ELSE 0 END) AS differ
         FROM value_features v LEFT JOIN cv ON cv.customer_id = v.customer_id"
    );
    let [customers, with_cv, differ] = counts(&engine, &reference).await;
    assert!(with_cv > 1_000, "{with_cv} of {customers} customers with a regularity");
    assert_eq!(differ, 0, "{differ} of {customers} regularities differ from the window's");
}
