//! The HTTP API on a real server bound to 127.0.0.1:0, over a snapshot
//! scored from the generated sample with a churn model and one campaign's
//! contact list: every route against the OpenAPI document, lookups by
//! every identifier type, batches, audience paging, keys and scopes, hot
//! reload of good and corrupt snapshots under load, malformed requests,
//! and the `engage serve` process's logs and shutdown.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use engage_pipeline::datafusion::arrow::array::{AsArray, RecordBatch};
use engage_pipeline::datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use engage_pipeline::identity::{normalize_email, normalize_phone};
use engage_pipeline::store::DataRoot;
use engage_serving::{ApiKeyConfig, ScoreService, ServeConfig, auth::generate_key};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::common::{copy_dir, date, sample, trained};

const CAMPAIGN: &str = "WINBACK";

/// A snapshot root with churn scores and the WINBACK contact list.
struct Fixture {
    scores: PathBuf,
    data: PathBuf,
    _tmp: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        std::thread::spawn(|| {
            let tmp = tempfile::tempdir().unwrap();
            let data = tmp.path().join("data");
            copy_dir(sample(), &data);
            let scores = tmp.path().join("scores");
            let models = DataRoot::local(trained().dir.parent().unwrap().parent().unwrap());
            let mut opts = engage_pipeline::scoring::ScoreOptions::score(
                engage_pipeline::DataSource::new(&data),
                date("2026-07-01"),
                &models,
                &["churn".parse().unwrap()],
                &scores,
            );
            opts.campaigns = vec![
                toml::from_str(&format!(
                    "id = \"{CAMPAIGN}\"\nkind = \"wave\"\ndates = [\"2026-07-01\"]\nchannel = \"email\"\n\
                     offer = \"10pct_off\"\nwhere = \"risk_band IN ('high', 'medium')\"\nrank_by = \"churn_probability\"\n\
                     limit = 260\ncontrol_share = 0.2\n"
                ))
                .unwrap(),
            ];
            tokio::runtime::Runtime::new().unwrap().block_on(engage_pipeline::scoring::score(&opts)).unwrap();
            Fixture { scores, data, _tmp: tmp }
        })
        .join()
        .unwrap()
    })
}

/// Keys of every scope combination the tests need.
struct Keys {
    all: String,
    scores: String,
    audiences: String,
    config: Vec<ApiKeyConfig>,
}

fn keys() -> &'static Keys {
    static K: OnceLock<Keys> = OnceLock::new();
    K.get_or_init(|| {
        let mut config = Vec::new();
        let mut key = |name: &str, scopes: &[&str]| {
            let (key, sha256) = generate_key();
            config.push(ApiKeyConfig {
                name: name.into(),
                sha256,
                scopes: scopes.iter().map(|s| s.to_string()).collect(),
            });
            key
        };
        let all = key("ops", &["scores:read", "audiences:read", "admin"]);
        let scores = key("call-center", &["scores:read"]);
        let audiences = key("campaign-tool", &["audiences:read"]);
        Keys { all, scores, audiences, config }
    })
}

struct Server {
    base: String,
    addr: std::net::SocketAddr,
}

/// Starts a server on `scores` with the test keys; `tune` adjusts the config.
fn start(scores: &Path, tune: impl FnOnce(&mut ServeConfig)) -> Server {
    let mut config = ServeConfig {
        scores: scores.to_path_buf(),
        bind: "127.0.0.1:0".into(),
        workers: 2,
        api_keys: keys().config.clone(),
        ..Default::default()
    };
    tune(&mut config);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let running = engage_serving::start(&config).unwrap();
            tx.send(running.addrs[0]).unwrap();
            running.server.await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    Server { base: format!("http://{addr}"), addr }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().new_agent()
}

/// A request: (status, body as JSON or as a string, x-request-id).
fn call(method: &str, url: &str, key: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let agent = agent();
    let auth = key.map(|k| format!("Bearer {k}"));
    let resp = if method == "GET" {
        let mut r = agent.get(url);
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.call()
    } else {
        let mut r = agent.post(url).header("Content-Type", "application/json");
        if let Some(a) = &auth {
            r = r.header("Authorization", a);
        }
        r.send(body.unwrap_or(""))
    };
    let mut resp = resp.unwrap();
    let status = resp.status().as_u16();
    assert!(resp.headers().get("x-request-id").is_some(), "{url}: no x-request-id");
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

fn get(url: &str, key: Option<&str>) -> (u16, Value) {
    call("GET", url, key, None)
}

/// Percent-encodes an identifier for a path segment.
fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'@' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn read(path: &Path) -> Vec<RecordBatch> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut f: Vec<_> = std::fs::read_dir(path).unwrap().flatten().map(|e| e.path()).collect();
        f.sort();
        f
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .flat_map(|f| {
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(f).unwrap())
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn texts(batches: &[RecordBatch], column: &str) -> Vec<Option<String>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = engage_pipeline::datafusion::arrow::compute::cast(
                b.column_by_name(column).unwrap(),
                &engage_pipeline::datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            c.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>()
        })
        .collect()
}

