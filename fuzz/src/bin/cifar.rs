//! AFL target `cifar` (see tests/common/fuzz_targets.rs).
#[path = "../../../tests/common/fuzz_targets.rs"]
#[allow(dead_code)]
mod targets;

fn main() {
    let f = targets::TARGETS
        .iter()
        .find(|(name, _)| *name == "cifar")
        .expect("target")
        .1;
    afl::fuzz!(|data: &[u8]| {
        f(data);
    });
}
