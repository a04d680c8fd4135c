//! The CCQ loop's decisions with injected arm scores: the chosen arms follow the mixed
//! distribution `(1 − λ)·P + λ·r`, sleeping arms are never chosen, and the search stops on the
//! right step.

use ccq::model::cost::model_cost;
use ccq::model::{LayerInfo, ModelKind, ModelSpec, build};
use ccq::quant::policy::{Ladder, Policy};
use ccq::quant::quantizer::QuantScheme;
use ccq::search::bandit::Competition;
use ccq::search::bandit::LambdaSchedule;
use ccq::search::config::{Finetune, SearchConfig, StopRule};
use ccq::search::reward::{Reward, TrialScore, Trials};
use ccq::search::step::{ArmScorer, Plan, decide, plan};
use ccq::search::target::{Lowering, Target};
use ccq::train::Hyper;
use ccq::train::schedule::WarmRestart;

fn layers(kind: ModelKind) -> Vec<LayerInfo> {
    let spec = ModelSpec {
        kind,
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
        graph: None,
    };
    build(&spec, tch::Device::Cpu).unwrap().layers
}

fn config(eta: f64, qsteps: usize, target: Option<Target>) -> SearchConfig {
    SearchConfig {
        lowering: Lowering {
            ladder: Ladder::default(),
            act_ladder: Ladder::default(),
            tied: true,
            floor: 2,
        },
        eta,
        reward: Reward::reference(),
        polish: false,
        polish_swaps: false,
        reallocate: false,
        price_floor: false,
        tempered_prices: false,
        noise_ties: false,
        lookahead_prices: false,
        fp_prices: false,
        top_prices: false,
        audition: None,
        budget_aware: false,
        trial_images: None,
        lambda: LambdaSchedule::default(),
        qsteps,
        target,
        finetune: Finetune {
            schedule: WarmRestart {
                lr_min: 1e-3,
                lr_max: 1e-2,
                const_epochs: 1,
                cosine_epochs: 1,
            },
            min_epochs: 1,
            max_epochs: 1,
            stop: StopRule::BestRatio(0.99),
            epoch_samples: None,
            retries: 2,
            debug_lr_scale: None,
            keep_best: false,
            step_bn: false,
        },
        init_epochs: 0,
        final_epochs: 0,
        final_from: Default::default(),
        distill: None,
        hyper: Hyper {
            batch_size: 32,
            momentum: 0.9,
            weight_decay: 1e-4,
        },
        scheme: QuantScheme::default(),
        seed: 7,
        augment: None,
    }
}

/// Fixed accuracy per layer; checks it is asked about exactly the awake arms.
struct Injected {
    acc: Vec<f64>,
    expect_awake: Option<Vec<bool>>,
}

/// Scores with top-1 `acc` and loss `1 − acc`; the current policy scores 1.0 and loss 0.
fn trials(arms: Vec<Option<f64>>) -> Trials {
    Trials {
        current: TrialScore {
            top1: 1.0,
            loss: 0.0,
            loss_se: 0.0,
            tempered_loss: 0.0,
        },
        arms: arms
            .into_iter()
            .map(|a| {
                a.map(|a| TrialScore {
                    top1: a,
                    loss: 1.0 - a,
                    loss_se: 0.01,
                    tempered_loss: 1.0 - a,
                })
            })
            .collect(),
    }
}

impl ArmScorer for Injected {
    fn score(&mut self, contenders: &[Option<(usize, &Policy)>]) -> anyhow::Result<Trials> {
        if let Some(awake) = &self.expect_awake {
            let asked: Vec<bool> = contenders.iter().map(Option::is_some).collect();
            assert_eq!(&asked, awake, "only awake arms compete");
        }
        Ok(trials(
            contenders
                .iter()
                .map(|c| c.map(|(layer, _)| self.acc[layer]))
                .collect(),
        ))
    }
}

