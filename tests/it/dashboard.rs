//! The dashboard end to end in headless Chromium: two nightly runs on the
//! generated sample, `engage serve`'s `/dashboard` behind an API key, each
//! chart checked against numbers computed here from the snapshot files, a
//! customer looked up, the static export, and screenshots (desktop and
//! phone) under `target/tmp/dashboard/` for a person to look at.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use engage_pipeline::datafusion::arrow::array::AsArray;
use engage_pipeline::datafusion::arrow::datatypes::DataType;
use engage_serving::{ApiKeyConfig, ServeConfig, auth::generate_key};
use serde_json::Value;

use crate::browser::{Browser, Element};
use crate::common::{copy_dir, engage, sample, stderr};
use crate::nightly::{churn_and_clv_registry, floats, read_scores, texts};

const STAGES: [&str; 8] =
    ["prospect", "new", "active", "reactivated", "at_risk", "dormant", "churned", "none"];

fn screenshots() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard")
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .unwrap()
}

/// Snapshot ids under `scores`, oldest first.
fn snapshot_dirs(scores: &Path) -> Vec<PathBuf> {
    crate::nightly::snapshots(scores).into_iter().map(|id| scores.join("snapshots").join(id)).collect()
}

/// Customer id -> lifecycle stage (`none` when null) of a snapshot.
fn stages_of(dir: &Path) -> BTreeMap<String, String> {
    let b = read_scores(dir);
    texts(&b, "customer_id")
        .into_iter()
        .zip(texts(&b, "lifecycle_stage"))
        .map(|(id, s)| (id.unwrap(), s.unwrap_or_else(|| "none".into())))
        .collect()
}

fn count(map: &BTreeMap<String, String>, stage: &str) -> u64 {
    map.values().filter(|s| *s == stage).count() as u64
}

fn shares(values: &[Option<f64>]) -> Vec<f64> {
    let mut bins = [0u64; 10];
    for v in values.iter().flatten() {
        bins[((v * 10.0) as usize).min(9)] += 1;
    }
    let total: u64 = bins.iter().sum();
    bins.iter().map(|b| *b as f64 / total as f64).collect()
}

fn attr_u64(b: &Browser, e: &Element, name: &str) -> u64 {
    let v = b.attr(e, name).unwrap_or_else(|| panic!("no {name}"));
    v.parse().unwrap_or_else(|_| panic!("{name} = {v}"))
}

fn attr_f64(b: &Browser, e: &Element, name: &str) -> f64 {
    let v = b.attr(e, name).unwrap_or_else(|| panic!("no {name}"));
    v.parse().unwrap_or_else(|_| panic!("{name} = {v}"))
}

/// The page fits the window: nothing wider than the viewport but the
/// scrolling tables (their own scroll boxes).
fn assert_fits(b: &Browser, what: &str) {
    let overflow =
        b.script("return document.documentElement.scrollWidth - document.documentElement.clientWidth");
    assert!(overflow.as_i64().unwrap() <= 0, "{what}: the page is {overflow} px wider than the window");
}

