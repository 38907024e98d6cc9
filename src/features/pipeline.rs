//! Compiles a [`PipelineSpec`] to polars lazy plans and runs it — for a whole population (batch,
//! training) or for a handful of users (online). Both go through [`Pipeline::compute`]: the online
//! path only narrows the input tables to the users (and the neighbours they depend on) first, so
//! there is exactly one implementation of every feature.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::*;

use super::sorted_agg::{aggregate_grouped, Aggregation, Kernel};
use super::spec::{
    Agg, AttrTransform, Condition, Definition, Derive, Feature, FeatureType, Literal, Mode,
    NeighborAgg, Op, PipelineSpec, Table,
};
use super::FeatureError;

/// Every event row gets its age at as-of under this name; filters may use it (e.g. "the month before last").
const AGE: &str = "days_before_as_of";
/// Per event row: its time is before as-of (known at as-of). See [`Pipeline::event_rows`].
const KNOWN: &str = "__known_at_as_of";
const NBR: &str = "__nbr";
const MS_PER_DAY: f64 = 86_400_000.0;
const DAYS_PER_MONTH: f64 = 30.4375;

/// Raw tables by name, as lazy frames (scanned from Parquet, or in memory).
#[derive(Clone, Default)]
pub struct Tables {
    frames: HashMap<String, LazyFrame>,
    /// Every user's stage-1 values, one row per user, computed beforehand (chunked runs,
    /// `features::chunked`). When set, neighbour and two-hop features read the neighbours' values
    /// from it and follow only the edges of the base table's users (the first hop).
    neighbor_values: Option<LazyFrame>,
}

impl Tables {
    /// Scans `<dir>/<file>` for the base table and every table the pipeline declares.
    pub fn open_dir(spec: &PipelineSpec, dir: &Path) -> Result<Tables, FeatureError> {
        let mut frames = HashMap::new();
        let mut files = vec![(spec.base_table.clone(), spec.base_file.clone())];
        files.extend(spec.tables.iter().map(|t| (t.name.clone(), t.file.clone())));
        // Every table is read in full (a population run, or the online store at start). Before
        // the loop, as a CSV is read there; a missing file is skipped by the prefetch and
        // reported by the loop.
        crate::io::prefetch_files(files.iter().map(|(_, file)| dir.join(file)).collect());
        for (name, file) in files {
            let path = dir.join(&file);
            if !path.is_file() {
                return Err(FeatureError::Data(format!(
                    "table '{name}': {} not found",
                    path.display()
                )));
            }
            let lf = if file.ends_with(".parquet") || file.ends_with(".pq") {
                let p = path.to_str().ok_or_else(|| {
                    FeatureError::Data(format!("non UTF-8 path {}", path.display()))
                })?;
                LazyFrame::scan_parquet(PlRefPath::new(p), ScanArgsParquet::default())
                    .map_err(|e| FeatureError::Data(format!("table '{name}': {e}")))?
            } else {
                // A partner's CSV: empty cells and NA are missing.
                super::frame::read_table(&path)
                    .map_err(|e| FeatureError::Data(format!("table '{name}': {e}")))?
                    .lazy()
            };
            frames.insert(name, lf);
        }
        Ok(Tables {
            frames,
            neighbor_values: None,
        })
    }

    pub fn from_frames(frames: impl IntoIterator<Item = (String, DataFrame)>) -> Tables {
        Tables {
            frames: frames.into_iter().map(|(n, df)| (n, df.lazy())).collect(),
            neighbor_values: None,
        }
    }

    pub fn insert(&mut self, name: &str, df: DataFrame) {
        self.frames.insert(name.to_string(), df.lazy());
    }

    pub fn insert_lazy(&mut self, name: &str, lf: LazyFrame) {
        self.frames.insert(name.to_string(), lf);
    }

    /// See the `neighbor_values` field.
    pub fn set_neighbor_values(&mut self, values: LazyFrame) {
        self.neighbor_values = Some(values);
    }

    pub fn get(&self, name: &str) -> Result<LazyFrame, FeatureError> {
        self.frames
            .get(name)
            .cloned()
            .ok_or_else(|| FeatureError::Data(format!("table '{name}' was not loaded")))
    }

    /// Materialises every table in memory (the online store keeps them so a request needs no I/O).
    pub fn collect_all(&self) -> Result<Tables, FeatureError> {
        let mut frames = HashMap::new();
        for (n, lf) in &self.frames {
            frames.insert(
                n.clone(),
                lf.clone()
                    .collect()
                    .map_err(|e| FeatureError::Data(format!("table '{n}': {e}")))?
                    .lazy(),
            );
        }
        Ok(Tables {
            frames,
            neighbor_values: self.neighbor_values.clone(),
        })
    }
}

/// A compiled pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub spec: PipelineSpec,
}

/// As-of instant in the units the tables use.
#[derive(Clone, Copy)]
struct AsOf {
    days: i32,
    ms: i64,
}

impl AsOf {
    fn new(d: NaiveDate) -> AsOf {
        let days = (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32;
        AsOf {
            days,
            ms: days as i64 * 86_400_000,
        }
    }
}

fn data_err(feature: &str, e: impl std::fmt::Display) -> FeatureError {
    FeatureError::Spec {
        feature: feature.to_string(),
        message: e.to_string(),
    }
}

fn left_join(a: LazyFrame, b: LazyFrame, key: &str) -> LazyFrame {
    let mut args = JoinArgs::new(JoinType::Left);
    args.maintain_order = MaintainOrderJoin::Left;
    a.join(b, [col(key)], [col(key)], args)
}

fn inner_join(a: LazyFrame, b: LazyFrame, left: &str, right: &str) -> LazyFrame {
    a.join(b, [col(left)], [col(right)], JoinArgs::new(JoinType::Inner))
}

impl Pipeline {
    pub fn load(path: &Path) -> Result<Pipeline, FeatureError> {
        Ok(Pipeline {
            spec: PipelineSpec::load(path)?,
        })
    }

    pub fn from_spec(spec: PipelineSpec) -> Pipeline {
        Pipeline { spec }
    }

    pub fn hash(&self) -> &str {
        self.spec.hash()
    }

    /// Features for every row of the base table, as of `as_of` (nothing at or after it is read).
    /// Output: the key column, then the features in file order.
    pub fn compute(&self, tables: &Tables, as_of: NaiveDate) -> Result<DataFrame, FeatureError> {
        self.plan(tables, as_of)?
            .collect()
            .map_err(|e| FeatureError::Data(format!("pipeline '{}': {e}", self.spec.name)))
    }

