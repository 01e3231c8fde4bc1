//! Identity resolution: normalise identifiers, link the identifiers seen
//! together on any input row into a graph, and give each connected component
//! one stable `customer_key` (the CRM customer_id where it has one).
//!
//! The normalisation rules are in `engage_models::identifier`, shared with
//! the server's lookups. [`GraphBuilder`] reads every row's identifiers
//! once, unions them (union-find) into customers and returns the identity
//! map and, for each event row, the customer it goes to
//! ([`Resolution::attribute`]).
//!
//! Over-merging guard: an identifier associated with more CRM customers than
//! [`IdentityOptions::max_customers_per_identifier`] (a shop's phone, a family
//! email, a test address, a shared computer's cookie) links nothing. It is
//! flagged `shared` in the map with a key of its own, so rows that carry only
//! it stay attributable without collapsing people into one.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, BooleanBuilder, Int32Array, StringArray, StringBuilder,
    UInt8Array, UInt32Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::erasure::ErasureList;
use crate::error::Result;
pub use engage_models::identifier::{check_country_code, normalize_email, normalize_id, normalize_phone};
use sha2::{Digest, Sha256};

/// Identifiers per chunk of the identity map ([`GraphBuilder::resolve`]).
const MAP_CHUNK: usize = 65_536;

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

/// An identifier of type `identifier_type` (one of [`ID_TYPES`]) normalised
/// by its type's rule; `None` when it is no identifier.
pub fn normalize(identifier_type: &str, raw: &str, opts: &IdentityOptions) -> Option<String> {
    match identifier_type {
        "email" => normalize_email(raw),
        "phone" => normalize_phone(raw, &opts.default_country_code),
        _ => normalize_id(raw),
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
    /// People on the erasure list found in the data (left out of the map
    /// and of every output).
    #[serde(default)]
    pub erased_customers: u64,
    /// Their identifiers (not counted in `identifiers`).
    #[serde(default)]
    pub erased_identifiers: u64,
    /// Components that joined two or more CRM customer ids (the smallest id
    /// becomes the key).
    pub crm_merges: u64,
    /// Bytes the identity graph held at its largest, built and resolved:
    /// counted against the engine's memory limit.
    #[serde(default)]
    pub graph_bytes: u64,
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

/// The customer keys of a resolution ([`Resolution::key_chunks`]); the
/// attributed events carry `customer_no`.
pub fn key_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("customer_no", DataType::UInt32, false),
        Field::new("customer_key", DataType::Utf8, false),
        Field::new("crm", DataType::Boolean, false),
    ]))
}

/// A chunk of the identity map's columns: identifier type, identifier
/// value, customer key, shared.
pub fn map_columns(chunk: &RecordBatch) -> (&StringArray, &StringArray, &StringArray, &BooleanArray) {
    let text = |i: usize| chunk.column(i).as_string::<i32>();
    (text(0), text(1), text(2), chunk.column(3).as_boolean())
}

type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// No identifier (in a set slot) or no usable identifier (for a row).
const NONE: u32 = u32::MAX;
/// Tag of a row reference that points at a multi-identifier set.
const SET: u32 = 1 << 31;

/// The identifiers seen together on one row: one node per [`ID_TYPES`]
/// slot, [`NONE`] where the row has none of that type.
type IdSet = [u32; ID_TYPES.len()];

fn members(set: &IdSet) -> impl Iterator<Item = u32> + '_ {
    set.iter().copied().filter(|&n| n != NONE)
}

/// Strings numbered in the order they were added, all in one buffer: no
/// allocation and no pointer to chase per string (millions of identifiers).
#[derive(Default)]
struct Texts {
    text: String,
    ends: Vec<u64>,
}

impl Texts {
    fn len(&self) -> usize {
        self.ends.len()
    }
    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }
    fn push(&mut self, s: &str) -> u32 {
        self.text.push_str(s);
        self.ends.push(self.text.len() as u64);
        (self.ends.len() - 1) as u32
    }
    fn heap_bytes(&self) -> usize {
        self.text.capacity() + vec_bytes(&self.ends)
    }
}

/// Bytes a vector's allocation takes.
fn vec_bytes<T>(v: &Vec<T>) -> usize {
    v.capacity() * std::mem::size_of::<T>()
}

/// Distinct (type, string) pairs numbered in order of first sight. The hash
/// table holds only their numbers, 4 bytes a slot; the strings are in
/// [`Texts`]. Hashes are of the (type, string) pair, by the builder's
/// hasher.
#[derive(Default)]
struct Interner {
    texts: Texts,
    types: Vec<u8>,
    table: hashbrown::HashTable<u32>,
}

impl Interner {
    fn get(&self, i: u32) -> (u8, &str) {
        (self.types[i as usize], self.texts.get(i))
    }
    fn find(&self, hash: u64, ty: u8, s: &str) -> Option<u32> {
        self.table.find(hash, |&i| self.get(i) == (ty, s)).copied()
    }
    fn push(&mut self, hasher: &foldhash::fast::RandomState, hash: u64, ty: u8, s: &str) -> u32 {
        let i = self.texts.push(s);
        self.types.push(ty);
        let Interner { texts, types, table } = self;
        table.insert_unique(hash, i, |&j| hasher.hash_one((types[j as usize], texts.get(j))));
        i
    }
    /// The strings and their types, without the hash table.
    fn text_bytes(&self) -> usize {
        self.texts.heap_bytes() + vec_bytes(&self.types)
    }
}

/// Builds the identity graph from input rows in one pass: every identifier
/// is normalised (unless it is already a node's normal spelling) and
/// interned as a node, and each row's identifiers are recorded as a set
/// (distinct multi-identifier sets only: a row with one identifier links
/// nothing).
/// [`GraphBuilder::add_events`] hands back one reference per row that
/// [`Resolution::attribute`] turns into the row's customer, so attribution
/// needs neither a second normalisation nor a join.
///
/// Memory is what limits the graph: it cannot spill, and the engine counts
/// it against its memory limit ([`GraphBuilder::heap_bytes`], and the
/// `reserve` calls of [`GraphBuilder::resolve`]). So it holds numbers, not
/// strings: a node is its value's place in
/// one text buffer and a 4-byte hash slot; a normal spelling finds its node
/// directly (normalising is idempotent) and any other is normalised each
/// time it is met: remembering the other spellings cost more memory than
/// the nodes themselves' text (3.2 M spellings at 1M customers) to save
/// normalising 7.5 M identifiers, a fraction of a second; an identifier
/// set is found through a table of set numbers.
pub struct GraphBuilder {
    opts: IdentityOptions,
    hasher: foldhash::fast::RandomState,
    /// Normalised identifiers: the nodes.
    nodes: Interner,
    /// Identifier sets of CRM records (the customers table).
    crm: Vec<IdSet>,
    /// Distinct multi-identifier sets of event rows, and a table of their
    /// numbers.
    sets: Vec<IdSet>,
    set_ids: hashbrown::HashTable<u32>,
    /// When one graph serves several cutoffs ([`GraphBuilder::dated`]): the
    /// day each node and each set was first seen.
    seen: Option<Seen>,
    /// Resolved by [`GraphBuilder::resolve_before`]: its hash tables are
    /// gone, it takes no more rows.
    sealed: bool,
}

