//! The audit journal: the durable copy of the audit log, one line per record, appended and
//! `fdatasync`ed once per group commit.
//!
//! Why a plain file and not SQLite alone: a commit here is one `write` and one `fdatasync`,
//! where an SQLite WAL commit with `synchronous=FULL` is a page write per touched table and
//! index page, file-lock calls and the fsync, and every ~1000 pages a checkpoint on the
//! answering path. That per-commit cost was most of the audit's price on Score throughput
//! (docs/security.md). SQLite stays as the queryable index, fed from the journal off the
//! answering path ([`super::Store`]).
//!
//! Line format: `<canonical>\t<hash>\n`, where `canonical` is [`super::canonical`] (a JSON array
//! that starts with the sequence number; JSON escapes tabs and newlines, so neither appears
//! inside) and `hash` is [`super::chain_hash`] of the previous line's hash and `canonical`.
//! A line cut short by a crash can only belong to a commit that was never acknowledged (the
//! acknowledgement waits for the `fdatasync`), so opening for writing drops it.
//!
//! The file is extended with zeros ahead of the records ([`PREALLOCATE`] at a time) and records
//! overwrite them, and each commit is one `O_DIRECT | O_DSYNC` write of the blocks it touches
//! (the last partial block is rewritten with its earlier bytes unchanged). Measured on this
//! project's ext4 disk: a true append + `fdatasync` costs ~280 µs of waiting and ~125 µs of CPU,
//! an overwrite + `fdatasync` ~210 µs, a direct synchronous overwrite ~155 µs and ~65 µs of CPU
//! — and every call waits for one commit. Where the file system refuses `O_DIRECT` (tmpfs) the
//! journal falls back to buffered writes and `fdatasync`. Readers stop at the zeros.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{canonical, chain_hash, AuditError, AuditRecord, StoredRecord};

/// Bytes of zeros written ahead of the records at a time (~12,000 records).
pub const PREALLOCATE: u64 = 4 << 20;

/// Alignment and unit of direct writes.
const BLOCK: usize = 4096;

fn round_up(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// A zeroed buffer whose start is aligned to [`BLOCK`], as `O_DIRECT` requires.
#[derive(Default)]
struct AlignedBuf {
    raw: Vec<u8>,
}

impl AlignedBuf {
    /// `len` zeroed bytes (a multiple of [`BLOCK`]) at an aligned address.
    fn zeroed(&mut self, len: usize) -> &mut [u8] {
        if self.raw.len() < len + BLOCK {
            self.raw = vec![0u8; (len + BLOCK).next_power_of_two()];
        }
        let start = self.raw.as_ptr().align_offset(BLOCK);
        let out = &mut self.raw[start..start + len];
        out.fill(0);
        out
    }
}

/// How long opening waits for another writer of the same journal to close it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Where the journal of the audit index at `index_path` lives: the same name, extension `journal`.
pub fn journal_path(index_path: &Path) -> PathBuf {
    index_path.with_extension("journal")
}

/// One journal line parsed, with the byte offset just past it.
#[derive(Debug, Clone)]
pub struct JournalEntry {
    pub seq: i64,
    pub record: AuditRecord,
    /// The exact canonical text stored (what the hash covers).
    pub canonical: String,
    pub hash: String,
    pub end_offset: u64,
}

type CanonicalTuple = (
    i64,
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

/// Appends the journal line of a record: its canonical text, a tab, its hash, a newline.
pub fn push_line(out: &mut Vec<u8>, canonical: &str, hash: &str) {
    out.extend_from_slice(canonical.as_bytes());
    out.push(b'\t');
    out.extend_from_slice(hash.as_bytes());
    out.push(b'\n');
}

/// Reads the next complete journal line into `buf` (newline included) and returns its length;
/// `None` at the end of the records: end of file, a line still being written (no newline yet,
/// or cut short by a crash), or the zeros written ahead.
pub fn next_line(reader: &mut impl BufRead, buf: &mut String) -> std::io::Result<Option<usize>> {
    buf.clear();
    let n = reader.read_line(buf)?;
    Ok((n > 0 && buf.ends_with('\n') && !buf.starts_with('\0')).then_some(n))
}

/// Parses one line (without its newline). `None` = not a well-formed journal line.
pub fn parse_line(line: &str) -> Option<(i64, AuditRecord, String, String)> {
    let (canon, hash) = line.rsplit_once('\t')?;
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let t: CanonicalTuple = serde_json::from_str(canon).ok()?;
    let record = AuditRecord {
        ts_ms: t.1,
        method: t.2,
        partner: t.3,
        user_ref: t.4,
        scenario: t.5,
        request_id: t.6,
        decision: t.7,
        model_version: t.8,
        code: t.9,
    };
    Some((t.0, record, canon.to_string(), hash.to_string()))
}

/// Reads the journal from `offset`. Stops quietly at a line without its newline (a write in
/// progress, or a torn tail after a crash); a complete line that does not parse is an error
/// (damage or tampering), reported with its byte offset.
pub fn read_from(path: &Path, offset: u64) -> Result<Vec<JournalEntry>, AuditError> {
    let rerr = |m: String| AuditError::Read(format!("journal {}: {m}", path.display()));
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && offset == 0 => return Ok(vec![]),
        Err(e) => return Err(rerr(e.to_string())),
    };
    let len = file.metadata().map_err(|e| rerr(e.to_string()))?.len();
    if len < offset {
        return Err(rerr(format!(
            "shorter ({len} bytes) than the part already indexed ({offset} bytes): records removed"
        )));
    }
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| rerr(e.to_string()))?;
    // Only what was there when we looked: a writer may be appending meanwhile.
    let mut reader = BufReader::new(file.take(len - offset));
    let mut out = Vec::new();
    let mut pos = offset;
    let mut buf = String::new();
    while let Some(n) =
        next_line(&mut reader, &mut buf).map_err(|e| rerr(format!("at byte {pos}: {e}")))?
    {
        let (seq, record, canonical, hash) = parse_line(buf.trim_end_matches('\n'))
            .ok_or_else(|| rerr(format!("malformed line at byte {pos}")))?;
        pos += n as u64;
        out.push(JournalEntry {
            seq,
            record,
            canonical,
            hash,
            end_offset: pos,
        });
    }
    Ok(out)
}

