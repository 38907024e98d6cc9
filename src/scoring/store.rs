//! The embedded online feature store: the pipeline's batch feature table, materialised at start
//! and keyed by user id, plus the raw tables in memory for requests that bring inline rows.

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::*;

use crate::domain::{Dataset, FeatureValue};
use crate::features::chunked::DEFAULT_CHUNK_USERS;
use crate::features::{to_dataset, FeatureError, Pipeline, Tables};

use super::types::{ApplicantData, ScoringError};

pub struct FeatureStore {
    pub pipeline_hash: String,
    pub as_of: NaiveDate,
    rows: HashMap<String, Vec<FeatureValue>>,
    raw: Tables,
}

impl FeatureStore {
    /// Runs the batch pipeline over `data_dir` (the population run `sesame batch` uses, in
    /// chunks of users, so a large store does not need one run's memory on top of its tables) and
    /// keeps one row per user.
    pub fn build(
        pipeline: &Pipeline,
        data_dir: &Path,
        as_of: NaiveDate,
    ) -> Result<FeatureStore, FeatureError> {
        let raw = Tables::open_dir(&pipeline.spec, data_dir)?.collect_all()?;
        let df = pipeline.compute_chunked(&raw, as_of, DEFAULT_CHUNK_USERS, |_, _| {})?;
        let ds = to_dataset(&df, &pipeline.spec)?;
        Ok(FeatureStore {
            pipeline_hash: pipeline.hash().to_string(),
            as_of,
            rows: rows_of(&ds),
            raw,
        })
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Up to `n` stored user ids, sorted (stable across runs).
    pub fn user_ids(&self, n: usize) -> Vec<String> {
        let mut ids: Vec<String> = self.rows.keys().cloned().collect();
        ids.sort();
        ids.truncate(n);
        ids
    }

    pub fn get(&self, user_id: &str) -> Option<&[FeatureValue]> {
        self.rows.get(user_id).map(|v| v.as_slice())
    }

    /// Features of a user from rows sent with the request, computed by the same pipeline plan as
    /// the batch (the stored tables supply the neighbours the user links to).
    pub fn compute_inline(
        &self,
        pipeline: &Pipeline,
        user_id: &str,
        data: &ApplicantData,
    ) -> Result<Vec<FeatureValue>, ScoringError> {
        if self.rows.contains_key(user_id) {
            return Err(ScoringError::invalid(
                "applicant",
                "inline data is for users the store does not hold; this user_id is known (omit applicant)",
            ));
        }
        let tables = inline::tables_with(&self.raw, pipeline, user_id, data)?;
        let df = pipeline
            .compute_for_users(&tables, self.as_of, &[user_id.to_string()])
            .map_err(|e| ScoringError::Internal(format!("inline features: {e}")))?;
        let ds =
            to_dataset(&df, &pipeline.spec).map_err(|e| ScoringError::Internal(e.to_string()))?;
        if ds.n_rows() != 1 {
            return Err(ScoringError::invalid(
                "applicant.identity",
                "inline data must describe the user (identity facts are required)",
            ));
        }
        Ok(ds.row(0))
    }
}

fn rows_of(ds: &Dataset) -> HashMap<String, Vec<FeatureValue>> {
    (0..ds.n_rows())
        .map(|i| (ds.ids[i].clone(), ds.row(i)))
        .collect()
}

/// Inline rows → one-user frames in the generated tables' schemas, appended to the stored ones.
mod inline {
    use super::*;

    fn date_col(name: &str, v: Vec<Option<NaiveDate>>) -> Result<Column, PolarsError> {
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default();
        let days: Vec<Option<i32>> = v
            .into_iter()
            .map(|d| d.map(|d| (d - epoch).num_days() as i32))
            .collect();
        Column::new(name.into(), days).cast(&DataType::Date)
    }

    fn ts_col(name: &str, v: Vec<i64>) -> Result<Column, PolarsError> {
        Column::new(name.into(), v).cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
    }

    /// Appends `extra` to the stored table `name`, aligning to its schema (missing columns null).
    fn append(tables: &mut Tables, name: &str, extra: DataFrame) -> Result<(), ScoringError> {
        let Ok(stored) = tables.get(name) else {
            return Ok(());
        };
        let schema = stored
            .clone()
            .collect_schema()
            .map_err(|e| ScoringError::Internal(format!("table {name}: {e}")))?;
        let n = extra.height();
        let mut cols = Vec::new();
        for (col_name, dtype) in schema.iter() {
            let c = match extra.column(col_name.as_str()) {
                Ok(c) => c.cast(dtype).map_err(|e| {
                    ScoringError::invalid(&format!("applicant.{name}"), e.to_string())
                })?,
                Err(_) => Column::full_null(col_name.clone(), n, dtype),
            };
            cols.push(c);
        }
        let extra = DataFrame::new(n, cols).map_err(|e| ScoringError::Internal(e.to_string()))?;
        // Lazy: the pipeline narrows to the user's rows before anything is copied.
        let combined = concat([stored, extra.lazy()], UnionArgs::default())
            .map_err(|e| ScoringError::Internal(format!("table {name}: {e}")))?;
        tables.insert_lazy(name, combined);
        Ok(())
    }

