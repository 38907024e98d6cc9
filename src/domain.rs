//! Types shared by every stage of the data path (features → model → rules → service/batch).
//! Kept free of polars, linfa and tonic so that each layer can depend on it.

use serde::{Deserialize, Serialize};

/// The dimension a feature (and its points) belongs to. Sub-scores are reported per dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    /// Transaction and credit history: repayments, bills, lateness, spending.
    Transaction,
    /// Behaviour: logins, devices, addresses, night activity.
    Behavior,
    /// Relationship graph: contacts, transfers, shared devices, neighbours' risk.
    Relationship,
    /// Identity facts: verification, age, tenure.
    Identity,
    /// Capacity: income, social-security and housing-fund contributions.
    Capacity,
}

impl Dimension {
    pub const ALL: [Dimension; 5] = [
        Dimension::Transaction,
        Dimension::Behavior,
        Dimension::Relationship,
        Dimension::Identity,
        Dimension::Capacity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Transaction => "transaction",
            Dimension::Behavior => "behavior",
            Dimension::Relationship => "relationship",
            Dimension::Identity => "identity",
            Dimension::Capacity => "capacity",
        }
    }
}

impl std::str::FromStr for Dimension {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dimension::ALL
            .into_iter()
            .find(|d| d.as_str() == s)
            .ok_or_else(|| format!("unknown dimension '{s}' (expected one of transaction, behavior, relationship, identity, capacity)"))
    }
}

/// One feature value of one user. Missing is a value of its own: the model bins it separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FeatureValue {
    Missing,
    Num(f64),
    Cat(String),
}

impl FeatureValue {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            FeatureValue::Num(v) if v.is_finite() => Some(*v),
            _ => None,
        }
    }
}

impl std::fmt::Display for FeatureValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FeatureValue::Missing => write!(f, "missing"),
            FeatureValue::Num(v) if v.fract() == 0.0 && v.abs() < 1e15 => {
                write!(f, "{}", *v as i64)
            }
            FeatureValue::Num(v) => {
                // Reason texts print values on every Score call, and `{:.4}` often falls back
                // to the slow Dragon4 path (~1 µs a value here). The same digits come from
                // integers when rounding v × 10⁴ is rounding v's exact value: v is exactly
                // m / 10⁴, or v × 10⁴ is small enough that its rounding error (< 1.2e-7) cannot
                // cross the half that it stays well clear of. Ties and near-ties, and big
                // values, go to the formatter.
                let x = v * 1e4;
                let m = x.round();
                let exact = m.abs() < 1e15 && m / 1e4 == *v;
                let clear_of_half = x.abs() < 1e9 && ((x - x.floor()) - 0.5).abs() > 1e-6;
                if exact || clear_of_half {
                    let a = (m as i64).unsigned_abs();
                    // `{:.4}` keeps the sign of a negative value that rounds to zero.
                    let sign = if *v < 0.0 { "-" } else { "" };
                    write!(f, "{sign}{}.{:04}", a / 10_000, a % 10_000)
                } else {
                    write!(f, "{v:.4}")
                }
            }
            FeatureValue::Cat(s) => write!(f, "{s}"),
        }
    }
}

/// A column of one feature over many users, as the model consumes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    Numeric(Vec<Option<f64>>),
    Categorical(Vec<Option<String>>),
}

impl ColumnValues {
    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Numeric(v) => v.len(),
            ColumnValues::Categorical(v) => v.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn value(&self, row: usize) -> FeatureValue {
        match self {
            ColumnValues::Numeric(v) => match v[row] {
                Some(x) if x.is_finite() => FeatureValue::Num(x),
                _ => FeatureValue::Missing,
            },
            ColumnValues::Categorical(v) => match &v[row] {
                Some(s) => FeatureValue::Cat(s.clone()),
                None => FeatureValue::Missing,
            },
        }
    }
}

/// Metadata of a feature: where it belongs and how an analyst reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureMeta {
    pub name: String,
    pub dimension: Dimension,
    pub description: String,
}

/// A named feature column.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureColumn {
    pub meta: FeatureMeta,
    pub values: ColumnValues,
}

/// A feature table in memory: one row per user, optional binary target (1 = bad / defaulted).
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub ids: Vec<String>,
    pub columns: Vec<FeatureColumn>,
    pub target: Option<Vec<u8>>,
}

