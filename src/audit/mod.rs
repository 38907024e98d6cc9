//! The query audit log: one record per Score call and per ScoreStream item, allowed or refused,
//! made durable before the answer leaves (docs/security.md).
//!
//! - [`journal`]: the durable copy, an append-only file of one line per record, written
//!   before any call it holds is answered. Records form a hash chain:
//!   `hash = SHA-256(prev_hash "\n" canonical)` where `canonical` is the record's fields (with its
//!   sequence number) as one JSON array; the first record's `prev_hash` is 64 zeros. Changing,
//!   removing or re-ordering a record breaks the chain at that record.
//! - [`Store`]: the journal plus an SQLite index of it (WAL mode) that `sesame audit` queries.
//!   The index is written off the answering path and may trail the journal by the last moments'
//!   records; opening for writing catches it up, reading merges the trailing records in, and
//!   [`Store::verify`] checks the chain and that both files agree.
//! - [`AuditLog`]: group commit. Handlers send records over a channel with a oneshot ack; one
//!   writer thread takes all that are waiting (up to [`MAX_BATCH`]), appends them to the journal
//!   with one durable write (`O_DIRECT | O_DSYNC`, or `fdatasync`), then acks them all and passes them to the index thread. A call is
//!   answered only after its ack; if the write fails, the ack carries the error and the call
//!   fails instead of answering unrecorded.
//!
//! Users are stored only as [`user_ref`], a SHA-256 of the id: `sesame audit --user U` hashes
//! U the same way to find them.

pub mod cli;
pub mod journal;

use journal::JournalEntry;
pub use journal::{journal_path, Journal};

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Records waiting for the writer before senders wait.
const QUEUE: usize = 8192;
/// Shortest time between the starts of two journal commits. A durable write costs ~65 µs of CPU
/// here (more under load) whatever it carries, so under load a commit that waits to carry more
/// records is cheaper per call; a call arriving after a quiet spell is committed at once.
/// Measured at 0, 500 and 1000 µs (docs/security.md): 500 gave the best saturated throughput;
/// later, 2 ms did better only at saturation and worse below it, so it is a setting
/// (`audit.commit_interval_us`), this the default.
pub const DEFAULT_COMMIT_INTERVAL: std::time::Duration = std::time::Duration::from_micros(500);
/// How long the index thread lets durable records gather before one SQLite commit.
const INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
/// Records handed to the index thread and not yet indexed, beyond which the writer hands over
/// no more: the index thread reads them back from the journal when it gets to them. Bounds the
/// memory (~300 bytes a record) when the index falls behind, as it may at full load (it runs
/// only on idle CPU, see [`indexer`]).
const INDEX_BACKLOG: usize = 100_000;
/// After a failed index write, how long the index thread lets records pass before it tries
/// again (from the journal): a lasting failure (the index's disk full) must not have it
/// re-read a growing journal tail every few milliseconds.
const INDEX_RETRY: std::time::Duration = std::time::Duration::from_secs(5);
/// `prev_hash` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {message}")]
    Open { path: PathBuf, message: String },
    #[error("audit log write failed: {0}")]
    Write(String),
    #[error("audit log: {0}")]
    Read(String),
}

fn read_err(e: rusqlite::Error) -> AuditError {
    AuditError::Read(e.to_string())
}

/// The opaque reference to a user stored in the audit log: SHA-256 of a domain prefix and the
/// id, hex. Stable, so the user's queries can be listed; not reversible short of guessing ids.
pub fn user_ref(user_id: &str) -> String {
    hex::encode(Sha256::digest(
        format!("sesame-audit-user:{}", user_id.trim()).as_bytes(),
    ))
}

/// What is recorded of one call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditRecord {
    /// When the call was answered, ms since the Unix epoch (UTC).
    pub ts_ms: i64,
    /// `Score` or `ScoreStream`.
    pub method: String,
    /// The authenticated partner id, or `unknown`.
    pub partner: String,
    /// [`user_ref`] of the requested user ("" when the request named none).
    pub user_ref: String,
    /// The scenario (purpose) asked for, as sent (trimmed, at most 128 bytes).
    pub scenario: String,
    /// The partner's request id.
    pub request_id: String,
    /// approve / review / reject, or "" when refused.
    pub decision: String,
    /// Model version that scored ("" when refused).
    pub model_version: String,
    /// gRPC outcome: OK, PERMISSION_DENIED, ...
    pub code: String,
}

/// A stored record with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub seq: i64,
    pub record: AuditRecord,
    pub prev_hash: String,
    pub hash: String,
}

/// The exact bytes hashed for a record: its fields and sequence number as a JSON array.
pub fn canonical(seq: i64, r: &AuditRecord) -> String {
    serde_json::to_string(&(
        seq,
        r.ts_ms,
        &r.method,
        &r.partner,
        &r.user_ref,
        &r.scenario,
        &r.request_id,
        &r.decision,
        &r.model_version,
        &r.code,
    ))
    .unwrap_or_default()
}

/// The chain link: SHA-256 of `prev_hash`, a newline and the canonical record, hex.
pub fn chain_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.as_bytes());
    hex::encode(h.finalize())
}

/// Result of [`Store::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked (up to and including the first broken one).
    pub records: u64,
    /// Hash of the last record (the chain head), when intact.
    pub head: String,
    /// The first record that does not verify, and why.
    pub first_broken: Option<(i64, String)>,
}

/// Which records [`Store::query`] returns.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user_ref: Option<String>,
    pub partner: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: Option<u64>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    method TEXT NOT NULL,
    partner TEXT NOT NULL,
    user_ref TEXT NOT NULL,
    scenario TEXT NOT NULL,
    request_id TEXT NOT NULL,
    decision TEXT NOT NULL,
    model_version TEXT NOT NULL,
    code TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_user ON audit (user_ref, seq);
CREATE INDEX IF NOT EXISTS audit_partner ON audit (partner, ts_ms);
CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
";

