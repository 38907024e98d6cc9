//! Per-user aggregates of a table whose rows arrive grouped by the key (`event_rows` sorts them).
//!
//! Why not polars' group-by: on a sorted key it aggregates each user by cutting a new
//! `ChunkedArray` out of the column, per user and per feature (`_slice_from_offsets`, with its
//! boxing, metadata and frees), and that bookkeeping cost more than the sums themselves (stop 31's
//! profile: ~27 % of a 1M-user batch in per-user aggregation, mostly per-group overhead). Here the
//! user's rows are found once per table and every feature reads its values through a plain arrow
//! slice. Each value is polars' own: the same polars-compute kernel on the same slice (pairwise
//! float sum, min/max ignoring NaN, the variance state) with the same special cases for one-row
//! groups, so every path (online, chunked batch, training) gets the values polars gave before,
//! bit for bit; `tests` below compares every kernel with polars' group-by on random data.

use polars::prelude::*;
use polars_arrow::array::{Array, BooleanArray, PrimitiveArray};
use polars_arrow::bitmap::utils::count_zeros;
use polars_compute::float_sum::sum_arr_as_f64;
use polars_compute::min_max::MinMaxKernel;
use polars_compute::moment::{var, VarState};
use polars_core::runtime::RAYON;
use rayon::prelude::*;

/// What a feature computes over its user's rows, each matching one polars group aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kernel {
    /// True values of a boolean mask (`mask.sum()`).
    Count,
    /// Sum of the non-null values, 0 when there are none (`sum()`).
    Sum,
    /// `mean()`: null when no value.
    Mean,
    /// `max()` / `min()`, ignoring NaN unless all are NaN.
    Max,
    Min,
    /// Sample standard deviation (`std(1)`): null below two values.
    Std,
    /// Distinct non-null values (`drop_nulls().n_unique()`).
    NUnique,
    /// Whether any value is true (`any(false)`: Kleene logic on nulls).
    Any,
}

impl Kernel {
    pub(super) fn output_type(self) -> DataType {
        match self {
            Kernel::Count | Kernel::NUnique => IDX_DTYPE,
            Kernel::Any => DataType::Boolean,
            Kernel::Sum | Kernel::Mean | Kernel::Max | Kernel::Min | Kernel::Std => {
                DataType::Float64
            }
        }
    }
}

/// One output column: `kernel` over the row column `input` on the rows where the boolean column
/// `mask` is true (all rows without one), named `output`.
#[derive(Clone, Debug)]
pub(super) struct Aggregation {
    pub input: PlSmallStr,
    pub mask: Option<PlSmallStr>,
    pub kernel: Kernel,
    pub output: PlSmallStr,
}

/// One row per key run of `df` (the key, then each aggregation's column), in key order. The rows
/// must be grouped by `key`, a text column, in ascending order with nulls first (a stable sort by
/// the key leaves them so); anything else is refused rather than aggregated wrongly.
pub(super) fn aggregate_grouped(
    df: DataFrame,
    key: &str,
    aggregations: &[Aggregation],
) -> PolarsResult<DataFrame> {
    let keys = df.column(key)?.as_materialized_series().rechunk();
    let runs = key_runs(keys.str()?)?;
    if runs.is_empty() {
        let mut columns = vec![keys.into_column()];
        for a in aggregations {
            columns.push(Column::new_empty(a.output.clone(), &a.kernel.output_type()));
        }
        return DataFrame::new(0, columns);
    }
    let starts: Vec<IdxSize> = runs.iter().map(|r| r[0]).collect();
    let mut columns = vec![keys.take_slice(&starts)?.into_column()];
    let computed: PolarsResult<Vec<Column>> = RAYON.install(|| {
        aggregations
            .par_iter()
            .map(|a| aggregate(&df, a, &runs))
            .collect()
    });
    columns.extend(computed?);
    DataFrame::new(runs.len(), columns)
}

