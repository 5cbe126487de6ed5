//! The seed's shopping cart: merges concurrent carts server-side.
//!
//! A cart is a JSON object `item → {"qty": int, "price": "12.80", "updated_ms": int}`.
//! The merge is the union of items; per item the largest qty wins, and price
//! and updated_ms come from the entry with the largest (updated_ms, price as a
//! string, bytewise); a missing updated_ms counts as 0. As in Dynamo, an item
//! removed in one cart and kept in a concurrent one comes back.

use std::collections::BTreeMap;

use cairn_sdk::{export_plugin, json, ReconcileInput, Resolution};
use serde::{Deserialize, Serialize};

/// One line of a cart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// Quantity.
    pub qty: i64,
    /// Price as a decimal string, e.g. "12.80".
    pub price: String,
    /// When the client last changed this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_ms: Option<i64>,
}

/// A cart: item name → line.
pub type Cart = BTreeMap<String, Item>;

/// Merges two lines of the same item.
pub fn merge_item(a: &Item, b: &Item) -> Item {
    let rank = |i: &Item| (i.updated_ms.unwrap_or(0), i.price.clone());
    let newest = if rank(b) > rank(a) { b } else { a };
    Item {
        qty: a.qty.max(b.qty),
        price: newest.price.clone(),
        updated_ms: newest.updated_ms,
    }
}

/// Merges carts: the union of their items, each merged with [`merge_item`].
pub fn merge_carts(carts: &[Cart]) -> Cart {
    let mut merged = Cart::new();
    for cart in carts {
        for (name, item) in cart {
            let line = match merged.get(name) {
                Some(existing) => merge_item(existing, item),
                None => item.clone(),
            };
            merged.insert(name.clone(), line);
        }
    }
    merged
}

/// The plugin entry point: siblings that are not carts are left to the client.
pub fn reconcile(input: ReconcileInput) -> Resolution {
    match json::parse_all::<Cart>(&input.siblings) {
        Some(carts) => Resolution::Merged {
            value: json::to_bytes(&merge_carts(&carts)),
            content_type: Some("application/json".into()),
        },
        None => Resolution::KeepSiblings,
    }
}

/// Sample carts for `cairn plugin check`.
pub fn samples(seed: u64) -> Vec<Vec<u8>> {
    let items = ["apple", "bread", "milk", "tea"];
    (0..12u64)
        .map(|i| {
            let mut cart = Cart::new();
            for (j, name) in items.iter().enumerate() {
                let roll = seed.wrapping_mul(31).wrapping_add(i * 7 + j as u64 * 13) % 5;
                if roll < 3 {
                    let item = Item {
                        qty: roll as i64 + 1,
                        price: format!("{}.{}0", 1 + roll, j),
                        updated_ms: (roll != 0).then_some((i * 10 + roll) as i64),
                    };
                    cart.insert((*name).to_owned(), item);
                }
            }
            json::to_bytes(&cart)
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

    fn merged(values: &[&str]) -> Resolution {
        let bytes: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        reconcile(ReconcileInput::for_test(&bytes))
    }

    #[test]
    fn concurrent_carts_merge_to_the_union_with_the_largest_quantities() {
        let a =
            r#"{"apple":{"qty":1,"price":"0.50","updated_ms":10},"tea":{"qty":1,"price":"3.00"}}"#;
        let b = r#"{"apple":{"qty":3,"price":"0.40","updated_ms":20},"milk":{"qty":2,"price":"1.10","updated_ms":5}}"#;
        let expected = r#"{"apple":{"qty":3,"price":"0.40","updated_ms":20},"milk":{"qty":2,"price":"1.10","updated_ms":5},"tea":{"qty":1,"price":"3.00"}}"#;
        assert_eq!(
            merged(&[a, b]),
            Resolution::Merged {
                value: expected.as_bytes().to_vec(),
                content_type: Some("application/json".into())
            }
        );
        assert_eq!(merged(&[b, a]), merged(&[a, b]));
    }

    #[test]
    fn equal_timestamps_pick_the_bytewise_larger_price() {
        let a = Item {
            qty: 1,
            price: "9.00".into(),
            updated_ms: None,
        };
        let b = Item {
            qty: 2,
            price: "10.00".into(),
            updated_ms: Some(0),
        };
        assert_eq!(merge_item(&a, &b).price, "9.00");
        assert_eq!(merge_item(&b, &a).price, "9.00");
    }

    #[test]
    fn anything_but_carts_keeps_the_siblings() {
        assert_eq!(merged(&["{}", "not json"]), Resolution::KeepSiblings);
        assert_eq!(
            merged(&["{}", r#"{"x":{"qty":"many","price":"1"}}"#]),
            Resolution::KeepSiblings
        );
    }

    #[test]
    fn the_merge_is_associative_and_idempotent_on_samples() {
        let carts: Vec<Cart> = samples(3)
            .iter()
            .map(|b| serde_json::from_slice(b).unwrap())
            .collect();
        for a in &carts {
            assert_eq!(merge_carts(&[a.clone(), a.clone()]), *a);
            for b in &carts {
                for c in &carts {
                    let left = merge_carts(&[merge_carts(&[a.clone(), b.clone()]), c.clone()]);
                    let right = merge_carts(&[a.clone(), merge_carts(&[b.clone(), c.clone()])]);
                    assert_eq!(left, right);
                }
            }
        }
    }
}
