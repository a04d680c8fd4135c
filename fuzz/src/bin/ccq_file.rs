//! AFL target `ccq_file` (see tests/common/fuzz_targets.rs).
#[path = "../../../tests/common/fuzz_targets.rs"]
#[allow(dead_code)]
mod targets;

fn main() {
    let f = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == "ccq_file")
        .expect("target")
        .1;
    afl::fuzz!(|data: &[u8]| {
        f(data);
    });
}