/// The day (since 1970-01-01) each node and each set of a dated graph was
/// first seen on an event row; a CRM record's identifiers are always there
/// ([`i32::MIN`]). The graph as it stood before a cutoff is the nodes and
/// sets first seen before it: an event row before the cutoff only ever
/// names those.
#[derive(Default)]
struct Seen {
    nodes: Vec<i32>,
    sets: Vec<i32>,
}

/// Identifier columns of one batch: (index into [`ID_TYPES`], values).
pub type IdColumns<'a> = [(usize, &'a StringArray)];

impl GraphBuilder {
    pub fn new(opts: &IdentityOptions) -> GraphBuilder {
        GraphBuilder {
            opts: opts.clone(),
            hasher: Default::default(),
            nodes: Interner::default(),
            crm: Vec::new(),
            sets: Vec::new(),
            set_ids: hashbrown::HashTable::new(),
            seen: None,
            sealed: false,
        }
    }

    /// A graph that remembers when each identifier and each identifier set
    /// was first seen, so that it can be resolved as it stood before any
    /// cutoff ([`GraphBuilder::resolve_before`]), once per cutoff, from one
    /// pass over the rows. Events are then added with their days.
    pub fn dated(opts: &IdentityOptions) -> GraphBuilder {
        GraphBuilder { seen: Some(Seen::default()), ..GraphBuilder::new(opts) }
    }

    /// Bytes the graph's allocations hold.
    pub fn heap_bytes(&self) -> usize {
        self.nodes.text_bytes()
            + self.nodes.table.allocation_size()
            + vec_bytes(&self.crm)
            + vec_bytes(&self.sets)
            + self.set_ids.allocation_size()
            + self.seen.as_ref().map_or(0, |s| vec_bytes(&s.nodes) + vec_bytes(&s.sets))
    }

    /// The node of `raw`, first seen on `day` unless seen before.
    fn node(&mut self, ty: usize, raw: &str, day: i32) -> u32 {
        let n = self.intern(ty, raw);
        if let Some(seen) = self.seen.as_mut().filter(|_| n != NONE) {
            match seen.nodes.get_mut(n as usize) {
                Some(first) => *first = (*first).min(day),
                None => seen.nodes.push(day),
            }
        }
        n
    }

    fn intern(&mut self, ty: usize, raw: &str) -> u32 {
        let ty = ty as u8;
        let hash = self.hasher.hash_one((ty, raw));
        if let Some(n) = self.nodes.find(hash, ty, raw) {
            return n;
        }
        let Some(value) = normalize(ID_TYPES[ty as usize], raw, &self.opts) else {
            return NONE;
        };
        let vhash = if value == raw { hash } else { self.hasher.hash_one((ty, value.as_str())) };
        match self.nodes.find(vhash, ty, &value) {
            Some(n) => n,
            None => {
                assert!(self.nodes.texts.len() < SET as usize, "more than 2^31 distinct identifiers");
                self.nodes.push(&self.hasher, vhash, ty, &value)
            }
        }
    }

    fn row_set(&mut self, columns: &IdColumns, row: usize, day: i32) -> IdSet {
        let mut set = [NONE; ID_TYPES.len()];
        for &(ty, values) in columns {
            if values.is_valid(row) {
                set[ty] = self.node(ty, values.value(row), day);
            }
        }
        set
    }

    /// Adds CRM records (rows of the customers table). Their customer_id
    /// (type 0) is a CRM customer and anchors the record's other identifiers.
    pub fn add_crm(&mut self, columns: &IdColumns, rows: usize) {
        assert!(!self.sealed, "rows added to a resolved graph");
        for row in 0..rows {
            let set = self.row_set(columns, row, i32::MIN);
            if set[0] != NONE {
                self.crm.push(set);
            }
        }
    }

    /// Adds event rows, with each row's day (since 1970-01-01) when the
    /// graph is [dated](GraphBuilder::dated); returns one reference per row
    /// for [`Resolution::attribute`].
    pub fn add_events(&mut self, columns: &IdColumns, rows: usize, days: Option<&[i32]>) -> Vec<u32> {
        assert!(!self.sealed, "rows added to a resolved graph");
        assert_eq!(
            self.seen.is_some(),
            days.is_some(),
            "a dated graph, and only one, is given the rows' days"
        );
        let mut refs = Vec::with_capacity(rows);
        for row in 0..rows {
            let day = days.map_or(i32::MIN, |d| d[row]);
            let set = self.row_set(columns, row, day);
            let mut present = members(&set);
            let r = match (present.next(), present.next()) {
                (None, _) => NONE,
                (Some(n), None) => n,
                _ => {
                    let hash = self.hasher.hash_one(set);
                    let sets = &self.sets;
                    let id = match self.set_ids.find(hash, |&i| sets[i as usize] == set) {
                        Some(&id) => id,
                        None => {
                            let id = self.sets.len() as u32;
                            self.sets.push(set);
                            let (sets, hasher) = (&self.sets, &self.hasher);
                            self.set_ids.insert_unique(hash, id, |&i| hasher.hash_one(sets[i as usize]));
                            id
                        }
                    };
                    if let Some(seen) = self.seen.as_mut() {
                        match seen.sets.get_mut(id as usize) {
                            Some(first) => *first = (*first).min(day),
                            None => seen.sets.push(day),
                        }
                    }
                    SET | id
                }
            };
            refs.push(r);
        }
        refs
    }