/// The journal open for appending.
pub struct Journal {
    file: File,
    path: PathBuf,
    /// End of the last record.
    len: u64,
    /// Size of the file: records, then zeros written ahead.
    capacity: u64,
    head_seq: i64,
    head_hash: String,
    buf: Vec<u8>,
    /// The same file opened `O_DIRECT | O_DSYNC`, where the file system allows it.
    direct: Option<File>,
    /// Bytes of the last, partial block (`len` rounded down to [`BLOCK`] up to `len`).
    tail: Vec<u8>,
    aligned: AlignedBuf,
}

impl Journal {
    /// Opens (creating) the journal for appending after the record `head_seq` whose hash is
    /// `head_hash`, ending at byte `len` (the caller has read and checked everything before it).
    /// Bytes after `len` are a torn, unacknowledged tail and are cut off.
    pub fn open_at(
        path: &Path,
        len: u64,
        head_seq: i64,
        head_hash: String,
    ) -> Result<Journal, AuditError> {
        let oerr = |m: String| AuditError::Open {
            path: path.to_path_buf(),
            message: m,
        };
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map_err(|e| oerr(e.to_string()))?;
        // Two writers would interleave their chains; the lock goes with the process. A writer
        // that is just closing (a restart in the same process) gets a moment to let go.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(oerr(
                        "another writer holds this audit log (its journal is locked)".into(),
                    ))
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(oerr(format!("cannot lock the journal: {e}")))
                }
            }
        }
        let actual = file.metadata().map_err(|e| oerr(e.to_string()))?.len();
        if actual < len {
            return Err(oerr(format!(
                "journal is {actual} bytes, expected at least {len}: records removed"
            )));
        }
        if actual > len {
            // Zeros written ahead, and perhaps a torn line that was never acknowledged.
            file.set_len(len).map_err(|e| oerr(e.to_string()))?;
            file.sync_all().map_err(|e| oerr(e.to_string()))?;
        }
        // A new journal's directory entry must be durable too.
        if len == 0 {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                if let Ok(d) = File::open(dir) {
                    let _ = d.sync_all();
                }
            }
        }
        let tail_start = len - len % BLOCK as u64;
        let mut tail = vec![0u8; (len - tail_start) as usize];
        file.read_exact_at(&mut tail, tail_start)
            .map_err(|e| oerr(e.to_string()))?;
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT | libc::O_DSYNC)
            .open(path)
            .map_err(|e| tracing::debug!(error = %e, "audit journal: no O_DIRECT, using fdatasync"))
            .ok();
        let mut journal = Journal {
            file,
            path: path.to_path_buf(),
            len,
            capacity: len,
            head_seq,
            head_hash,
            buf: Vec::with_capacity(64 * 1024),
            direct,
            tail,
            aligned: AlignedBuf::default(),
        };
        // Only a speed-up: if the disk refuses now, the first append tries again (and fails the
        // call if it must).
        if let Err(e) = journal.preallocate(0) {
            tracing::warn!(error = %e, "audit journal: cannot write ahead");
        }
        Ok(journal)
    }

    /// Makes room for `need` more bytes after the records: zeros written up to at least
    /// [`PREALLOCATE`] past them, and the new size made durable.
    fn preallocate(&mut self, need: u64) -> std::io::Result<()> {
        let target = round_up(self.len + need.max(PREALLOCATE));
        if target <= self.capacity {
            return Ok(());
        }
        let zeros = vec![0u8; 1 << 20];
        let mut at = self.capacity;
        while at < target {
            let n = (target - at).min(zeros.len() as u64) as usize;
            self.file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        self.file.sync_all()?;
        self.capacity = target;
        Ok(())
    }

    /// Writes `buf` at `len`, durably: with `O_DIRECT | O_DSYNC`, the blocks from the last
    /// partial one on (its earlier bytes rewritten unchanged, zeros after the records); else a
    /// buffered write and `fdatasync`. An empty `buf` rewrites the last block as it was.
    fn write_durably(&mut self) -> std::io::Result<()> {
        match &self.direct {
            Some(direct) => {
                let tail_start = self.len - self.tail.len() as u64;
                let total = self.tail.len() + self.buf.len();
                let padded = round_up(total as u64).max(BLOCK as u64) as usize;
                let out = self.aligned.zeroed(padded);
                out[..self.tail.len()].copy_from_slice(&self.tail);
                out[self.tail.len()..total].copy_from_slice(&self.buf);
                direct.write_all_at(out, tail_start)
            }
            None if self.buf.is_empty() => Ok(()),
            None => {
                self.file.write_all_at(&self.buf, self.len)?;
                self.file.sync_data()
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the disk takes durable writes now, without writing a record: the last partial
    /// block is rewritten as it is (or one zero byte past the records, where the file holds
    /// zeros anyway), then made durable. The health probe's question after a failed commit.
    pub fn check_writable(&mut self) -> Result<(), AuditError> {
        self.buf.clear();
        let written = match &self.direct {
            Some(_) => self.write_durably(),
            None => {
                let (at, bytes): (u64, &[u8]) = if self.tail.is_empty() {
                    (self.len, &[0u8])
                } else {
                    (self.len - self.tail.len() as u64, &self.tail)
                };
                self.file
                    .write_all_at(bytes, at)
                    .and_then(|_| self.file.sync_data())
            }
        };
        written.map_err(|e| AuditError::Write(format!("journal {}: {e}", self.path.display())))
    }

    pub fn head_seq(&self) -> i64 {
        self.head_seq
    }

    pub fn head_hash(&self) -> &str {
        &self.head_hash
    }

    /// Byte length of the journal (the offset after its last record).
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `records` chained after the head and makes them durable (one `fdatasync`).
    /// Returns them as stored. On error the journal is cut back to where it was, so nothing of
    /// this call is left behind.
    pub fn append(&mut self, records: &[AuditRecord]) -> Result<Vec<StoredRecord>, AuditError> {
        self.buf.clear();
        let mut stored = Vec::with_capacity(records.len());
        let mut seq = self.head_seq;
        let mut prev = self.head_hash.clone();
        for r in records {
            seq += 1;
            let canon = canonical(seq, r);
            let hash = chain_hash(&prev, &canon);
            push_line(&mut self.buf, &canon, &hash);
            stored.push(StoredRecord {
                seq,
                record: r.clone(),
                prev_hash: std::mem::replace(&mut prev, hash.clone()),
                hash,
            });
        }
        let need = self.buf.len() as u64;
        let written = if round_up(self.len + need) > self.capacity {
            self.preallocate(need)
        } else {
            Ok(())
        }
        .and_then(|_| self.write_durably());
        if let Err(e) = written {
            // Best effort: put back what was there (the last block's earlier bytes, then zeros);
            // the head does not move, and the next append writes over the same place.
            if self.direct.is_some() {
                self.buf.clear();
                let _ = self.write_durably();
            } else {
                let _ = self.file.write_all_at(&vec![0u8; need as usize], self.len);
            }
            return Err(AuditError::Write(format!(
                "journal {}: {e}",
                self.path.display()
            )));
        }
        // The new last partial block: the end of (old tail + what was written).
        let new_len = self.len + need;
        let keep = (new_len % BLOCK as u64) as usize;
        self.tail.extend_from_slice(&self.buf);
        self.tail.drain(..self.tail.len() - keep);
        self.len += self.buf.len() as u64;
        self.head_seq = seq;
        self.head_hash = prev;
        Ok(stored)
    }
}
