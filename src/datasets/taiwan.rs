//! Loader for the UCI "default of credit card clients" data (Taiwan, 2005; 30,000 card
//! holders). Maps each holder onto the generated layout: `users`, `transactions`
//! (monthly statements and payments) and `labels`. See `datasets/README.md`.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use super::schema;
use super::util::{
    col_bool, col_date_opt, col_f64, col_i32, col_i32_opt, col_i64, col_str, col_str_opt, col_ts,
    day_number, ymd_day, StagedDir, TableWriter, MS_PER_DAY,
};
use super::DatasetError;

/// Observation date: the day after the most recent month (September 2005).
pub fn taiwan_as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2005, 10, 1).expect("valid date")
}
/// Statements are issued on this day of the month, at noon…
pub const STATEMENT_DOM: u32 = 5;
/// …payments are booked on this day at noon…
pub const PAYMENT_DOM: u32 = 20;
/// …and are due on this day.
pub const DUE_DOM: u32 = 25;

#[derive(Debug, Clone)]
pub struct TaiwanSummary {
    pub out: PathBuf,
    pub users: u64,
    pub transactions: u64,
    pub defaults: u64,
    pub default_rate: f64,
}

impl fmt::Display for TaiwanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "loaded {} Taiwan card holders -> {}: transactions={} defaults={} default_rate={:.2}%",
            self.users,
            self.out.display(),
            self.transactions,
            self.defaults,
            100.0 * self.default_rate
        )
    }
}

struct Holder {
    id: i64,
    limit_bal: f64,
    sex: i32,
    education: i32,
    marriage: i32,
    /// Null when the file has no value (the shipped copy has `nan` for two holders).
    age: Option<i32>,
    /// Index 0 = September (PAY_0), 5 = April (PAY_6).
    pay: [i32; 6],
    bill: [f64; 6],
    paid_amt: [f64; 6],
    defaulted: bool,
}

const PAY_COLS: [&str; 6] = ["PAY_0", "PAY_2", "PAY_3", "PAY_4", "PAY_5", "PAY_6"];

fn parse_csv(path: &Path) -> Result<Vec<Holder>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::io(path, e))?;
    let csv_err = |line: usize, reason: String| DatasetError::Csv {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate();
    let (_, header) = lines
        .next()
        .ok_or_else(|| csv_err(1, "empty file".into()))?;
    let names: Vec<&str> = header
        .split(',')
        .map(|s| s.trim().trim_matches('"'))
        .collect();
    let col = |name: &str| {
        names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .ok_or_else(|| csv_err(1, format!("missing column {name}")))
    };
    let c_id = col("ID")?;
    let c_limit = col("LIMIT_BAL")?;
    let c_sex = col("SEX")?;
    let c_edu = col("EDUCATION")?;
    let c_mar = col("MARRIAGE")?;
    let c_age = col("AGE")?;
    let c_pay: Vec<usize> = PAY_COLS.iter().map(|n| col(n)).collect::<Result<_, _>>()?;
    let c_bill: Vec<usize> = (1..=6)
        .map(|k| col(&format!("BILL_AMT{k}")))
        .collect::<Result<_, _>>()?;
    let c_pamt: Vec<usize> = (1..=6)
        .map(|k| col(&format!("PAY_AMT{k}")))
        .collect::<Result<_, _>>()?;
    let c_y = col("default.payment.next.month").or_else(|_| col("default payment next month"))?;

    let mut out = Vec::with_capacity(30_000);
    let mut seen = HashSet::new();
    for (ln, line) in lines {
        let line_no = ln + 1;
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line
            .split(',')
            .map(|s| s.trim().trim_matches('"'))
            .collect();
        if fields.len() != names.len() {
            return Err(csv_err(
                line_no,
                format!("expected {} fields, found {}", names.len(), fields.len()),
            ));
        }
        // Numbers may be written in scientific notation ("2.00E+05"); missing values are
        // accepted only where the schema is nullable (AGE).
        let num = |c: usize| -> Result<f64, DatasetError> {
            if is_missing(fields[c]) {
                return Err(csv_err(
                    line_no,
                    format!("column {}: missing value", names[c]),
                ));
            }
            fields[c]
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| {
                    csv_err(
                        line_no,
                        format!("column {}: '{}' is not a number", names[c], fields[c]),
                    )
                })
        };
        let int = |c: usize| -> Result<i64, DatasetError> {
            let v = num(c)?;
            if v.fract() != 0.0 || v.abs() > 1e15 {
                return Err(csv_err(
                    line_no,
                    format!("column {}: '{}' is not an integer", names[c], fields[c]),
                ));
            }
            Ok(v as i64)
        };
        let small = |c: usize| -> Result<i32, DatasetError> {
            let v = int(c)?;
            i32::try_from(v)
                .map_err(|_| csv_err(line_no, format!("column {}: {v} out of range", names[c])))
        };
        let id = int(c_id)?;
        if !seen.insert(id) {
            return Err(csv_err(line_no, format!("duplicate ID {id}")));
        }
        let mut pay = [0i32; 6];
        let mut bill = [0f64; 6];
        let mut paid_amt = [0f64; 6];
        for k in 0..6 {
            pay[k] = small(c_pay[k])?;
            if !(-2..=9).contains(&pay[k]) {
                return Err(csv_err(
                    line_no,
                    format!("column {}: status {} outside -2..=9", PAY_COLS[k], pay[k]),
                ));
            }
            bill[k] = num(c_bill[k])?;
            paid_amt[k] = num(c_pamt[k])?;
            if paid_amt[k] < 0.0 {
                return Err(csv_err(
                    line_no,
                    format!("column PAY_AMT{}: negative payment {}", k + 1, paid_amt[k]),
                ));
            }
        }
        let y = int(c_y)?;
        if y != 0 && y != 1 {
            return Err(csv_err(line_no, format!("default flag {y} is not 0 or 1")));
        }
        out.push(Holder {
            id,
            limit_bal: num(c_limit)?,
            sex: small(c_sex)?,
            education: small(c_edu)?,
            marriage: small(c_mar)?,
            age: if is_missing(fields[c_age]) {
                None
            } else {
                Some(small(c_age)?)
            },
            pay,
            bill,
            paid_amt,
            defaulted: y == 1,
        });
    }
    if out.is_empty() {
        return Err(csv_err(2, "no data rows".into()));
    }
    Ok(out)
}