/// `audit_meta` key: journal bytes whose records are in the index.
const META_JOURNAL_OFFSET: &str = "journal_offset";

const COLUMNS: &str =
    "seq, ts_ms, method, partner, user_ref, scenario, request_id, decision, model_version, code, prev_hash, hash";

fn row_to_stored(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    Ok(StoredRecord {
        seq: row.get(0)?,
        record: AuditRecord {
            ts_ms: row.get(1)?,
            method: row.get(2)?,
            partner: row.get(3)?,
            user_ref: row.get(4)?,
            scenario: row.get(5)?,
            request_id: row.get(6)?,
            decision: row.get(7)?,
            model_version: row.get(8)?,
            code: row.get(9)?,
        },
        prev_hash: row.get(10)?,
        hash: row.get(11)?,
    })
}

fn matches(f: &Filter, r: &AuditRecord) -> bool {
    f.user_ref.as_ref().is_none_or(|u| &r.user_ref == u)
        && f.partner.as_ref().is_none_or(|p| &r.partner == p)
        && f.since_ms.is_none_or(|t| r.ts_ms >= t)
        && f.until_ms.is_none_or(|t| r.ts_ms < t)
}

/// The audit log on disk: the journal (durable, hash-chained; see [`journal`]) and the SQLite
/// index of it that `sesame audit` queries. The index may trail the journal by the records of the
/// last moments; opening for writing catches it up, and reading merges the trailing records in.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Present when open for writing and not yet handed to the writer thread.
    journal: Option<Journal>,
    /// Read-only: journal records after the indexed part (or why they could not be read).
    pending: Result<Vec<StoredRecord>, String>,
    indexed_offset: u64,
    head_seq: i64,
    head_hash: String,
}

fn index_head(conn: &Connection) -> rusqlite::Result<(i64, String)> {
    Ok(conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, GENESIS.to_string())))
}

/// A log written before the journal existed: records in the index, no journal part indexed.
fn is_pre_journal(indexed_offset: u64, head_seq: i64) -> bool {
    indexed_offset == 0 && head_seq > 0
}

fn indexed_offset(conn: &Connection) -> rusqlite::Result<u64> {
    // A file written before the journal existed has no meta table: nothing of a journal indexed.
    let has_meta: bool = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_meta'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n > 0)?;
    if !has_meta {
        return Ok(0);
    }
    Ok(conn
        .query_row(
            "SELECT value FROM audit_meta WHERE key = ?1",
            [META_JOURNAL_OFFSET],
            |r| r.get::<_, i64>(0),
        )
        .optional()?
        .unwrap_or(0)
        .max(0) as u64)
}

/// Journal entries that continue the chain after (`head_seq`, `head_hash`), or the first that
/// does not.
fn continue_chain(
    entries: Vec<JournalEntry>,
    mut head_seq: i64,
    head_hash: &str,
) -> Result<Vec<StoredRecord>, String> {
    let mut prev = head_hash.to_string();
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        if e.seq != head_seq + 1 {
            return Err(format!(
                "journal record {} follows record {head_seq}: records missing or re-ordered",
                e.seq
            ));
        }
        if chain_hash(&prev, &e.canonical) != e.hash {
            return Err(format!(
                "journal record {} does not match its hash: altered",
                e.seq
            ));
        }
        head_seq = e.seq;
        out.push(StoredRecord {
            seq: e.seq,
            record: e.record,
            prev_hash: std::mem::replace(&mut prev, e.hash.clone()),
            hash: e.hash,
        });
    }
    Ok(out)
}

