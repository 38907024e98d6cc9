//! Flat files → polars `DataFrame` → `domain::Dataset`. The only polars code the model uses.
//!
//! * CSV: header row; empty cells and `NA` are null; types inferred from all rows (so a late `1.00E+05` makes the column float rather than failing).
//!   Parquet: read as stored.
//! * Columns: numeric → `Numeric` (cast to f64), string / bool / anything else → `Categorical`
//!   (bool as "true"/"false", others via polars' string cast); nulls stay missing.
//! * The target must be present, without nulls; it is binary 0/1 (numeric or bool) unless
//!   `bad_value` is given, in which case a row is bad iff its value (as text) equals `bad_value`.
//!   Both classes must occur.
//! * The id column (if any) and `exclude`d columns are not features.
//! * **All-missing columns are dropped with a warning** (they cannot carry information); they
//!   are reported in `Dataset`-building logs, not as errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use polars::prelude::*;

use crate::domain::{ColumnValues, Dataset, Dimension, FeatureColumn, FeatureMeta};

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("cannot read {path}: {message}")]
    Read { path: PathBuf, message: String },
    #[error("unsupported file type for {0} (expected .csv or .parquet)")]
    Format(PathBuf),
    #[error("target column '{0}' is not in the table")]
    TargetAbsent(String),
    #[error("column '{0}' is not in the table")]
    ColumnAbsent(String),
    #[error("target column '{column}' has {count} missing values")]
    TargetMissing { column: String, count: usize },
    #[error("target column '{column}' has only one class (all rows are {class})")]
    OneClass { column: String, class: &'static str },
    #[error("target column '{column}' is not binary 0/1 (seen values: {examples}); give the value that means bad (e.g. --bad-value bad)")]
    NonBinary { column: String, examples: String },
    #[error("column '{column}': {message}")]
    Column { column: String, message: String },
}

#[derive(Debug, Clone, Default)]
pub struct FrameOptions {
    pub target: String,
    /// For non-binary targets: the value meaning bad (compared as text; numbers also numerically).
    pub bad_value: Option<String>,
    pub id_column: Option<String>,
    /// Further columns that are not features (e.g. the split key).
    pub exclude: Vec<String>,
    /// Optional (dimension, description) per column name.
    pub metadata: HashMap<String, (Dimension, String)>,
    /// Dimension of columns without metadata.
    pub default_dimension: Option<Dimension>,
}

/// Read a CSV or Parquet file (by extension; anything but `.parquet`/`.pq` is read as CSV).
pub fn read_table(path: &Path) -> Result<DataFrame, FrameError> {
    let rd = |e: PolarsError| FrameError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if !path.is_file() {
        return Err(FrameError::Read {
            path: path.to_path_buf(),
            message: "no such file".into(),
        });
    }
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "parquet" | "pq" => {
            let f = std::fs::File::open(path).map_err(|e| FrameError::Read {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            ParquetReader::new(f).finish().map_err(rd)
        }
        "csv" | "txt" | "" => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(None)
            .map_parse_options(|o| {
                o.with_null_values(Some(NullValues::AllColumnsSingle("NA".into())))
                    .with_missing_is_null(true)
            })
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .map_err(rd)?
            .finish()
            .map_err(rd),
        _ => Err(FrameError::Format(path.to_path_buf())),
    }
}

fn col_err(column: &str) -> impl Fn(PolarsError) -> FrameError + '_ {
    move |e| FrameError::Column {
        column: column.to_string(),
        message: e.to_string(),
    }
}

fn series<'a>(df: &'a DataFrame, name: &str) -> Option<&'a Series> {
    df.column(name).ok().map(|c| c.as_materialized_series())
}

