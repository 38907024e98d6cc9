//! The whole-population pipeline run in chunks of users, so memory is bounded by a chunk rather
//! than by the population — with the same plan ([`Pipeline::compute`]) for every feature.
//!
//! A feature either reads only its user's own rows (attributes and aggregates) or reads other
//! users' rows too (neighbour and two-hop features, users sharing a device). The run is split
//! along that line:
//!
//! 1. *Own rows*: the pipeline restricted to its attribute and aggregate features runs once per
//!    chunk of users. A chunk is a range of keys (`lo <= key <= hi`, the sorted keys cut into
//!    chunks), and every table is filtered to it before the plan runs — for an edge table, the
//!    edges with either end in the range. On Parquet scans the range predicate is pushed down,
//!    so a table stored in key order (as `sesame datasets generate` writes it) has whole row
//!    groups skipped; any other order is still correct, only slower. These are the large tables
//!    (transactions, behaviours), so this is where most of the memory goes. Each chunk's tables
//!    are read into memory first, so that a key already in order is flagged sorted
//!    ([`mark_if_sorted`]): the plan's sort by key is then free and polars groups by slices.
//! 2. *Shared*: the users-sharing-a-value features read other users' rows too. Their distinct
//!    (user, value) pairs — who used which device — are taken from each own-rows chunk's rows
//!    while they are in memory (only the pairs are kept), then each range's pairs are counted
//!    against the pairs of values that more than one user holds (`shared_values_only`).
//! 3. *Graph*: neighbour, two-hop and ratio features run once per graph chunk of users (slices
//!    of the base table in its order; [`GRAPH_CHUNK_FACTOR`] own-rows chunks' worth of users). The stage-1 values they read (own-rows and shared features)
//!    become attributes of a narrow base table (same name and type, so the same values); the
//!    chunk follows only its own users' edges on the first hop and reads the neighbours' values
//!    from every user's ([`Tables::set_neighbor_values`]). This step joins on integer ids in
//!    place of the keys (`GraphIds`), one per distinct key. Chunking matters here too: two-hop
//!    paths grow faster than the users (hubs) — 25M paths at 1M generated users.
//!
//! The result equals [`Pipeline::compute`] bit for bit, rows in the base table's order
//! (`tests/batch.rs` checks it on the demo data).

use std::collections::HashSet;

use polars::prelude::*;

use chrono::NaiveDate;

use super::pipeline::{
    in_order, mark_if_sorted, shared_counts, shared_values_only, Pipeline, Tables,
};
use super::spec::{Definition, Feature, Mode};
use super::FeatureError;

/// Users per own-rows chunk of a population run (`--chunk-users` of `sesame batch`): ~2.9 GB at
/// the peak on the generated population's event density (1M users). 200,000 peaked at ~5 GB
/// for little less CPU; on this project's VM every fresh GB costs 0.2-3 s to fault in
/// (docs/batch.md), so the smaller peak is also the faster run.
pub const DEFAULT_CHUNK_USERS: usize = 100_000;

/// Graph chunks hold this many own-rows chunks' users: the graph step needs far less memory per
/// user (its peak stayed under the own-rows step's even unchunked at 1M users), and each graph
/// chunk pays a fixed cost for joining against every user's values.
const GRAPH_CHUNK_FACTOR: usize = 5;

fn data(e: impl std::fmt::Display) -> FeatureError {
    FeatureError::Data(e.to_string())
}

/// Diagnostics only, off unless `SESAME_CHUNK_DEBUG` is set: the process's current and peak
/// resident memory after a step, and the seconds since the first such line, on stderr (memory on
/// Linux only).
pub(crate) fn debug_rss(what: &str) {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    if std::env::var_os("SESAME_CHUNK_DEBUG").is_some() {
        let start = START.get_or_init(std::time::Instant::now);
        let st = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let get = |k: &str| {
            st.lines()
                .find(|l| l.starts_with(k))
                .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
                .unwrap_or_default()
        };
        eprintln!(
            "[chunk-debug] {:7.2} s {what}: rss {} peak {}",
            start.elapsed().as_secs_f64(),
            get("VmRSS:"),
            get("VmHWM:")
        );
    }
}

fn is_shared(def: &Definition) -> bool {
    matches!(def, Definition::Shared { .. })
}

fn own_rows(def: &Definition) -> bool {
    matches!(
        def,
        Definition::Attribute { .. } | Definition::Aggregate { .. }
    )
}

