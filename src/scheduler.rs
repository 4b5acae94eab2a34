//! Scheduling: pure state, no I/O. The run's tests are grouped into units (by `--dist`),
//! ordered longest first by testmon's recorded durations (LPT list scheduling) and handed
//! to whichever worker asks next.

use std::collections::HashMap;

use crate::cli::Dist;

/// Tests that go to one worker together, in the order testmon gave.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Indices into the run's test list.
    pub tests: Vec<usize>,
    /// Expected seconds: the sum of the tests' recorded durations.
    pub cost: f64,
}

#[derive(Debug)]
pub struct Scheduler {
    /// Longest first; ties in the order of the run's list.
    pending: Vec<Option<Unit>>,
    /// Everything before this index has been handed out.
    cursor: usize,
    left: usize,
}

/// The group a test belongs to under `dist`.
pub fn unit_key(nodeid: &str, dist: Dist) -> &str {
    // Parameter ids may contain "::" or "/": cut them off before looking at the path.
    let base = &nodeid[..nodeid.find('[').unwrap_or(nodeid.len())];
    match dist {
        Dist::Load => nodeid,
        Dist::Loadfile => base.split("::").next().unwrap_or(base),
        Dist::Loadscope => base.rsplit_once("::").map_or(base, |(scope, _)| scope),
    }
}

impl Scheduler {
    pub fn new(tests: &[String], durations: &HashMap<String, f64>, dist: Dist) -> Scheduler {
        let fallback = median(
            tests
                .iter()
                .filter_map(|t| durations.get(t).copied())
                .collect(),
        );
        let mut index: HashMap<&str, usize> = HashMap::new();
        let mut units: Vec<Unit> = Vec::new();
        for (i, test) in tests.iter().enumerate() {
            let cost = durations.get(test).copied().unwrap_or(fallback);
            let slot = *index.entry(unit_key(test, dist)).or_insert_with(|| {
                units.push(Unit {
                    tests: Vec::new(),
                    cost: 0.0,
                });
                units.len() - 1
            });
            units[slot].tests.push(i);
            units[slot].cost += cost;
        }
        // A stable sort keeps the run's order among equal costs.
        units.sort_by(|a, b| b.cost.total_cmp(&a.cost));
        let left = units.len();
        Scheduler {
            pending: units.into_iter().map(Some).collect(),
            cursor: 0,
            left,
        }
    }

    /// The next unit, longest first, among those `eligible` accepts.
    pub fn next_for(&mut self, eligible: impl Fn(&Unit) -> bool) -> Option<Unit> {
        while self.cursor < self.pending.len() && self.pending[self.cursor].is_none() {
            self.cursor += 1;
        }
        let slot = (self.cursor..self.pending.len())
            .find(|&i| self.pending[i].as_ref().is_some_and(&eligible))?;
        self.left -= 1;
        self.pending[slot].take()
    }

    /// Puts tests back (those a crashed worker did not finish), as one unit, in cost order.
    pub fn requeue(&mut self, unit: Unit) {
        if unit.tests.is_empty() {
            return;
        }
        let at = (self.cursor..self.pending.len())
            .find(|&i| self.pending[i].as_ref().is_some_and(|u| u.cost < unit.cost))
            .unwrap_or(self.pending.len());
        self.pending.insert(at, Some(unit));
        self.left += 1;
    }

    /// Drops everything not handed out yet (after `-x`/`--maxfail`, or an interrupt).
    pub fn cancel(&mut self) -> Vec<Unit> {
        self.left = 0;
        self.pending.drain(..).flatten().collect()
    }

    pub fn units_left(&self) -> usize {
        self.left
    }
}