/// An integer column (e.g. the split key); nulls are an error.
pub fn integer_column(df: &DataFrame, name: &str) -> Result<Vec<i64>, FrameError> {
    let s = series(df, name).ok_or_else(|| FrameError::ColumnAbsent(name.to_string()))?;
    let c = s.cast(&DataType::Int64).map_err(col_err(name))?;
    let ca = c.i64().map_err(col_err(name))?;
    ca.iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| FrameError::Column {
                column: name.into(),
                message: format!("row {i} is missing or not an integer"),
            })
        })
        .collect()
}

fn text_values(s: &Series, name: &str) -> Result<Vec<Option<String>>, FrameError> {
    if let DataType::Boolean = s.dtype() {
        let ca = s.bool().map_err(col_err(name))?;
        return Ok(ca.iter().map(|v| v.map(|b| b.to_string())).collect());
    }
    let c = s.cast(&DataType::String).map_err(col_err(name))?;
    let ca = c.str().map_err(col_err(name))?;
    Ok(ca.iter().map(|v| v.map(str::to_string)).collect())
}

fn target_values(df: &DataFrame, opts: &FrameOptions) -> Result<Vec<u8>, FrameError> {
    let name = opts.target.as_str();
    let s = series(df, name).ok_or_else(|| FrameError::TargetAbsent(name.to_string()))?;
    let nulls = s.null_count();
    if nulls > 0 {
        return Err(FrameError::TargetMissing {
            column: name.into(),
            count: nulls,
        });
    }
    let y: Vec<u8> = match &opts.bad_value {
        Some(bad) => {
            let bad_num = bad.trim().parse::<f64>().ok();
            if s.dtype().is_primitive_numeric() {
                let c = s.cast(&DataType::Float64).map_err(col_err(name))?;
                let ca = c.f64().map_err(col_err(name))?;
                ca.iter()
                    .map(|v| u8::from(v.is_some() && v == bad_num))
                    .collect()
            } else {
                text_values(s, name)?
                    .iter()
                    .map(|v| u8::from(v.as_deref() == Some(bad.as_str())))
                    .collect()
            }
        }
        None => {
            let vals: Vec<Option<f64>> = if let DataType::Boolean = s.dtype() {
                s.bool()
                    .map_err(col_err(name))?
                    .iter()
                    .map(|v| v.map(|b| if b { 1.0 } else { 0.0 }))
                    .collect()
            } else if s.dtype().is_primitive_numeric() {
                let c = s.cast(&DataType::Float64).map_err(col_err(name))?;
                c.f64().map_err(col_err(name))?.iter().collect()
            } else {
                let ex: Vec<String> = text_values(s, name)?
                    .into_iter()
                    .flatten()
                    .take(200)
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .take(5)
                    .collect();
                return Err(FrameError::NonBinary {
                    column: name.into(),
                    examples: ex.join(", "),
                });
            };
            let mut out = Vec::with_capacity(vals.len());
            for v in vals {
                match v {
                    Some(x) if x == 0.0 => out.push(0),
                    Some(x) if x == 1.0 => out.push(1),
                    other => {
                        return Err(FrameError::NonBinary {
                            column: name.into(),
                            examples: format!(
                                "{}",
                                other
                                    .map(|x| x.to_string())
                                    .unwrap_or_else(|| "null".into())
                            ),
                        })
                    }
                }
            }
            out
        }
    };
    let bads = y.iter().filter(|&&v| v == 1).count();
    if bads == 0 {
        return Err(FrameError::OneClass {
            column: name.into(),
            class: "good",
        });
    }
    if bads == y.len() {
        return Err(FrameError::OneClass {
            column: name.into(),
            class: "bad",
        });
    }
    Ok(y)
}

