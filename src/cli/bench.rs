//! `ccq bench`: timing of one QAT training step or of inference, on random data.

use super::args::named;
use anyhow::{Result, bail};
use ccq::model::{ModelKind, ModelSpec, QuantCtx, build};
use ccq::quant::policy::{LayerBits, Policy};
use ccq::quant::quantizer::QuantScheme;
use ccq::train::trainer::cross_entropy;
use ccq::train::{Devices, FlatSgd, Hyper, sgd};
use clap::Args;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

/// `ccq bench` arguments.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// `step` (QAT forward + backward + SGD) or `infer` (fake-quant inference).
    #[arg(default_value = "step")]
    pub mode: String,
    /// Architecture.
    #[arg(long, value_parser = named::<ModelKind>(), default_value = "resnet20")]
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
    /// Device: cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

/// Runs `ccq bench`.
pub fn bench(a: BenchArgs) -> Result<()> {
    if let Some(t) = a.threads {
        super::args::set_threads(t)?;
    }
    let device = ccq::device::parse_device(&a.device)?;
    let devices = Devices::on(device);
    devices.seed(0);
    let spec = ModelSpec {
        kind: a.model,
        channels: 1,
        height: 28,
        width: 28,
        classes: 10,
    };
    let model = build(&spec, device)?;
    let bits = LayerBits {
        w: a.bits,
        a: a.bits,
    };
    bits.validate()?;
    let policy = Policy::uniform(&model.layer_names(), bits);
    let ctx = QuantCtx::new(QuantScheme::default(), &policy.bits);
    let labels: Vec<i64> = (0..a.batch as i64).map(|i| i % 10).collect();
    let y = Tensor::from_slice(&labels).to_device(device);
    let x = Tensor::randn([a.batch as i64, 1, 28, 28], (Kind::Float, device));
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    let mode = if bits.w >= 32 {
        "FP".to_string()
    } else {
        format!("QAT W{}A{}", a.bits, a.bits)
    };
    let where_ = ccq::device::describe(device);
    match a.mode.as_str() {
        "step" => {
            let ctx = ctx.training();
            let mut optim = sgd(&Hyper {
                batch_size: a.batch,
                momentum: 0.9,
                weight_decay: 1e-4,
            });
            let net = &model.net;
            let mut time = 0.0;
            for i in 0..a.steps + 2 {
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
            println!(
                "ccq (tch, {where_}) {} {mode} step, batch {}: {:.1} ms/step ({} threads)",
                a.model.name(),
                a.batch,
                1000.0 * time / a.steps as f64,
                tch::get_num_threads()
            );
        }
        "infer" => {
            let mut time = 0.0;
            tch::no_grad(|| {
                for i in 0..a.steps + 2 {
                    let t = Instant::now();
                    let _ = ccq::host::to_f32(&model.net.forward(&x, &ctx));
                    if i >= 2 {
                        time += t.elapsed().as_secs_f64();
                    }
                }
            });
            println!(
                "ccq (tch, {where_}) {} inference {mode}, batch {}: {:.0} images/s",
                a.model.name(),
                a.batch,
                (a.steps * a.batch) as f64 / time
            );
        }
        other => bail!("ccq bench {other}: the modes are `step` and `infer`"),
    }
    Ok(())
}