fn current_dir(scores: &Path) -> PathBuf {
    scores.join("snapshots").join(std::fs::read_to_string(scores.join("CURRENT")).unwrap().trim())
}

/// The schema a `$ref` names.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => &spec["components"]["schemas"][r.rsplit('/').next().unwrap()],
        None => schema,
    }
}

/// Checks `value` against `schema` (types, required properties, nested
/// objects and arrays); `at` names the place in errors.
fn check_shape(spec: &Value, schema: &Value, value: &Value, at: &str) {
    let schema = resolve(spec, schema);
    if let Some(one_of) = schema.get("oneOf").and_then(Value::as_array) {
        if value.is_null() && one_of.iter().any(|s| s["type"] == "null") {
            return;
        }
        let s = one_of.iter().find(|s| s["type"] != "null").unwrap();
        return check_shape(spec, s, value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if value.is_null() {
        assert!(types.is_empty() || types.contains(&"null"), "{at}: null where the spec says {types:?}");
        return;
    }
    let actual = match value {
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => unreachable!(),
    };
    let ok =
        types.is_empty() || types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
    assert!(ok, "{at}: {actual} where the spec says {types:?}: {value}");
    if let (Some(props), Value::Object(obj)) = (schema.get("properties").and_then(Value::as_object), value) {
        for req in schema["required"].as_array().into_iter().flatten() {
            assert!(obj.contains_key(req.as_str().unwrap()), "{at}: required `{req}` missing: {value}");
        }
        for (k, v) in obj {
            let s = props.get(k).unwrap_or_else(|| panic!("{at}: `{k}` is not in the spec"));
            check_shape(spec, s, v, &format!("{at}.{k}"));
        }
    }
    if let (Some(items), Value::Array(vals)) = (schema.get("items"), value) {
        for (i, v) in vals.iter().enumerate().take(5) {
            check_shape(spec, items, v, &format!("{at}[{i}]"));
        }
    }
}

#[test]
fn every_documented_route_answers_with_its_documented_shapes() {
    let f = fixture();
    let server = start(&f.scores, |_| {});
    let (status, spec) = get(&format!("{}/openapi.json", server.base), None);
    assert_eq!(status, 200);
    let paths = spec["paths"].as_object().unwrap();
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(
        documented,
        BTreeSet::from([
            "/healthz",
            "/metrics",
            "/readyz",
            "/v1/admin/reload",
            "/v1/audiences",
            "/v1/audiences/{campaign}",
            "/v1/customers/{id}/scores",
            "/v1/models",
            "/v1/scores:batch",
            "/v1/snapshot",
        ]),
        "every route the server has is documented"
    );
    let keys = keys();
    let known = "C0000001";
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let url =
                format!("{}{}", server.base, path.replace("{id}", known).replace("{campaign}", CAMPAIGN));
            let secured = op.get("security").is_some();
            // With a key holding every scope: a documented 2xx and shape.
            let body = (path == "/v1/scores:batch").then(|| json!({"items": [{"id": known}]}).to_string());
            let (status, value) = call(&method.to_uppercase(), &url, Some(&keys.all), body.as_deref());
            let response = &op["responses"][status.to_string()];
            assert!(response.is_object(), "{method} {path}: {status} is not documented: {value}");
            assert!((200..300).contains(&status), "{method} {path}: {status} {value}");
            if let Some(schema) = response["content"]["application/json"].get("schema") {
                check_shape(&spec, schema, &value, &format!("{method} {path}"));
            }
            // Without a key: 401 exactly where the spec says a key is needed.
            let (status, value) = call(&method.to_uppercase(), &url, None, body.as_deref());
            if secured {
                assert_eq!(status, 401, "{method} {path}: {value}");
                check_shape(
                    &spec,
                    &op["responses"]["401"]["content"]["application/json"]["schema"],
                    &value,
                    path,
                );
            } else {
                assert!((200..300).contains(&status), "{method} {path} is open: {status}");
            }
        }
    }
    // docs/openapi.json is this document.
    let committed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")).unwrap();
    assert!(
        committed.trim_end() == engage_serving::openapi_json(),
        "docs/openapi.json is stale: run `engage serve openapi > docs/openapi.json`"
    );
    assert_eq!(serde_json::from_str::<Value>(&committed).unwrap(), spec);
    // Documented errors have the documented shape too.
    let (status, value) = get(&format!("{}/v1/customers/NOPE/scores", server.base), Some(&keys.all));
    assert_eq!((status, value["error"]["code"].as_str()), (404, Some("unknown_customer")), "{value}");
    check_shape(&spec, &json!({"$ref": "#/components/schemas/ErrorBody"}), &value, "404");
}

