//! The process's open-file budget, split so that neither HTTP clients nor
//! peers can take the descriptors storage needs (blob files, LMDB, the data
//! dir lock): a node out of descriptors cannot accept, and its blob writes
//! fail.

use crate::core::limits::PEER_CONNECTIONS_MAX;

/// How many connections each listener may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The open-files limit the split was made from.
    pub limit: u64,
    /// HTTP connections at once.
    pub http: usize,
    /// Peer connections at once.
    pub peers: usize,
}

/// Raises the open-files soft limit to the hard one (best effort), then
/// gives HTTP at most half of it and peers at most a quarter, keeping the
/// last quarter for storage and everything else.
pub fn descriptor_budget(http_wanted: usize) -> DescriptorBudget {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limits = getrlimit(Resource::Nofile);
    if limits.current < limits.maximum {
        let raised = rustix::process::Rlimit {
            current: limits.maximum,
            maximum: limits.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            limits = raised;
        }
    }
    split(limits.current.unwrap_or(u64::MAX), http_wanted)
}

/// The split itself, for a given limit.
fn split(limit: u64, http_wanted: usize) -> DescriptorBudget {
    let share = |divisor: u64| {
        usize::try_from(limit / divisor)
            .unwrap_or(usize::MAX)
            .max(1)
    };
    DescriptorBudget {
        limit,
        http: http_wanted.min(share(2)),
        peers: PEER_CONNECTIONS_MAX.min(share(4)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_limit_leaves_a_quarter_for_storage() {
        let budget = split(1_024, 1_024);
        assert_eq!((budget.http, budget.peers), (512, 256));
        assert!(budget.limit - (budget.http + budget.peers) as u64 >= 256);
        // A generous limit leaves the configured caps alone.
        let budget = split(1 << 20, 1_024);
        assert_eq!((budget.http, budget.peers), (1_024, PEER_CONNECTIONS_MAX));
    }
}