#[test]
fn the_dashboard_shows_the_right_numbers_in_a_real_browser() {
    // Two nightly runs a month apart, the second selecting a campaign.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    copy_dir(sample(), &data);
    churn_and_clv_registry(&tmp.path().join("models"));
    let config = tmp.path().join("nightly.toml");
    std::fs::write(
        &config,
        "[data]\nroot = \"data\"\n[models]\nregistry = \"models\"\n[output]\nscores = \"scores\"\n\
         [audiences]\nuniversal_holdout = 0.05\n\
         [[campaigns]]\nid = \"SUMMER-WINBACK\"\nkind = \"wave\"\ndates = [\"2026-07-01\"]\nchannel = \"email\"\n\
         offer = \"10pct_off\"\nwhere = \"risk_band = 'high'\"\nrank_by = \"churn_probability * clv\"\nlimit = 300\n\
         control_share = 0.2\n",
    )
    .unwrap();
    let scores = tmp.path().join("scores");
    for as_of in ["2026-06-01", "2026-07-01"] {
        let o = engage(&["nightly", "--config", config.to_str().unwrap(), "--as-of", as_of]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    let dirs = snapshot_dirs(&scores);
    assert_eq!(dirs.len(), 2);
    let (before, now) = (stages_of(&dirs[0]), stages_of(&dirs[1]));
    let current = read_scores(&dirs[1]);

    // The nightly's campaign results are `engage campaigns report`'s.
    let measured = tmp.path().join("measured");
    let o = engage(&[
        "campaigns",
        "report",
        "--config",
        config.to_str().unwrap(),
        "--as-of",
        "2026-07-01",
        "--out",
        measured.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let in_snapshot = json(&dirs[1].join("campaigns/campaigns.json"));
    let campaigns = in_snapshot["campaigns"].as_array().unwrap().clone();
    assert!(!campaigns.is_empty(), "the sample has campaign contacts");
    assert_close(
        &json(&measured.join("campaigns.json"))["campaigns"],
        &in_snapshot["campaigns"],
        "campaigns",
    );

    // The server, behind keys.
    let (key, sha256) = generate_key();
    let (audiences_key, audiences_sha) = generate_key();
    let server = {
        let config = ServeConfig {
            scores: scores.clone(),
            bind: "127.0.0.1:0".into(),
            workers: 2,
            api_keys: vec![
                ApiKeyConfig { name: "crm-team".into(), sha256, scopes: vec!["scores:read".into()] },
                ApiKeyConfig {
                    name: "campaign-tool".into(),
                    sha256: audiences_sha,
                    scopes: vec!["audiences:read".into()],
                },
            ],
            ..Default::default()
        };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async move {
                let running = engage_serving::start(&config).unwrap();
                tx.send(running.addrs[0]).unwrap();
                running.server.await.unwrap();
            })
        });
        format!("http://{}", rx.recv().unwrap())
    };

    let ready = ureq::get(&format!("{server}/readyz"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(ready.contains("\"ready\""), "{ready}");

    let b = Browser::start(1366, 900);
    let shots = screenshots();

    // Signing in: a key without scores:read is refused, with a reason.
    b.goto(&format!("{server}/dashboard"));
    assert!(b.title().contains("Sign in"), "{}", b.title());
    b.type_into(&b.one("#key"), &audiences_key);
    b.click_to_load(&b.one("button[type=submit]"));
    assert!(b.text(&b.one("#sign-in-error")).contains("scores:read"));
    b.screenshot(&shots.join("sign-in-refused.png"));
    b.type_into(&b.one("#key"), &key);
    b.click_to_load(&b.one("button[type=submit]"));
    assert_eq!(b.url(), format!("{server}/dashboard"), "the key is never in a URL");
    let cookies = b.cookies();
    assert_eq!(cookies.len(), 1, "{cookies:?}");
    assert_eq!(cookies[0]["httpOnly"], true, "{cookies:?}");
    assert!(!cookies[0]["value"].as_str().unwrap().contains(&key[3..]), "the cookie is not the key");
    assert!(
        b.text(&b.one("header")).contains("crm-team"),
        "{} {:?} {cookies:?}",
        b.title(),
        b.text(&b.one("main"))
    );

    // Customer base: stage counts per snapshot, in the chart and its table.
    let as_of = ["2026-06-01", "2026-07-01"];
    let mut expected = BTreeMap::new();
    for (date, map) in as_of.iter().zip([&before, &now]) {
        for stage in STAGES {
            let n = count(map, stage);
            if n > 0 {
                expected.insert((date.to_string(), stage.to_string()), n);
            }
        }
    }
    let mut in_chart = BTreeMap::new();
    for bar in b.all("#chart-stages rect[data-series]") {
        let key = (b.attr(&bar, "data-x").unwrap(), b.attr(&bar, "data-series").unwrap());
        let n = attr_f64(&b, &bar, "data-value") as u64;
        if n > 0 {
            in_chart.insert(key, n);
        }
    }
    assert_eq!(in_chart, expected, "stage chart");
    for ((date, stage), n) in &expected {
        let cell = b.one(&format!("#stage-counts td[data-stage='{stage}'][data-as-of='{date}']"));
        assert_eq!(b.text(&cell).replace(',', ""), n.to_string(), "{stage} on {date}");
    }
    assert_eq!(b.text(&b.one("#kpi-customers")).replace(',', ""), now.len().to_string());

    // Flows: previous stage (rows) to current stage (columns).
    let mut flows: BTreeMap<(String, String), u64> = BTreeMap::new();
    for (id, stage) in &now {
        let from = before.get(id).cloned().unwrap_or_else(|| "(not scored)".into());
        *flows.entry((from, stage.clone())).or_default() += 1;
    }
    for (id, stage) in &before {
        if !now.contains_key(id) {
            *flows.entry((stage.clone(), "(gone)".into())).or_default() += 1;
        }
    }
    let mut shown = BTreeMap::new();
    for cell in b.all("#flows td") {
        let n: u64 = b.text(&cell).replace(',', "").parse().unwrap();
        if n > 0 {
            shown.insert((b.attr(&cell, "data-from").unwrap(), b.attr(&cell, "data-to").unwrap()), n);
        }
    }
    assert_eq!(shown, flows, "flows between the snapshots");
    let new_active = flows.get(&("new".into(), "active".into())).copied().unwrap_or(0);
    let li = b.one("#key-flows li[data-flow='new-active']");
    assert!(b.text(&li).ends_with(&new_active.to_string()), "{}", b.text(&li));

    // Risk and value: the churn distribution and the risk x value matrix.
    let churn = floats(&current, "churn_probability");
    let mut bins = [0u64; 10];
    for p in churn.iter().flatten() {
        bins[((p * 10.0) as usize).min(9)] += 1;
    }
    let drawn: Vec<u64> =
        b.all("#chart-churn rect[data-value]").iter().map(|r| attr_f64(&b, r, "data-value") as u64).collect();
    assert_eq!(drawn, bins, "churn distribution");
    let (bands, tiers, clv) =
        (texts(&current, "risk_band"), texts(&current, "value_tier"), floats(&current, "clv"));
    let mut cells: BTreeMap<(String, String), (u64, f64)> = BTreeMap::new();
    for i in 0..current.num_rows() {
        let key = (
            bands[i].clone().unwrap_or_else(|| "none".into()),
            tiers[i].clone().unwrap_or_else(|| "none".into()),
        );
        let cell = cells.entry(key).or_default();
        cell.0 += 1;
        if let (Some(p), Some(v)) = (churn[i], clv[i]) {
            cell.1 += p * v;
        }
    }
    assert!(cells.keys().any(|(band, tier)| band == "high" && tier != "none"), "{cells:?}");
    let cells_shown = b.all("#risk-value td");
    let total: u64 = cells_shown.iter().map(|td| attr_u64(&b, td, "data-customers")).sum();
    assert_eq!(total as usize, current.num_rows(), "every customer is in one cell");
    for td in cells_shown {
        let key = (b.attr(&td, "data-risk").unwrap(), b.attr(&td, "data-tier").unwrap());
        let (n, at_risk) = cells.get(&key).copied().unwrap_or_default();
        assert_eq!(attr_u64(&b, &td, "data-customers"), n, "{key:?}");
        assert!((attr_f64(&b, &td, "data-at-risk") - at_risk).abs() < 0.01, "{key:?}");
    }

    // Campaigns: every funnel row as measured, and the lift chart.
    for c in &campaigns {
        let id = c["campaign_id"].as_str().unwrap();
        let rows = b.all(&format!("table.funnel[data-campaign='{id}'] tbody tr"));
        let stages = c["stages"].as_array().unwrap();
        assert_eq!(rows.len(), stages.len(), "{id}");
        for (row, s) in rows.iter().zip(stages) {
            assert_eq!(b.attr(row, "data-stage").unwrap(), s["stage"].as_str().unwrap());
            assert_eq!(attr_u64(&b, row, "data-treated"), s["treatment"]["customers"].as_u64().unwrap());
            assert_eq!(
                attr_u64(&b, row, "data-treated-responders"),
                s["treatment"]["responders"].as_u64().unwrap()
            );
            assert_eq!(attr_u64(&b, row, "data-control"), s["control"]["customers"].as_u64().unwrap());
            assert_eq!(
                attr_u64(&b, row, "data-control-responders"),
                s["control"]["responders"].as_u64().unwrap()
            );
        }
        let revenue = b.one(&format!("#campaign-summary tr[data-campaign='{id}'] td[data-campaign-revenue]"));
        if let Some(v) = c["incremental_revenue"].as_f64() {
            assert!((attr_f64(&b, &revenue, "data-campaign-revenue") - v).abs() < 1e-6, "{id}");
        }
        let lift = b.one(&format!("#chart-lift g[data-label='{id}']"));
        let last = &stages.last().unwrap()["lift"];
        if let Some(v) = last["absolute"].as_f64() {
            assert!((attr_f64(&b, &lift, "data-value") - v * 100.0).abs() < 1e-9, "{id}");
        }
    }
    assert!(b.text(&b.one("#holdout")).contains("held out of every campaign"));

    // Models: the promoted churn model's validation metrics and curves.
    let churn_dir = crate::common::trained().dir.clone();
    let metrics = json(&churn_dir.join("metrics.json"));
    let auc = b.one(".model[data-task='churn'] td[data-metric='roc_auc']");
    assert_eq!(attr_f64(&b, &auc, "data-value"), metrics["metrics"]["roc_auc"].as_f64().unwrap());
    assert_eq!(b.all(".chart-calibration[data-task='churn'] polyline").len(), 2, "diagonal and curve");
    assert_eq!(b.all(".chart-gains[data-task='churn'] polyline").len(), 2);
    assert_eq!(b.all(".model[data-task='clv']").len(), 1);

    // Drift of the churn score between the two snapshots.
    let (p, c) = (shares(&floats(&read_scores(&dirs[0]), "churn_probability")), shares(&churn));
    let psi: f64 =
        p.iter().zip(&c).map(|(p, c)| (c.max(1e-4) - p.max(1e-4)) * (c.max(1e-4) / p.max(1e-4)).ln()).sum();
    let drift = b.one(".chart-drift[data-score='churn_probability']");
    assert!((attr_f64(&b, &drift, "data-psi") - psi).abs() < 1e-9, "PSI");
    let current_bars: Vec<f64> = b
        .all(".chart-drift[data-score='churn_probability'] rect[data-series='current']")
        .iter()
        .map(|r| attr_f64(&b, r, "data-value"))
        .collect();
    assert_eq!(current_bars, c);

    // Data quality: the run report's counts per table.
    let report = json(&dirs[1].join("run_report.json"));
    for input in report["inputs"].as_array().unwrap() {
        let table = input["table"].as_str().unwrap();
        let row = b.one(&format!("#inputs tr[data-table='{table}']"));
        for field in ["rows", "accepted", "rejected"] {
            assert_eq!(
                attr_u64(&b, &row, &format!("data-{field}")),
                input[field].as_u64().unwrap(),
                "{table}"
            );
        }
    }
    let identifiers = b.one("#identity td[data-stat='identifiers']");
    assert_eq!(attr_u64(&b, &identifiers, "data-value"), report["identity"]["identifiers"].as_u64().unwrap());

    assert_fits(&b, "desktop");
    b.screenshot(&shots.join("dashboard-desktop.png"));

    // A customer with contacts, looked up by email as a call center would.
    let contacts =
        engage_pipeline::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(dirs[1].join("contacts.parquet")).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect::<Vec<_>>();
    // Customer -> (date, campaign) of each contact.
    let mut contacted: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for batch in &contacts {
        let column = |name: &str| {
            let col = batch.column_by_name(name).unwrap();
            let col = engage_pipeline::datafusion::arrow::compute::cast(col, &DataType::Utf8).unwrap();
            col.as_string::<i32>().iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
        };
        let (ids, dates, campaigns) = (column("customer_id"), column("contacted_on"), column("campaign_id"));
        for ((id, date), campaign) in ids.into_iter().zip(dates).zip(campaigns) {
            contacted.entry(id).or_default().push((date, campaign));
        }
    }
    let identities = read_identities(&dirs[1]);
    let (email, customer) = identities
        .iter()
        .find(|(ty, _, id)| {
            ty == "email" && contacted.get(id).is_some_and(|c| c.len() >= 2) && before.contains_key(id)
        })
        .map(|(_, v, id)| (v.clone(), id.clone()))
        .expect("a contacted customer with an email");
    b.goto(&format!("{server}/dashboard#lookup"));
    b.type_into(&b.one("#id"), &email.to_uppercase());
    b.click_to_load(&b.one("#lookup button[type=submit]"));
    assert_eq!(b.url(), format!("{server}/dashboard/customer"), "the email is not in the URL");
    assert_eq!(b.attr(&b.one("#customer"), "data-customer-id").unwrap(), customer);
    assert_eq!(b.text(&b.one("#c-stage")), now[&customer]);
    let history: Vec<String> = b.all("#c-history tbody tr").iter().map(|r| b.text(r)).collect();
    assert_eq!(
        history,
        vec![format!("2026-06-01 {}", before[&customer]), format!("2026-07-01 {}", now[&customer])],
    );
    // Newest first, then by campaign.
    let mut expected_contacts = contacted[&customer].clone();
    expected_contacts.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let shown_contacts: Vec<(String, String)> = b
        .all("#c-contacts tbody tr")
        .iter()
        .map(|row| {
            let cells: Vec<String> = b.text(row).split_whitespace().map(str::to_string).collect();
            (cells[0].clone(), cells[1].clone())
        })
        .collect();
    assert_eq!(shown_contacts, expected_contacts);
    assert!(!b.all("#c-reasons rect").is_empty(), "churn reasons drawn");
    assert_fits(&b, "customer page");
    b.screenshot(&shots.join("customer-desktop.png"));

    // On a phone: the same pages, nothing wider than the screen.
    {
        let phone = Browser::phone();
        phone.goto(&format!("{server}/dashboard"));
        phone.type_into(&phone.one("#key"), &key);
        phone.click_to_load(&phone.one("button[type=submit]"));
        assert_eq!(phone.script("return window.innerWidth"), 390);
        assert_fits(&phone, "dashboard on a phone");
        phone.screenshot(&shots.join("dashboard-phone.png"));
        phone.type_into(&phone.one("#id"), &email);
        phone.click_to_load(&phone.one("#lookup button[type=submit]"));
        assert_eq!(phone.attr(&phone.one("#customer"), "data-customer-id").unwrap(), customer);
        assert_fits(&phone, "customer page on a phone");
        phone.screenshot(&shots.join("customer-phone.png"));
    }

    // An unknown identifier says so.
    b.goto(&format!("{server}/dashboard#lookup"));
    b.type_into(&b.one("#id"), "nobody@example.invalid");
    b.click_to_load(&b.one("#lookup button[type=submit]"));
    assert!(b.text(&b.one("#lookup-error")).contains("nobody@example.invalid"));

    // Signing out ends the session.
    b.goto(&format!("{server}/dashboard"));
    b.click_to_load(&b.one("header button"));
    assert!(b.title().contains("Sign in"));
    b.goto(&format!("{server}/dashboard"));
    assert!(b.title().contains("Sign in"), "signed out stays out");

    // The static export: the same numbers in one file.
    let file = tmp.path().join("dashboard.html");
    let o = engage(&["report", "--scores", scores.to_str().unwrap(), "--out", file.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let html = std::fs::read_to_string(&file).unwrap();
    for external in ["<script", "src=", "<link", "url(", "href=\"http"] {
        assert!(!html.contains(external), "self-contained, yet `{external}` is in it");
    }
    b.goto(&format!("file://{}", file.display()));
    for ((date, stage), n) in &expected {
        let cell = b.one(&format!("#stage-counts td[data-stage='{stage}'][data-as-of='{date}']"));
        assert_eq!(b.text(&cell).replace(',', ""), n.to_string());
    }
    assert!(b.all("form.lookup").is_empty(), "no lookup in a file");
    b.screenshot(&shots.join("export.png"));
    eprintln!("screenshots in {}", shots.display());
}

/// `a` equals `b`, numbers within 1e-9 relative (sums of floats may add
/// up in another order).
fn assert_close(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0), "{at}: {x} vs {y}");
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths");
            for (i, (x, y)) in x.iter().zip(y).enumerate() {
                assert_close(x, y, &format!("{at}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>(), "{at}: keys");
            for (k, v) in x {
                assert_close(v, &y[k], &format!("{at}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

/// (type, value, customer id) of a snapshot's identity lookup.
fn read_identities(dir: &Path) -> Vec<(String, String, String)> {
    let batches =
        engage_pipeline::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(dir.join("identities.parquet")).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in batches {
        let b = b.unwrap();
        let col = |name: &str| texts(&b, name);
        for ((t, v), c) in
            col("identifier_type").into_iter().zip(col("identifier_value")).zip(col("customer_id"))
        {
            out.push((t.unwrap(), v.unwrap(), c.unwrap()));
        }
    }
    out
}

#[test]
fn report_needs_both_scores_and_out() {
    let o = engage(&["report", "--out", "x.html"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--scores"), "{}", stderr(&o));
    let tmp = tempfile::tempdir().unwrap();
    let o = engage(&[
        "report",
        "--scores",
        tmp.path().to_str().unwrap(),
        "--out",
        tmp.path().join("d.html").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&tmp.path().display().to_string()), "{}", stderr(&o));
    assert!(!tmp.path().join("d.html").exists(), "nothing written");
}