    /// The online path: the same plan over the tables narrowed to `users` and the rows their
    /// features depend on (neighbours, two-hop neighbours, users sharing a device). Rows come back
    /// in the order of `users`; unknown users are absent.
    pub fn compute_for_users(
        &self,
        tables: &Tables,
        as_of: NaiveDate,
        users: &[String],
    ) -> Result<DataFrame, FeatureError> {
        let key = self.spec.key.as_str();
        let mut needed: BTreeSet<String> = users.iter().cloned().collect();
        let asof = AsOf::new(as_of);

        // Users whose own-rows features the requested users' graph features read.
        let hops = self.spec.features.iter().map(|f| match f.def {
            Definition::TwoHop { .. } => 2,
            Definition::Neighbors { .. } => 1,
            _ => 0,
        });
        let hops = hops.max().unwrap_or(0);
        let edge_tables: Vec<&Table> = self
            .spec
            .tables
            .iter()
            .filter(|t| t.edges.is_some())
            .collect();
        for _ in 0..hops {
            let mut next = needed.clone();
            for t in &edge_tables {
                let e = self
                    .edge_frame(tables, t, asof)?
                    .filter(col(key).is_in(lit(str_series(&needed)).implode(false), false));
                next.extend(collect_strings(e.select([col(NBR)]), NBR)?);
            }
            needed = next;
        }
        for f in &self.spec.features {
            if let Definition::Shared { table, column, .. } = &f.def {
                let t = self.table(table, &f.meta.name)?;
                let rows = self.event_frame(tables, t, asof)?;
                let mine: Vec<String> = users.to_vec();
                let values = rows
                    .clone()
                    .filter(col(key).is_in(lit(str_series(&mine)).implode(false), false))
                    .select([col(column.as_str())]);
                let sharers = rows.join(
                    values,
                    [col(column.as_str())],
                    [col(column.as_str())],
                    JoinArgs::new(JoinType::Semi),
                );
                needed.extend(collect_strings(sharers.select([col(key)]), key)?);
            }
        }

        let set = lit(str_series(&needed)).implode(false);
        let mut narrowed = Tables::default();
        narrowed.frames.insert(
            self.spec.base_table.clone(),
            tables
                .get(&self.spec.base_table)?
                .filter(col(key).is_in(set.clone(), false)),
        );
        for t in &self.spec.tables {
            let lf = tables.get(&t.name)?;
            let lf = match &t.edges {
                Some((from, to)) => lf.filter(
                    col(from.as_str())
                        .is_in(set.clone(), false)
                        .or(col(to.as_str()).is_in(set.clone(), false)),
                ),
                None => lf.filter(col(key).is_in(set.clone(), false)),
            };
            narrowed.frames.insert(t.name.clone(), lf);
        }
        let computed = self.compute(&narrowed, as_of)?;
        // Restore the caller's order (and drop the helper users).
        let order = DataFrame::new(
            users.len(),
            vec![
                Column::new(key.into(), users.to_vec()),
                Column::new(
                    "__order".into(),
                    (0..users.len() as u32).collect::<Vec<_>>(),
                ),
            ],
        )
        .map_err(|e| FeatureError::Data(e.to_string()))?;
        in_order(order.lazy(), computed.lazy(), key)
    }

