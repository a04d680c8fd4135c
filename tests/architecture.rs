//! The library's shape, checked from its source: the top-level modules depend on each other
//! without a cycle, no library module uses clap or prints, and no file in `src/cli` runs a
//! job itself (each maps flags onto a `ccq::pipeline` function).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

/// The code of a file without its comment lines.
fn code(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Top-level library modules (`src/<m>.rs` or `src/<m>/`), without the binary's `cli`.
fn library_modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut mods = BTreeMap::new();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        if ["lib", "main", "cli"].contains(&name.as_str()) {
            continue;
        }
        let files = if p.is_dir() { rust_files(&p) } else { vec![p] };
        mods.entry(name).or_insert_with(Vec::new).extend(files);
    }
    mods
}

#[test]
fn modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mods = library_modules(&src);
    let names: BTreeSet<String> = mods.keys().cloned().collect();
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, files) in &mods {
        let d = deps.entry(m.clone()).or_default();
        for f in files {
            let c = code(f);
            for (i, _) in c.match_indices("crate::") {
                let rest = &c[i + "crate::".len()..];
                let dep: String = rest
                    .chars()
                    .take_while(|ch| ch.is_alphanumeric() || *ch == '_')
                    .collect();
                if dep != *m && names.contains(&dep) {
                    d.insert(dep);
                }
            }
        }
    }
    assert!(deps["model"].contains("quant"), "the scan sees imports");
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.into(), 1);
        path.push(m.into());
        for d in &deps[m] {
            match state.get(d) {
                Some(1) => {
                    let start = path.iter().position(|x| x == d).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                None => {
                    if let Some(c) = visit(d, deps, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.into(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in deps.keys() {
        if !state.contains_key(m) {
            let cycle = visit(m, &deps, &mut state, &mut Vec::new());
            assert!(cycle.is_none(), "module cycle: {cycle:?}; graph {deps:?}");
        }
    }
}

#[test]
fn the_library_neither_uses_clap_nor_prints() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for files in library_modules(&src).values() {
        for f in files {
            let c = code(f);
            for bad in [
                "clap::",
                "println!",
                "eprintln!",
                "print!(",
                "eprint!(",
                "indicatif",
            ] {
                assert!(!c.contains(bad), "{}: uses `{bad}`", f.display());
            }
        }
    }
}

#[test]
fn cli_files_only_map_flags_and_print() {
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cli");
    for f in rust_files(&cli) {
        let c = code(&f);
        let lines = std::fs::read_to_string(&f).unwrap().lines().count();
        assert!(lines <= 230, "{}: {lines} lines", f.display());
        // Jobs run in the library: no training, checkpoint I/O or search calls here.
        for job in [
            "fit(",
            "checkpoint::load",
            "checkpoint::save",
            "search::run",
            "eval_policy(",
        ] {
            assert!(!c.contains(job), "{}: calls `{job}`", f.display());
        }
    }
}
