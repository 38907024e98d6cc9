//! File helpers shared by every command that writes results: nothing half-written is ever left
//! under the final name.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

/// A temporary path beside `path` (same directory, so the final rename is atomic).
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Writes `df` as Parquet (zstd) to a temporary file and renames it into place.
pub fn write_parquet_atomic(df: &mut DataFrame, path: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = temp_beside(path);
    let result = (|| -> anyhow::Result<()> {
        let file = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        ParquetWriter::new(file)
            .with_compression(ParquetCompression::Zstd(None))
            .finish(df)
            .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename into {}", path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Reads a whole Parquet file.
pub fn read_parquet(path: &Path) -> anyhow::Result<DataFrame> {
    use anyhow::Context;
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    ParquetReader::new(file)
        .finish()
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}

/// Parses a YYYY-MM-DD date, naming the argument on error.
pub fn parse_date(what: &str, s: &str) -> anyhow::Result<chrono::NaiveDate> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| anyhow::anyhow!("{what}: '{s}' is not a date in YYYY-MM-DD form"))
}