    fn table<'a>(&'a self, name: &str, feature: &str) -> Result<&'a Table, FeatureError> {
        self.spec
            .table(name)
            .ok_or_else(|| data_err(feature, format!("unknown table '{name}'")))
    }

    /// The lazy plan behind [`Pipeline::compute`].
    pub fn plan(&self, tables: &Tables, as_of: NaiveDate) -> Result<LazyFrame, FeatureError> {
        if self.spec.mode == Mode::Flat {
            return self.flat_plan(tables);
        }
        let asof = AsOf::new(as_of);
        let key = self.spec.key.as_str();
        let base = tables.get(&self.spec.base_table)?;
        let base_schema = schema_of(&base, &self.spec.base_table)?;
        if base_schema.get(key).is_none() {
            return Err(FeatureError::Data(format!(
                "base table '{}' has no key column '{key}'",
                self.spec.base_table
            )));
        }

        // Stage 1a: attributes of the base table.
        let mut select = vec![col(key)];
        for f in &self.spec.features {
            if let Definition::Attribute { column, transform } = &f.def {
                let Some(dtype) = base_schema.get(column.as_str()) else {
                    return Err(data_err(
                        &f.meta.name,
                        format!(
                            "unknown column '{column}' in table '{}'",
                            self.spec.base_table
                        ),
                    ));
                };
                let e = match transform {
                    None => col(column.as_str()),
                    Some(t) => {
                        let days = age_days_expr(column, dtype, asof).ok_or_else(|| {
                            data_err(
                                &f.meta.name,
                                format!(
                                    "column '{column}' is {dtype}, not a date; cannot take {t:?}"
                                ),
                            )
                        })?;
                        match t {
                            AttrTransform::DaysSince => days,
                            AttrTransform::MonthsSince => days / lit(DAYS_PER_MONTH),
                        }
                    }
                };
                select.push(cast_to(e, f.ftype).alias(f.meta.name.as_str()));
            }
        }
        let mut stage1 = base.select(select);

        // Stage 1b: one group-by per table for all its aggregates.
        for t in &self.spec.tables {
            let feats: Vec<&Feature> = self
                .spec
                .features
                .iter()
                .filter(
                    |f| matches!(&f.def, Definition::Aggregate { table, .. } if *table == t.name),
                )
                .collect();
            if feats.is_empty() {
                continue;
            }
            let rows = if t.edges.is_some() {
                self.edge_frame(tables, t, asof)?
            } else {
                self.event_rows(tables, t, asof)?
            };
            let schema = schema_of(&rows, &t.name)?;
            let mut row_columns = RowColumns::default();
            let mut inputs = Vec::new();
            for f in feats {
                inputs.push((aggregate_input(f, t, &schema, &mut row_columns)?, f));
            }
            let known = schema.get(KNOWN).is_some();
            // `event_rows` leaves a table's rows sorted by its key; edge tables are seen from
            // both ends unsorted, and go through polars' group-by (the same aggregations).
            let grouped_rows =
                t.edges.is_none() && matches!(schema.get(key), Some(DataType::String));
            let mut grouped = if grouped_rows {
                let mut aggregations = Vec::new();
                for (input, f) in &inputs {
                    let (column, mask) = match &input.value {
                        None => (input.mask.clone(), None),
                        Some(v) => (
                            row_columns.column_name(RowColumns::VALUE, v.clone()),
                            Some(input.mask.as_str().into()),
                        ),
                    };
                    aggregations.push(Aggregation {
                        input: column.into(),
                        mask,
                        kernel: input.kernel,
                        output: f.meta.name.as_str().into(),
                    });
                }
                if known {
                    aggregations.push(Aggregation {
                        input: KNOWN.into(),
                        mask: None,
                        kernel: Kernel::Any,
                        output: KNOWN.into(),
                    });
                }
                let mut finish = vec![col(key)];
                for (_, f) in &inputs {
                    finish.push(cast_to(col(f.meta.name.as_str()), f.ftype));
                }
                if known {
                    finish.push(col(KNOWN));
                }
                let rows = row_columns.add_to(rows);
                aggregate_grouped_plan(rows, key, aggregations).select(finish)
            } else {
                let mut aggs = Vec::new();
                for (input, f) in &inputs {
                    let row = input.masked_column(&mut row_columns);
                    aggs.push(
                        cast_to(polars_aggregation(col(row.as_str()), input.kernel), f.ftype)
                            .alias(f.meta.name.as_str()),
                    );
                }
                if known {
                    aggs.push(polars_aggregation(col(KNOWN), Kernel::Any).alias(KNOWN));
                }
                row_columns.add_to(rows).group_by([col(key)]).agg(aggs)
            };
            if known {
                // A user whose rows all lie at or after as-of had none at as-of: missing, like a
                // user with no rows at all (the left join below gives null).
                grouped = grouped
                    .filter(col(KNOWN))
                    .select([all().exclude_cols([KNOWN]).as_expr()]);
            }
            stage1 = left_join(stage1, grouped, key);
        }

        // Stage 1c: users sharing a value (a device) with the user.
        for f in &self.spec.features {
            if matches!(f.def, Definition::Shared { .. }) {
                let pairs = self.shared_pairs(tables, f, as_of)?.cache();
                let others = shared_values_only(key, f, pairs.clone())?;
                let counts = shared_counts(key, f, pairs, others)?;
                stage1 = left_join(stage1, counts, key);
            }
        }

        // Stage 2 reads neighbours' stage-1 values: materialise stage 1 once.
        let has_stage2 = self.spec.features.iter().any(|f| f.def.stage() == 2);
        let mut full = stage1.clone();
        if has_stage2 {
            let stage1 = stage1.cache();
            full = stage1.clone();
            // Precomputed values of every user (a chunked run): the base table holds only the
            // users to compute, so only their edges are followed on the first hop.
            // Set only by the chunked run, whose keys it has checked are unique.
            let one_row_per_user = tables.neighbor_values.is_some();
            let (values, own) = match &tables.neighbor_values {
                Some(v) => (v.clone(), Some(stage1.clone().select([col(key)]))),
                None => (stage1.clone(), None),
            };
            let own_edges = |edges: LazyFrame| match &own {
                Some(k) => edges.join(
                    k.clone(),
                    [col(key)],
                    [col(key)],
                    JoinArgs::new(JoinType::Semi),
                ),
                None => edges,
            };
            // Neighbour features: one join of each edge table with the neighbours' values,
            // then one group-by for all the features that follow its edges (a feature limited
            // to some edge kinds masks the others). At 1M users a join and a group-by per
            // feature were most of the graph step.
            let mut edge_tables: Vec<&str> = Vec::new();
            for f in &self.spec.features {
                if let Definition::Neighbors { table, .. } = &f.def {
                    if !edge_tables.contains(&table.as_str()) {
                        edge_tables.push(table);
                    }
                }
            }
            for table in edge_tables {
                let feats: Vec<&Feature> = self
                    .spec
                    .features
                    .iter()
                    .filter(
                        |f| matches!(&f.def, Definition::Neighbors { table: t, .. } if t == table),
                    )
                    .collect();
                let Some(first) = feats.first().map(|f| f.meta.name.as_str()) else {
                    continue;
                };
                let stage1_schema = schema_of(&values, "stage 1")?;
                let mut needed = Vec::new();
                for f in &feats {
                    if let Definition::Neighbors { of, filter, .. } = &f.def {
                        let mine =
                            neighbor_columns(of.iter().chain(filter.iter().map(|c| &c.column)));
                        // Checked per feature, so that an error names the feature at fault.
                        check_neighbor_columns(&stage1_schema, &base_schema, &f.meta.name, &mine)?;
                        needed.extend(mine);
                    }
                }
                let needed = neighbor_columns(needed.iter());
                let t = self.table(table, first)?;
                let edges = own_edges(self.edge_frame(tables, t, asof)?);
                let nbr_vals =
                    self.neighbor_values(&values, &base_schema, first, &needed, one_row_per_user)?;
                let joined = left_join_on(edges, nbr_vals, NBR, NBR);
                let schema = schema_of(&joined, table)?;
                let mut aggs = Vec::with_capacity(feats.len());
                for f in &feats {
                    let Definition::Neighbors {
                        edge_kinds,
                        agg,
                        of,
                        filter,
                        ..
                    } = &f.def
                    else {
                        continue;
                    };
                    let mask = conditions_mask(&f.meta.name, filter, &schema)?;
                    // The edges this feature follows; a user with none of them stays missing.
                    let followed = (!edge_kinds.is_empty()).then(|| {
                        member_of(col("kind"), str_series(edge_kinds), true).fill_null(lit(false))
                    });
                    let on_followed = |e: Expr| match &followed {
                        Some(k) => e.filter(k.clone()),
                        None => e,
                    };
                    let value = || {
                        of.as_deref().map(|o| {
                            on_followed(col(o).cast(DataType::Float64))
                                .filter(on_followed(mask.clone()))
                        })
                    };
                    let e = match agg {
                        NeighborAgg::Count => on_followed(mask.clone()).cast(DataType::Int64).sum(),
                        NeighborAgg::Share => {
                            on_followed(mask.clone()).cast(DataType::Float64).mean()
                        }
                        NeighborAgg::Mean => value().map(|v| v.mean()).unwrap_or(lit(NULL)),
                        NeighborAgg::Max => value().map(|v| v.max()).unwrap_or(lit(NULL)),
                        NeighborAgg::Sum => value().map(|v| v.sum()).unwrap_or(lit(NULL)),
                    };
                    let e = match &followed {
                        Some(k) => when(k.clone().any(false)).then(e).otherwise(lit(NULL)),
                        None => e,
                    };
                    aggs.push(cast_to(e, f.ftype).alias(f.meta.name.as_str()));
                }
                let grouped = joined.group_by([col(key)]).agg(aggs);
                full = left_join(full, grouped, key);
            }
            for f in &self.spec.features {
                match &f.def {
                    Definition::TwoHop {
                        table,
                        edge_kinds,
                        filter,
                    } => {
                        let t = self.table(table, &f.meta.name)?;
                        let edges = self.followed_edges(tables, t, asof, edge_kinds)?;
                        let needed = neighbor_columns(filter.iter().map(|c| &c.column));
                        let nbr_vals = self.neighbor_values(
                            &values,
                            &base_schema,
                            &f.meta.name,
                            &needed,
                            one_row_per_user,
                        )?;
                        let mut second = edges
                            .clone()
                            .select([col(key).alias("__mid"), col(NBR).alias("__far")]);
                        if !filter.is_empty() {
                            // Only far users that match the filter are counted, so walk the
                            // second hop to those alone: paths grow with the square of a hub's
                            // degree (25M at 1M users), matching users are few (~4 % have a
                            // judgment). The count is the same; the mask below still applies.
                            let schema = schema_of(&nbr_vals, table)?;
                            let mask = conditions_mask(&f.meta.name, filter, &schema)?;
                            let matching = nbr_vals
                                .clone()
                                .filter(mask)
                                .select([col(NBR).alias("__far")]);
                            second = second.join(
                                matching,
                                [col("__far")],
                                [col("__far")],
                                JoinArgs::new(JoinType::Semi),
                            );
                        }
                        let far = inner_join(
                            own_edges(edges.clone()).select([col(key), col(NBR)]),
                            second,
                            NBR,
                            "__mid",
                        )
                        .filter(col("__far").neq(col(key)))
                        .select([col(key), col("__far").alias(NBR)])
                        .unique(None, UniqueKeepStrategy::Any);
                        let joined = left_join_on(far, nbr_vals, NBR, NBR);
                        let schema = schema_of(&joined, table)?;
                        let mask = conditions_mask(&f.meta.name, filter, &schema)?;
                        let counted = joined
                            .group_by([col(key)])
                            .agg([mask.cast(DataType::Int64).sum().alias(f.meta.name.as_str())]);
                        // Users with edges but no second hop count 0; users with no edges stay missing.
                        let present = own_edges(edges)
                            .select([col(key)])
                            .unique(None, UniqueKeepStrategy::Any);
                        let counted = left_join(present, counted, key).with_columns([cast_to(
                            col(f.meta.name.as_str()).fill_null(lit(0i64)),
                            f.ftype,
                        )]);
                        full = left_join(full, counted, key);
                    }
                    _ => {}
                }
            }
        }

        // Stage 3: ratios.
        let ratios: Vec<Expr> = self
            .spec
            .features
            .iter()
            .filter_map(|f| match &f.def {
                Definition::Ratio {
                    numerator,
                    denominator,
                } => {
                    let num = col(numerator.as_str()).cast(DataType::Float64);
                    let den = col(denominator.as_str()).cast(DataType::Float64);
                    Some(
                        when(
                            den.clone()
                                .is_not_null()
                                .and(den.clone().neq(lit(0.0)))
                                .and(num.clone().is_not_null()),
                        )
                        .then(num / den)
                        .otherwise(lit(NULL).cast(DataType::Float64))
                        .alias(f.meta.name.as_str()),
                    )
                }
                _ => None,
            })
            .collect();
        if !ratios.is_empty() {
            full = full.with_columns(ratios);
        }

        let mut out = vec![col(key)];
        out.extend(
            self.spec
                .features
                .iter()
                .map(|f| cast_to(col(f.meta.name.as_str()), f.ftype)),
        );
        // Polars would drop the event tables' sort by key (see `event_frame`): no operator
        // downstream observes row order. Keep it, so every path groups by slices alike.
        Ok(full.select(out).with_check_order(false))
    }

    /// Flat mode: the table already has one row per applicant; listed columns are typed and
    /// passed through (all columns when none are listed).
    fn flat_plan(&self, tables: &Tables) -> Result<LazyFrame, FeatureError> {
        let base = tables.get(&self.spec.base_table)?;
        let schema = schema_of(&base, &self.spec.base_table)?;
        let key = self.spec.key.as_str();
        let mut out = Vec::new();
        if schema.get(key).is_some() {
            out.push(col(key));
        }
        if self.spec.features.is_empty() {
            // No columns listed: every column passes through as it was read.
            return Ok(base);
        }
        for f in &self.spec.features {
            let Definition::Column { column } = &f.def else {
                continue;
            };
            if schema.get(column.as_str()).is_none() {
                return Err(data_err(
                    &f.meta.name,
                    format!(
                        "unknown column '{column}' in table '{}'",
                        self.spec.base_table
                    ),
                ));
            }
            out.push(cast_to(col(column.as_str()), f.ftype).alias(f.meta.name.as_str()));
        }
        Ok(base.select(out))
    }

    /// A users-sharing-a-value feature's distinct (key, value) pairs before as-of, within its
    /// window: who used which device. The population run ([`Pipeline::compute_chunked`]) gathers
    /// them a key range at a time.
    pub(super) fn shared_pairs(
        &self,
        tables: &Tables,
        f: &Feature,
        as_of: NaiveDate,
    ) -> Result<LazyFrame, FeatureError> {
        let Definition::Shared {
            table,
            column,
            window_days,
        } = &f.def
        else {
            return Err(data_err(&f.meta.name, "not a shared-value feature"));
        };
        let t = self.table(table, &f.meta.name)?;
        let rows = self.event_frame(tables, t, AsOf::new(as_of))?;
        let schema = schema_of(&rows, table)?;
        if schema.get(column.as_str()).is_none() {
            return Err(data_err(
                &f.meta.name,
                format!("unknown column '{column}' in table '{table}'"),
            ));
        }
        let mut rows = rows.filter(col(column.as_str()).is_not_null());
        if let Some(w) = window_days {
            rows = rows.filter(col(AGE).lt_eq(lit(*w as f64)));
        }
        Ok(rows
            .select([col(self.spec.key.as_str()), col(column.as_str())])
            .unique(None, UniqueKeepStrategy::Any))
    }

    /// A table's rows before as-of, with the age column and the derived columns added.
    fn event_frame(
        &self,
        tables: &Tables,
        t: &Table,
        asof: AsOf,
    ) -> Result<LazyFrame, FeatureError> {
        let rows = self.event_rows(tables, t, asof)?;
        Ok(match &t.time {
            Some(_) => rows
                .filter(col(KNOWN))
                .select([all().exclude_cols([KNOWN]).as_expr()]),
            None => rows,
        })
    }

    /// A table's rows, every one, with the age column, the derived columns and, when the table
    /// has a time column, [`KNOWN`]: whether the row lies before as-of. The aggregates read rows
    /// through it and mask out the rows after as-of instead of filtering them away: polars
    /// filters a large frame in one piece per thread and returns the pieces as chunks, and a
    /// key in several chunks is grouped by hashing every row into index lists instead of by
    /// slices, with every aggregation rechunking its column again (on the 1M-user batch that
    /// cost more than the aggregations themselves, and the copies fresh memory besides).
    fn event_rows(
        &self,
        tables: &Tables,
        t: &Table,
        asof: AsOf,
    ) -> Result<LazyFrame, FeatureError> {
        let lf = tables.get(&t.name)?;
        let schema = schema_of(&lf, &t.name)?;
        let lf = match &t.time {
            Some(tc) => {
                let dtype = schema.get(tc.as_str()).ok_or_else(|| {
                    FeatureError::Data(format!("table '{}': time column '{tc}' not found", t.name))
                })?;
                let age = age_days_expr(tc, dtype, asof).ok_or_else(|| {
                    FeatureError::Data(format!(
                        "table '{}': time column '{tc}' is {dtype}, not a date/time",
                        t.name
                    ))
                })?;
                lf.with_columns([
                    age.clone().alias(AGE),
                    age.gt(lit(0.0)).fill_null(lit(false)).alias(KNOWN),
                ])
            }
            None => lf.with_columns([lit(0.0).alias(AGE)]),
        };
        // Edge tables (no key column) are seen from both ends by `edge_frame` instead.
        // Each user's rows together, in their original order (a stable sort; free when the key
        // is flagged sorted, see `mark_if_sorted`). The aggregates need it: `sorted_agg` reads
        // each user's run of rows (and refuses rows not grouped by the key). It also makes every
        // path — one user online, a chunk of a batch, the whole population — aggregate the same
        // runs the same way, so a float sum is bit for bit the same on all of them.
        let key = self.spec.key.as_str();
        let mut lf = if t.edges.is_none() {
            lf.sort(
                [key],
                SortMultipleOptions::default().with_maintain_order(true),
            )
        } else {
            lf
        };
        for d in &t.derive {
            let e = match d {
                Derive::DaysPastDue { name, due, paid } => {
                    for c in [due, paid] {
                        if schema.get(c.as_str()).is_none() {
                            return Err(data_err(
                                name,
                                format!("unknown column '{c}' in table '{}'", t.name),
                            ));
                        }
                    }
                    let due = col(due.as_str()).cast(DataType::Int32);
                    let paid = col(paid.as_str()).cast(DataType::Int32);
                    let now = lit(asof.days);
                    // A payment on or after as-of was not known at as-of: the bill counts as unpaid.
                    let paid_known = paid.clone().is_not_null().and(paid.clone().lt(now.clone()));
                    let late_paid = paid - due.clone();
                    let late_open = now.clone() - due.clone();
                    when(paid_known)
                        .then(
                            when(late_paid.clone().gt(lit(0)))
                                .then(late_paid)
                                .otherwise(lit(0)),
                        )
                        .when(due.clone().lt(now))
                        .then(late_open)
                        .otherwise(lit(NULL).cast(DataType::Int32))
                        .cast(DataType::Float64)
                        .alias(name.as_str())
                }
                Derive::HourOfDay { name, column } => {
                    let ms = col(column.as_str()).cast(DataType::Int64);
                    let in_day = ms % lit(86_400_000i64);
                    ((in_day.clone() - in_day % lit(3_600_000i64)) / lit(3_600_000i64))
                        .cast(DataType::Float64)
                        .alias(name.as_str())
                }
            };
            lf = lf.with_columns([e]);
        }
        Ok(lf)
    }

    /// An undirected edge table seen from both ends: key, neighbour, and the other columns.
    fn edge_frame(
        &self,
        tables: &Tables,
        t: &Table,
        asof: AsOf,
    ) -> Result<LazyFrame, FeatureError> {
        let Some((from, to)) = &t.edges else {
            return Err(FeatureError::Data(format!(
                "table '{}' is not an edge table",
                t.name
            )));
        };
        let key = self.spec.key.as_str();
        let lf = self.event_frame(tables, t, asof)?;
        let schema = schema_of(&lf, &t.name)?;
        let rest: Vec<Expr> = schema
            .iter_names()
            .filter(|n| n.as_str() != from && n.as_str() != to)
            .map(|n| col(n.clone()))
            .collect();
        let side = |a: &str, b: &str| {
            let mut s = vec![col(a).alias(key), col(b).alias(NBR)];
            s.extend(rest.iter().cloned());
            lf.clone().select(s)
        };
        concat([side(from, to), side(to, from)], UnionArgs::default())
            .map_err(|e| FeatureError::Data(format!("table '{}': {e}", t.name)))
    }

    fn followed_edges(
        &self,
        tables: &Tables,
        t: &Table,
        asof: AsOf,
        kinds: &[String],
    ) -> Result<LazyFrame, FeatureError> {
        let edges = self.edge_frame(tables, t, asof)?;
        Ok(if kinds.is_empty() {
            edges
        } else {
            edges.filter(member_of(col("kind"), str_series(kinds), true))
        })
    }

    /// Stage-1 values of neighbours, keyed by `__nbr`, restricted to the needed columns. Rows
    /// that repeat a user (a base table listing a user twice) are made distinct, or every edge to
    /// that user would count twice; `one_row_per_user` skips that when it cannot happen (a
    /// chunked run checks its keys are unique first), as hashing every user's whole row is ~10 %
    /// of that run's graph step.
    fn neighbor_values(
        &self,
        stage1: &LazyFrame,
        base_schema: &Schema,
        feature: &str,
        needed: &[String],
        one_row_per_user: bool,
    ) -> Result<LazyFrame, FeatureError> {
        let key = self.spec.key.as_str();
        check_neighbor_columns(&schema_of(stage1, "stage 1")?, base_schema, feature, needed)?;
        let mut sel = vec![col(key).alias(NBR)];
        sel.extend(needed.iter().map(|c| col(c.as_str())));
        let vals = stage1.clone().select(sel);
        Ok(if one_row_per_user {
            vals
        } else {
            vals.unique(None, UniqueKeepStrategy::Any)
        })
    }
}