#[test]
fn lookups_by_every_identifier_type_find_the_resolved_customer() {
    let f = fixture();
    let server = start(&f.scores, |_| {});
    let key = &keys().scores;
    let svc = ScoreService::load(&f.scores).unwrap();
    // Raw CRM identifiers as other systems typed them; only those that
    // belong to exactly one customer (after normalisation) must resolve.
    let customers = read(&f.data.join("customers"));
    let ids = texts(&customers, "customer_id");
    let mut owners: HashMap<(&str, String), BTreeSet<String>> = HashMap::new();
    let mut raw: Vec<(&str, String, String)> = Vec::new();
    for (column, norm) in [
        ("email", &(|v: &str| normalize_email(v)) as &dyn Fn(&str) -> Option<String>),
        ("phone", &|v: &str| normalize_phone(v, "1")),
        ("loyalty_id", &|v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty())),
    ] {
        for (id, value) in ids.iter().zip(texts(&customers, column)) {
            let (Some(id), Some(value)) = (id, value) else { continue };
            if let Some(n) = norm(&value) {
                owners.entry((column, n)).or_default().insert(id.clone());
                raw.push((column, value, id.clone()));
            }
        }
    }
    let mut checked: BTreeMap<&str, usize> = BTreeMap::new();
    for (column, value, id) in raw.iter().step_by(7) {
        let norm = match *column {
            "email" => normalize_email(value),
            "phone" => normalize_phone(value, "1"),
            _ => Some(value.trim().to_string()),
        }
        .unwrap();
        let unique = owners[&(*column, norm)].len() == 1;
        // Typed differently: upper case and padded.
        let typed = if *column == "email" { format!("  {} ", value.to_uppercase()) } else { value.clone() };
        let url = format!("{}/v1/customers/{}/scores?id_type={column}", server.base, encode(&typed));
        let (status, body) = get(&url, Some(key));
        if unique {
            assert_eq!(status, 200, "{column} {value}: {body}");
            assert_eq!(body["customer_id"], id.as_str(), "{column} {value}");
            let expected = svc.scores_for(id).unwrap();
            assert_eq!(body["churn_probability"].as_f64(), expected.churn_probability);
            *checked.entry(column).or_default() += 1;
        } else {
            // A shared identifier (a family email, a shop phone) links nobody.
            assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_customer")), "{value}");
        }
    }
    assert!(checked.values().all(|&n| n >= 50) && checked.len() == 3, "{checked:?}");
    // A customer id is the default id type.
    let (status, body) = get(&format!("{}/v1/customers/C0000002/scores", server.base), Some(key));
    assert_eq!((status, body["customer_id"].as_str()), (200, Some("C0000002")));
    // Bad input names the field.
    let (status, body) = get(&format!("{}/v1/customers/x/scores?id_type=passport", server.base), Some(key));
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["error"]["field"].as_str()),
        (400, Some("invalid_parameter"), Some("id_type"))
    );
    assert!(body["error"]["message"].as_str().unwrap().contains("passport"), "{body}");
    let (status, body) =
        get(&format!("{}/v1/customers/not-an-email/scores?id_type=email", server.base), Some(key));
    assert_eq!((status, body["error"]["field"].as_str()), (400, Some("id")), "{body}");
    let (status, body) =
        get(&format!("{}/v1/customers/nobody@nowhere.test/scores?id_type=email", server.base), Some(key));
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_customer")), "{body}");
    let (status, body) = get(&format!("{}/v2/nothing", server.base), Some(key));
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")));
    let (status, body) =
        call("POST", &format!("{}/v1/customers/C0000002/scores", server.base), Some(key), Some("{}"));
    assert_eq!((status, body["error"]["code"].as_str()), (405, Some("method_not_allowed")));
}