    pub(super) fn tables_with(
        stored: &Tables,
        pipeline: &Pipeline,
        user: &str,
        data: &ApplicantData,
    ) -> Result<Tables, ScoringError> {
        let internal = |e: PolarsError| ScoringError::Internal(e.to_string());
        let mut t = stored.clone();
        let id = data.identity.clone().unwrap_or_default();
        let users = DataFrame::new(
            1,
            vec![
                Column::new("user_id".into(), [user]),
                date_col("signup_date", vec![id.signup_date]).map_err(internal)?,
                Column::new("age".into(), [id.age]),
                Column::new("city_tier".into(), [id.city_tier]),
                Column::new("real_name_verified".into(), [id.real_name_verified]),
                Column::new("education".into(), [id.education.clone()]),
                Column::new("education_verified".into(), [id.education_verified]),
                Column::new("social_security_months".into(), [id.social_security_months]),
                Column::new("housing_fund_months".into(), [id.housing_fund_months]),
                Column::new("phone_tenure_months".into(), [id.phone_tenure_months]),
                Column::new("income_band".into(), [id.income_band]),
            ],
        )
        .map_err(internal)?;
        append(&mut t, &pipeline.spec.base_table, users)?;

        let tx = &data.transactions;
        if !tx.is_empty() {
            let n = tx.len();
            let df = DataFrame::new(
                n,
                vec![
                    Column::new("user_id".into(), vec![user; n]),
                    ts_col("ts", tx.iter().map(|r| r.ts_ms).collect()).map_err(internal)?,
                    Column::new(
                        "kind".into(),
                        tx.iter().map(|r| r.kind.clone()).collect::<Vec<_>>(),
                    ),
                    Column::new(
                        "amount".into(),
                        tx.iter().map(|r| r.amount).collect::<Vec<_>>(),
                    ),
                    Column::new(
                        "merchant_category".into(),
                        tx.iter()
                            .map(|r| r.merchant_category.clone())
                            .collect::<Vec<_>>(),
                    ),
                    date_col("due_date", tx.iter().map(|r| r.due_date).collect())
                        .map_err(internal)?,
                    date_col("paid_date", tx.iter().map(|r| r.paid_date).collect())
                        .map_err(internal)?,
                ],
            )
            .map_err(internal)?;
            append(&mut t, "transactions", df)?;
        }
        let bh = &data.behaviors;
        if !bh.is_empty() {
            let n = bh.len();
            let df = DataFrame::new(
                n,
                vec![
                    Column::new("user_id".into(), vec![user; n]),
                    ts_col("ts", bh.iter().map(|r| r.ts_ms).collect()).map_err(internal)?,
                    Column::new(
                        "event".into(),
                        bh.iter().map(|r| r.event.clone()).collect::<Vec<_>>(),
                    ),
                    Column::new(
                        "device_id".into(),
                        bh.iter().map(|r| r.device_id.clone()).collect::<Vec<_>>(),
                    ),
                    Column::new(
                        "ip_city".into(),
                        bh.iter().map(|r| r.ip_city.clone()).collect::<Vec<_>>(),
                    ),
                ],
            )
            .map_err(internal)?;
            append(&mut t, "behaviors", df)?;
        }
        let rel = &data.relations;
        if !rel.is_empty() {
            let n = rel.len();
            let df = DataFrame::new(
                n,
                vec![
                    Column::new("src".into(), vec![user; n]),
                    Column::new(
                        "dst".into(),
                        rel.iter()
                            .map(|r| r.other_user_id.clone())
                            .collect::<Vec<_>>(),
                    ),
                    Column::new(
                        "kind".into(),
                        rel.iter().map(|r| r.kind.clone()).collect::<Vec<_>>(),
                    ),
                    date_col("since", rel.iter().map(|r| Some(r.since)).collect())
                        .map_err(internal)?,
                ],
            )
            .map_err(internal)?;
            append(&mut t, "relations", df)?;
        }
        Ok(t)
    }
}
