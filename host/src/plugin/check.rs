//! `cairn plugin check`: tests a merge plugin's laws inside the same sandbox
//! the node uses — determinism, commutativity, associativity (merged versions
//! stamped as the host stamps them) and idempotence — on sample values.
//!
//! Pairs and triples are tried smallest first, so the first violation found is
//! a minimal counterexample. When more than 10% of calls fail or keep the
//! siblings, the verdict is "inconclusive": random bytes make every JSON
//! plugin fail alike, which proves nothing about its laws.

use cairn_sdk::{ReconcileInput, Resolution, Sibling};

use super::PluginError;

/// Samples used at most (pairs and triples grow fast).
pub const SAMPLES_MAX: usize = 12;
/// Table and key the checker passes to `reconcile`.
pub const CHECK_TABLE: &str = "check";
/// Key the checker passes to `reconcile`.
pub const CHECK_KEY: &[u8] = b"k";

/// A law the plugin broke, with the smallest inputs that show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which law.
    pub law: &'static str,
    /// The sample values involved.
    pub inputs: Vec<Vec<u8>>,
    /// What one side of the law gave.
    pub left: String,
    /// What the other side gave.
    pub right: String,
}

/// The checker's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every law held on every combination tried.
    Pass {
        /// Calls made.
        calls: usize,
    },
    /// A law failed.
    Violation(Violation),
    /// Too many calls failed (or kept the siblings) to judge.
    Inconclusive {
        /// Calls that failed.
        failed: usize,
        /// Calls made.
        calls: usize,
        /// One failure, as an example.
        example: String,
    },
}

/// A merged or kept outcome, comparable across calls.
type Outcome = Result<Resolution, PluginError>;

struct Checker<'a, F: Fn(&[Sibling]) -> Outcome> {
    call: &'a F,
    calls: usize,
    failed: usize,
    example: Option<String>,
}

impl<F: Fn(&[Sibling]) -> Outcome> Checker<'_, F> {
    fn merge(&mut self, siblings: &[Sibling]) -> Outcome {
        self.calls += 1;
        let outcome = (self.call)(siblings);
        // A call that fails, or declines to merge, says nothing about the laws.
        match &outcome {
            Err(e) => {
                self.failed += 1;
                self.example.get_or_insert_with(|| e.header_value());
            }
            Ok(Resolution::KeepSiblings) => {
                self.failed += 1;
                self.example.get_or_insert_with(|| "KeepSiblings".into());
            }
            Ok(Resolution::Merged { .. }) => {}
        }
        outcome
    }
}

fn describe(outcome: &Outcome) -> String {
    match outcome {
        Ok(Resolution::Merged { value, .. }) => String::from_utf8_lossy(value).into_owned(),
        Ok(Resolution::KeepSiblings) => "KeepSiblings".into(),
        Err(e) => format!("error: {}", e.header_value()),
    }
}

fn same(a: &Outcome, b: &Outcome) -> bool {
    match (a, b) {
        (Ok(Resolution::Merged { value: x, .. }), Ok(Resolution::Merged { value: y, .. })) => {
            x == y
        }
        (Ok(Resolution::KeepSiblings), Ok(Resolution::KeepSiblings)) => true,
        // Failures are counted, not judged.
        _ => a.is_err() || b.is_err(),
    }
}

/// The version the host writes back for a merge of `of`: the merged value,
/// the plugin's content type (else the first sibling's), the largest timestamp.
fn stamped(outcome: &Outcome, of: &[&Sibling]) -> Option<Sibling> {
    match outcome {
        Ok(Resolution::Merged {
            value,
            content_type,
        }) => Some(Sibling {
            value: value.clone(),
            content_type: content_type
                .clone()
                .unwrap_or_else(|| of[0].content_type.clone()),
            timestamp_ms: of.iter().map(|s| s.timestamp_ms).max().unwrap_or(0),
        }),
        _ => None,
    }
}

/// Sorts siblings as the host does before a call.
fn sorted(mut siblings: Vec<Sibling>) -> Vec<Sibling> {
    siblings.sort_by_key(|s| s.timestamp_ms);
    siblings
}