impl Store {
    /// Opens (creating the files and their directory if needed) for appending: checks the
    /// journal's records after the indexed part, indexes them (recovery after a crash), and cuts
    /// off a torn tail that was never acknowledged. Only one process may hold it open so.
    pub fn open(path: &Path) -> Result<Store, AuditError> {
        let open_err = |message: String| AuditError::Open {
            path: path.to_path_buf(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!("cannot use WAL mode (got {mode})")));
        }
        // NORMAL: the index needs no fsync per commit, the journal is the durable copy and a
        // lost index tail is rebuilt from it at the next open.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL; PRAGMA busy_timeout=5000; PRAGMA cache_size=-65536;",
        )
        .and_then(|_| conn.execute_batch(SCHEMA))
        .map_err(|e| open_err(e.to_string()))?;
        let (head_seq, head_hash) = index_head(&conn).map_err(|e| open_err(e.to_string()))?;
        let offset = indexed_offset(&conn).map_err(|e| open_err(e.to_string()))?;
        let jpath = journal_path(path);
        let mut store = Store {
            conn,
            path: path.to_path_buf(),
            journal: None,
            pending: Ok(Vec::new()),
            indexed_offset: offset,
            head_seq,
            head_hash,
        };
        let journal_len = std::fs::metadata(&jpath).map(|m| m.len()).unwrap_or(0);
        if is_pre_journal(offset, head_seq) && journal_len == 0 {
            // A log from before the journal: write its records into a new journal.
            store.write_journal_from_index(&jpath)?;
        } else {
            store.catch_up().map_err(|e| match e {
                AuditError::Read(m) => open_err(format!("{m}; run `sesame audit --verify`")),
                other => other,
            })?;
        }
        let journal = Journal::open_at(
            &jpath,
            store.indexed_offset,
            store.head_seq,
            store.head_hash.clone(),
        )?;
        store.journal = Some(journal);
        Ok(store)
    }

    /// Indexes the journal's records after the indexed part (checking that they continue the
    /// chain). A line still being written is left for the next time.
    fn catch_up(&mut self) -> Result<(), AuditError> {
        let jpath = journal_path(&self.path);
        let entries = journal::read_from(&jpath, self.indexed_offset)?;
        let end = entries.last().map_or(self.indexed_offset, |e| e.end_offset);
        let tail =
            continue_chain(entries, self.head_seq, &self.head_hash).map_err(AuditError::Read)?;
        if tail.is_empty() {
            return Ok(());
        }
        self.index(&tail, end)
    }

    /// Writes every indexed record into a new journal (migration of a pre-journal file).
    fn write_journal_from_index(&mut self, jpath: &Path) -> Result<(), AuditError> {
        let rows = self.query(&Filter::default())?;
        let mut text = Vec::with_capacity(rows.len() * 400);
        for r in &rows {
            journal::push_line(&mut text, &canonical(r.seq, &r.record), &r.hash);
        }
        let tmp = jpath.with_extension("journal.tmp");
        let werr = |e: std::io::Error| AuditError::Open {
            path: jpath.to_path_buf(),
            message: e.to_string(),
        };
        {
            let mut f = std::fs::File::create(&tmp).map_err(werr)?;
            std::io::Write::write_all(&mut f, &text).map_err(werr)?;
            f.sync_all().map_err(werr)?;
        }
        std::fs::rename(&tmp, jpath).map_err(werr)?;
        self.set_indexed_offset(text.len() as u64)
    }

    fn set_indexed_offset(&mut self, offset: u64) -> Result<(), AuditError> {
        self.conn
            .execute(
                "INSERT INTO audit_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![META_JOURNAL_OFFSET, offset as i64],
            )
            .map_err(|e| AuditError::Write(e.to_string()))?;
        self.indexed_offset = offset;
        Ok(())
    }

    /// Opens existing files for reading only (`sesame audit`; safe while a server writes). The
    /// journal's records not yet indexed are read too.
    pub fn open_read_only(path: &Path) -> Result<Store, AuditError> {
        if !path.exists() {
            return Err(AuditError::Open {
                path: path.to_path_buf(),
                message: "no such file".into(),
            });
        }
        let open_err = |message: String| AuditError::Open {
            path: path.to_path_buf(),
            message,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.execute_batch("PRAGMA busy_timeout=5000;").map(|_| c))
        .map_err(|e| open_err(e.to_string()))?;
        // One read transaction, so the head and the offset belong together.
        conn.execute_batch("BEGIN")
            .map_err(|e| open_err(e.to_string()))?;
        let (head_seq, head_hash) = index_head(&conn).map_err(|e| open_err(e.to_string()))?;
        let offset = indexed_offset(&conn).map_err(|e| open_err(e.to_string()))?;
        conn.execute_batch("COMMIT")
            .map_err(|e| open_err(e.to_string()))?;
        let jpath = journal_path(path);
        let pending = if is_pre_journal(offset, head_seq) {
            Ok(Vec::new()) // pre-journal file: the index is all there is
        } else {
            journal::read_from(&jpath, offset)
                .map_err(|e| e.to_string())
                .and_then(|entries| continue_chain(entries, head_seq, &head_hash))
        };
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            journal: None,
            pending,
            indexed_offset: offset,
            head_seq,
            head_hash,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of the last record (0 when empty).
    pub fn head_seq(&self) -> i64 {
        match (&self.journal, &self.pending) {
            (Some(j), _) => j.head_seq(),
            (None, Ok(p)) if !p.is_empty() => p[p.len() - 1].seq,
            _ => self.head_seq,
        }
    }

    /// Hands the journal to a writer that appends on its own; this store then only indexes.
    pub fn take_journal(&mut self) -> Option<Journal> {
        self.journal.take()
    }

    /// Appends `records` (journal, one durable write), then indexes them. On error nothing
    /// is acknowledged and the head stays where it was.
    pub fn append(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let journal = self
            .journal
            .as_mut()
            .ok_or_else(|| AuditError::Write("the audit log is not open for writing".into()))?;
        let stored = journal.append(records)?;
        let end = journal.len();
        self.index(&stored, end)
    }

    /// Adds journal records (already durable) to the index, with the journal offset after them,
    /// in one transaction.
    pub fn index(&mut self, stored: &[StoredRecord], journal_end: u64) -> Result<(), AuditError> {
        let werr = |e: rusqlite::Error| AuditError::Write(e.to_string());
        let tx = self.conn.transaction().map_err(werr)?;
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ))
                .map_err(werr)?;
            for s in stored {
                let r = &s.record;
                stmt.execute(params![
                    s.seq,
                    r.ts_ms,
                    r.method,
                    r.partner,
                    r.user_ref,
                    r.scenario,
                    r.request_id,
                    r.decision,
                    r.model_version,
                    r.code,
                    s.prev_hash,
                    s.hash
                ])
                .map_err(werr)?;
            }
            tx.execute(
                "INSERT INTO audit_meta (key, value) VALUES (?1, ?2)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                params![META_JOURNAL_OFFSET, journal_end as i64],
            )
            .map_err(werr)?;
        }
        tx.commit().map_err(werr)?;
        if let Some(last) = stored.last() {
            self.head_seq = last.seq;
            self.head_hash = last.hash.clone();
        }
        self.indexed_offset = journal_end;
        Ok(())
    }

    /// Checks the whole log: the journal's hash chain from its first record, and that every
    /// indexed record is the journal's record (same fields, same hash), so altering, removing or
    /// re-ordering a record in either file is found. Stops at the first that does not verify.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))
            .map_err(read_err)?;
        let mut rows = stmt.query_map([], row_to_stored).map_err(read_err)?;
        let jpath = journal_path(&self.path);
        let mut journal = if is_pre_journal(self.indexed_offset, self.head_seq) {
            None
        } else {
            match std::fs::File::open(&jpath) {
                Ok(f) => {
                    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                    Some(std::io::BufReader::new(std::io::Read::take(f, len)))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.head_seq == 0 => None,
                Err(e) => {
                    return Ok(VerifyReport {
                        records: 0,
                        head: String::new(),
                        first_broken: Some((1, format!("journal {}: {e}", jpath.display()))),
                    })
                }
            }
        };
        let mut prev = GENESIS.to_string();
        let mut n = 0u64;
        let mut line = String::new();
        let broken = |n: u64, seq: i64, why: String| VerifyReport {
            records: n,
            head: String::new(),
            first_broken: Some((seq, why)),
        };
        for expect_seq in 1i64.. {
            // The journal's record (the durable copy), when there is a journal.
            let from_journal = match journal.as_mut() {
                None => None,
                Some(r) => {
                    let complete = journal::next_line(r, &mut line)
                        .map_err(|e| AuditError::Read(e.to_string()))?;
                    if complete.is_some() {
                        match journal::parse_line(line.trim_end_matches('\n')) {
                            Some(j) => Some(j),
                            None => {
                                return Ok(broken(
                                    n + 1,
                                    expect_seq,
                                    "journal line malformed (altered)".into(),
                                ))
                            }
                        }
                    } else {
                        None // end (or a line still being written)
                    }
                }
            };
            let from_index = rows.next().transpose().map_err(read_err)?;
            if from_journal.is_none() && from_index.is_none() {
                break;
            }
            n += 1;
            if let Some((seq, _, canon, hash)) = &from_journal {
                if *seq != expect_seq {
                    return Ok(broken(
                        n,
                        expect_seq,
                        format!(
                            "journal: expected record {expect_seq}, found {seq} (records removed or re-ordered)"
                        ),
                    ));
                }
                if chain_hash(&prev, canon) != *hash {
                    return Ok(broken(
                        n,
                        expect_seq,
                        "journal: contents do not match the record's hash (record altered)".into(),
                    ));
                }
            } else if journal.is_some() {
                return Ok(broken(
                    n,
                    expect_seq,
                    "the index holds a record the journal does not (journal cut short)".into(),
                ));
            }
            if let Some(s) = &from_index {
                let why = if s.seq != expect_seq {
                    Some(format!(
                        "sequence gap: expected record {expect_seq}, found {} (records removed)",
                        s.seq
                    ))
                } else if s.prev_hash != prev {
                    Some("prev_hash does not match the previous record's hash".to_string())
                } else if chain_hash(&prev, &canonical(s.seq, &s.record)) != s.hash {
                    Some("contents do not match the record's hash (record altered)".to_string())
                } else if from_journal.as_ref().is_some_and(|j| j.3 != s.hash) {
                    Some("the index and the journal disagree on this record".to_string())
                } else {
                    None
                };
                if let Some(why) = why {
                    return Ok(broken(n, expect_seq, why));
                }
                prev = s.hash.clone();
            } else if let Some((_, _, _, hash)) = from_journal {
                if expect_seq <= self.head_seq {
                    return Ok(broken(
                        n,
                        expect_seq,
                        "sequence gap in the index (records removed)".into(),
                    ));
                }
                prev = hash; // not indexed yet: the journal alone speaks for it
            }
        }
        Ok(VerifyReport {
            records: n,
            head: prev,
            first_broken: None,
        })
    }

    /// Records matching `f`, oldest first.
    pub fn query(&self, f: &Filter) -> Result<Vec<StoredRecord>, AuditError> {
        let mut sql = format!("SELECT {COLUMNS} FROM audit WHERE 1=1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(u) = &f.user_ref {
            sql.push_str(" AND user_ref = ?");
            args.push(u.clone().into());
        }
        if let Some(p) = &f.partner {
            sql.push_str(" AND partner = ?");
            args.push(p.clone().into());
        }
        if let Some(t) = f.since_ms {
            sql.push_str(" AND ts_ms >= ?");
            args.push(t.into());
        }
        if let Some(t) = f.until_ms {
            sql.push_str(" AND ts_ms < ?");
            args.push(t.into());
        }
        sql.push_str(" ORDER BY seq");
        if let Some(l) = f.limit {
            sql.push_str(&format!(" LIMIT {l}"));
        }
        // One snapshot of the index, so its head tells which read-ahead journal records it holds
        // by now (the index thread keeps writing while we read).
        let tx = self.conn.unchecked_transaction().map_err(read_err)?;
        let (indexed_head, _) = index_head(&tx).map_err(read_err)?;
        let mut out = {
            let mut stmt = tx.prepare(&sql).map_err(read_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(args), row_to_stored)
                .map_err(read_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(read_err)?
        };
        tx.commit().map_err(read_err)?;
        let pending = self
            .pending
            .as_ref()
            .map_err(|e| AuditError::Read(e.clone()))?;
        out.extend(
            pending
                .iter()
                .filter(|s| s.seq > indexed_head && matches(f, &s.record))
                .cloned(),
        );
        if let Some(l) = f.limit {
            out.truncate(l as usize);
        }
        Ok(out)
    }

    /// Number of records.
    pub fn count(&self) -> Result<u64, AuditError> {
        let tx = self.conn.unchecked_transaction().map_err(read_err)?;
        let (indexed_head, _) = index_head(&tx).map_err(read_err)?;
        let indexed = tx
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(read_err)?;
        tx.commit().map_err(read_err)?;
        let pending = self
            .pending
            .as_ref()
            .map_err(|e| AuditError::Read(e.clone()))?;
        Ok(indexed + pending.iter().filter(|s| s.seq > indexed_head).count() as u64)
    }
}

