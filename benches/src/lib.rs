//! Benchmarks for lienthong. Each binary runs against the local stack (`deploy/local/up`) and
//! prints figures and ratios; targets live here, never in timed unit tests.

/// Latency percentiles of a sample, in milliseconds.
pub fn percentiles(mut samples: Vec<f64>, points: &[f64]) -> Vec<f64> {
    if samples.is_empty() {
        return points.iter().map(|_| f64::NAN).collect();
    }
    samples.sort_by(f64::total_cmp);
    points
        .iter()
        .map(|p| {
            let idx = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
            samples[idx.min(samples.len() - 1)]
        })
        .collect()
}

/// Resident memory of this process in MiB (Linux).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_pick_sorted_ranks() {
        let p = super::percentiles((1..=100).map(f64::from).collect(), &[50.0, 99.0]);
        assert_eq!(p, vec![51.0, 99.0]);
    }
}
