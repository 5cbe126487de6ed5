//! `cairn cluster`: the cluster as a node sees it, as a table an operator
//! reads, and joins that show their data moving until the change completes.

use std::io::Write as _;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::Value;

use super::client::{exchange, fail_unless_ok, print_json, Target};

/// `cairn cluster ...`.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Members, their status and partitions, and any ring move under way.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Make the node at --url join the cluster of SEED (a member's peer
    /// address), then show the data moving to it until it owns its share.
    Join {
        /// A member's peer address.
        seed: String,
        /// Return once the join is asked for, without waiting for the move.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the move goes on).
        #[arg(long, default_value_t = 3_600)]
        wait_s: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Remove member ID: its partitions move to the others with their
    /// data, then it leaves; shows the move until ID is gone.
    Remove {
        /// The member to remove.
        id: String,
        /// The member is dead for good: remove it once its partitions moved
        /// from the other replicas, without waiting for it to hand over
        /// what it held (lost with it).
        #[arg(long)]
        force: bool,
        /// Return once the removal is asked for.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the move goes on).
        #[arg(long, default_value_t = 3_600)]
        wait_s: u64,
        #[command(flatten)]
        target: Target,
    },
    /// Have NEW (a node that has not joined yet) take over exactly OLD's
    /// partitions when it joins (start NEW with `--seed`); shows the move
    /// until OLD is gone.
    Replace {
        /// The member replaced.
        old: String,
        /// The node replacing it.
        new: String,
        /// OLD is dead for good: do not wait for it to hand over what it
        /// held (lost with it).
        #[arg(long)]
        force: bool,
        /// Return once the replacement is recorded.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the move goes on).
        #[arg(long, default_value_t = 3_600)]
        wait_s: u64,
        #[command(flatten)]
        target: Target,
    },
}

/// Runs a `cairn cluster` command.
pub fn run(command: &ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Status { target } => {
            let status = cluster_status(target)?;
            print!("{}", render_status(&status));
            Ok(())
        }
        ClusterCommand::Join {
            seed,
            no_wait,
            wait_s,
            target,
        } => {
            let answer = post(
                target,
                "/cluster/join",
                &serde_json::json!({ "seed": seed }),
            )?;
            if *no_wait {
                return print_json(&answer);
            }
            fail_unless_ok(&answer)?;
            wait_for_move(target, Duration::from_secs(*wait_s), |status| {
                let me = status["node"].as_str().unwrap_or_default();
                member(status, me).is_some_and(|m| m["partitions"].as_u64() > Some(0))
            })
        }
        ClusterCommand::Remove {
            id,
            force,
            no_wait,
            wait_s,
            target,
        } => {
            let answer = post(
                target,
                "/cluster/remove",
                &serde_json::json!({ "node": id, "force": force }),
            )?;
            if *no_wait {
                return print_json(&answer);
            }
            fail_unless_ok(&answer)?;
            wait_for_move(target, Duration::from_secs(*wait_s), |status| {
                member(status, id).is_none()
            })
        }
        ClusterCommand::Replace {
            old,
            new,
            force,
            no_wait,
            wait_s,
            target,
        } => {
            let answer = post(
                target,
                "/cluster/replace",
                &serde_json::json!({ "old": old, "new": new, "force": force }),
            )?;
            if *no_wait {
                return print_json(&answer);
            }
            fail_unless_ok(&answer)?;
            eprintln!("recorded: start {new} with --seed; waiting for it to take over {old}");
            wait_for_move(target, Duration::from_secs(*wait_s), |status| {
                member(status, new).is_some() && member(status, old).is_none()
            })
        }
    }
}

/// Member `id` in a `/cluster` answer.
fn member<'a>(status: &'a Value, id: &str) -> Option<&'a Value> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"].as_str() == Some(id))
}

/// POSTs `body` as JSON to `path` on the node at `target`.
fn post(target: &Target, path: &str, body: &Value) -> anyhow::Result<super::client::Answer> {
    let url = format!("{}{path}", target.url.trim_end_matches('/'));
    let body = body.to_string();
    exchange(
        "POST",
        &url,
        &[("content-type", "application/json")],
        Some(body.as_bytes()),
    )
}

fn cluster_status(target: &Target) -> anyhow::Result<Value> {
    let url = format!("{}/cluster", target.url.trim_end_matches('/'));
    let answer = exchange("GET", &url, &[], None)?;
    fail_unless_ok(&answer)?;
    Ok(serde_json::from_slice(&answer.body)?)
}

