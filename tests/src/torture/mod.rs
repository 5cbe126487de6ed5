//! Jepsen-style torture: workloads with checkers, run under fault
//! schedules, summed into a report (`cargo xtask torture`).
//!
//! The simulator runs every workload under every fault family for many
//! seeds (deterministic: a failing seed replays exactly). Each run ends
//! with a liveness phase — heal, stop faults, wait for anti-entropy to make
//! replicas agree without client reads — and then the checker. Any lost
//! acknowledged write (outside the lww register, where loss is the design
//! and is measured), any value never written, a sibling count past its
//! bound, or replicas that never agree, is a failure with its seed and its
//! schedule.

pub mod check;
pub mod history;
pub mod process_run;
pub mod report;
pub mod schedule;
pub mod sim_run;

use std::time::{Duration, Instant};

use report::{Cell, Report};
use schedule::{Family, Schedule};
use sim_run::RunResult;

/// A workload: what clients do and what its checker holds them to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Workload {
    /// Adds of unique elements to a `set-union` plugin table (blind and
    /// read-modify-write): none acknowledged may go missing.
    Set,
    /// G-counter increments with the `counter` plugin: every read between
    /// the acknowledged and the attempted sums.
    Counter,
    /// Adds and removals with the `shopping-cart` plugin: every acknowledged
    /// item present or removed by a write whose context covered it.
    Cart,
    /// Read-modify-write adds on an `lww` table: loss measured, by design.
    Register,
    /// Interleaved read-modify-write clients on a `siblings` table: live
    /// versions bounded by the writers.
    Siblings,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 5] = [
        Workload::Set,
        Workload::Counter,
        Workload::Cart,
        Workload::Register,
        Workload::Siblings,
    ];

    /// Its name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Set => "set",
            Workload::Counter => "counter",
            Workload::Cart => "cart",
            Workload::Register => "register-lww",
            Workload::Siblings => "siblings-bound",
        }
    }

    /// The table the workload writes to.
    pub fn table(self) -> &'static str {
        match self {
            Workload::Set => "set",
            Workload::Counter => "counter",
            Workload::Cart => "cart",
            Workload::Register => "register",
            Workload::Siblings => "siblings",
        }
    }

    /// The example plugin that merges its table, if one does.
    pub fn plugin(self) -> Option<&'static str> {
        match self {
            Workload::Set => Some("set-union"),
            Workload::Counter => Some("counter"),
            Workload::Cart => Some("shopping-cart"),
            Workload::Register | Workload::Siblings => None,
        }
    }

    /// The keys its clients spread over (the siblings bound needs one).
    pub fn keys(self) -> &'static [&'static str] {
        const KEYS: [&str; 3] = ["k1", "k2", "k3"];
        match self {
            Workload::Siblings => &KEYS[..1],
            _ => &KEYS,
        }
    }

    /// Whether fault `family` means anything for this workload: a hostile
    /// plugin only for the tables merged by one.
    pub fn exercised_by(self, family: Family) -> bool {
        family != Family::Plugin
            || matches!(self, Workload::Set | Workload::Counter | Workload::Cart)
    }

    /// Whether losing acknowledged writes is this workload's design (lww).
    pub fn loses_by_design(self) -> bool {
        self == Workload::Register
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seeds per workload × fault cell (each cell uses seeds base..base+n).
    pub seeds: u64,
    /// The first seed.
    pub base_seed: u64,
    /// Virtual ms of faults per simulated run.
    pub fault_ms: u64,
    /// Stop starting new runs after this long (wall clock), if set.
    pub budget: Option<Duration>,
    /// Only these workloads (all when empty).
    pub workloads: Vec<Workload>,
    /// Only these fault families (all when empty).
    pub families: Vec<Family>,
}

impl Options {
    /// The workloads chosen (all when none was).
    pub fn chosen_workloads(&self) -> Vec<Workload> {
        if self.workloads.is_empty() {
            Workload::ALL.to_vec()
        } else {
            self.workloads.clone()
        }
    }

