//! Identity resolution: normalise identifiers, link the identifiers seen
//! together on any input row into a graph, and give each connected component
//! one stable `customer_key` (the CRM customer_id where it has one).
//!
//! The normalisation rules are here, once, and reach SQL as the functions
//! `norm_email`, `norm_phone` and `norm_id`. `sql/identity/identifier_sets.sql`
//! lists the distinct identifier sets; [`resolve`] unions them (union-find)
//! and returns the identity map; the `*_resolved.sql` views attribute events
//! through it.
//!
//! Over-merging guard: an identifier associated with more CRM customers than
//! [`IdentityOptions::max_customers_per_identifier`] (a shop's phone, a family
//! email, a test address, a shared computer's cookie) links nothing. It is
//! flagged `shared` in the map with a key of its own, so rows that carry only
//! it stay attributable without collapsing people into one.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, StringArray, StringBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
use datafusion::prelude::SessionContext;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Identifier types, in the order rows are resolved.
pub const ID_TYPES: [&str; 5] = ["customer_id", "email", "phone", "loyalty_id", "cookie_id"];

/// How identities are resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IdentityOptions {
    /// Country calling code for phone numbers written without one (digits,
    /// default "1").
    pub default_country_code: String,
    /// An identifier associated with more CRM customers than this links
    /// nothing and is flagged `shared` (default 1).
    pub max_customers_per_identifier: usize,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        IdentityOptions { default_country_code: "1".into(), max_customers_per_identifier: 1 }
    }
}

/// An email, trimmed and lower-cased; `None` unless it has one `@` with text
/// on both sides.
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    (!local.is_empty() && !domain.is_empty() && !domain.contains('@')).then_some(e)
}

/// A phone number in E.164 (`+<country><number>`). Formatting is dropped; a
/// leading `+` or `00` means the number has its country code; otherwise,
/// after dropping one leading trunk `0`, a number of 10 digits or fewer is
/// national and gets `country_code`, and a longer one already starting with
/// `country_code` keeps it. `None` for fewer than 7 or more than 15 digits.
pub fn normalize_phone(raw: &str, country_code: &str) -> Option<String> {
    let t = raw.trim();
    let digits: String = t.chars().filter(|c| c.is_ascii_digit()).collect();
    let (international, digits) = if t.starts_with('+') {
        (true, digits)
    } else if let Some(rest) = digits.strip_prefix("00") {
        (true, rest.to_string())
    } else {
        (false, digits)
    };
    let national = digits.strip_prefix('0').unwrap_or(&digits);
    let e164 = if international {
        digits
    } else if national.len() <= 10 {
        format!("{country_code}{national}")
    } else if digits.starts_with(country_code) {
        digits
    } else {
        return None;
    };
    (7..=15).contains(&e164.len()).then(|| format!("+{e164}"))
}

/// Any other identifier (customer, loyalty, cookie ids): trimmed; `None` if blank.
pub fn normalize_id(raw: &str) -> Option<String> {
    let t = raw.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// A normalisation rule: raw text to the canonical identifier, if any.
type Normalizer = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Registers `norm_email`, `norm_phone` and `norm_id` (Utf8 -> Utf8) in `ctx`.
pub fn register_udfs(ctx: &SessionContext, opts: &IdentityOptions) {
    let cc = opts.default_country_code.clone();
    let udfs: [(&str, Normalizer); 3] = [
        ("norm_email", Arc::new(normalize_email)),
        ("norm_phone", Arc::new(move |s| normalize_phone(s, &cc))),
        ("norm_id", Arc::new(normalize_id)),
    ];
    for (name, f) in udfs {
        let fun = Arc::new(move |args: &[ColumnarValue]| {
            let apply = |v: Option<&str>| v.and_then(|s| f(s));
            Ok(match &args[0] {
                ColumnarValue::Array(a) => {
                    let a = a.as_string::<i32>();
                    let out: StringArray = a.iter().map(apply).collect();
                    ColumnarValue::Array(Arc::new(out))
                }
                ColumnarValue::Scalar(ScalarValue::Utf8(v)) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8(apply(v.as_deref())))
                }
                ColumnarValue::Scalar(other) => {
                    return datafusion::common::exec_err!("{name}: expected text, got {other:?}");
                }
            })
        });
        ctx.register_udf(create_udf(name, vec![DataType::Utf8], DataType::Utf8, Volatility::Immutable, fun));
    }
}

/// What resolution found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct IdentityStats {
    /// Distinct normalised identifiers.
    pub identifiers: u64,
    /// Connected components (resolved customers, CRM or not).
    pub components: u64,
    /// Components holding a CRM customer id.
    pub crm_customers: u64,
    /// Components without one (e.g. cookie-only visitors).
    pub anonymous: u64,
    /// Identifiers flagged as shared (linked nothing).
    pub shared_identifiers: u64,
    /// Identifiers never seen with another identifier (e.g. a cookie that
    /// never logged in): nothing in the data can attribute them.
    pub unlinked_identifiers: u64,
    /// Components that joined two or more CRM customer ids (the smallest id
    /// becomes the key).
    pub crm_merges: u64,
}

