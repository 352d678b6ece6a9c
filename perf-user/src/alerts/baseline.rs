//! Robust statistics over a sliding time window: the median and the median
//! absolute deviation (MAD) for learned baselines, and the Theil–Sen slope
//! for rates of change.
//!
//! Why these and not mean and standard deviation, or a least-squares slope:
//! latency percentiles and heap sizes are spiky. One 2-second stall moves a
//! mean and a standard deviation far enough to hide the next real rise, and
//! one freed buffer tilts a least-squares line. The median, the MAD and the
//! median of pairwise slopes each ignore up to half of the points being
//! outliers.

use std::collections::VecDeque;

/// Scales a MAD to the standard deviation of normally distributed data, so
/// that `k` reads like a number of standard deviations.
pub const MAD_TO_SIGMA: f64 = 1.4826;

/// Most points kept per series, whatever the window: bounds memory (16 bytes
/// a point) and the Theil–Sen cost (n²/2 slopes).
pub const MAX_POINTS: usize = 720;

/// Time-stamped values (seconds, value) no older than `span` seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    points: VecDeque<(f64, f64)>,
    span: f64,
}

impl Series {
    /// An empty series that keeps `span` seconds of points.
    pub fn new(span: f64) -> Self {
        Self {
            points: VecDeque::new(),
            span: span.max(0.0),
        }
    }

    /// Adds a point at `t` and forgets points older than `t - span` (and the
    /// oldest beyond [`MAX_POINTS`]). Points must come in time order; one
    /// that does not (a clock step back) replaces the history, so that no
    /// slope is computed across the step.
    pub fn push(&mut self, t: f64, value: f64) {
        if !value.is_finite() {
            return;
        }
        if self.points.back().is_some_and(|&(last, _)| t < last) {
            self.points.clear();
        }
        self.points.push_back((t, value));
        self.trim(t);
    }

    /// Forgets points older than `now - span`.
    pub fn trim(&mut self, now: f64) {
        while self
            .points
            .front()
            .is_some_and(|&(t, _)| t < now - self.span)
        {
            self.points.pop_front();
        }
        while self.points.len() > MAX_POINTS {
            self.points.pop_front();
        }
    }

    /// Points held.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// True when no point is held.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The values, oldest first.
    pub fn values(&self) -> impl Iterator<Item = f64> + '_ {
        self.points.iter().map(|&(_, v)| v)
    }

    /// The points, oldest first.
    pub fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.points.iter().copied()
    }

    /// Seconds from the oldest to the newest point.
    pub fn duration(&self) -> f64 {
        match (self.points.front(), self.points.back()) {
            (Some(a), Some(b)) => b.0 - a.0,
            _ => 0.0,
        }
    }

    /// Median and MAD of the values.
    pub fn baseline(&self) -> Option<Baseline> {
        Baseline::of(self.values())
    }

    /// Theil–Sen slope of the points, value units per second.
    pub fn slope(&self) -> Option<f64> {
        let points: Vec<(f64, f64)> = self.points().collect();
        theil_sen(&points)
    }
}

/// Centre and spread of a set of values.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Baseline {
    /// The median.
    pub median: f64,
    /// The median absolute deviation from the median.
    pub mad: f64,
    /// How many values it was computed from.
    pub n: usize,
}

impl Baseline {
    /// The baseline of `values` (non-finite values are ignored); `None` when
    /// there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        let median = median(&mut v)?;
        let mut dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
        let mad = median_of(&mut dev).unwrap_or(0.0);
        Some(Self {
            median,
            mad,
            n: v.len(),
        })
    }

    /// The level above which a value is anomalous: `median + margin`, where
    /// the margin is the largest of `k` robust standard deviations,
    /// `min_delta`, and `(min_ratio - 1) * median`. The absolute and relative
    /// floors matter when the history is nearly constant (MAD 0): without
    /// them any jitter would count as an anomaly.
    pub fn upper_bound(&self, k: f64, min_delta: f64, min_ratio: f64) -> f64 {
        self.median + self.margin(k, min_delta, min_ratio)
    }

    /// `upper_bound - median`.
    pub fn margin(&self, k: f64, min_delta: f64, min_ratio: f64) -> f64 {
        let spread = k * MAD_TO_SIGMA * self.mad;
        let relative = (min_ratio - 1.0).max(0.0) * self.median.abs();
        spread.max(min_delta).max(relative)
    }
}

/// Median of `v` (sorted in place); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    median_of(v)
}

