//! Request counters and latency histograms, rendered in the Prometheus text
//! format with the snapshot gauges ([`crate::state::Served::metrics_text`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, seconds.
const BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// Statuses counted without a lock; others go to [`Metrics::other`].
const STATUSES: [u16; 12] = [200, 400, 401, 403, 404, 405, 409, 413, 422, 500, 503, 504];

/// The route patterns counted (each resource's name in `build_app`, which
/// checks that its routes are listed), and `unmatched` for paths no route
/// takes. A fixed list: counting a request takes no lock.
pub const ROUTES: [&str; 16] = [
    "/v1/customers/{id}/scores",
    "/v1/scores:batch",
    "/v1/audiences",
    "/v1/audiences/{campaign}",
    "/v1/models",
    "/v1/snapshot",
    "/v1/admin/reload",
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/dashboard",
    "/dashboard/login",
    "/dashboard/logout",
    "/dashboard/customer",
    UNMATCHED,
];
const UNMATCHED: &str = "unmatched";

/// Copies of the counters: each worker thread counts in its own (mostly;
/// past `SHARDS` threads they share), so two workers never write to the
/// same cache line.
const SHARDS: usize = 8;

/// One route's counters in one shard, on cache lines of their own.
#[derive(Default)]
#[repr(align(128))]
struct RouteStats {
    by_status: [AtomicU64; STATUSES.len()],
    /// Per bucket (not cumulative), the last one for slower requests.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
}

/// Requests by route pattern (never the raw path: it may hold an email).
pub struct Metrics {
    /// `SHARDS` blocks of one [`RouteStats`] per entry of [`ROUTES`].
    stats: Box<[RouteStats]>,
    /// Counts of statuses not in [`STATUSES`], by route index.
    other: Mutex<BTreeMap<(usize, u16), u64>>,
    pub reload_successes: AtomicU64,
    pub reload_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            stats: (0..SHARDS * ROUTES.len()).map(|_| RouteStats::default()).collect(),
            other: Mutex::default(),
            reload_successes: AtomicU64::default(),
            reload_failures: AtomicU64::default(),
        }
    }
}

/// The calling thread's shard.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
    SHARD.with(|s| *s)
}

impl Metrics {
    /// Counts one answered request; a route not in [`ROUTES`] is counted as
    /// `unmatched`.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let r = ROUTES.iter().position(|&n| n == route).unwrap_or(ROUTES.len() - 1);
        let stats = &self.stats[shard() * ROUTES.len() + r];
        match STATUSES.iter().position(|&s| s == status) {
            Some(i) => _ = stats.by_status[i].fetch_add(1, Ordering::Relaxed),
            None => *self.other.lock().expect("metrics lock").entry((r, status)).or_default() += 1,
        }
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|&b| secs <= b).unwrap_or(BUCKETS.len());
        stats.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        stats.sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Route `r`'s counters summed over the shards: counts by status,
    /// per bucket, and the sum of latencies in ns.
    fn totals(&self, r: usize) -> (BTreeMap<u16, u64>, [u64; BUCKETS.len() + 1], u64) {
        let mut counts: BTreeMap<u16, u64> = BTreeMap::new();
        let (mut buckets, mut sum_ns) = ([0; BUCKETS.len() + 1], 0);
        for shard in 0..SHARDS {
            let stats = &self.stats[shard * ROUTES.len() + r];
            for (i, &status) in STATUSES.iter().enumerate() {
                *counts.entry(status).or_default() += stats.by_status[i].load(Ordering::Relaxed);
            }
            for (total, b) in buckets.iter_mut().zip(&stats.buckets) {
                *total += b.load(Ordering::Relaxed);
            }
            sum_ns += stats.sum_ns.load(Ordering::Relaxed);
        }
        for ((route, status), n) in self.other.lock().expect("metrics lock").iter() {
            if *route == r {
                *counts.entry(*status).or_default() += n;
            }
        }
        counts.retain(|_, n| *n > 0);
        (counts, buckets, sum_ns)
    }

    /// The request metrics in the Prometheus text format: the routes that
    /// have answered, by name.
    pub fn render_requests(&self, out: &mut String) {
        let mut routes: Vec<(&str, _)> = (0..ROUTES.len())
            .map(|r| (ROUTES[r], self.totals(r)))
            .filter(|(_, (counts, _, _))| !counts.is_empty())
            .collect();
        routes.sort_by_key(|(name, _)| *name);
        out.push_str(
            "# HELP engage_http_requests_total HTTP requests answered, by route pattern and status.\n",
        );
        out.push_str("# TYPE engage_http_requests_total counter\n");
        for (name, (counts, _, _)) in &routes {
            for (status, n) in counts {
                let _ = writeln!(
                    out,
                    "engage_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                    escape(name)
                );
            }
        }
        out.push_str("# HELP engage_http_request_duration_seconds Time to answer, by route pattern.\n");
        out.push_str("# TYPE engage_http_request_duration_seconds histogram\n");
        for (name, (_, buckets, sum_ns)) in &routes {
            let route = escape(name);
            let mut cumulative = 0;
            for (i, le) in BUCKETS.iter().map(|b| b.to_string()).chain(["+Inf".to_string()]).enumerate() {
                cumulative += buckets[i];
                let _ = writeln!(
                    out,
                    "engage_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = *sum_ns as f64 / 1e9;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_by_route_and_status() {
        let metrics = Metrics::default();
        let ms = Duration::from_millis(1);
        std::thread::scope(|s| {
            for _ in 0..2 * SHARDS {
                s.spawn(|| {
                    for _ in 0..100 {
                        metrics.observe("/v1/customers/{id}/scores", 200, ms);
                    }
                    metrics.observe("/v1/customers/{id}/scores", 418, ms);
                    metrics.observe("/no/such/route", 404, ms);
                });
            }
        });
        let mut out = String::new();
        metrics.render_requests(&mut out);
        let threads = 2 * SHARDS;
        for line in [
            format!(
                "engage_http_requests_total{{route=\"/v1/customers/{{id}}/scores\",status=\"200\"}} {}",
                100 * threads
            ),
            format!(
                "engage_http_requests_total{{route=\"/v1/customers/{{id}}/scores\",status=\"418\"}} {threads}"
            ),
            format!("engage_http_requests_total{{route=\"unmatched\",status=\"404\"}} {threads}"),
            format!(
                "engage_http_request_duration_seconds_count{{route=\"/v1/customers/{{id}}/scores\"}} {}",
                101 * threads
            ),
            "engage_http_request_duration_seconds_bucket{route=\"unmatched\",le=\"0.0005\"} 0".to_string(),
            format!(
                "engage_http_request_duration_seconds_bucket{{route=\"unmatched\",le=\"0.001\"}} {threads}"
            ),
        ] {
            assert!(out.contains(&format!("{line}\n")), "{line} not in\n{out}");
        }
        assert!(!out.contains("/healthz"), "routes that never answered are not listed");
    }
}
