//! Scores whole weight-bit policies on the FP model calibrated at each, as `--final-from fp`
//! starts its fine-tuning, optionally after a short touch-up: a diagnostic of whether a measure
//! taken before (or early in) the fine-tuning ranks policies as the fine-tuning does.
//!
//! `cargo run --release --example policy_damage -- FP_CHECKPOINT RUN/state.json POLICY[,POLICY…]
//! [TOUCH_IMAGES [LR [SEED]]]`
//!
//! A POLICY is a string of weight bits, one digit per layer in the model's order (activations the
//! same when the search ties them, else at its activation-ladder top), e.g. `6444343436333333432224` for ResNet-20. The search's
//! settings (quantizers, augmentation, ladders, seed) come from the run's `state.json`. For each
//! policy it prints the bandit split's mean cross-entropy rise over the FP model, the mean KL
//! divergence of the policy's softmax from the FP model's, the bandit top-1, and the mean
//! cross-entropy at the softmax temperature that minimises it (as `--tempered-prices` prices). With
//! TOUCH_IMAGES > 0, every layer first fine-tunes on that many training images (batches of the
//! search's size, learning rate LR, default 0.01, decaying linearly to 0, shuffled by SEED,
//! default the search's).
mod common;

use anyhow::Result;
use ccq::data::in_order;
use ccq::model::QuantCtx;
use ccq::quant::policy::Policy;
use tch::{Device, Kind, Tensor};

/// The bandit split's summed cross-entropy, summed KL from `fp` (per-batch log-probabilities),
/// hits and image count under `logits` batches.
fn damage(logits: &[(Tensor, Tensor)], fp: &[Tensor]) -> Result<(f64, f64, f64, f64)> {
    let (mut ce, mut kl, mut hits, mut n) = (0.0, 0.0, 0.0, 0.0);
    for ((l, labels), lf) in logits.iter().zip(fp) {
        let lq = l.to_kind(Kind::Double).log_softmax(-1, None);
        ce -= f64::try_from(lq.gather(1, &labels.view([-1, 1]), false).sum(Kind::Double))?;
        kl += f64::try_from((lf.exp() * (lf - &lq)).sum(Kind::Double))?;
        hits += f64::try_from(l.argmax(-1, false).eq_tensor(labels).sum(Kind::Double))?;
        n += labels.size()[0] as f64;
    }
    Ok((ce, kl, hits, n))
}

fn main() -> Result<()> {
    let (args, setup) = common::from_args(
        "policy_damage FP_CHECKPOINT RUN/state.json POLICY[,POLICY…] [TOUCH_IMAGES [LR [SEED]]]",
    )?;
    let (ck, cfg, p) = (&setup.ck, &setup.cfg, &setup.p);
    let (touch, lr, seed): (usize, f64, u64) = common::options(&args, &setup, 0, 0.01)?;
    let norm = ck.meta.normalization.clone();
    let names = ck.meta.layers.clone();
    let bandit = &p.splits.bandit;
    let run = |model: &ccq::model::Model, policy: &Policy| -> Result<Vec<(Tensor, Tensor)>> {
        let ctx = QuantCtx::new(cfg.scheme, &policy.bits);
        tch::no_grad(|| {
            in_order(bandit, &norm, 500, Device::Cpu)
                .map(|b| b.map(|(_, b)| (model.net.forward(&b.images, &ctx), b.labels)))
                .collect()
        })
    };
    let fp_logits = run(&ck.model, &Policy::float(&names))?;
    let fp_logp: Vec<Tensor> = fp_logits
        .iter()
        .map(|(l, _)| l.to_kind(Kind::Double).log_softmax(-1, None))
        .collect();
    let (fp_ce, _, _, n) = damage(&fp_logits, &fp_logp)?;
    for digits in args[2].split(',') {
        let policy = setup.policy(digits)?;
        let model = ccq::search::lookahead::fp_at(&ck.model, &policy, cfg, &p.splits, &norm)?;
        if touch > 0 {
            let mut optim = ccq::train::sgd(&cfg.hyper);
            let mut rng = ccq::train::fit::epoch_rng(seed, 0);
            setup.train(&model, &policy, &mut optim, &mut rng, touch, &|t| {
                lr * (1.0 - t)
            })?;
        }
        let (ce, kl, hits, _) = damage(&run(&model, &policy)?, &fp_logp)?;
        let scored = setup.bandit_score(&model, &policy)?;
        println!(
            "{digits} ce_rise {:.4} kl {:.4} top1 {:.4} tempered_ce {:.4}",
            (ce - fp_ce) / n,
            kl / n,
            hits / n,
            scored.tempered_loss
        );
    }
    Ok(())
}
