//! Command-line arguments shared by several subcommands, and their mapping onto the library's
//! configurations.

use anyhow::{Context, Result, bail};
use ccq::data::{DataFormat, Loader};
use ccq::names::Named;
use ccq::pipeline::{AugmentChoice, DataConfig, Session};
use ccq::quant::quantizer::{ActQuantizer, QuantScheme, WeightQuantizer};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::path::PathBuf;

/// The clap parser of a library enum: lists its names in `--help`, parses through [`Named`].
pub fn named<T: Named + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| v.name()))
        .map(|s| T::from_name(&s).expect("clap admits only the listed names"))
}

/// Where the data is and how to split it.
#[derive(Args, Debug, Clone)]
pub struct DataArgs {
    /// Dataset directory (default: Fashion-MNIST at /usr/share/datasets/fashion-mnist, or the
    /// checkpoint's dataset).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Dataset format.
    #[arg(long, value_parser = named::<DataFormat>())]
    pub format: Option<DataFormat>,
    /// Channels of image-folder data (1 = grayscale, 3 = RGB).
    #[arg(long, default_value_t = 3)]
    pub channels: usize,
    /// Declared image size of image-folder data, `HxW` or `N`: the model's input (with
    /// --resize, the crop; `--crop` is the same flag).
    #[arg(long, visible_alias = "crop", default_value = "32x32")]
    pub image_size: String,
    /// Validation images carved from the training files.
    #[arg(long, default_value_t = 5000)]
    pub val_size: usize,
    /// Bandit images carved from the training files (scored by CCQ's competition only).
    #[arg(long, default_value_t = 5000)]
    pub bandit_size: usize,
    /// Seed of the split permutation.
    #[arg(long, default_value_t = 0)]
    pub split_seed: u64,
    /// Random crop + horizontal flip: auto (on for CIFAR/RGB folders, off for idx), on, off.
    #[arg(long, value_parser = named::<AugmentChoice>(), default_value = "auto")]
    pub augment: AugmentChoice,
    /// Image folders of any size: scale each image's shorter side to N (bilinear), then crop the
    /// centre --image-size (the evaluation transform of ImageNet models, e.g. --resize 256
    /// --crop 224); training batches get a random resized crop and flip instead (--augment).
    #[arg(long)]
    pub resize: Option<usize>,
    /// How image folders are read: memory (decode every image once, up front; with --resize,
    /// training then gets a padded crop of the centre crop), stream (decode each batch from disk
    /// when needed, in parallel, prefetching the next: bounded memory), auto (stream with
    /// --resize, or when a split's decoded images would exceed 1 GiB).
    #[arg(long, value_parser = named::<Loader>(), default_value = "auto")]
    pub loader: Loader,
    /// Mean an imported ONNX model subtracts from pixels scaled to [0, 1], one per channel or
    /// one for all, as torchvision's `Normalize` (default: the model's `mean` metadata, else 0).
    #[arg(long, value_delimiter = ',', num_args = 1.., requires = "std")]
    pub mean: Option<Vec<f32>>,
    /// Standard deviation an imported ONNX model divides by (default: the model's `std`
    /// metadata, else 1).
    #[arg(long, value_delimiter = ',', num_args = 1.., requires = "mean")]
    pub std: Option<Vec<f32>>,
}

impl DataArgs {
    /// The library's data configuration.
    pub fn config(&self) -> Result<DataConfig> {
        Ok(DataConfig {
            dir: self.data.clone(),
            format: self.format,
            channels: self.channels,
            image_size: parse_size(&self.image_size)?,
            val_size: self.val_size,
            bandit_size: self.bandit_size,
            split_seed: self.split_seed,
            augment: self.augment,
            resize: self.resize,
            loader: self.loader,
            normalization: match (&self.mean, &self.std) {
                (Some(mean), Some(std)) => Some(ccq::data::Normalization {
                    mean: mean.clone(),
                    std: std.clone(),
                }),
                _ => None,
            },
        })
    }
}

fn parse_size(s: &str) -> Result<[usize; 2]> {
    let parse = |v: &str| {
        v.trim()
            .parse::<usize>()
            .with_context(|| format!("--image-size {s}: expected HxW or N"))
    };
    let [h, w] = match s.split_once(['x', 'X']) {
        Some((h, w)) => [parse(h)?, parse(w)?],
        None => {
            let n = parse(s)?;
            [n, n]
        }
    };
    if h == 0 || w == 0 {
        bail!("--image-size {s}: sides must be positive");
    }
    Ok([h, w])
}

/// Flags every job takes.
#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// Seed for weight initialisation, shuffling and sampling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images per batch.
    #[arg(long, default_value_t = 128)]
    pub batch_size: usize,
    /// SGD momentum.
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f64,
    /// Weight decay.
    #[arg(long)]
    pub weight_decay: Option<f64>,
    /// No progress bars (log-friendly output).
    #[arg(long, short)]
    pub quiet: bool,
    /// Device: cpu, cuda, cuda:N, or auto (CUDA when libtorch sees a GPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl CommonArgs {
    /// The library's shared settings.
    pub fn session(&self) -> Session {
        Session {
            seed: self.seed,
            threads: self.threads,
            batch_size: self.batch_size,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            device: self.device.clone(),
        }
    }
}

/// Knowledge distillation from the full-precision model during quantized training.
#[derive(Args, Debug, Clone)]
pub struct DistillArgs {
    /// Distil from the full-precision model while the quantized one fine-tunes: the weight, in
    /// (0, 1], of the divergence from its softened output in the loss (the labels'
    /// cross-entropy gets the rest). Off when left out.
    #[arg(long, value_name = "WEIGHT")]
    pub distill: Option<f64>,
    /// Temperature of the distillation's softmax.
    #[arg(long, default_value_t = 1.0, requires = "distill")]
    pub distill_temp: f64,
}

impl DistillArgs {
    /// The library's distillation setting.
    pub fn distill(&self) -> Option<ccq::train::distill::Distill> {
        self.distill.map(|weight| ccq::train::distill::Distill {
            weight,
            temperature: self.distill_temp,
        })
    }
}

/// Quantizer choice.
#[derive(Args, Debug, Clone)]
pub struct QuantArgs {
    /// Weight quantizer (default: a quantized checkpoint's own; dorefa for ccq's own models;
    /// lsq-channel for an imported ONNX model or its checkpoints, whose convs may carry a folded
    /// BatchNorm that DoReFa's rescaling would undo).
    #[arg(long, value_parser = named::<WeightQuantizer>())]
    pub weight_quant: Option<WeightQuantizer>,
    /// Activation quantizer.
    #[arg(long, value_parser = named::<ActQuantizer>(), default_value = "pact")]
    pub act_quant: ActQuantizer,
}

impl QuantArgs {
    /// The scheme for a model read from `source` (an `.onnx` file or a ccq checkpoint).
    pub fn scheme(&self, source: Option<&std::path::Path>) -> QuantScheme {
        QuantScheme {
            weight: self
                .weight_quant
                .unwrap_or_else(|| ccq::pipeline::import::default_weight_quantizer(source)),
            act: self.act_quant,
        }
    }
}
