// SPDX-License-Identifier: GPL-2.0-or-later
//! Statistics, and the order in which the sides of a comparison are measured.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).expect("NaN"));
    s
}

pub fn quantile_sorted(s: &[f64], q: f64) -> f64 {
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

pub fn median(v: &[f64]) -> f64 {
    quantile_sorted(&sorted(v), 0.5)
}

fn fast_median(v: &mut [f64]) -> f64 {
    let mid = v.len() / 2;
    *v.select_nth_unstable_by(mid, |a, b| a.partial_cmp(b).expect("NaN"))
        .1
}

/// Ratio of medians a/b and its bootstrap 95% interval.
pub fn ratio_ci(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let r = median(a) / median(b);
    // A fixed seed: the same samples give the same interval.
    let mut rng = ChaCha8Rng::seed_from_u64(0x2545_F491_4F6C_DD1D);
    let (mut ta, mut tb) = (vec![0.0; a.len()], vec![0.0; b.len()]);
    let mut rs = Vec::new();
    for _ in 0..400 {
        ta.fill_with(|| a[rng.random_range(0..a.len())]);
        tb.fill_with(|| b[rng.random_range(0..b.len())]);
        rs.push(fast_median(&mut ta) / fast_median(&mut tb));
    }
    let rs = sorted(&rs);
    (r, quantile_sorted(&rs, 0.025), quantile_sorted(&rs, 0.975))
}

/// Median of per-process ratios and a distribution-free interval for it:
/// order statistics j and K+1-j with j the largest such that
/// P(Binomial(K, 1/2) < j) <= 2.5% (for K=10: the 2nd and 9th of 10, 97.9%).
/// Robust to one process that the machine's other load disturbed.
pub fn median_ci(ratios: &[f64]) -> (f64, f64, f64) {
    let s = sorted(ratios);
    let k = s.len();
    let (mut j, mut below) = (0usize, 0.0f64);
    let mut coef = 1.0f64; // C(k, i)
    for i in 0..k {
        below += coef / 2f64.powi(k as i32);
        if below > 0.025 {
            break;
        }
        j = i + 1;
        coef = coef * (k - i) as f64 / (i + 1) as f64;
    }
    let j = j.max(1);
    (quantile_sorted(&s, 0.5), s[j - 1], s[k - j])
}

/// Runs `rounds` rounds over `n` measured operations after a warm-up and
/// returns one sample list per operation.  The order changes every round
/// (forward and backward from a rotating start: all 6 orders of 3), so that
/// every operation is as often first, middle and last: the position in a
/// round shifts a round trip by a few per cent on this machine.
pub fn interleave(
    n: usize,
    rounds: usize,
    warmup: usize,
    mut op: impl FnMut(usize),
) -> Vec<Vec<f64>> {
    interleave_timed(n, rounds, warmup, |i| {
        let t = Instant::now();
        op(i);
        us(t.elapsed())
    })
}

/// As interleave(), but `op` measures itself and returns microseconds.
pub fn interleave_timed(
    n: usize,
    rounds: usize,
    warmup: usize,
    mut op: impl FnMut(usize) -> f64,
) -> Vec<Vec<f64>> {
    let mut out = vec![Vec::with_capacity(rounds); n];
    for r in 0..warmup + rounds {
        let start = (r / 2) % n;
        for k in 0..n {
            let i = if r % 2 == 0 {
                (start + k) % n
            } else {
                (start + n - k) % n
            };
            let dt = op(i);
            if r >= warmup {
                out[i].push(dt);
            }
        }
    }
    out
}
