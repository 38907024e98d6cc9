//! The query audit log: one record per Score call and per ScoreStream item, allowed or refused,
//! made durable before the answer leaves (docs/security.md).
//!
//! - [`Store`]: an SQLite file in WAL mode with `synchronous=FULL` (a commit is on disk when
//!   it returns). Records form a hash chain: `hash = SHA-256(prev_hash "\n" canonical)` where
//!   `canonical` is the record's fields (with its sequence number) as one JSON array; the first
//!   record's `prev_hash` is 64 zeros. Changing, removing or re-ordering a stored record breaks
//!   the chain at that record, which [`Store::verify`] reports.
//! - [`AuditLog`]: group commit. Handlers send records over a channel with a oneshot ack; one
//!   writer thread takes all that are waiting (up to [`MAX_BATCH`]), writes them in one
//!   transaction (one fsync), then acks them all. A call is answered only after its ack; if the
//!   write fails, the ack carries the error and the call fails instead of answering unrecorded.
//!
//! Users are stored only as [`user_ref`], a SHA-256 of the id: `sesame audit --user U` hashes
//! U the same way to find them.

pub mod cli;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// Most records written in one transaction.
pub const MAX_BATCH: usize = 1024;
/// Records waiting for the writer before senders wait.
const QUEUE: usize = 8192;
/// How long the writer lets a batch fill when calls are arriving concurrently. A commit costs
/// ~100 µs of CPU (WAL writes, fsync, file locks) whatever its size, so under load a slightly
/// later, larger commit is cheaper per call; a lone call (previous batch of one) never waits.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);
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
";

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

/// The audit file.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    head_seq: i64,
    head_hash: String,
}

