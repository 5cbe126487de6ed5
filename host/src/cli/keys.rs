//! `cairn key`: create, list and revoke API keys (an admin key is needed:
//! `CAIRN_API_KEY` or `CAIRN_API_KEY_FILE`).

use clap::Subcommand;
use serde_json::{json, Value};

use super::client::{exchange, fail_unless_ok, print_json, Target};

/// `cairn key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; prints it once (it is stored only as a hash).
    Create {
        /// admin, read-write or read-only.
        #[arg(long)]
        role: String,
        /// Limit the key to this table (repeatable; none: every table).
        #[arg(long = "table")]
        tables: Vec<String>,
        #[command(flatten)]
        target: Target,
    },
    /// List keys (ids, roles, tables; never the keys themselves).
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Revoke key ID on every node (within the gossip bound).
    Revoke {
        /// The key's id (the 16 hex digits after `cairn_`).
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a `cairn key` command.
pub fn run(command: &KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create {
            role,
            tables,
            target,
        } => {
            let body = json!({ "role": role, "tables": tables });
            let answer = exchange(
                "POST",
                &format!("{}/keys", base(target)),
                &[("content-type", "application/json")],
                Some(body.to_string().as_bytes()),
            )?;
            fail_unless_ok(&answer)?;
            let created: Value = serde_json::from_slice(&answer.body)?;
            println!("{}", created["key"].as_str().unwrap_or_default());
            eprintln!(
                "key {} ({}) created; keep it now: it is not shown again",
                created["id"].as_str().unwrap_or_default(),
                created["role"].as_str().unwrap_or_default()
            );
            Ok(())
        }
        KeyCommand::List { target } => print_json(&exchange(
            "GET",
            &format!("{}/keys", base(target)),
            &[],
            None,
        )?),
        KeyCommand::Revoke { id, target } => {
            let url = format!("{}/keys/{id}", base(target));
            fail_unless_ok(&exchange("DELETE", &url, &[], None)?)?;
            println!("key {id} revoked");
            Ok(())
        }
    }
}

fn base(target: &Target) -> &str {
    target.url.trim_end_matches('/')
}