/// Convert a table into a `Dataset` (see the module docs for the rules).
pub fn frame_to_dataset(df: &DataFrame, opts: &FrameOptions) -> Result<Dataset, FrameError> {
    let target = target_values(df, opts)?;
    let n = df.height();
    let ids: Vec<String> = match &opts.id_column {
        Some(id) => {
            let s = series(df, id).ok_or_else(|| FrameError::ColumnAbsent(id.clone()))?;
            text_values(s, id)?
                .into_iter()
                .enumerate()
                .map(|(i, v)| v.unwrap_or_else(|| i.to_string()))
                .collect()
        }
        None => (0..n).map(|i| i.to_string()).collect(),
    };
    let mut columns = Vec::new();
    for c in df.columns() {
        let name = c.name().as_str();
        if name == opts.target
            || opts.id_column.as_deref() == Some(name)
            || opts.exclude.iter().any(|e| e == name)
        {
            continue;
        }
        let s = c.as_materialized_series();
        if s.null_count() == n {
            tracing::warn!(
                column = name,
                "dropping a column whose values are all missing"
            );
            continue;
        }
        let values = if s.dtype().is_primitive_numeric() {
            let f = s.cast(&DataType::Float64).map_err(col_err(name))?;
            ColumnValues::Numeric(f.f64().map_err(col_err(name))?.iter().collect())
        } else {
            ColumnValues::Categorical(text_values(s, name)?)
        };
        let (dimension, description) = match opts.metadata.get(name) {
            Some((d, desc)) => (*d, desc.clone()),
            None => (
                opts.default_dimension.unwrap_or(Dimension::Transaction),
                name.to_string(),
            ),
        };
        columns.push(FeatureColumn {
            meta: FeatureMeta {
                name: name.to_string(),
                dimension,
                description,
            },
            values,
        });
    }
    Ok(Dataset {
        ids,
        columns,
        target: Some(target),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn csv_to_dataset_types_and_missing() {
        let d = tempfile::tempdir().unwrap();
        let p = write(
            d.path(),
            "t.csv",
            "id,x,c,allna,y\n1,1.5,a,,0\n2,NA,b,NA,1\n3,,NA,,0\n",
        );
        let df = read_table(&p).unwrap();
        let opts = FrameOptions {
            target: "y".into(),
            id_column: Some("id".into()),
            ..Default::default()
        };
        let ds = frame_to_dataset(&df, &opts).unwrap();
        assert_eq!(ds.ids, vec!["1", "2", "3"]);
        assert_eq!(ds.target, Some(vec![0, 1, 0]));
        let names: Vec<&str> = ds.columns.iter().map(|c| c.meta.name.as_str()).collect();
        assert_eq!(names, vec!["x", "c"]); // id, target and the all-missing column are gone
        assert_eq!(
            ds.columns[0].values,
            ColumnValues::Numeric(vec![Some(1.5), None, None])
        );
        assert_eq!(
            ds.columns[1].values,
            ColumnValues::Categorical(vec![Some("a".into()), Some("b".into()), None])
        );
    }

    #[test]
    fn target_errors_name_the_column() {
        let d = tempfile::tempdir().unwrap();
        let p = write(d.path(), "t.csv", "x,y,z\n1,good,0\n2,bad,0\n3,good,0\n");
        let df = read_table(&p).unwrap();
        let e = frame_to_dataset(
            &df,
            &FrameOptions {
                target: "nope".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("'nope' is not in the table"), "{e}");
        let e = frame_to_dataset(
            &df,
            &FrameOptions {
                target: "y".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, FrameError::NonBinary { .. }) && e.to_string().contains("--bad-value"),
            "{e}"
        );
        let ok = frame_to_dataset(
            &df,
            &FrameOptions {
                target: "y".into(),
                bad_value: Some("bad".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(ok.target, Some(vec![0, 1, 0]));
        let e = frame_to_dataset(
            &df,
            &FrameOptions {
                target: "z".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(
            matches!(e, FrameError::OneClass { .. }) && e.to_string().contains("'z'"),
            "{e}"
        );
        let e = frame_to_dataset(
            &df,
            &FrameOptions {
                target: "x".into(),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(e, FrameError::NonBinary { .. }), "{e}");
        assert!(read_table(&d.path().join("missing.csv")).is_err());
        assert!(matches!(
            read_table(&write(d.path(), "a.xlsx", "")),
            Err(FrameError::Format(_))
        ));
    }
}