/// `[first row, row count]` of each run of equal keys.
fn key_runs(keys: &StringChunked) -> PolarsResult<Vec<[IdxSize; 2]>> {
    let mut runs: Vec<[IdxSize; 2]> = Vec::new();
    let mut previous: Option<Option<&str>> = None;
    for (row, k) in keys.iter().enumerate() {
        let row = row as IdxSize;
        match previous {
            Some(p) if p == k => {
                if let Some(last) = runs.last_mut() {
                    last[1] += 1;
                }
            }
            Some(p) if p > k => {
                polars_bail!(ComputeError: "rows are not grouped by the key (row {row})")
            }
            _ => runs.push([row, 1]),
        }
        previous = Some(k);
    }
    Ok(runs)
}

fn aggregate(df: &DataFrame, a: &Aggregation, runs: &[[IdxSize; 2]]) -> PolarsResult<Column> {
    let mut s = df.column(&a.input)?.as_materialized_series().rechunk();
    if let Some(mask) = &a.mask {
        s = masked(&s, df.column(mask)?.as_materialized_series())?;
    }
    let name = a.output.clone();
    let out = match a.kernel {
        Kernel::Count => {
            let arr = one_bool_array(&s)?;
            let counts: Vec<IdxSize> = runs
                .iter()
                .map(|&[first, len]| count_true(arr, first as usize, len as usize))
                .collect();
            IdxCa::from_vec(name, counts).into_series()
        }
        Kernel::Any => {
            let arr = one_bool_array(&s)?;
            runs.iter()
                .map(|&[first, len]| any_kleene(arr, first as usize, len as usize))
                .collect::<BooleanChunked>()
                .with_name(name)
                .into_series()
        }
        Kernel::Sum => {
            let arr = one_f64_array(&s)?;
            let sums: Vec<f64> = runs
                .iter()
                .map(|&[first, len]| run_sum(arr, first as usize, len as usize))
                .collect();
            Float64Chunked::from_vec(name, sums).into_series()
        }
        Kernel::Mean | Kernel::Max | Kernel::Min | Kernel::Std => {
            let arr = one_f64_array(&s)?;
            runs.iter()
                .map(|&[first, len]| f64_kernel(a.kernel, arr, first as usize, len as usize))
                .collect::<Float64Chunked>()
                .with_name(name)
                .into_series()
        }
        Kernel::NUnique => n_unique_per_run(&s, runs)?.with_name(name).into_series(),
    };
    Ok(out.into_column())
}

/// Polars' float sum adds a slice shorter than this one value after another; longer ones in
/// pairwise blocks (`polars_compute::float_sum`).
const PAIRWISE_BLOCK: usize = 128;

/// `ChunkedArray::sum` of one run, as polars' `agg_sum` computes it for a slice group.
fn run_sum(arr: &PrimitiveArray<f64>, first: usize, len: usize) -> f64 {
    match len {
        0 => 0.0,
        1 => arr.get(first).unwrap_or(0.0),
        _ if len < PAIRWISE_BLOCK => match short_run_sum(arr, first, len) {
            (_, 0) => 0.0,
            (sum, _) => 0.0 + sum,
        },
        _ => {
            let group = arr.clone().sliced(first, len);
            // ChunkedArray::sum: 0 when all null, else 0 + the kernel's sum.
            if group.null_count() == group.len() {
                0.0
            } else {
                0.0 + sum_arr_as_f64(&group)
            }
        }
    }
}

/// `sum_arr_as_f64` of a run shorter than [`PAIRWISE_BLOCK`] without cutting an array out of the
/// column (that cut was most of the cost): no pairwise block, so 0 plus the values in row order,
/// a null adding 0, exactly as the kernel's remainder loop. Also the run's non-null count.
fn short_run_sum(arr: &PrimitiveArray<f64>, first: usize, len: usize) -> (f64, usize) {
    let values = &arr.values()[first..first + len];
    match arr.validity() {
        Some(valid) if valid.unset_bits() > 0 => {
            let (bytes, offset, _) = valid.as_slice();
            let non_null = len - count_zeros(bytes, offset + first, len);
            let rest: f64 = values
                .iter()
                .enumerate()
                .map(|(i, &x)| if valid.get_bit(first + i) { x } else { 0.0 })
                .sum();
            (0.0 + rest, non_null)
        }
        _ => (0.0 + values.iter().copied().sum::<f64>(), len),
    }
}