/// The pairs of `all` (every user's (user, value) pairs) whose value appears in more than one
/// pair: the only ones that can count towards [`shared_counts`]. Most values (devices) belong to
/// one user, so joining against these instead of every pair cuts the join's work by as much; a
/// value held by one user only ever paired with that user, whom the count leaves out anyway.
pub(super) fn shared_values_only(
    key: &str,
    f: &Feature,
    all: LazyFrame,
) -> Result<LazyFrame, FeatureError> {
    let Definition::Shared { column, .. } = &f.def else {
        return Err(data_err(&f.meta.name, "not a shared-value feature"));
    };
    let column = column.as_str();
    let shared = all
        .clone()
        .group_by([col(column)])
        .agg([col(key).len().alias("__pairs")])
        .filter(col("__pairs").gt(lit(1u32)))
        .select([col(column)]);
    Ok(inner_join(all, shared, column, column))
}

/// A users-sharing-a-value feature for the users of `mine` (their pairs from
/// [`Pipeline::shared_pairs`]): how many other users of `all` (every user's pairs, or only those
/// of [`shared_values_only`]) used one of their values. Users with pairs but nobody sharing get
/// 0; users without pairs are absent, so they stay missing.
pub(super) fn shared_counts(
    key: &str,
    f: &Feature,
    mine: LazyFrame,
    all: LazyFrame,
) -> Result<LazyFrame, FeatureError> {
    let Definition::Shared { column, .. } = &f.def else {
        return Err(data_err(&f.meta.name, "not a shared-value feature"));
    };
    let name = f.meta.name.as_str();
    let other = all.select([col(key).alias("__other"), col(column.as_str())]);
    let counts = inner_join(mine.clone(), other, column, column)
        .filter(col("__other").neq(col(key)))
        .group_by([col(key)])
        .agg([col("__other").n_unique().alias(name)]);
    let present = mine
        .select([col(key)])
        .unique(None, UniqueKeepStrategy::Any);
    Ok(left_join(present, counts, key)
        .with_columns([cast_to(col(name).fill_null(lit(0u32)), f.ftype)]))
}

