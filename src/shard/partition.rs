//! The shards' partition of the selected tests: pure, computed from the run's list (testmon's
//! order) and the datafile's durations only, so every shard computes the same one.
//!
//! The selected tests are grouped into units as the local schedule groups them (`--dist`),
//! then dealt longest first to the least-loaded shard (LPT); ties go to the unit that comes
//! first in testmon's order and to the lowest shard. Unknown durations count at the median
//! of the known ones. A unit that no fixture above function scope binds, whose tests all
//! have recorded durations and that costs more than total / shards, is cut into parts
//! first (`scheduler::units_of`), so that one big module does not set the slowest shard.

use std::collections::HashMap;

use crate::run::scheduler::{self, Dist, Hints};
use crate::shard::spec::Shard;

/// This shard's part of the selection.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Share {
    pub(crate) shard: Shard,
    /// Indices into the run's list, in its order.
    pub(crate) tests: Vec<usize>,
    /// How many tests were selected, on all shards together.
    pub(crate) selected: usize,
    /// Expected seconds of this shard's tests, and of all selected tests.
    pub(crate) expected: f64,
    pub(crate) expected_total: f64,
}

/// `hints`: the collection's (files scheduled whole, bound scopes); a unit no fixture binds
/// and costing more than total / shards is split across shards, as the local schedule
/// splits it across workers.
pub(crate) fn share(
    run_list: &[String],
    durations: &HashMap<String, f64>,
    dist: Dist,
    hints: &Hints,
    shard: Shard,
) -> Share {
    let hints = Hints {
        whole_files: hints.whole_files.clone(),
        bound: hints.bound.clone(),
        workers: shard.total,
    };
    let units = scheduler::units_of(run_list, durations, dist, &hints);
    let mut order: Vec<usize> = (0..units.len()).collect();
    // Stable: equal costs keep testmon's order (units are in the order of their first test).
    order.sort_by(|&a, &b| units[b].cost.total_cmp(&units[a].cost));
    let mut load = vec![0.0_f64; shard.total];
    let mut mine: Vec<usize> = Vec::new();
    let mut expected = 0.0;
    for u in order {
        let least = (0..shard.total)
            .min_by(|&a, &b| load[a].total_cmp(&load[b]).then(a.cmp(&b)))
            .unwrap_or(0);
        load[least] += units[u].cost;
        if least + 1 == shard.index {
            mine.extend(&units[u].tests);
            expected += units[u].cost;
        }
    }
    mine.sort_unstable();
    Share {
        shard,
        tests: mine,
        selected: run_list.len(),
        expected,
        expected_total: load.iter().sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("tests/test_{}.py::test_{i}", i % 7))
            .collect()
    }

    fn shards(
        tests: &[String],
        durations: &HashMap<String, f64>,
        dist: Dist,
        total: usize,
    ) -> Vec<Share> {
        (1..=total)
            .map(|index| {
                share(
                    tests,
                    durations,
                    dist,
                    &Hints::default(),
                    Shard { index, total },
                )
            })
            .collect()
    }

    #[test]
    fn every_selected_test_runs_on_exactly_one_shard() {
        let tests = names(50);
        let durations: HashMap<String, f64> = tests
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(i, t)| (t.clone(), (i % 11) as f64 * 0.1))
            .collect();
        for dist in [Dist::Load, Dist::Loadscope, Dist::Loadfile] {
            for total in 1..=5 {
                let parts = shards(&tests, &durations, dist, total);
                let mut all: Vec<usize> = parts.iter().flat_map(|s| s.tests.clone()).collect();
                all.sort_unstable();
                assert_eq!(all, (0..50).collect::<Vec<_>>(), "{dist:?} {total}");
                for part in &parts {
                    assert!(
                        part.tests.windows(2).all(|w| w[0] < w[1]),
                        "in testmon's order"
                    );
                    assert_eq!(part.selected, 50);
                }
                let sum: f64 = parts.iter().map(|s| s.expected).sum();
                assert!((sum - parts[0].expected_total).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn longest_first_to_the_least_loaded_shard() {
        // Tests a..e of 1, 3, 5, 3, 4 s on 2 shards, longest first to the least loaded:
        // c (5) → 1; e (4) → 2; b (3) → 2 (7); d (3) → 1 (8); a (1) → 2 (8).
        let tests: Vec<String> = ["a", "b", "c", "d", "e"]
            .iter()
            .map(|t| format!("t.py::{t}"))
            .collect();
        let durations: HashMap<String, f64> = tests
            .iter()
            .cloned()
            .zip([1.0, 3.0, 5.0, 3.0, 4.0])
            .collect();
        let parts = shards(&tests, &durations, Dist::Load, 2);
        assert_eq!(parts[0].tests, vec![2, 3]);
        assert_eq!(parts[0].expected, 8.0);
        assert_eq!(parts[1].tests, vec![0, 1, 4]);
        assert_eq!(parts[1].expected, 8.0);
        assert_eq!(parts[1].expected_total, 16.0);
    }

    #[test]
    fn units_stay_together_and_unknown_durations_count_at_the_median() {
        let tests: Vec<String> = [
            "a.py::T::x",
            "a.py::T::y",
            "a.py::u",
            "b.py::v",
            "b.py::w",
            "c.py::z",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        // c.py::z is unknown: it counts as the median of 1, 2, 3, 4, 5 = 3.
        let durations: HashMap<String, f64> = tests[..5]
            .iter()
            .cloned()
            .zip([1.0, 2.0, 3.0, 4.0, 5.0])
            .collect();
        let parts = shards(&tests, &durations, Dist::Loadfile, 2);
        // Files: a 6, b 9, c 3 → b alone; a + c together.
        assert_eq!(parts[0].tests, vec![3, 4]);
        assert_eq!(parts[1].tests, vec![0, 1, 2, 5]);
        assert_eq!(parts[1].expected, 9.0);
        let scoped = shards(&tests, &durations, Dist::Loadscope, 3);
        let class = scoped.iter().find(|s| s.tests.contains(&0)).unwrap();
        assert!(
            class.tests.contains(&1),
            "a class's tests stay on one shard"
        );
    }

    #[test]
    fn a_big_unbound_module_is_split_across_shards_a_bound_one_is_not() {
        // One file of 8 × 1 s and two small ones, loadfile, 2 shards: 8 + 1 + 1 = 10.
        let mut tests: Vec<String> = (0..8).map(|i| format!("big.py::t{i}")).collect();
        tests.push("a.py::t".into());
        tests.push("b.py::t".into());
        let durations: HashMap<String, f64> = tests.iter().map(|t| (t.clone(), 1.0)).collect();
        let parts = shards(&tests, &durations, Dist::Loadfile, 2);
        assert_eq!(parts[0].expected, 5.0);
        assert_eq!(parts[1].expected, 5.0);
        let bound = Hints {
            bound: ["big.py".to_string()].into_iter().collect(),
            ..Hints::default()
        };
        let whole: Vec<Share> = (1..=2)
            .map(|index| {
                share(
                    &tests,
                    &durations,
                    Dist::Loadfile,
                    &bound,
                    Shard { index, total: 2 },
                )
            })
            .collect();
        assert_eq!(
            whole[0].tests,
            (0..8).collect::<Vec<_>>(),
            "bound: one shard"
        );
        assert_eq!(whole[1].expected, 2.0);
    }

    #[test]
    fn more_shards_than_units_leaves_some_empty() {
        let tests = vec!["a.py::t".to_string()];
        let parts = shards(&tests, &HashMap::new(), Dist::Load, 3);
        assert_eq!(parts[0].tests, vec![0]);
        assert!(parts[1].tests.is_empty() && parts[2].tests.is_empty());
        assert_eq!(parts[2].selected, 1);
    }
}
