//! Few owner changes that give every window of `target_n` consecutive
//! partitions distinct owners: a shortest path around the ring.
//!
//! Swaps repair crowded windows one pair at a time and stall when every
//! member's count is pinned (exactly `target_n + 1` members). This search
//! instead treats the assignment as a walk whose state is the last
//! `target_n - 1` owners: a partition may take any member not in that
//! state, and costs one move when it differs from its current owner.
//! Pure logic, no I/O; the ring decides whether to take the result.

use std::collections::HashMap;

/// The most walk states (ordered tuples of distinct members) searched;
/// beyond it the search declines rather than take long.
const STATES_MAX: usize = 4_096;

/// The most (position × state) back-pointers kept, bounding memory.
const CELLS_MAX: usize = 1 << 22;

/// The most (position × state × choice) steps taken, bounding time: the
/// search runs on the node's event loop. Four members with windows of three
/// on 1,024 partitions take 24,576.
const STEPS_MAX: usize = 1 << 24;

/// An assignment of `members` to the ring's positions in which every
/// `target_n` consecutive positions (cyclically) are distinct, changing as
/// few positions of `owners` as possible among the assignments that keep
/// the owners of a start position whose window is already distinct.
/// `None` when no such assignment exists, the search would be too large
/// (states, memory or steps), or an owner is not in `members` (which must
/// be sorted).
pub fn fewest_changes<T: Clone + Ord>(owners: &[T], members: &[T], target_n: u8) -> Option<Vec<T>> {
    let n = usize::from(target_n);
    let q = owners.len();
    let m = members.len();
    if n < 2 || m < n || q < 2 * n {
        return None;
    }
    let current: Vec<usize> = owners
        .iter()
        .map(|o| members.binary_search(o).ok())
        .collect::<Option<_>>()?;
    let states = enumerate_states(m, n - 1)?;
    let branching = m - (n - 1);
    if states.len().saturating_mul(q) > CELLS_MAX
        || states.len().saturating_mul(q).saturating_mul(branching) > STEPS_MAX
    {
        return None;
    }
    let index: HashMap<&[usize], usize> = states
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_slice(), i))
        .collect();
    // next[s]: (member, following state) for each member not in state s.
    let next: Vec<Vec<(usize, usize)>> = states
        .iter()
        .map(|s| {
            (0..m)
                .filter(|c| !s.contains(c))
                .filter_map(|c| {
                    let mut shifted: Vec<usize> = s[1..].to_vec();
                    shifted.push(c);
                    index.get(shifted.as_slice()).map(|&to| (c, to))
                })
                .collect()
        })
        .collect();
    // Start where the current owners already fit: the head positions keep
    // their owners and cost nothing.
    let start = start_position(&current, n)?;
    let head: Vec<usize> = (0..n - 1).map(|i| current[(start + i) % q]).collect();
    let head_state = *index.get(head.as_slice())?;
    const UNREACHED: u32 = u32::MAX;
    let mut cost = vec![UNREACHED; states.len()];
    cost[head_state] = 0;
    let steps = q - (n - 1);
    let mut back = vec![u32::MAX; steps * states.len()];
    for step in 0..steps {
        let owner_now = current[(start + n - 1 + step) % q];
        let mut after = vec![UNREACHED; states.len()];
        for (s, &c_s) in cost.iter().enumerate() {
            if c_s == UNREACHED {
                continue;
            }
            for &(member, to) in &next[s] {
                let c = c_s + u32::from(member != owner_now);
                if c < after[to] {
                    after[to] = c;
                    back[step * states.len() + to] = s as u32;
                }
            }
        }
        cost = after;
    }
    // The walk must close: the last owners followed by the head must fit.
    let end = (0..states.len())
        .filter(|&s| cost[s] != UNREACHED && closes(&states[s], &head, n))
        .min_by_key(|&s| (cost[s], s))?;
    let mut walk = vec![0usize; q];
    for (i, &h) in head.iter().enumerate() {
        walk[i] = h;
    }
    let mut state = end;
    for step in (0..steps).rev() {
        walk[n - 1 + step] = *states[state].last()?;
        state = back[step * states.len() + state] as usize;
    }
    let mut assignment = owners.to_vec();
    for (i, member) in walk.into_iter().enumerate() {
        assignment[(start + i) % q] = members[member].clone();
    }
    Some(assignment)
}

