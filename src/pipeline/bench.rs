//! Timing on random data (`ccq bench`): one QAT training step, or fake-quantized inference.

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
}

impl Named for BenchMode {
    const ALL: &'static [Self] = &[BenchMode::Step, BenchMode::Infer];
    const WHAT: &'static str = "bench mode";
    fn name(&self) -> &'static str {
        match self {
            BenchMode::Step => "step",
            BenchMode::Infer => "infer",
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