fn is_missing(s: &str) -> bool {
    s.is_empty()
        || ["nan", "na", "null", "none"]
            .iter()
            .any(|m| s.eq_ignore_ascii_case(m))
}

/// Month index k (0 = September 2005 … 5 = April 2005) → zero-based month of 2005.
fn month0(k: usize) -> i32 {
    8 - k as i32
}

/// Load the CSV and write `users`, `transactions` and `labels` to `out` (atomically).
pub fn load_taiwan(csv: &Path, out: &Path) -> Result<TaiwanSummary, DatasetError> {
    if !csv.is_file() {
        return Err(DatasetError::InvalidArgument(format!(
            "--csv {} is not a readable file",
            csv.display()
        )));
    }
    let mut holders = parse_csv(csv)?;
    let staged = StagedDir::new(out)?;
    let dir = staged.path().to_path_buf();
    let as_of = day_number(taiwan_as_of());

    // Same ordering rule as the generated tables: by user_id (a string), then ts.
    let ids: Vec<String> = holders.iter().map(|h| h.id.to_string()).collect();
    let mut order: Vec<usize> = (0..holders.len()).collect();
    order.sort_by(|&a, &b| ids[a].cmp(&ids[b]));
    let ids: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
    let holders: Vec<Holder> = {
        let mut slots: Vec<Option<Holder>> = holders.drain(..).map(Some).collect();
        order
            .iter()
            .map(|&i| slots[i].take().expect("each index used once"))
            .collect()
    };

    let mut w = TableWriter::create(&dir, "users", schema::taiwan_users())?;
    w.write(vec![
        col_str("user_id", ids.iter().map(|s| s.as_str())),
        col_i64("id", holders.iter().map(|h| h.id).collect()),
        col_f64("limit_bal", holders.iter().map(|h| h.limit_bal).collect()),
        col_i32("sex", holders.iter().map(|h| h.sex).collect()),
        col_i32("education", holders.iter().map(|h| h.education).collect()),
        col_i32("marriage", holders.iter().map(|h| h.marriage).collect()),
        col_i32_opt("age", &holders.iter().map(|h| h.age).collect::<Vec<_>>()),
    ])?;
    w.finish()?;

    let mut w = TableWriter::create(&dir, "labels", schema::labels())?;
    w.write(vec![
        col_str("user_id", ids.iter().map(|s| s.as_str())),
        col_bool(
            "defaulted",
            &holders.iter().map(|h| h.defaulted).collect::<Vec<_>>(),
        ),
    ])?;
    w.finish()?;

    // Transactions: per holder and month (oldest first, so ts ascends), a statement row and,
    // if non-zero, a payment row.
    let mut t_user: Vec<usize> = Vec::new();
    let mut t_ts: Vec<i64> = Vec::new();
    let mut t_kind: Vec<&'static str> = Vec::new();
    let mut t_amount: Vec<f64> = Vec::new();
    let mut t_due: Vec<Option<i32>> = Vec::new();
    let mut t_paid: Vec<Option<i32>> = Vec::new();
    let mut t_status: Vec<Option<i32>> = Vec::new();
    for (u, h) in holders.iter().enumerate() {
        for k in (0..6).rev() {
            let m = month0(k);
            let statement = ymd_day(2005, m, STATEMENT_DOM);
            let payment = ymd_day(2005, m, PAYMENT_DOM);
            let due = ymd_day(2005, m, DUE_DOM);
            let status = h.pay[k];
            // status ≥ 1: paid `status` months late, unknown (null) if that is not before as-of.
            let paid = if status >= 1 {
                Some(ymd_day(2005, m + status, DUE_DOM)).filter(|&d| d < as_of)
            } else {
                Some(due)
            };
            t_user.push(u);
            t_ts.push(statement as i64 * MS_PER_DAY + MS_PER_DAY / 2);
            t_kind.push("card_statement");
            t_amount.push(h.bill[k]);
            t_due.push(Some(due));
            t_paid.push(paid);
            t_status.push(Some(status));
            if h.paid_amt[k] > 0.0 {
                t_user.push(u);
                t_ts.push(payment as i64 * MS_PER_DAY + MS_PER_DAY / 2);
                t_kind.push("card_payment");
                t_amount.push(h.paid_amt[k]);
                t_due.push(None);
                t_paid.push(None);
                t_status.push(None);
            }
        }
    }
    let mut w = TableWriter::create(&dir, "transactions", schema::taiwan_transactions())?;
    w.write(vec![
        col_str("user_id", t_user.iter().map(|&u| ids[u].as_str())),
        col_ts("ts", t_ts),
        col_str("kind", t_kind.iter().copied()),
        col_f64("amount", t_amount),
        col_str_opt("merchant_category", t_user.iter().map(|_| None)),
        col_date_opt("due_date", &t_due),
        col_date_opt("paid_date", &t_paid),
        col_i32_opt("repayment_status", &t_status),
    ])?;
    let n_tx = w.finish()?;

    staged.commit()?;
    let defaults = holders.iter().filter(|h| h.defaulted).count() as u64;
    Ok(TaiwanSummary {
        out: out.to_path_buf(),
        users: holders.len() as u64,
        transactions: n_tx,
        defaults,
        default_rate: defaults as f64 / holders.len() as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasets::util::date_of;

    #[test]
    fn months_map_september_first_back_to_april() {
        assert_eq!(
            date_of(ymd_day(2005, month0(0), DUE_DOM)),
            NaiveDate::from_ymd_opt(2005, 9, 25).unwrap()
        );
        assert_eq!(
            date_of(ymd_day(2005, month0(5), STATEMENT_DOM)),
            NaiveDate::from_ymd_opt(2005, 4, 5).unwrap()
        );
    }

    #[test]
    fn malformed_csv_reports_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.csv");
        std::fs::write(&p, "ID,LIMIT_BAL\n1,abc\n").unwrap();
        let err = parse_csv(&p).err().expect("must fail");
        assert!(err.to_string().contains("missing column"), "{err}");
    }

    const HEADER: &str = "ID,LIMIT_BAL,SEX,EDUCATION,MARRIAGE,AGE,PAY_0,PAY_2,PAY_3,PAY_4,PAY_5,PAY_6,BILL_AMT1,BILL_AMT2,BILL_AMT3,BILL_AMT4,BILL_AMT5,BILL_AMT6,PAY_AMT1,PAY_AMT2,PAY_AMT3,PAY_AMT4,PAY_AMT5,PAY_AMT6,default.payment.next.month";

    #[test]
    fn scientific_notation_and_missing_age_are_read_but_other_gaps_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        let good = format!(
            "{HEADER}\n1,2.00E+05,2,2,1,nan,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689,0,0,0,0,1\n"
        );
        std::fs::write(&p, good).unwrap();
        let h = parse_csv(&p).unwrap();
        assert_eq!(h[0].limit_bal, 200_000.0);
        assert_eq!(h[0].age, None);
        assert_eq!(h[0].pay[0], 2);
        let bad = format!(
            "{HEADER}\n1,nan,2,2,1,30,2,2,-1,-1,-2,-2,3913,3102,689,0,0,0,0,689,0,0,0,0,1\n"
        );
        std::fs::write(&p, bad).unwrap();
        let err = parse_csv(&p)
            .err()
            .expect("missing LIMIT_BAL must fail")
            .to_string();
        assert!(err.contains("line 2") && err.contains("LIMIT_BAL"), "{err}");
    }
}
