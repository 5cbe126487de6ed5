//! Slow and lossy peer links for fault tests: an in-process fault proxy on
//! the sending side of every peer connection.
//!
//! Kernels without `tc netem` cannot slow or drop packets between network
//! namespaces, so the torture runner asks the nodes themselves: a node
//! started with the hidden `--test-link-faults-file FILE` re-reads that file
//! (at most every 100 ms, when it sends) and then loses, delays and
//! duplicates outgoing peer frames as it says. Loss and duplication act on
//! whole frames, as a lossy network does to the messages above TCP once
//! retransmits give up; delays keep the order TCP keeps. Nothing else reads
//! the file, and a node without the flag never pays for it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::core::rng::Rng;

/// How often the file is looked at again.
const REREAD_EVERY: Duration = Duration::from_millis(100);
/// Settings above these are refused as mistakes.
const DELAY_MS_LIMIT: u64 = 10_000;

/// What the links do, as the file says: `loss L delay D duplicate P`
/// (per mille lost, largest delay in ms, per mille sent twice); an empty or
/// missing file means healthy links.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkSettings {
    /// Per mille of frames never sent.
    pub loss_per_mille: u64,
    /// Each frame waits a uniform 0..=this many ms (after the one before it).
    pub delay_ms_max: u64,
    /// Per mille of frames sent twice.
    pub duplicate_per_mille: u64,
}

impl LinkSettings {
    /// Parses the file's text; an error names the word it could not take.
    pub fn parse(text: &str) -> Result<LinkSettings, String> {
        let mut settings = LinkSettings::default();
        let mut words = text.split_whitespace();
        while let Some(name) = words.next() {
            let value: u64 = words
                .next()
                .ok_or_else(|| format!("{name} has no value"))?
                .parse()
                .map_err(|_| format!("{name} needs a whole number"))?;
            match name {
                "loss" if value <= 1000 => settings.loss_per_mille = value,
                "duplicate" if value <= 1000 => settings.duplicate_per_mille = value,
                "delay" if value <= DELAY_MS_LIMIT => settings.delay_ms_max = value,
                "loss" | "duplicate" | "delay" => {
                    return Err(format!("{name} {value} is too large"))
                }
                other => return Err(format!("unknown link setting {other:?}")),
            }
        }
        Ok(settings)
    }
}

/// What happens to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fate {
    /// How many times it is sent: 0 (lost), 1 or 2.
    pub copies: usize,
    /// When it may leave (`None`: at once).
    pub due: Option<Instant>,
}

/// One node's link faults: the file it follows and the seeded dice.
pub struct LinkFaults {
    path: PathBuf,
    state: Mutex<State>,
}

struct State {
    settings: LinkSettings,
    rng: Rng,
    read_at: Option<Instant>,
    /// The latest due time handed out, per peer order is kept by never
    /// handing out an earlier one.
    last_due: Option<Instant>,
}

impl LinkFaults {
    /// Follows `path`; `seed` makes the node's dice repeatable.
    pub fn new(path: PathBuf, seed: u64) -> LinkFaults {
        LinkFaults {
            path,
            state: Mutex::new(State {
                settings: LinkSettings::default(),
                rng: Rng::new(seed),
                read_at: None,
                last_due: None,
            }),
        }
    }

    /// Rolls the dice for the next outgoing frame.
    pub fn fate(&self) -> Fate {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.read_at.is_none_or(|at| now >= at + REREAD_EVERY) {
            state.read_at = Some(now);
            let settings = match std::fs::read_to_string(&self.path) {
                Ok(text) => LinkSettings::parse(&text).unwrap_or_else(|e| {
                    tracing::warn!(path = %self.path.display(), error = %e, "link faults file ignored");
                    LinkSettings::default()
                }),
                Err(_) => LinkSettings::default(),
            };
            if settings != state.settings {
                tracing::info!(?settings, "test link faults changed");
                state.settings = settings;
            }
        }
        let settings = state.settings;
        if state.rng.chance(settings.loss_per_mille) {
            return Fate {
                copies: 0,
                due: None,
            };
        }
        let copies = if state.rng.chance(settings.duplicate_per_mille) {
            2
        } else {
            1
        };
        let due = if settings.delay_ms_max == 0 {
            None
        } else {
            let wait = Duration::from_millis(state.rng.below(settings.delay_ms_max + 1));
            let due = (now + wait).max(state.last_due.unwrap_or(now));
            state.last_due = Some(due);
            Some(due)
        };
        Fate { copies, due }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_format_is_checked() {
        assert_eq!(LinkSettings::parse("").unwrap(), LinkSettings::default());
        assert_eq!(
            LinkSettings::parse("loss 20 delay 50 duplicate 5\n").unwrap(),
            LinkSettings {
                loss_per_mille: 20,
                delay_ms_max: 50,
                duplicate_per_mille: 5
            }
        );
        assert!(LinkSettings::parse("loss 2000").is_err());
        assert!(LinkSettings::parse("delay").is_err());
        assert!(LinkSettings::parse("jitter 5").is_err());
        assert!(LinkSettings::parse("loss -1").is_err());
    }

    #[tokio::test]
    async fn frames_are_lost_duplicated_and_delayed_in_order() {
        let dir = std::env::temp_dir().join(format!("cairn-links-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("links");
        let faults = LinkFaults::new(path.clone(), 7);
        // No file: healthy.
        assert_eq!(
            faults.fate(),
            Fate {
                copies: 1,
                due: None
            }
        );
        std::fs::write(&path, "loss 300 delay 40 duplicate 300").unwrap();
        let faults = LinkFaults::new(path.clone(), 7);
        let fates: Vec<Fate> = (0..1000).map(|_| faults.fate()).collect();
        let lost = fates.iter().filter(|f| f.copies == 0).count();
        let twice = fates.iter().filter(|f| f.copies == 2).count();
        assert!((200..400).contains(&lost), "{lost} lost");
        assert!((100..300).contains(&twice), "{twice} duplicated");
        let dues: Vec<Instant> = fates.iter().filter_map(|f| f.due).collect();
        assert!(dues.windows(2).all(|w| w[0] <= w[1]), "order kept");
        assert!(dues
            .iter()
            .all(|d| *d <= Instant::now() + Duration::from_millis(40)));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