    /// Resolves the graph: flags shared identifiers, unions the rest into
    /// connected components and keys each one. Every per-identifier array
    /// is dropped as soon as it has served, so that the peak is the nodes,
    /// the keys and the identity map being built.
    /// The identity map goes to `map` in chunks as it is built (under a
    /// memory limit, straight to disk), so it is never whole in memory
    /// beside the graph. `reserve` is told the bytes held at each step's
    /// largest (an error from it stops resolution).
    pub fn resolve(
        self,
        erasure: &ErasureList,
        map: &mut dyn FnMut(RecordBatch) -> Result<()>,
        reserve: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Resolution> {
        let GraphBuilder { opts, mut nodes, crm, sets, set_ids, .. } = self;
        drop((set_ids, std::mem::take(&mut nodes.table)));
        let snapshot = Snapshot {
            opts: &opts,
            nodes: &nodes,
            set_bytes: vec_bytes(&crm) + vec_bytes(&sets),
            crm: Cow::Owned(crm),
            sets: Cow::Owned(sets),
            before: None,
        };
        snapshot.resolve(erasure, map, reserve)
    }

    /// [`GraphBuilder::resolve`] for the graph as it stood before the day
    /// `before` (days since 1970-01-01; `None`: every row added) of a
    /// [dated](GraphBuilder::dated) graph, which stays for another cutoff.
    /// The first call drops the hash tables that only adding rows needs;
    /// `reserve` is told the bytes the graph holds too.
    pub fn resolve_before(
        &mut self,
        before: Option<i32>,
        erasure: &ErasureList,
        map: &mut dyn FnMut(RecordBatch) -> Result<()>,
        reserve: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Resolution> {
        let seen = self.seen.as_ref().expect("a dated graph");
        if !self.sealed {
            self.sealed = true;
            self.set_ids = hashbrown::HashTable::new();
            self.nodes.table = hashbrown::HashTable::new();
        }
        let snapshot = Snapshot {
            opts: &self.opts,
            nodes: &self.nodes,
            set_bytes: vec_bytes(&self.crm)
                + vec_bytes(&self.sets)
                + vec_bytes(&seen.nodes)
                + vec_bytes(&seen.sets),
            crm: Cow::Borrowed(&self.crm),
            sets: Cow::Borrowed(&self.sets),
            before: before.map(|day| (seen, day)),
        };
        snapshot.resolve(erasure, map, reserve)
    }
}

/// The parts of a dated graph kept between runs (the checked-inputs cache,
/// [`crate::cache`]): its nodes (type, normalised value, first day seen),
/// the CRM records' identifier sets and the events' (with their first
/// day), one slot per [`ID_TYPES`] entry (`u32::MAX`: none). A row's place
/// is its number, so the events' references stay valid.
pub struct GraphParts {
    pub nodes: Vec<RecordBatch>,
    pub crm: Vec<RecordBatch>,
    pub sets: Vec<RecordBatch>,
}

impl GraphParts {
    pub fn nodes_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("identifier_type", DataType::UInt8, false),
            Field::new("identifier_value", DataType::Utf8, false),
            Field::new("first_seen", DataType::Int32, false),
        ]))
    }

    pub fn crm_schema() -> SchemaRef {
        Arc::new(Schema::new(Self::slots()))
    }

    pub fn sets_schema() -> SchemaRef {
        let mut fields = Self::slots();
        fields.push(Field::new("first_seen", DataType::Int32, false));
        Arc::new(Schema::new(fields))
    }

    fn slots() -> Vec<Field> {
        ID_TYPES.iter().map(|t| Field::new(*t, DataType::UInt32, false)).collect()
    }
}

/// `sets` in chunks, one column per slot, then `days` if given.
fn set_chunks(schema: &SchemaRef, sets: &[IdSet], days: Option<&[i32]>) -> Vec<RecordBatch> {
    (0..sets.len())
        .step_by(MAP_CHUNK)
        .map(|start| {
            let chunk = &sets[start..(start + MAP_CHUNK).min(sets.len())];
            let mut columns: Vec<ArrayRef> = (0..ID_TYPES.len())
                .map(|slot| {
                    Arc::new(UInt32Array::from_iter_values(chunk.iter().map(|s| s[slot]))) as ArrayRef
                })
                .collect();
            if let Some(days) = days {
                columns.push(Arc::new(Int32Array::from(days[start..start + chunk.len()].to_vec())));
            }
            RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema")
        })
        .collect()
}

/// The identifier sets of `batch` (of [`GraphParts::crm_schema`] or
/// [`GraphParts::sets_schema`]) onto `sets`, and their days onto `days`;
/// every slot names one of `nodes` nodes or none.
fn read_sets(
    batch: &RecordBatch,
    nodes: usize,
    sets: &mut Vec<IdSet>,
    days: Option<&mut Vec<i32>>,
) -> std::result::Result<(), String> {
    if batch.num_columns() < ID_TYPES.len() {
        return Err("not the columns written".into());
    }
    let slots = (0..ID_TYPES.len())
        .map(|i| batch.column(i).as_primitive_opt::<datafusion::arrow::datatypes::UInt32Type>())
        .collect::<Option<Vec<_>>>()
        .ok_or("identifier slots are not u32 columns")?;
    for row in 0..batch.num_rows() {
        let mut set = [NONE; ID_TYPES.len()];
        for (slot, values) in set.iter_mut().zip(&slots) {
            *slot = values.value(row);
            if *slot != NONE && *slot as usize >= nodes {
                return Err(format!("a set names node {} of {nodes}", *slot));
            }
        }
        sets.push(set);
    }
    if let Some(days) = days {
        let first = batch
            .column_by_name("first_seen")
            .and_then(|c| c.as_primitive_opt::<datafusion::arrow::datatypes::Int32Type>())
            .ok_or("no first_seen column")?;
        days.extend(first.values().iter());
    }
    Ok(())
}

impl GraphBuilder {
    /// The graph's parts, to keep between runs ([`GraphBuilder::from_parts`]).
    /// Only a dated graph has them: one graph for any cutoff.
    pub fn parts(&self) -> GraphParts {
        let seen = self.seen.as_ref().expect("a dated graph");
        let schema = GraphParts::nodes_schema();
        let n = self.nodes.texts.len();
        let nodes = (0..n)
            .step_by(MAP_CHUNK)
            .map(|start| {
                let end = (start + MAP_CHUNK).min(n);
                let values: StringArray =
                    (start..end).map(|i| Some(self.nodes.texts.get(i as u32))).collect();
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(UInt8Array::from(self.nodes.types[start..end].to_vec())),
                    Arc::new(values),
                    Arc::new(Int32Array::from(seen.nodes[start..end].to_vec())),
                ];
                RecordBatch::try_new(schema.clone(), columns).expect("columns match the schema")
            })
            .collect();
        GraphParts {
            nodes,
            crm: set_chunks(&GraphParts::crm_schema(), &self.crm, None),
            sets: set_chunks(&GraphParts::sets_schema(), &self.sets, Some(&seen.sets)),
        }
    }

    /// The dated graph of [`GraphBuilder::parts`], ready to resolve for any
    /// cutoff; it takes no more rows. What is wrong with a part, if any.
    pub fn from_parts(
        opts: &IdentityOptions,
        nodes: impl IntoIterator<Item = Result<RecordBatch>>,
        crm: impl IntoIterator<Item = Result<RecordBatch>>,
        sets: impl IntoIterator<Item = Result<RecordBatch>>,
    ) -> Result<std::result::Result<GraphBuilder, String>> {
        let mut g = GraphBuilder::dated(opts);
        g.sealed = true;
        let seen = g.seen.as_mut().expect("dated");
        for batch in nodes {
            let batch = batch?;
            if batch.num_columns() != 3 {
                return Ok(Err("nodes: not the columns written".into()));
            }
            let columns = (
                batch.column(0).as_primitive_opt::<datafusion::arrow::datatypes::UInt8Type>(),
                batch.column(1).as_string_opt::<i32>(),
                batch.column(2).as_primitive_opt::<datafusion::arrow::datatypes::Int32Type>(),
            );
            let (Some(types), Some(values), Some(first)) = columns else {
                return Ok(Err("nodes: columns of other types than written".into()));
            };
            if types.values().iter().any(|&t| t as usize >= ID_TYPES.len()) || values.null_count() > 0 {
                return Ok(Err("nodes: an unknown identifier type or no value".into()));
            }
            for (i, value) in values.iter().enumerate() {
                g.nodes.texts.push(value.expect("no nulls"));
                g.nodes.types.push(types.value(i));
            }
            seen.nodes.extend(first.values().iter());
        }
        let n = g.nodes.texts.len();
        for batch in crm {
            if let Err(e) = read_sets(&batch?, n, &mut g.crm, None) {
                return Ok(Err(format!("CRM records: {e}")));
            }
        }
        for batch in sets {
            if let Err(e) = read_sets(&batch?, n, &mut g.sets, Some(&mut seen.sets)) {
                return Ok(Err(format!("event sets: {e}")));
            }
        }
        Ok(Ok(g))
    }
}