#[test]
fn batches_answer_per_item_and_enforce_their_limits() {
    let f = fixture();
    let server = start(&f.scores, |c| {
        c.max_batch = 5;
        c.max_body_bytes = 2048;
    });
    let key = &keys().scores;
    let url = format!("{}/v1/scores:batch", server.base);
    let body = json!({"items": [
        {"id": "C0000001"},
        {"id": "C0000003", "id_type": "customer_id"},
        {"id": "NOPE"},
        {"id": "x", "id_type": "passport"},
        {"id": "not-an-email", "id_type": "email"},
    ]});
    let (status, resp) = call("POST", &url, Some(key), Some(&body.to_string()));
    assert_eq!(status, 200, "{resp}");
    let results = resp["results"].as_array().unwrap();
    let got: Vec<(u16, Option<&str>)> =
        results.iter().map(|r| (r["status"].as_u64().unwrap() as u16, r["error"]["code"].as_str())).collect();
    assert_eq!(
        got,
        [
            (200, None),
            (200, None),
            (404, Some("unknown_customer")),
            (400, Some("invalid_parameter")),
            (400, Some("invalid_parameter"))
        ]
    );
    assert_eq!(results[0]["scores"]["customer_id"], "C0000001");
    assert_eq!(results[3]["error"]["field"], "items[3].id_type");
    assert_eq!(results[4]["error"]["field"], "items[4].id");
    let svc = ScoreService::load(&f.scores).unwrap();
    assert_eq!(
        results[1]["scores"]["churn_probability"].as_f64(),
        svc.scores_for("C0000003").unwrap().churn_probability
    );

    let six = json!({"items": (1..=6).map(|i| json!({"id": format!("C{i:07}")})).collect::<Vec<_>>()});
    let (status, resp) = call("POST", &url, Some(key), Some(&six.to_string()));
    assert_eq!(
        (status, resp["error"]["code"].as_str(), resp["error"]["field"].as_str()),
        (413, Some("batch_too_large"), Some("items"))
    );
    let big = json!({"items": [{"id": "x".repeat(4000)}]});
    let (status, resp) = call("POST", &url, Some(key), Some(&big.to_string()));
    assert_eq!((status, resp["error"]["code"].as_str()), (413, Some("payload_too_large")), "{resp}");
    for bad in
        ["{", "[]", "{\"items\": 3}", "{\"items\": [{\"id\": 1}]}", "{\"items\": [], \"extra\": 1}", ""]
    {
        let (status, resp) = call("POST", &url, Some(key), Some(bad));
        assert_eq!((status, resp["error"]["code"].as_str()), (400, Some("invalid_body")), "{bad}: {resp}");
    }
}

#[test]
fn audiences_page_through_the_contact_list_with_a_cursor() {
    let f = fixture();
    let server = start(&f.scores, |c| c.max_page = 100);
    let key = &keys().audiences;
    let list = read(&current_dir(&f.scores).join(format!("audiences/{CAMPAIGN}.parquet")));
    let ids = texts(&list, "customer_id");
    let ranks = texts(&list, "rank");
    let mut expected: Vec<(u64, String)> = ids
        .iter()
        .zip(&ranks)
        .map(|(i, r)| (r.as_ref().unwrap().parse().unwrap(), i.clone().unwrap()))
        .collect();
    expected.sort();
    assert_eq!(expected.len(), 260);

    let (status, all) = get(&format!("{}/v1/audiences", server.base), Some(key));
    assert_eq!(status, 200);
    let info = &all["campaigns"][0];
    assert_eq!((info["campaign_id"].as_str(), info["entries"].as_u64()), (Some(CAMPAIGN), Some(260)));
    assert_eq!(info["summary"]["selected"].as_u64(), Some(260), "{info}");
    assert_eq!(info["treatment"].as_u64().unwrap() + info["control"].as_u64().unwrap(), 260);

    let mut seen = Vec::new();
    let mut url = format!("{}/v1/audiences/{CAMPAIGN}?limit=70", server.base);
    loop {
        let (status, page) = get(&url, Some(key));
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["total"].as_u64(), Some(260));
        for e in page["entries"].as_array().unwrap() {
            seen.push((e["rank"].as_u64().unwrap(), e["customer_id"].as_str().unwrap().to_string()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{}/v1/audiences/{CAMPAIGN}?limit=70&cursor={}", server.base, encode(c)),
            None => break,
        }
    }
    assert_eq!(seen, expected, "the pages together are the list, in rank order");
    let (_, control) =
        get(&format!("{}/v1/audiences/{CAMPAIGN}?group=control&limit=100", server.base), Some(key));
    let entries = control["entries"].as_array().unwrap();
    assert_eq!(entries.len() as u64, info["control"].as_u64().unwrap());
    assert!(entries.iter().all(|e| e["group"] == "control"));

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("group=vip", "group"),
        ("cursor=garbage", "cursor"),
    ] {
        let (status, body) = get(&format!("{}/v1/audiences/{CAMPAIGN}?{query}", server.base), Some(key));
        assert_eq!((status, body["error"]["field"].as_str()), (400, Some(field)), "{query}: {body}");
    }
    let (status, body) = get(
        &format!("{}/v1/audiences/{CAMPAIGN}?cursor=2020-01-01_20200101T000000~70", server.base),
        Some(key),
    );
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("cursor_expired")), "{body}");
    let (status, body) = get(&format!("{}/v1/audiences/NOPE", server.base), Some(key));
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("unknown_campaign")));
}

