//! Weighted choice between releases, expanded once at swap time (pingora's `Weighted::build`).
//!
//! The weights are reduced by their greatest common divisor and laid out in one cycle of
//! slots with smooth weighted round-robin (nginx's algorithm), so that the releases interleave
//! instead of coming in runs. A pick is one atomic increment and one index: over every full cycle
//! each release gets exactly its share, and any window of requests is within one slot of it.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One cycle of release indices, and the position of the next pick.
#[derive(Debug)]
pub(crate) struct PickTable {
    slots: Box<[u16]>,
    next: AtomicUsize,
}

impl PickTable {
    /// Expands `weights` (one per release, 0 for a release that gets no traffic).
    pub(crate) fn build(weights: &[u8]) -> PickTable {
        let divisor = weights
            .iter()
            .filter(|w| **w > 0)
            .fold(0u32, |g, w| gcd(g, u32::from(*w)));
        let reduced: Vec<u32> = weights
            .iter()
            .map(|w| u32::from(*w).checked_div(divisor).unwrap_or(0))
            .collect();
        let total: u32 = reduced.iter().sum();
        let mut current = vec![0i64; reduced.len()];
        let mut slots = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in reduced.iter().enumerate() {
                current[i] += i64::from(*w);
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= i64::from(total);
            // Route tables hold far fewer than 65536 releases.
            slots.push(u16::try_from(best).unwrap_or(u16::MAX));
        }
        PickTable {
            slots: slots.into_boxed_slice(),
            next: AtomicUsize::new(0),
        }
    }

    /// The release index for the next request, or `None` when no release gets traffic.
    #[inline]
    pub(crate) fn pick(&self) -> Option<usize> {
        match self.slots.len() {
            0 => None,
            1 => Some(usize::from(self.slots[0])),
            n => {
                let at = self.next.fetch_add(1, Ordering::Relaxed) % n;
                Some(usize::from(self.slots[at]))
            }
        }
    }

    /// Slots in one cycle.
    #[cfg(test)]
    pub(crate) fn cycle_len(&self) -> usize {
        self.slots.len()
    }
}

/// Integer percents of `weights` that add up to 100 (largest remainder), or all 0 without traffic.
pub(crate) fn percents(weights: &[u8]) -> Vec<u8> {
    let total: u32 = weights.iter().map(|w| u32::from(*w)).sum();
    if total == 0 {
        return vec![0; weights.len()];
    }
    let mut out: Vec<u32> = weights
        .iter()
        .map(|w| u32::from(*w) * 100 / total)
        .collect();
    let mut short = 100 - out.iter().sum::<u32>();
    let mut by_remainder: Vec<usize> = (0..weights.len()).collect();
    by_remainder.sort_by_key(|i| std::cmp::Reverse(u32::from(weights[*i]) * 100 % total));
    for i in by_remainder {
        if short == 0 {
            break;
        }
        if weights[i] > 0 {
            out[i] += 1;
            short -= 1;
        }
    }
    // Each share is at most 100.
    out.into_iter()
        .map(|p| u8::try_from(p).unwrap_or(100))
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(table: &PickTable, n: usize, releases: usize) -> Vec<usize> {
        let mut out = vec![0; releases];
        for _ in 0..n {
            out[table.pick().unwrap()] += 1;
        }
        out
    }

    #[test]
    fn no_traffic_without_weight() {
        assert_eq!(PickTable::build(&[]).pick(), None);
        assert_eq!(PickTable::build(&[0, 0]).pick(), None);
        assert_eq!(PickTable::build(&[0, 100]).pick(), Some(1));
    }

    #[test]
    fn weights_are_reduced_and_interleaved() {
        let t = PickTable::build(&[50, 50]);
        assert_eq!(t.cycle_len(), 2);
        let t = PickTable::build(&[90, 10]);
        assert_eq!(t.cycle_len(), 10);
        // Smooth: the canary's one slot is not at the very start or in a run.
        let seq: Vec<_> = (0..10).map(|_| t.pick().unwrap()).collect();
        assert_eq!(seq.iter().filter(|r| **r == 1).count(), 1);
        let t = PickTable::build(&[2, 1]);
        let seq: Vec<_> = (0..6).map(|_| t.pick().unwrap()).collect();
        assert_eq!(seq, [0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn percents_add_up() {
        assert_eq!(percents(&[1, 1, 1]), [34, 33, 33]);
        assert_eq!(percents(&[90, 10]), [90, 10]);
        assert_eq!(percents(&[3, 1]), [75, 25]);
        assert_eq!(percents(&[0, 7]), [0, 100]);
        assert_eq!(percents(&[0, 0]), [0, 0]);
    }

    proptest! {
        #[test]
        fn one_cycle_gives_exact_shares(weights in prop::collection::vec(0u8..=255, 1..8)) {
            let table = PickTable::build(&weights);
            let total: u32 = weights.iter().map(|w| u32::from(*w)).sum();
            if total == 0 {
                prop_assert_eq!(table.pick(), None);
                return Ok(());
            }
            let cycle = table.cycle_len();
            let got = counts(&table, cycle, weights.len());
            for (i, w) in weights.iter().enumerate() {
                // got[i] / cycle == w / total, exactly.
                prop_assert_eq!(got[i] as u64 * u64::from(total), u64::from(*w) * cycle as u64);
            }
            // Smooth: any window of the cycle is within one slot of each share.
            let window = cycle / 2;
            let got = counts(&table, window, weights.len());
            for (i, w) in weights.iter().enumerate() {
                let expected = window as f64 * f64::from(*w) / f64::from(total);
                prop_assert!((got[i] as f64 - expected).abs() <= 1.0 + 1e-9,
                    "release {} got {} of {}, expected {}", i, got[i], window, expected);
            }
        }

        #[test]
        fn percents_always_add_up_to_100(weights in prop::collection::vec(0u8..=255, 1..8)) {
            let p = percents(&weights);
            let sum: u32 = p.iter().map(|x| u32::from(*x)).sum();
            let any = weights.iter().any(|w| *w > 0);
            prop_assert_eq!(sum, if any { 100 } else { 0 });
            for (w, p) in weights.iter().zip(&p) {
                if *w == 0 { prop_assert_eq!(*p, 0); }
            }
        }
    }
}
