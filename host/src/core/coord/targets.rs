//! Which nodes a request goes to (sloppy quorum): the first N reachable
//! nodes of the key's preference list. Each unreachable primary is stood in
//! for by the next reachable node after the primaries, which keeps the
//! write as a hint for that primary (hinted handoff) instead of as its own.
//!
//! Who stands in for whom is a function of the nodes asked and the key's
//! primaries alone, so the coordinator derives it again wherever it sends
//! (a write that first reads sends later than it chose) and always agrees
//! with its first choice.

use crate::core::types::NodeId;

/// The nodes to ask among `preference` (the key's preference list: its `n`
/// primaries first), `is_up` saying which are reachable. Without `sloppy`
/// only the reachable primaries.
pub fn targets(
    preference: &[NodeId],
    n: usize,
    sloppy: bool,
    is_up: impl Fn(&NodeId) -> bool,
) -> Vec<NodeId> {
    let n = n.min(preference.len());
    let (primaries, rest) = preference.split_at(n);
    let mut stand_ins = rest.iter().filter(|node| is_up(node));
    let mut asked = Vec::with_capacity(n);
    for primary in primaries {
        if is_up(primary) {
            asked.push(primary.clone());
        } else if sloppy {
            if let Some(stand_in) = stand_ins.next() {
                asked.push(stand_in.clone());
            }
        }
    }
    asked
}

/// For each node asked that is not a primary, the primary it stands in
/// for: the primaries not asked, in order, matched with the stand-ins in
/// the order they were asked.
pub fn stand_ins<'a>(
    primaries: &'a [NodeId],
    asked: &'a [NodeId],
) -> impl Iterator<Item = (&'a NodeId, &'a NodeId)> {
    let absent = primaries.iter().filter(|p| !asked.contains(p));
    let standing = asked.iter().filter(|a| !primaries.contains(a));
    standing.zip(absent)
}

/// The primary `node` stands in for among `asked` (`None`: it is a primary,
/// or was not asked).
pub fn owner_of<'a>(
    node: &NodeId,
    primaries: &'a [NodeId],
    asked: &'a [NodeId],
) -> Option<&'a NodeId> {
    stand_ins(primaries, asked).find_map(|(stand_in, owner)| (stand_in == node).then_some(owner))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<NodeId> {
        names.iter().map(|n| NodeId::new(n).unwrap()).collect()
    }

    #[test]
    fn unreachable_primaries_are_stood_in_for_by_the_next_reachable_nodes() {
        let preference = ids(&["a", "b", "c", "d", "e"]);
        let down = ids(&["b", "c", "d"]);
        let up = |n: &NodeId| !down.contains(n);
        let asked = targets(&preference, 3, true, up);
        assert_eq!(asked, ids(&["a", "e"]), "only e is left to stand in");
        let primaries = &preference[..3];
        let pairs: Vec<_> = stand_ins(primaries, &asked).collect();
        assert_eq!(pairs, vec![(&ids(&["e"])[0], &ids(&["b"])[0])]);
        assert_eq!(
            owner_of(&ids(&["e"])[0], primaries, &asked),
            Some(&ids(&["b"])[0])
        );
        assert_eq!(owner_of(&ids(&["a"])[0], primaries, &asked), None);
    }

    #[test]
    fn all_up_asks_the_primaries_and_strict_tables_never_ask_others() {
        let preference = ids(&["a", "b", "c", "d"]);
        assert_eq!(
            targets(&preference, 3, true, |_| true),
            ids(&["a", "b", "c"])
        );
        let b_down = |n: &NodeId| n.as_str() != "b";
        assert_eq!(targets(&preference, 3, false, b_down), ids(&["a", "c"]));
        // The stand-in takes the absent primary's place in the list.
        assert_eq!(targets(&preference, 3, true, b_down), ids(&["a", "d", "c"]));
        assert_eq!(
            targets(&preference[..2], 3, true, |_| true),
            ids(&["a", "b"])
        );
    }
}
