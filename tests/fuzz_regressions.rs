//! The fuzz targets' inputs as tests: every input kept in `fuzz/regressions/TARGET/`
//! (each once made a target fail) goes through the same entry point the fuzz target
//! calls (`peercache::fuzzing`), and so do a few hundred seeded random inputs, so the
//! entry points themselves stay in working order between fuzz runs.

use std::path::Path;

use rand::{Rng, SeedableRng, rngs::SmallRng};

type Target = fn(&[u8]);

const TARGETS: [(&str, Target); 5] = [
    ("codec", peercache::fuzzing::codec),
    ("http", peercache::fuzzing::http),
    ("peer", peercache::fuzzing::peer),
    ("registry", peercache::fuzzing::registry),
    ("resp", peercache::fuzzing::resp),
];

#[test]
fn kept_crash_inputs_pass() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for (name, target) in TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut paths: Vec<_> = entries
            .map(|e| e.expect("a readable entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let input = std::fs::read(&path).expect("a readable input");
            eprintln!("replaying {}", path.display());
            target(&input);
        }
    }
}

#[test]
fn seeded_random_inputs_pass() {
    let mut rng = SmallRng::seed_from_u64(15);
    for (_, target) in TARGETS {
        for _ in 0..300 {
            let len = rng.random_range(0..512);
            let input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            target(&input);
        }
    }
}
