//! The audition: the re-allocation's policy and its cheapest rivals, each fine-tuned briefly
//! from the full-precision model and scored on the bandit split; the least loss wins.
//!
//! The competition prices a rung by the damage it does before any fine-tuning, and the
//! re-allocation adds those prices up. What the final fine-tuning recovers is not in them: on
//! the Fashion-MNIST ConvNet at 12×, `stage1.conv` at 3 bits (with the classifier at 4) is
//! priced above the classifier at 3 (with `stage1.conv` at 4) on every seed, yet after the
//! fine-tuning it is 0.3 points ahead on every seed, and a fine-tuning of 6,400 images already
//! ranks the two that way. So the finalists (the re-allocation's choice and its
//! [`super::reallocate::Reallocation::rivals`]) each start where the final fine-tuning from FP
//! starts (the FP model calibrated at the policy), train every layer on the same training
//! images in the same order, and are scored by their mean cross-entropy on the bandit split.
//! The re-allocation's choice keeps its place unless a rival scores strictly lower.

use super::config::SearchConfig;
use super::reallocate::Reallocation;
use crate::data::{Normalization, Splits};
use crate::events::{Changes, Event, Events, Pass, finalists_text};
use crate::model::{Model, QuantCtx};
use crate::quant::policy::Policy;
use crate::train::calibrate::calibrate;
use crate::train::fit::epoch_rng;
use crate::train::{eval_policy, sgd, train_epoch};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Seed of the audition's shuffling (with the search's): every finalist sees the same images in
/// the same order.
const AUDITION_SEED: u64 = 0xA0D1_7105;

/// How the audition runs (`--audition`, `--audition-images`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audition {
    /// Policies auditioned: the re-allocation's and up to this many less one of its rivals.
    pub finalists: usize,
    /// Training images each finalist fine-tunes on (the learning rate falls linearly from the
    /// collaboration's peak to 0 over them).
    pub images: usize,
}

/// One finalist and how it did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finalist {
    /// Its policy.
    pub policy: Policy,
    /// Its summed price in the re-allocation.
    pub price: f64,
    /// Mean bandit cross-entropy after its fine-tuning (`None`: the fine-tuning diverged or the
    /// loss was not finite, so it cannot win).
    pub loss: Option<f64>,
}

/// What an audition found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Auditioned {
    /// The finalists, the re-allocation's choice first, then its rivals, cheapest first.
    pub finalists: Vec<Finalist>,
    /// Index of the winner.
    pub chosen: usize,
    /// Training images each finalist fine-tuned on.
    pub images: usize,
    /// Wall time.
    pub seconds: f64,
}

impl Auditioned {
    /// The winning policy.
    pub fn winner(&self) -> &Policy {
        &self.finalists[self.chosen].policy
    }

    /// The layers whose bits finalist `i` changes from the re-allocation's choice (the first):
    /// name, the choice's bits, the finalist's.
    pub fn changes(&self, i: usize) -> Changes<'_> {
        self.finalists[0]
            .policy
            .changes_to(&self.finalists[i].policy)
    }

    /// Each finalist's changes from the re-allocation's choice, summed price and bandit loss,
    /// as [`Event::Auditioned`] reports them.
    pub fn finalists(&self) -> Vec<(Changes<'_>, f64, Option<f64>)> {
        self.finalists
            .iter()
            .enumerate()
            .map(|(i, f)| (self.changes(i), f.price, f.loss))
            .collect()
    }

    /// One line for a report: each finalist's changes, price and loss, the winner marked.
    pub fn describe(&self) -> String {
        format!(
            "audition ({} images each, bandit loss): {}",
            self.images,
            finalists_text(&self.finalists(), self.chosen)
        )
    }

    /// The training the audition spent, in epochs of a training split of `train_len` images.
    pub fn epochs(&self, train_len: usize) -> f64 {
        (self.finalists.len() * self.images.min(train_len)) as f64 / train_len.max(1) as f64
    }
}

/// The index of the finalist with the least loss: the first (the re-allocation's choice) unless
/// another is strictly lower; a finalist without a loss never wins, and when none has one, the
/// first stays.
pub fn winner(losses: &[Option<f64>]) -> usize {
    let mut best: Option<(usize, f64)> = None;
    for (i, l) in losses.iter().enumerate() {
        if let Some(l) = l.filter(|l| l.is_finite())
            && best.is_none_or(|(_, b)| l < b)
        {
            best = Some((i, l));
        }
    }
    best.map_or(0, |(i, _)| i)
}