/// Polls the node at `target` until `done` holds and no ring move is under
/// way, drawing a progress bar of the copies made.
fn wait_for_move(
    target: &Target,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut stderr = std::io::stderr();
    loop {
        let status = cluster_status(target)?;
        if let Some(reason) = status["join"]["reason"].as_str() {
            anyhow::bail!("the join failed: {reason}");
        }
        if done(&status) && status["ring_move"].is_null() {
            let _ = writeln!(stderr);
            print!("{}", render_status(&status));
            return Ok(());
        }
        let _ = write!(stderr, "\r{}", progress_line(&status));
        let _ = stderr.flush();
        if started.elapsed() >= limit {
            let _ = writeln!(stderr);
            anyhow::bail!(
                "the move has not completed within {} s; it goes on (see `cairn cluster status`)",
                limit.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// One line: a bar of the move's copies made, and this node's transfer.
fn progress_line(status: &Value) -> String {
    let moving = &status["ring_move"];
    let (done, total) = (
        moving["copies_done"].as_u64().unwrap_or(0),
        moving["copies_total"].as_u64().unwrap_or(0),
    );
    let width = 30usize;
    let filled = if total == 0 {
        0
    } else {
        (done as usize * width / total as usize).min(width)
    };
    let bar = format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled));
    let mut line = if total == 0 {
        "waiting for the change to start".to_owned()
    } else {
        format!("{bar} {done}/{total} partition copies")
    };
    if let Some(transfer) = status["transfers"].as_array().and_then(|t| t.first()) {
        line.push_str(&format!(
            ", {} keys, {}/s",
            transfer["keys"].as_u64().unwrap_or(0),
            human_bytes(transfer["bytes_per_s"].as_u64().unwrap_or(0))
        ));
        if let Some(eta) = transfer["eta_s"].as_u64() {
            line.push_str(&format!(", ETA {eta} s"));
        }
    }
    format!("{line:<100}")
}

/// `GET /cluster` as an operator reads it.
fn render_status(status: &Value) -> String {
    let mut out = format!("node {}\n", status["node"].as_str().unwrap_or("?"));
    out.push_str(&format!(
        "{:<16} {:<22} {:<22} {:<8} {:>10} {:>6}\n",
        "ID", "HTTP", "PEER", "STATUS", "PARTITIONS", "NEXT"
    ));
    for m in status["members"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "{:<16} {:<22} {:<22} {:<8} {:>10} {:>6}\n",
            m["id"].as_str().unwrap_or("?"),
            m["http"].as_str().unwrap_or("?"),
            m["peer"].as_str().unwrap_or("?"),
            m["status"].as_str().unwrap_or("?"),
            m["partitions"].as_u64().unwrap_or(0),
            m["partitions_next"].as_u64().unwrap_or(0),
        ));
    }
    let moving = &status["ring_move"];
    if !moving.is_null() {
        let left: Vec<String> = moving["copies_left"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(node, n)| format!("{node} {n}"))
            .collect();
        out.push_str(&format!(
            "ring move: {} partitions change owner; {}/{} partition copies made; left: {}\n",
            moving["partitions_moving"],
            moving["copies_done"],
            moving["copies_total"],
            left.join(", ")
        ));
    }
    for t in status["transfers"].as_array().cloned().unwrap_or_default() {
        let eta = t["eta_s"]
            .as_u64()
            .map_or_else(|| "unknown".to_owned(), |s| format!("{s} s"));
        out.push_str(&format!(
            "transfer into {} from {}: {} partitions left, {} keys, {} ({} keys/s, {}/s), ETA {eta}, resumed at {} keys\n",
            t["receiver"].as_str().unwrap_or("?"),
            t["source"].as_str().unwrap_or("-"),
            t["partitions_left"],
            t["keys"],
            human_bytes(t["bytes"].as_u64().unwrap_or(0)),
            t["keys_per_s"],
            human_bytes(t["bytes_per_s"].as_u64().unwrap_or(0)),
            t["resumed_keys"],
        ));
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_members_the_move_and_the_transfer() {
        let status = serde_json::json!({
            "node": "node4",
            "members": [
                {"id": "node1", "http": "h1", "peer": "p1", "status": "up", "partitions": 256, "partitions_next": 192},
                {"id": "node4", "http": "h4", "peer": "p4", "status": "joining", "partitions": 0, "partitions_next": 64},
            ],
            "ring_move": {"partitions_moving": 64, "copies_total": 192, "copies_done": 48, "copies_left": {"node4": 144}},
            "transfers": [{"receiver": "node4", "source": "node1", "partitions_left": 144, "keys": 1000,
                "bytes": 2_097_152, "resumed_keys": 400, "keys_per_s": 500, "bytes_per_s": 1_048_576, "eta_s": 7}],
        });
        let text = render_status(&status);
        let node4 = text.lines().find(|l| l.starts_with("node4")).unwrap();
        assert!(node4.ends_with("joining           0     64"), "{node4:?}");
        assert!(
            text.contains("48/192 partition copies made; left: node4 144"),
            "{text}"
        );
        assert!(
            text.contains("from node1: 144 partitions left, 1000 keys, 2.0 MiB"),
            "{text}"
        );
        assert!(text.contains("ETA 7 s, resumed at 400 keys"), "{text}");
        let line = progress_line(&status);
        assert!(
            line.starts_with("[#######.......................] 48/192"),
            "{line}"
        );
        assert!(line.contains("ETA 7 s"));
    }
}
