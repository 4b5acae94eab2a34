//! Which tests each worker holds, from the moment a unit is taken from the scheduler until
//! the test's records are safe in the worker's spool; and what losing a worker gives back.
//! Pure state: tests are indices into the run's list.

use std::collections::VecDeque;

use crate::run::scheduler::Unit;

/// One worker's share.
#[derive(Debug, Default)]
struct Holding {
    /// Handed to the worker, without a result yet; the first is the one it runs.
    assigned: VecDeque<usize>,
    /// The rest of the unit (scope, file) it works on, not handed out yet: a unit goes out a
    /// test or two at a time, so that -x, a crash or a timeout finds the rest here.
    backlog: VecDeque<usize>,
    /// Reported, but whose fingerprints it has not written yet: run again if it dies.
    provisional: Vec<usize>,
    /// Every test it reported: if it dies, its share of pytest's cache dies with it.
    reported: Vec<usize>,
}

/// What losing a worker means for its tests.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Loss {
    /// The test it was running: it gets an error report.
    pub(crate) running: Option<usize>,
    /// Reported, but their records died with it: they run again (first in `requeue`).
    pub(crate) rerun: Vec<usize>,
    /// Reported and durable: only their share of pytest's cache was lost.
    pub(crate) orphaned: Vec<usize>,
    /// Everything to hand out again (rerun, then the tests it held but had not started),
    /// as one unit; None when nothing is left.
    pub(crate) requeue: Option<Unit>,
}

#[derive(Debug)]
pub(crate) struct Ledger {
    holdings: Vec<Holding>,
    /// Each run-list test's expected seconds (the scheduler's cost rule); empty until the
    /// run's list is known.
    costs: Vec<f64>,
}

impl Ledger {
    pub(crate) fn new(workers: usize) -> Ledger {
        Ledger {
            holdings: (0..workers).map(|_| Holding::default()).collect(),
            costs: Vec::new(),
        }
    }

    /// The run's list is known: each test's expected seconds, by index.
    pub(crate) fn set_costs(&mut self, costs: Vec<f64>) {
        self.costs = costs;
    }

    /// The one cost rule: a test's expected seconds (0 when unknown to the run).
    pub(crate) fn cost(&self, test: usize) -> f64 {
        self.costs.get(test).copied().unwrap_or(0.0)
    }

    pub(crate) fn cost_of(&self, tests: &[usize]) -> f64 {
        tests.iter().map(|&i| self.cost(i)).sum()
    }

    pub(crate) fn expected_total(&self) -> f64 {
        self.costs.iter().sum()
    }

    /// A unit the worker takes from the scheduler, to hand out a test or two at a time.
    pub(crate) fn take(&mut self, worker: usize, unit: Unit) {
        self.holdings[worker].backlog.extend(unit.tests);
    }

    pub(crate) fn backlog_empty(&self, worker: usize) -> bool {
        self.holdings[worker].backlog.is_empty()
    }

    /// Up to `count` tests of its backlog, now handed to the worker.
    pub(crate) fn hand_out(&mut self, worker: usize, count: usize) -> Vec<usize> {
        let holding = &mut self.holdings[worker];
        let count = count.min(holding.backlog.len());
        let tests: Vec<usize> = holding.backlog.drain(..count).collect();
        holding.assigned.extend(&tests);
        tests
    }

    /// The test it runs now: the first it was handed without a result yet.
    pub(crate) fn running(&self, worker: usize) -> Option<usize> {
        self.holdings[worker].assigned.front().copied()
    }

    /// It holds tests without results, or a backlog.
    pub(crate) fn holds_work(&self, worker: usize) -> bool {
        let holding = &self.holdings[worker];
        !holding.assigned.is_empty() || !holding.backlog.is_empty()
    }

    /// It reported `test`; `durable`: every test it reported so far has its records written.
    pub(crate) fn reported(&mut self, worker: usize, test: usize, durable: bool) {
        let holding = &mut self.holdings[worker];
        holding.assigned.retain(|&a| a != test);
        holding.reported.push(test);
        if durable {
            holding.provisional.clear();
        } else {
            holding.provisional.push(test);
        }
    }