#[test]
fn keys_and_scopes_guard_every_v1_route() {
    let f = fixture();
    let server = start(&f.scores, |_| {});
    let k = keys();
    let scores = format!("{}/v1/customers/C0000001/scores", server.base);
    let audiences = format!("{}/v1/audiences/{CAMPAIGN}", server.base);
    let reload = format!("{}/v1/admin/reload", server.base);
    let (status, body) = get(&scores, None);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    let (status, _) = get(&scores, Some("ek_not-a-key"));
    assert_eq!(status, 401);
    // Scheme other than Bearer.
    let resp = agent().get(&scores).header("Authorization", format!("Basic {}", k.scores)).call().unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.headers().get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(get(&scores, Some(&k.scores)).0, 200);
    let (status, body) = get(&scores, Some(&k.audiences));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    assert!(body["error"]["message"].as_str().unwrap().contains("scores:read"));
    assert_eq!(get(&audiences, Some(&k.audiences)).0, 200);
    assert_eq!(get(&audiences, Some(&k.scores)).0, 403);
    assert_eq!(call("POST", &reload, Some(&k.scores), None).0, 403);
    assert_eq!(call("POST", &reload, Some(&k.all), None).0, 200);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(get(&format!("{}{open}", server.base), None).0, 200, "{open}");
    }
    // Denied requests are counted under the route they were meant for.
    for (route, status, n) in [
        ("/v1/customers/{id}/scores", 401, 3.0),
        ("/v1/customers/{id}/scores", 403, 1.0),
        ("/v1/audiences/{campaign}", 403, 1.0),
        ("/v1/admin/reload", 403, 1.0),
    ] {
        let name = format!("engage_http_requests_total{{route=\"{route}\",status=\"{status}\"}}");
        assert_eq!(metric(&server.base, &name), n, "{name}");
    }
    // The example config in the repository is valid and names its keys.
    let example =
        ServeConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("serve.example.toml")).unwrap();
    assert_eq!(example.api_keys.len(), 2);
    assert!(example.scores.ends_with("target/engage-demo/scores"));
    // The config refuses to start without keys unless told to.
    let refused = ServeConfig { scores: f.scores.clone(), ..Default::default() }.check("test");
    assert!(refused.unwrap_err().to_string().contains("api_keys"));
    let mut bad = ServeConfig { scores: f.scores.clone(), api_keys: k.config.clone(), ..Default::default() };
    bad.api_keys[1].scopes = vec!["scores:write".into()];
    let err = bad.check("serve.toml").unwrap_err().to_string();
    assert!(err.contains("api_keys[1].scopes") && err.contains("scores:write"), "{err}");
}

/// Publishes a copy of `from` (a snapshot directory) as snapshot `id`,
/// with `mangle` applied to the copy before the pointer moves.
fn publish_copy(scores: &Path, from: &Path, id: &str, mangle: impl FnOnce(&Path)) {
    let dir = scores.join("snapshots").join(id);
    copy_dir(from, &dir);
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    manifest["snapshot_id"] = id.into();
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&manifest).unwrap()).unwrap();
    mangle(&dir);
    let tmp = scores.join("CURRENT.tmp");
    std::fs::write(&tmp, format!("{id}\n")).unwrap();
    std::fs::rename(&tmp, scores.join("CURRENT")).unwrap();
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn metric(base: &str, line_start: &str) -> f64 {
    let (_, text) = get(&format!("{base}/metrics"), None);
    let text = text.as_str().unwrap().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().parse::<f64>().unwrap()))
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
}

