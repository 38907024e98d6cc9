//! `sesame export-sql`: the scorecard as one SQL query over a feature table (columns as
//! `sesame features` writes them), for scoring inside a warehouse.
//!
//! The query mirrors [`Scorecard::score_row`] term for term:
//! - bins as `bin_index` assigns them: a missing or non-finite number → the missing bin; numeric
//!   bin k holds `splits[k-1] <= x < splits[k]` (the count of splits `<= x`); a category → its
//!   bin; an unseen category → the unseen bin (or the missing bin if the feature has none);
//! - the total is the sum of the bin points in feature order, rounded half away from zero and
//!   clamped to 350–950 (`clamp_score`); the band by `Band::of`;
//! - PD = 1 / (1 + e^(−z)) with z = intercept + Σ coefficient·WoE, summed in the same order;
//! - every number is printed as its shortest round-trip decimal, as an approximate (double)
//!   literal, so the engine sees the artifact's exact f64 values.
//!
//! Not exported: dimension sub-scores, reason codes and rule decisions (use `sesame batch`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::domain::Band;
use crate::model::binning::BinRule;
use crate::model::scorecard::ScorecardFeature;
use crate::model::Scorecard;
use crate::scoring::bundle::ModelBundle;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// ISO SQL (also Trino/Presto).
    Ansi,
    Spark,
    Postgres,
    Duckdb,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ExportSqlArgs {
    /// Model directory (`pipeline.toml` + `scorecard.json`).
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long, value_enum, default_value = "ansi")]
    pub dialect: Dialect,
    /// The feature table (used verbatim, so `schema.table` works).
    #[arg(long, default_value = "features")]
    pub table: String,
    /// Write the query here (atomically) instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn export_sql_cli(args: ExportSqlArgs) -> anyhow::Result<()> {
    let sql = export_model_sql(&args.model, args.dialect, &args.table)?;
    match &args.out {
        None => print!("{sql}"),
        Some(path) => {
            let tmp = crate::io::temp_beside(path);
            std::fs::write(&tmp, &sql)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot rename into {}", path.display()))?;
        }
    }
    Ok(())
}

/// Loads a model directory and exports its scorecard, keyed by the pipeline's key column.
pub fn export_model_sql(model: &Path, dialect: Dialect, table: &str) -> anyhow::Result<String> {
    if !model.is_dir() {
        bail!("model directory {} does not exist", model.display());
    }
    let bundle = ModelBundle::load(model).map_err(anyhow::Error::msg)?;
    scorecard_sql(&bundle.scorecard, &bundle.pipeline.spec.key, dialect, table)
}

struct Sql {
    dialect: Dialect,
}

impl Sql {
    fn ident(&self, name: &str) -> String {
        match self.dialect {
            Dialect::Spark => format!("`{}`", name.replace('`', "``")),
            _ => format!("\"{}\"", name.replace('"', "\"\"")),
        }
    }
    /// An f64 literal that round-trips exactly and is typed double (not decimal/numeric).
    fn num(&self, x: f64) -> anyhow::Result<String> {
        if !x.is_finite() {
            bail!("non-finite number {x} in the scorecard");
        }
        // `{:e}` prints the shortest digits that round-trip, in exponent form: an approximate
        // (double) literal in ISO SQL, Spark, DuckDB and Trino. PostgreSQL reads it as numeric,
        // so there it is a string cast to float8 (strtod: correctly rounded).
        Ok(match self.dialect {
            Dialect::Postgres => format!("CAST('{x:e}' AS DOUBLE PRECISION)"),
            _ => format!("{x:e}"),
        })
    }
    fn string_type(&self) -> &'static str {
        match self.dialect {
            Dialect::Spark => "STRING",
            _ => "VARCHAR",
        }
    }
    fn str_lit(&self, s: &str) -> String {
        match self.dialect {
            // Spark string literals treat backslash as an escape.
            Dialect::Spark => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
            _ => format!("'{}'", s.replace('\'', "''")),
        }
    }
}

/// Points and z-term (coefficient × WoE) of bin `b`, exactly as `score_row` takes them.
fn bin_terms(f: &ScorecardFeature, b: usize) -> (f64, f64) {
    let b = b.min(f.points.len().saturating_sub(1));
    match (f.binning.bins.get(b), f.points.get(b)) {
        (Some(bin), Some(&p)) => (p, f.coefficient * bin.woe),
        _ => (0.0, 0.0),
    }
}

