//! File helpers shared by the commands that read and write whole tables: nothing half-written
//! is ever left under the final name, and inputs about to be read in full are prefetched.

use std::fs::File;
use std::path::{Path, PathBuf};

use polars::prelude::*;

/// A temporary path beside `path` (same directory, so the final rename is atomic):
/// `.<name>.<pid>.tmp`. Temporaries that killed runs left for the same `path` (their process
/// is gone) are removed first, so a re-run cleans up after a `kill -9` instead of leaving
/// hidden files of up to the output's size behind.
pub fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    remove_stale_temps(path, &name);
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Removes `.<name>.<pid>.tmp` beside `path` whose process no longer runs. Only where `/proc`
/// tells which processes run (Linux); a file of a live process, or of a pid since reused, is
/// left alone.
fn remove_stale_temps(path: &Path, name: &str) {
    let proc_root = Path::new("/proc");
    if !proc_root.join("self").exists() {
        return;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .filter(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if !proc_root.join(pid).exists() && std::fs::remove_file(entry.path()).is_ok() {
            tracing::info!(file = %entry.path().display(), "removed a temporary file a killed run left");
        }
    }
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

/// Reads whole input files into the page cache on a background thread, for a job about to read
/// all of them. Files fall out of the cache under memory pressure, and on hosts running DAMON
/// pageout (this project's VM) after about a minute unread, so a run after a pause starts cold;
/// streaming the files beside chunk 0's compute took a cold 1M batch from 19.7-20.4 s to
/// 18.2-18.5 s (docs/batch.md, stop 33). With the files already cached the reads are copies
/// from memory, ~0.2 CPU-s for the 1M population's 915 MB. Skipped when the files would fill
/// more than a quarter of the machine's memory: they would push each other out.
///
/// Plain sequential reads, not `posix_fadvise(WILLNEED)`: Linux caps that advice at one
/// read-ahead window per call (`force_page_cache_ra`: 8 MB on this VM), so stops 27-32 prefetched
/// only the first 8 MB of each file (seen with `fincore`, stop 33). The files are read in step,
/// the same fraction of each per round, because every chunk of users needs the matching part of
/// every table (they are sorted by user).
pub fn prefetch_files(paths: Vec<PathBuf>) {
    let files: Vec<(File, u64)> = paths
        .iter()
        .filter_map(|p| {
            let file = File::open(p).ok()?;
            let len = file.metadata().ok()?.len();
            Some((file, len))
        })
        .collect();
    let bytes: u64 = files.iter().map(|(_, len)| len).sum();
    if bytes == 0 || bytes > physical_memory().unwrap_or(0) / 4 {
        return;
    }
    // Advice only: a read error stops the prefetch of that file, and the reader that needs the
    // file reports it.
    let _ = std::thread::Builder::new()
        .name("prefetch".into())
        .spawn(move || read_in_step(files, |_, _| {}));
}

/// Reads `files` to their ends in rounds of at most 8 MB of the largest one; after each round,
/// `progress(file, bytes read so far)` for every file.
fn read_in_step(mut files: Vec<(File, u64)>, mut progress: impl FnMut(usize, u64)) {
    use std::io::Read;
    const WINDOW: u64 = 8 << 20;
    let rounds = files
        .iter()
        .map(|(_, len)| len.div_ceil(WINDOW))
        .max()
        .unwrap_or(0);
    let mut buffer = vec![0u8; 1 << 20];
    let mut done = vec![0u64; files.len()];
    for round in 1..=rounds {
        for ((file, len), done) in files.iter_mut().zip(done.iter_mut()) {
            let until = *len * round / rounds;
            while *done < until {
                let want = (until - *done).min(buffer.len() as u64) as usize;
                match file.read(&mut buffer[..want]) {
                    Ok(0) | Err(_) => {
                        *done = *len;
                        break;
                    }
                    Ok(n) => *done += n as u64,
                }
            }
        }
        for (index, done) in done.iter().enumerate() {
            progress(index, *done);
        }
    }
}

/// The machine's physical memory in bytes, when the platform says (Linux and other Unixes).
fn physical_memory() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: sysconf has no preconditions; a failure returns -1, refused below.
        let (pages, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        (pages > 0 && page_size > 0).then(|| pages as u64 * page_size as u64)
    }
    #[cfg(not(unix))]
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporaries_of_dead_runs_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("scores.parquet");
        // No process has a pid this large (Linux's pid_max is at most 2^22); pid 1 always runs.
        let dead = dir.path().join(".scores.parquet.999999999.tmp");
        let live = dir.path().join(".scores.parquet.1.tmp");
        let other = dir.path().join(".other.parquet.999999999.tmp");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"half a file").unwrap();
        }
        let tmp = temp_beside(&out);
        assert_eq!(
            tmp,
            dir.path()
                .join(format!(".scores.parquet.{}.tmp", std::process::id()))
        );
        assert!(!dead.exists(), "a killed run's temporary is removed");
        assert!(live.exists(), "a running process's temporary is kept");
        assert!(other.exists(), "another output's temporary is not touched");
    }

    #[test]
    fn prefetch_reads_every_byte_of_every_file_in_step() {
        // posix_fadvise(WILLNEED) stopped at 8 MB per file: a file several windows long must be
        // read to its end, and the small ones keep pace with it rather than waiting for it.
        let dir = tempfile::tempdir().unwrap();
        let sizes = [0u64, 1, (3 << 20) + 7, (27 << 20) + 3];
        let files: Vec<(File, u64)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let path = dir.path().join(format!("t{i}.parquet"));
                std::fs::write(&path, vec![i as u8; len as usize]).unwrap();
                (File::open(&path).unwrap(), len)
            })
            .collect();
        let mut seen = Vec::new();
        read_in_step(files, |file, done| seen.push((file, done)));
        let rounds = seen.len() / sizes.len();
        assert_eq!(rounds, 4, "27 MB in windows of 8 MB");
        for (i, &(file, done)) in seen.iter().enumerate() {
            let round = (i / sizes.len() + 1) as u64;
            assert_eq!(file, i % sizes.len());
            assert_eq!(
                done,
                sizes[file] * round / rounds as u64,
                "file {file} after round {round}"
            );
        }
        let last = &seen[seen.len() - sizes.len()..];
        assert!(last.iter().all(|&(file, done)| done == sizes[file]));
    }
}