type Ack = oneshot::Sender<Result<(), AuditError>>;

/// What the writer thread is asked: commit a record, or say whether the disk takes writes.
#[derive(Debug)]
enum Job {
    Record(AuditRecord, Ack),
    Probe(Ack),
}

/// Whether the last journal write succeeded, shared by the writer and the handles. While it
/// failed, every call fails (it cannot be recorded), so the service's health says so.
#[derive(Debug)]
struct Writable {
    ok: std::sync::atomic::AtomicBool,
    failed: tokio::sync::Notify,
}

impl Writable {
    fn new() -> std::sync::Arc<Writable> {
        std::sync::Arc::new(Writable {
            ok: std::sync::atomic::AtomicBool::new(true),
            failed: tokio::sync::Notify::new(),
        })
    }

    /// Records the last write's outcome; wakes the health watcher when writes start failing.
    fn set(&self, ok: bool) {
        let was_ok = self.ok.swap(ok, std::sync::atomic::Ordering::Relaxed);
        if was_ok && !ok {
            self.failed.notify_one();
        }
    }
}

/// How far the journal and the index have got (sequence numbers of their last records): the
/// index runs at idle priority and may fall behind under load; on-call reads the difference on
/// `/metrics` (`sesame_audit_index_lag_records`).
#[derive(Debug, Default)]
pub struct AuditProgress {
    journal_seq: std::sync::atomic::AtomicI64,
    indexed_seq: std::sync::atomic::AtomicI64,
}