#[test]
fn chosen_arms_follow_the_mixed_distribution() {
    let layers = layers(ModelKind::Convnet);
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let n = names.len();
    let draws = 6000;
    let cfg = config(4.0, draws, Some(Target::Compression(30.0)));
    let arms = cfg.lowering.arms(n);
    let mut policy = cfg.lowering.start(&names);
    // Arm 3 sits at the floor (nothing to lower), arm 1's lowering was refused.
    policy.bits[3].w = 2;
    policy.bits[3].a = 2;
    let refused = [1usize];
    let Plan::Compete(contest) = plan(&cfg, &layers, &arms, &policy, &refused, 0, &[]) else {
        panic!("the search should go on");
    };
    let (trials, awake) = (&contest.trials, &contest.awake);
    assert_eq!(*awake, vec![true, false, true, false]);
    let mut scorer = Injected {
        acc: vec![0.9, 0.8, 0.6, 0.7],
        expect_awake: Some(awake.clone()),
    };
    let mut competition = Competition::new(awake);
    let mut counts = vec![0usize; n];
    let mut expected = vec![0.0f64; n];
    for t in 1..=draws {
        let d = decide(&cfg, &arms, &contest, &mut competition, &mut scorer, t).unwrap();
        // The distribution itself, recomputed from the method's formulas.
        let w: Vec<f64> = (0..n)
            .map(|i| {
                if awake[i] {
                    (cfg.eta * scorer.acc[i]).exp()
                } else {
                    0.0
                }
            })
            .collect();
        let saved: Vec<f64> = (0..n)
            .map(|i| match &trials[i] {
                Some((_, s)) if awake[i] => *s,
                _ => 0.0,
            })
            .collect();
        let (ws, ss): (f64, f64) = (w.iter().sum(), saved.iter().sum());
        let lambda = cfg.lambda.at(t, cfg.qsteps);
        assert_eq!(d.lambda, lambda);
        for i in 0..n {
            let want = (1.0 - lambda) * w[i] / ws + lambda * saved[i] / ss;
            assert!((d.mixed[i] - want).abs() < 1e-12, "t {t} arm {i}");
            expected[i] += d.mixed[i];
        }
        assert!(awake[d.chosen], "t {t}: a sleeping arm was chosen");
        counts[d.chosen] += 1;
    }
    assert_eq!(counts[1] + counts[3], 0, "sleeping arms are never chosen");
    for i in [0, 2] {
        let e = expected[i];
        let sd = (e * (1.0 - e / draws as f64)).sqrt();
        assert!(
            (counts[i] as f64 - e).abs() < 4.0 * sd,
            "arm {i}: chosen {} times, expected {e:.1} ± {sd:.1}",
            counts[i]
        );
    }
    // The better-scoring arm wins more often on λ = 0 steps; the larger one on the prior.
    assert!(counts[0] > counts[2], "{counts:?}");
}

/// Runs the loop's decisions with no training: returns each step's compression and why it ended.
fn simulate(cfg: &SearchConfig, layers: &[LayerInfo]) -> (Vec<f64>, String) {
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let arms = cfg.lowering.arms(names.len());
    let mut policy = cfg.lowering.start(&names);
    let mut scorer = Injected {
        acc: (0..names.len()).map(|i| 0.9 - 0.01 * i as f64).collect(),
        expect_awake: None,
    };
    let mut competition = Competition::new(&vec![true; arms.len()]);
    let mut ratios = Vec::new();
    for step in 0.. {
        match plan(cfg, layers, &arms, &policy, &[], step, &[]) {
            Plan::Stop(why) => return (ratios, why),
            Plan::Compete(contest) => {
                let d = decide(
                    cfg,
                    &arms,
                    &contest,
                    &mut competition,
                    &mut scorer,
                    step + 1,
                )
                .unwrap();
                policy = contest.trials[d.chosen].clone().unwrap().0;
                ratios.push(model_cost(layers, &policy, cfg.scheme.weight).compression);
            }
        }
    }
    unreachable!()
}

#[test]
fn the_search_stops_on_the_right_step() {
    let layers = layers(ModelKind::Resnet20);
    // A target: the first step that meets it is the last.
    let (ratios, why) = simulate(&config(1.0, 500, Some(Target::Compression(6.0))), &layers);
    assert!(why.starts_with("target met"), "{why}");
    let last = *ratios.last().unwrap();
    assert!(last >= 6.0, "{ratios:?}");
    assert!(
        ratios[..ratios.len() - 1].iter().all(|&r| r < 6.0),
        "it stops on the first step that meets the target: {ratios:?}"
    );
    // The step budget.
    let (ratios, why) = simulate(&config(1.0, 3, Some(Target::Compression(6.0))), &layers);
    assert_eq!((ratios.len(), why.as_str()), (3, "reached --qsteps 3"));
    // No target: it runs until every layer sits at the floor.
    let cfg = config(1.0, 500, None);
    let (ratios, why) = simulate(&cfg, &layers);
    assert_eq!(why, "no layer awake");
    let steps_to_floor = cfg.lowering.arms(layers.len()).len() * 4; // 8 → 6 → 4 → 3 → 2
    assert_eq!(ratios.len(), steps_to_floor);
    assert!((ratios.last().unwrap() - 16.0).abs() < 0.5, "{ratios:?}");
}

/// Scores an arm as unusable (its trial's logits were not finite).
struct Unusable(usize);

impl ArmScorer for Unusable {
    fn score(&mut self, contenders: &[Option<(usize, &Policy)>]) -> anyhow::Result<Trials> {
        Ok(trials(
            contenders
                .iter()
                .map(|c| c.and_then(|(layer, _)| (layer != self.0).then_some(0.5)))
                .collect(),
        ))
    }
}