fn left_join_on(a: LazyFrame, b: LazyFrame, left: &str, right: &str) -> LazyFrame {
    let mut args = JoinArgs::new(JoinType::Left);
    args.maintain_order = MaintainOrderJoin::Left;
    a.join(b, [col(left)], [col(right)], args)
}

/// The columns a graph feature reads from its neighbours must be their stage-1 features.
fn check_neighbor_columns(
    stage1_schema: &Schema,
    base_schema: &Schema,
    feature: &str,
    needed: &[String],
) -> Result<(), FeatureError> {
    for c in needed {
        if stage1_schema.get(c.as_str()).is_none() {
            let hint = if base_schema.get(c.as_str()).is_some() {
                " (declare it as an attribute feature)"
            } else {
                ""
            };
            return Err(data_err(
                feature,
                format!("'{c}' is not a feature computed from the neighbour's own rows{hint}"),
            ));
        }
    }
    Ok(())
}

fn neighbor_columns<'a>(it: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut v: Vec<String> = it.cloned().collect();
    v.sort();
    v.dedup();
    v
}

fn schema_of(lf: &LazyFrame, table: &str) -> Result<Schema, FeatureError> {
    lf.clone()
        .collect_schema()
        .map(|s| (*s).clone())
        .map_err(|e| FeatureError::Data(format!("table '{table}': {e}")))
}