impl Pipeline {
    /// [`Pipeline::compute`] in chunks of `chunk_users` users (see the module doc). Falls back to
    /// one run when chunking cannot help or apply: flat mode, no more users than a chunk, or a
    /// base table whose key is not a unique, non-null string. `progress(done, total)` is called
    /// after each own-rows chunk and each graph chunk (`total` = both counts; a single run
    /// reports nothing).
    pub fn compute_chunked(
        &self,
        tables: &Tables,
        as_of: NaiveDate,
        chunk_users: usize,
        mut progress: impl FnMut(usize, usize),
    ) -> Result<DataFrame, FeatureError> {
        let spec = &self.spec;
        let key = spec.key.as_str();
        if spec.mode == Mode::Flat || chunk_users == 0 {
            return self.compute(tables, as_of);
        }
        let base = tables.get(&spec.base_table)?;
        let keys = base
            .clone()
            .select([col(key)])
            .collect()
            .map_err(|e| data(format!("base table '{}': {e}", spec.base_table)))?;
        let keys = keys.column(key).map_err(data)?;
        let n = keys.len();
        let unique = keys.n_unique().map_err(data)? == n;
        if n <= chunk_users || keys.null_count() > 0 || !unique || keys.str().is_err() {
            return self.compute(tables, as_of);
        }
        let mut sorted: Vec<&str> = keys.str().map_err(data)?.iter().flatten().collect();
        sorted.sort_unstable();

        // Step 1: own-rows features, one key range at a time.
        // Each chunk's first and last key, and its number of users.
        let ranges: Vec<(String, String, usize)> = sorted
            .chunks(chunk_users)
            .map(|c| (c[0].to_string(), c[c.len() - 1].to_string(), c.len()))
            .collect();
        drop(sorted);
        debug_rss("keys read and cut into ranges");
        let in_range = |c: &str, (lo, hi, _): &(String, String, usize)| {
            col(c)
                .gt_eq(lit(lo.clone()))
                .and(col(c).lt_eq(lit(hi.clone())))
        };
        // Every table narrowed to the rows of one key range (edges: either end in it). The keyed
        // tables are read into memory and their key flagged as sorted when it is (see
        // `mark_if_sorted`), so the plan's sort by key costs nothing.
        let narrowed = |range: &(String, String, usize)| -> Result<Tables, FeatureError> {
            let mut narrowed = tables.clone();
            narrowed.insert_lazy(&spec.base_table, base.clone().filter(in_range(key, range)));
            for t in &spec.tables {
                let Ok(lf) = tables.get(&t.name) else {
                    continue;
                };
                match &t.edges {
                    Some((from, to)) => narrowed.insert_lazy(
                        &t.name,
                        lf.filter(in_range(from, range).or(in_range(to, range))),
                    ),
                    None => {
                        let df = lf.filter(in_range(key, range)).collect().map_err(data)?;
                        narrowed.insert(&t.name, mark_if_sorted(df, key)?);
                    }
                }
            }
            Ok(narrowed)
        };
        let mut stage1 = self.clone();
        stage1.spec.features.retain(|f| own_rows(&f.def));
        let n_chunks = ranges.len();
        let graph_chunk_users = chunk_users.saturating_mul(GRAPH_CHUNK_FACTOR);
        let graph_chunks = n.div_ceil(graph_chunk_users);
        let total_steps = n_chunks + graph_chunks;
        let mut parts = Vec::with_capacity(n_chunks);
        // The users-sharing-a-value features (step 2) need every user's distinct (user, value)
        // pairs: they are taken from each chunk's rows while those are in memory, rather than
        // by reading and decoding the table a second time.
        let shared_feats: Vec<&Feature> =
            spec.features.iter().filter(|f| is_shared(&f.def)).collect();
        let mut shared_pairs: Vec<Vec<DataFrame>> = vec![Vec::new(); shared_feats.len()];
        for (i, range) in ranges.iter().enumerate() {
            let chunk_len = range.2;
            let narrowed = narrowed(range)?;
            debug_rss(&format!("own-rows chunk {i} read"));
            for (f, pairs) in shared_feats.iter().zip(shared_pairs.iter_mut()) {
                let p = self.shared_pairs(&narrowed, f, as_of)?;
                pairs.push(p.collect().map_err(data)?);
            }
            let part = stage1.compute(&narrowed, as_of)?;
            if part.height() != chunk_len {
                return Err(data(format!(
                    "chunk {i}: {} rows for {chunk_len} users",
                    part.height(),
                )));
            }
            parts.push(part.lazy());
            debug_rss(&format!("own-rows chunk {i}"));
            progress(i + 1, total_steps);
        }

        // Back to the base table's order: the stage-1 values become the graph step's base table.
        // The chunks come in key order, which is already the base table's when it is stored
        // sorted (as `sesame datasets generate` writes it): then no join is needed.
        let stage1_values = concat(parts, UnionArgs::default())
            .map_err(data)?
            .collect()
            .map_err(data)?;
        let in_base_order = stage1_values
            .column(key)
            .map_err(data)?
            .as_materialized_series()
            .equals_missing(keys.as_materialized_series());
        let values = if in_base_order {
            stage1_values
        } else {
            in_order(
                base.clone()
                    .select([col(key)])
                    .with_row_index("__order", None),
                stage1_values.lazy(),
                key,
            )?
        };
        if values.height() != n {
            return Err(data(format!(
                "stage 1: {} rows for {n} users",
                values.height()
            )));
        }
        debug_rss("stage-1 values in base order");

        // Step 2: users sharing a value (a device). Every user's distinct (user, value) pairs,
        // gathered a key range at a time in step 1 — only the pairs stay in memory, not the
        // event rows — then each range's pairs are counted against the pairs of values that
        // more than one user holds (the only ones that can count).
        let shared_values = if shared_feats.is_empty() {
            None
        } else {
            let mut df = base
                .clone()
                .select([col(key)])
                .with_row_index("__order", None);
            for (f, pairs) in shared_feats.into_iter().zip(shared_pairs) {
                let all = concat(
                    pairs.iter().map(|p| p.clone().lazy()).collect::<Vec<_>>(),
                    UnionArgs::default(),
                )
                .map_err(data)?;
                let others = shared_values_only(key, f, all)?
                    .collect()
                    .map_err(data)?
                    .lazy();
                let mut counts = Vec::with_capacity(n_chunks);
                for mine in pairs {
                    let c = shared_counts(key, f, mine.lazy(), others.clone())?;
                    counts.push(c.collect().map_err(data)?.lazy());
                }
                let counts = concat(counts, UnionArgs::default()).map_err(data)?;
                df = df.join(
                    counts,
                    [col(key)],
                    [col(key)],
                    JoinArgs::new(JoinType::Left),
                );
                debug_rss(&format!("shared feature {}", f.meta.name));
            }
            let df = df
                .sort(["__order"], Default::default())
                .select([all().exclude_cols(["__order"]).as_expr()])
                .collect()
                .map_err(data)?;
            if df.height() != n {
                return Err(data(format!(
                    "shared step: {} rows for {n} users",
                    df.height()
                )));
            }
            Some(df)
        };

        // Step 3: neighbour, two-hop and ratio features, a graph chunk of users at a time. The
        // two-hop paths grow faster than the users (hubs), so this step is chunked too: each
        // chunk follows its own users' edges and reads the neighbours' values from every user's.
        // Those values are the stage-1 features the graph features read (each an attribute now:
        // same name, same type, so the cast is the identity) — a narrow table, since every
        // graph feature is left-joined onto the chunk in turn.
        let mut read: HashSet<&str> = HashSet::new();
        for f in &spec.features {
            match &f.def {
                Definition::Neighbors { of, filter, .. } => {
                    read.extend(of.iter().map(|c| c.as_str()));
                    read.extend(filter.iter().map(|c| c.column.as_str()));
                }
                Definition::TwoHop { filter, .. } => {
                    read.extend(filter.iter().map(|c| c.column.as_str()))
                }
                Definition::Ratio {
                    numerator,
                    denominator,
                } => read.extend([numerator.as_str(), denominator.as_str()]),
                _ => {}
            }
        }
        let mut graph = self.clone();
        graph
            .spec
            .features
            .retain(|f| !own_rows(&f.def) || read.contains(f.meta.name.as_str()));
        // Each graph chunk joins and groups by user many times over (every edge with its
        // neighbour's values, the chunk's own edges, the two-hop paths), and on text keys each of
        // those hashes and compares strings: string hashing, hash-table probes and `memcmp` led
        // the step's profile. The step runs on integer ids instead (`GraphIds`): one id per
        // distinct key, so equal keys stay equal and distinct keys distinct, and every feature
        // reads the same rows in the same order as on the text keys.
        let ids = GraphIds::new(values.column(key).map_err(data)?, key)?;
        let mut graph_tables = tables.clone();
        for t in &spec.tables {
            let (Some((from, to)), Ok(lf)) = (&t.edges, tables.get(&t.name)) else {
                continue;
            };
            let edges = ids.edges(lf, from, to).map_err(|e| match e {
                FeatureError::Data(m) => data(format!("table '{}': {m}", t.name)),
                other => other,
            })?;
            graph_tables.insert(&t.name, edges);
        }
        debug_rss("graph ids");
        let mut narrow = vec![ids.base_column()?];
        for f in graph.spec.features.iter_mut() {
            let from = if own_rows(&f.def) {
                &values
            } else if is_shared(&f.def) {
                shared_values
                    .as_ref()
                    .ok_or_else(|| data("shared step missing"))?
            } else {
                continue;
            };
            narrow.push(from.column(f.meta.name.as_str()).map_err(data)?.clone());
            f.def = Definition::Attribute {
                column: f.meta.name.clone(),
                transform: None,
            };
        }
        let narrow = DataFrame::new(n, narrow).map_err(data)?;
        let all_values = narrow.clone().lazy();
        let mut graph_values: Option<DataFrame> = None;
        for i in 0..graph_chunks {
            let offset = i * graph_chunk_users;
            let len = graph_chunk_users.min(n - offset);
            let mut t = graph_tables.clone();
            t.insert(&spec.base_table, narrow.slice(offset as i64, len));
            t.set_neighbor_values(all_values.clone());
            let part = graph.compute(&t, as_of)?;
            if part.height() != len {
                return Err(data(format!(
                    "graph chunk {i}: {} rows for {len} users",
                    part.height()
                )));
            }
            match graph_values.as_mut() {
                None => graph_values = Some(part),
                Some(g) => {
                    g.vstack_mut(&part).map_err(data)?;
                }
            }
            debug_rss(&format!("graph chunk {i}"));
            progress(n_chunks + i + 1, total_steps);
        }
        let graph_values = graph_values.ok_or_else(|| data("no users"))?;

        // Both in the base table's order: the key, then every feature in file order.
        let mut out = vec![values.column(key).map_err(data)?.clone()];
        for f in &spec.features {
            let from = if own_rows(&f.def) {
                &values
            } else {
                &graph_values
            };
            out.push(from.column(f.meta.name.as_str()).map_err(data)?.clone());
        }
        DataFrame::new(n, out).map_err(data)
    }
}