#[test]
fn reloads_swap_good_snapshots_and_refuse_bad_ones_while_serving() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let scores = tmp.path().join("scores");
    copy_dir(&f.scores, &scores);
    let original = current_dir(&scores);
    let first = original.file_name().unwrap().to_string_lossy().to_string();
    let server = start(&scores, |c| c.watch_interval_ms = 50);
    let k = keys();
    let snapshot_id = || {
        get(&format!("{}/v1/snapshot", server.base), Some(&k.scores)).1["snapshot_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(snapshot_id(), first);

    // Lookups run throughout; every answer must be a 200.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let workers: Vec<_> = (0..2)
        .map(|w| {
            let (stop, ok, failed, base, key) =
                (stop.clone(), ok.clone(), failed.clone(), server.base.clone(), k.scores.clone());
            std::thread::spawn(move || {
                let agent = agent();
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let url = format!("{base}/v1/customers/C{:07}/scores", i % 8000 + 1);
                    let status = agent
                        .get(&url)
                        .header("Authorization", format!("Bearer {key}"))
                        .call()
                        .unwrap()
                        .status();
                    if status == 200 {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                    i += 2;
                }
            })
        })
        .collect();

    // A corrupt snapshot (its scores file cut short): refused, reported,
    // and the old one keeps serving.
    publish_copy(&scores, &original, "2026-07-02_20261202T000000", |dir| {
        let path = dir.join("scores.parquet");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    });
    wait_for("the corrupt snapshot to be refused", || {
        get(&format!("{}/readyz", server.base), None).1["last_refused"]["snapshot_id"]
            == "2026-07-02_20261202T000000"
    });
    let (status, ready) = get(&format!("{}/readyz", server.base), None);
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    assert!(ready["last_refused"]["error"].as_str().unwrap().contains("scores.parquet"), "{ready}");
    assert_eq!(snapshot_id(), first);
    assert!(metric(&server.base, "engage_snapshot_reloads_total{result=\"failure\"}") >= 1.0);
    assert_eq!(metric(&server.base, "engage_snapshot_refused"), 1.0);
    let (status, body) = call("POST", &format!("{}/v1/admin/reload", server.base), Some(&k.all), None);
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("snapshot_refused")), "{body}");

    // A schema-incompatible one (an older format): refused too.
    publish_copy(&scores, &original, "2026-07-03_20261202T000000", |dir| {
        let path = dir.join("manifest.json");
        let mut m: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        m["format_version"] = 2.into();
        std::fs::write(&path, serde_json::to_vec(&m).unwrap()).unwrap();
    });
    wait_for("the old-format snapshot to be refused", || {
        get(&format!("{}/readyz", server.base), None).1["last_refused"]["snapshot_id"]
            == "2026-07-03_20261202T000000"
    });
    assert_eq!(snapshot_id(), first);

    // One whose dashboard files are malformed: refused, naming the file.
    publish_copy(&scores, &original, "2026-07-03_20261202T000001", |dir| {
        std::fs::create_dir_all(dir.join("campaigns")).unwrap();
        std::fs::write(dir.join("campaigns/campaigns.json"), "{\"as_of\": 7}").unwrap();
    });
    wait_for("the snapshot with a bad campaigns.json to be refused", || {
        get(&format!("{}/readyz", server.base), None).1["last_refused"]["snapshot_id"]
            == "2026-07-03_20261202T000001"
    });
    let (_, ready) = get(&format!("{}/readyz", server.base), None);
    assert!(ready["last_refused"]["error"].as_str().unwrap().contains("campaigns.json"), "{ready}");
    assert_eq!(snapshot_id(), first);

    // One whose identity lookup names an email twice: refused, naming the
    // file, the row and the value.
    publish_copy(&scores, &original, "2026-07-03_20261202T000002", |dir| {
        let path = dir.join("identities.parquet");
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(Result::unwrap).collect();
        let kinds = batches[0].column(0).as_string::<i32>();
        let email = (0..batches[0].num_rows()).find(|&i| kinds.value(i) == "email").unwrap();
        let mut writer = engage_pipeline::datafusion::parquet::arrow::ArrowWriter::try_new(
            std::fs::File::create(&path).unwrap(),
            batches[0].schema(),
            None,
        )
        .unwrap();
        for batch in batches.iter().chain([&batches[0].slice(email, 1)]) {
            writer.write(batch).unwrap();
        }
        writer.close().unwrap();
    });
    wait_for("the snapshot with a repeated identifier to be refused", || {
        get(&format!("{}/readyz", server.base), None).1["last_refused"]["snapshot_id"]
            == "2026-07-03_20261202T000002"
    });
    let (_, ready) = get(&format!("{}/readyz", server.base), None);
    let error = ready["last_refused"]["error"].as_str().unwrap();
    assert!(error.contains("identities.parquet") && error.contains("appears twice"), "{ready}");
    assert_eq!(snapshot_id(), first);

    // A good one: swapped in by the watcher. The dashboard's history leaves
    // out the unreadable earlier snapshots and says so.
    publish_copy(&scores, &original, "2026-07-04_20261202T000000", |_| {});
    wait_for("the good snapshot to be served", || snapshot_id() == "2026-07-04_20261202T000000");
    let (_, ready) = get(&format!("{}/readyz", server.base), None);
    assert!(ready.get("last_refused").is_none(), "{ready}");
    let (status, body) = call("POST", &format!("{}/v1/admin/reload", server.base), Some(&k.all), None);
    assert_eq!((status, body["reloaded"].as_bool()), (200, Some(false)), "{body}");
    let page = agent()
        .get(&format!("{}/dashboard", server.base))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(page.contains("Sign in"), "the dashboard asks for a key first");
    let no_redirects =
        ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().new_agent();
    let login = |key: &str| {
        no_redirects.post(&format!("{}/dashboard/login", server.base)).send_form([("key", key)]).unwrap()
    };
    assert_eq!(login(&k.audiences).status(), 403, "a key without scores:read");
    assert_eq!(login("ek_not-a-key").status(), 401);
    let signed = login(&k.scores);
    assert_eq!(signed.status(), 303);
    let cookie = signed.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/dashboard"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    let session = cookie.split(';').next().unwrap();
    let mut page =
        agent().get(&format!("{}/dashboard", server.base)).header("Cookie", session).call().unwrap();
    let csp = page.headers().get("content-security-policy").unwrap().to_str().unwrap().to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let page = page.body_mut().read_to_string().unwrap();
    assert!(
        page.contains("snapshot 2026-07-02_20261202T000000 left out of the history"),
        "the note on the corrupt one"
    );

    stop.store(true, Ordering::Relaxed);
    workers.into_iter().for_each(|w| w.join().unwrap());
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(ok > 100 && failed == 0, "{ok} answered, {failed} not 200 during reloads");
    assert!(metric(&server.base, "engage_snapshot_reloads_total{result=\"success\"}") >= 2.0);
    assert_eq!(metric(&server.base, "engage_snapshot_refused"), 0.0);
    let count = metric(
        &server.base,
        "engage_http_requests_total{route=\"/v1/customers/{id}/scores\",status=\"200\"}",
    );
    assert!(count >= ok as f64, "{count} counted, {ok} answered");
}