#[test]
fn an_unusable_trial_is_never_chosen() {
    let layers = layers(ModelKind::Convnet);
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let cfg = config(1.0, 1000, Some(Target::Compression(30.0)));
    let arms = cfg.lowering.arms(names.len());
    let policy = cfg.lowering.start(&names);
    let Plan::Compete(contest) = plan(&cfg, &layers, &arms, &policy, &[], 0, &[]) else {
        panic!("the search should go on");
    };
    let awake = &contest.awake;
    // fc would otherwise get a share of the memory prior on every λ > 0 step.
    let fc = names.len() - 1;
    let mut competition = Competition::new(awake);
    for t in 1..=400 {
        let d = decide(
            &cfg,
            &arms,
            &contest,
            &mut competition,
            &mut Unusable(fc),
            t,
        )
        .unwrap();
        assert_eq!(d.mixed[fc], 0.0, "t {t}");
        assert_ne!(d.chosen, fc, "t {t}");
    }
    let all = decide(
        &cfg,
        &arms,
        &contest,
        &mut competition,
        &mut Injected {
            acc: vec![f64::NAN; names.len()],
            expect_awake: None,
        },
        2,
    );
    assert!(all.is_err(), "no usable arm is an error, not a pick");
}

#[test]
fn carried_log_weights() {
    // carry 0 is the reference: reset, then α = exp(η·reward).
    let mut c = Competition::new(&[true, true, true]);
    let p0 = c.update(&[Some(0.9), None, Some(0.5)], 2.0, 0.0);
    let mut r = Competition::new(&[true, false, true]);
    assert_eq!(p0, r.score(&[Some(0.9), None, Some(0.5)], 2.0));
    assert_eq!(p0[1], 0.0);
    // carry 0.5: log α accumulates with decay; an arm that does not compete keeps its log α
    // and gets probability 0.
    let mut c = Competition::new(&[true, true, true]);
    c.update(&[Some(1.0), Some(-1.0), Some(0.0)], 1.0, 0.5);
    assert_eq!(c.log_w, vec![1.0, -1.0, 0.0]);
    let p = c.update(&[Some(1.0), None, Some(1.0)], 1.0, 0.5);
    assert_eq!(c.log_w, vec![1.5, -1.0, 1.0]);
    assert_eq!(p[1], 0.0);
    let want = 1.0 / (1.0 + (-0.5f64).exp());
    assert!((p[0] - want).abs() < 1e-12, "{p:?}");
}

#[test]
fn budget_aware_counts_only_the_saving_toward_the_nearest_goal() {
    let layers = layers(ModelKind::Convnet);
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let n = names.len();
    let base = config(1.0, 1000, None);
    let arms = base.lowering.arms(n);
    let policy = base.lowering.start(&names);
    let now = model_cost(&layers, &policy, base.scheme.weight).compression;
    // The nearest goal is a hair away, either as the target or as a milestone on the way to a
    // far target: every lowering reaches it.
    let near = now * 1.0005;
    for (target, milestones) in [(near, vec![]), (30.0, vec![near, 20.0])] {
        let cfg = SearchConfig {
            reward: Reward::improved(),
            budget_aware: true,
            target: Some(Target::Compression(target)),
            ..base.clone()
        };
        let Plan::Compete(contest) = plan(&cfg, &layers, &arms, &policy, &[], 0, &milestones)
        else {
            panic!("the search should go on");
        };
        let need = contest
            .need
            .expect("a budget-aware contest knows its shortfall");
        let full = model_cost(&layers, &policy, cfg.scheme.weight);
        assert!(need > 0.0 && need < 0.001 * full.size_bits as f64, "{need}");
        assert!(contest.trials.iter().flatten().all(|(_, s)| *s > need));
        // Every arm meets the goal, so the prior is uniform and the reward follows the loss
        // alone: the lowest-loss arm (stem, accuracy 0.9) gets the highest reward, although
        // stage2's lowering saves far more.
        let mut scorer = Injected {
            acc: vec![0.9, 0.8, 0.6, 0.7],
            expect_awake: None,
        };
        let mut competition = Competition::new(&contest.awake);
        let d = decide(&cfg, &arms, &contest, &mut competition, &mut scorer, 2).unwrap();
        assert!(d.r.iter().all(|&r| (r - 0.25).abs() < 1e-12), "{:?}", d.r);
        let best = (0..n).max_by(|&a, &b| d.rewards[a].unwrap().total_cmp(&d.rewards[b].unwrap()));
        assert_eq!(best, Some(0));
        // Without budget awareness the prior follows the full saving (stage2 holds most bits).
        let plain = SearchConfig {
            budget_aware: false,
            ..cfg.clone()
        };
        let Plan::Compete(c) = plan(&plain, &layers, &arms, &policy, &[], 0, &milestones) else {
            panic!("the search should go on");
        };
        assert!(c.need.is_none());
        let d = decide(
            &plain,
            &arms,
            &c,
            &mut Competition::new(&c.awake),
            &mut scorer,
            2,
        )
        .unwrap();
        assert!(d.r[2] > 0.5, "{:?}", d.r);
    }
}
