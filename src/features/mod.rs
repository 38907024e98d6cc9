//! Feature pipelines: a pipeline file compiled to polars lazy plans, run for a whole population
//! (batch, training) or for a few users (online) through the same code.

pub mod chunked;
pub mod cli;
pub mod frame;
pub mod pipeline;
mod sorted_agg;
pub mod spec;

use polars::prelude::*;

use crate::domain::{ColumnValues, Dataset, FeatureColumn};

pub use pipeline::{Pipeline, Tables};
pub use spec::{FeatureType, PipelineSpec};

/// Errors of the feature layer. `Spec` names the feature at fault.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error("pipeline file: {0}")]
    Parse(String),
    #[error("feature '{feature}': {message}")]
    Spec { feature: String, message: String },
    #[error("data: {0}")]
    Data(String),
    #[error("{0}")]
    Io(String),
}

/// Converts a feature table (key column + features, as [`Pipeline::compute`] writes it) into the
/// model's in-memory form. Features keep the pipeline's order and metadata.
pub fn to_dataset(df: &DataFrame, spec: &PipelineSpec) -> Result<Dataset, FeatureError> {
    let key = spec.key.as_str();
    let ids = match df.column(key) {
        Ok(c) => string_values(c)?
            .into_iter()
            .map(|v| v.unwrap_or_default())
            .collect(),
        Err(_) => (0..df.height()).map(|i| i.to_string()).collect(),
    };
    if spec.mode == spec::Mode::Flat && spec.features.is_empty() {
        return Ok(Dataset {
            ids,
            columns: infer_columns(df, spec)?,
            target: None,
        });
    }
    let mut columns = Vec::with_capacity(spec.features.len());
    for f in &spec.features {
        let c = df.column(f.meta.name.as_str()).map_err(|_| {
            FeatureError::Data(format!("feature table lacks column '{}'", f.meta.name))
        })?;
        let values = match f.ftype {
            FeatureType::Category => ColumnValues::Categorical(string_values(c)?),
            FeatureType::Int | FeatureType::Float => ColumnValues::Numeric(float_values(c)?),
        };
        columns.push(FeatureColumn {
            meta: f.meta.clone(),
            values,
        });
    }
    Ok(Dataset {
        ids,
        columns,
        target: None,
    })
}

/// Flat mode without a column list: numbers are numeric features, everything else categorical.
fn infer_columns(df: &DataFrame, spec: &PipelineSpec) -> Result<Vec<FeatureColumn>, FeatureError> {
    let mut columns = Vec::new();
    for c in df.columns() {
        if c.name().as_str() == spec.key {
            continue;
        }
        let values = if c.dtype().is_primitive_numeric() {
            ColumnValues::Numeric(float_values(c)?)
        } else {
            ColumnValues::Categorical(string_values(c)?)
        };
        let meta = crate::domain::FeatureMeta {
            name: c.name().to_string(),
            dimension: spec.default_dimension,
            description: c.name().to_string(),
        };
        columns.push(FeatureColumn { meta, values });
    }
    Ok(columns)
}

fn string_values(c: &Column) -> Result<Vec<Option<String>>, FeatureError> {
    let s = c
        .cast(&DataType::String)
        .map_err(|e| FeatureError::Data(format!("column '{}': {e}", c.name())))?;
    let ca = s.str().map_err(|e| FeatureError::Data(e.to_string()))?;
    Ok(ca.iter().map(|v| v.map(str::to_string)).collect())
}

fn float_values(c: &Column) -> Result<Vec<Option<f64>>, FeatureError> {
    let s = c
        .cast(&DataType::Float64)
        .map_err(|e| FeatureError::Data(format!("column '{}': {e}", c.name())))?;
    let ca = s.f64().map_err(|e| FeatureError::Data(e.to_string()))?;
    Ok(ca.iter().map(|v| v.filter(|x| x.is_finite())).collect())
}