impl Dataset {
    pub fn n_rows(&self) -> usize {
        self.ids.len()
    }
    pub fn column(&self, name: &str) -> Option<&FeatureColumn> {
        self.columns.iter().find(|c| c.meta.name == name)
    }
    /// The values of one row, in column order.
    pub fn row(&self, row: usize) -> Vec<FeatureValue> {
        self.columns.iter().map(|c| c.values.value(row)).collect()
    }
    /// Keep only the rows whose index satisfies `keep` (used for the fixed train/test split).
    pub fn filter_rows(&self, keep: impl Fn(usize) -> bool) -> Dataset {
        let idx: Vec<usize> = (0..self.n_rows()).filter(|&i| keep(i)).collect();
        Dataset {
            ids: idx.iter().map(|&i| self.ids[i].clone()).collect(),
            columns: self
                .columns
                .iter()
                .map(|c| FeatureColumn {
                    meta: c.meta.clone(),
                    values: match &c.values {
                        ColumnValues::Numeric(v) => {
                            ColumnValues::Numeric(idx.iter().map(|&i| v[i]).collect())
                        }
                        ColumnValues::Categorical(v) => {
                            ColumnValues::Categorical(idx.iter().map(|&i| v[i].clone()).collect())
                        }
                    },
                })
                .collect(),
            target: self
                .target
                .as_ref()
                .map(|t| idx.iter().map(|&i| t[i]).collect()),
        }
    }
}

/// Score bands on the 350–950 scale (Zhima's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Band {
    Poor,
    Fair,
    Good,
    VeryGood,
    Excellent,
}

impl Band {
    pub const ALL: [Band; 5] = [
        Band::Poor,
        Band::Fair,
        Band::Good,
        Band::VeryGood,
        Band::Excellent,
    ];

    /// Band of a score already clamped to 350–950.
    pub fn of(score: i32) -> Band {
        match score {
            i32::MIN..=549 => Band::Poor,
            550..=599 => Band::Fair,
            600..=649 => Band::Good,
            650..=699 => Band::VeryGood,
            _ => Band::Excellent,
        }
    }
    /// Inclusive score range of the band.
    pub fn range(self) -> (i32, i32) {
        match self {
            Band::Poor => (350, 549),
            Band::Fair => (550, 599),
            Band::Good => (600, 649),
            Band::VeryGood => (650, 699),
            Band::Excellent => (700, 950),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Band::Poor => "poor",
            Band::Fair => "fair",
            Band::Good => "good",
            Band::VeryGood => "very_good",
            Band::Excellent => "excellent",
        }
    }
}

pub const SCORE_MIN: i32 = 350;
pub const SCORE_MAX: i32 = 950;

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn bands_cover_the_scale_without_gaps() {
        for s in SCORE_MIN..=SCORE_MAX {
            let b = Band::of(s);
            let (lo, hi) = b.range();
            assert!(lo <= s && s <= hi, "{s} not in {b:?}");
        }
        assert_eq!(Band::of(649), Band::Good);
        assert_eq!(Band::of(650), Band::VeryGood);
        assert_eq!(Band::of(700), Band::Excellent);
    }

    #[test]
    fn numbers_print_as_four_decimals_exactly_like_the_formatter() {
        // The integer fast path must print what `{:.4}` prints, ties and negatives included.
        let mut values = vec![
            0.25, -0.25, 0.5, 1.5, 0.00005, -0.00005, 0.33335, 2.675, 1e-9, -1e-9,
        ];
        values.extend((-20_000..20_000).map(|k| k as f64 / 1e4 + 0.5e-4 * (k % 3) as f64));
        values.extend((1..2_000).map(|k| (k as f64).sqrt() * 1e-3));
        values.extend([123_456.789_01, -98_765.4321, 1e14 + 0.5, 3e14 / 7.0]);
        values.extend([-0.00001, -0.00004999, 0.00004999, 99_999.999_95, -1e5 / 3.0]);
        // Ratios and rates as features produce them, over many magnitudes, and values a hair
        // either side of a half at the fourth decimal.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(11);
        for _ in 0..200_000 {
            let num = rand::Rng::random_range(&mut rng, -50_000i64..50_000) as f64;
            let den = rand::Rng::random_range(&mut rng, 1i64..5_000) as f64;
            let scale = 10f64.powi(rand::Rng::random_range(&mut rng, -6..8));
            values.push(num / den * scale);
        }
        for k in -3_000i64..3_000 {
            let half = (k as f64 + 0.5) / 1e4;
            values.extend([half, half + 1e-12, half - 1e-12, half + 1e-10, half - 1e-10]);
        }
        for v in values {
            if v.fract() == 0.0 {
                continue; // whole numbers print without decimals
            }
            assert_eq!(FeatureValue::Num(v).to_string(), format!("{v:.4}"), "{v:e}");
        }
    }
}
