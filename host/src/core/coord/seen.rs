//! Forwarded requests already taken: a forward delivered twice (the
//! simulator duplicates frames; a transport that retries after a reconnect
//! could too) is coordinated once, so one client write never becomes two
//! versions with two dots.

use std::collections::{HashSet, VecDeque};

use crate::core::types::NodeId;

/// The last `capacity` (forwarder, request id) pairs taken, oldest evicted
/// first: duplicates arrive within moments of the original.
#[derive(Debug)]
pub struct SeenForwards {
    order: VecDeque<(NodeId, u64)>,
    set: HashSet<(NodeId, u64)>,
    capacity: usize,
}

impl SeenForwards {
    /// Remembers at most `capacity` forwards.
    pub fn new(capacity: usize) -> SeenForwards {
        SeenForwards {
            order: VecDeque::new(),
            set: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// Records `request` from `from`; `false` if it was taken already.
    pub fn first_time(&mut self, from: &NodeId, request: u64) -> bool {
        let entry = (from.clone(), request);
        if self.set.contains(&entry) {
            return false;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        self.order.push_back(entry.clone());
        self.set.insert(entry);
        true
    }

    /// Forwards remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether none is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_is_taken_once_and_memory_stays_bounded() {
        let a = NodeId::new("a").expect("id");
        let b = NodeId::new("b").expect("id");
        let mut seen = SeenForwards::new(2);
        assert!(seen.first_time(&a, 1));
        assert!(!seen.first_time(&a, 1));
        assert!(seen.first_time(&b, 1), "ids are per forwarder");
        assert!(seen.first_time(&a, 2));
        assert_eq!(seen.len(), 2);
        // The oldest was evicted.
        assert!(seen.first_time(&a, 1));
    }
}
