//! The HTTP API on a real server bound to 127.0.0.1:0.

use engage_serving::{ScoreService, ServeOptions, bind};

use crate::common::trained;

/// Starts the server on the trained sample's snapshot; returns its base URL.
fn start() -> String {
    let opts = ServeOptions { scores: trained().scores.clone(), bind: "127.0.0.1:0".into() };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let (server, addrs) = bind(&opts).unwrap();
            tx.send(addrs[0]).unwrap();
            server.await.unwrap();
        });
    });
    format!("http://{}", rx.recv().unwrap())
}

fn get(url: &str) -> (u16, serde_json::Value) {
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let mut resp = agent.get(url).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_json().unwrap())
}

#[test]
fn scores_endpoint_returns_the_snapshot_row() {
    let base = start();
    let svc = ScoreService::load(&trained().scores).unwrap();
    let expected = svc.scores_for("C0000001").unwrap();
    let (status, body) = get(&format!("{base}/v1/customers/C0000001/scores"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["customer_id"], "C0000001");
    let churn = expected.churn_probability.unwrap();
    assert_eq!(body["churn_probability"].as_f64().unwrap(), churn);
    assert!((0.0..=1.0).contains(&churn));
    // Segments: a risk band from the churn probability; no CLV model, so no
    // value tier and no CLV.
    let band = if churn >= 0.6 {
        "high"
    } else if churn >= 0.3 {
        "medium"
    } else {
        "low"
    };
    assert_eq!(body["risk_band"], band, "{body}");
    assert!(body["value_tier"].is_null() && body["clv"].is_null(), "{body}");
    assert!(body["contact_strategy"].is_string() && body["recommended_treatment"].is_string(), "{body}");
    assert_eq!(body["model_versions"]["churn"], trained().artifact.model_version.as_str());
    assert_eq!(body["model_version"], trained().artifact.model_version.as_str());
    assert_eq!(body["as_of"], "2026-07-01");
    assert_eq!(body["snapshot_id"], svc.manifest().snapshot_id.as_str());
    // Reasons: the features raising the score most, from the model.
    let reasons = body["reasons"].as_array().unwrap();
    assert!(!reasons.is_empty() && reasons.len() <= 3, "{body}");
    assert_eq!(reasons.len(), expected.reasons.len());
    let names = trained().artifact.model.feature_names();
    let impacts: Vec<f64> = reasons.iter().map(|r| r["impact"].as_f64().unwrap()).collect();
    assert!(impacts.iter().all(|&v| v > 0.0) && impacts.windows(2).all(|w| w[0] >= w[1]), "{impacts:?}");
    for r in reasons {
        assert!(names.iter().any(|n| n == r["feature"].as_str().unwrap()), "{r}");
    }

    let (status, body) = get(&format!("{base}/healthz"));
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
}

#[test]
fn unknown_customer_is_a_json_404() {
    let base = start();
    let (status, body) = get(&format!("{base}/v1/customers/NOPE-42/scores"));
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_customer");
    assert!(body["error"]["message"].as_str().unwrap().contains("NOPE-42"));
    let (status, body) = get(&format!("{base}/v2/nothing"));
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
}
