//! What the policy diagnostics (`policy_damage`, `policy_curve`) share: the FP model, the
//! search's settings and data, and policies given as strings of weight bits.

use anyhow::{Context, Result, bail};
use ccq::events::{Pass, Silent};
use ccq::model::{Model, QuantCtx};
use ccq::pipeline::data::Prepared;
use ccq::quant::policy::Policy;
use ccq::search::config::SearchConfig;
use ccq::train::checkpoint::Checkpoint;
use rand::rngs::StdRng;
use std::path::Path;
use std::str::FromStr;
use tch::Device;

/// The command line after the program's name (FP_CHECKPOINT RUN/state.json POLICY[,POLICY…]
/// and the options after them) and the [`Setup`] its first two name; an error that gives
/// `usage` when the first three are missing.
pub fn from_args(usage: &str) -> Result<(Vec<String>, Setup)> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        bail!("usage: {usage}");
    }
    let setup = Setup::load(&args[0], &args[1])?;
    Ok((args, setup))
}

/// The three optional arguments after the policies: images (or epochs), learning rate (each
/// with its default) and the shuffling seed (the search's by default).
pub fn options<T: FromStr>(
    args: &[String],
    setup: &Setup,
    length: T,
    lr: f64,
) -> Result<(T, f64, u64)>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    Ok((
        arg(args, 3, length)?,
        arg(args, 4, lr)?,
        arg(args, 5, setup.cfg.seed)?,
    ))
}

/// Argument `i` parsed, or `default` where it is absent.
pub fn arg<T: FromStr>(args: &[String], i: usize, default: T) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    args.get(i).map_or(Ok(default), |s| {
        s.parse()
            .with_context(|| format!("argument {}: {s}", i + 1))
    })
}

/// The FP checkpoint, the settings of the search whose `state.json` is given, and the
/// checkpoint's data split as the search split it.
pub struct Setup {
    /// The FP checkpoint.
    pub ck: Checkpoint,
    /// The search's settings (quantizers, augmentation, ladders, seed).
    pub cfg: SearchConfig,
    /// The checkpoint's data.
    pub p: Prepared,
}

impl Setup {
    /// Loads the FP checkpoint at `fp` and the settings in the search state at `state`.
    pub fn load(fp: &str, state: &str) -> Result<Self> {
        let ck = ccq::train::checkpoint::load(Path::new(fp), Device::Cpu)?;
        let text = std::fs::read_to_string(state).with_context(|| state.to_string())?;
        let json: serde_json::Value =
            serde_json::from_str(&text).with_context(|| state.to_string())?;
        let cfg: SearchConfig = serde_json::from_value(json["config"].clone())
            .with_context(|| format!("{state}: no search settings"))?;
        let p = ccq::pipeline::data::prepare_for(&ck, &Default::default(), &Silent)?;
        Ok(Setup { ck, cfg, p })
    }

    /// The policy `digits` names: one weight-bit digit per layer in the model's order,
    /// activations the same when the search ties them, else at its activation-ladder top.
    pub fn policy(&self, digits: &str) -> Result<Policy> {
        let names = &self.ck.meta.layers;
        let mut policy = self.cfg.lowering.start(names);
        if digits.len() != names.len() {
            bail!(
                "{digits}: {} digits for {} layers",
                digits.len(),
                names.len()
            );
        }
        for (b, c) in policy.bits.iter_mut().zip(digits.chars()) {
            b.w = c
                .to_digit(10)
                .with_context(|| format!("{digits}: not a digit: {c}"))?;
            if self.cfg.lowering.tied {
                b.a = b.w;
            }
        }
        Ok(policy)
    }

    /// Trains every layer of `model` at `policy` on `images` training images (the search's
    /// batch settings and augmentation), the learning rate at `t` ∈ [0, 1] of them `lr_at(t)`.
    pub fn train(
        &self,
        model: &Model,
        policy: &Policy,
        optim: &mut ccq::train::optim::FlatSgd,
        rng: &mut StdRng,
        images: usize,
        lr_at: &dyn Fn(f64) -> f64,
    ) -> Result<()> {
        ccq::train::train_epoch(
            &model.net,
            optim,
            &QuantCtx::new(self.cfg.scheme, &policy.bits),
            &self.p.splits.train,
            &self.ck.meta.normalization,
            &self.cfg.hyper,
            self.cfg.augment,
            rng,
            Some(images),
            lr_at,
            None,
            Pass {
                events: &Silent,
                phase: "fine-tune",
            },
        )?;
        Ok(())
    }

    /// `model` at `policy` scored on the bandit split as the search's trials score it.
    pub fn bandit_score(
        &self,
        model: &Model,
        policy: &Policy,
    ) -> Result<ccq::search::reward::TrialScore> {
        Ok(ccq::search::trials::score_trials(
            model,
            policy,
            &[],
            self.cfg.scheme,
            &self.p.splits.bandit,
            &self.ck.meta.normalization,
            500,
            &[],
        )?
        .current)
    }
}