/// Auditions `r`'s policy against up to `settings.finalists - 1` of its rivals (those `r`
/// carries): each fine-tuned for `settings.images` images from `fp` calibrated at it, scored on
/// the whole bandit split. `None` when `r` has no rivals (nothing to audition).
pub fn audition(
    fp: &Model,
    r: &Reallocation,
    cfg: &SearchConfig,
    settings: Audition,
    splits: &Splits,
    norm: &Normalization,
    events: &dyn Events,
) -> Result<Option<Auditioned>> {
    let rivals = settings.finalists.saturating_sub(1).min(r.rivals.len());
    if rivals == 0 || settings.images == 0 {
        return Ok(None);
    }
    let started = Instant::now();
    let mut finalists = vec![Finalist {
        policy: r.policy.clone(),
        price: r.price,
        loss: None,
    }];
    finalists.extend(r.rivals[..rivals].iter().map(|rv| Finalist {
        policy: rv.policy.clone(),
        price: rv.price,
        loss: None,
    }));
    // The calibration images every finalist starts from, drawn once.
    let calib = crate::data::calibration_images(&splits.train, norm, fp.net.device(), cfg.augment)?;
    for f in &mut finalists {
        let model = fp.clone();
        calibrate(&model.net, &f.policy, cfg.scheme, &calib);
        f.loss = tuned_loss(model, &f.policy, cfg, settings.images, splits, norm, events)?;
    }
    let losses: Vec<Option<f64>> = finalists.iter().map(|f| f.loss).collect();
    let chosen = winner(&losses);
    let done = Auditioned {
        finalists,
        chosen,
        images: settings.images,
        seconds: started.elapsed().as_secs_f64(),
    };
    report(&done, events);
    Ok(Some(done))
}

/// The mean bandit cross-entropy of `policy` after fine-tuning every layer of `model` (the FP
/// model calibrated at it) for `images` training images; `None` when the fine-tuning diverged or
/// the loss is not finite.
fn tuned_loss(
    model: Model,
    policy: &Policy,
    cfg: &SearchConfig,
    images: usize,
    splits: &Splits,
    norm: &Normalization,
    events: &dyn Events,
) -> Result<Option<f64>> {
    let ctx = QuantCtx::new(cfg.scheme, &policy.bits);
    let mut optim = sgd(&cfg.hyper);
    let mut rng = epoch_rng(cfg.seed ^ AUDITION_SEED, 0);
    let lr = cfg.finetune.schedule.lr_max;
    let trained = train_epoch(
        &model.net,
        &mut optim,
        &ctx,
        &splits.train,
        norm,
        &cfg.hyper,
        cfg.augment,
        &mut rng,
        Some(images),
        &|t| lr * (1.0 - t),
        None,
        Pass {
            events,
            phase: "audition",
        },
    );
    if let Err(e) = trained {
        return match e.downcast_ref::<crate::train::trainer::Diverged>() {
            Some(_) => Ok(None),
            None => Err(e),
        };
    }
    let eval = eval_policy(&model, policy, cfg.scheme, &splits.bandit, norm, None)?;
    Ok(Some(eval.loss).filter(|l| l.is_finite()))
}

/// Reports the audition: each finalist's changes from the re-allocation's choice, price and
/// loss, and the winner.
fn report(done: &Auditioned, events: &dyn Events) {
    events.event(&Event::Auditioned {
        finalists: done.finalists(),
        chosen: done.chosen,
        images: done.images,
        seconds: done.seconds,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::policy::LayerBits;

    #[test]
    fn the_least_finite_loss_wins_and_the_first_keeps_a_tie() {
        assert_eq!(winner(&[Some(0.12), Some(0.10), Some(0.11)]), 1);
        assert_eq!(winner(&[Some(0.10), Some(0.10)]), 0);
        assert_eq!(winner(&[Some(0.10), Some(0.11)]), 0);
        // A finalist without a loss (diverged) or with a non-finite one never wins.
        assert_eq!(winner(&[None, Some(0.5)]), 1);
        assert_eq!(winner(&[Some(0.5), Some(f64::NAN), None]), 0);
        assert_eq!(winner(&[Some(f64::INFINITY), Some(0.5)]), 1);
        assert_eq!(winner(&[None, None]), 0);
    }

    #[test]
    fn the_audition_spends_each_finalists_images_capped_at_the_split() {
        let p = Policy::uniform(&["a".to_string()], LayerBits { w: 4, a: 4 });
        let f = |loss| Finalist {
            policy: p.clone(),
            price: 0.0,
            loss,
        };
        let a = Auditioned {
            finalists: vec![f(Some(0.1)), f(None), f(Some(0.2))],
            chosen: 0,
            images: 6400,
            seconds: 1.0,
        };
        assert!((a.epochs(64_000) - 0.3).abs() < 1e-12);
        assert!((a.epochs(3200) - 3.0).abs() < 1e-12);
    }

    #[test]
    fn a_description_names_each_finalists_changes_and_marks_the_winner() {
        let names = vec!["s1".to_string(), "fc".to_string()];
        let p = |s1, fc| Policy {
            names: names.clone(),
            bits: vec![LayerBits { w: s1, a: s1 }, LayerBits { w: fc, a: fc }],
        };
        let a = Auditioned {
            finalists: vec![
                Finalist {
                    policy: p(4, 3),
                    price: 0.28,
                    loss: Some(0.3449),
                },
                Finalist {
                    policy: p(3, 4),
                    price: 0.29,
                    loss: Some(0.3238),
                },
                Finalist {
                    policy: p(4, 2),
                    price: 0.44,
                    loss: None,
                },
            ],
            chosen: 1,
            images: 6400,
            seconds: 8.0,
        };
        assert!(a.changes(0).is_empty());
        assert_eq!(a.winner(), &p(3, 4));
        assert_eq!(
            a.describe(),
            "audition (6400 images each, bandit loss): re-allocation's: price 0.2800, loss \
             0.3449; s1 W4A4 → W3A3, fc W3A3 → W4A4: price 0.2900, loss 0.3238 (chosen); \
             fc W3A3 → W2A2: price 0.4400, loss diverged"
        );
    }
}
