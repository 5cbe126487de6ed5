//! The fault schedule language: a list of timed actions against numbered
//! nodes, generated from a seed per fault family, printed and parsed as
//! text (one action per line), and played by the simulator driver (and by
//! the process nemesis, which maps each action onto real processes).
//!
//! ```text
//! at 1200 isolate 2
//! at 2900 heal
//! at 3100 halves 1,2 | 3,4,5
//! ```
//!
//! Nodes are numbered from 1, as their ids (`node1` …) are.

use std::fmt;
use std::str::FromStr;

use cairn::sim::Rng;

/// One fault family: what a run's schedule is drawn from, and a column of
/// the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// No fault: the baseline.
    None,
    /// Random halves of the cluster cut from each other.
    Halves,
    /// One node cut from all others.
    Isolate,
    /// One node stops hearing another, which still hears it.
    OneWay,
    /// Two halves that only one node (the bridge) talks to both of.
    Bridge,
    /// Nodes stopped (SIGSTOP) and resumed.
    Pause,
    /// Nodes killed (kill -9) and restarted.
    Kill,
    /// One node's data dir wiped, then restarted.
    Wipe,
    /// Wall clocks skewed and jumped per node.
    Clock,
    /// A node joins and another is removed while clients write.
    Membership,
    /// Slow, lossy, duplicating links.
    Lossy,
    /// The table's plugin replaced by a hostile one for a while.
    Plugin,
    /// All of the above at random.
    Mixed,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 13] = [
        Family::None,
        Family::Halves,
        Family::Isolate,
        Family::OneWay,
        Family::Bridge,
        Family::Pause,
        Family::Kill,
        Family::Wipe,
        Family::Clock,
        Family::Membership,
        Family::Lossy,
        Family::Plugin,
        Family::Mixed,
    ];

    /// The family's name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Family::None => "none",
            Family::Halves => "partition-halves",
            Family::Isolate => "partition-isolate",
            Family::OneWay => "partition-one-way",
            Family::Bridge => "partition-bridge",
            Family::Pause => "pause",
            Family::Kill => "kill",
            Family::Wipe => "wipe",
            Family::Clock => "clock",
            Family::Membership => "membership",
            Family::Lossy => "lossy-links",
            Family::Plugin => "hostile-plugin",
            Family::Mixed => "mixed",
        }
    }

    /// The family named `name`, if any.
    pub fn named(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One fault action. Node numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Restore every link (partitions and link faults); faults that are
    /// states of a node (paused, down) stay.
    Heal,
    /// Cut `left` from `right`, both ways.
    Halves(Vec<usize>, Vec<usize>),
    /// Cut one node from all others.
    Isolate(usize),
    /// Messages from the first node to the second are dropped.
    OneWay(usize, usize),
    /// Cut `left` from `right`; `bridge` still talks to both.
    Bridge {
        /// The node both sides hear.
        bridge: usize,
        /// One side.
        left: Vec<usize>,
        /// The other.
        right: Vec<usize>,
    },
    /// SIGSTOP.
    Pause(usize),
    /// SIGCONT.
    Resume(usize),
    /// kill -9.
    Kill(usize),
    /// Start a killed node again.
    Restart(usize),
    /// Kill a node and wipe its data dir (it is restarted by a later action).
    Wipe(usize),
    /// Set a node's wall clock this many ms off the true time.
    Clock(usize, i64),
    /// A new node joins through node 1.
    Join,
    /// An operator removes a node (its partitions move first).
    Remove(usize),
    /// An operator asks for a node to be replaced by the next node to
    /// join (which a later `join` starts): exactly its partitions move.
    Replace(usize),
    /// Links lose, delay (up to the given ms) and duplicate messages.
    Links {
        /// Per mille lost.
        loss_per_mille: u64,
        /// Largest delay, ms.
        delay_ms_max: u64,
        /// Per mille delivered twice.
        duplicate_per_mille: u64,
    },
    /// The workload's plugin is replaced by one that traps on every call.
    HostilePlugin,
    /// The well-behaved plugin is back.
    PluginRestored,
}