/// A graph to resolve: every node and set, or those first seen before a day.
struct Snapshot<'g> {
    opts: &'g IdentityOptions,
    nodes: &'g Interner,
    crm: Cow<'g, [IdSet]>,
    sets: Cow<'g, [IdSet]>,
    /// The allocations of `crm` and `sets` (and of the dates they were
    /// first seen): with the nodes' text, what the graph holds throughout.
    set_bytes: usize,
    before: Option<(&'g Seen, i32)>,
}

impl Snapshot<'_> {
    fn resolve(
        self,
        erasure: &ErasureList,
        map: &mut dyn FnMut(RecordBatch) -> Result<()>,
        reserve: &mut dyn FnMut(usize) -> Result<()>,
    ) -> Result<Resolution> {
        let Snapshot { opts, nodes, crm, sets, set_bytes, before } = self;
        let name = |id: u32| nodes.get(id);
        let n = nodes.texts.len();
        // Nodes and sets of the graph as it stood then.
        let here = |id: usize| before.is_none_or(|(seen, day)| seen.nodes[id] < day);
        let set_here = |i: usize| before.is_none_or(|(seen, day)| seen.sets[i] < day);
        // What stays through the steps: the nodes' text and the sets.
        let base = nodes.text_bytes() + set_bytes;
        let limit = opts.max_customers_per_identifier.max(1);

        // CRM customers each identifier is associated with: through the CRM
        // record itself, or by appearing on a row next to such an identifier.
        // Lists are capped at limit + 1: that is enough to flag.
        let mut anchor = Capped::new(n, limit + 1);
        let mut crm_ids = vec![false; n];
        for set in crm.iter() {
            crm_ids[set[0] as usize] = true;
            for id in members(set) {
                anchor.add(id, set[0]);
            }
        }
        // Event rows propagate the anchors of their unambiguous identifiers
        // to the other identifiers on the row (an identifier already tied to
        // too many customers propagates nothing).
        let mut assoc = anchor.clone();
        let mut crms: Vec<u32> = Vec::new();
        let present_sets = || sets.iter().enumerate().filter(|&(i, _)| set_here(i)).map(|(_, set)| set);
        for set in present_sets() {
            crms.clear();
            for id in members(set) {
                if anchor.len(id) <= limit {
                    for c in anchor.iter(id) {
                        if crms.len() <= limit && !crms.contains(&c) {
                            crms.push(c);
                        }
                    }
                }
            }
            for id in members(set) {
                for &c in &crms {
                    assoc.add(id, c);
                }
            }
        }
        reserve(base + anchor.heap_bytes() + assoc.heap_bytes() + vec_bytes(&crm_ids))?;
        drop(anchor);
        // A CRM customer id is never shared: it is the anchor itself.
        let shared: Vec<bool> = (0..n).map(|id| assoc.len(id as u32) > limit && !crm_ids[id]).collect();
        drop(assoc);
        let mut linked = crm_ids.clone();
        let mut uf = UnionFind::new(n);
        for set in crm.iter().chain(present_sets()) {
            if members(set).nth(1).is_some() {
                for id in members(set) {
                    linked[id as usize] = true;
                }
            }
            let mut unshared = members(set).filter(|&id| !shared[id as usize]);
            if let Some(first) = unshared.next() {
                for id in unshared {
                    uf.union(first, id);
                }
            }
        }
        reserve(base + vec_bytes(&crm_ids) + vec_bytes(&shared) + vec_bytes(&linked) + uf.heap_bytes())?;
        drop(crm);
        // Number the components densely in order of their first identifier,
        // then give each shared identifier a key of its own after them: an
        // identifier's key is then one number, and what is kept per
        // component is sized by the components (13.9 M at 10M customers),
        // not by the identifiers (48.4 M).
        let mut node_key = uf.into_roots();
        let mut dense = vec![NONE; n];
        let mut components = 0u32;
        for id in (0..n).filter(|&id| !here(id)) {
            node_key[id] = NONE;
        }
        for id in (0..n).filter(|&id| !shared[id] && here(id)) {
            let root = node_key[id] as usize;
            if dense[root] == NONE {
                dense[root] = components;
                components += 1;
            }
            node_key[id] = dense[root];
        }
        drop(dense);
        let c = components as usize;
        let mut next = components;
        for id in (0..n).filter(|&id| shared[id]) {
            node_key[id] = next;
            next += 1;
        }

        // Per component: its smallest CRM customer id and how many it holds,
        // and its smallest identifier (the stable seed of an anonymous key).
        let mut crm_of: Vec<(u32, u32)> = vec![(NONE, 0); c]; // (least CRM id, CRM ids)
        let mut least: Vec<u32> = vec![NONE; c];
        for id in (0..n as u32).filter(|&id| !shared[id as usize] && here(id as usize)) {
            let k = node_key[id as usize] as usize;
            if least[k] == NONE || name(id) < name(least[k]) {
                least[k] = id;
            }
            if crm_ids[id as usize] {
                let e = &mut crm_of[k];
                if e.0 == NONE || name(id).1 < name(e.0).1 {
                    e.0 = id;
                }
                e.1 += 1;
            }
        }
        // Erasure: a listed identifier erases its whole component (the
        // person, with identifiers linked since they were forgotten); a
        // listed shared identifier erases only its own rows.
        let mut key_erased = vec![false; next as usize];
        let mut erased_crm_ids = Vec::new();
        if !erasure.is_empty() {
            for id in (0..n).filter(|&id| here(id)) {
                let (ty, value) = name(id as u32);
                if erasure.contains(ID_TYPES[ty as usize], value) {
                    key_erased[node_key[id] as usize] = true;
                }
            }
            erased_crm_ids = (0..n)
                .filter(|&id| crm_ids[id] && key_erased[node_key[id] as usize])
                .map(|id| name(id as u32).1.to_string())
                .collect();
        }
        let present = if before.is_some() { (0..n).filter(|&id| here(id)).count() } else { n };
        let mut stats = IdentityStats { identifiers: present as u64, ..Default::default() };
        let mut keys = Texts::default();
        let mut key_is_crm: Vec<bool> = Vec::with_capacity(next as usize);
        for k in 0..c {
            let key = match crm_of[k] {
                _ if key_erased[k] => {
                    stats.erased_customers += 1;
                    Cow::Borrowed("")
                }
                (cid, count) if cid != NONE => {
                    stats.crm_customers += 1;
                    if count > 1 {
                        stats.crm_merges += 1;
                    }
                    Cow::Borrowed(name(cid).1)
                }
                _ => {
                    stats.anonymous += 1;
                    let (lt, lv) = name(least[k]);
                    Cow::Owned(hashed("anon", lt, lv))
                }
            };
            keys.push(&key);
            key_is_crm.push(crm_of[k].0 != NONE && !key_erased[k]);
        }
        reserve(
            base + vec_bytes(&crm_ids)
                + vec_bytes(&shared)
                + vec_bytes(&linked)
                + vec_bytes(&node_key)
                + vec_bytes(&key_erased)
                + vec_bytes(&crm_of)
                + vec_bytes(&least)
                + keys.heap_bytes()
                + vec_bytes(&key_is_crm),
        )?;
        drop((crm_ids, crm_of, least));
        for id in (0..n as u32).filter(|&id| shared[id as usize]) {
            stats.shared_identifiers += 1;
            let (ty, value) = name(id);
            keys.push(&hashed("shared", ty, value));
            key_is_crm.push(false);
        }
        stats.components = stats.crm_customers + stats.anonymous;
        stats.unlinked_identifiers =
            (0..n).filter(|&id| here(id) && !linked[id] && !key_erased[node_key[id] as usize]).count() as u64;

        // An event row goes to its first unshared identifier's customer, in
        // ID_TYPES order (they all agree: the graph linked them), else to its
        // first identifier's own shared key.
        let set_key = sets
            .iter()
            .enumerate()
            .map(|(i, set)| {
                if !set_here(i) {
                    return NONE;
                }
                let first = members(set).find(|&id| !shared[id as usize]).or_else(|| members(set).next());
                node_key[first.expect("event sets hold two identifiers") as usize]
            })
            .collect();
        drop(sets);

        // The map in chunks of up to MAP_CHUNK identifiers, each chunk's
        // columns sized exactly up front (a growing builder can hold twice
        // what it needs); under a memory limit the chunks go to disk.
        for start in (0..n).step_by(MAP_CHUNK) {
            let (mut ids, end) = (Vec::new(), n.min(start + MAP_CHUNK));
            for id in (start..end).filter(|&id| here(id)) {
                match key_erased[node_key[id] as usize] {
                    true => stats.erased_identifiers += 1,
                    false => ids.push(id),
                }
            }
            let bytes = |len: &dyn Fn(usize) -> usize| ids.iter().map(|&id| len(id)).sum::<usize>();
            let mut t = StringBuilder::with_capacity(
                ids.len(),
                bytes(&|id| ID_TYPES[name(id as u32).0 as usize].len()),
            );
            let mut v = StringBuilder::with_capacity(ids.len(), bytes(&|id| name(id as u32).1.len()));
            let mut k = StringBuilder::with_capacity(ids.len(), bytes(&|id| keys.get(node_key[id]).len()));
            let (mut s, mut l) =
                (BooleanBuilder::with_capacity(ids.len()), BooleanBuilder::with_capacity(ids.len()));
            for &id in &ids {
                let (ty, value) = name(id as u32);
                t.append_value(ID_TYPES[ty as usize]);
                v.append_value(value);
                k.append_value(keys.get(node_key[id]));
                s.append_value(shared[id]);
                l.append_value(linked[id]);
            }
            let columns: Vec<ArrayRef> = vec![
                Arc::new(t.finish()),
                Arc::new(v.finish()),
                Arc::new(k.finish()),
                Arc::new(s.finish()),
                Arc::new(l.finish()),
            ];
            map(RecordBatch::try_new(map_schema(), columns).expect("columns match the map schema"))?;
        }
        stats.identifiers -= stats.erased_identifiers;
        Ok(Resolution { stats, keys, key_is_crm, key_erased, node_key, set_key, erased_crm_ids })
    }
}

