//! A G-counter: a JSON object actor → count, where each client writes its own
//! actor's running total (kept client-side). The merge takes, per actor, the
//! largest total; the counter's value is the sum of the map.

use std::collections::BTreeMap;

use cairn_sdk::{export_plugin, json, ReconcileInput, Resolution};

/// actor → that actor's running total.
pub type Counter = BTreeMap<String, u64>;

/// Per-actor maximum of several counters.
pub fn merge_counters(counters: &[Counter]) -> Counter {
    let mut merged = Counter::new();
    for counter in counters {
        for (actor, &count) in counter {
            let entry = merged.entry(actor.clone()).or_insert(0);
            *entry = (*entry).max(count);
        }
    }
    merged
}

/// The plugin entry point.
pub fn reconcile(input: ReconcileInput) -> Resolution {
    match json::parse_all::<Counter>(&input.siblings) {
        Some(counters) => Resolution::Merged {
            value: json::to_bytes(&merge_counters(&counters)),
            content_type: Some("application/json".into()),
        },
        None => Resolution::KeepSiblings,
    }
}

/// Sample counters for `cairn plugin check`.
pub fn samples(seed: u64) -> Vec<Vec<u8>> {
    (0..10u64)
        .map(|i| {
            let counter: Counter = ["a", "b", "c"]
                .iter()
                .enumerate()
                .filter(|(j, _)| (seed + i + *j as u64).is_multiple_of(2))
                .map(|(j, actor)| {
                    (
                        (*actor).to_owned(),
                        (seed.wrapping_mul(7) + i * 3 + j as u64) % 9,
                    )
                })
                .collect();
            json::to_bytes(&counter)
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
    fn the_merge_takes_each_actors_largest_total() {
        let input = ReconcileInput::for_test(&[br#"{"a":3,"b":1}"#, br#"{"a":2,"c":5}"#]);
        let expected = Resolution::Merged {
            value: br#"{"a":3,"b":1,"c":5}"#.to_vec(),
            content_type: Some("application/json".into()),
        };
        assert_eq!(reconcile(input), expected);
        assert_eq!(
            reconcile(ReconcileInput::for_test(&[br#"{"a":-1}"#, b"{}"])),
            Resolution::KeepSiblings
        );
    }
}