/// An action at a time (ms from the start of the fault phase).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// When.
    pub at_ms: u64,
    /// What.
    pub action: Action,
}

/// A run's faults, in time order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Schedule {
    /// The steps.
    pub steps: Vec<Step>,
}

fn list(nodes: &[usize]) -> String {
    nodes
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Heal => write!(f, "heal"),
            Action::Halves(left, right) => write!(f, "halves {} | {}", list(left), list(right)),
            Action::Isolate(n) => write!(f, "isolate {n}"),
            Action::OneWay(from, to) => write!(f, "one-way {from} -> {to}"),
            Action::Bridge {
                bridge,
                left,
                right,
            } => write!(f, "bridge {bridge} : {} | {}", list(left), list(right)),
            Action::Pause(n) => write!(f, "pause {n}"),
            Action::Resume(n) => write!(f, "resume {n}"),
            Action::Kill(n) => write!(f, "kill {n}"),
            Action::Restart(n) => write!(f, "restart {n}"),
            Action::Wipe(n) => write!(f, "wipe {n}"),
            Action::Clock(n, offset) => write!(f, "clock {n} {offset}"),
            Action::Join => write!(f, "join"),
            Action::Remove(n) => write!(f, "remove {n}"),
            Action::Replace(n) => write!(f, "replace {n}"),
            Action::Links {
                loss_per_mille,
                delay_ms_max,
                duplicate_per_mille,
            } => write!(
                f,
                "links loss {loss_per_mille} delay {delay_ms_max} duplicate {duplicate_per_mille}"
            ),
            Action::HostilePlugin => write!(f, "hostile-plugin"),
            Action::PluginRestored => write!(f, "plugin-restored"),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for step in &self.steps {
            writeln!(f, "at {} {}", step.at_ms, step.action)?;
        }
        Ok(())
    }
}

/// Why a schedule's text did not parse: the line and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What was expected.
    pub reason: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "schedule line {}: {}", self.line, self.reason)
    }
}

impl std::error::Error for ParseError {}

fn node(word: Option<&str>) -> Result<usize, String> {
    let word = word.ok_or("a node number is missing")?;
    match word.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{word:?} is not a node number (1, 2, …)")),
    }
}

fn nodes(text: &str) -> Result<Vec<usize>, String> {
    let nodes = text
        .split(',')
        .map(|w| node(Some(w.trim())))
        .collect::<Result<Vec<_>, _>>()?;
    if nodes.is_empty() {
        return Err("an empty node list".into());
    }
    Ok(nodes)
}

fn sides(text: &str) -> Result<(Vec<usize>, Vec<usize>), String> {
    let (left, right) = text
        .split_once('|')
        .ok_or("two sides separated by | are expected")?;
    let (left, right) = (nodes(left)?, nodes(right)?);
    if left.iter().any(|n| right.contains(n)) {
        return Err("a node is on both sides".into());
    }
    Ok((left, right))
}

fn number<T: FromStr>(word: Option<&str>, what: &str) -> Result<T, String> {
    word.and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("{what} must be a number"))
}

impl FromStr for Action {
    type Err = String;