#[test]
fn a_server_without_a_snapshot_is_not_ready_until_one_is_published() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let scores = tmp.path().join("scores");
    std::fs::create_dir_all(scores.join("snapshots")).unwrap();
    let server = start(&scores, |c| c.watch_interval_ms = 50);
    let (status, body) = get(&format!("{}/readyz", server.base), None);
    assert_eq!((status, body["status"].as_str()), (503, Some("not_ready")));
    let (status, body) = get(&format!("{}/v1/customers/C0000001/scores", server.base), Some(&keys().scores));
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("not_ready")));
    assert_eq!(metric(&server.base, "engage_snapshot_loaded"), 0.0);
    publish_copy(&scores, &current_dir(&f.scores), "2026-07-01_20261202T000000", |_| {});
    wait_for("the first snapshot", || get(&format!("{}/readyz", server.base), None).0 == 200);
    assert_eq!(get(&format!("{}/v1/customers/C0000001/scores", server.base), Some(&keys().scores)).0, 200);
}

/// Sends raw bytes; the answer's status and text, `None` if the server
/// closed the connection without one.
fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text.strip_prefix("HTTP/1.1 ").and_then(|t| t.get(..3)).map(|c| c.parse().unwrap())?;
    Some((status, text))
}

#[test]
fn request_ids_are_echoed_when_sane_and_made_otherwise() {
    let f = fixture();
    let server = start(&f.scores, |_| {});
    let id_of = |given: Option<&str>| {
        let header = given.map(|g| format!("X-Request-Id: {g}\r\n")).unwrap_or_default();
        let request = format!("GET /healthz HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{header}\r\n");
        let (status, text) = raw(server.addr, request.as_bytes()).unwrap();
        assert_eq!(status, 200, "{text}");
        let line = text.lines().find(|l| l.to_lowercase().starts_with("x-request-id:")).expect("an id");
        line["x-request-id:".len()..].trim().to_string()
    };
    let longest = "a".repeat(64);
    for sane in ["abc-123_X", longest.as_str()] {
        assert_eq!(id_of(Some(sane)), sane);
    }
    // Made here: `<pid in hex>-<counter>`, a new one per request.
    let made = |id: &str| {
        let (pid, n) = id.split_once('-').expect("pid-counter");
        u32::from_str_radix(pid, 16).is_ok() && n.parse::<u64>().is_ok()
    };
    let too_long = "a".repeat(65);
    for insane in [None, Some("two words"), Some("semi;colon"), Some(too_long.as_str())] {
        let id = id_of(insane);
        assert!(made(&id), "{insane:?} -> {id}");
    }
    assert_ne!(id_of(None), id_of(None));
}

#[test]
fn cors_is_off_unless_origins_are_configured() {
    let f = fixture();
    let preflight = |addr, origin: &str| {
        let request = format!(
            "OPTIONS /v1/customers/C0000001/scores HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\
             Origin: {origin}\r\nAccess-Control-Request-Method: GET\r\n\
             Access-Control-Request-Headers: authorization\r\n\r\n"
        );
        raw(addr, request.as_bytes()).unwrap().1.to_lowercase()
    };
    let closed = start(&f.scores, |_| {});
    assert!(!preflight(closed.addr, "https://crm.example.com").contains("access-control-allow-origin"));
    let open = start(&f.scores, |c| c.cors_origins = vec!["https://crm.example.com".into()]);
    let answer = preflight(open.addr, "https://crm.example.com");
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("access-control-allow-origin: https://crm.example.com"), "{answer}");
    assert!(!preflight(open.addr, "https://evil.example.com").contains("access-control-allow-origin"));
}