impl AuditProgress {
    /// Records in the journal that the index does not hold yet.
    pub fn index_lag(&self) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        let lag = self.journal_seq.load(Relaxed) - self.indexed_seq.load(Relaxed);
        lag.max(0) as u64
    }
}

/// The handle the service writes through. Cheap to share; the writer thread ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<Job>>,
    writable: std::sync::Arc<Writable>,
    progress: std::sync::Arc<AuditProgress>,
}

impl AuditLog {
    /// Opens the store (catching the index up with the journal) and starts the journal writer
    /// and the index writer threads; commits start at most every `commit_interval`
    /// (`audit.commit_interval_us`, default [`DEFAULT_COMMIT_INTERVAL`]).
    pub fn open(path: &Path, commit_interval: std::time::Duration) -> Result<AuditLog, AuditError> {
        let mut store = Store::open(path)?;
        let journal = store
            .take_journal()
            .ok_or_else(|| AuditError::Write("the audit store opened without a journal".into()))?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let (index_tx, index_rx) = std::sync::mpsc::channel();
        let index = IndexQueue {
            tx: index_tx,
            queued: Default::default(),
        };
        let queued = index.queued.clone();
        let progress = std::sync::Arc::new(AuditProgress::default());
        progress
            .journal_seq
            .store(journal.head_seq(), std::sync::atomic::Ordering::Relaxed);
        progress
            .indexed_seq
            .store(store.head_seq, std::sync::atomic::Ordering::Relaxed);
        let (writer_progress, index_progress) = (progress.clone(), progress.clone());
        let writable = Writable::new();
        let thread_err = |e: std::io::Error| AuditError::Open {
            path: path.to_path_buf(),
            message: format!("cannot start the audit threads: {e}"),
        };
        std::thread::Builder::new()
            .name("sesame-audit-index".into())
            .spawn(move || indexer(store, index_rx, &queued, &index_progress))
            .map_err(thread_err)?;
        let shared = writable.clone();
        std::thread::Builder::new()
            .name("sesame-audit".into())
            .spawn(move || {
                writer(
                    journal,
                    rx,
                    index,
                    commit_interval,
                    &shared,
                    &writer_progress,
                )
            })
            .map_err(thread_err)?;
        Ok(AuditLog {
            tx: Some(tx),
            writable,
            progress,
        })
    }

    /// No audit (benchmarks only; refused in production mode): [`AuditLog::record`] is a no-op.
    pub fn disabled() -> AuditLog {
        AuditLog {
            tx: None,
            writable: Writable::new(),
            progress: Default::default(),
        }
    }

    /// How far the journal and its index have got (both 0 when the audit is off).
    pub fn progress(&self) -> std::sync::Arc<AuditProgress> {
        self.progress.clone()
    }

    /// Whether the last journal write (a commit or a probe) succeeded; always true when off.
    pub fn writable(&self) -> bool {
        self.writable.ok.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Completes after a journal write failed (never, when the audit is off).
    pub async fn failed(&self) {
        match self.tx {
            Some(_) => self.writable.failed.notified().await,
            None => std::future::pending().await,
        }
    }

    /// Asks the writer whether the disk takes durable writes now (it rewrites the journal's
    /// last block as it is; no record is added), and updates [`AuditLog::writable`].
    pub async fn probe(&self) -> Result<(), AuditError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (ack, done) = oneshot::channel();
        tx.send(Job::Probe(ack))
            .await
            .map_err(|_| AuditError::Write("the audit writer has stopped".into()))?;
        done.await
            .map_err(|_| AuditError::Write("the audit writer has stopped".into()))?
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Returns once `record` is durable, or with the reason it could not be written.
    pub async fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (ack, done) = oneshot::channel();
        tx.send(Job::Record(record, ack))
            .await
            .map_err(|_| AuditError::Write("the audit writer has stopped".into()))?;
        done.await
            .map_err(|_| AuditError::Write("the audit writer has stopped".into()))?
    }
}

/// Records made durable, with the journal length after them, on their way to the index.
type Durable = (Vec<StoredRecord>, u64);