fn median(mut known: Vec<f64>) -> f64 {
    if known.is_empty() {
        return 1.0;
    }
    known.sort_by(f64::total_cmp);
    let mid = known.len() / 2;
    if known.len() % 2 == 1 {
        known[mid]
    } else {
        (known[mid - 1] + known[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn durations(list: &[(&str, f64)]) -> HashMap<String, f64> {
        list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    /// A fake worker pool: each worker pulls when its clock is the lowest (LPT list scheduling).
    fn simulate(mut s: Scheduler, workers: usize) -> (Vec<Vec<usize>>, f64) {
        let mut clocks = vec![0.0_f64; workers];
        let mut ran = vec![Vec::new(); workers];
        loop {
            let w = (0..workers)
                .min_by(|&a, &b| clocks[a].total_cmp(&clocks[b]))
                .unwrap();
            let Some(unit) = s.next_for(|_| true) else {
                break;
            };
            clocks[w] += unit.cost;
            ran[w].extend(unit.tests);
        }
        (ran, clocks.into_iter().fold(0.0, f64::max))
    }

    #[test]
    fn longest_first_and_balanced() {
        let tests = names(&["a.py::t1", "a.py::t2", "b.py::t3", "b.py::t4", "c.py::t5"]);
        let d = durations(&[
            ("a.py::t1", 1.0),
            ("a.py::t2", 5.0),
            ("b.py::t3", 3.0),
            ("b.py::t4", 3.0),
            ("c.py::t5", 2.0),
        ]);
        let mut s = Scheduler::new(&tests, &d, Dist::Load);
        assert_eq!(s.next_for(|_| true).unwrap().tests, vec![1]);
        let (_, makespan) = simulate(Scheduler::new(&tests, &d, Dist::Load), 2);
        assert_eq!(makespan, 7.0); // 5+2 / 3+3+1
        s.cancel();
        assert!(s.next_for(|_| true).is_none());
    }

    #[test]
    fn every_test_exactly_once() {
        let tests: Vec<String> = (0..100).map(|i| format!("m{}.py::t{i}", i % 7)).collect();
        let d: HashMap<String, f64> = tests
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), (i % 13) as f64))
            .collect();
        for dist in [Dist::Load, Dist::Loadfile, Dist::Loadscope] {
            let (ran, _) = simulate(Scheduler::new(&tests, &d, dist), 3);
            let mut all: Vec<usize> = ran.into_iter().flatten().collect();
            all.sort_unstable();
            assert_eq!(all, (0..100).collect::<Vec<_>>(), "{dist:?}");
        }
    }

    #[test]
    fn units_keep_testmon_order_within() {
        let tests = names(&["a.py::C::t2", "a.py::C::t1", "a.py::t0", "b.py::t9"]);
        let mut s = Scheduler::new(&tests, &HashMap::new(), Dist::Loadscope);
        assert_eq!(s.next_for(|_| true).unwrap().tests, vec![0, 1]);
        assert_eq!(s.next_for(|_| true).unwrap().tests, vec![2]);
        let mut s = Scheduler::new(&tests, &HashMap::new(), Dist::Loadfile);
        assert_eq!(s.next_for(|_| true).unwrap().tests, vec![0, 1, 2]);
        assert_eq!(s.units_left(), 1);
    }

    #[test]
    fn scope_keys_ignore_parameter_ids() {
        assert_eq!(
            unit_key("t/a.py::C::test[x::y]", Dist::Loadscope),
            "t/a.py::C"
        );
        assert_eq!(unit_key("t/a.py::test[a/b::c]", Dist::Loadscope), "t/a.py");
        assert_eq!(unit_key("t/a.py::test[a::b]", Dist::Loadfile), "t/a.py");
        assert_eq!(
            unit_key("t/a.py::test[a::b]", Dist::Load),
            "t/a.py::test[a::b]"
        );
    }

    #[test]
    fn unknown_durations_cost_the_median() {
        let tests = names(&["a", "b", "c", "new"]);
        let d = durations(&[("a", 1.0), ("b", 2.0), ("c", 9.0)]);
        let mut s = Scheduler::new(&tests, &d, Dist::Load);
        let order: Vec<f64> = std::iter::from_fn(|| s.next_for(|_| true))
            .map(|u| u.cost)
            .collect();
        assert_eq!(order, vec![9.0, 2.0, 2.0, 1.0]);
    }

    #[test]
    fn ineligible_units_are_skipped_not_lost() {
        let tests = names(&["a", "b"]);
        let d = durations(&[("a", 2.0), ("b", 1.0)]);
        let mut s = Scheduler::new(&tests, &d, Dist::Load);
        assert_eq!(s.next_for(|u| u.tests != vec![0]).unwrap().tests, vec![1]);
        assert_eq!(s.next_for(|_| true).unwrap().tests, vec![0]);
        assert!(s.next_for(|_| true).is_none());
    }

    #[test]
    fn requeued_work_goes_out_again_by_cost() {
        let tests = names(&["a", "b", "c"]);
        let d = durations(&[("a", 3.0), ("b", 2.0), ("c", 1.0)]);
        let mut s = Scheduler::new(&tests, &d, Dist::Load);
        let first = s.next_for(|_| true).unwrap();
        s.requeue(Unit {
            tests: first.tests.clone(),
            cost: first.cost,
        });
        assert_eq!(s.next_for(|_| true).unwrap(), first);
        assert_eq!(s.units_left(), 2);
    }
}