#[test]
fn malformed_requests_never_get_a_server_error() {
    let f = fixture();
    let server = start(&f.scores, |c| c.max_body_bytes = 4096);
    let key = keys().all.clone();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let junk = |rng: &mut rand_chacha::ChaCha8Rng| -> String {
        let pieces = [
            "%",
            "%zz",
            "%00",
            "%FF%FE",
            "..",
            "/",
            "?",
            "&",
            "=",
            "#",
            "{",
            "}",
            ":",
            "@",
            "+",
            "%2F",
            "é",
            "\u{1F600}",
            "C0000001",
            "a",
            " ",
            "~",
            "'",
            "\"",
            "\\",
            "NaN",
            "-1",
            "99999999999999999999",
        ];
        let n = rng.gen_range(0..12);
        let mut s: String = (0..n).map(|_| pieces[rng.gen_range(0..pieces.len())]).collect();
        if rng.gen_bool(0.05) {
            s.push_str(&"x".repeat(rng.gen_range(1000..9000)));
        }
        s
    };
    let mut answered = 0;
    for _ in 0..400 {
        let method =
            ["GET", "POST", "PUT", "DELETE", "OPTIONS", "HEAD", "PATCH", "BREW"][rng.gen_range(0..8)];
        let path = match rng.gen_range(0..7) {
            0 => format!("/v1/customers/{}/scores?id_type={}", junk(&mut rng), junk(&mut rng)),
            1 => format!(
                "/v1/audiences/{}?cursor={}&limit={}&group={}",
                junk(&mut rng),
                junk(&mut rng),
                junk(&mut rng),
                junk(&mut rng)
            ),
            2 => "/v1/scores:batch".to_string(),
            3 => format!("/v1/{}", junk(&mut rng)),
            4 => format!("/{}", junk(&mut rng)),
            5 => format!("/v1/admin/reload?{}", junk(&mut rng)),
            _ => format!("/v1/customers/C0000001/scores?{}={}", junk(&mut rng), junk(&mut rng)),
        };
        let path: String = path.chars().map(|c| if c == ' ' || c.is_control() { '+' } else { c }).collect();
        let body = match rng.gen_range(0..6) {
            0 => String::new(),
            1 => json!({"items": [{"id": junk(&mut rng), "id_type": junk(&mut rng)}]}).to_string(),
            2 => "[".repeat(rng.gen_range(1..3000)),
            3 => format!("{{\"items\": {}}}", junk(&mut rng)),
            4 => junk(&mut rng),
            _ => json!({"items": (0..rng.gen_range(0..2000)).map(|i| json!({"id": format!("C{i:07}")})).collect::<Vec<_>>()}).to_string(),
        };
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
        match rng.gen_range(0..4) {
            0 => head += &format!("Authorization: Bearer {key}\r\n"),
            1 => head += &format!("Authorization: {}\r\n", junk(&mut rng).replace(['\r', '\n'], "")),
            2 => head += &format!("X-Request-Id: {}\r\n", junk(&mut rng).replace(['\r', '\n'], "")),
            _ => {}
        }
        if rng.gen_bool(0.7) {
            head += "Content-Type: application/json\r\n";
        }
        head += &format!("Content-Length: {}\r\n\r\n", body.len());
        let mut request = head.into_bytes();
        request.extend(body.as_bytes());
        if let Some((status, _)) = raw(server.addr, &request) {
            assert!(status < 500, "{status} for {method} {path} with body {:.200}", body);
            answered += 1;
        }
    }
    assert!(answered > 350, "{answered} of 400 got an answer");
    assert_eq!(get(&format!("{}/healthz", server.base), None).0, 200);
}

#[test]
fn the_serve_command_logs_without_keys_or_identifiers_and_stops_gracefully() {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let (key, hash) = generate_key();
    let config = tmp.path().join("serve.toml");
    std::fs::write(
        &config,
        format!(
            "scores = \"{}\"\nbind = \"127.0.0.1:0\"\n[[api_keys]]\nname = \"call-center\"\nsha256 = \"{hash}\"\nscopes = [\"scores:read\"]\n",
            f.scores.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_engage"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("ENGAGE_LOG", "debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let addr = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no address in:\n{log}");
        log += &line;
        if let Some(a) = line.trim().rsplit_once("http://") {
            break a.1.to_string();
        }
    };
    // An email as the customers table has it.
    let customers = read(&f.data.join("customers"));
    let email =
        texts(&customers, "email").into_iter().flatten().find(|e| e.contains('@') && e.len() > 12).unwrap();
    let (status, _) =
        get(&format!("http://{addr}/v1/customers/{}/scores?id_type=email", encode(&email)), Some(&key));
    assert!(status == 200 || status == 404, "{status}");
    assert_eq!(get(&format!("http://{addr}/v1/customers/C0000001/scores"), Some(&key)).0, 200);
    // A batch request in flight: its head and half its body sent.
    let body = r#"{"items":[{"id":"C0000001"},{"id":"C0000002"}]}"#;
    let mut in_flight = std::net::TcpStream::connect(&addr).unwrap();
    in_flight.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        in_flight,
        "POST /v1/scores:batch HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..20]
    )
    .unwrap();
    in_flight.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: the server stops accepting connections...
    let killed =
        std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting connections 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    // ...finishes the request in flight, then exits with status 0.
    in_flight.write_all(&body.as_bytes()[20..]).unwrap();
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("C0000001") && answer.contains("C0000002"), "{answer}");
    stderr.read_to_string(&mut log).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("snapshot loaded"), "{log}");
    assert!(log.contains("request_id=") && log.contains("route=/v1/customers/{id}/scores"), "{log}");
    assert!(log.contains("caller=call-center"), "{log}");
    let local = &email[..email.find('@').unwrap()];
    assert!(log.contains(&format!("{}***@", local.chars().next().unwrap())), "the email is masked:\n{log}");
    assert!(!log.contains(local), "the email's local part is in the log:\n{log}");
    assert!(!log.contains(&key) && !log.contains(&key[3..20]), "the key is in the log");
}
