//! What both runners record and how they judge it: a key's history, what
//! a read showed in the workload's terms, and the workload's checks on one
//! key at the end of a run.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::check::{
    check_cart, check_counter, check_set, check_siblings, Add, CounterRead, Increment, Removal,
    SetRead, Tally, Update,
};
use super::Workload;

/// One key's history, as clients recorded it.
#[derive(Debug, Default)]
pub struct History {
    /// Adds of unique elements (set, register) or items (cart).
    pub adds: Vec<Add>,
    /// Cart removals.
    pub removals: Vec<Removal>,
    /// Counter increments.
    pub increments: Vec<Increment>,
    /// Siblings-bound updates.
    pub updates: Vec<Update>,
    /// Reads of sets, carts and the siblings key.
    pub set_reads: Vec<SetRead>,
    /// Reads of the counter.
    pub counter_reads: Vec<CounterRead>,
    /// What clients found wrong on the way (an unreadable value).
    pub broken: Vec<String>,
}

impl History {
    /// Adds another client's history of the same key.
    pub fn append(&mut self, mut other: History) {
        self.adds.append(&mut other.adds);
        self.removals.append(&mut other.removals);
        self.increments.append(&mut other.increments);
        self.updates.append(&mut other.updates);
        self.set_reads.append(&mut other.set_reads);
        self.counter_reads.append(&mut other.counter_reads);
        self.broken.append(&mut other.broken);
    }
}

/// What a read showed, in the workload's terms.
#[derive(Debug, Default)]
pub struct Seen {
    /// Set and register elements, cart items.
    pub elements: BTreeSet<String>,
    /// The cart's entries (what a read-modify-write writes back).
    pub cart: BTreeMap<String, Value>,
    /// The counter, per actor (the largest total among the versions).
    pub counter: BTreeMap<String, u64>,
    /// The siblings key's values.
    pub values: BTreeSet<String>,
    /// Live versions returned.
    pub versions: u64,
}

/// Decodes the live values a read returned; a value the workload never
/// writes is an error.
pub fn decode_values(workload: Workload, values: &[&[u8]]) -> Result<Seen, String> {
    let mut seen = Seen {
        versions: values.len() as u64,
        ..Seen::default()
    };
    for value in values {
        let bad = || format!("an unreadable value: {}", String::from_utf8_lossy(value));
        match workload {
            Workload::Set | Workload::Register => {
                let list = serde_json::from_slice::<Vec<String>>(value).map_err(|_| bad())?;
                seen.elements.extend(list);
            }
            Workload::Counter => {
                let map =
                    serde_json::from_slice::<BTreeMap<String, u64>>(value).map_err(|_| bad())?;
                for (actor, total) in map {
                    let entry = seen.counter.entry(actor).or_insert(0);
                    *entry = (*entry).max(total);
                }
            }
            Workload::Cart => {
                let map =
                    serde_json::from_slice::<BTreeMap<String, Value>>(value).map_err(|_| bad())?;
                for (item, entry) in map {
                    seen.elements.insert(item.clone());
                    seen.cart.entry(item).or_insert(entry);
                }
            }
            Workload::Siblings => {
                seen.values
                    .insert(String::from_utf8_lossy(value).into_owned());
            }
        }
    }
    Ok(seen)
}

/// The workload's checks on one key, given its history and the final read:
/// the tally, and what broke a guarantee. `writers` is the number of
/// clients; `without_faults` says the run had no fault at all, so a stale
/// read breaks R + W > N (lww excepted: a survivor may have been
/// overwritten and written back between).
pub fn check_key(
    workload: Workload,
    key: &str,
    history: &History,
    seen: &Seen,
    writers: u64,
    without_faults: bool,
) -> (Tally, Vec<String>) {
    let named = |list: Vec<String>, what: &str| -> Vec<String> {
        list.into_iter()
            .map(|e| format!("{key}: {what}{e}"))
            .collect()
    };
    let (tally, mut broken) = match workload {
        Workload::Set => {
            let (tally, lost) = check_set(&history.adds, &history.set_reads, &seen.elements);
            (tally, named(lost, "acknowledged and lost: "))
        }
        Workload::Register => {
            // Loss is the price of last-write-wins: measured, not a
            // failure. A read is stale only if it missed an element that
            // survived (one lww dropped is missing by design).
            let (mut tally, _) = check_set(&history.adds, &history.set_reads, &seen.elements);
            let survivors: Vec<Add> = history
                .adds
                .iter()
                .filter(|a| seen.elements.contains(&a.element))
                .cloned()
                .collect();
            tally.stale_reads = check_set(&survivors, &history.set_reads, &seen.elements)
                .0
                .stale_reads;
            (tally, Vec::new())
        }
        Workload::Cart => {
            let (tally, lost) = check_cart(
                &history.adds,
                &history.removals,
                &history.set_reads,
                &seen.elements,
            );
            (tally, named(lost, "acknowledged and lost: "))
        }
        Workload::Counter => {
            let (tally, broken) =
                check_counter(&history.increments, &history.counter_reads, &seen.counter);
            (tally, named(broken, ""))
        }
        Workload::Siblings => {
            let (tally, broken) =
                check_siblings(&history.updates, &history.set_reads, writers, &seen.values);
            (tally, named(broken, ""))
        }
    };
    if tally.unexpected > 0 && !matches!(workload, Workload::Counter | Workload::Siblings) {
        broken.push(format!(
            "{key}: {} elements found were never attempted",
            tally.unexpected
        ));
    }
    if without_faults && tally.stale_reads > 0 && workload != Workload::Register {
        broken.push(format!(
            "{key}: {} stale reads without any fault",
            tally.stale_reads
        ));
    }
    broken.extend(history.broken.iter().cloned());
    (tally, broken)
}
