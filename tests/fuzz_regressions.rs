//! Replays the fuzz seeds (valid files, which every parser must accept) and every input AFL
//! found to crash a parser (`tests/fuzz-cases/<target>/`, which must now return, not panic).

#[path = "common/fuzz_targets.rs"]
mod fuzz_targets;

use fuzz_targets::TARGETS;
use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.is_file());
    v.sort();
    v
}

#[test]
fn seeds_are_accepted() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
    for (name, target) in TARGETS {
        let seeds = files(&root.join(name));
        assert!(!seeds.is_empty(), "target `{name}` has no seeds");
        for s in seeds {
            let data = std::fs::read(&s).unwrap();
            assert!(target(&data), "{}: a valid file is refused", s.display());
        }
    }
}

#[test]
fn found_crashes_stay_fixed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-cases");
    let mut n = 0;
    for (name, target) in TARGETS {
        for case in files(&root.join(name)) {
            let data = std::fs::read(&case).unwrap();
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{}: the `{name}` parser panics", case.display());
            n += 1;
        }
    }
    eprintln!("{n} crash cases replayed");
}