    /// An empty cell for every chosen workload × chosen fault family that
    /// the workload is exercised by and `playable` allows here.
    fn cells(&self, runner: &'static str, playable: impl Fn(Family) -> bool) -> Vec<Cell> {
        let families = if self.families.is_empty() {
            Family::ALL.to_vec()
        } else {
            self.families.clone()
        };
        let mut cells = Vec::new();
        for workload in self.chosen_workloads() {
            for &family in &families {
                if workload.exercised_by(family) && playable(family) {
                    cells.push(Cell::new(workload, family, runner));
                }
            }
        }
        cells
    }

    /// The bounded slice CI runs: a fixed seed and a random one per cell,
    /// short fault phases.
    pub fn quick(random_seed: u64) -> Options {
        Options {
            seeds: 1,
            base_seed: random_seed,
            fault_ms: 3_000,
            budget: None,
            workloads: Vec::new(),
            families: Vec::new(),
        }
    }
}

/// Runs one seed of one cell; a panic (a node's or the runner's) is that
/// run's failure, so the matrix goes on and the report keeps it.
fn guarded(run: impl FnOnce() -> RunResult) -> RunResult {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(panic) => {
            let reason = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic without a message");
            RunResult {
                broken: vec![format!("panicked: {reason}")],
                ..RunResult::default()
            }
        }
    }
}

/// Runs the simulated matrix: every chosen workload under every chosen
/// fault family for `seeds` seeds, cells interleaved seed by seed so a
/// time budget cuts every cell alike. `progress` hears of each run.
pub fn run_simulation(options: &Options, mut progress: impl FnMut(&str)) -> Report {
    let started = Instant::now();
    let mut report = Report {
        cells: options.cells("simulation", |_| true),
        ..Report::default()
    };
    'seeds: for i in 0..options.seeds {
        let seed = options.base_seed + i;
        for cell in report.cells.iter_mut() {
            if options.budget.is_some_and(|b| started.elapsed() > b) {
                break 'seeds;
            }
            let result =
                guarded(|| sim_run::run(cell.workload, cell.family, seed, options.fault_ms));
            if !result.broken.is_empty() {
                let schedule =
                    Schedule::generate(cell.family, seed, sim_run::NODES, options.fault_ms);
                progress(&format!(
                    "FAILED {} × {} seed {seed}: {}\nschedule:\n{schedule}",
                    cell.workload.name(),
                    cell.family.name(),
                    result.broken.join("; ")
                ));
            }
            cell.add(seed, &result);
        }
        progress(&format!(
            "seed {seed} done ({} s)",
            started.elapsed().as_secs()
        ));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Runs workloads under fault families against real processes, cell after
/// cell (seed `base_seed + round`), until every cell ran `seeds` times or
/// the time budget is spent; families that need root are skipped without
/// it.
pub fn run_processes(options: &Options, mut progress: impl FnMut(&str)) -> Report {
    let started = Instant::now();
    let mut report = Report {
        cells: options.cells("processes", process_run::playable),
        ..Report::default()
    };
    'rounds: for round in 0..options.seeds {
        let seed = options.base_seed + round;
        for cell in report.cells.iter_mut() {
            if options.budget.is_some_and(|b| started.elapsed() > b) {
                break 'rounds;
            }
            let result =
                guarded(|| process_run::run(cell.workload, cell.family, seed, options.fault_ms));
            progress(&format!(
                "processes {} × {} seed {seed}: {} acknowledged, {} lost, {} unknown, members {}{} ({} s)",
                cell.workload.name(),
                cell.family.name(),
                result.tally.acknowledged,
                result.tally.lost,
                result.tally.unknown,
                result.members.join(","),
                if result.broken.is_empty() {
                    String::new()
                } else {
                    let schedule =
                        Schedule::generate(cell.family, seed, process_run::NODES, options.fault_ms);
                    format!(
                        "\nFAILED: {}\nschedule:\n{schedule}",
                        result.broken.join("; ")
                    )
                },
                started.elapsed().as_secs()
            ));
            cell.add(seed, &result);
        }
    }
    report.cells.retain(|c| !c.seeds.is_empty());
    report.seconds = started.elapsed().as_secs_f64();
    report
}
