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
//! images in the same order, and are scored on the bandit split by their mean cross-entropy,
//! plain or tempered ([`AuditionScore`]). The re-allocation's choice keeps its place unless a
//! rival scores strictly lower.

use super::config::SearchConfig;
use super::reallocate::Reallocation;
use super::trials::{TRIAL_BATCH, score_trials};
use crate::data::{Normalization, Splits};
use crate::events::{Changes, Event, Events, Pass, finalists_text};
use crate::model::{Model, QuantCtx};
use crate::quant::policy::Policy;
use crate::train::calibrate::calibrate;
use crate::train::fit::epoch_rng;
use crate::train::{sgd, train_epoch};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Seed of the audition's shuffling (with the search's): every finalist sees the same images in
/// the same order.
const AUDITION_SEED: u64 = 0xA0D1_7105;

/// What the audition scores a finalist by once it is fine-tuned (`--audition-score`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditionScore {
    /// Mean bandit cross-entropy (what an audition recorded before the choice existed).
    #[default]
    Loss,
    /// Mean bandit cross-entropy at the softmax temperature that minimises it, as
    /// `--tempered-prices` prices the re-allocation: a short fine-tuning's cross-entropy also
    /// rewards a classifier whose logits are merely better scaled.
    Tempered,
}

impl crate::names::Named for AuditionScore {
    const ALL: &'static [Self] = &[AuditionScore::Loss, AuditionScore::Tempered];
    const WHAT: &'static str = "audition score";
    fn name(&self) -> &'static str {
        match self {
            AuditionScore::Loss => "loss",
            AuditionScore::Tempered => "tempered",
        }
    }
}
crate::from_str_by_name!(AuditionScore);

impl AuditionScore {
    /// Whether this is the plain loss (the score before the choice existed).
    pub fn is_loss(&self) -> bool {
        *self == AuditionScore::Loss
    }

    /// What the scores are, in words ("bandit loss", "tempered bandit loss").
    pub fn describe(self) -> &'static str {
        match self {
            AuditionScore::Loss => "bandit loss",
            AuditionScore::Tempered => "tempered bandit loss",
        }
    }
}

/// How the audition runs (`--audition`, `--audition-images`, `--audition-score`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audition {
    /// Policies auditioned: the re-allocation's and up to this many less one of its rivals.
    pub finalists: usize,
    /// Training images each finalist fine-tunes on (the learning rate falls linearly from the
    /// collaboration's peak to 0 over them).
    pub images: usize,
    /// What the finalists are scored by (plain cross-entropy in settings recorded before it).
    /// Plain is not written, so that settings recorded before the choice existed (a
    /// comparison's `compare.json`) still match when continued with `--audition-score loss`.
    #[serde(default, skip_serializing_if = "AuditionScore::is_loss")]
    pub score: AuditionScore,
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
    /// The same at the softmax temperature that minimises it (`None` as for `loss`, and in
    /// auditions recorded before it was measured).
    #[serde(default)]
    pub tempered: Option<f64>,
}

impl Finalist {
    /// What `score` judges this finalist by.
    pub fn score(&self, score: AuditionScore) -> Option<f64> {
        match score {
            AuditionScore::Loss => self.loss,
            AuditionScore::Tempered => self.tempered,
        }
    }
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
    /// What the winner was chosen by.
    #[serde(default)]
    pub score: AuditionScore,
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

    /// Each finalist's changes from the re-allocation's choice, summed price and score (the
    /// bandit loss the audition chose by), as [`Event::Auditioned`] reports them.
    pub fn finalists(&self) -> Vec<(Changes<'_>, f64, Option<f64>)> {
        self.finalists
            .iter()
            .enumerate()
            .map(|(i, f)| (self.changes(i), f.price, f.score(self.score)))
            .collect()
    }

    /// One line for a report: each finalist's changes, price and score, the winner marked.
    pub fn describe(&self) -> String {
        format!(
            "audition ({} images each, {}): {}",
            self.images,
            self.score.describe(),
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
        tempered: None,
    }];
    finalists.extend(r.rivals[..rivals].iter().map(|rv| Finalist {
        policy: rv.policy.clone(),
        price: rv.price,
        loss: None,
        tempered: None,
    }));
    // The calibration images every finalist starts from, drawn once.
    let calib = crate::data::calibration_images(&splits.train, norm, fp.net.device(), cfg.augment)?;
    for f in &mut finalists {
        let model = fp.clone();
        calibrate(&model.net, &f.policy, cfg.scheme, &calib);
        let tuned = tuned_losses(model, &f.policy, cfg, settings.images, splits, norm, events)?;
        (f.loss, f.tempered) = tuned.unzip();
    }
    let scores: Vec<Option<f64>> = finalists.iter().map(|f| f.score(settings.score)).collect();
    let chosen = winner(&scores);
    let done = Auditioned {
        finalists,
        chosen,
        images: settings.images,
        score: settings.score,
        seconds: started.elapsed().as_secs_f64(),
    };
    report(&done, events);
    Ok(Some(done))
}