/// Days between a date/time column and as-of (positive = before as-of).
fn age_days_expr(column: &str, dtype: &DataType, asof: AsOf) -> Option<Expr> {
    match dtype {
        DataType::Date => {
            Some((lit(asof.days) - col(column).cast(DataType::Int32)).cast(DataType::Float64))
        }
        DataType::Datetime(unit, _) => {
            let per_ms = match unit {
                TimeUnit::Milliseconds => 1i64,
                TimeUnit::Microseconds => 1_000,
                TimeUnit::Nanoseconds => 1_000_000,
            };
            let ms = col(column).cast(DataType::Int64) / lit(per_ms);
            Some((lit(asof.ms) - ms).cast(DataType::Float64) / lit(MS_PER_DAY))
        }
        _ => None,
    }
}

fn cast_to(e: Expr, t: FeatureType) -> Expr {
    match t {
        FeatureType::Int => e.cast(DataType::Int64),
        FeatureType::Float => e.cast(DataType::Float64),
        FeatureType::Category => e.cast(DataType::String),
    }
}

fn str_series<S: AsRef<str>>(values: impl IntoIterator<Item = S>) -> Series {
    let v: Vec<String> = values.into_iter().map(|s| s.as_ref().to_string()).collect();
    Series::new("".into(), v)
}

fn collect_strings(lf: LazyFrame, column: &str) -> Result<Vec<String>, FeatureError> {
    let df = lf
        .collect()
        .map_err(|e| FeatureError::Data(e.to_string()))?;
    let s = df
        .column(column)
        .map_err(|e| FeatureError::Data(e.to_string()))?;
    let ca = s
        .str()
        .map_err(|e| FeatureError::Data(format!("column '{column}' must be a string key: {e}")))?;
    Ok(ca.iter().flatten().map(|s| s.to_string()).collect())
}

/// The row-level columns a table's aggregates read, each computed once over the table's rows
/// however many features share it. Three layers, each one `with_columns` reading the one before:
/// the conditions (a filter's test, the window), the masks (a feature's conditions ANDed) and
/// the masked values. Why: features repeat their filters (`kind in [loan_repayment,
/// utility_bill]` in 14 of the demo pipeline's 39 transaction features), and polars did not
/// share them: every string comparison ran once per feature (the string equality kernel had
/// 4.9 % of the 1M-user batch's CPU samples, 2.5 % with each condition computed once).
#[derive(Default)]
struct RowColumns {
    layers: [Vec<(Expr, String)>; 3],
}

impl RowColumns {
    const CONDITION: usize = 0;
    const MASK: usize = 1;
    const VALUE: usize = 2;

    /// A column holding `e`'s value on each row: the one already made for an equal expression,
    /// or a new one.
    fn column(&mut self, layer: usize, e: Expr) -> Expr {
        col(self.column_name(layer, e).as_str())
    }

    fn column_name(&mut self, layer: usize, e: Expr) -> String {
        let layer_exprs = &mut self.layers[layer];
        if let Some((_, name)) = layer_exprs.iter().find(|(x, _)| *x == e) {
            return name.clone();
        }
        let name = format!("__row{layer}_{}", layer_exprs.len());
        layer_exprs.push((e, name.clone()));
        name
    }

    fn add_to(self, mut rows: LazyFrame) -> LazyFrame {
        for layer in self.layers {
            if !layer.is_empty() {
                rows = rows.with_columns(
                    layer
                        .into_iter()
                        .map(|(e, name)| e.alias(name))
                        .collect::<Vec<_>>(),
                );
            }
        }
        rows
    }
}

