//! A run whose directory cannot be written (read-only, or the disk full) fails with a clear
//! error and a non-zero exit, and leaves the previous state exactly as it was; once the disk is
//! writable again the run resumes and finishes.

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn run(prefix: &str, args: &[&str]) -> Output {
    // `sh -c '<prefix>; exec ccq ...'`: the prefix sets limits that the binary inherits.
    let script = format!("{prefix}; exec \"$0\" \"$@\"");
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_ccq"))
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Makes `dir` unwritable: `chmod 555`, and where that does not stop this user (root),
/// the immutable attribute. Returns how, to undo it.
fn make_read_only(dir: &Path) -> &'static str {
    let probe = dir.join(".probe");
    let writable = || {
        let ok = std::fs::write(&probe, b"x").is_ok();
        let _ = std::fs::remove_file(&probe);
        ok
    };
    Command::new("chmod").arg("555").arg(dir).status().unwrap();
    if !writable() {
        return "chmod";
    }
    let ok = Command::new("chattr")
        .arg("+i")
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok && !writable(),
        "cannot make {} read-only on this machine (neither chmod nor chattr +i works)",
        dir.display()
    );
    "chattr"
}

fn make_writable(dir: &Path, how: &str) {
    if how == "chattr" {
        Command::new("chattr").arg("-i").arg(dir).status().unwrap();
    }
    Command::new("chmod").arg("755").arg(dir).status().unwrap();
}

fn snapshot(run: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for e in walk(run) {
        files.push((
            e.strip_prefix(run).unwrap().display().to_string(),
            std::fs::read(&e).unwrap(),
        ));
    }
    files.sort();
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn read_only_or_full_disk_keeps_the_previous_state() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    common::write_idx_dataset(&data);
    let fp = t.path().join("fp");
    let fp_s = fp.to_str().unwrap();
    let small = ["--batch-size", "32", "--threads", "1", "-q"];
    let mut args = vec![
        "train",
        "--model",
        "convnet",
        "--data",
        data.to_str().unwrap(),
        "--format",
        "idx",
        "--epochs",
        "1",
        "--val-size",
        "30",
        "--bandit-size",
        "30",
        "--out",
        fp_s,
    ];
    args.extend(small);
    common::ccq(&args);

    // A new run under a read-only parent: refused, naming the directory, nothing written.
    let parent = t.path().join("locked");
    std::fs::create_dir(&parent).unwrap();
    let how = make_read_only(&parent);
    let out = parent.join("run");
    let mut args = vec![
        "quantize",
        fp_s,
        "--out",
        out.to_str().unwrap(),
        "--qsteps",
        "1",
    ];
    args.extend(small);
    let o = run("true", &args);
    make_writable(&parent, how);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(out.to_str().unwrap()), "{}", text(&o));
    assert!(!out.exists());

    // One step of three, then stop.
    let run_dir = t.path().join("run");
    let r = run_dir.to_str().unwrap();
    let mut args = vec![
        "quantize",
        fp_s,
        "--out",
        r,
        "--qsteps",
        "3",
        "--stop-after",
        "1",
        "--ft-min-epochs",
        "1",
        "--ft-max-epochs",
        "1",
        "--init-epochs",
        "1",
    ];
    args.extend(small);
    common::ccq(&args);
    let before = snapshot(&run_dir);
    let resume = ["quantize", "--resume", r, "--threads", "1", "-q"];

    // Read-only run directory: the next step cannot be saved.
    let how = make_read_only(&run_dir);
    let o = run("true", &resume);
    make_writable(&run_dir, how);
    assert!(!o.status.success(), "read-only: {}", text(&o));
    assert!(
        text(&o).contains(r),
        "the error names the run: {}",
        text(&o)
    );
    assert!(
        !text(&o).contains("step   2:"),
        "a step whose save failed is not reported as done: {}",
        text(&o)
    );
    assert_eq!(
        snapshot(&run_dir),
        before,
        "read-only: the state is untouched"
    );

    // A full disk (file-size limit of 16 KiB, below the weights' size): same.
    let o = run("trap '' XFSZ; ulimit -f 32", &resume);
    assert!(!o.status.success(), "disk full: {}", text(&o));
    let msg = text(&o);
    assert!(
        msg.contains("cannot write") && msg.contains(r),
        "a clear error naming the file: {msg}"
    );
    assert_eq!(
        snapshot(&run_dir),
        before,
        "disk full: the state is untouched and no partial file is left"
    );

    // Writable again: the run resumes and finishes its three steps.
    let o = run("true", &resume);
    assert!(o.status.success(), "{}", text(&o));
    let steps = std::fs::read_to_string(run_dir.join("steps.jsonl")).unwrap();
    assert_eq!(steps.lines().count(), 3);
}