    /// The worker died: what it was running, what runs again, whose cache share was lost and
    /// what goes back to the queue. Its holding is empty afterwards.
    pub(crate) fn lose(&mut self, worker: usize) -> Loss {
        let holding = std::mem::take(&mut self.holdings[worker]);
        let mut held: Vec<usize> = holding.assigned.into_iter().collect();
        let running = (!held.is_empty()).then(|| held.remove(0));
        held.extend(holding.backlog);
        let rerun = holding.provisional;
        let orphaned = holding
            .reported
            .into_iter()
            .filter(|t| !rerun.contains(t))
            .collect();
        let tests: Vec<usize> = rerun.iter().copied().chain(held).collect();
        Loss {
            running,
            orphaned,
            requeue: self.unit(tests),
            rerun,
        }
    }

    /// A worker whose session ended with tests it never started: they go back, as one unit.
    pub(crate) fn give_back(&mut self, worker: usize) -> Option<Unit> {
        let held: Vec<usize> = self.holdings[worker].assigned.drain(..).collect();
        self.unit(held)
    }

    /// Every backlog not handed out (the run is over), emptied.
    pub(crate) fn drain_backlogs(&mut self) -> Vec<usize> {
        self.holdings
            .iter_mut()
            .flat_map(|h| h.backlog.drain(..))
            .collect()
    }

    fn unit(&self, tests: Vec<usize>) -> Option<Unit> {
        (!tests.is_empty()).then(|| Unit {
            cost: self.cost_of(&tests),
            tests,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger() -> Ledger {
        let mut ledger = Ledger::new(2);
        ledger.set_costs(vec![1.0, 2.0, 3.0, 4.0, 5.0]);
        ledger
    }

    #[test]
    fn a_unit_goes_out_a_test_or_two_at_a_time() {
        let mut l = ledger();
        l.take(
            0,
            Unit {
                tests: vec![0, 1, 2],
                cost: 6.0,
            },
        );
        assert_eq!(l.hand_out(0, 2), [0, 1]);
        assert_eq!(l.running(0), Some(0));
        l.reported(0, 0, true);
        assert_eq!(l.running(0), Some(1));
        assert_eq!(l.hand_out(0, 2), [2]);
        assert!(l.backlog_empty(0));
        assert!(l.holds_work(0));
        assert!(!l.holds_work(1));
    }

    #[test]
    fn losing_a_worker_splits_its_tests() {
        let mut l = ledger();
        l.take(
            0,
            Unit {
                tests: vec![0, 1, 2, 3, 4],
                cost: 15.0,
            },
        );
        l.hand_out(0, 2);
        l.reported(0, 0, true); // durable: only its cache share is lost
        l.hand_out(0, 1);
        l.reported(0, 1, false); // records not yet written: runs again
        let loss = l.lose(0);
        assert_eq!(loss.running, Some(2));
        assert_eq!(loss.rerun, [1]);
        assert_eq!(loss.orphaned, [0]);
        let requeue = loss.requeue.unwrap();
        assert_eq!(requeue.tests, [1, 3, 4]);
        assert_eq!(requeue.cost, 2.0 + 4.0 + 5.0, "one cost rule");
        assert!(!l.holds_work(0));
        assert_eq!(l.lose(0), Loss::default());
    }

    #[test]
    fn a_durable_report_makes_earlier_ones_durable() {
        let mut l = ledger();
        l.take(
            1,
            Unit {
                tests: vec![0, 1, 2],
                cost: 6.0,
            },
        );
        l.hand_out(1, 3);
        l.reported(1, 0, false);
        l.reported(1, 1, true);
        let loss = l.lose(1);
        assert!(loss.rerun.is_empty());
        assert_eq!(loss.orphaned, [0, 1]);
        assert_eq!(loss.running, Some(2));
        assert_eq!(loss.requeue, None);
    }

    #[test]
    fn held_tests_go_back_and_backlogs_drain() {
        let mut l = ledger();
        l.take(
            0,
            Unit {
                tests: vec![0, 1, 2],
                cost: 6.0,
            },
        );
        l.hand_out(0, 2);
        let back = l.give_back(0).unwrap();
        assert_eq!((back.tests, back.cost), (vec![0, 1], 3.0));
        assert_eq!(l.drain_backlogs(), [2]);
        assert_eq!(l.give_back(0), None);
    }
}