/// Matching quality against ground truth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct IdentityQuality {
    /// Identifiers compared (known to both, unambiguous in the truth).
    pub identifiers: u64,
    /// Share of identifier pairs put together that truly belong together.
    pub precision: f64,
    /// Share of truly-together identifier pairs that were put together.
    pub recall: f64,
}

/// The identity map: one row per normalised identifier.
pub fn map_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("identifier_type", DataType::Utf8, false),
        Field::new("identifier_value", DataType::Utf8, false),
        Field::new("customer_key", DataType::Utf8, false),
        Field::new("shared", DataType::Boolean, false),
        Field::new("linked", DataType::Boolean, false),
    ]))
}

/// Resolves identifier sets (batches of `identifier_sets.sql`: `from_crm`
/// plus one column per [`ID_TYPES`]) into the identity map.
pub fn resolve(batches: &[RecordBatch], opts: &IdentityOptions) -> (RecordBatch, IdentityStats) {
    let mut nodes: HashMap<(u8, String), u32> = HashMap::new();
    let mut names: Vec<(u8, String)> = Vec::new();
    let mut sets: Vec<(bool, Vec<u32>)> = Vec::new();
    for b in batches {
        let crm: &BooleanArray = b.column(0).as_boolean();
        let cols: Vec<&StringArray> = (1..=ID_TYPES.len()).map(|i| b.column(i).as_string::<i32>()).collect();
        for row in 0..b.num_rows() {
            let mut set = Vec::with_capacity(2);
            for (t, col) in cols.iter().enumerate() {
                if col.is_valid(row) {
                    let key = (t as u8, col.value(row).to_string());
                    let next = nodes.len() as u32;
                    let id = *nodes.entry(key.clone()).or_insert_with(|| {
                        names.push(key);
                        next
                    });
                    set.push(id);
                }
            }
            if !set.is_empty() {
                sets.push((crm.is_valid(row) && crm.value(row), set));
            }
        }
    }
    drop(nodes);
    let n = names.len();
    let limit = opts.max_customers_per_identifier.max(1);

    // CRM customers each identifier is associated with: through the CRM
    // record itself, or by appearing on a row next to such an identifier.
    // Sets are capped at limit + 1: that is enough to flag.
    let mut anchor: Vec<Vec<u32>> = vec![Vec::new(); n];
    for (from_crm, set) in &sets {
        if let (true, Some(&cid)) = (*from_crm, set.first())
            && names[cid as usize].0 == 0
        {
            for &id in set {
                add_capped(&mut anchor[id as usize], cid, limit + 1);
            }
        }
    }
    // Event rows propagate the anchors of their unambiguous identifiers to
    // the other identifiers on the row (CRM rows were anchored directly;
    // an identifier already tied to too many customers propagates nothing).
    let mut assoc = anchor.clone();
    for (from_crm, set) in &sets {
        if *from_crm || set.len() < 2 {
            continue;
        }
        let mut crms: Vec<u32> = Vec::new();
        for &id in set {
            let a = &anchor[id as usize];
            if a.len() <= limit {
                for &c in a {
                    add_capped(&mut crms, c, limit + 1);
                }
            }
        }
        for &id in set {
            for &c in &crms {
                add_capped(&mut assoc[id as usize], c, limit + 1);
            }
        }
    }
    // A CRM customer id is never shared: it is the anchor itself.
    let crm_ids: Vec<bool> = {
        let mut v = vec![false; n];
        for (from_crm, set) in &sets {
            if *from_crm && names[set[0] as usize].0 == 0 {
                v[set[0] as usize] = true;
            }
        }
        v
    };
    let shared: Vec<bool> =
        assoc.iter().zip(&crm_ids).map(|(a, &is_crm)| a.len() > limit && !is_crm).collect();
    let mut linked = crm_ids.clone();
    for (_, set) in &sets {
        if set.len() > 1 {
            for &id in set {
                linked[id as usize] = true;
            }
        }
    }
    drop(assoc);

    let mut uf = UnionFind::new(n);
    for (_, set) in &sets {
        let mut linked = set.iter().copied().filter(|&id| !shared[id as usize]);
        if let Some(first) = linked.next() {
            for id in linked {
                uf.union(first, id);
            }
        }
    }
    // The key of a component: its smallest CRM customer id, else a hash.
    let mut best: HashMap<u32, (u32, u32)> = HashMap::new(); // root -> (crm id node, crm count)
    for id in 0..n as u32 {
        if crm_ids[id as usize] && !shared[id as usize] {
            let root = uf.find(id);
            let e = best.entry(root).or_insert((id, 0));
            e.1 += 1;
            if names[id as usize].1 < names[e.0 as usize].1 {
                e.0 = id;
            }
        }
    }
    let mut stats = IdentityStats { identifiers: n as u64, ..Default::default() };
    let mut seen_roots: HashMap<u32, String> = HashMap::new();
    let (mut t, mut v, mut k, mut s, mut l) = (
        StringBuilder::new(),
        StringBuilder::new(),
        StringBuilder::new(),
        BooleanBuilder::new(),
        BooleanBuilder::new(),
    );
    for id in 0..n as u32 {
        let (ty, value) = &names[id as usize];
        let key = if shared[id as usize] {
            stats.shared_identifiers += 1;
            hashed("shared", *ty, value)
        } else {
            let root = uf.find(id);
            seen_roots
                .entry(root)
                .or_insert_with(|| match best.get(&root) {
                    Some(&(crm, count)) => {
                        stats.crm_customers += 1;
                        if count > 1 {
                            stats.crm_merges += 1;
                        }
                        names[crm as usize].1.clone()
                    }
                    None => {
                        stats.anonymous += 1;
                        let (rt, rv) = &names[root as usize];
                        hashed("anon", *rt, rv)
                    }
                })
                .clone()
        };
        t.append_value(ID_TYPES[*ty as usize]);
        v.append_value(value);
        k.append_value(key);
        s.append_value(shared[id as usize]);
        l.append_value(linked[id as usize]);
        if !linked[id as usize] {
            stats.unlinked_identifiers += 1;
        }
    }
    stats.components = stats.crm_customers + stats.anonymous;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(t.finish()),
        Arc::new(v.finish()),
        Arc::new(k.finish()),
        Arc::new(s.finish()),
        Arc::new(l.finish()),
    ];
    let batch = RecordBatch::try_new(map_schema(), columns).expect("columns match the map schema");
    (batch, stats)
}

