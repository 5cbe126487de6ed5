//! The sans-IO protocol core: no sockets, files, clocks or global randomness.
//! Time and random numbers come in as arguments; effects go out as outputs.
//!
//! Each concept has one file; [`node`] routes inputs to them and carries out
//! what they decide (decision 0012 says what moved where).
//!
//! | concept | file |
//! | --- | --- |
//! | the node: inputs, outputs, routing, time | [`node`] (`node/mod.rs`) |
//! | membership view: liveness, up/down [`members::Status`], the join under way | [`members`] |
//! | joins admitted and asked for, own record, gossip | `node/membership.rs` |
//! | periodic work and deadlines as data | [`timers`] |
//! | requests in flight, get and put state machines and their steps | [`coord`] (`coord/{mod,get,put}.rs`) |
//! | client operations coordinated or forwarded | `node/coordinate.rs` |
//! | replica writes, reads and repairs | `node/replica.rs` |
//! | batches, answers held until durable, lost batches: the outbox | [`durability`] |
//! | plugin modules held, fetched and spreading | [`modules`] (bookkeeping), `node/modules.rs` (sending, storing) |
//! | plugin merges and their write-back | `node/reconcile.rs` |
//! | plugin storage placement | `node/placement.rs` |
//! | admin operations (tables, plugins, cluster status) | `node/admin.rs` |
//! | anti-entropy: hash tree | [`merkle`] |
//! | anti-entropy: trees per (table, partition), start-up walk | [`antientropy`] |
//! | anti-entropy: which partition next (divergent first), throttle, sweep progress | `antientropy/plan.rs` |
//! | token bucket | [`throttle`] |
//! | anti-entropy exchanges | `node/antientropy.rs` |
//! | sloppy quorum: who is asked, who stands in for whom | [`coord::targets`] |
//! | hinted handoff: hints per owner, batches under way, why delivery stalls | [`hints`] |
//! | hinted handoff: storing, reading and delivering hints | `node/handoff.rs` |
//! | tombstone collection: candidates, the check under way | [`reaper`] |
//! | tombstone collection: asking members, removing, the mint floor | `node/reaper.rs` |
//! | counters and gauges | [`stats`] |
//! | every bound | [`limits`] |
//! | messages between clients, nodes and subsystems | [`msg`] |
//! | frame and disk formats | [`codec`] |
//! | dots, clocks, causal contexts | [`causal`] |
//! | stored objects and their merge | [`object`] |
//! | context tokens | [`token`] |
//! | peers proving the cluster secret; sealed frames | [`peer_auth`] |
//! | API keys, roles, what a request needs, failed-auth budget | [`access`] |
//! | quorum counting | [`quorum`] |
//! | partitions and preference lists | [`ring`] |
//! | cluster metadata and its gossip merge | [`meta`] |
//! | table configs | [`table`] |
//! | what the core needs from storage | [`store`] |
//! | validated names | [`types`] |
//! | seeded randomness | [`rng`] |

pub mod access;
pub mod antientropy;
pub mod backup;
pub mod causal;
pub mod codec;
pub mod coord;
pub mod durability;
pub mod hints;
pub mod limits;
pub mod members;
pub mod merkle;
pub mod meta;
pub mod modules;
pub mod msg;
pub mod node;
pub mod object;
pub mod peer_auth;
pub mod quorum;
pub mod reaper;
pub mod ring;
pub mod rng;
pub mod stats;
pub mod store;
pub mod table;
pub mod throttle;
pub mod timers;
pub mod token;
pub mod transfer;
pub mod types;

#[cfg(test)]
mod tidy {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The core stays free of I/O: no runtime, sockets, files, clocks or storage engines.
    #[test]
    fn core_has_no_io() {
        let banned = [
            "tokio",
            "std::net",
            "std::fs",
            "heed",
            "SystemTime",
            "Instant",
            "hyper",
            "std::thread",
            "rand::",
            "wasmtime",
        ];
        let mut files = Vec::new();
        rust_files(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/core"),
            &mut files,
        );
        assert!(files.len() > 10);
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("mod tidy").next().unwrap_or("");
            for word in banned {
                assert!(!code.contains(word), "{} mentions {word}", path.display());
            }
        }
    }
}
