//! The pipeline file: features as data, versioned with the model.
//!
//! A pipeline file is TOML. It names the raw tables, a few derived row columns (as-of aware),
//! and the features. Parsing is two-step: serde reads the raw shape (strings for every
//! enumerated word, so that an error can name the feature), then [`PipelineSpec::validate`]
//! turns it into typed definitions and refuses anything inconsistent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{Dimension, FeatureMeta};

use super::FeatureError;

/// The file as written by a person.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineFile {
    pub pipeline: PipelineHeader,
    #[serde(default)]
    pub tables: BTreeMap<String, TableSpec>,
    #[serde(default, rename = "feature")]
    pub features: Vec<FeatureSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineHeader {
    pub name: String,
    pub version: String,
    /// `events` (raw tables aggregated per user) or `flat` (one row per applicant, passed through).
    #[serde(default = "default_mode")]
    pub mode: String,
    /// The entity key column (one row per value in the base table).
    #[serde(default = "default_key")]
    pub key: String,
    /// The table with one row per user (events mode) or per applicant (flat mode).
    #[serde(default = "default_base")]
    pub base_table: String,
    /// Dimension given to flat columns the file does not describe.
    #[serde(default)]
    pub default_dimension: Option<String>,
}

fn default_mode() -> String {
    "events".into()
}
fn default_key() -> String {
    "user_id".into()
}
fn default_base() -> String {
    "users".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// File name inside the data directory; defaults to `<table>.parquet`.
    #[serde(default)]
    pub file: Option<String>,
    /// Event time column (Datetime or Date). Rows at or after as-of are dropped before anything else.
    #[serde(default)]
    pub time: Option<String>,
    /// For an undirected edge table: the two endpoint columns. Each edge is seen from both ends.
    #[serde(default)]
    pub edges: Option<EdgeColumns>,
    #[serde(default)]
    pub derive: Vec<DeriveSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeColumns {
    pub from: String,
    pub to: String,
}

/// A row-level column computed before aggregation. Only as-of aware helpers live here; everything
/// else is expressed with filters and aggregations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeriveSpec {
    pub name: String,
    /// `days_past_due` (from `due` and `paid` date columns) or `hour_of_day` (from `column`).
    pub kind: String,
    #[serde(default)]
    pub due: Option<String>,
    #[serde(default)]
    pub paid: Option<String>,
    #[serde(default)]
    pub column: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureSpec {
    pub name: String,
    pub dimension: String,
    pub description: String,
    /// `int`, `float` or `category`.
    #[serde(rename = "type")]
    pub ftype: String,
    /// `attribute`, `aggregate`, `ratio`, `neighbors`, `two_hop`, `shared` or (flat mode) `column`.
    pub kind: String,
    #[serde(default)]
    pub table: Option<String>,
    #[serde(default)]
    pub column: Option<String>,
    #[serde(default)]
    pub agg: Option<String>,
    #[serde(default)]
    pub filter: Vec<ConditionSpec>,
    #[serde(default)]
    pub window_days: Option<i64>,
    /// For attributes over a date column: `days_since` or `months_since`.
    #[serde(default)]
    pub transform: Option<String>,
    #[serde(default)]
    pub numerator: Option<String>,
    #[serde(default)]
    pub denominator: Option<String>,
    /// Edge kinds followed by `neighbors` / `two_hop` features (empty = all).
    #[serde(default)]
    pub edge_kinds: Vec<String>,
    /// The neighbour's feature or column aggregated by `neighbors` (mean / max / sum).
    #[serde(default)]
    pub of: Option<String>,
    /// Training hints for this feature's binning (see [`BinningHint`]). Absent from the
    /// canonical form when not given, so pipelines without hints keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binning: Option<BinningHint>,
}

/// How the trainer bins one feature, where it should differ from its defaults. Only training
/// reads it: the feature's values are the same with or without hints.
///
/// `min_bin_share` lowers (or raises) the minimum share of training rows per bin for this
/// feature alone — for a rare, decisive flag (say, accounts tied to a device-sharing ring: well
/// under 1% of users, most of them bad) that the default 5% floor would merge into the
/// population. The minimum bads and goods per bin still apply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinningHint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bin_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConditionSpec {
    pub column: String,
    /// eq, ne, in, not_in, gt, ge, lt, le, is_null, not_null
    pub op: String,
    #[serde(default)]
    pub value: Option<toml::Value>,
}