/// Where an event row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribution {
    /// To the customer key numbered `no` ([`Resolution::key_chunks`]); `crm` when
    /// it is a CRM customer_id.
    Customer { no: u32, crm: bool },
    /// To a person on the erasure list: the row is left out.
    Erased,
    /// Nowhere: no identifier of the row normalises.
    Unattributed,
}

/// A resolved identity graph.
pub struct Resolution {
    pub stats: IdentityStats,
    /// Distinct customer keys.
    keys: Texts,
    /// Whether a key is a CRM customer_id.
    key_is_crm: Vec<bool>,
    /// Whether a key belongs to a person on the erasure list.
    key_erased: Vec<bool>,
    node_key: Vec<u32>,
    set_key: Vec<u32>,
    /// CRM customer ids of erased people: their rows of the customers,
    /// contacts and responses tables are left out too.
    pub erased_crm_ids: Vec<String>,
}

impl Resolution {
    /// Bytes the resolution's allocations hold.
    pub fn heap_bytes(&self) -> usize {
        self.keys.heap_bytes()
            + vec_bytes(&self.key_is_crm)
            + vec_bytes(&self.key_erased)
            + vec_bytes(&self.node_key)
            + vec_bytes(&self.set_key)
            + self
                .erased_crm_ids
                .iter()
                .map(|id| id.capacity() + std::mem::size_of::<String>())
                .sum::<usize>()
    }

    /// Where an event row goes, from its reference.
    pub fn attribute(&self, row_ref: u32) -> Attribution {
        let k = if row_ref == NONE {
            return Attribution::Unattributed;
        } else if row_ref & SET != 0 {
            self.set_key[(row_ref & !SET) as usize]
        } else {
            self.node_key[row_ref as usize]
        };
        if self.key_erased[k as usize] {
            return Attribution::Erased;
        }
        Attribution::Customer { no: k, crm: self.key_is_crm[k as usize] }
    }

