//! Request counters and latency histograms, rendered in the Prometheus text
//! format with the snapshot gauges ([`crate::state::Served::metrics_text`]).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Statuses counted without a lock; others go to [`RouteStats::other`].
const STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 405, 409, 413, 422, 500, 503, 504];

#[derive(Default)]
struct RouteStats {
    by_status: [AtomicU64; STATUSES.len()],
    other: Mutex<BTreeMap<u16, u64>>,
    /// Per bucket (not cumulative), the last one for slower requests.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// Requests by route pattern (never the raw path: it may hold an email).
#[derive(Default)]
pub struct Metrics {
    routes: RwLock<HashMap<String, Arc<RouteStats>>>,
    pub reload_successes: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Metrics {
    /// Counts one answered request.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let stats = self.routes.read().expect("metrics lock").get(route).cloned();
        let stats = match stats {
            Some(s) => s,
            None => self.routes.write().expect("metrics lock").entry(route.to_string()).or_default().clone(),
        };
        match STATUSES.iter().position(|&s| s == status) {
            Some(i) => _ = stats.by_status[i].fetch_add(1, Ordering::Relaxed),
            None => *stats.other.lock().expect("metrics lock").entry(status).or_default() += 1,
        }
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        stats.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stats.sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// The request metrics in the Prometheus text format.
    pub fn render_requests(&self, out: &mut String) {
        let routes = self.routes.read().expect("metrics lock");
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        out.push_str(
            "# HELP engage_http_requests_total HTTP requests answered, by route pattern and status.\n",
        );
        out.push_str("# TYPE engage_http_requests_total counter\n");
        for name in &names {
            let stats = &routes[*name];
            let mut counts: BTreeMap<u16, u64> = stats.other.lock().expect("metrics lock").clone();
            for (i, &status) in STATUSES.iter().enumerate() {
                let n = stats.by_status[i].load(Ordering::Relaxed);
                if n > 0 {
                    counts.insert(status, n);
                }
            }
            for (status, n) in &counts {
                let _ = writeln!(
                    out,
                    "engage_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(name)
                );
            }
        }
        out.push_str("# HELP engage_http_request_duration_seconds Time to answer, by route pattern.\n");
        out.push_str("# TYPE engage_http_request_duration_seconds histogram\n");
        for name in &names {
            let stats = &routes[*name];
            let route = escape(name);
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).enumerate() {
                cumulative += stats.buckets[i].load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "engage_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = stats.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
            let _ = writeln!(out, "engage_http_request_duration_seconds_sum{{route=\"{route}\"}} {sum}");
            let _ =
                writeln!(out, "engage_http_request_duration_seconds_count{{route=\"{route}\"}} {cumulative}");
        }
    }
}

/// A Prometheus label value.
pub fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