/// An aggregate feature as a row-level mask (in `rows`, by name: the rows matching its filters and
/// window), the value it aggregates on those rows and how. Aggregations skip the rows outside
/// the mask as they skip nulls: 0 for counts and sums of no matching row, null for
/// mean/max/min/std.
fn aggregate_input(
    f: &Feature,
    t: &Table,
    schema: &Schema,
    rows: &mut RowColumns,
) -> Result<AggregateInput, FeatureError> {
    let Definition::Aggregate {
        column,
        agg,
        filter,
        window_days,
        ..
    } = &f.def
    else {
        return Err(data_err(&f.meta.name, "not an aggregate"));
    };
    let name = f.meta.name.as_str();
    if window_days.is_some() && t.time.is_none() {
        return Err(data_err(
            name,
            format!("window_days needs a time column on table '{}'", t.name),
        ));
    }
    let mut conditions = vec![rows.column(RowColumns::CONDITION, all_rows(name, schema)?)];
    for c in condition_exprs(name, filter, schema)? {
        conditions.push(rows.column(RowColumns::CONDITION, c));
    }
    if schema.get(KNOWN).is_some() {
        conditions.push(col(KNOWN));
    }
    if let Some(w) = window_days {
        let in_window = col(AGE).lt_eq(lit(*w as f64));
        conditions.push(rows.column(RowColumns::CONDITION, in_window));
    }
    let mask = conditions
        .into_iter()
        .reduce(|a, b| a.and(b))
        .ok_or_else(|| data_err(name, "no mask"))?;
    let mask = rows.column_name(RowColumns::MASK, mask);
    let value = || -> Result<Expr, FeatureError> {
        let c = column
            .as_deref()
            .ok_or_else(|| data_err(name, "needs 'column'"))?;
        if schema.get(c).is_none() {
            return Err(data_err(
                name,
                format!("unknown column '{c}' in table '{}'", t.name),
            ));
        }
        Ok(col(c))
    };
    let (value, kernel) = match agg {
        // The boolean mask itself: the count of its true rows (a bit per row, not 4-8 bytes).
        Agg::Count => (None, Kernel::Count),
        Agg::Sum => (Some(value()?.cast(DataType::Float64)), Kernel::Sum),
        Agg::Mean => (Some(value()?.cast(DataType::Float64)), Kernel::Mean),
        Agg::Max => (Some(value()?.cast(DataType::Float64)), Kernel::Max),
        Agg::Min => (Some(value()?.cast(DataType::Float64)), Kernel::Min),
        Agg::Std => (Some(value()?.cast(DataType::Float64)), Kernel::Std),
        Agg::NUnique => (Some(value()?), Kernel::NUnique),
        Agg::DaysSinceFirst => (Some(col(AGE)), Kernel::Max),
        Agg::DaysSinceLast => (Some(col(AGE)), Kernel::Min),
    };
    let value_type = match kernel {
        Kernel::NUnique => schema
            .get(column.as_deref().unwrap_or_default())
            .cloned()
            .unwrap_or(DataType::Null),
        _ => DataType::Float64,
    };
    Ok(AggregateInput {
        kernel,
        mask,
        value,
        value_type,
    })
}

/// What [`aggregate_input`] makes of an aggregate feature.
struct AggregateInput {
    kernel: Kernel,
    /// The row column (by name) of the rows the feature reads: its filters, window, as-of.
    mask: String,
    /// The value aggregated on those rows; none for a count (the mask's true rows).
    value: Option<Expr>,
    value_type: DataType,
}

impl AggregateInput {
    /// The row column polars' group-by aggregates: the value where the mask holds, null elsewhere
    /// (for a count, the mask). Why not `value.filter(mask).sum()` inside the group-by: polars
    /// evaluates a filter in a group context group by group (an index list per group), which
    /// made the population run 2-3x slower.
    fn masked_column(&self, rows: &mut RowColumns) -> String {
        let Some(value) = &self.value else {
            return self.mask.clone();
        };
        let masked = when(col(self.mask.as_str()))
            .then(value.clone())
            .otherwise(lit(NULL).cast(self.value_type.clone()));
        rows.column_name(RowColumns::VALUE, masked)
    }
}

/// `kernel` as a polars group aggregation: what [`aggregate_grouped`] computes on rows grouped
/// by the key, for tables whose rows are not (edge tables). `sorted_agg`'s tests hold the two
/// equal bit for bit.
pub(super) fn polars_aggregation(row: Expr, kernel: Kernel) -> Expr {
    match kernel {
        Kernel::Count | Kernel::Sum => row.sum(),
        Kernel::Mean => row.mean(),
        Kernel::Max => row.max(),
        Kernel::Min => row.min(),
        Kernel::Std => row.std(1),
        Kernel::NUnique => row.drop_nulls().n_unique(),
        Kernel::Any => row.any(false),
    }
}

/// `rows` (grouped by `key`) aggregated per user by [`aggregate_grouped`], inside the lazy plan
/// so that polars still runs each table's branch beside the others. Only the key and the
/// aggregated row columns go in, so the columns nothing reads are never read from the file.
fn aggregate_grouped_plan(rows: LazyFrame, key: &str, aggregations: Vec<Aggregation>) -> LazyFrame {
    let mut inputs = vec![PlSmallStr::from(key)];
    for a in &aggregations {
        for column in std::iter::once(&a.input).chain(&a.mask) {
            if !inputs.contains(column) {
                inputs.push(column.clone());
            }
        }
    }
    let mut output = Schema::default();
    output.insert(key.into(), DataType::String);
    for a in &aggregations {
        output.insert(a.output.clone(), a.kernel.output_type());
    }
    let output = Arc::new(output);
    let key = key.to_string();
    rows.select(inputs.into_iter().map(col).collect::<Vec<_>>())
        .map(
            move |df| aggregate_grouped(df, &key, &aggregations),
            OptFlags::empty(),
            Some(Arc::new(move |_: &Schema| Ok(output.clone()))),
            Some("per-user aggregates"),
        )
}

/// AND of the conditions; rows where a condition is null do not match. Starts from a column so
/// that it is a per-row mask in a group-by context.
fn conditions_mask(
    feature: &str,
    conditions: &[Condition],
    schema: &Schema,
) -> Result<Expr, FeatureError> {
    Ok(condition_exprs(feature, conditions, schema)?
        .into_iter()
        .fold(all_rows(feature, schema)?, |mask, c| mask.and(c)))
}

/// True on every row, as a column (a literal would be one value in a group-by context).
fn all_rows(feature: &str, schema: &Schema) -> Result<Expr, FeatureError> {
    let anchor = schema
        .iter_names()
        .next()
        .cloned()
        .ok_or_else(|| data_err(feature, "table has no columns"))?;
    Ok(col(anchor.clone()).is_null().or(col(anchor).is_not_null()))
}