    /// The customer key numbered `no` (the SQL reads it from
    /// [`Resolution::key_chunks`]).
    #[cfg(test)]
    pub(crate) fn key(&self, no: u32) -> &str {
        self.keys.get(no)
    }

    /// Every customer key but erased people's, one row each: `customer_no`
    /// (the number [`Resolution::attribute`] gives it; it holds for this
    /// resolution only), `customer_key` and `crm` ([`key_schema`]), in
    /// chunks of up to [`MAP_CHUNK`] keys, so that under a memory limit
    /// they go to disk a chunk at a time (some 14 M keys at 10M customers).
    pub fn key_chunks(&self) -> impl Iterator<Item = RecordBatch> + '_ {
        (0..self.keys.len() as u32).step_by(MAP_CHUNK).map(|start| {
            let end = self.keys.len().min(start as usize + MAP_CHUNK) as u32;
            let live: Vec<u32> = (start..end).filter(|&k| !self.key_erased[k as usize]).collect();
            let bytes = live.iter().map(|&k| self.keys.get(k).len()).sum();
            let mut keys = StringBuilder::with_capacity(live.len(), bytes);
            let mut crm = BooleanBuilder::with_capacity(live.len());
            for &k in &live {
                keys.append_value(self.keys.get(k));
                crm.append_value(self.key_is_crm[k as usize]);
            }
            let columns: Vec<ArrayRef> =
                vec![Arc::new(UInt32Array::from(live)), Arc::new(keys.finish()), Arc::new(crm.finish())];
            RecordBatch::try_new(key_schema(), columns).expect("columns match the key schema")
        })
    }
}
/// Up to `cap` distinct CRM customers per identifier: the first inline,
/// the rarer further ones in an overflow map.
#[derive(Clone)]
struct Capped {
    first: Vec<u32>,
    more: Map<u32, Vec<u32>>,
    cap: usize,
}