/// Mean, max, min or sample std of one run, as polars' `agg_*` computes it for a slice group.
fn f64_kernel(kernel: Kernel, arr: &PrimitiveArray<f64>, first: usize, len: usize) -> Option<f64> {
    match (kernel, len) {
        (_, 0) => None,
        (Kernel::Std, 1) => None,
        (_, 1) => arr.get(first),
        (Kernel::Mean, _) if len < PAIRWISE_BLOCK => match short_run_sum(arr, first, len) {
            (_, 0) => None,
            // ChunkedArray::mean: the chunks' sums summed, over the count.
            (sum, values) => Some(std::iter::once(sum).sum::<f64>() / values as f64),
        },
        _ => {
            let group = arr.clone().sliced(first, len);
            let values = len - group.null_count();
            match kernel {
                Kernel::Mean => (values > 0)
                    .then(|| std::iter::once(sum_arr_as_f64(&group)).sum::<f64>() / values as f64),
                Kernel::Max if values > 0 => group.max_ignore_nan_kernel(),
                Kernel::Min if values > 0 => group.min_ignore_nan_kernel(),
                Kernel::Std => {
                    let mut state = VarState::default();
                    state.combine(&var(&group));
                    state.finalize(1).map(f64::sqrt)
                }
                _ => None,
            }
        }
    }
}

fn count_true(arr: &BooleanArray, first: usize, len: usize) -> IdxSize {
    let trues = match arr.validity() {
        Some(valid) if valid.unset_bits() > 0 => {
            let values = arr.values().clone().sliced(first, len);
            (&values & &valid.clone().sliced(first, len)).set_bits()
        }
        _ => {
            let (bytes, offset, _) = arr.values().as_slice();
            len - count_zeros(bytes, offset + first, len)
        }
    };
    trues as IdxSize
}

fn any_kleene(arr: &BooleanArray, first: usize, len: usize) -> Option<bool> {
    let mut saw_null = false;
    for row in first..first + len {
        match arr.get(row) {
            Some(true) => return Some(true),
            None => saw_null = true,
            Some(false) => {}
        }
    }
    (!saw_null).then_some(false)
}

/// Distinct non-null values per run. Text (every n_unique of the demo pipeline) by sorting each
/// run's values in a reused buffer; other types through polars on the run's slice.
fn n_unique_per_run(s: &Series, runs: &[[IdxSize; 2]]) -> PolarsResult<IdxCa> {
    if let Ok(ca) = s.str() {
        let arr = single_chunk(ca.downcast_iter().next(), ca.chunks().len(), s.name())?;
        let mut seen: Vec<&str> = Vec::new();
        let counts: Vec<IdxSize> = runs
            .iter()
            .map(|&[first, len]| {
                seen.clear();
                let rows = first as usize..(first + len) as usize;
                seen.extend(rows.filter(|&i| arr.is_valid(i)).map(|i| arr.value(i)));
                seen.sort_unstable();
                seen.dedup();
                seen.len() as IdxSize
            })
            .collect();
        return Ok(IdxCa::from_vec(PlSmallStr::EMPTY, counts));
    }
    let counts = runs
        .iter()
        .map(|&[first, len]| {
            s.slice(first as i64, len as usize)
                .drop_nulls()
                .n_unique()
                .map(|n| n as IdxSize)
        })
        .collect::<PolarsResult<Vec<IdxSize>>>()?;
    Ok(IdxCa::from_vec(PlSmallStr::EMPTY, counts))
}

/// `values` null wherever `mask` is not true: what `when(mask).then(values).otherwise(null)`
/// holds, without copying the values (only the validity is new), so a table's aggregates no
/// longer write one masked copy per value and mask. (It did not lower the 1M batch's peak, and
/// its CPU gain was within noise: docs/batch.md, stop 32.)
fn masked(values: &Series, mask: &Series) -> PolarsResult<Series> {
    let mask = mask.rechunk();
    let mask = one_bool_array(&mask)?;
    let keep = match mask.validity() {
        Some(valid) => mask.values() & valid,
        None => mask.values().clone(),
    };
    let chunks = values.chunks();
    let chunk = single_chunk(chunks.first(), chunks.len(), values.name())?;
    let validity = match chunk.validity() {
        Some(valid) => &keep & valid,
        None => keep,
    };
    let chunk = chunk.with_validity(Some(validity));
    Series::try_from((values.name().clone(), chunk))
}