/// Each condition as a mask that is false where the condition is null.
fn condition_exprs(
    feature: &str,
    conditions: &[Condition],
    schema: &Schema,
) -> Result<Vec<Expr>, FeatureError> {
    let mut exprs = Vec::with_capacity(conditions.len());
    for c in conditions {
        let Some(dtype) = schema.get(c.column.as_str()) else {
            return Err(data_err(
                feature,
                format!("unknown column '{}' in filter", c.column),
            ));
        };
        let is_text = matches!(dtype, DataType::String);
        let x = || col(c.column.as_str());
        let num = || col(c.column.as_str()).cast(DataType::Float64);
        let check_kind = |l: &Literal| -> Result<(), FeatureError> {
            match (l, is_text) {
                (Literal::Str(_), false) if !matches!(dtype, DataType::Categorical(..)) => {
                    Err(data_err(
                        feature,
                        format!(
                            "filter compares column '{}' ({dtype}) with a string",
                            c.column
                        ),
                    ))
                }
                (Literal::Num(_), true) => Err(data_err(
                    feature,
                    format!("filter compares text column '{}' with a number", c.column),
                )),
                _ => Ok(()),
            }
        };
        let lit_of = |l: &Literal| match l {
            Literal::Str(s) => (x(), lit(s.clone())),
            Literal::Num(v) => (num(), lit(*v)),
            Literal::Bool(b) => (x(), lit(*b)),
        };
        let list = |items: &[Literal]| -> Result<(Expr, Series), FeatureError> {
            for l in items {
                check_kind(l)?;
            }
            if is_text {
                let v: Vec<String> = items
                    .iter()
                    .map(|l| match l {
                        Literal::Str(s) => s.clone(),
                        Literal::Num(n) => n.to_string(),
                        Literal::Bool(b) => b.to_string(),
                    })
                    .collect();
                Ok((x(), Series::new("".into(), v)))
            } else {
                let v: Vec<f64> = items
                    .iter()
                    .map(|l| match l {
                        Literal::Num(n) => *n,
                        Literal::Bool(b) => f64::from(u8::from(*b)),
                        Literal::Str(_) => f64::NAN,
                    })
                    .collect();
                Ok((num(), Series::new("".into(), v)))
            }
        };
        let cond = match &c.op {
            Op::Eq(l) => {
                check_kind(l)?;
                let (a, b) = lit_of(l);
                a.eq(b)
            }
            Op::Ne(l) => {
                check_kind(l)?;
                let (a, b) = lit_of(l);
                a.neq(b)
            }
            Op::In(items) => {
                let (a, s) = list(items)?;
                member_of(a, s, is_text)
            }
            Op::NotIn(items) => {
                let (a, s) = list(items)?;
                member_of(a, s, is_text).not()
            }
            Op::Gt(v) | Op::Ge(v) | Op::Lt(v) | Op::Le(v) if is_text => {
                let _ = v;
                return Err(data_err(
                    feature,
                    format!("filter compares text column '{}' with a number", c.column),
                ));
            }
            Op::Gt(v) => num().gt(lit(*v)),
            Op::Ge(v) => num().gt_eq(lit(*v)),
            Op::Lt(v) => num().lt(lit(*v)),
            Op::Le(v) => num().lt_eq(lit(*v)),
            Op::IsNull => x().is_null(),
            Op::NotNull => x().is_not_null(),
        };
        exprs.push(cond.fill_null(lit(false)));
    }
    Ok(exprs)
}

/// Most values of a short text list tested as equalities rather than with `is_in`.
const MEMBER_BY_EQUALITY: usize = 8;

/// `a` is one of `values`. Polars' `is_in` on text hashes every row's string (5–7 % of the 1M
/// batch's CPU went there); an equality with a literal compares the inline prefix of the string
/// view, vectorised. Both give null for a null `a`, and the caller treats null as no match.
fn member_of(a: Expr, values: Series, is_text: bool) -> Expr {
    if is_text && values.len() <= MEMBER_BY_EQUALITY {
        if let Ok(strings) = values.str() {
            let mut eqs = strings
                .iter()
                .flatten()
                .map(|v| a.clone().eq(lit(v.to_string())));
            if let Some(first) = eqs.next() {
                return eqs.fold(first, |acc, e| acc.or(e));
            }
        }
    }
    a.is_in(lit(values).implode(false), false)
}

/// `df` in one chunk, its `key` flagged as sorted when its values are in ascending order with no
/// nulls. Polars trusts the flag (a sort by the key becomes free, a group-by uses slices), and
/// has no check of its own in the features this build compiles, hence the loop.
pub(super) fn mark_if_sorted(mut df: DataFrame, key: &str) -> Result<DataFrame, FeatureError> {
    // One column per thread: a chunk read from Parquet arrives in pieces (row groups, pages).
    df.rechunk_mut_par();
    let column = df
        .column(key)
        .map_err(|e| FeatureError::Data(e.to_string()))?;
    let sorted = match column.str() {
        Ok(ca) if ca.null_count() == 0 => {
            let mut values = ca.iter().flatten();
            let mut prev = values.next();
            values.all(|v| {
                let in_order = prev.is_none_or(|p| p <= v);
                prev = Some(v);
                in_order
            })
        }
        _ => false,
    };
    if sorted {
        let mut column = column.clone();
        column.set_sorted_flag(polars::series::IsSorted::Ascending);
        df.replace(key, column)
            .map_err(|e| FeatureError::Data(e.to_string()))?;
    }
    Ok(df)
}

/// The rows of `values` in the order of `order` (its `key` and a `__order` row number), keyed
/// by `key`; rows of `values` not in `order` are dropped. Online lookups and the chunked
/// population run both put their results back in the caller's order with it.
pub(super) fn in_order(
    order: LazyFrame,
    values: LazyFrame,
    key: &str,
) -> Result<DataFrame, FeatureError> {
    order
        .join(
            values,
            [col(key)],
            [col(key)],
            JoinArgs::new(JoinType::Inner),
        )
        .sort(["__order"], Default::default())
        .select([all().exclude_cols(["__order"]).as_expr()])
        .collect()
        .map_err(|e| FeatureError::Data(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_spec() -> PipelineSpec {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/default/pipeline.toml");
        PipelineSpec::load(&path).unwrap()
    }

    #[test]
    fn aggregates_sharing_a_filter_share_its_row_columns() {
        let spec = demo_spec();
        let t = spec.table("transactions").unwrap();
        let schema = Schema::from_iter([
            Field::new("user_id".into(), DataType::String),
            Field::new("kind".into(), DataType::String),
            Field::new("days_past_due".into(), DataType::Float64),
            Field::new(AGE.into(), DataType::Float64),
            Field::new(KNOWN.into(), DataType::Boolean),
        ]);
        let mut rows = RowColumns::default();
        let mut add = |name: &str| {
            let input =
                aggregate_input(spec.feature(name).unwrap(), t, &schema, &mut rows).unwrap();
            input.masked_column(&mut rows);
            rows.layers.iter().map(Vec::len).collect::<Vec<_>>()
        };
        // Conditions: every row, kind in [loan_repayment, utility_bill], the 365-day window.
        assert_eq!(add("dpd_max_365d"), [3, 1, 1]);
        // Same filter, window and column: nothing new.
        assert_eq!(add("dpd_mean_365d"), [3, 1, 1]);
        // A count reads its mask, not a value column.
        assert_eq!(add("bill_count_365d"), [3, 1, 1]);
        // Another window: one condition, one mask, one value more.
        assert_eq!(add("dpd_max_90d"), [4, 2, 2]);
        // The same filter plus days_past_due >= 1: one condition and one mask more.
        assert_eq!(add("late1_count_365d"), [5, 3, 2]);
    }
}
