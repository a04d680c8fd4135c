//! Timing (`ccq bench`): one QAT training step or fake-quantized inference on random data, or
//! the data loader on a dataset.

use super::session::set_threads;
use crate::error::{Error, Result};
use crate::model::{ModelKind, ModelSpec, QuantCtx, build};
use crate::names::Named;
use crate::quant::policy::{LayerBits, Policy};
use crate::quant::quantizer::QuantScheme;
use crate::train::trainer::cross_entropy;
use crate::train::{Devices, FlatSgd, Hyper, sgd};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// What is timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchMode {
    /// QAT forward + backward + SGD update.
    Step,
    /// Fake-quantized inference.
    Infer,
    /// The data loader on a dataset ([`bench_loader`]; [`bench()`] refuses it).
    Load,
}

impl Named for BenchMode {
    const ALL: &'static [Self] = &[BenchMode::Step, BenchMode::Infer, BenchMode::Load];
    const WHAT: &'static str = "bench mode";
    fn name(&self) -> &'static str {
        match self {
            BenchMode::Step => "step",
            BenchMode::Infer => "infer",
            BenchMode::Load => "load",
        }
    }
}
crate::from_str_by_name!(BenchMode);

/// A timing job on 1×28×28 random images.
#[derive(Clone, Debug)]
pub struct BenchConfig {
    /// What is timed.
    pub mode: BenchMode,
    /// Architecture.
    pub model: ModelKind,
    /// Batch size.
    pub batch: usize,
    /// Uniform W/A bits (32 = float).
    pub bits: u32,
    /// Timed iterations (after 2 warm-up ones).
    pub steps: usize,
    /// Threads.
    pub threads: Option<usize>,
    /// Device: cpu, cuda, cuda:N or auto.
    pub device: String,
}

/// What a timing measured.
#[derive(Clone, Debug)]
pub struct Timing {
    /// Mean seconds per iteration.
    pub seconds_per_step: f64,
    /// Images per second.
    pub images_per_second: f64,
    /// Where it ran, in words.
    pub device: String,
    /// libtorch threads.
    pub threads: i32,
}

/// Times `cfg.steps` iterations after two warm-up ones.
pub fn bench(cfg: &BenchConfig) -> Result<Timing> {
    if cfg.mode == BenchMode::Load {
        return Err(Error::InvalidConfig(
            "the loader is timed by bench_loader, on a dataset".into(),
        ));
    }
    if cfg.batch < 2 || cfg.steps == 0 {
        return Err(Error::InvalidConfig(
            "bench needs a batch of at least 2 and at least 1 step".into(),
        ));
    }
    if let Some(t) = cfg.threads {
        set_threads(t)?;
    }
    let device = crate::device::parse_device(&cfg.device)?;
    let devices = Devices::on(device);
    devices.seed(0);
    let spec = ModelSpec {
        kind: cfg.model,
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
        graph: None,
    };
    let model = build(&spec, device)?;
    let bits = LayerBits {
        w: cfg.bits,
        a: cfg.bits,
    };
    bits.validate()
        .map_err(|e| Error::InvalidConfig(format!("{e:#}")))?;
    let policy = Policy::uniform(&model.layer_names(), bits);
    let ctx = QuantCtx::new(QuantScheme::default(), &policy.bits);
    let labels: Vec<i64> = (0..cfg.batch as i64).map(|i| i % 10).collect();
    let y = Tensor::from_slice(&labels).to_device(device);
    let x = Tensor::randn([cfg.batch as i64, 1, 28, 28], (Kind::Float, device));
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mut time = 0.0;
    match cfg.mode {
        BenchMode::Step => {
            let ctx = ctx.training();
            let mut optim = sgd(&Hyper {
                batch_size: cfg.batch,
                momentum: 0.9,
                weight_decay: 1e-4,
            });
            let net = &model.net;
            for i in 0..cfg.steps + 2 {
                sync();
                let t = Instant::now();
                let loss = cross_entropy(&net.forward(&x, &ctx), &y);
                let grads = FlatSgd::gradients(net, &loss);
                optim.step(net, grads, 0.01);
                let _ = loss.double_value(&[]);
                sync();
                if i >= 2 {
                    time += t.elapsed().as_secs_f64();
                }
            }
        }
        BenchMode::Load => unreachable!("refused above"),
        BenchMode::Infer => tch::no_grad(|| {
            for i in 0..cfg.steps + 2 {
                let t = Instant::now();
                let _ = crate::host::to_f32(&model.net.forward(&x, &ctx));
                if i >= 2 {
                    time += t.elapsed().as_secs_f64();
                }
            }
        }),
    }
    let per = time / cfg.steps as f64;
    Ok(Timing {
        seconds_per_step: per,
        images_per_second: cfg.batch as f64 / per.max(1e-12),
        device: crate::device::describe(device),
        threads: tch::get_num_threads(),
    })
}