// ---------- typed, validated form ----------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Events,
    Flat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureType {
    Int,
    Float,
    Category,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Count,
    Sum,
    Mean,
    Max,
    Min,
    Std,
    NUnique,
    DaysSinceLast,
    DaysSinceFirst,
}

impl Agg {
    const NAMES: &'static [(&'static str, Agg)] = &[
        ("count", Agg::Count),
        ("sum", Agg::Sum),
        ("mean", Agg::Mean),
        ("max", Agg::Max),
        ("min", Agg::Min),
        ("std", Agg::Std),
        ("n_unique", Agg::NUnique),
        ("days_since_last", Agg::DaysSinceLast),
        ("days_since_first", Agg::DaysSinceFirst),
    ];
    fn parse(s: &str) -> Option<Agg> {
        Self::NAMES.iter().find(|(n, _)| *n == s).map(|(_, a)| *a)
    }
    fn needs_column(self) -> bool {
        !matches!(self, Agg::Count | Agg::DaysSinceLast | Agg::DaysSinceFirst)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighborAgg {
    /// Number of neighbours (matching the filter).
    Count,
    /// Matching neighbours / all neighbours over the followed edge kinds.
    Share,
    Mean,
    Max,
    Sum,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Eq(Literal),
    Ne(Literal),
    In(Vec<Literal>),
    NotIn(Vec<Literal>),
    Gt(f64),
    Ge(f64),
    Lt(f64),
    Le(f64),
    IsNull,
    NotNull,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub column: String,
    pub op: Op,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Derive {
    DaysPastDue {
        name: String,
        due: String,
        paid: String,
    },
    HourOfDay {
        name: String,
        column: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttrTransform {
    DaysSince,
    MonthsSince,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    /// A column of the base table, optionally turned into an age at as-of.
    Attribute {
        column: String,
        transform: Option<AttrTransform>,
    },
    /// One aggregation over a table's rows before as-of, within an optional window.
    Aggregate {
        table: String,
        column: Option<String>,
        agg: Agg,
        filter: Vec<Condition>,
        window_days: Option<i64>,
    },
    /// numerator / denominator (two features); null when the denominator is 0 or missing.
    Ratio {
        numerator: String,
        denominator: String,
    },
    /// Aggregate over direct neighbours in an edge table of a stage-1 feature or base column.
    Neighbors {
        table: String,
        edge_kinds: Vec<String>,
        agg: NeighborAgg,
        of: Option<String>,
        filter: Vec<Condition>,
    },
    /// Distinct users two hops away (not the user) matching the filter.
    TwoHop {
        table: String,
        edge_kinds: Vec<String>,
        filter: Vec<Condition>,
    },
    /// Distinct other users who share a value of `column` (e.g. a device) with the user.
    Shared {
        table: String,
        column: String,
        window_days: Option<i64>,
    },
    /// Flat mode: a column passed through.
    Column { column: String },
}

impl Definition {
    /// Stage 1 features are computed from the user's own rows; stage 2 from neighbours' stage 1
    /// values; ratios last (they may combine anything).
    pub fn stage(&self) -> u8 {
        match self {
            Definition::Attribute { .. }
            | Definition::Aggregate { .. }
            | Definition::Shared { .. }
            | Definition::Column { .. } => 1,
            Definition::Neighbors { .. } | Definition::TwoHop { .. } => 2,
            Definition::Ratio { .. } => 3,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub meta: FeatureMeta,
    pub ftype: FeatureType,
    pub def: Definition,
    /// Training hints (all `None` when the file gives none).
    pub binning: BinningHint,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    pub name: String,
    pub file: String,
    pub time: Option<String>,
    pub edges: Option<(String, String)>,
    pub derive: Vec<Derive>,
}

/// A validated pipeline. Build it with [`PipelineSpec::from_toml`] or [`PipelineSpec::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    pub name: String,
    pub version: String,
    pub mode: Mode,
    pub key: String,
    pub base_table: String,
    pub base_file: String,
    pub default_dimension: Dimension,
    pub tables: Vec<Table>,
    pub features: Vec<Feature>,
    hash: String,
}

fn err(feature: &str, msg: impl Into<String>) -> FeatureError {
    FeatureError::Spec {
        feature: feature.to_string(),
        message: msg.into(),
    }
}

impl PipelineSpec {
    pub fn load(path: &Path) -> Result<PipelineSpec, FeatureError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            FeatureError::Io(format!("cannot read pipeline file {}: {e}", path.display()))
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            FeatureError::Parse(m) => FeatureError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    pub fn from_toml(text: &str) -> Result<PipelineSpec, FeatureError> {
        let file: PipelineFile =
            toml::from_str(text).map_err(|e| FeatureError::Parse(e.to_string()))?;
        Self::validate(file)
    }

    /// Content hash of the pipeline: sha256 over its canonical (parsed, re-serialised) form, so
    /// comments and formatting do not change it but any definition does.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    pub fn feature_metas(&self) -> Vec<FeatureMeta> {
        self.features.iter().map(|f| f.meta.clone()).collect()
    }

    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.meta.name == name)
    }

    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    fn validate(file: PipelineFile) -> Result<PipelineSpec, FeatureError> {
        let canonical =
            serde_json::to_string(&file).map_err(|e| FeatureError::Parse(e.to_string()))?;
        let hash = hex::encode(Sha256::digest(canonical.as_bytes()));
        let h = &file.pipeline;
        let mode = match h.mode.as_str() {
            "events" => Mode::Events,
            "flat" => Mode::Flat,
            other => {
                return Err(err(
                    "(pipeline)",
                    format!("unknown mode '{other}' (expected events or flat)"),
                ))
            }
        };
        let default_dimension = match &h.default_dimension {
            Some(d) => d.parse::<Dimension>().map_err(|e| err("(pipeline)", e))?,
            None => Dimension::Transaction,
        };

        let mut tables = Vec::new();
        let mut base_file = format!("{}.parquet", h.base_table);
        for (name, t) in &file.tables {
            let file_name = t.file.clone().unwrap_or_else(|| format!("{name}.parquet"));
            if *name == h.base_table {
                base_file = file_name;
                continue;
            }
            let mut derive = Vec::new();
            for d in &t.derive {
                let need = |v: &Option<String>, what: &str| {
                    v.clone().ok_or_else(|| {
                        err(
                            &d.name,
                            format!("derived column of table '{name}' needs '{what}'"),
                        )
                    })
                };
                derive.push(match d.kind.as_str() {
                    "days_past_due" => {
                        Derive::DaysPastDue { name: d.name.clone(), due: need(&d.due, "due")?, paid: need(&d.paid, "paid")? }
                    }
                    "hour_of_day" => Derive::HourOfDay { name: d.name.clone(), column: need(&d.column, "column")? },
                    other => {
                        return Err(err(
                            &d.name,
                            format!("unknown derived column kind '{other}' (expected days_past_due or hour_of_day)"),
                        ))
                    }
                });
            }
            tables.push(Table {
                name: name.clone(),
                file: file_name,
                time: t.time.clone(),
                edges: t.edges.as_ref().map(|e| (e.from.clone(), e.to.clone())),
                derive,
            });
        }

        let mut seen = HashSet::new();
        let mut features: Vec<Feature> = Vec::new();
        for f in &file.features {
            let name = f.name.as_str();
            if name.is_empty() {
                return Err(err("(unnamed)", "a feature has an empty name"));
            }
            if !seen.insert(name.to_string()) {
                return Err(err(name, "duplicate feature name"));
            }
            if name == h.key {
                return Err(err(
                    name,
                    format!("a feature cannot be named like the key column '{}'", h.key),
                ));
            }
            let dimension = f.dimension.parse::<Dimension>().map_err(|e| err(name, e))?;
            let ftype = match f.ftype.as_str() {
                "int" => FeatureType::Int,
                "float" => FeatureType::Float,
                "category" => FeatureType::Category,
                other => {
                    return Err(err(
                        name,
                        format!("unknown type '{other}' (expected int, float or category)"),
                    ))
                }
            };
            if let Some(w) = f.window_days {
                if w <= 0 {
                    return Err(err(name, format!("window_days must be > 0, got {w}")));
                }
            }
            let filter = f
                .filter
                .iter()
                .map(|c| parse_condition(name, c))
                .collect::<Result<Vec<_>, _>>()?;
            let table_of = |want_edges: bool| -> Result<String, FeatureError> {
                let t = f.table.clone().ok_or_else(|| err(name, "needs 'table'"))?;
                let Some(spec) = tables.iter().find(|x| x.name == t) else {
                    return Err(err(
                        name,
                        format!("unknown table '{t}' (declare it under [tables.{t}])"),
                    ));
                };
                if want_edges && spec.edges.is_none() {
                    return Err(err(
                        name,
                        format!(
                            "table '{t}' is not an edge table (give it edges = {{ from, to }})"
                        ),
                    ));
                }
                Ok(t)
            };
            let def = match f.kind.as_str() {
                "attribute" => {
                    let column = f.column.clone().ok_or_else(|| err(name, "attribute needs 'column'"))?;
                    let transform = match f.transform.as_deref() {
                        None => None,
                        Some("days_since") => Some(AttrTransform::DaysSince),
                        Some("months_since") => Some(AttrTransform::MonthsSince),
                        Some(o) => {
                            return Err(err(name, format!("unknown transform '{o}' (expected days_since or months_since)")))
                        }
                    };
                    Definition::Attribute { column, transform }
                }
                "aggregate" => {
                    let table = table_of(false)?;
                    let agg_name = f.agg.as_deref().ok_or_else(|| err(name, "aggregate needs 'agg'"))?;
                    let agg = Agg::parse(agg_name).ok_or_else(|| {
                        let names: Vec<_> = Agg::NAMES.iter().map(|(n, _)| *n).collect();
                        err(name, format!("unknown aggregation '{agg_name}' (expected one of {})", names.join(", ")))
                    })?;
                    if agg.needs_column() && f.column.is_none() {
                        return Err(err(name, format!("aggregation '{agg_name}' needs 'column'")));
                    }
                    Definition::Aggregate { table, column: f.column.clone(), agg, filter, window_days: f.window_days }
                }
                "ratio" => Definition::Ratio {
                    numerator: f.numerator.clone().ok_or_else(|| err(name, "ratio needs 'numerator'"))?,
                    denominator: f.denominator.clone().ok_or_else(|| err(name, "ratio needs 'denominator'"))?,
                },
                "neighbors" => {
                    let table = table_of(true)?;
                    let agg_name = f.agg.as_deref().unwrap_or("count");
                    let agg = match agg_name {
                        "count" => NeighborAgg::Count,
                        "share" => NeighborAgg::Share,
                        "mean" => NeighborAgg::Mean,
                        "max" => NeighborAgg::Max,
                        "sum" => NeighborAgg::Sum,
                        o => {
                            return Err(err(
                                name,
                                format!("unknown aggregation '{o}' for neighbors (expected count, share, mean, max or sum)"),
                            ))
                        }
                    };
                    if matches!(agg, NeighborAgg::Mean | NeighborAgg::Max | NeighborAgg::Sum) && f.of.is_none() {
                        return Err(err(name, format!("neighbors aggregation '{agg_name}' needs 'of'")));
                    }
                    if agg == NeighborAgg::Share && filter.is_empty() {
                        return Err(err(name, "neighbors aggregation 'share' needs a filter"));
                    }
                    Definition::Neighbors { table, edge_kinds: f.edge_kinds.clone(), agg, of: f.of.clone(), filter }
                }
                "two_hop" => Definition::TwoHop { table: table_of(true)?, edge_kinds: f.edge_kinds.clone(), filter },
                "shared" => Definition::Shared {
                    table: table_of(false)?,
                    column: f.column.clone().ok_or_else(|| err(name, "shared needs 'column'"))?,
                    window_days: f.window_days,
                },
                "column" => Definition::Column { column: f.column.clone().unwrap_or_else(|| name.to_string()) },
                other => {
                    return Err(err(
                        name,
                        format!(
                            "unknown kind '{other}' (expected attribute, aggregate, ratio, neighbors, two_hop, shared or column)"
                        ),
                    ))
                }
            };
            let binning = f.binning.clone().unwrap_or_default();
            if let Some(s) = binning.min_bin_share {
                if !(s > 0.0 && s <= 0.5) {
                    return Err(err(
                        name,
                        format!("binning.min_bin_share must be in (0, 0.5], got {s}"),
                    ));
                }
            }
            let flat_kind = matches!(def, Definition::Column { .. });
            if (mode == Mode::Flat) != flat_kind {
                return Err(err(
                    name,
                    format!(
                        "kind '{}' does not fit a pipeline in {} mode",
                        f.kind, h.mode
                    ),
                ));
            }
            features.push(Feature {
                meta: FeatureMeta {
                    name: name.to_string(),
                    dimension,
                    description: f.description.clone(),
                },
                ftype,
                def,
                binning,
            });
        }

        // Cross-feature references: ratios see every feature; neighbour filters and `of` see
        // stage 1 features of the neighbour (or base columns, checked against data at run time).
        let stage: HashMap<&str, u8> = features
            .iter()
            .map(|f| (f.meta.name.as_str(), f.def.stage()))
            .collect();
        for f in &features {
            let name = &f.meta.name;
            match &f.def {
                Definition::Ratio {
                    numerator,
                    denominator,
                } => {
                    for r in [numerator, denominator] {
                        match stage.get(r.as_str()) {
                            None => {
                                return Err(err(
                                    name,
                                    format!("ratio refers to unknown feature '{r}'"),
                                ))
                            }
                            Some(3) => {
                                return Err(err(
                                    name,
                                    format!("ratio refers to another ratio '{r}'"),
                                ))
                            }
                            _ => {}
                        }
                    }
                }
                Definition::Neighbors { of, filter, .. } => check_neighbor_refs(
                    &features,
                    name,
                    of.iter().chain(filter.iter().map(|c| &c.column)),
                )?,
                Definition::TwoHop { filter, .. } => {
                    check_neighbor_refs(&features, name, filter.iter().map(|c| &c.column))?
                }
                _ => {}
            }
        }
        if mode == Mode::Events && features.is_empty() {
            return Err(err(
                "(pipeline)",
                "an events pipeline needs at least one [[feature]]",
            ));
        }

        Ok(PipelineSpec {
            name: h.name.clone(),
            version: h.version.clone(),
            mode,
            key: h.key.clone(),
            base_table: h.base_table.clone(),
            base_file,
            default_dimension,
            tables,
            features,
            hash,
        })
    }
}

/// Neighbours are read from the stage-1 table: only own-rows features (attributes, aggregates) or
/// base columns, so that the online path can compute them from the neighbours' own rows.
fn check_neighbor_refs<'a>(
    features: &[Feature],
    name: &str,
    refs: impl Iterator<Item = &'a String>,
) -> Result<(), FeatureError> {
    for r in refs {
        if let Some(f) = features.iter().find(|x| &x.meta.name == r) {
            if !matches!(
                f.def,
                Definition::Attribute { .. } | Definition::Aggregate { .. }
            ) {
                return Err(err(
                    name,
                    format!("'{r}' is not an own-rows feature (attribute or aggregate) and cannot be read from neighbours"),
                ));
            }
        }
    }
    Ok(())
}

fn literal(feature: &str, v: &toml::Value) -> Result<Literal, FeatureError> {
    match v {
        toml::Value::String(s) => Ok(Literal::Str(s.clone())),
        toml::Value::Integer(i) => Ok(Literal::Num(*i as f64)),
        toml::Value::Float(x) => Ok(Literal::Num(*x)),
        toml::Value::Boolean(b) => Ok(Literal::Bool(*b)),
        other => Err(err(
            feature,
            format!("filter value {other} is not a string, number or boolean"),
        )),
    }
}

fn parse_condition(feature: &str, c: &ConditionSpec) -> Result<Condition, FeatureError> {
    let value = || {
        c.value.as_ref().ok_or_else(|| {
            err(
                feature,
                format!("filter on '{}' with op '{}' needs 'value'", c.column, c.op),
            )
        })
    };
    let number = || -> Result<f64, FeatureError> {
        match value()? {
            toml::Value::Integer(i) => Ok(*i as f64),
            toml::Value::Float(x) if x.is_finite() => Ok(*x),
            other => Err(err(
                feature,
                format!(
                    "filter on '{}' with op '{}' needs a number, got {other}",
                    c.column, c.op
                ),
            )),
        }
    };
    let list = || -> Result<Vec<Literal>, FeatureError> {
        match value()? {
            toml::Value::Array(items) if !items.is_empty() => {
                items.iter().map(|v| literal(feature, v)).collect()
            }
            other => Err(err(
                feature,
                format!(
                    "filter on '{}' with op '{}' needs a non-empty list, got {other}",
                    c.column, c.op
                ),
            )),
        }
    };
    let op = match c.op.as_str() {
        "eq" => Op::Eq(literal(feature, value()?)?),
        "ne" => Op::Ne(literal(feature, value()?)?),
        "in" => Op::In(list()?),
        "not_in" => Op::NotIn(list()?),
        "gt" => Op::Gt(number()?),
        "ge" => Op::Ge(number()?),
        "lt" => Op::Lt(number()?),
        "le" => Op::Le(number()?),
        "is_null" => Op::IsNull,
        "not_null" => Op::NotNull,
        other => {
            return Err(err(
                feature,
                format!("unknown filter op '{other}' (expected eq, ne, in, not_in, gt, ge, lt, le, is_null, not_null)"),
            ))
        }
    };
    Ok(Condition {
        column: c.column.clone(),
        op,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[pipeline]
name = "t"
version = "1"

[tables.relations]
time = "since"
edges = { from = "src", to = "dst" }

[[feature]]
name = "shared_device_links"
dimension = "relationship"
description = "Accounts linked by a shared device"
type = "int"
kind = "aggregate"
table = "relations"
agg = "count"
filter = [{ column = "kind", op = "eq", value = "shared_device" }]
"#;

    #[test]
    fn binning_hint_is_parsed_validated_and_kept_out_of_hint_free_hashes() {
        let plain = PipelineSpec::from_toml(BASE).unwrap();
        assert_eq!(plain.features[0].binning, BinningHint::default());

        let hinted_text = format!("{BASE}binning = {{ min_bin_share = 0.004 }}\n");
        let hinted = PipelineSpec::from_toml(&hinted_text).unwrap();
        assert_eq!(hinted.features[0].binning.min_bin_share, Some(0.004));
        // The hint is part of the pipeline (a model trained with it records another hash) ...
        assert_ne!(hinted.hash(), plain.hash());
        // ... and the same definition: the feature computes the same way.
        assert_eq!(hinted.features[0].def, plain.features[0].def);

        // A file without hints hashes as before hints existed: the canonical JSON has no
        // `binning` key (the shipped models record their pipeline's hash).
        let file: PipelineFile = toml::from_str(BASE).unwrap();
        assert!(!serde_json::to_string(&file).unwrap().contains("binning"));

        for bad in ["0.0", "-0.1", "0.6", "nan"] {
            let text = format!("{BASE}binning = {{ min_bin_share = {bad} }}\n");
            let e = PipelineSpec::from_toml(&text).unwrap_err().to_string();
            assert!(
                e.contains("shared_device_links") && e.contains("min_bin_share"),
                "{bad}: {e}"
            );
        }
        let text = format!("{BASE}binning = {{ max_share = 0.1 }}\n");
        assert!(
            PipelineSpec::from_toml(&text).is_err(),
            "unknown hint refused"
        );
    }
}
