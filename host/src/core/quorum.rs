//! Counting answers toward a quorum, free of any I/O.

use std::collections::BTreeSet;

use super::types::NodeId;

/// Tracks which replicas answered well and which failed, for one request.
#[derive(Debug, Clone)]
pub struct QuorumTracker {
    needed: usize,
    asked: Vec<NodeId>,
    ok: BTreeSet<NodeId>,
    failed: BTreeSet<NodeId>,
}

impl QuorumTracker {
    /// A quorum of `needed` among the `asked` replicas.
    pub fn new(needed: usize, asked: Vec<NodeId>) -> Self {
        QuorumTracker {
            needed,
            asked,
            ok: BTreeSet::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Records a good answer; a replica counts once, whatever it repeats, and
    /// a node that was not asked never counts.
    pub fn record_ok(&mut self, node: &NodeId) {
        if self.asked.contains(node) && !self.failed.contains(node) {
            self.ok.insert(node.clone());
        }
    }

    /// Records a failure.
    pub fn record_failure(&mut self, node: &NodeId) {
        if self.asked.contains(node) && !self.ok.contains(node) {
            self.failed.insert(node.clone());
        }
    }

    /// Whether enough replicas answered well.
    pub fn is_met(&self) -> bool {
        self.ok.len() >= self.needed
    }

    /// Whether the quorum can no longer be met.
    pub fn is_impossible(&self) -> bool {
        self.asked.len().saturating_sub(self.failed.len()) < self.needed
    }

    /// Whether every replica asked has answered one way or the other.
    pub fn all_answered(&self) -> bool {
        self.ok.len() + self.failed.len() >= self.asked.len()
    }

    /// The replicas asked that have not answered either way.
    pub fn unanswered(&self) -> Vec<NodeId> {
        self.asked
            .iter()
            .filter(|n| !self.ok.contains(*n) && !self.failed.contains(*n))
            .cloned()
            .collect()
    }

    /// Good answers so far.
    pub fn ok_count(&self) -> usize {
        self.ok.len()
    }

    /// Answers needed.
    pub fn needed(&self) -> usize {
        self.needed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_is_met_by_distinct_good_answers() {
        let a = NodeId::new("a").unwrap();
        let b = NodeId::new("b").unwrap();
        let c = NodeId::new("c").unwrap();
        let all = vec![a.clone(), b.clone(), c.clone()];
        let mut q = QuorumTracker::new(2, all.clone());
        q.record_ok(&a);
        q.record_ok(&a);
        q.record_ok(&NodeId::new("stranger").unwrap());
        assert!(!q.is_met());
        q.record_failure(&b);
        assert!(!q.is_impossible());
        q.record_failure(&c);
        assert!(q.is_impossible());
        assert!(q.all_answered());
        let mut q = QuorumTracker::new(2, all);
        q.record_ok(&a);
        q.record_ok(&c);
        assert!(q.is_met());
    }
}
