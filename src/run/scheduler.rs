//! Scheduling: pure state, no I/O. The run's tests are grouped into units (by `--dist`),
//! ordered longest first by testmon's recorded durations (LPT list scheduling) and handed
//! to whichever worker asks next.
//!
//! A worker that asks again keeps to the class, then the file, of the unit it got last while
//! that has units left (the longest of them first): with `--dist load` that keeps a module's
//! tests together on few workers, so its module- and class-scoped fixtures are set up a few
//! times, not once per test. Only when its scope is used up does a worker take the longest
//! unit left anywhere.

use std::collections::{HashMap, HashSet, VecDeque};

/// How tests are grouped into units of work (`--dist`); the names are the command line's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Dist {
    /// Single tests, longest first.
    Load,
    /// Tests grouped by module and class.
    Loadscope,
    /// Tests grouped by file.
    Loadfile,
}

/// Tests that go to one worker together, in the order testmon gave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Unit {
    /// Indices into the run's test list.
    pub(crate) tests: Vec<usize>,
    /// Expected seconds: the sum of the tests' recorded durations.
    pub(crate) cost: f64,
}

/// Where a unit lives: its class-or-module scope and its file.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Place {
    scope: String,
    file: String,
}

/// The pending units of one scope or file, longest first, as indices into `pending`.
#[derive(Debug, Default)]
struct Lane {
    slots: Vec<usize>,
    /// Everything before this position has been handed out.
    cursor: usize,
}

#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    /// Longest first; ties in the order of the run's list.
    pending: Vec<Option<(Unit, Place)>>,
    /// Everything before this index has been handed out.
    cursor: usize,
    by_scope: HashMap<String, Lane>,
    by_file: HashMap<String, Lane>,
    /// Work given back (a crashed worker's), handed out before anything else.
    requeued: VecDeque<Unit>,
    /// Where each worker's last unit lives.
    last: HashMap<usize, Place>,
    left: usize,
}

/// The group a test belongs to under `dist`.
pub(crate) fn unit_key(nodeid: &str, dist: Dist) -> &str {
    // Parameter ids may contain "::" or "/": cut them off before looking at the path.
    let base = &nodeid[..nodeid.find('[').unwrap_or(nodeid.len())];
    match dist {
        Dist::Load => nodeid,
        Dist::Loadfile => base.split("::").next().unwrap_or(base),
        Dist::Loadscope => base.rsplit_once("::").map_or(base, |(scope, _)| scope),
    }
}

/// What the collection tells about the units, besides the node ids (the first worker's
/// `whole_files` and `bound`).
#[derive(Debug, Default)]
pub(crate) struct Hints {
    /// Under `--dist loadscope`, files scheduled as one unit (a module- or package-scoped
    /// fixture shared by its functions and its classes).
    pub(crate) whole_files: HashSet<String>,
    /// Scopes (class or module) and files with a test that uses a class-, module- or
    /// package-scoped fixture: their units are never split.
    pub(crate) bound: HashSet<String>,
    /// The workers the run has: a unit costing more than its fair share (total / workers)
    /// is split, when nothing binds it; 0 or 1: nothing is split.
    pub(crate) workers: usize,
}

impl Scheduler {
    pub(crate) fn new(
        tests: &[String],
        durations: &HashMap<String, f64>,
        dist: Dist,
        hints: &Hints,
    ) -> Scheduler {
        let (units, keys) = group(tests, durations, dist, &hints.whole_files);
        let recorded = |i: usize| durations.get(&tests[i]).copied();
        let units = split_big(units, &keys, hints, recorded);
        // A stable sort keeps the run's order among equal costs.
        let mut units = units;
        units.sort_by(|a, b| b.0.cost.total_cmp(&a.0.cost));
        let mut scheduler = Scheduler {
            left: units.len(),
            ..Scheduler::default()
        };
        for (i, (_, place)) in units.iter().enumerate() {
            scheduler
                .by_scope
                .entry(place.scope.clone())
                .or_default()
                .slots
                .push(i);
            scheduler
                .by_file
                .entry(place.file.clone())
                .or_default()
                .slots
                .push(i);
        }
        scheduler.pending = units.into_iter().map(Some).collect();
        scheduler
    }

    /// The next unit for `worker`, among those `eligible` accepts: work given back first,
    /// then the longest unit of the worker's last scope, of its last file, or of all.
    pub(crate) fn next_for(
        &mut self,
        worker: usize,
        eligible: impl Fn(&Unit) -> bool,
    ) -> Option<Unit> {
        if let Some(at) = self.requeued.iter().position(&eligible) {
            self.left -= 1;
            return self.requeued.remove(at);
        }
        let near = self.last.get(&worker).cloned();
        let slot = near
            .as_ref()
            .and_then(|place| self.lane_next(true, &place.scope, &eligible))
            .or_else(|| {
                near.as_ref()
                    .and_then(|place| self.lane_next(false, &place.file, &eligible))
            })
            .or_else(|| self.global_next(&eligible))?;
        let (unit, place) = self.pending[slot].take()?;
        self.left -= 1;
        self.last.insert(worker, place);
        Some(unit)
    }