/// The writer's side of the way to the index thread: durable records, and how many of them
/// are waiting (bounded by [`INDEX_BACKLOG`]).
struct IndexQueue {
    tx: std::sync::mpsc::Sender<Durable>,
    queued: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl IndexQueue {
    /// Hands `stored` over, or drops it when the index thread is too far behind (it will read
    /// those records from the journal instead).
    fn send(&self, stored: Vec<StoredRecord>, journal_end: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = stored.len();
        if self.queued.load(Relaxed) + n > INDEX_BACKLOG {
            return;
        }
        self.queued.fetch_add(n, Relaxed);
        if self.tx.send((stored, journal_end)).is_err() {
            self.queued.fetch_sub(n, Relaxed);
        }
    }
}

/// Group commit: everything waiting goes into one durable journal write; each ack after it.
/// Commits start at most every `min_interval`; calls arriving meanwhile join the next. A probe
/// waiting with records is answered by their commit; alone, by a rewrite of the last block.
fn writer(
    mut journal: Journal,
    mut rx: mpsc::Receiver<Job>,
    index: IndexQueue,
    min_interval: std::time::Duration,
    writable: &Writable,
    progress: &AuditProgress,
) {
    let mut records = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::with_capacity(MAX_BATCH);
    let mut probes = Vec::new();
    let mut last_commit = std::time::Instant::now() - min_interval;
    let take =
        |job: Job, records: &mut Vec<AuditRecord>, acks: &mut Vec<Ack>, probes: &mut Vec<Ack>| {
            match job {
                Job::Record(r, a) => {
                    records.push(r);
                    acks.push(a);
                }
                Job::Probe(a) => probes.push(a),
            }
        };
    while let Some(job) = rx.blocking_recv() {
        take(job, &mut records, &mut acks, &mut probes);
        if records.is_empty() {
            // A probe alone: no record to commit, only the question.
            let result = journal.check_writable();
            writable.set(result.is_ok());
            for a in probes.drain(..) {
                let _ = a.send(result.clone());
            }
            continue;
        }
        let since = last_commit.elapsed();
        if since < min_interval {
            std::thread::sleep(min_interval - since);
        }
        last_commit = std::time::Instant::now();
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => take(job, &mut records, &mut acks, &mut probes),
                Err(_) => break,
            }
        }
        let result = journal.append(&records);
        let ack = match result {
            Ok(stored) => {
                progress
                    .journal_seq
                    .store(journal.head_seq(), std::sync::atomic::Ordering::Relaxed);
                index.send(stored, journal.len());
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, n = records.len(), "audit write failed; the calls fail");
                Err(e)
            }
        };
        writable.set(ack.is_ok());
        for a in acks.drain(..).chain(probes.drain(..)) {
            let _ = a.send(ack.clone());
        }
        records.clear();
    }
}

/// Keeps the SQLite index up with the journal: whatever has become durable since its last
/// commit goes into one transaction. Records it already has are skipped; records it never got
/// (the writer dropped them while it was behind, or an index write failed) are read back from
/// the journal. A failure only delays the index: `sesame audit` reads the journal's records
/// past the indexed part, and the calls were already answered on the journal's word.
///
/// The thread runs at idle priority (Linux `SCHED_IDLE`): indexing is for later queries, and
/// taking a core from the scoring workers at full load cost the audited service ~5-8 µs of CPU
/// per call (docs/security.md). When the cores are busy it falls behind and catches up when
/// they are not.
fn indexer(
    mut store: Store,
    rx: std::sync::mpsc::Receiver<Durable>,
    queued: &std::sync::atomic::AtomicUsize,
    progress: &AuditProgress,
) {
    lower_to_idle_priority();
    let mut failed_at: Option<std::time::Instant> = None;
    while let Ok((mut batch, mut end)) = rx.recv() {
        // Let records gather: an SQLite commit costs ~100 µs of CPU whatever its size, and a
        // commit per journal group (thousands a second) would take that CPU from scoring.
        std::thread::sleep(INDEX_INTERVAL);
        while let Ok((more, e)) = rx.try_recv() {
            batch.extend(more);
            end = e;
        }
        queued.fetch_sub(batch.len(), std::sync::atomic::Ordering::Relaxed);
        if failed_at.is_some_and(|t| t.elapsed() < INDEX_RETRY) {
            continue; // these records are read from the journal at the next try
        }
        let result = index_batch(&mut store, batch, end);
        progress
            .indexed_seq
            .store(store.head_seq, std::sync::atomic::Ordering::Relaxed);
        match (&result, failed_at.is_some()) {
            (Err(e), false) => {
                tracing::error!(error = %e, "audit index write failed; it catches up from the journal later")
            }
            (Ok(()), true) => tracing::info!("audit index writes again"),
            _ => {}
        }
        failed_at = result.is_err().then(std::time::Instant::now);
    }
}

/// Indexes `batch` (records up to journal offset `end`), after reading from the journal any
/// records between the index's head and the batch.
fn index_batch(
    store: &mut Store,
    mut batch: Vec<StoredRecord>,
    end: u64,
) -> Result<(), AuditError> {
    batch.retain(|r| r.seq > store.head_seq);
    let Some(first) = batch.first() else {
        return Ok(());
    };
    // Consecutive records continuing the index, unless a batch was dropped before or between.
    let continues =
        first.seq == store.head_seq + 1 && batch.windows(2).all(|w| w[1].seq == w[0].seq + 1);
    if continues {
        store.index(&batch, end)
    } else {
        // The journal holds everything durable, this batch included.
        store.catch_up()
    }
}

