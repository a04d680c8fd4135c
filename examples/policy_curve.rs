//! Follows whole weight-bit policies through the fine-tuning `ccq compare` gives every method
//! (from the FP model calibrated at the policy, a cosine from LR to 0 over EPOCHS epochs) and
//! prints, at each of a few points along it, the bandit split's tempered cross-entropy and
//! top-1, then the test top-1 at the end: a diagnostic of when in the fine-tuning the ranking of
//! two policies settles.
//!
//! `cargo run --release --example policy_curve -- FP_CHECKPOINT RUN/state.json POLICY[,POLICY…]
//! [EPOCHS [LR [SEED]]]`
//!
//! POLICY is a string of weight bits as `policy_damage` takes (activations the same when the
//! search ties them). Points are at 3,200 and 6,400 images, then every doubling, and the end.
mod common;

use anyhow::Result;
use ccq::train::schedule::cosine;

fn main() -> Result<()> {
    let (args, setup) = common::from_args(
        "policy_curve FP_CHECKPOINT RUN/state.json POLICY[,POLICY…] [EPOCHS [LR [SEED]]]",
    )?;
    let (ck, cfg, p) = (&setup.ck, &setup.cfg, &setup.p);
    let (epochs, lr, seed): (f64, f64, u64) = common::options(&args, &setup, 2.0, 0.005)?;
    let norm = ck.meta.normalization.clone();
    let total = (epochs * p.splits.train.len() as f64).round() as usize;
    let mut points = vec![3200usize, 6400];
    while points.last().is_some_and(|&x| 2 * x < total) {
        points.push(2 * points.last().expect("non-empty"));
    }
    points.push(total);
    points.retain(|&x| x <= total);
    for digits in args[2].split(',') {
        let policy = setup.policy(digits)?;
        let model = ccq::search::lookahead::fp_at(&ck.model, &policy, cfg, &p.splits, &norm)?;
        let mut optim = ccq::train::sgd(&cfg.hyper);
        let mut rng = ccq::train::fit::epoch_rng(seed, 0);
        let mut done = 0usize;
        let mut line = digits.to_string();
        for &to in &points {
            let chunk = to - done;
            let start = done as f64;
            setup.train(&model, &policy, &mut optim, &mut rng, chunk, &|t| {
                cosine(lr, 0.0, (start + chunk as f64 * t) / total as f64)
            })?;
            done = to;
            let scored = setup.bandit_score(&model, &policy)?;
            line += &format!(" {to}:{:.4}/{:.4}", scored.tempered_loss, scored.top1);
        }
        let test =
            ccq::train::eval_policy(&model, &policy, cfg.scheme, &p.splits.test, &norm, None)?;
        println!("{line} test {:.4}", test.top1);
    }
    Ok(())
}