/// Checks the laws with `call` on `samples` (each a value; timestamps 1, 2, ...).
pub fn check_laws<F: Fn(&[Sibling]) -> Outcome>(
    call: &F,
    samples: &[Vec<u8>],
    content_type: &str,
) -> Verdict {
    let mut values: Vec<&Vec<u8>> = samples.iter().take(SAMPLES_MAX).collect();
    values.sort_by_key(|v| (v.len(), v.to_vec()));
    values.dedup();
    let siblings: Vec<Sibling> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Sibling {
            value: v.to_vec(),
            content_type: content_type.to_owned(),
            timestamp_ms: i as u64 + 1,
        })
        .collect();
    let mut checker = Checker {
        call,
        calls: 0,
        failed: 0,
        example: None,
    };
    let violation = |law, inputs: &[&Sibling], left: &Outcome, right: &Outcome| {
        Verdict::Violation(Violation {
            law,
            inputs: inputs.iter().map(|s| s.value.clone()).collect(),
            left: describe(left),
            right: describe(right),
        })
    };
    let n = siblings.len();
    for i in 0..n {
        for j in i + 1..n {
            let (a, b) = (&siblings[i], &siblings[j]);
            let ab = checker.merge(&[a.clone(), b.clone()]);
            let again = checker.merge(&[a.clone(), b.clone()]);
            if !same(&ab, &again) {
                return violation("determinism", &[a, b], &ab, &again);
            }
            let ba = checker.merge(&[b.clone(), a.clone()]);
            if !same(&ab, &ba) {
                return violation("commutativity", &[a, b], &ab, &ba);
            }
            if let Some(m) = stamped(&ab, &[a, b]) {
                let twice = checker.merge(&[m.clone(), m.clone()]);
                if !same(&ab, &twice) {
                    return violation("idempotence", &[a, b], &ab, &twice);
                }
            }
        }
    }
    for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                if i == j || j == k || i == k {
                    continue;
                }
                let (a, b, c) = (&siblings[i], &siblings[j], &siblings[k]);
                let ab = checker.merge(&sorted(vec![a.clone(), b.clone()]));
                let bc = checker.merge(&sorted(vec![b.clone(), c.clone()]));
                let (Some(m_ab), Some(m_bc)) = (stamped(&ab, &[a, b]), stamped(&bc, &[b, c]))
                else {
                    continue;
                };
                let left = checker.merge(&sorted(vec![m_ab, c.clone()]));
                let right = checker.merge(&sorted(vec![a.clone(), m_bc]));
                if !same(&left, &right) {
                    return violation("associativity", &[a, b, c], &left, &right);
                }
            }
        }
    }
    if checker.failed * 10 > checker.calls {
        return Verdict::Inconclusive {
            failed: checker.failed,
            calls: checker.calls,
            example: checker.example.unwrap_or_default(),
        };
    }
    Verdict::Pass {
        calls: checker.calls,
    }
}

/// The input the checker hands the plugin for `siblings`.
pub fn check_input(siblings: &[Sibling]) -> ReconcileInput {
    ReconcileInput {
        table: CHECK_TABLE.into(),
        key: CHECK_KEY.to_vec(),
        siblings: siblings.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(values: &[&str]) -> Vec<Vec<u8>> {
        values.iter().map(|v| v.as_bytes().to_vec()).collect()
    }

    fn max_merge(siblings: &[Sibling]) -> Outcome {
        Ok(Resolution::merged(
            siblings
                .iter()
                .map(|s| s.value.clone())
                .max()
                .unwrap_or_default(),
        ))
    }

    fn first_wins(siblings: &[Sibling]) -> Outcome {
        Ok(Resolution::merged(siblings[0].value.clone()))
    }

    fn concatenate(siblings: &[Sibling]) -> Outcome {
        Ok(Resolution::merged(
            siblings.iter().flat_map(|s| s.value.clone()).collect(),
        ))
    }

    fn always_traps(_: &[Sibling]) -> Outcome {
        Err(PluginError::Trap("unreachable".into()))
    }

    #[test]
    fn a_join_passes() {
        assert!(matches!(
            check_laws(&max_merge, &samples(&["a", "b", "c"]), "t"),
            Verdict::Pass { .. }
        ));
    }

    #[test]
    fn a_non_commutative_merge_is_caught_with_the_smallest_pair() {
        match check_laws(&first_wins, &samples(&["ccc", "a", "bb"]), "t") {
            Verdict::Violation(v) => {
                assert_eq!(v.law, "commutativity");
                assert_eq!(v.inputs, samples(&["a", "bb"]));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_non_idempotent_merge_is_caught() {
        match check_laws(&concatenate, &samples(&["a", "b"]), "t") {
            Verdict::Violation(v) => assert!(v.law == "commutativity" || v.law == "idempotence"),
            other => panic!("{other:?}"),
        }
    }

    fn keeps_siblings(_: &[Sibling]) -> Outcome {
        Ok(Resolution::KeepSiblings)
    }

    #[test]
    fn mostly_failing_calls_are_inconclusive() {
        assert!(matches!(
            check_laws(&keeps_siblings, &samples(&["a", "b", "c"]), "t"),
            Verdict::Inconclusive { .. }
        ));
        assert!(matches!(
            check_laws(&always_traps, &samples(&["a", "b", "c"]), "t"),
            Verdict::Inconclusive { .. }
        ));
    }
}