    fn from_str(text: &str) -> Result<Action, String> {
        let text = text.trim();
        let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
        let mut words = rest.split_whitespace();
        let action = match verb {
            "heal" => Action::Heal,
            "halves" => {
                let (left, right) = sides(rest)?;
                Action::Halves(left, right)
            }
            "isolate" => Action::Isolate(node(words.next())?),
            "one-way" => {
                let from = node(words.next())?;
                if words.next() != Some("->") {
                    return Err("one-way FROM -> TO is expected".into());
                }
                let to = node(words.next())?;
                if to == from {
                    return Err("one-way needs two different nodes".into());
                }
                Action::OneWay(from, to)
            }
            "bridge" => {
                let (bridge, sides_text) = rest
                    .split_once(':')
                    .ok_or("bridge NODE : LEFT | RIGHT is expected")?;
                let (left, right) = sides(sides_text)?;
                Action::Bridge {
                    bridge: node(Some(bridge.trim()))?,
                    left,
                    right,
                }
            }
            "pause" => Action::Pause(node(words.next())?),
            "resume" => Action::Resume(node(words.next())?),
            "kill" => Action::Kill(node(words.next())?),
            "restart" => Action::Restart(node(words.next())?),
            "wipe" => Action::Wipe(node(words.next())?),
            "clock" => {
                let n = node(words.next())?;
                Action::Clock(n, number(words.next(), "the clock offset (ms)")?)
            }
            "join" => Action::Join,
            "remove" => Action::Remove(node(words.next())?),
            "replace" => Action::Replace(node(words.next())?),
            "links" => {
                let mut field = |name: &str| -> Result<u64, String> {
                    if words.next() != Some(name) {
                        return Err(format!(
                            "links loss N delay MS duplicate N: {name} expected"
                        ));
                    }
                    number(words.next(), name)
                };
                Action::Links {
                    loss_per_mille: field("loss")?,
                    delay_ms_max: field("delay")?,
                    duplicate_per_mille: field("duplicate")?,
                }
            }
            "hostile-plugin" => Action::HostilePlugin,
            "plugin-restored" => Action::PluginRestored,
            other => return Err(format!("unknown action {other:?}")),
        };
        let simple = matches!(
            action,
            Action::Heal | Action::Join | Action::HostilePlugin | Action::PluginRestored
        );
        if simple && !rest.trim().is_empty() {
            return Err(format!("{verb} takes no arguments"));
        }
        Ok(action)
    }
}

impl FromStr for Schedule {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Schedule, ParseError> {
        let mut steps = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let fail = |reason: String| ParseError {
                line: i + 1,
                reason,
            };
            let rest = line
                .strip_prefix("at ")
                .ok_or_else(|| fail("a step starts with `at MS`".into()))?;
            let (at, action) = rest
                .trim_start()
                .split_once(' ')
                .ok_or_else(|| fail("an action follows the time".into()))?;
            let at_ms = at
                .parse()
                .map_err(|_| fail(format!("{at:?} is not a time in ms")))?;
            if steps.last().is_some_and(|s: &Step| s.at_ms > at_ms) {
                return Err(fail("steps must be in time order".into()));
            }
            let action = action.parse().map_err(fail)?;
            steps.push(Step { at_ms, action });
        }
        Ok(Schedule { steps })
    }
}

/// Fisher–Yates, from the schedule's own generator.
fn shuffle<T>(rng: &mut Rng, items: &mut [T]) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

