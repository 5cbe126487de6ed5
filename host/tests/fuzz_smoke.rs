//! The fuzz targets' smoke run in every test run: each target over its
//! seeds and deterministic mutations of them (bit flips, truncations,
//! repeats, splices, random bytes). A panic anywhere in the process — the
//! live node's tasks included — or a live node that stops answering fails
//! it. Coverage-guided runs are `cargo xtask fuzz` (cargo fuzz).

use std::sync::atomic::{AtomicBool, Ordering};

use cairn::fuzz;

static PANICKED: AtomicBool = AtomicBool::new(false);

/// xorshift64*: deterministic mutations.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn mutate(&mut self, seed: &[u8]) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..=self.below(4) {
            match self.below(6) {
                0 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] ^= 1 << self.below(8);
                }
                1 => data.truncate(self.below(data.len() + 1)),
                2 if !data.is_empty() => {
                    let start = self.below(data.len());
                    let end = start + self.below(data.len() - start + 1);
                    let slice = data[start..end].to_vec();
                    let at = self.below(data.len() + 1);
                    data.splice(at..at, slice);
                }
                3 => {
                    let at = self.below(data.len() + 1);
                    let byte = self.next() as u8;
                    data.insert(at, byte);
                }
                4 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] = [0, 0xff, 0x7f, 0x80, b'%', b'\r', b'\n'][self.below(7)];
                }
                _ => {
                    let len = self.below(64);
                    data = (0..len).map(|_| self.next() as u8).collect();
                }
            }
        }
        data
    }
}

#[test]
fn every_fuzz_target_survives_its_seeds_and_their_mutations() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICKED.store(true, Ordering::SeqCst);
        previous(info);
    }));
    let mutants: usize = std::env::var("CAIRN_FUZZ_SMOKE_INPUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    // `cargo xtask fuzz` writes the seeds out as the starting corpus.
    let corpus = std::env::var("CAIRN_FUZZ_WRITE_CORPUS").ok();
    for target in fuzz::TARGETS {
        let seeds = fuzz::seeds(target);
        assert!(!seeds.is_empty(), "{target} has no seeds");
        if let Some(dir) = &corpus {
            let dir = std::path::Path::new(dir).join(target);
            std::fs::create_dir_all(&dir).expect("corpus dir");
            for (i, seed) in seeds.iter().enumerate() {
                std::fs::write(dir.join(format!("seed-{i}")), seed).expect("corpus file");
            }
        }
        let mut mutator = Mutator(0x5EED ^ target.len() as u64);
        let mut runs = 0;
        for seed in &seeds {
            fuzz::run(target, seed);
            runs += 1;
        }
        // The committed corpus, crashes found by cargo fuzz included
        // (`fuzz/corpus/TARGET/crash-*`): each stays a regression test.
        let committed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(target);
        if let Ok(entries) = std::fs::read_dir(&committed) {
            for entry in entries.flatten() {
                let input = std::fs::read(entry.path()).expect("corpus file");
                fuzz::run(target, &input);
                runs += 1;
                assert!(
                    !PANICKED.load(Ordering::SeqCst),
                    "{target} panicked on {}",
                    entry.path().display()
                );
            }
        }
        for i in 0..mutants {
            let seed = &seeds[i % seeds.len()];
            let input = mutator.mutate(seed);
            fuzz::run(target, &input);
            runs += 1;
            assert!(
                !PANICKED.load(Ordering::SeqCst),
                "{target} panicked on input {input:?}"
            );
        }
        if matches!(target, "http_request" | "peer_stream") {
            assert!(
                fuzz::live_node_answers(),
                "the live node stopped answering after {target}"
            );
        }
        assert!(!PANICKED.load(Ordering::SeqCst), "{target} panicked");
        eprintln!("{target}: {runs} inputs");
    }
}