fn one_bool_array(s: &Series) -> PolarsResult<&BooleanArray> {
    let ca = s.bool()?;
    single_chunk(ca.downcast_iter().next(), ca.chunks().len(), s.name())
}

fn one_f64_array(s: &Series) -> PolarsResult<&PrimitiveArray<f64>> {
    let ca = s.f64()?;
    single_chunk(ca.downcast_iter().next(), ca.chunks().len(), s.name())
}

fn single_chunk<'a, A>(first: Option<&'a A>, chunks: usize, name: &str) -> PolarsResult<&'a A> {
    match (first, chunks) {
        (Some(arr), 1) => Ok(arr),
        _ => polars_bail!(ComputeError: "column '{name}' is not in one piece"),
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::super::pipeline::polars_aggregation;
    use super::*;

    /// Each kernel on a column, under a mask or not.
    const KERNELS: [(&str, Option<&str>, Kernel); 14] = [
        ("mask", None, Kernel::Count),
        ("x", None, Kernel::Sum),
        ("x", Some("mask"), Kernel::Sum),
        ("x", None, Kernel::Mean),
        ("x", Some("mask"), Kernel::Mean),
        ("x", None, Kernel::Max),
        ("x", Some("mask"), Kernel::Max),
        ("x", None, Kernel::Min),
        ("x", Some("mask"), Kernel::Min),
        ("x", None, Kernel::Std),
        ("x", Some("mask"), Kernel::Std),
        ("s", None, Kernel::NUnique),
        ("s", Some("mask"), Kernel::NUnique),
        ("mask", None, Kernel::Any),
    ];

    /// Rows grouped by key (runs of 1 to 300 rows, across the 128-row pairwise block; with
    /// `null_key`, the first run has a null key), with nulls, NaN, -0.0 and magnitudes far apart
    /// so that a sum in any other order comes out different.
    fn grouped_rows(seed: u64, null_key: bool) -> DataFrame {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let sizes = [3, 1, 2, 5, 127, 128, 129, 300, 1, 2, 40, 7, 255, 256, 1, 60];
        let (mut keys, mut xs, mut masks, mut strings) = (vec![], vec![], vec![], vec![]);
        for (group, &size) in sizes.iter().enumerate() {
            let all_null = group == 9;
            for _ in 0..size {
                keys.push((group > 0 || !null_key).then(|| format!("u{group:03}")));
                let x = match rng.random_range(0..10) {
                    _ if all_null => None,
                    0 => None,
                    1 => Some(f64::NAN),
                    2 => Some(-0.0),
                    3 => Some(rng.random_range(-1e16..1e16)),
                    _ => Some(rng.random_range(-100.0..100.0)),
                };
                xs.push(x);
                masks.push(match rng.random_range(0..8) {
                    0 => None,
                    n => Some(n % 2 == 0),
                });
                strings.push(match rng.random_range(0..6) {
                    0 => None,
                    n => Some(format!("d{}", n * (group % 3))),
                });
            }
        }
        df!("k" => keys, "x" => xs, "mask" => masks, "s" => strings).unwrap()
    }

    fn aggregations() -> Vec<Aggregation> {
        KERNELS
            .iter()
            .enumerate()
            .map(|(i, &(input, mask, kernel))| Aggregation {
                input: input.into(),
                mask: mask.map(PlSmallStr::from),
                kernel,
                output: format!("a{i}").into(),
            })
            .collect()
    }

    fn bits(c: &Column) -> Vec<Option<u64>> {
        let s = c.as_materialized_series();
        match s.dtype() {
            DataType::Float64 => s
                .f64()
                .unwrap()
                .iter()
                .map(|v| v.map(f64::to_bits))
                .collect(),
            DataType::Boolean => s.bool().unwrap().iter().map(|v| v.map(u64::from)).collect(),
            _ => s
                .cast(&DataType::UInt64)
                .unwrap()
                .u64()
                .unwrap()
                .iter()
                .collect(),
        }
    }

    #[test]
    fn every_kernel_equals_polars_group_by_bit_for_bit() {
        for seed in 0..8 {
            let rows = grouped_rows(seed, false);
            let mine = aggregate_grouped(rows.clone(), "k", &aggregations()).unwrap();
            // Polars as the pipeline ran it: the key flagged sorted (as `mark_if_sorted` and the
            // sort in `event_rows` leave it), so polars groups by slices. Unflagged, it hashes
            // the key into index lists instead, and sums and deviations add in another order.
            let mut flagged = rows.clone();
            let mut k = flagged.column("k").unwrap().clone();
            k.set_sorted_flag(polars::series::IsSorted::Ascending);
            flagged.replace("k", k).unwrap();
            // The masked columns as the pipeline makes them for polars' group-by: in a
            // `with_columns` before it, one per aggregation.
            let masked: Vec<Expr> = aggregations()
                .iter()
                .map(|a| {
                    let value = col(a.input.clone());
                    match &a.mask {
                        Some(m) => when(col(m.clone())).then(value).otherwise(lit(NULL)),
                        None => value,
                    }
                    .alias(format!("row_{}", a.output))
                })
                .collect();
            let polars = flagged
                .lazy()
                .with_columns(masked)
                .group_by([col("k")])
                .agg(
                    aggregations()
                        .iter()
                        .map(|a| {
                            polars_aggregation(col(format!("row_{}", a.output)), a.kernel)
                                .alias(a.output.clone())
                        })
                        .collect::<Vec<_>>(),
                )
                .sort(["k"], Default::default())
                .collect()
                .unwrap();
            assert_eq!(mine.height(), 16);
            assert_eq!(mine.get_column_names(), polars.get_column_names());
            for (a, b) in mine.columns().iter().zip(polars.columns()) {
                assert_eq!(a.dtype(), b.dtype(), "{}", a.name());
                if a.dtype() == &DataType::String {
                    assert!(a.equals_missing(b));
                } else {
                    assert_eq!(bits(a), bits(b), "seed {seed}, column {}", a.name());
                }
            }
        }
    }

    #[test]
    fn rows_with_a_null_key_are_a_run_of_their_own() {
        let rows = grouped_rows(1, true);
        let mine = aggregate_grouped(rows.clone(), "k", &aggregations()).unwrap();
        let without = grouped_rows(1, false);
        let theirs = aggregate_grouped(without, "k", &aggregations()).unwrap();
        assert_eq!(mine.height(), 16);
        assert_eq!(mine.column("k").unwrap().null_count(), 1);
        // The other users' values do not depend on whose rows come before theirs.
        for (a, b) in mine.columns().iter().zip(theirs.columns()).skip(1) {
            assert_eq!(bits(a)[1..], bits(b)[1..], "{}", a.name());
        }
    }

    #[test]
    fn rows_not_grouped_by_key_are_refused() {
        let rows = df!("k" => ["a", "b", "a"], "x" => [1.0, 2.0, 3.0]).unwrap();
        let sum = [Aggregation {
            input: "x".into(),
            mask: None,
            kernel: Kernel::Sum,
            output: "sum".into(),
        }];
        let err = aggregate_grouped(rows, "k", &sum).unwrap_err();
        assert!(err.to_string().contains("not grouped by the key"), "{err}");
    }

    #[test]
    fn no_rows_give_an_empty_table_of_the_output_types() {
        let rows = df!("k" => Vec::<String>::new(), "x" => Vec::<f64>::new(), "mask" => Vec::<bool>::new(), "s" => Vec::<String>::new()).unwrap();
        let out = aggregate_grouped(rows, "k", &aggregations()).unwrap();
        assert_eq!(out.height(), 0);
        let types: Vec<DataType> = out.dtypes();
        assert_eq!(types[1], IDX_DTYPE);
        assert_eq!(types[2], DataType::Float64);
        assert_eq!(types[14], DataType::Boolean);
    }
}