impl Schedule {
    /// The highest node number an action names, so a driver can check the
    /// schedule fits its cluster before playing it.
    pub fn highest_node(&self) -> usize {
        self.steps
            .iter()
            .flat_map(|s| match &s.action {
                Action::Halves(l, r) => l.iter().chain(r).copied().max(),
                Action::Bridge {
                    bridge,
                    left,
                    right,
                } => left.iter().chain(right).chain([bridge]).copied().max(),
                Action::Isolate(n)
                | Action::Pause(n)
                | Action::Resume(n)
                | Action::Kill(n)
                | Action::Restart(n)
                | Action::Wipe(n)
                | Action::Clock(n, _)
                | Action::Remove(n)
                | Action::Replace(n) => Some(*n),
                Action::OneWay(a, b) => Some(*a.max(b)),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// A schedule of `family`'s faults for `nodes` nodes over `duration_ms`,
    /// drawn from `seed`: a fault, a while, its undoing, a while, and so on.
    /// At most one data dir is wiped per run (a second wipe before
    /// anti-entropy copied the first could take two of a write's W
    /// acknowledging replicas, a loss outside the guarantee), and the
    /// membership family joins one node, removes one of the original ones
    /// and has another replaced by a node that joins later (never node 1,
    /// the seed joiners use).
    pub fn generate(family: Family, seed: u64, nodes: usize, duration_ms: u64) -> Schedule {
        // Halves, bridges and one-way cuts need three nodes to mean anything.
        assert!(
            nodes >= 3,
            "fault schedules are drawn for three nodes or more"
        );
        let mut rng = Rng::new(seed ^ 0x7072_6f6f_6620_6974);
        let mut steps = Vec::new();
        let mut at = 200 + rng.below(400);
        let mut wiped = false;
        let mut joined = false;
        let mut removed = None;
        let mut replaced = false;
        let pick = |rng: &mut Rng| 1 + rng.below(nodes as u64) as usize;
        while at < duration_ms {
            let this = if family == Family::Mixed {
                Family::ALL[1 + rng.below(Family::ALL.len() as u64 - 2) as usize]
            } else {
                family
            };
            let hold = 300 + rng.below(1_200);
            let (start, end): (Vec<Action>, Vec<Action>) = match this {
                Family::None | Family::Mixed => (Vec::new(), Vec::new()),
                Family::Halves => {
                    let mut all: Vec<usize> = (1..=nodes).collect();
                    shuffle(&mut rng, &mut all);
                    let cut = 1 + rng.below(nodes as u64 - 1) as usize;
                    let (left, right) = all.split_at(cut);
                    let (mut left, mut right) = (left.to_vec(), right.to_vec());
                    left.sort_unstable();
                    right.sort_unstable();
                    (vec![Action::Halves(left, right)], vec![Action::Heal])
                }
                Family::Isolate => (vec![Action::Isolate(pick(&mut rng))], vec![Action::Heal]),
                Family::OneWay => {
                    let from = pick(&mut rng);
                    let to = 1 + (from + rng.below(nodes as u64 - 1) as usize) % nodes;
                    (vec![Action::OneWay(from, to)], vec![Action::Heal])
                }
                Family::Bridge => {
                    let mut all: Vec<usize> = (1..=nodes).collect();
                    shuffle(&mut rng, &mut all);
                    let bridge = all[0];
                    let rest = &all[1..];
                    let cut = 1 + rng.below(rest.len().saturating_sub(1).max(1) as u64) as usize;
                    let (left, right) = rest.split_at(cut.min(rest.len() - 1));
                    let (mut left, mut right) = (left.to_vec(), right.to_vec());
                    left.sort_unstable();
                    right.sort_unstable();
                    (
                        vec![Action::Bridge {
                            bridge,
                            left,
                            right,
                        }],
                        vec![Action::Heal],
                    )
                }
                Family::Pause => {
                    let n = pick(&mut rng);
                    (vec![Action::Pause(n)], vec![Action::Resume(n)])
                }
                Family::Kill => {
                    let n = pick(&mut rng);
                    (vec![Action::Kill(n)], vec![Action::Restart(n)])
                }
                Family::Wipe if !wiped => {
                    wiped = true;
                    let n = pick(&mut rng);
                    (vec![Action::Wipe(n)], vec![Action::Restart(n)])
                }
                Family::Wipe => (Vec::new(), Vec::new()),
                Family::Clock => {
                    let n = pick(&mut rng);
                    let offset = rng.below(120_000) as i64 - 60_000;
                    (vec![Action::Clock(n, offset)], Vec::new())
                }
                Family::Membership if !joined => {
                    joined = true;
                    (vec![Action::Join], Vec::new())
                }
                Family::Membership if removed.is_none() && nodes > 3 => {
                    let n = 2 + rng.below(nodes as u64 - 1) as usize;
                    removed = Some(n);
                    (vec![Action::Remove(n)], Vec::new())
                }
                Family::Membership if !replaced && nodes > 3 => {
                    replaced = true;
                    let mut n = 2 + rng.below(nodes as u64 - 1) as usize;
                    if Some(n) == removed {
                        n = if n == nodes { 2 } else { n + 1 };
                    }
                    (vec![Action::Replace(n)], vec![Action::Join])
                }
                Family::Membership => (Vec::new(), Vec::new()),
                Family::Lossy => (
                    vec![Action::Links {
                        loss_per_mille: 10 + rng.below(90),
                        delay_ms_max: 5 + rng.below(60),
                        duplicate_per_mille: rng.below(50),
                    }],
                    vec![Action::Heal],
                ),
                Family::Plugin => (vec![Action::HostilePlugin], vec![Action::PluginRestored]),
            };
            for action in start {
                steps.push(Step { at_ms: at, action });
            }
            at += hold;
            for action in end {
                steps.push(Step { at_ms: at, action });
            }
            at += 100 + rng.below(600);
        }
        Schedule { steps }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_generated_schedule_prints_and_parses_back_the_same() {
        for family in Family::ALL {
            for seed in 0..20 {
                let schedule = Schedule::generate(family, seed, 5, 8_000);
                let text = schedule.to_string();
                let parsed: Schedule = text.parse().unwrap_or_else(|e| panic!("{e}\n{text}"));
                assert_eq!(parsed, schedule, "{}", family.name());
                assert!(schedule.highest_node() <= 5);
            }
        }
    }

    #[test]
    fn faults_are_undone_and_wipes_and_membership_changes_happen_once() {
        let wipe = Schedule::generate(Family::Wipe, 3, 5, 20_000);
        let wipes = wipe
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::Wipe(_)))
            .count();
        assert_eq!(wipes, 1);
        let members = Schedule::generate(Family::Membership, 3, 5, 20_000);
        let actions: Vec<&Action> = members.steps.iter().map(|s| &s.action).collect();
        assert_eq!(actions.len(), 4, "{members}");
        assert_eq!(actions[0], &Action::Join);
        let Action::Remove(removed) = actions[1] else {
            panic!("{members}")
        };
        assert!(*removed >= 2);
        assert!(matches!(actions[2], Action::Replace(n) if *n >= 2 && n != removed));
        assert_eq!(actions[3], &Action::Join);
        let pauses = Schedule::generate(Family::Pause, 9, 5, 20_000);
        let paused = pauses
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::Pause(_)))
            .count();
        let resumed = pauses
            .steps
            .iter()
            .filter(|s| matches!(s.action, Action::Resume(_)))
            .count();
        assert!(paused > 3);
        assert_eq!(paused, resumed);
    }

    #[test]
    fn bad_schedules_are_refused_with_the_line_and_the_reason() {
        let cases = [
            ("at 10 isolate", 1, "node number is missing"),
            ("at 10 heal\nat 5 heal", 2, "time order"),
            ("at x heal", 1, "not a time"),
            ("isolate 2", 1, "starts with `at MS`"),
            ("at 1 halves 1,2 3", 1, "separated by |"),
            ("at 1 teleport 3", 1, "unknown action"),
            ("at 1 isolate 0", 1, "not a node number"),
            ("at 1 heal now", 1, "takes no arguments"),
            ("at 1 links loss 5 delay", 1, "delay must be a number"),
            ("at 1 one-way 2 -> 2", 1, "two different nodes"),
            ("at 1 halves 1,2 | 2,3", 1, "both sides"),
        ];
        for (text, line, reason) in cases {
            let error = text.parse::<Schedule>().unwrap_err();
            assert_eq!(error.line, line, "{text}");
            assert!(error.reason.contains(reason), "{text}: {}", error.reason);
        }
        let commented: Schedule = "# a comment\n\nat 5 kill 2 # why\nat 9 restart 2\n"
            .parse()
            .unwrap();
        assert_eq!(commented.steps.len(), 2);
    }
}