/// A timing of the data loader: one training pass over a dataset's training split, decoded,
/// augmented and normalised into batches as QAT gets them, with no model.
#[derive(Clone, Debug)]
pub struct LoaderBenchConfig {
    /// The data, its split, augmentation and loader.
    pub data: super::data::DataConfig,
    /// Images per batch.
    pub batch: usize,
    /// Batches timed (`None`: the whole training split).
    pub batches: Option<usize>,
    /// Threads (decoding and libtorch).
    pub threads: Option<usize>,
}

/// What a loader timing measured.
#[derive(Clone, Debug)]
pub struct LoaderTiming {
    /// Seconds to list (and, in memory, decode) the dataset and carve its splits.
    pub load_seconds: f64,
    /// Seconds of the normalisation statistics over the training split.
    pub stats_seconds: f64,
    /// Images batched in the timed pass.
    pub images: usize,
    /// Seconds of the timed pass.
    pub seconds: f64,
    /// Images per second in the pass.
    pub images_per_second: f64,
    /// Whether the training split was streamed from disk.
    pub streamed: bool,
    /// The process's peak resident memory so far, in bytes (Linux; `None` elsewhere).
    pub peak_rss: Option<u64>,
}

/// Times one training pass of the data loader (see [`LoaderBenchConfig`]).
pub fn bench_loader(
    cfg: &LoaderBenchConfig,
    events: &dyn crate::events::Events,
) -> Result<LoaderTiming> {
    use crate::data::{Batcher, Normalization};
    use rand::SeedableRng;
    use rand::seq::SliceRandom;
    if cfg.batch < 1 {
        return Err(Error::InvalidConfig("--batch must be at least 1".into()));
    }
    if let Some(t) = cfg.threads {
        set_threads(t)?;
    }
    let start = Instant::now();
    let source = cfg.data.source(None)?;
    let p = super::data::prepare(source, cfg.data.split(), events)?;
    let load_seconds = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let train = &p.splits.train;
    let norm = Normalization::from_subset(train)
        .map_err(|e| Error::bad_input(p.source.dir.clone(), format!("{e:#}")))?;
    let stats_seconds = start.elapsed().as_secs_f64();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let mut order: Vec<usize> = (0..train.len()).collect();
    order.shuffle(&mut rng);
    if let Some(b) = cfg.batches {
        order.truncate(b * cfg.batch);
    }
    let augment = cfg.data.augment(&p.source);
    let start = Instant::now();
    let batcher = Batcher::new(
        train,
        &order,
        &norm,
        augment.map(|a| (a, &mut rng)),
        Device::Cpu,
    );
    let mut checksum = 0.0;
    for s in (0..order.len()).step_by(cfg.batch) {
        let b = batcher
            .batch(s, cfg.batch.min(order.len() - s))
            .map_err(|e| Error::bad_input(p.source.dir.clone(), format!("{e:#}")))?;
        checksum += b.images.mean(Kind::Double).double_value(&[]);
    }
    let seconds = start.elapsed().as_secs_f64();
    if !checksum.is_finite() {
        return Err(Error::Internal("non-finite batch values".into()));
    }
    Ok(LoaderTiming {
        load_seconds,
        stats_seconds,
        images: order.len(),
        seconds,
        images_per_second: order.len() as f64 / seconds.max(1e-12),
        streamed: train.data.is_streamed(),
        peak_rss: peak_rss(),
    })
}

/// The process's peak resident set size (`VmHWM` in `/proc/self/status`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
