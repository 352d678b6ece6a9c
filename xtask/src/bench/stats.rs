//! Small statistics for benchmark samples: median, quartiles, spread.

use serde::Serialize;

/// Summary of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// First and third quartiles (linear interpolation between order statistics).
    pub q1: f64,
    pub q3: f64,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none (NaNs are ignored).
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        Some(Self {
            n: sorted.len(),
            median: quantile(&sorted, 0.5),
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            q1: quantile(&sorted, 0.25),
            q3: quantile(&sorted, 0.75),
        })
    }

    /// Interquartile range relative to the median: a rough noise figure
    /// (0.05 means the middle half of the runs lie within 5% of the median).
    pub fn relative_iqr(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.q3 - self.q1) / self.median.abs()
        }
    }
}

/// The median of `samples`, `None` when empty.
pub fn median(samples: &[f64]) -> Option<f64> {
    Summary::of(samples).map(|s| s.median)
}

/// Quantile `q` (0..=1) of sorted, non-empty data, interpolating linearly
/// between the two nearest order statistics.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// `a / b`, `None` when `b` is zero or either is not finite.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b != 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// Median of the pairwise ratios `traced[i] / base[i]`: with interleaved runs
/// each traced run is compared with the untraced run next to it, which
/// cancels slow drifts of the machine's load. Pairs up to the shorter slice.
pub fn paired_ratio(traced: &[f64], base: &[f64]) -> Option<f64> {
    let ratios: Vec<f64> = traced
        .iter()
        .zip(base)
        .filter_map(|(&t, &b)| ratio(t, b))
        .collect();
    median(&ratios)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_and_even() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn summary_quartiles() {
        let s = Summary::of(&[5.0, 1.0, 4.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.n, s.min, s.max, s.median), (5, 1.0, 5.0, 3.0));
        assert_eq!((s.q1, s.q3), (2.0, 4.0));
        assert!((s.relative_iqr() - 2.0 / 3.0).abs() < 1e-12);
        let s = Summary::of(&[1.0, 2.0]).unwrap();
        assert_eq!((s.q1, s.median, s.q3), (1.25, 1.5, 1.75));
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(3.0, 2.0), Some(1.5));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(ratio(f64::INFINITY, 1.0), None);
        // Pairs (2/1, 3/2, 8/4): median 2; the extra traced run is ignored.
        assert_eq!(
            paired_ratio(&[2.0, 3.0, 8.0, 9.0], &[1.0, 2.0, 4.0]),
            Some(2.0)
        );
        assert_eq!(paired_ratio(&[2.0, 3.0, 6.0], &[1.0, 2.0, 4.0]), Some(1.5));
        assert_eq!(paired_ratio(&[], &[1.0]), None);
    }
}