/// Every ordered tuple of `len` distinct values below `m`, or `None` when
/// there are more than [`STATES_MAX`].
fn enumerate_states(m: usize, len: usize) -> Option<Vec<Vec<usize>>> {
    let mut count: usize = 1;
    for i in 0..len {
        count = count.checked_mul(m - i)?;
        if count > STATES_MAX {
            return None;
        }
    }
    let mut out = Vec::with_capacity(count);
    let mut current = Vec::with_capacity(len);
    fn extend(m: usize, len: usize, current: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if current.len() == len {
            out.push(current.clone());
            return;
        }
        for c in 0..m {
            if !current.contains(&c) {
                current.push(c);
                extend(m, len, current, out);
                current.pop();
            }
        }
    }
    extend(m, len, &mut current, &mut out);
    Some(out)
}

/// A position whose `n - 1` owners from there on are distinct, preferring
/// one where the whole window starting there is distinct too.
fn start_position(current: &[usize], n: usize) -> Option<usize> {
    let q = current.len();
    let distinct = |p: usize, len: usize| {
        let window: Vec<usize> = (0..len).map(|d| current[(p + d) % q]).collect();
        window
            .iter()
            .enumerate()
            .all(|(i, a)| !window[..i].contains(a))
    };
    (0..q)
        .find(|&p| distinct(p, n))
        .or_else(|| (0..q).find(|&p| distinct(p, n - 1)))
}

/// Whether the walk's last `n - 1` owners followed by its first `n - 1`
/// keep every window of `n` distinct.
fn closes(tail: &[usize], head: &[usize], n: usize) -> bool {
    let seam: Vec<usize> = tail.iter().chain(head).copied().collect();
    (0..=seam.len() - n).all(|j| {
        let window = &seam[j..j + n];
        window
            .iter()
            .enumerate()
            .all(|(i, a)| !window[..i].contains(a))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows_distinct(owners: &[usize], n: usize) -> bool {
        let q = owners.len();
        (0..q).all(|p| {
            let w: Vec<usize> = (0..n).map(|d| owners[(p + d) % q]).collect();
            w.iter().enumerate().all(|(i, a)| !w[..i].contains(a))
        })
    }

    #[test]
    fn an_already_spread_ring_is_left_as_it_is() {
        let owners: Vec<usize> = (0..64).map(|p| p % 4).collect();
        let found = fewest_changes(&owners, &[0, 1, 2, 3], 3).unwrap();
        assert_eq!(found, owners);
    }

    #[test]
    fn a_crowded_ring_of_four_members_is_repaired_with_few_changes() {
        // Round robin with two positions exchanged: two windows crowd.
        let mut owners: Vec<usize> = (0..64).map(|p| p % 4).collect();
        owners.swap(10, 13);
        assert!(!windows_distinct(&owners, 3));
        let found = fewest_changes(&owners, &[0, 1, 2, 3], 3).unwrap();
        assert!(windows_distinct(&found, 3));
        let changed = (0..64).filter(|&p| found[p] != owners[p]).count();
        assert!(changed <= 4, "{changed} changes");
    }

    #[test]
    fn impossible_or_oversized_searches_decline() {
        // Three members cannot spread windows of three over 64 positions.
        let owners: Vec<usize> = (0..64).map(|p| p % 3).collect();
        assert_eq!(fewest_changes(&owners, &[0, 1, 2], 3), None);
        // An owner outside the member list.
        assert_eq!(fewest_changes(&[0, 1, 2, 9], &[0, 1, 2], 2), None);
        // Windows of 9 over 10 members: 10!/1! states, too many.
        let owners: Vec<usize> = (0..64).map(|p| p % 10).collect();
        assert_eq!(
            fewest_changes(&owners, &(0..10).collect::<Vec<_>>(), 9),
            None
        );
    }
}
