//! Timers as data: the node's periodic work and its requests' deadlines,
//! each kept in one index the node asks what is due, instead of a field per
//! timer and a scan of every pending request on each tick.

use std::collections::BTreeSet;

/// The node's periodic work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Ping every other member (liveness).
    Ping,
    /// Send the metadata to one random member.
    Gossip,
    /// Ask a seed again to be admitted (while a join is under way).
    Join,
    /// Walk the store into the anti-entropy trees and start an exchange.
    AntiEntropy,
    /// Deliver hints to owners that are reachable again.
    Handoff,
    /// Check and collect tombstones whose grace has passed.
    Reap,
    /// Ask for the next page of a partition transfer.
    Transfer,
}

impl Timer {
    const ALL: [Timer; 7] = [
        Timer::Ping,
        Timer::Gossip,
        Timer::Join,
        Timer::AntiEntropy,
        Timer::Handoff,
        Timer::Reap,
        Timer::Transfer,
    ];

    fn slot(self) -> usize {
        match self {
            Timer::Ping => 0,
            Timer::Gossip => 1,
            Timer::Join => 2,
            Timer::AntiEntropy => 3,
            Timer::Handoff => 4,
            Timer::Reap => 5,
            Timer::Transfer => 6,
        }
    }
}

/// When each [`Timer`] fires next (`None`: not armed).
#[derive(Debug, Default, Clone)]
pub struct TimerTable {
    at_ms: [Option<u64>; Timer::ALL.len()],
}

impl TimerTable {
    /// Arms `timer` to fire at `at_ms` (replacing an earlier setting).
    pub fn set(&mut self, timer: Timer, at_ms: u64) {
        self.at_ms[timer.slot()] = Some(at_ms);
    }

    /// Whether `timer` is armed and due at `now_ms`; a due timer is re-armed
    /// `every_ms` later, so a caller that acts on `true` keeps its period.
    pub fn fire(&mut self, timer: Timer, now_ms: u64, every_ms: u64) -> bool {
        match self.at_ms[timer.slot()] {
            Some(at) if at <= now_ms => {
                self.at_ms[timer.slot()] = Some(now_ms + every_ms);
                true
            }
            _ => false,
        }
    }

    /// The earliest armed timer's deadline: when the driver must tick next
    /// at the latest for this table.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.at_ms.iter().flatten().copied().min()
    }
}

/// Requests' deadlines in order, so a tick touches only the requests that
/// are due. Entries are not removed when a request ends early: the owner
/// checks that a due id is still pending (its table is the truth), and each
/// entry leaves the index once its deadline passes.
#[derive(Debug, Default, Clone)]
pub struct Deadlines {
    index: BTreeSet<(u64, u64)>,
}

impl Deadlines {
    /// Request `id` expires at `deadline_ms`.
    pub fn insert(&mut self, deadline_ms: u64, id: u64) {
        self.index.insert((deadline_ms, id));
    }

    /// Request `id` no longer expires at `deadline_ms` (it ended).
    pub fn remove(&mut self, deadline_ms: u64, id: u64) {
        self.index.remove(&(deadline_ms, id));
    }

    /// Removes and returns the ids due at `now_ms`, earliest deadline first
    /// (ties by id), so a replay of the same inputs expires them in the same order.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<u64> {
        let due = match now_ms.checked_add(1) {
            Some(after) => {
                let later = self.index.split_off(&(after, 0));
                std::mem::replace(&mut self.index, later)
            }
            None => std::mem::take(&mut self.index),
        };
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// The earliest deadline indexed.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.index.first().map(|(at, _)| *at)
    }

    /// How many entries the index holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_fires_once_per_period_and_only_when_armed() {
        let mut timers = TimerTable::default();
        assert!(!timers.fire(Timer::Join, 10, 5), "not armed");
        timers.set(Timer::Ping, 100);
        timers.set(Timer::Gossip, 50);
        assert_eq!(timers.next_deadline_ms(), Some(50));
        assert!(!timers.fire(Timer::Ping, 99, 1_000));
        assert!(timers.fire(Timer::Ping, 130, 1_000));
        assert!(!timers.fire(Timer::Ping, 1_129, 1_000));
        assert!(timers.fire(Timer::Ping, 1_130, 1_000));
        assert_eq!(timers.next_deadline_ms(), Some(50));
    }

    #[test]
    fn deadlines_come_due_in_order_and_only_once() {
        let mut deadlines = Deadlines::default();
        deadlines.insert(30, 7);
        deadlines.insert(10, 9);
        deadlines.insert(30, 2);
        deadlines.insert(u64::MAX, 1);
        assert_eq!(deadlines.take_due(5), Vec::<u64>::new());
        assert_eq!(deadlines.take_due(30), vec![9, 2, 7]);
        assert_eq!(deadlines.take_due(30), Vec::<u64>::new());
        assert_eq!(deadlines.next_deadline_ms(), Some(u64::MAX));
        assert_eq!(deadlines.take_due(u64::MAX), vec![1]);
        assert!(deadlines.is_empty());
    }
}