/// Integer ids for the graph step's user keys: the base users are `0..n` in the base table's
/// order, and every other key an edge names (a user missing from the base table) gets an id
/// after them, in sorted order. One id per distinct key, so a join or group-by on the ids pairs
/// exactly the rows it paired on the keys.
struct GraphIds {
    key: String,
    /// `__id`, then the key: the base users' ids.
    base: DataFrame,
}

impl GraphIds {
    const ID: &'static str = "__id";

    fn new(keys: &Column, key: &str) -> Result<GraphIds, FeatureError> {
        let base = DataFrame::new(keys.len(), vec![keys.clone()])
            .map_err(data)?
            .with_row_index(Self::ID.into(), None)
            .map_err(data)?;
        Ok(GraphIds {
            key: key.to_string(),
            base,
        })
    }

    /// The base users' ids, named as the key.
    fn base_column(&self) -> Result<Column, FeatureError> {
        let mut c = self.base.column(Self::ID).map_err(data)?.clone();
        c.rename(self.key.as_str().into());
        Ok(c)
    }

    /// The edge table with both ends as ids, rows in their order (a neighbour mean adds its
    /// values in row order).
    fn edges(&self, edges: LazyFrame, from: &str, to: &str) -> Result<DataFrame, FeatureError> {
        let key = self.key.as_str();
        let id_of = |end: &str| format!("__id_{end}");
        let mut args = JoinArgs::new(JoinType::Left);
        args.maintain_order = MaintainOrderJoin::Left;
        // Each end's id in `ids` (an id and a key column) as `__id_<end>`, where it has none yet.
        let add_ids = |mut lf: LazyFrame, ids: &DataFrame, first: bool| {
            for end in [from, to] {
                let found = ids
                    .clone()
                    .lazy()
                    .select([col(key).alias(end), col(Self::ID).alias("__found")]);
                let id = if first {
                    col("__found")
                } else {
                    col(id_of(end)).fill_null(col("__found"))
                };
                lf = lf
                    .join(found, [col(end)], [col(end)], args.clone())
                    .with_columns([id.alias(id_of(end))])
                    .select([all().exclude_cols(["__found"]).as_expr()]);
            }
            lf
        };
        let mut with_ids = add_ids(edges, &self.base, true).collect().map_err(data)?;
        // Keys outside the base table (an edge to someone not in the population): rare, so
        // they get their ids in a second pass rather than every key in one dictionary.
        let outside: Vec<LazyFrame> = [from, to]
            .iter()
            .map(|end| {
                with_ids
                    .clone()
                    .lazy()
                    .filter(col(id_of(end)).is_null().and(col(*end).is_not_null()))
                    .select([col(*end).alias(key)])
            })
            .collect();
        let outside = concat(outside, UnionArgs::default())
            .map_err(data)?
            .unique(None, UniqueKeepStrategy::Any)
            .sort([key], Default::default())
            .collect()
            .map_err(data)?;
        if outside.height() > 0 {
            let outside = outside
                .with_row_index(Self::ID.into(), Some(self.base.height() as IdxSize))
                .map_err(data)?;
            with_ids = add_ids(with_ids.lazy(), &outside, false)
                .collect()
                .map_err(data)?;
        }
        with_ids
            .lazy()
            .with_columns([col(id_of(from)).alias(from), col(id_of(to)).alias(to)])
            .select([all().exclude_cols([id_of(from), id_of(to)]).as_expr()])
            .collect()
            .map_err(data)
    }
}
