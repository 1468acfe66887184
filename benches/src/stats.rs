//! Summaries over seeds (median and quartiles) and the CSV files the studies write.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{BenchError, Result};

/// The `q`-quantile of `values` with linear interpolation between order statistics (numpy's default), or
/// NaN for an empty slice. `q` is clamped to `[0, 1]`; NaNs are ignored.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = pos - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

/// Median and quartiles of one group of values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quartiles {
    /// 25th percentile.
    pub q25: f64,
    /// Median.
    pub median: f64,
    /// 75th percentile.
    pub q75: f64,
    /// Number of values.
    pub count: usize,
}

impl Quartiles {
    /// The quartiles of `values`.
    pub fn of(values: &[f64]) -> Self {
        Self {
            q25: quantile(values, 0.25),
            median: quantile(values, 0.5),
            q75: quantile(values, 0.75),
            count: values.len(),
        }
    }
}

/// Groups `(series, x, value)` triples by series and x (x compared by its bit pattern) and summarizes each
/// group. Returns `series → [(x, quartiles)]` with x ascending.
pub fn group_quartiles<'a>(
    items: impl IntoIterator<Item = (&'a str, f64, f64)>,
) -> BTreeMap<String, Vec<(f64, Quartiles)>> {
    let mut groups: BTreeMap<String, BTreeMap<u64, (f64, Vec<f64>)>> = BTreeMap::new();
    for (series, x, v) in items {
        groups.entry(series.to_string()).or_default().entry(x.to_bits()).or_insert((x, Vec::new())).1.push(v);
    }
    groups
        .into_iter()
        .map(|(k, xs)| {
            let mut rows: Vec<(f64, Quartiles)> =
                xs.into_values().map(|(x, v)| (x, Quartiles::of(&v))).collect();
            rows.sort_by(|a, b| a.0.total_cmp(&b.0));
            (k, rows)
        })
        .collect()
}

/// Writes `header` and `rows` as CSV to `path` (temporary name, then rename), creating the parent folder.
///
/// # Errors
/// [`BenchError::Io`] naming the file.
pub fn write_csv(path: &Path, header: &[&str], rows: &[Vec<String>]) -> Result<()> {
    let mut text = header.join(",");
    text.push('\n');
    for row in rows {
        text.push_str(&row.join(","));
        text.push('\n');
    }
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `path` (creating its folder) through a temporary file beside it and a rename, so an
/// interrupted study never leaves a half-written output under the final name.
///
/// # Errors
/// [`BenchError`] naming the file that could not be created, written or renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| BenchError::io(parent, e))?;
    }
    diem_fs::write_atomic(path, bytes).map_err(|e| BenchError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.5), 2.5);
        assert_eq!(quantile(&v, 0.25), 1.75);
        assert_eq!(quantile(&v, 0.75), 3.25);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(quantile(&[f64::NAN, 7.0], 0.5), 7.0);
    }

    #[test]
    fn groups_by_series_and_x() {
        let items = [("a", 1.0, 3.0), ("a", 1.0, 1.0), ("a", 0.5, 9.0), ("b", 1.0, 2.0), ("a", 1.0, 2.0)];
        let g = group_quartiles(items);
        assert_eq!(g["a"].len(), 2);
        assert_eq!(g["a"][0].0, 0.5);
        assert_eq!(g["a"][1].1.median, 2.0);
        assert_eq!(g["a"][1].1.count, 3);
        assert_eq!(g["b"][0].1.median, 2.0);
    }
}