/// Two CASE expressions (points, z-term) for one feature.
fn feature_cases(q: &Sql, f: &ScorecardFeature) -> anyhow::Result<(String, String)> {
    let col = q.ident(&f.meta.name);
    // (condition, bin) in evaluation order; the last bin is the ELSE.
    let mut arms: Vec<(String, usize)> = Vec::new();
    let else_bin;
    match &f.binning.rule {
        BinRule::Numeric { splits } => {
            // NULL, NaN and ±inf are missing in `score_row`. NaN sorts above every number in
            // DuckDB, Spark and PostgreSQL and compares false in IEEE engines: either way it
            // fails `x <= MAX`.
            let max = q.num(f64::MAX)?;
            arms.push((
                format!("{col} IS NULL OR NOT ({col} >= -{max} AND {col} <= {max})"),
                f.binning.missing_bin,
            ));
            for (k, s) in splits.iter().enumerate() {
                arms.push((format!("{col} < {}", q.num(*s)?), k));
            }
            else_bin = splits.len();
        }
        BinRule::Categorical { categories } => {
            let cat = format!("CAST({col} AS {})", q.string_type());
            arms.push((format!("{col} IS NULL"), f.binning.missing_bin));
            let mut bins: Vec<usize> = categories.iter().map(|c| c.bin).collect();
            bins.sort_unstable();
            bins.dedup();
            for b in bins {
                let values: Vec<String> = categories
                    .iter()
                    .filter(|c| c.bin == b)
                    .map(|c| q.str_lit(&c.value))
                    .collect();
                arms.push((format!("{cat} IN ({})", values.join(", ")), b));
            }
            else_bin = f.binning.unseen_bin.unwrap_or(f.binning.missing_bin);
        }
    }
    let mut points = String::from("CASE");
    let mut zterm = String::from("CASE");
    for (cond, b) in &arms {
        let (p, z) = bin_terms(f, *b);
        points += &format!(" WHEN {cond} THEN {}", q.num(p)?);
        zterm += &format!(" WHEN {cond} THEN {}", q.num(z)?);
    }
    let (p, z) = bin_terms(f, else_bin);
    points += &format!(" ELSE {} END", q.num(p)?);
    zterm += &format!(" ELSE {} END", q.num(z)?);
    Ok((points, zterm))
}

/// The scoring query: `key, score, band, pd` for every row of `table`.
pub fn scorecard_sql(
    sc: &Scorecard,
    key: &str,
    dialect: Dialect,
    table: &str,
) -> anyhow::Result<String> {
    let q = Sql { dialect };
    let n = sc.features.len();
    if n == 0 {
        bail!("the scorecard has no features");
    }
    let mut out = String::new();
    out += &format!(
        "-- Sesame scorecard {} ({} features), dialect {:?}: generated by `sesame export-sql`.\n",
        sc.model_version, n, dialect
    );
    out += "-- score = clamp(round_half_away_from_zero(sum of bin points), 350, 950); pd = 1/(1+exp(-z)).\n";
    out += "WITH terms AS (\n  SELECT\n";
    out += &format!("    {} AS k", q.ident(key));
    for (j, f) in sc.features.iter().enumerate() {
        let (p, z) = feature_cases(&q, f)?;
        out += &format!(
            ",\n    -- {}\n    {p} AS p{j},\n    {z} AS z{j}",
            f.meta.name
        );
    }
    out += &format!("\n  FROM {table}\n),\n");
    // Left-to-right sums, as `score_row` accumulates them (0 + p0 = p0 exactly).
    let mut raw = "p0".to_string();
    let mut z = format!("({} + z0)", q.num(sc.intercept)?);
    for j in 1..n {
        raw = format!("({raw} + p{j})");
        z = format!("({z} + z{j})");
    }
    out += &format!("sums AS (\n  SELECT k, {raw} AS raw_points, {z} AS z\n  FROM terms\n),\n");
    let half = q.num(0.5)?;
    out += &format!(
        "rounded AS (\n  SELECT k, z,\n    CASE WHEN raw_points >= 0 THEN FLOOR(raw_points + {half}) ELSE CEIL(raw_points - {half}) END AS r\n  FROM sums\n),\n"
    );
    out += &format!(
        "scored AS (\n  SELECT k, z,\n    CAST(CASE WHEN r < {lo} THEN {lo} WHEN r > {hi} THEN {hi} ELSE r END AS INTEGER) AS score\n  FROM rounded\n)\n",
        lo = crate::domain::SCORE_MIN,
        hi = crate::domain::SCORE_MAX
    );
    let mut band = String::from("CASE");
    let last = Band::ALL.len() - 1;
    for (i, b) in Band::ALL.iter().enumerate() {
        if i == last {
            band += &format!(" ELSE {} END", q.str_lit(b.as_str()));
        } else {
            band += &format!(
                " WHEN score <= {} THEN {}",
                b.range().1,
                q.str_lit(b.as_str())
            );
        }
    }
    let one = q.num(1.0)?;
    out += &format!(
        "SELECT k AS {key_out}, score, {band} AS band, {one} / ({one} + EXP(-z)) AS pd\nFROM scored\n",
        key_out = q.ident(key)
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_round_trip_and_are_typed_double() {
        let ansi = Sql {
            dialect: Dialect::Ansi,
        };
        let pg = Sql {
            dialect: Dialect::Postgres,
        };
        for x in [
            0.1,
            -39.10614902411258,
            9.80392156862745e-3,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
            650.0,
            -0.0,
        ] {
            let lit = ansi.num(x).unwrap();
            assert!(lit.contains('e'), "{lit} would be a DECIMAL literal");
            assert_eq!(lit.parse::<f64>().unwrap().to_bits(), x.to_bits(), "{lit}");
            assert_eq!(
                pg.num(x).unwrap(),
                format!("CAST('{lit}' AS DOUBLE PRECISION)")
            );
        }
        assert!(ansi.num(f64::NAN).is_err());
        assert!(ansi.num(f64::INFINITY).is_err());
    }

    #[test]
    fn quoting_per_dialect() {
        let spark = Sql {
            dialect: Dialect::Spark,
        };
        let duck = Sql {
            dialect: Dialect::Duckdb,
        };
        assert_eq!(spark.ident("a`b"), "`a``b`");
        assert_eq!(duck.ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(spark.str_lit("it's\\"), "'it\\'s\\\\'");
        assert_eq!(duck.str_lit("it's"), "'it''s'");
    }
}