fn add_capped(v: &mut Vec<u32>, x: u32, cap: usize) {
    if v.len() < cap && !v.contains(&x) {
        v.push(x);
    }
}

/// `<prefix>-<16 hex digits>` from an identifier: stable across runs and
/// free of the identifier's value.
fn hashed(prefix: &str, ty: u8, value: &str) -> String {
    let digest = Sha256::digest(format!("{}:{value}", ID_TYPES[ty as usize]).as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

/// Union-find with path halving and union by size.
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind { parent: (0..n as u32).collect(), size: vec![1; n] }
    }
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }
    fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }
}

/// Pairwise precision and recall of a clustering against the truth, over
/// the items both know: precision = share of pairs put together that truly
/// belong together; recall = share of true pairs put together.
pub fn pairwise_quality(resolved: &[String], truth: &[String]) -> (f64, f64) {
    assert_eq!(resolved.len(), truth.len());
    let pairs = |counts: HashMap<(&str, &str), u64>| counts.values().map(|c| c * (c - 1) / 2).sum::<u64>();
    let mut both: HashMap<(&str, &str), u64> = HashMap::new();
    let mut r: HashMap<(&str, &str), u64> = HashMap::new();
    let mut t: HashMap<(&str, &str), u64> = HashMap::new();
    for (a, b) in resolved.iter().zip(truth) {
        *both.entry((a, b)).or_default() += 1;
        *r.entry((a, "")).or_default() += 1;
        *t.entry(("", b)).or_default() += 1;
    }
    let (tp, rp, tpairs) = (pairs(both) as f64, pairs(r) as f64, pairs(t) as f64);
    (if rp == 0.0 { 1.0 } else { tp / rp }, if tpairs == 0.0 { 1.0 } else { tp / tpairs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(normalize_email("  Ann.Lee@Example.COM "), Some("ann.lee@example.com".into()));
        assert_eq!(normalize_email("not-an-email"), None);
        assert_eq!(normalize_email("@example.com"), None);
        assert_eq!(normalize_email("a@b@c"), None);
    }

    #[test]
    fn phones_to_e164() {
        for raw in [
            "+1 555 000 0001",
            "(555) 000-0001",
            "555.000.0001",
            "1-555-000-0001",
            "15550000001",
            "001 555 000 0001",
        ] {
            assert_eq!(normalize_phone(raw, "1"), Some("+15550000001".into()), "{raw}");
        }
        assert_eq!(normalize_phone("020 7946 0018", "44"), Some("+442079460018".into()));
        assert_eq!(normalize_phone("+44 20 7946 0018", "1"), Some("+442079460018".into()));
        assert_eq!(normalize_phone("12345", "1"), None);
        assert_eq!(normalize_phone("call me", "1"), None);
    }

    #[test]
    fn ids() {
        assert_eq!(normalize_id("  L1 "), Some("L1".into()));
        assert_eq!(normalize_id("   "), None);
    }

    /// Identifier sets as `identifier_sets.sql` yields them:
    /// (from_crm, [customer_id, email, phone, loyalty_id, cookie_id]).
    fn sets(rows: &[(bool, [Option<&str>; 5])]) -> RecordBatch {
        let mut columns: Vec<ArrayRef> =
            vec![Arc::new(BooleanArray::from(rows.iter().map(|r| r.0).collect::<Vec<_>>()))];
        let mut fields = vec![Field::new("from_crm", DataType::Boolean, false)];
        for (i, name) in ID_TYPES.iter().enumerate() {
            columns.push(Arc::new(StringArray::from(rows.iter().map(|r| r.1[i]).collect::<Vec<_>>())));
            fields.push(Field::new(*name, DataType::Utf8, true));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    fn keys(map: &RecordBatch) -> HashMap<String, (String, bool)> {
        let (t, v, k) = (
            map.column(0).as_string::<i32>(),
            map.column(1).as_string::<i32>(),
            map.column(2).as_string::<i32>(),
        );
        let shared = map.column(3).as_boolean();
        (0..map.num_rows())
            .map(|i| (format!("{}:{}", t.value(i), v.value(i)), (k.value(i).to_string(), shared.value(i))))
            .collect()
    }

    #[test]
    fn links_transitively_and_guards_shared_identifiers() {
        let batch = sets(&[
            (true, [Some("C1"), Some("a@x.test"), Some("+15550000001"), None, None]),
            (true, [Some("C2"), Some("b@x.test"), None, None, None]),
            (true, [Some("C3"), Some("family@x.test"), None, None, None]),
            (true, [Some("C4"), Some("family@x.test"), None, Some("L4"), None]),
            // k1 seen with C1's email, k2 with k1: both reach C1.
            (false, [None, Some("a@x.test"), None, None, Some("k1")]),
            (false, [None, None, None, None, Some("k1")]),
            (false, [None, None, None, None, Some("k2")]),
            (false, [None, None, Some("+15550000001"), None, Some("k2")]),
            // A cookie used by C1 and C2 (a shared computer) merges no one.
            (false, [None, Some("a@x.test"), None, None, Some("k9")]),
            (false, [None, Some("b@x.test"), None, None, Some("k9")]),
            // Only ever seen alone: anonymous.
            (false, [None, None, None, None, Some("k3")]),
        ]);
        let (map, stats) = resolve(&[batch], &IdentityOptions::default());
        let k = keys(&map);
        assert_eq!(k["cookie_id:k1"], ("C1".into(), false));
        assert_eq!(k["cookie_id:k2"], ("C1".into(), false), "transitive through the phone");
        assert!(k["email:family@x.test"].1, "two CRM customers share it");
        assert!(k["email:family@x.test"].0.starts_with("shared-"));
        assert_eq!(k["customer_id:C3"], ("C3".into(), false));
        assert_eq!(k["loyalty_id:L4"], ("C4".into(), false), "C4 keeps its own identifiers");
        assert!(k["cookie_id:k9"].1);
        assert_eq!(k["email:b@x.test"], ("C2".into(), false), "the shared cookie did not merge C1 and C2");
        assert!(k["cookie_id:k3"].0.starts_with("anon-"));
        assert_eq!(stats.crm_customers, 4);
        assert_eq!(stats.anonymous, 1);
        assert_eq!(stats.shared_identifiers, 2);
        assert_eq!(stats.crm_merges, 0);
        assert_eq!(stats.unlinked_identifiers, 1, "k3");

        // With a looser limit the family email links C3 and C4.
        let loose = IdentityOptions { max_customers_per_identifier: 2, ..IdentityOptions::default() };
        let batch = sets(&[
            (true, [Some("C3"), Some("family@x.test"), None, None, None]),
            (true, [Some("C4"), Some("family@x.test"), None, None, None]),
        ]);
        let (map, stats) = resolve(&[batch], &loose);
        assert_eq!(keys(&map)["customer_id:C4"].0, "C3", "the smallest CRM id keys the merged customer");
        assert_eq!(stats.crm_merges, 1);
    }

    #[test]
    fn pairwise_by_hand() {
        // Truth: {a,b,c} {d}. Resolved: {a,b} {c,d}.
        // Resolved pairs: ab, cd (2); true pairs: ab, ac, bc (3); both: ab.
        let resolved: Vec<String> = ["x", "x", "y", "y"].iter().map(|s| s.to_string()).collect();
        let truth: Vec<String> = ["1", "1", "1", "2"].iter().map(|s| s.to_string()).collect();
        assert_eq!(pairwise_quality(&resolved, &truth), (0.5, 1.0 / 3.0));
    }
}
