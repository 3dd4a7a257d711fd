//! Samples and their summary: median, min, max.

use std::time::Instant;

use anyhow::Result;

/// The summary of one figure's samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// The middle sample (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The smallest sample.
    pub min: f64,
    /// The largest sample.
    pub max: f64,
    /// How many samples.
    pub n: usize,
}

impl Stats {
    /// The summary of `samples`, or `None` when there are none or one is not
    /// a finite number.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        let median = if n % 2 == 1 {
            s[n / 2]
        } else {
            (s[n / 2 - 1] + s[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: s[0],
            max: s[n - 1],
            n,
        })
    }
}

/// The geometric mean of positive finite values, `None` if there are none or
/// one is not positive and finite.
pub fn geomean(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() || xs.iter().any(|x| !x.is_finite() || *x <= 0.0) {
        return None;
    }
    Some((xs.iter().map(|x| x.ln()).sum::<f64>() / xs.len() as f64).exp())
}

/// How many samples to take, and how many operations each sample times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Timed samples (after one untimed warm-up sample).
    pub samples: usize,
    /// Operations per sample; the sample is the time of all of them divided
    /// by this.
    pub inner: usize,
}

impl Plan {
    /// `samples` samples of `inner` operations each.
    pub const fn new(samples: usize, inner: usize) -> Plan {
        Plan { samples, inner }
    }
}

/// Times `plan.samples` samples, after one untimed warm-up sample run exactly
/// like the others (it touches the buffers and grows QEMU's soft TLB, see
/// "Measuring under TCG" in the kernel facts). For each sample, `setup`
/// prepares untimed state (for example `inner` fresh mirrors), `timed` runs
/// `plan.inner` operations under the clock, and `teardown` disposes of the
/// state untimed. Returns seconds per operation, one value per sample.
pub fn measure<S>(
    plan: Plan,
    mut setup: impl FnMut() -> Result<S>,
    mut timed: impl FnMut(&mut S) -> Result<()>,
    mut teardown: impl FnMut(S) -> Result<()>,
) -> Result<Vec<f64>> {
    let inner = plan.inner.max(1) as f64;
    let mut out = Vec::with_capacity(plan.samples);
    for i in 0..=plan.samples {
        let mut state = setup()?;
        let t0 = Instant::now();
        timed(&mut state)?;
        let dt = t0.elapsed().as_secs_f64();
        teardown(state)?;
        if i > 0 {
            out.push(dt / inner);
        }
    }
    Ok(out)
}

/// The order in which an alternating measurement runs `count` methods in
/// round `round`: round 0 (the warm-up) in list order, then a shuffle that
/// depends only on the round number (the same in every run), so that no
/// method always follows the same one (under TCG the method before leaves
/// the soft TLB flushed or full, the caches cold or warm).
pub fn round_order(round: usize, count: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    if round == 0 {
        return order;
    }
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (round as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    for i in (1..count).rev() {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let j = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % (i + 1);
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max() {
        let s = Stats::of(&[5.0, 1.0, 3.0, 9.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (3.0, 1.0, 9.0, 5));
        let even = Stats::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert_eq!(Stats::of(&[7.0]).unwrap().median, 7.0);
        assert!(Stats::of(&[]).is_none());
        assert!(Stats::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn rounds_shuffle() {
        assert_eq!(round_order(0, 4), [0, 1, 2, 3]);
        assert!(round_order(7, 0).is_empty());
        let mut before_1 = std::collections::HashSet::new();
        for r in 1..=15 {
            let mut o = round_order(r, 4);
            assert_eq!(o, round_order(r, 4), "deterministic");
            if let Some(p) = o.iter().position(|&i| i == 1).filter(|&p| p > 0) {
                before_1.insert(o[p - 1]);
            }
            o.sort_unstable();
            assert_eq!(o, [0, 1, 2, 3], "a permutation");
        }
        assert_eq!(before_1.len(), 3, "method 1 follows each other method");
    }

    #[test]
    fn geometric_mean() {
        assert!((geomean(&[1.0, 4.0]).unwrap() - 2.0).abs() < 1e-12);
        assert!(geomean(&[]).is_none());
        assert!(geomean(&[1.0, 0.0]).is_none());
    }

    #[test]
    fn measure_runs_warmup_and_samples() {
        let mut setups = 0;
        let mut teardowns = 0;
        let mut ops = 0;
        let v = measure(
            Plan::new(3, 4),
            || {
                setups += 1;
                Ok(10)
            },
            |s| {
                assert_eq!(*s, 10);
                ops += 4;
                Ok(())
            },
            |_| {
                teardowns += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!((setups, teardowns, ops), (4, 4, 16));
        assert!(v.iter().all(|x| *x >= 0.0));
    }
}
