//! Real network partitions for process tests: each node runs in a network
//! namespace of its own, joined to the others by a bridge, and a partition
//! is a pair of blackhole routes between two namespaces. Unlike SIGSTOP
//! (whose peers keep its messages in kernel buffers until it resumes) or
//! kill -9 (which ends the process), the cut-off nodes keep running and
//! nothing crosses the cut. Needs root; everything is removed on drop.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Networks made so far by this process (each gets its own names and subnet).
static NETWORKS: AtomicU32 = AtomicU32::new(0);

/// Runs `ip ARGS`, returning its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Namespaces `n1..=count` on a bridge, with the cuts made so far.
pub struct Network {
    tag: String,
    bridge: String,
    subnet: u32,
    count: usize,
    cuts: Vec<(usize, usize)>,
    /// (from, to): packets from `from` to `to` are dropped, not back.
    one_way: Vec<(usize, usize)>,
}

impl Network {
    /// Makes `count` namespaces on a bridge, or says why it cannot (not root,
    /// no `ip netns`).
    pub fn create(count: usize) -> Result<Network, String> {
        let serial = NETWORKS.fetch_add(1, Ordering::Relaxed);
        let id = (std::process::id() % 1000) * 10 + serial % 10;
        let network = Network {
            tag: format!("cn{id}"),
            bridge: format!("cn{id}br"),
            subnet: 100 + id % 100,
            count,
            cuts: Vec::new(),
            one_way: Vec::new(),
        };
        let host_addr = format!("10.{}.0.254/24", network.subnet);
        ip(&["link", "add", &network.bridge, "type", "bridge"])?;
        ip(&["addr", "add", &host_addr, "dev", &network.bridge])?;
        ip(&["link", "set", &network.bridge, "up"])?;
        for index in 0..count {
            let ns = network.namespace(index);
            let outside = format!("{}h{}", network.tag, index + 1);
            let inside = format!("{}p{}", network.tag, index + 1);
            let addr = format!("{}/24", network.addr(index));
            ip(&["netns", "add", &ns])?;
            ip(&[
                "link", "add", &outside, "type", "veth", "peer", "name", &inside,
            ])?;
            ip(&["link", "set", &inside, "netns", &ns])?;
            ip(&["link", "set", &outside, "master", &network.bridge])?;
            ip(&["link", "set", &outside, "up"])?;
            ip(&["-n", &ns, "addr", "add", &addr, "dev", &inside])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// The namespace of node `index` (0-based).
    pub fn namespace(&self, index: usize) -> String {
        format!("{}n{}", self.tag, index + 1)
    }

    /// Node `index`'s address, reachable from the test (outside every
    /// namespace) whatever is cut.
    pub fn addr(&self, index: usize) -> String {
        format!("10.{}.0.{}", self.subnet, index + 1)
    }

    /// Adds (or deletes) the blackhole route in node `from`'s namespace
    /// that drops its packets to node `to`.
    fn blackhole(&self, verb: &str, from: usize, to: usize) {
        let route = format!("{}/32", self.addr(to));
        ip(&[
            "-n",
            &self.namespace(from),
            "route",
            verb,
            "blackhole",
            &route,
        ])
        .unwrap_or_else(|e| panic!("route {verb} node{} -> node{}: {e}", from + 1, to + 1));
    }

    /// Nothing passes between nodes `a` and `b` any more, either way.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.blackhole("add", a, b);
        self.blackhole("add", b, a);
        self.cuts.push((a, b));
    }

    /// Cuts every node of `side` from every node of `other`.
    pub fn split(&mut self, side: &[usize], other: &[usize]) {
        for &a in side {
            for &b in other {
                self.cut(a, b);
            }
        }
    }

    /// Packets from node `from` to node `to` are dropped; the other way
    /// still passes. (TCP needs both ways, so a connection either node
    /// opens to the other stalls too; what differs from a cut is that
    /// `to`'s packets still reach `from`.)
    pub fn cut_one_way(&mut self, from: usize, to: usize) {
        self.blackhole("add", from, to);
        self.one_way.push((from, to));
    }

    /// Removes every cut.
    pub fn heal(&mut self) {
        for (from, to) in std::mem::take(&mut self.one_way) {
            self.blackhole("del", from, to);
        }
        for (a, b) in std::mem::take(&mut self.cuts) {
            self.blackhole("del", a, b);
            self.blackhole("del", b, a);
        }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for index in 0..self.count {
            // Deleting a namespace deletes the veth pair with it.
            let _ = ip(&["netns", "del", &self.namespace(index)]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