#[cfg(target_os = "linux")]
fn lower_to_idle_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain system call on the calling thread (pid 0) with a valid parameter.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "audit index thread keeps normal priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_to_idle_priority() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: i64) -> AuditRecord {
        AuditRecord {
            ts_ms: 1_800_000_000_000 + i,
            method: "Score".into(),
            partner: if i % 2 == 0 { "acme" } else { "unknown" }.into(),
            user_ref: user_ref(&format!("U{i}")),
            scenario: "cash_loan".into(),
            request_id: format!("r-{i}"),
            decision: "approve".into(),
            model_version: "m-1".into(),
            code: "OK".into(),
        }
    }

    #[test]
    fn chain_verifies_and_detects_tampering() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/audit.db");
        let mut s = Store::open(&path).expect("open");
        s.append(&(1..=5).map(rec).collect::<Vec<_>>())
            .expect("append");
        s.append(&[rec(6)]).expect("append");
        drop(s);
        // Reopening continues the chain.
        let mut s = Store::open(&path).expect("reopen");
        assert_eq!(s.head_seq(), 6);
        s.append(&[rec(7)]).expect("append");
        let v = s.verify().expect("verify");
        assert_eq!((v.records, v.first_broken.clone()), (7, None));
        let q = s
            .query(&Filter {
                user_ref: Some(user_ref("U3")),
                ..Default::default()
            })
            .expect("query");
        assert_eq!(q.len(), 1);
        assert_eq!(q[0].record.request_id, "r-3");
        let q = s
            .query(&Filter {
                partner: Some("acme".into()),
                since_ms: Some(1_800_000_000_004),
                ..Default::default()
            })
            .expect("query");
        assert_eq!(
            q.iter().map(|r| r.seq).collect::<Vec<_>>(),
            vec![4, 6],
            "acme at or after ts+4"
        );
        // Alter one field of record 4.
        s.conn
            .execute(
                "UPDATE audit SET scenario = 'rental_deposit_free' WHERE seq = 4",
                [],
            )
            .expect("tamper");
        let v = s.verify().expect("verify");
        assert_eq!(v.first_broken.as_ref().map(|b| b.0), Some(4), "{v:?}");
        // Restore, then remove record 2.
        s.conn
            .execute("UPDATE audit SET scenario = 'cash_loan' WHERE seq = 4", [])
            .expect("restore");
        assert_eq!(s.verify().expect("verify").first_broken, None);
        s.conn
            .execute("DELETE FROM audit WHERE seq = 2", [])
            .expect("delete");
        let v = s.verify().expect("verify");
        // The journal still holds record 2, so the gap is named where it is.
        assert_eq!(v.first_broken.as_ref().map(|b| b.0), Some(2), "{v:?}");
    }

    /// The journal's records, without the zeros written ahead of them.
    fn journal_text(path: &Path) -> String {
        std::fs::read_to_string(path)
            .expect("read journal")
            .trim_end_matches('\0')
            .to_string()
    }

    #[test]
    fn journal_is_the_durable_copy_and_tampering_with_it_is_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let jpath = journal_path(&path);
        let mut s = Store::open(&path).expect("open");
        s.append(&(1..=4).map(rec).collect::<Vec<_>>())
            .expect("append");
        // Records durable in the journal but not yet indexed (the index thread was behind when
        // the process died): readers see them, the next writer indexes them.
        let mut journal = s.take_journal().expect("journal");
        journal.append(&[rec(5), rec(6)]).expect("journal append");
        drop(journal);
        drop(s);
        let r = Store::open_read_only(&path).expect("read");
        assert_eq!(r.count().expect("count"), 6);
        assert_eq!(r.head_seq(), 6);
        let q = r
            .query(&Filter {
                user_ref: Some(user_ref("U6")),
                ..Default::default()
            })
            .expect("query");
        assert_eq!(q.len(), 1, "an unindexed record is found");
        assert_eq!(r.verify().expect("verify").first_broken, None);
        // A torn last line (a crash mid-write, never acknowledged) is dropped on open.
        let mut text = journal_text(&jpath);
        let intact = text.len();
        text.push_str("[7,1800000000007,\"Sco");
        std::fs::write(&jpath, &text).expect("write");
        assert_eq!(
            Store::open_read_only(&path)
                .expect("read")
                .count()
                .expect("count"),
            6
        );
        let mut s = Store::open(&path).expect("reopen");
        assert_eq!(s.head_seq(), 6);
        assert_eq!(journal_text(&jpath).len(), intact, "the torn line is gone");
        s.append(&[rec(7)]).expect("append");
        let v = s.verify().expect("verify");
        assert_eq!((v.records, v.first_broken), (7, None));
        drop(s);
        // Altering one record in the journal breaks the chain there.
        let text = journal_text(&jpath);
        std::fs::write(&jpath, text.replacen("\"r-3\"", "\"r-X\"", 1)).expect("write");
        let v = Store::open_read_only(&path)
            .expect("read")
            .verify()
            .expect("verify");
        assert_eq!(v.first_broken.as_ref().map(|b| b.0), Some(3), "{v:?}");
        // Restored, then a record removed from the journal.
        std::fs::write(&jpath, &text).expect("restore");
        assert_eq!(
            Store::open_read_only(&path)
                .expect("read")
                .verify()
                .expect("verify")
                .first_broken,
            None
        );
        let lines: Vec<&str> = text.lines().collect();
        let without_2: String = lines
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != 1)
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        std::fs::write(&jpath, without_2).expect("write");
        let v = Store::open_read_only(&path)
            .expect("read")
            .verify()
            .expect("verify");
        assert_eq!(v.first_broken.as_ref().map(|b| b.0), Some(2), "{v:?}");
        // The server would refuse to start on it rather than extend a damaged log.
        std::fs::write(&jpath, &text[..text.len() / 2]).expect("cut");
        assert!(
            Store::open(&path).is_err(),
            "a journal shorter than the index"
        );
    }

    #[test]
    fn commits_across_block_boundaries_read_back_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let mut s = Store::open(&path).expect("open");
        let mut n = 0i64;
        for batch in (1..=40).map(|i| i % 17 + 1) {
            s.append(&(n + 1..=n + batch).map(rec).collect::<Vec<_>>())
                .expect("append");
            n += batch;
        }
        drop(s);
        let mut s = Store::open(&path).expect("reopen");
        s.append(&[rec(n + 1)]).expect("append");
        n += 1;
        drop(s);
        let text = journal_text(&journal_path(&path));
        assert!(text.len() > 3 * 4096, "spans blocks: {} bytes", text.len());
        assert_eq!(text.lines().count() as i64, n);
        let r = Store::open_read_only(&path).expect("read");
        let v = r.verify().expect("verify");
        assert_eq!((v.records as i64, v.first_broken), (n, None));
        let all = r.query(&Filter::default()).expect("query");
        assert_eq!(
            all.iter()
                .map(|s| s.record.request_id.clone())
                .collect::<Vec<_>>(),
            (1..=n).map(|i| format!("r-{i}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_pre_journal_log_gets_its_journal_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let mut s = Store::open(&path).expect("open");
        s.append(&(1..=3).map(rec).collect::<Vec<_>>())
            .expect("append");
        drop(s);
        // What a log written before the journal looked like: the SQLite file alone.
        std::fs::remove_file(journal_path(&path)).expect("rm journal");
        let c = Connection::open(&path).expect("conn");
        c.execute("DROP TABLE audit_meta", []).expect("drop meta");
        drop(c);
        let r = Store::open_read_only(&path).expect("read");
        assert_eq!(r.count().expect("count"), 3);
        assert_eq!(r.verify().expect("verify").first_broken, None);
        let mut s = Store::open(&path).expect("migrate");
        s.append(&[rec(4)]).expect("append");
        let v = s.verify().expect("verify");
        assert_eq!((v.records, v.first_broken), (4, None));
        assert_eq!(journal_text(&journal_path(&path)).lines().count(), 4);
    }

    #[test]
    fn a_lost_index_is_rebuilt_from_the_journal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let mut s = Store::open(&path).expect("open");
        s.append(&(1..=5).map(rec).collect::<Vec<_>>())
            .expect("append");
        drop(s);
        // The on-call fix for a damaged index: remove it; the journal holds every record.
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let mut s = Store::open(&path).expect("rebuild");
        assert_eq!(s.count().expect("count"), 5);
        s.append(&[rec(6)]).expect("append");
        let v = s.verify().expect("verify");
        assert_eq!((v.records, v.first_broken), (6, None));
    }

    #[test]
    fn the_index_fills_gaps_from_the_journal_and_skips_what_it_has() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let mut store = Store::open(&path).expect("open");
        let mut journal = store.take_journal().expect("journal");
        let mut durable = Vec::new();
        for i in 1..=12 {
            let stored = journal.append(&[rec(i)]).expect("append");
            durable.push((stored, journal.len()));
        }
        fn batch_of(durable: &[(Vec<StoredRecord>, u64)], from: usize, to: usize) -> Durable {
            let records = durable[from - 1..to]
                .iter()
                .flat_map(|(s, _)| s.clone())
                .collect();
            (records, durable[to - 1].1)
        }
        let (b, end) = batch_of(&durable, 1, 3);
        index_batch(&mut store, b, end).expect("index 1-3");
        assert_eq!((store.head_seq, store.count().expect("count")), (3, 3));
        // 4-5 never arrived (dropped while the index was behind): read from the journal.
        let (b, end) = batch_of(&durable, 6, 7);
        index_batch(&mut store, b, end).expect("index after a gap");
        assert_eq!(store.head_seq, 12, "caught up with the whole journal");
        assert_eq!(store.count().expect("count"), 12);
        // Batches still on their way: already indexed, skipped.
        let (b, end) = batch_of(&durable, 8, 12);
        index_batch(&mut store, b, end).expect("skip");
        assert_eq!(store.count().expect("count"), 12);
        // A gap inside a batch (two batches joined around a dropped one) is filled too.
        for i in 13..=16 {
            let stored = journal.append(&[rec(i)]).expect("append");
            durable.push((stored, journal.len()));
        }
        let mut joined = batch_of(&durable, 13, 13).0;
        joined.extend(batch_of(&durable, 15, 16).0);
        index_batch(&mut store, joined, durable[15].1).expect("index around a hole");
        assert_eq!(store.count().expect("count"), 16);
        drop(journal);
        let v = Store::open_read_only(&path)
            .expect("read")
            .verify()
            .expect("verify");
        assert_eq!((v.records, v.first_broken), (16, None));
    }

    #[test]
    fn the_index_queue_stops_taking_records_when_far_behind() {
        let (tx, rx) = std::sync::mpsc::channel();
        let queue = IndexQueue {
            tx,
            queued: Default::default(),
        };
        let stored = |n: usize| {
            (0..n)
                .map(|i| StoredRecord {
                    seq: i as i64 + 1,
                    record: rec(i as i64),
                    prev_hash: GENESIS.into(),
                    hash: GENESIS.into(),
                })
                .collect::<Vec<_>>()
        };
        queue.send(stored(INDEX_BACKLOG - 1), 1);
        queue.send(stored(2), 2); // over the bound: dropped
        queue.send(stored(1), 3);
        let got: Vec<u64> = rx.try_iter().map(|(_, end)| end).collect();
        assert_eq!(got, vec![1, 3]);
        assert_eq!(
            queue.queued.load(std::sync::atomic::Ordering::Relaxed),
            INDEX_BACKLOG
        );
    }

    #[test]
    fn one_writer_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let _s = Store::open(&path).expect("open");
        let e = Store::open(&path).err().expect("second writer refused");
        assert!(e.to_string().contains("locked"), "{e}");
    }

    #[test]
    fn a_failed_journal_write_leaves_nothing_and_is_reported() {
        if !Path::new("/dev/full").exists() {
            println!("skipped: no /dev/full to make writes fail");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        std::os::unix::fs::symlink("/dev/full", journal_path(&path)).expect("symlink");
        let mut s = Store::open(&path).expect("open");
        let e = s.append(&[rec(1)]).expect_err("disk full");
        assert!(matches!(e, AuditError::Write(_)), "{e}");
        assert_eq!(s.head_seq(), 0, "the head does not move");
        assert_eq!(s.count().expect("count"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_acks_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path, DEFAULT_COMMIT_INTERVAL).expect("open");
        let mut tasks = Vec::new();
        for i in 0..200 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move { log.record(rec(i)).await }));
        }
        for t in tasks {
            t.await.expect("task").expect("durable");
        }
        let s = Store::open_read_only(&path).expect("read");
        assert_eq!(s.count().expect("count"), 200);
        assert_eq!(s.verify().expect("verify").first_broken, None);
        assert!(AuditLog::disabled().record(rec(1)).await.is_ok());
        // The journal's progress is known once the calls are acknowledged; the index's follows.
        let progress = log.progress();
        let journal_seq = progress
            .journal_seq
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(journal_seq, 200);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while progress.index_lag() > 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(progress.index_lag(), 0, "the index did not catch up");
    }

    #[test]
    fn user_ref_hides_the_id() {
        let r = user_ref("U0004ecbcf3e8");
        assert_eq!(r.len(), 64);
        assert!(!r.contains("0004ecbcf3e8"));
        assert_eq!(r, user_ref(" U0004ecbcf3e8 "));
    }
}