impl Store {
    /// Opens (creating the file and its directory if needed) for appending.
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
        // FULL: every commit fsyncs the WAL, so an acknowledged record survives a power cut, not
        // only a crash. The larger page cache keeps the user index's leaves in memory.
        conn.execute_batch(
            "PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA cache_size=-65536;",
        )
        .and_then(|_| conn.execute_batch(SCHEMA))
        .map_err(|e| open_err(e.to_string()))?;
        Store::with_head(conn, path)
    }

    /// Opens an existing file for reading only (`sesame audit`; safe while a server writes).
    pub fn open_read_only(path: &Path) -> Result<Store, AuditError> {
        if !path.exists() {
            return Err(AuditError::Open {
                path: path.to_path_buf(),
                message: "no such file".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|c| c.execute_batch("PRAGMA busy_timeout=5000;").map(|_| c))
        .map_err(|e| AuditError::Open {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Store::with_head(conn, path)
    }

    fn with_head(conn: Connection, path: &Path) -> Result<Store, AuditError> {
        let head: Option<(i64, String)> = conn
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| AuditError::Open {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let (head_seq, head_hash) = head.unwrap_or((0, GENESIS.to_string()));
        Ok(Store {
            conn,
            path: path.to_path_buf(),
            head_seq,
            head_hash,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of the last record (0 when empty).
    pub fn head_seq(&self) -> i64 {
        self.head_seq
    }

    /// Appends `records` in one transaction (one fsync), chained after the head. On error
    /// nothing is written and the head stays where it was.
    pub fn append(&mut self, records: &[AuditRecord]) -> Result<(), AuditError> {
        let werr = |e: rusqlite::Error| AuditError::Write(e.to_string());
        let tx = self.conn.transaction().map_err(werr)?;
        let mut seq = self.head_seq;
        let mut hash = self.head_hash.clone();
        {
            let mut stmt = tx
                .prepare_cached(&format!(
                    "INSERT INTO audit ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
                ))
                .map_err(werr)?;
            for r in records {
                seq += 1;
                let next = chain_hash(&hash, &canonical(seq, r));
                stmt.execute(params![
                    seq,
                    r.ts_ms,
                    r.method,
                    r.partner,
                    r.user_ref,
                    r.scenario,
                    r.request_id,
                    r.decision,
                    r.model_version,
                    r.code,
                    hash,
                    next
                ])
                .map_err(werr)?;
                hash = next;
            }
        }
        tx.commit().map_err(werr)?;
        self.head_seq = seq;
        self.head_hash = hash;
        Ok(())
    }

    /// Recomputes the chain from the first record; stops at the first that does not verify.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))
            .map_err(read_err)?;
        let rows = stmt.query_map([], row_to_stored).map_err(read_err)?;
        let mut prev = GENESIS.to_string();
        let mut expect_seq = 1i64;
        let mut n = 0u64;
        for row in rows {
            let s = row.map_err(read_err)?;
            n += 1;
            let broken = if s.seq != expect_seq {
                Some(format!(
                    "sequence gap: expected record {expect_seq}, found {} (records removed)",
                    s.seq
                ))
            } else if s.prev_hash != prev {
                Some("prev_hash does not match the previous record's hash".to_string())
            } else if chain_hash(&prev, &canonical(s.seq, &s.record)) != s.hash {
                Some("contents do not match the record's hash (record altered)".to_string())
            } else {
                None
            };
            if let Some(why) = broken {
                return Ok(VerifyReport {
                    records: n,
                    head: String::new(),
                    first_broken: Some((s.seq, why)),
                });
            }
            prev = s.hash;
            expect_seq += 1;
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
        let mut stmt = self.conn.prepare(&sql).map_err(read_err)?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), row_to_stored)
            .map_err(read_err)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(read_err)
    }

    /// Number of records.
    pub fn count(&self) -> Result<u64, AuditError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM audit", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(read_err)
    }
}

type Ack = oneshot::Sender<Result<(), AuditError>>;

/// The handle the service writes through. Cheap to share; the writer thread ends when the last
/// handle is dropped.
#[derive(Debug, Clone)]
pub struct AuditLog {
    tx: Option<mpsc::Sender<(AuditRecord, Ack)>>,
}

impl AuditLog {
    /// Opens the store and starts the writer thread.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let store = Store::open(path)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sesame-audit".into())
            .spawn(move || writer(store, rx))
            .map_err(|e| AuditError::Open {
                path: path.to_path_buf(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(AuditLog { tx: Some(tx) })
    }

    /// No audit (benchmarks only; refused in production mode): [`AuditLog::record`] is a no-op.
    pub fn disabled() -> AuditLog {
        AuditLog { tx: None }
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Returns once `record` is durable, or with the reason it could not be written.
    pub async fn record(&self, record: AuditRecord) -> Result<(), AuditError> {
        let Some(tx) = &self.tx else { return Ok(()) };
        let (ack, done) = oneshot::channel();
        tx.send((record, ack))
            .await
            .map_err(|_| AuditError::Write("the audit writer has stopped".into()))?;
        done.await
            .map_err(|_| AuditError::Write("the audit writer has stopped".into()))?
    }
}

/// Group commit: everything waiting goes into one transaction; each ack after the commit.
fn writer(mut store: Store, mut rx: mpsc::Receiver<(AuditRecord, Ack)>) {
    let mut records = Vec::with_capacity(MAX_BATCH);
    let mut acks = Vec::with_capacity(MAX_BATCH);
    let mut concurrent = false;
    while let Some((r, a)) = rx.blocking_recv() {
        records.push(r);
        acks.push(a);
        if concurrent {
            std::thread::sleep(LINGER);
        }
        while records.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((r, a)) => {
                    records.push(r);
                    acks.push(a);
                }
                Err(_) => break,
            }
        }
        concurrent = records.len() > 1;
        let result = store.append(&records);
        if let Err(e) = &result {
            tracing::error!(error = %e, n = records.len(), "audit write failed; the calls fail");
        }
        for a in acks.drain(..) {
            let _ = a.send(result.clone());
        }
        records.clear();
    }
}

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
        assert_eq!(v.first_broken.as_ref().map(|b| b.0), Some(3), "{v:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn group_commit_acks_every_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(&path).expect("open");
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
    }

    #[test]
    fn user_ref_hides_the_id() {
        let r = user_ref("U0004ecbcf3e8");
        assert_eq!(r.len(), 64);
        assert!(!r.contains("0004ecbcf3e8"));
        assert_eq!(r, user_ref(" U0004ecbcf3e8 "));
    }
}
