//! Command-line arguments shared by several subcommands.

use anyhow::{Context, Result, bail};
use ccq::data::{Augment, DataFormat, DataSource, SplitSpec};
use ccq::names::Named;
use ccq::train::{Devices, Hyper};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use std::path::PathBuf;

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
    /// Declared image size of image-folder data, `HxW` or `N`.
    #[arg(long, default_value = "32x32")]
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
    #[arg(long, default_value = "auto")]
    pub augment: String,
}

impl DataArgs {
    /// The data source: the flags if given, else `fallback` (a checkpoint's), else the default.
    pub fn source(&self, fallback: Option<&DataSource>) -> Result<DataSource> {
        if self.data.is_none() && self.format.is_none() {
            return Ok(fallback.cloned().unwrap_or_default());
        }
        let dir = self
            .data
            .clone()
            .unwrap_or_else(|| DataSource::default().dir);
        let format = self.format.unwrap_or(DataFormat::Idx);
        let size = parse_size(&self.image_size)?;
        let channels = match format {
            DataFormat::Idx => 1,
            DataFormat::Cifar => 3,
            DataFormat::Folder => self.channels,
        };
        if format == DataFormat::Folder && !(channels == 1 || channels == 3) {
            bail!("--channels {channels}: image folders hold 1 (grayscale) or 3 (RGB) channels");
        }
        Ok(DataSource {
            dir,
            format,
            channels,
            size,
        })
    }

    /// The split sizes.
    pub fn split(&self) -> SplitSpec {
        SplitSpec {
            val: self.val_size,
            bandit: self.bandit_size,
            seed: self.split_seed,
        }
    }

    /// The augmentation to use for `source`.
    pub fn augment(&self, source: &DataSource) -> Result<Option<Augment>> {
        let on = match self.augment.as_str() {
            "auto" => source.default_augment(),
            "on" => true,
            "off" => false,
            other => bail!("--augment {other}: use auto, on or off"),
        };
        Ok(on.then_some(Augment { pad: 4, flip: true }))
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

/// The clap parser of a library enum: lists its names in `--help`, parses through [`Named`].
pub fn named<T: Named + Send + Sync>() -> impl TypedValueParser<Value = T> {
    PossibleValuesParser::new(T::ALL.iter().map(|v| v.name()))
        .map(|s| T::from_name(&s).expect("clap admits only the listed names"))
}

/// Sets the worker threads of libtorch (intra-op) and of rayon.
pub fn set_threads(t: usize) -> Result<()> {
    tch::set_num_threads(t as i32);
    rayon::ThreadPoolBuilder::new()
        .num_threads(t)
        .build_global()
        .context("cannot set up the thread pool")
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
    /// Applies threads and quiet mode.
    pub fn apply(&self) -> Result<()> {
        ccq::progress::set_quiet(self.quiet);
        if let Some(t) = self.threads {
            if t == 0 {
                bail!("--threads must be at least 1");
            }
            set_threads(t)?;
        }
        if self.batch_size < 2 {
            bail!("--batch-size must be at least 2 (BatchNorm needs batch statistics)");
        }
        Ok(())
    }

    /// Seeds libtorch and returns the device to run on (after [`CommonArgs::apply`]).
    pub fn devices(&self) -> Result<Devices> {
        let devices = Devices::on(ccq::device::parse_device(&self.device)?);
        devices.seed(self.seed);
        Ok(devices)
    }

    /// Optimiser settings with `default_wd` unless --weight-decay is given.
    pub fn hyper(&self, default_wd: f64) -> Hyper {
        Hyper {
            batch_size: self.batch_size,
            momentum: self.momentum,
            weight_decay: self.weight_decay.unwrap_or(default_wd),
        }
    }
}