/// The mean bandit cross-entropy of `policy`, plain and tempered, after fine-tuning every layer
/// of `model` (the FP model calibrated at it) for `images` training images; `None` when the
/// fine-tuning diverged or either loss is not finite.
fn tuned_losses(
    model: Model,
    policy: &Policy,
    cfg: &SearchConfig,
    images: usize,
    splits: &Splits,
    norm: &Normalization,
    events: &dyn Events,
) -> Result<Option<(f64, f64)>> {
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
    let scored = score_trials(
        &model,
        policy,
        &[],
        cfg.scheme,
        &splits.bandit,
        norm,
        TRIAL_BATCH,
        &[],
    )?
    .current;
    Ok(Some((scored.loss, scored.tempered_loss)).filter(|(l, t)| l.is_finite() && t.is_finite()))
}

/// Reports the audition: each finalist's changes from the re-allocation's choice, price and
/// loss, and the winner.
fn report(done: &Auditioned, events: &dyn Events) {
    events.event(&Event::Auditioned {
        finalists: done.finalists(),
        chosen: done.chosen,
        images: done.images,
        score: done.score.describe(),
        seconds: done.seconds,
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Named;
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
            tempered: loss,
        };
        let a = Auditioned {
            finalists: vec![f(Some(0.1)), f(None), f(Some(0.2))],
            chosen: 0,
            images: 6400,
            score: AuditionScore::Loss,
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
                    tempered: Some(0.2930),
                },
                Finalist {
                    policy: p(3, 4),
                    price: 0.29,
                    loss: Some(0.3238),
                    tempered: Some(0.2863),
                },
                Finalist {
                    policy: p(4, 2),
                    price: 0.44,
                    loss: None,
                    tempered: None,
                },
            ],
            chosen: 1,
            images: 6400,
            score: AuditionScore::Tempered,
            seconds: 8.0,
        };
        assert!(a.changes(0).is_empty());
        assert_eq!(a.winner(), &p(3, 4));
        // The scores shown are the ones chosen by.
        assert_eq!(
            a.describe(),
            "audition (6400 images each, tempered bandit loss): re-allocation's: price 0.2800, \
             loss 0.2930; s1 W4A4 → W3A3, fc W3A3 → W4A4: price 0.2900, loss 0.2863 (chosen); \
             fc W3A3 → W2A2: price 0.4400, loss diverged"
        );
        let plain = Auditioned {
            score: AuditionScore::Loss,
            ..a
        };
        assert!(plain.describe().starts_with(
            "audition (6400 images each, bandit loss): re-allocation's: price 0.2800, loss 0.3449;"
        ));
    }

    #[test]
    fn a_finalist_is_judged_by_the_score_asked_for_and_old_records_read_as_plain() {
        let f = Finalist {
            policy: Policy::uniform(&["a".to_string()], LayerBits { w: 4, a: 4 }),
            price: 0.1,
            loss: Some(0.4),
            tempered: Some(0.3),
        };
        assert_eq!(f.score(AuditionScore::Loss), Some(0.4));
        assert_eq!(f.score(AuditionScore::Tempered), Some(0.3));
        // Settings and finalists recorded before the score existed read back as plain loss.
        let recorded = r#"{"finalists":3,"images":6400}"#;
        let old: Audition = serde_json::from_str(recorded).unwrap();
        assert_eq!(old.score, AuditionScore::Loss);
        // And plain loss is written as they were, so that they continue with it.
        assert_eq!(serde_json::to_string(&old).unwrap(), recorded);
        let tempered = Audition {
            score: AuditionScore::Tempered,
            ..old
        };
        assert_eq!(
            serde_json::to_string(&tempered).unwrap(),
            r#"{"finalists":3,"images":6400,"score":"tempered"}"#
        );
        let mut json = serde_json::to_value(&f).unwrap();
        json.as_object_mut().unwrap().remove("tempered");
        let read: Finalist = serde_json::from_value(json).unwrap();
        assert_eq!((read.loss, read.tempered), (Some(0.4), None));
        let names: Vec<&str> = ["loss", "tempered"]
            .iter()
            .map(|n| n.parse::<AuditionScore>().unwrap().name())
            .collect();
        assert_eq!(names, ["loss", "tempered"]);
        assert!("top1".parse::<AuditionScore>().is_err());
    }
}