    fn lane_next(
        &mut self,
        scope: bool,
        key: &str,
        eligible: &impl Fn(&Unit) -> bool,
    ) -> Option<usize> {
        let lanes = if scope {
            &mut self.by_scope
        } else {
            &mut self.by_file
        };
        let lane = lanes.get_mut(key)?;
        while lane.cursor < lane.slots.len() && self.pending[lane.slots[lane.cursor]].is_none() {
            lane.cursor += 1;
        }
        lane.slots[lane.cursor..].iter().copied().find(|&i| {
            self.pending[i]
                .as_ref()
                .is_some_and(|(unit, _)| eligible(unit))
        })
    }

    fn global_next(&mut self, eligible: &impl Fn(&Unit) -> bool) -> Option<usize> {
        while self.cursor < self.pending.len() && self.pending[self.cursor].is_none() {
            self.cursor += 1;
        }
        (self.cursor..self.pending.len()).find(|&i| {
            self.pending[i]
                .as_ref()
                .is_some_and(|(unit, _)| eligible(unit))
        })
    }

    /// Gives tests back (those a crashed worker did not finish), as one unit.
    pub(crate) fn requeue(&mut self, unit: Unit) {
        if !unit.tests.is_empty() {
            self.requeued.push_back(unit);
            self.left += 1;
        }
    }

    /// Drops everything not handed out yet (after `-x`/`--maxfail`, or an interrupt).
    pub(crate) fn cancel(&mut self) -> Vec<Unit> {
        self.left = 0;
        let mut dropped: Vec<Unit> = self.requeued.drain(..).collect();
        dropped.extend(
            self.pending
                .iter_mut()
                .filter_map(Option::take)
                .map(|(unit, _)| unit),
        );
        dropped
    }

    pub(crate) fn units_left(&self) -> usize {
        self.left
    }
}

/// The run's tests grouped into units by `dist` (a file in `whole` is one unit under
/// `loadscope`), in the order of their first test; each with its key and place.
fn group<'t>(
    tests: &'t [String],
    durations: &HashMap<String, f64>,
    dist: Dist,
    whole: &HashSet<String>,
) -> (Vec<(Unit, Place)>, Vec<&'t str>) {
    let fallback = median(
        tests
            .iter()
            .filter_map(|t| durations.get(t).copied())
            .collect(),
    );
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut units: Vec<(Unit, Place)> = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    for (i, test) in tests.iter().enumerate() {
        let cost = durations.get(test).copied().unwrap_or(fallback);
        let file = unit_key(test, Dist::Loadfile);
        let whole_file = dist == Dist::Loadscope && whole.contains(file);
        let (key, scope) = if whole_file {
            (file, file)
        } else {
            (unit_key(test, dist), unit_key(test, Dist::Loadscope))
        };
        let slot = *index.entry(key).or_insert_with(|| {
            let place = Place {
                scope: scope.to_string(),
                file: unit_key(test, Dist::Loadfile).to_string(),
            };
            units.push((
                Unit {
                    tests: Vec::new(),
                    cost: 0.0,
                },
                place,
            ));
            keys.push(key);
            units.len() - 1
        });
        units[slot].0.tests.push(i);
        units[slot].0.cost += cost;
    }
    (units, keys)
}

/// The units of `tests` under `dist`, in the order of their first test, a unit costing more
/// than the fair share of `hints.workers` split as the schedule splits it.
pub(crate) fn units_of(
    tests: &[String],
    durations: &HashMap<String, f64>,
    dist: Dist,
    hints: &Hints,
) -> Vec<Unit> {
    let (units, keys) = group(tests, durations, dist, &hints.whole_files);
    let recorded = |i: usize| durations.get(&tests[i]).copied();
    split_big(units, &keys, hints, recorded)
        .into_iter()
        .map(|(unit, _)| unit)
        .collect()
}

