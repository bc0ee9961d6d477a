//! The arithmetic of a bench: the median and spread of rounds, Jain's fairness index, and the
//! offered loads of the latency sweep.

/// The open-loop sweep's offered loads, as fractions of the capacity the closed loop measured.
pub const SWEEP_LOADS: [f64; 7] = [0.10, 0.30, 0.50, 0.70, 0.80, 0.90, 0.95];

/// The median of `values` (the mean of the middle two for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    Some(if sorted.len() % 2 == 1 { sorted[mid] } else { (sorted[mid - 1] + sorted[mid]) / 2.0 })
}

/// How far apart the rounds were: (max − min) / median, in percent; 0 for one round.
pub fn spread_pct(values: &[f64]) -> f64 {
    let Some(mid) = median(values) else { return 0.0 };
    let max = values.iter().copied().fold(f64::MIN, f64::max);
    let min = values.iter().copied().fold(f64::MAX, f64::min);
    if mid > 0.0 {
        (max - min) / mid * 100.0
    } else {
        0.0
    }
}

/// Jain's fairness index: the fairness workload's own, shared with lab-exp.
pub use labkit::fairness::jain;

/// The offered rates of the sweep for a measured `capacity` (requests/s), one per [`SWEEP_LOADS`].
pub fn sweep_rates(capacity: f64) -> Vec<(f64, f64)> {
    SWEEP_LOADS.iter().map(|&load| (load, (capacity * load).round().max(1.0))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.0]), Some(7.0));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn spread_is_range_over_median() {
        assert!((spread_pct(&[90.0, 100.0, 110.0]) - 20.0).abs() < 1e-9);
        assert_eq!(spread_pct(&[42.0]), 0.0);
        assert_eq!(spread_pct(&[]), 0.0);
    }

    #[test]
    fn sweep_points_are_fractions_of_capacity() {
        let rates = sweep_rates(100_000.0);
        let offered: Vec<f64> = rates.iter().map(|&(_, rate)| rate).collect();
        assert_eq!(offered, vec![10_000.0, 30_000.0, 50_000.0, 70_000.0, 80_000.0, 90_000.0, 95_000.0]);
        // Never a zero rate, which lab-load would refuse.
        assert!(sweep_rates(0.0).iter().all(|&(_, rate)| rate >= 1.0));
    }
}