impl Capped {
    fn new(n: usize, cap: usize) -> Capped {
        Capped { first: vec![NONE; n], more: Map::default(), cap }
    }
    fn add(&mut self, id: u32, customer: u32) {
        let first = &mut self.first[id as usize];
        if *first == NONE {
            *first = customer;
        } else if *first != customer {
            let more = self.more.entry(id).or_default();
            if 1 + more.len() < self.cap && !more.contains(&customer) {
                more.push(customer);
            }
        }
    }
    fn len(&self, id: u32) -> usize {
        (self.first[id as usize] != NONE) as usize + self.more.get(&id).map_or(0, Vec::len)
    }
    fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u32, Vec<u32>)>() + 1;
        vec_bytes(&self.first)
            + self.more.capacity() * entry
            + self.more.values().map(vec_bytes).sum::<usize>()
    }
    fn iter(&self, id: u32) -> impl Iterator<Item = u32> + '_ {
        let first = self.first[id as usize];
        (first != NONE).then_some(first).into_iter().chain(self.more.get(&id).into_iter().flatten().copied())
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
    /// Each element's root.
    fn heap_bytes(&self) -> usize {
        vec_bytes(&self.parent) + vec_bytes(&self.size)
    }
    fn into_roots(mut self) -> Vec<u32> {
        drop(std::mem::take(&mut self.size));
        for x in 0..self.parent.len() as u32 {
            self.parent[x as usize] = self.find(x);
        }
        self.parent
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
    let pairs = |counts: Map<(&str, &str), u64>| counts.values().map(|c| c * (c - 1) / 2).sum::<u64>();
    let mut both: Map<(&str, &str), u64> = Map::default();
    let mut r: Map<(&str, &str), u64> = Map::default();
    let mut t: Map<(&str, &str), u64> = Map::default();
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

    /// Resolves rows given as (from_crm, [customer_id, email, phone,
    /// loyalty_id, cookie_id]); returns the map, the stats and each event
    /// row's key.
    fn resolve(
        rows: &[(bool, [Option<&str>; 5])],
        opts: &IdentityOptions,
    ) -> (RecordBatch, IdentityStats, Vec<Option<String>>) {
        let (map, stats, keys, _) = resolve_erasing(rows, opts, &ErasureList::default());
        (map, stats, keys)
    }

    /// [`resolve`] with an erasure list; also returns the erased CRM ids.
    fn resolve_erasing(
        rows: &[(bool, [Option<&str>; 5])],
        opts: &IdentityOptions,
        erasure: &ErasureList,
    ) -> (RecordBatch, IdentityStats, Vec<Option<String>>, Vec<String>) {
        let mut graph = GraphBuilder::new(opts);
        let mut refs = Vec::new();
        for &(from_crm, ids) in rows {
            let arrays: Vec<StringArray> = ids.iter().map(|v| StringArray::from(vec![*v])).collect();
            let columns: Vec<(usize, &StringArray)> = arrays.iter().enumerate().collect();
            if from_crm {
                graph.add_crm(&columns, 1);
            } else {
                refs.extend(graph.add_events(&columns, 1, None));
            }
        }
        let mut map = Vec::new();
        let resolution = graph
            .resolve(
                erasure,
                &mut |chunk| {
                    map.push(chunk);
                    Ok(())
                },
                &mut |_| Ok(()),
            )
            .unwrap();
        let keys = refs
            .iter()
            .map(|&r| match resolution.attribute(r) {
                Attribution::Customer { no, .. } => Some(resolution.key(no).to_string()),
                _ => None,
            })
            .collect();
        // The key table lists each number once, as the rows carry it, and
        // no erased person's key.
        let table = datafusion::arrow::compute::concat_batches(
            &key_schema(),
            &resolution.key_chunks().collect::<Vec<_>>(),
        )
        .unwrap();
        let numbers = table.column(0).as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
        let (texts, crm) = (table.column(1).as_string::<i32>(), table.column(2).as_boolean());
        let listed: HashMap<u32, (&str, bool)> =
            (0..table.num_rows()).map(|i| (numbers.value(i), (texts.value(i), crm.value(i)))).collect();
        assert_eq!(listed.len(), table.num_rows());
        for &r in &refs {
            if let Attribution::Customer { no, crm } = resolution.attribute(r) {
                assert_eq!(listed[&no], (resolution.key(no), crm));
            }
        }
        let crm_keys = listed.values().filter(|(_, crm)| *crm).count() as u64;
        assert_eq!(crm_keys, resolution.stats.crm_customers);
        for (key, _) in listed.values() {
            assert!(!key.is_empty() && !resolution.erased_crm_ids.iter().any(|e| e == key), "{key:?} listed");
        }
        let map = datafusion::arrow::compute::concat_batches(&map_schema(), &map).unwrap();
        (map, resolution.stats, keys, resolution.erased_crm_ids)
    }

    /// Runs `resolve` with a map sink; returns the resolution and the map's chunks.
    fn collect_map(
        resolve: impl FnOnce(&mut dyn FnMut(RecordBatch) -> Result<()>) -> Result<Resolution>,
    ) -> (Resolution, Vec<RecordBatch>) {
        let mut map = Vec::new();
        let resolution = resolve(&mut |chunk| {
            map.push(chunk);
            Ok(())
        })
        .unwrap();
        (resolution, map)
    }

    fn keys(map: &RecordBatch) -> HashMap<String, (String, bool)> {
        let (t, v, k, shared) = map_columns(map);
        (0..map.num_rows())
            .map(|i| (format!("{}:{}", t.value(i), v.value(i)), (k.value(i).to_string(), shared.value(i))))
            .collect()
    }

    #[test]
    fn links_transitively_and_guards_shared_identifiers() {
        let (map, stats, events) = resolve(
            &[
                (true, [Some("C1"), Some(" A@x.test"), Some("(555) 000-0001"), None, None]),
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
                // Nothing usable: unattributable.
                (false, [None, Some("not-an-email"), None, None, None]),
            ],
            &IdentityOptions::default(),
        );
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
        // Event rows land on their customer; a row with a shared cookie and
        // an email goes to the email's customer; one with nothing usable
        // nowhere.
        let events: Vec<Option<&str>> = events.iter().map(|k| k.as_deref()).collect();
        assert_eq!(events[..5], [Some("C1"); 5]);
        assert_eq!(events[5], Some("C2"));
        assert!(events[6].is_some_and(|k| k.starts_with("anon-")));
        assert_eq!(events[7], None);

        // With a looser limit the family email links C3 and C4.
        let loose = IdentityOptions { max_customers_per_identifier: 2, ..IdentityOptions::default() };
        let (map, stats, _) = resolve(
            &[
                (true, [Some("C3"), Some("family@x.test"), None, None, None]),
                (true, [Some("C4"), Some("family@x.test"), None, None, None]),
            ],
            &loose,
        );
        assert_eq!(keys(&map)["customer_id:C4"].0, "C3", "the smallest CRM id keys the merged customer");
        assert_eq!(stats.crm_merges, 1);
    }

    /// One dated graph of every row, resolved as it stood before a day,
    /// is the graph of the rows before that day: the same map, counts and
    /// customer for each of those rows, at every day and in any order
    /// (the graph stays after each resolution). The rows link, merge and
    /// share identifiers across days; a listed person is erased.
    #[test]
    fn a_dated_graph_resolves_as_the_graph_of_the_rows_before_each_day() {
        // (day, [customer_id, email, phone, loyalty_id, cookie_id]) from a
        // small generator: few identifiers, so rows link and collide.
        let mut state = 7u64;
        let mut next = |n: u64| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) % n
        };
        let mut rows: Vec<(i32, [Option<String>; 5])> = Vec::new();
        for _ in 0..400 {
            let day = next(10) as i32;
            let pick = |p: u64, v: u64, prefix: &str| (p == 0).then(|| format!("{prefix}{v}"));
            let ids = [
                None,
                pick(next(3), next(25), "e").map(|e| format!("{e}@x.test")),
                pick(next(4), next(20), "+1555000"),
                pick(next(5), next(15), "L"),
                pick(next(2), next(60), "k"),
            ];
            rows.push((day, ids));
        }
        let crm: Vec<[Option<String>; 4]> = (0..12)
            .map(|c| {
                let email = (c % 3 != 2).then(|| format!("e{}@x.test", c * 2));
                let loyalty = (c % 4 == 0).then(|| format!("L{c}"));
                [Some(format!("C{c}")), email, None, loyalty]
            })
            .collect();
        let mut erasure = ErasureList::default();
        erasure.add("customer_id", "C5");
        let opts = IdentityOptions::default();
        let columns = |ids: &[Option<String>]| -> Vec<StringArray> {
            ids.iter().map(|v| StringArray::from(vec![v.clone()])).collect()
        };
        let add = |graph: &mut GraphBuilder, rows: &[&(i32, [Option<String>; 5])], dated: bool| {
            for ids in &crm {
                let arrays = columns(ids);
                let columns: Vec<(usize, &StringArray)> = arrays.iter().enumerate().collect();
                graph.add_crm(&columns, 1);
            }
            let mut refs = Vec::new();
            for (day, ids) in rows {
                let arrays = columns(ids);
                let columns: Vec<(usize, &StringArray)> = arrays.iter().enumerate().collect();
                refs.extend(graph.add_events(&columns, 1, dated.then_some(&[*day][..])));
            }
            refs
        };
        let outcome = |resolution: Resolution, map: Vec<RecordBatch>, refs: &[u32]| {
            let map = datafusion::arrow::compute::concat_batches(&map_schema(), &map).unwrap();
            let mut lines: Vec<String> = (0..map.num_rows())
                .map(|i| {
                    let row: Vec<String> = map
                        .columns()
                        .iter()
                        .map(|c| datafusion::arrow::util::display::array_value_to_string(c, i).unwrap())
                        .collect();
                    row.join(",")
                })
                .collect();
            lines.sort();
            let keys: Vec<String> = refs
                .iter()
                .map(|&r| match resolution.attribute(r) {
                    Attribution::Customer { no, crm } => format!("{} {crm}", resolution.key(no)),
                    other => format!("{other:?}"),
                })
                .collect();
            (lines, resolution.stats.clone(), keys, resolution.erased_crm_ids.clone())
        };

        let all: Vec<&(i32, [Option<String>; 5])> = rows.iter().collect();
        let mut dated = GraphBuilder::dated(&opts);
        let dated_refs = add(&mut dated, &all, true);
        let mut compared = 0;
        for before in [Some(4), Some(0), Some(9), None, Some(4), Some(7)] {
            let (resolution, map) =
                collect_map(|map| dated.resolve_before(before, &erasure, map, &mut |_| Ok(())));
            let earlier: Vec<usize> =
                (0..rows.len()).filter(|&i| before.is_none_or(|d| rows[i].0 < d)).collect();
            let refs: Vec<u32> = earlier.iter().map(|&i| dated_refs[i]).collect();
            let got = outcome(resolution, map, &refs);

            let mut plain = GraphBuilder::new(&opts);
            let plain_refs = add(&mut plain, &earlier.iter().map(|&i| &rows[i]).collect::<Vec<_>>(), false);
            let (resolution, map) = collect_map(|map| plain.resolve(&erasure, map, &mut |_| Ok(())));
            let want = outcome(resolution, map, &plain_refs);
            assert_eq!(got, want, "before day {before:?}");
            compared += want.2.len();
            if before.is_none() {
                let stats = &want.1;
                assert!(
                    stats.shared_identifiers > 0 && stats.anonymous > 0 && stats.erased_customers == 1,
                    "{stats:?}"
                );
            }
        }
        assert!(compared > 1000, "{compared} rows compared");
    }

    /// A listed identifier erases its whole component, identifiers linked
    /// to it included; a listed shared identifier erases only itself.
    #[test]
    fn erasure_takes_the_component_or_only_a_shared_identifier() {
        let mut erasure = ErasureList::default();
        erasure.add("cookie_id", "k1");
        erasure.add("email", "family@x.test");
        let (map, stats, events, erased_crm_ids) = resolve_erasing(
            &[
                (true, [Some("C1"), Some("a@x.test"), None, None, None]),
                (true, [Some("C2"), Some("family@x.test"), None, None, None]),
                (true, [Some("C3"), Some("family@x.test"), None, None, None]),
                (false, [None, Some("A@x.test"), None, None, Some("k1")]),
                (false, [None, Some("family@x.test"), None, None, Some("k5")]),
                (false, [None, None, None, None, Some("k5")]),
                (false, [Some("C2"), None, None, None, None]),
            ],
            &IdentityOptions::default(),
            &erasure,
        );
        let k = keys(&map);
        for gone in ["customer_id:C1", "email:a@x.test", "cookie_id:k1", "email:family@x.test"] {
            assert!(!k.contains_key(gone), "{gone} is erased");
        }
        assert_eq!(k["customer_id:C2"], ("C2".into(), false), "the shared email erased no one else");
        assert!(k["cookie_id:k5"].0.starts_with("anon-"), "k5 was linked only through the shared email");
        assert_eq!(erased_crm_ids, ["C1"]);
        assert_eq!(stats.erased_customers, 1);
        assert_eq!(stats.erased_identifiers, 4);
        assert_eq!(stats.identifiers, 3, "C2, C3 and k5 are left");
        assert_eq!(stats.anonymous, 1);
        assert_eq!(stats.crm_customers, 2);
        let events: Vec<Option<&str>> = events.iter().map(|k| k.as_deref()).collect();
        assert_eq!(events[0], None, "the erased person's row");
        assert!(events[1].is_some_and(|k| k.starts_with("anon-")), "k5 carries the row");
        assert_eq!(events[3], Some("C2"));
    }

    /// [`GraphBuilder`] finds a normal spelling's node without normalising
    /// it, which is right only if normalising a normal form gives it back.
    /// The graph's bytes are counted: at least every identifier's text
    /// while it is built, and per identifier the union-find and flags while
    /// it is resolved; a refusal stops resolution.
    #[test]
    fn the_graph_counts_its_bytes_and_stops_when_refused() {
        let build = || {
            let mut graph = GraphBuilder::new(&IdentityOptions::default());
            let emails: Vec<String> = (0..20_000).map(|i| format!("person{i}@example.com")).collect();
            let cookies: Vec<String> = (0..20_000).map(|i| format!("cookie-{i}")).collect();
            let emails = StringArray::from(emails.iter().map(String::as_str).collect::<Vec<_>>());
            let cookies = StringArray::from(cookies.iter().map(String::as_str).collect::<Vec<_>>());
            graph.add_events(&[(1, &emails), (4, &cookies)], 20_000, None);
            let text: usize = (0..20_000).map(|i| emails.value(i).len() + cookies.value(i).len()).sum();
            (graph, text)
        };
        let (graph, text) = build();
        let n = 40_000;
        assert!(graph.heap_bytes() >= text + 4 * n, "{} bytes for {text} bytes of text", graph.heap_bytes());
        let mut largest = 0;
        let resolution = graph
            .resolve(&ErasureList::default(), &mut |_| Ok(()), &mut |bytes| {
                largest = largest.max(bytes);
                Ok(())
            })
            .unwrap();
        assert!(largest >= text + 11 * n, "{largest} bytes reserved at most");
        assert!(resolution.heap_bytes() >= 4 * n + 20_000 * 4, "{}", resolution.heap_bytes());

        let (graph, _) = build();
        let mut asked = Vec::new();
        let refused = graph.resolve(&ErasureList::default(), &mut |_| Ok(()), &mut |bytes| {
            asked.push(bytes);
            Err(crate::error::PipelineError::DriverMemory {
                what: "identity graph",
                needed: crate::runtime::ByteSize(bytes as u64),
                limit: crate::runtime::ByteSize(0),
                source: datafusion::error::DataFusionError::ResourcesExhausted("refused".into()),
            })
        });
        assert!(refused.is_err());
        assert_eq!(asked.len(), 1, "resolution stops at the first refusal");
    }

    #[test]
    fn normalising_is_idempotent() {
        let opts = IdentityOptions::default();
        let spellings = [
            " Ann.Lee@Example.COM ",
            "ÖSTERREICH@BEISPIEL.AT",
            "İSTANBUL@ÖRNEK.TR",
            "ΣΊΣΥΦΟΣ@ΠΑΡΆΔΕΙΓΜΑ.GR",
            "STRASSE@ẞ.DE",
            "(555) 000-0001",
            "0044 20 7946 0958",
            "+1 555 000 0001",
            "020 7946 0958",
            "  L000123 ",
            "ck_00ff",
            "\u{2003}C42\u{2003}",
        ];
        for ty in ID_TYPES {
            for raw in spellings {
                if let Some(normal) = normalize(ty, raw, &opts) {
                    assert_eq!(
                        normalize(ty, &normal, &opts).as_deref(),
                        Some(normal.as_str()),
                        "{ty} {raw:?}"
                    );
                }
            }
        }
        // Raw and normal spellings of one identifier meet in one node.
        let (map, _, events) = resolve(
            &[
                (true, [Some("C1"), Some("ann@x.test"), Some("+15550000001"), None, None]),
                (false, [None, Some(" ANN@x.test"), None, None, None]),
                (false, [None, None, Some("(555) 000-0001"), None, None]),
                (false, [None, None, Some("(555) 000-0001"), None, None]),
                (false, [None, Some("ann@x.test"), None, None, None]),
                (false, [None, Some("nobody"), None, None, None]),
                (false, [None, Some("nobody"), None, None, None]),
            ],
            &opts,
        );
        assert_eq!(map.num_rows(), 3, "one node per identifier, not per spelling");
        let events: Vec<Option<&str>> = events.iter().map(|k| k.as_deref()).collect();
        assert_eq!(events, [Some("C1"), Some("C1"), Some("C1"), Some("C1"), None, None]);
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