/// Each test's expected seconds: testmon's recorded duration, or the median of the known ones.
/// A unit costing more than the fair share (total / workers), which no fixture above
/// function scope binds and whose tests all have recorded durations, is cut into
/// consecutive parts of at most the fair share each (a test longer than that alone), in
/// testmon's order: one module holding most of the time no longer sets the run's length.
/// Its tests' records are as if it ran whole: no fixture of theirs outlives a test, and
/// session-scoped ones are set up once per worker anyway. (Without recorded durations the
/// cost is a guess: nothing is split.)
fn split_big(
    units: Vec<(Unit, Place)>,
    keys: &[&str],
    hints: &Hints,
    recorded: impl Fn(usize) -> Option<f64>,
) -> Vec<(Unit, Place)> {
    if hints.workers < 2 {
        return units;
    }
    let total: f64 = units.iter().map(|(u, _)| u.cost).sum();
    let fair = total / hints.workers as f64;
    let mut out = Vec::with_capacity(units.len());
    for ((unit, place), key) in units.into_iter().zip(keys) {
        let bound = hints.bound.contains(*key) || hints.bound.contains(place.file.as_str());
        let costs: Option<Vec<f64>> = unit.tests.iter().map(|&i| recorded(i)).collect();
        let Some(costs) = costs.filter(|_| unit.cost > fair && unit.tests.len() > 1 && !bound)
        else {
            out.push((unit, place));
            continue;
        };
        let mut part = Unit {
            tests: Vec::new(),
            cost: 0.0,
        };
        for (i, cost) in unit.tests.into_iter().zip(costs) {
            if !part.tests.is_empty() && part.cost + cost > fair {
                let full = std::mem::replace(
                    &mut part,
                    Unit {
                        tests: Vec::new(),
                        cost: 0.0,
                    },
                );
                out.push((full, place.clone()));
            }
            part.tests.push(i);
            part.cost += cost;
        }
        out.push((part, place));
    }
    out
}

