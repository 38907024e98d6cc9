//! Shared plumbing: dates as day numbers, atomic output directories, batched Parquet
//! tables, column builders and the AUC used to report the oracle.

use std::fs::File;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;

use super::DatasetError;

pub(crate) const MS_PER_DAY: i64 = 86_400_000;

pub(crate) fn parse_date(s: &str) -> Result<NaiveDate, DatasetError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_err(|_| {
        DatasetError::InvalidArgument(format!("malformed date '{s}': expected YYYY-MM-DD"))
    })
}

fn epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("1970-01-01 is a valid date")
}

/// Days since 1970-01-01 (Parquet/polars Date physical value).
pub(crate) fn day_number(d: NaiveDate) -> i32 {
    (d - epoch()).num_days() as i32
}

pub(crate) fn date_of(day: i32) -> NaiveDate {
    epoch() + chrono::Duration::days(day as i64)
}

/// Day number of (year, month, day) with the day clamped to the month's length.
pub(crate) fn ymd_day(year: i32, month0: i32, dom: u32) -> i32 {
    let y = year + month0.div_euclid(12);
    let m = month0.rem_euclid(12) as u32 + 1;
    let mut d = dom.clamp(1, 31);
    loop {
        if let Some(date) = NaiveDate::from_ymd_opt(y, m, d) {
            return day_number(date);
        }
        d -= 1;
    }
}

/// A directory that becomes visible at `final_path` only when [`StagedDir::commit`] succeeds.
/// It is written next to the target (same file system, so the rename is atomic) and removed
/// on drop if the run fails.
pub(crate) struct StagedDir {
    tmp: tempfile::TempDir,
    final_path: PathBuf,
}

fn out_err(path: &Path, reason: impl Into<String>) -> DatasetError {
    DatasetError::Output {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// An existing directory may only be replaced if it holds nothing but Parquet files
/// (i.e. it is an earlier output); anything else is refused rather than deleted.
fn check_replaceable(out: &Path) -> Result<(), DatasetError> {
    let entries = std::fs::read_dir(out).map_err(|e| out_err(out, format!("cannot read: {e}")))?;
    for entry in entries {
        let entry = entry.map_err(|e| out_err(out, format!("cannot read: {e}")))?;
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        let name = entry.file_name();
        if !is_file || !name.to_string_lossy().ends_with(".parquet") {
            return Err(out_err(
                out,
                format!(
                    "exists and holds '{}', which is not a dataset table; refusing to replace it",
                    name.to_string_lossy()
                ),
            ));
        }
    }
    Ok(())
}

impl StagedDir {
    pub(crate) fn new(out: &Path) -> Result<Self, DatasetError> {
        let name = out
            .file_name()
            .ok_or_else(|| out_err(out, "is not a usable directory name"))?
            .to_string_lossy()
            .to_string();
        if out.exists() {
            if !out.is_dir() {
                return Err(out_err(out, "exists and is not a directory"));
            }
            check_replaceable(out)?;
        }
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            return Err(out_err(
                out,
                format!("parent directory {} does not exist", parent.display()),
            ));
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.partial-"))
            .tempdir_in(&parent)
            .map_err(|e| out_err(out, format!("cannot write in {}: {e}", parent.display())))?;
        Ok(StagedDir {
            tmp,
            final_path: out.to_path_buf(),
        })
    }

    pub(crate) fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub(crate) fn commit(self) -> Result<(), DatasetError> {
        let out = self.final_path;
        if out.exists() {
            check_replaceable(&out)?;
            std::fs::remove_dir_all(&out)
                .map_err(|e| out_err(&out, format!("cannot replace: {e}")))?;
        }
        let tmp_path = self.tmp.path().to_path_buf();
        std::fs::rename(&tmp_path, &out)
            .map_err(|e| out_err(&out, format!("cannot move output into place: {e}")))?;
        // The directory now lives at `out`; do not let TempDir delete anything.
        let _ = self.tmp.keep();
        Ok(())
    }
}

/// One Parquet table written chunk by chunk (one row group per chunk).
pub(crate) struct TableWriter {
    name: &'static str,
    schema: Schema,
    writer: polars::io::parquet::write::BatchedWriter<File>,
    pub(crate) rows: u64,
}

impl TableWriter {
    pub(crate) fn create(
        dir: &Path,
        name: &'static str,
        schema: Schema,
    ) -> Result<Self, DatasetError> {
        let path = dir.join(format!("{name}.parquet"));
        let file = File::create(&path).map_err(|e| DatasetError::io(&path, e))?;
        let writer = ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .batched(&schema)
            .map_err(|e| DatasetError::polars(name, e))?;
        Ok(TableWriter {
            name,
            schema,
            writer,
            rows: 0,
        })
    }

    pub(crate) fn write(&mut self, columns: Vec<Column>) -> Result<(), DatasetError> {
        let height = columns.first().map(|c| c.len()).unwrap_or(0);
        if height == 0 {
            return Ok(());
        }
        let mut df =
            DataFrame::new(height, columns).map_err(|e| DatasetError::polars(self.name, e))?;
        if df.schema().as_ref() != &self.schema {
            return Err(DatasetError::polars(
                self.name,
                polars::error::PolarsError::SchemaMismatch(
                    format!(
                        "table {} got schema {:?}, expected {:?}",
                        self.name,
                        df.schema(),
                        self.schema
                    )
                    .into(),
                ),
            ));
        }
        df.rechunk_mut();
        self.writer
            .write_batch(&df)
            .map_err(|e| DatasetError::polars(self.name, e))?;
        self.rows += height as u64;
        Ok(())
    }

    pub(crate) fn finish(self) -> Result<u64, DatasetError> {
        self.writer
            .finish()
            .map_err(|e| DatasetError::polars(self.name, e))?;
        Ok(self.rows)
    }
}

// ---- column builders -------------------------------------------------------------

pub(crate) fn col_str<'a>(name: &str, values: impl ExactSizeIterator<Item = &'a str>) -> Column {
    let mut b = StringChunkedBuilder::new(name.into(), values.len());
    for v in values {
        b.append_value(v);
    }
    b.finish().into_series().into_column()
}

pub(crate) fn col_str_opt<'a>(
    name: &str,
    values: impl ExactSizeIterator<Item = Option<&'a str>>,
) -> Column {
    let mut b = StringChunkedBuilder::new(name.into(), values.len());
    for v in values {
        b.append_option(v);
    }
    b.finish().into_series().into_column()
}

