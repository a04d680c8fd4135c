//! `ccq bench`: timing of one QAT training step or of inference, on random data.

use anyhow::Result;
use burn::module::Module;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::{Distribution, TensorData};
use ccq::model::{ModelKind, ModelSpec, QuantCtx, build};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::QuantScheme;
use ccq::train::trainer::cross_entropy;
use ccq::train::{Devices, Hyper, sgd};
use clap::Args;
use std::time::Instant;

/// `ccq bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `step` (QAT forward + backward + SGD) or `infer` (fake-quant inference).
    #[arg(default_value = "step")]
    pub mode: String,
    /// Architecture.
    #[arg(long, value_enum, default_value = "resnet20")]
    pub model: ModelKind,
    /// Batch size.
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    /// Uniform W/A bits (32 = float).
    #[arg(long, default_value_t = 4)]
    pub bits: u32,
    /// Timed iterations (after 2 warm-up ones).
    #[arg(long, default_value_t = 10)]
    pub steps: usize,
    /// Threads.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `ccq bench`.
pub fn bench(a: BenchArgs) -> Result<()> {
    if let Some(t) = a.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()?;
    }
    let devices = Devices::flex();
    devices.seed(0);
    let spec = ModelSpec {
        kind: a.model,
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    let model = build(&spec, &devices.train)?;
    let bits = LayerBits {
        w: a.bits,
        a: a.bits,
    };
    bits.validate()?;
    let policy = Policy::uniform(&model.layer_names(), bits);
    let ctx = QuantCtx::new(QuantScheme::default(), &policy.bits);
    let labels: Vec<i64> = (0..a.batch as i64).map(|i| i % 10).collect();
    match a.mode.as_str() {
        "step" => {
            let x = Tensor::<4>::random(
                [a.batch, 1, 28, 28],
                Distribution::Normal(0.0, 1.0),
                &devices.train,
            );
            let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [a.batch]), &devices.train);
            let mut optim = sgd(&Hyper {
                batch_size: a.batch,
                momentum: 0.9,
                weight_decay: 1e-4,
            });
            let mut net = model.net;
            let mut time = 0.0;
            for i in 0..a.steps + 2 {
                let t = Instant::now();
                let loss = cross_entropy(net.forward(x.clone(), &ctx), y.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optim.step(0.01, net, grads);
                let _ = loss.into_scalar::<f32>();
                if i >= 2 {
                    time += t.elapsed().as_secs_f64();
                }
            }
            println!(
                "ccq (burn flex) {} QAT W{}A{} step, batch {}: {:.1} ms/step",
                a.model.name(),
                a.bits,
                a.bits,
                a.batch,
                1000.0 * time / a.steps as f64
            );
        }
        _ => {
            let x = Tensor::<4>::random(
                [a.batch, 1, 28, 28],
                Distribution::Normal(0.0, 1.0),
                &devices.eval,
            );
            let net = model.net.valid();
            let mut time = 0.0;
            for i in 0..a.steps + 2 {
                let t = Instant::now();
                let _ = ccq::host::to_f32(net.forward(x.clone(), &ctx));
                if i >= 2 {
                    time += t.elapsed().as_secs_f64();
                }
            }
            println!(
                "ccq (burn flex) {} inference W{}A{}, batch {}: {:.0} images/s",
                a.model.name(),
                a.bits,
                a.bits,
                a.batch,
                (a.steps * a.batch) as f64 / time
            );
        }
    }
    Ok(())
}
