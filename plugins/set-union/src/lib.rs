//! Set union: values are JSON arrays of strings; the merge is their sorted union.

use std::collections::BTreeSet;

use cairn_sdk::{export_plugin, json, ReconcileInput, Resolution};

/// The plugin entry point.
pub fn reconcile(input: ReconcileInput) -> Resolution {
    match json::parse_all::<Vec<String>>(&input.siblings) {
        Some(sets) => {
            let union: BTreeSet<String> = sets.into_iter().flatten().collect();
            let sorted: Vec<String> = union.into_iter().collect();
            Resolution::Merged {
                value: json::to_bytes(&sorted),
                content_type: Some("application/json".into()),
            }
        }
        None => Resolution::KeepSiblings,
    }
}

/// Sample sets for `cairn plugin check`: distinct subsets of five words.
pub fn samples(seed: u64) -> Vec<Vec<u8>> {
    let words = ["a", "b", "c", "d", "e"];
    (0..10u64)
        .map(|i| {
            let bits = (seed.wrapping_mul(7).wrapping_add(i * 5)) % 32;
            let set: Vec<&str> = words
                .iter()
                .enumerate()
                .filter(|(j, _)| bits & (1 << j) != 0)
                .map(|(_, w)| *w)
                .collect();
            json::to_bytes(&set)
        })
        .collect()
}

export_plugin! {
    reconcile = reconcile;
    samples = samples;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_is_the_sorted_union() {
        let input = ReconcileInput::for_test(&[br#"["b","a"]"#, br#"["c","a"]"#]);
        let expected = Resolution::Merged {
            value: br#"["a","b","c"]"#.to_vec(),
            content_type: Some("application/json".into()),
        };
        assert_eq!(reconcile(input), expected);
        assert_eq!(
            reconcile(ReconcileInput::for_test(&[b"[1]", b"[]"])),
            Resolution::KeepSiblings
        );
    }
}