pub(crate) fn col_date(name: &str, days: Vec<i32>) -> Column {
    Int32Chunked::from_vec(name.into(), days)
        .into_date()
        .into_series()
        .into_column()
}

pub(crate) fn col_date_opt(name: &str, days: &[Option<i32>]) -> Column {
    Int32Chunked::new(name.into(), days)
        .into_date()
        .into_series()
        .into_column()
}

pub(crate) fn col_ts(name: &str, ms: Vec<i64>) -> Column {
    Int64Chunked::from_vec(name.into(), ms)
        .into_datetime(super::schema::TS_UNIT, None)
        .into_series()
        .into_column()
}

pub(crate) fn col_i32(name: &str, v: Vec<i32>) -> Column {
    Int32Chunked::from_vec(name.into(), v)
        .into_series()
        .into_column()
}

pub(crate) fn col_i32_opt(name: &str, v: &[Option<i32>]) -> Column {
    Int32Chunked::new(name.into(), v)
        .into_series()
        .into_column()
}

pub(crate) fn col_i64(name: &str, v: Vec<i64>) -> Column {
    Int64Chunked::from_vec(name.into(), v)
        .into_series()
        .into_column()
}

pub(crate) fn col_f64(name: &str, v: Vec<f64>) -> Column {
    Float64Chunked::from_vec(name.into(), v)
        .into_series()
        .into_column()
}

pub(crate) fn col_bool(name: &str, v: &[bool]) -> Column {
    BooleanChunked::from_slice(name.into(), v)
        .into_series()
        .into_column()
}

/// Area under the ROC curve of `score` for the positives in `label` (Mann–Whitney U,
/// ties get average ranks). `None` when one class is absent.
pub fn auc(score: &[f64], label: &[bool]) -> Option<f64> {
    assert_eq!(
        score.len(),
        label.len(),
        "auc: score and label lengths differ"
    );
    let n_pos = label.iter().filter(|&&l| l).count();
    let n_neg = label.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..score.len()).collect();
    idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && score[idx[j + 1]] == score[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if label[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos as f64) * (n_pos as f64 + 1.0) / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values() {
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(auc(&[1.0, 2.0], &[false, true]), Some(1.0));
        assert_eq!(auc(&[1.0, 2.0], &[true, false]), Some(0.0));
        assert_eq!(auc(&[1.0, 1.0], &[true, false]), Some(0.5));
        assert_eq!(auc(&[1.0, 1.0], &[true, true]), None);
    }

    #[test]
    fn day_numbers_round_trip_and_clamp_month_ends() {
        let d = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
        assert_eq!(date_of(day_number(d)), d);
        assert_eq!(day_number(NaiveDate::from_ymd_opt(1970, 1, 2).unwrap()), 1);
        // 2025 month index 1 = February; the 31st clamps to the 28th.
        assert_eq!(
            date_of(ymd_day(2025, 1, 31)),
            NaiveDate::from_ymd_opt(2025, 2, 28).unwrap()
        );
        // Month index -1 is December of the previous year.
        assert_eq!(
            date_of(ymd_day(2025, -1, 5)),
            NaiveDate::from_ymd_opt(2024, 12, 5).unwrap()
        );
    }

    #[test]
    fn malformed_dates_are_rejected() {
        assert!(parse_date("2025-13-01").is_err());
        assert!(parse_date("31/12/2025").is_err());
        assert!(parse_date("2025-12-31").is_ok());
    }
}