pub(crate) fn expected_costs(tests: &[String], durations: &HashMap<String, f64>) -> Vec<f64> {
    let fallback = median(
        tests
            .iter()
            .filter_map(|t| durations.get(t).copied())
            .collect(),
    );
    tests
        .iter()
        .map(|t| durations.get(t).copied().unwrap_or(fallback))
        .collect()
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

    /// A fake worker pool: the worker whose clock is lowest pulls next (list scheduling).
    /// Returns each worker's tests in order, and the makespan.
    fn simulate(mut s: Scheduler, workers: usize) -> (Vec<Vec<usize>>, f64) {
        let mut clocks = vec![0.0_f64; workers];
        let mut ran = vec![Vec::new(); workers];
        loop {
            let w = (0..workers)
                .min_by(|&a, &b| clocks[a].total_cmp(&clocks[b]))
                .unwrap();
            let Some(unit) = s.next_for(w, |_| true) else {
                break;
            };
            clocks[w] += unit.cost;
            ran[w].extend(unit.tests);
        }
        (ran, clocks.into_iter().fold(0.0, f64::max))
    }

    /// One module holding most of the time, no fixture above function scope: cut into
    /// parts of at most the fair share, each in testmon's order; the run's length becomes
    /// the fair share. Bound by a module fixture, or with one worker, it stays whole.
    #[test]
    fn a_unit_bigger_than_its_share_is_split_unless_a_fixture_binds_it() {
        let mut list: Vec<String> = (0..10).map(|i| format!("big.py::t{i}")).collect();
        list.extend(names(&["a.py::x", "b.py::y"]));
        let d: HashMap<String, f64> = list.iter().map(|t| (t.clone(), 1.0)).collect();
        let hints = Hints {
            workers: 2,
            ..Hints::default()
        };
        let split = Scheduler::new(&list, &d, Dist::Loadscope, &hints);
        assert_eq!(split.units_left(), 4);
        let (ran, makespan) = simulate(split, 2);
        assert_eq!(makespan, 6.0, "{ran:?}");
        let big_order: Vec<usize> = ran.concat().into_iter().filter(|&i| i < 10).collect();
        let mut sorted = big_order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "every test once");
        for part in &ran {
            let mine: Vec<usize> = part.iter().copied().filter(|&i| i < 10).collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "in order: {mine:?}");
        }
        let bound = Hints {
            workers: 2,
            bound: ["big.py".to_string()].into(),
            ..Hints::default()
        };
        let (_, makespan) = simulate(Scheduler::new(&list, &d, Dist::Loadscope, &bound), 2);
        assert_eq!(makespan, 10.0);
        let one = Hints {
            workers: 1,
            ..Hints::default()
        };
        assert_eq!(
            Scheduler::new(&list, &d, Dist::Loadscope, &one).units_left(),
            3
        );
        // Without recorded durations the cost is a guess: nothing is split.
        let unknown = Scheduler::new(&list, &HashMap::new(), Dist::Loadscope, &hints);
        assert_eq!(unknown.units_left(), 3);
    }

    #[test]
    fn longest_first_and_balanced() {
        let tests = names(&["a.py::t1", "b.py::t2", "c.py::t3", "d.py::t4", "e.py::t5"]);
        let d = durations(&[
            ("a.py::t1", 1.0),
            ("b.py::t2", 5.0),
            ("c.py::t3", 3.0),
            ("d.py::t4", 3.0),
            ("e.py::t5", 2.0),
        ]);
        let mut s = Scheduler::new(&tests, &d, Dist::Load, &Hints::default());
        assert_eq!(s.next_for(0, |_| true).unwrap().tests, vec![1]);
        let (_, makespan) = simulate(Scheduler::new(&tests, &d, Dist::Load, &Hints::default()), 2);
        assert_eq!(makespan, 7.0); // 5+2 / 3+3+1
        s.cancel();
        assert!(s.next_for(0, |_| true).is_none());
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
            let (ran, _) = simulate(Scheduler::new(&tests, &d, dist, &Hints::default()), 3);
            let mut all: Vec<usize> = ran.into_iter().flatten().collect();
            all.sort_unstable();
            assert_eq!(all, (0..100).collect::<Vec<_>>(), "{dist:?}");
        }
    }

    #[test]
    fn workers_keep_to_their_module_under_load() {
        // 10 modules of 20 tests with noise-level durations: strict LPT would scatter every
        // worker over all modules (198 switches), setting module fixtures up again for nearly
        // every test.
        let tests: Vec<String> = (0..10)
            .flat_map(|m| (0..20).map(move |t| format!("m{m}.py::t{t}")))
            .collect();
        let d: HashMap<String, f64> = tests
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), 0.001 + ((i * 7919) % 97) as f64 * 1e-5))
            .collect();
        let (ran, _) = simulate(Scheduler::new(&tests, &d, Dist::Load, &Hints::default()), 2);
        let switches: usize = ran
            .iter()
            .map(|seq| {
                seq.windows(2)
                    .filter(|w| tests[w[0]].split("::").next() != tests[w[1]].split("::").next())
                    .count()
            })
            .sum();
        assert!(switches <= 10, "{switches} module switches");
    }

    #[test]
    fn units_keep_testmon_order_within() {
        let tests = names(&["a.py::C::t2", "a.py::C::t1", "a.py::t0", "b.py::t9"]);
        let mut s = Scheduler::new(&tests, &HashMap::new(), Dist::Loadscope, &Hints::default());
        assert_eq!(s.next_for(0, |_| true).unwrap().tests, vec![0, 1]);
        assert_eq!(s.next_for(1, |_| true).unwrap().tests, vec![2]);
        let mut s = Scheduler::new(&tests, &HashMap::new(), Dist::Loadfile, &Hints::default());
        assert_eq!(s.next_for(0, |_| true).unwrap().tests, vec![0, 1, 2]);
        assert_eq!(s.units_left(), 1);
    }

    /// A file whose module-scoped fixture its functions and its class share is one unit,
    /// in testmon's order, under loadscope; other files keep their scopes.
    #[test]
    fn a_file_sharing_a_module_fixture_is_one_unit() {
        let tests = names(&[
            "a.py::t0",
            "a.py::C::t1",
            "a.py::t2",
            "b.py::t3",
            "b.py::D::t4",
        ]);
        let hints = Hints {
            whole_files: ["a.py".to_string()].into(),
            ..Hints::default()
        };
        let mut s = Scheduler::new(&tests, &HashMap::new(), Dist::Loadscope, &hints);
        assert_eq!(s.next_for(0, |_| true).unwrap().tests, vec![0, 1, 2]);
        assert_eq!(s.units_left(), 2);
        // Not under load: there every test is its own unit whatever it shares.
        let s = Scheduler::new(&tests, &HashMap::new(), Dist::Load, &hints);
        assert_eq!(s.units_left(), 5);
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
        let mut s = Scheduler::new(&tests, &d, Dist::Load, &Hints::default());
        let order: Vec<f64> = std::iter::from_fn(|| s.next_for(0, |_| true))
            .map(|u| u.cost)
            .collect();
        assert_eq!(order, vec![9.0, 2.0, 2.0, 1.0]);
    }

    #[test]
    fn ineligible_units_are_skipped_not_lost() {
        let tests = names(&["a", "b"]);
        let d = durations(&[("a", 2.0), ("b", 1.0)]);
        let mut s = Scheduler::new(&tests, &d, Dist::Load, &Hints::default());
        assert_eq!(
            s.next_for(0, |u| u.tests != vec![0]).unwrap().tests,
            vec![1]
        );
        assert_eq!(s.next_for(1, |_| true).unwrap().tests, vec![0]);
        assert!(s.next_for(0, |_| true).is_none());
    }

    #[test]
    fn requeued_work_goes_out_first() {
        let tests = names(&["a", "b", "c"]);
        let d = durations(&[("a", 3.0), ("b", 2.0), ("c", 1.0)]);
        let mut s = Scheduler::new(&tests, &d, Dist::Load, &Hints::default());
        let first = s.next_for(0, |_| true).unwrap();
        s.requeue(first.clone());
        assert_eq!(s.next_for(1, |_| true).unwrap(), first);
        assert_eq!(s.units_left(), 2);
    }
}