fn median_of(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Theil–Sen estimator: the median of the slopes between every pair of
/// points with distinct times. `None` with fewer than two distinct times.
pub fn theil_sen(points: &[(f64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, &(t1, v1)) in points.iter().enumerate() {
        for &(t2, v2) in &points[i + 1..] {
            let dt = t2 - t1;
            if dt.abs() > f64::EPSILON {
                slopes.push((v2 - v1) / dt);
            }
        }
    }
    median_of(&mut slopes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn median_and_mad_of_known_values() {
        let b = Baseline::of([1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert_eq!(b.median, 3.0);
        // Deviations 2, 1, 0, 1, 97: median 1.
        assert_eq!(b.mad, 1.0);
        assert_eq!(b.n, 5);
        assert_eq!(Baseline::of([2.0, 4.0]).unwrap().median, 3.0);
        assert!(Baseline::of([]).is_none());
        assert!(Baseline::of([f64::NAN]).is_none());
    }

    #[test]
    fn upper_bound_uses_the_largest_floor() {
        let flat = Baseline {
            median: 0.010,
            mad: 0.0,
            n: 20,
        };
        // MAD 0: the absolute floor decides.
        assert!((flat.upper_bound(5.0, 0.005, 1.0) - 0.015).abs() < 1e-12);
        // The relative floor: at least double.
        assert!((flat.upper_bound(5.0, 0.005, 2.0) - 0.020).abs() < 1e-12);
        let noisy = Baseline {
            median: 0.010,
            mad: 0.002,
            n: 20,
        };
        let b = noisy.upper_bound(5.0, 0.001, 1.0);
        assert!((b - (0.010 + 5.0 * MAD_TO_SIGMA * 0.002)).abs() < 1e-12);
    }

    #[test]
    fn theil_sen_ignores_an_outlier() {
        // 2 per second, with one wild point.
        let mut pts: Vec<(f64, f64)> = (0..10).map(|t| (t as f64, 2.0 * t as f64)).collect();
        pts[5].1 = 1_000.0;
        let s = theil_sen(&pts).unwrap();
        assert!((s - 2.0).abs() < 1e-9, "{s}");
        assert_eq!(theil_sen(&[(1.0, 5.0)]), None);
        assert_eq!(theil_sen(&[(1.0, 5.0), (1.0, 6.0)]), None);
    }

    #[test]
    fn series_forgets_old_points_and_survives_a_clock_step() {
        let mut s = Series::new(10.0);
        for t in 0..20 {
            s.push(t as f64, 1.0);
        }
        assert_eq!(s.len(), 11, "points from 9 to 19");
        assert_eq!(s.duration(), 10.0);
        s.push(5.0, 3.0);
        assert_eq!(s.len(), 1, "a step back starts afresh");
        s.push(6.0, f64::NAN);
        assert_eq!(s.len(), 1, "non-finite values are not kept");
    }

    #[test]
    fn series_is_capped() {
        let mut s = Series::new(1e9);
        for t in 0..(MAX_POINTS + 50) {
            s.push(t as f64, 0.0);
        }
        assert_eq!(s.len(), MAX_POINTS);
    }

    proptest! {
        #[test]
        fn median_is_within_the_values_and_splits_them(
            v in prop::collection::vec(-1e6f64..1e6, 1..200),
        ) {
            let b = Baseline::of(v.iter().copied()).unwrap();
            let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            prop_assert!(b.median >= lo && b.median <= hi);
            let below = v.iter().filter(|&&x| x <= b.median).count();
            let above = v.iter().filter(|&&x| x >= b.median).count();
            prop_assert!(below * 2 >= v.len() && above * 2 >= v.len());
            prop_assert!(b.mad >= 0.0);
        }

        #[test]
        fn baseline_shifts_and_scales_with_the_data(
            v in prop::collection::vec(-1e3f64..1e3, 1..100),
            shift in -1e3f64..1e3,
            scale in 0.01f64..100.0,
        ) {
            let a = Baseline::of(v.iter().copied()).unwrap();
            let b = Baseline::of(v.iter().map(|x| x * scale + shift)).unwrap();
            let tol = 1e-6 * (1.0 + a.median.abs() * scale + shift.abs());
            prop_assert!((b.median - (a.median * scale + shift)).abs() < tol);
            prop_assert!((b.mad - a.mad * scale).abs() < 1e-6 * (1.0 + a.mad * scale));
        }

        #[test]
        fn fewer_than_half_outliers_do_not_move_the_bound_much(
            n in 20usize..60,
            outliers in 0usize..9,
            big in 1e3f64..1e9,
        ) {
            // A steady level of 10 with small jitter, plus a minority of huge spikes.
            let mut v: Vec<f64> = (0..n).map(|i| 10.0 + (i % 3) as f64 * 0.1).collect();
            for i in 0..outliers.min(n / 2 - 1) {
                v[i * 2] = big;
            }
            let b = Baseline::of(v).unwrap();
            prop_assert!(b.median <= 10.3 + 1e-9 && b.median >= 10.0 - 1e-9, "{:?}", b);
            prop_assert!(b.upper_bound(5.0, 0.0, 1.0) < 20.0, "{:?}", b);
        }

        #[test]
        fn theil_sen_recovers_a_noisy_line(
            slope in -100f64..100.0,
            intercept in -1e3f64..1e3,
            noise in prop::collection::vec(-0.5f64..0.5, 10..60),
        ) {
            let pts: Vec<(f64, f64)> = noise
                .iter()
                .enumerate()
                .map(|(i, e)| (i as f64 * 10.0, intercept + slope * i as f64 * 10.0 + e))
                .collect();
            let s = theil_sen(&pts).unwrap();
            // Noise of at most 0.5 between points 10 s apart moves a pairwise slope by at most 0.1.
            prop_assert!((s - slope).abs() <= 0.1 + 1e-9, "{} vs {}", s, slope);
        }
    }
}
