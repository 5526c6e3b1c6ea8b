//! Medians, percentiles and spreads of timing samples.

use std::time::Duration;

/// Summary of a set of samples (in the samples' unit).
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub median: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summary of `samples` (sorted in place). Empty input gives zeros.
    pub fn of(samples: &mut [f64]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        Self {
            median: percentile(samples, 50.0),
            p99: percentile(samples, 99.0),
            min: samples[0],
            max: samples[samples.len() - 1],
        }
    }
}

/// The `p`-th percentile of sorted `s` (nearest rank).
pub fn percentile(s: &[f64], p: f64) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Microseconds of a duration.
pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
