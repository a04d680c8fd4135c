//! Which data a job uses and how it is split; loading it.

use crate::data::{Augment, DataFormat, DataSource, SplitSpec, Splits};
use crate::error::{Error, Result};
use crate::events::{Event, Events};
use crate::names::Named;
use crate::train::checkpoint::Checkpoint;
use std::path::PathBuf;

/// Random crop and horizontal flip during training.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AugmentChoice {
    /// On for CIFAR and RGB folders, off for idx.
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

impl Named for AugmentChoice {
    const ALL: &'static [Self] = &[AugmentChoice::Auto, AugmentChoice::On, AugmentChoice::Off];
    const WHAT: &'static str = "augmentation";
    fn name(&self) -> &'static str {
        match self {
            AugmentChoice::Auto => "auto",
            AugmentChoice::On => "on",
            AugmentChoice::Off => "off",
        }
    }
}
crate::from_str_by_name!(AugmentChoice);

/// Where the data is and how to split it.
#[derive(Clone, Debug, PartialEq)]
pub struct DataConfig {
    /// Dataset directory (`None`: a checkpoint's dataset, or Fashion-MNIST at
    /// /usr/share/datasets/fashion-mnist).
    pub dir: Option<PathBuf>,
    /// Format (`None` with a directory: idx).
    pub format: Option<DataFormat>,
    /// Channels of image-folder data (1 or 3).
    pub channels: usize,
    /// Declared image size of image-folder data, height and width.
    pub image_size: [usize; 2],
    /// Validation images carved from the training files.
    pub val_size: usize,
    /// Bandit images carved from the training files.
    pub bandit_size: usize,
    /// Seed of the split permutation.
    pub split_seed: u64,
    /// Augmentation.
    pub augment: AugmentChoice,
    /// Image folders of any size: scale the shorter side to this, then crop the centre
    /// `image_size` (`--resize`).
    pub resize: Option<usize>,
    /// How image folders are read: in memory, or from disk on the fly (`--loader`).
    pub loader: crate::data::Loader,
    /// Input normalisation of an imported ONNX model (`--mean`/`--std`, in pixels / 255);
    /// a ccq checkpoint records its own.
    pub normalization: Option<crate::data::Normalization>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dir: None,
            format: None,
            channels: 3,
            image_size: [32, 32],
            val_size: 5000,
            bandit_size: 5000,
            split_seed: 0,
            augment: AugmentChoice::Auto,
            resize: None,
            loader: crate::data::Loader::Auto,
            normalization: None,
        }
    }
}

impl DataConfig {
    /// The data at `dir` in `format`, with the default split.
    pub fn at(dir: impl Into<PathBuf>, format: DataFormat) -> Self {
        DataConfig {
            dir: Some(dir.into()),
            format: Some(format),
            ..Default::default()
        }
    }

    /// Whether neither a directory nor a format is given (a job on a checkpoint then uses the
    /// checkpoint's data).
    pub fn is_unset(&self) -> bool {
        self.dir.is_none() && self.format.is_none()
    }

    /// The data source: this configuration if set, else `fallback`, else the default.
    pub fn source(&self, fallback: Option<&DataSource>) -> Result<DataSource> {
        if self.is_unset() {
            return Ok(fallback.cloned().unwrap_or_default());
        }
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| DataSource::default().dir);
        let format = self.format.unwrap_or(DataFormat::Idx);
        let [h, w] = self.image_size;
        if h == 0 || w == 0 {
            return Err(Error::InvalidConfig(format!(
                "image size {h}x{w}: sides must be positive"
            )));
        }
        let channels = match format {
            DataFormat::Idx => 1,
            DataFormat::Cifar => 3,
            DataFormat::Folder => self.channels,
        };
        if format == DataFormat::Folder && !(channels == 1 || channels == 3) {
            return Err(Error::InvalidConfig(format!(
                "--channels {channels}: image folders hold 1 (grayscale) or 3 (RGB) channels"
            )));
        }
        if format != DataFormat::Folder && self.loader == crate::data::Loader::Stream {
            return Err(Error::InvalidConfig(
                "--loader stream applies to image folders (--format folder)".into(),
            ));
        }
        if let Some(n) = self.resize {
            if format != DataFormat::Folder {
                return Err(Error::InvalidConfig(
                    "--resize applies to image folders (--format folder)".into(),
                ));
            }
            if n < h.max(w) {
                return Err(Error::InvalidConfig(format!(
                    "--resize {n} is smaller than the {h}x{w} crop (--image-size)"
                )));
            }
        }
        Ok(DataSource {
            dir,
            format,
            channels,
            size: self.image_size,
            resize: self.resize,
            loader: self.loader,
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
    pub fn augment(&self, source: &DataSource) -> Option<Augment> {
        let on = match self.augment {
            AugmentChoice::Auto => source.default_augment(),
            AugmentChoice::On => true,
            AugmentChoice::Off => false,
        };
        on.then_some(Augment { pad: 4, flip: true })
    }
}

/// Loaded data with its splits.
pub struct Prepared {
    /// The four splits.
    pub splits: Splits,
    /// Where it came from.
    pub source: DataSource,
}

/// Loads `source` and carves `split`; reports [`Event::DataLoaded`].
pub fn prepare(source: DataSource, split: SplitSpec, events: &dyn Events) -> Result<Prepared> {
    let data = source.load().map_err(|e| bad_data(&source, e))?;
    let splits = split
        .carve(&data)
        .map_err(|e| Error::InvalidConfig(format!("{e:#}")))?;
    events.event(&Event::DataLoaded {
        dir: &source.dir,
        format: source.format.name(),
        classes: data.train.classes.len(),
        shape: [data.train.channels, data.train.height, data.train.width],
        splits: [
            splits.train.len(),
            splits.val.len(),
            splits.bandit.len(),
            splits.test.len(),
        ],
        asked: [split.val, split.bandit],
    });
    Ok(Prepared { splits, source })
}

/// A data error, typed as bad input naming the dataset directory.
fn bad_data(source: &DataSource, e: anyhow::Error) -> Error {
    Error::bad_input(source.dir.clone(), format!("{e:#}"))
}

/// Data for a job on an existing checkpoint: its dataset unless `data` names one; checks that
/// the split is the recorded one and that the shapes fit the model.
pub fn prepare_for(ck: &Checkpoint, data: &DataConfig, events: &dyn Events) -> Result<Prepared> {
    let source = data.source(Some(&ck.meta.data))?;
    let recorded = ck.meta.split;
    if !data.is_unset() && data.split() != recorded {
        let show = |s: SplitSpec| {
            format!(
                "--val-size {} --bandit-size {} --split-seed {}",
                s.val, s.bandit, s.seed
            )
        };
        return Err(Error::incompatible(
            ck.dir.clone(),
            format!(
                "{}: the model was trained with the split `{}`, but this job asks for `{}`; its validation and bandit images could include images the model trained on. Give the recorded split flags (or leave out --data/--format to use the checkpoint's data)",
                ck.dir.display(),
                show(recorded),
                show(data.split())
            ),
        ));
    }
    let p = prepare(source, recorded, events)?;
    let d = &p.splits.test.data;
    let s = &ck.meta.spec;
    if (d.channels, d.height, d.width) != (s.channels, s.height, s.width) {
        return Err(Error::incompatible(
            ck.dir.clone(),
            format!(
                "{}: the model takes {}×{}×{} inputs but the data has {}×{}×{} images",
                ck.dir.display(),
                s.channels,
                s.height,
                s.width,
                d.channels,
                d.height,
                d.width
            ),
        ));
    }
    if d.classes.len() > s.classes {
        return Err(Error::incompatible(
            ck.dir.clone(),
            format!(
                "{}: the model has {} classes but the data has {}",
                ck.dir.display(),
                s.classes,
                d.classes.len()
            ),
        ));
    }
    Ok(p)
}

/// The calibration images: the first batches of 256 training images
/// ([`crate::data::calibration_batch_count`] of them), transformed by `augment` (the training's;
/// see [`crate::data::calibration_batches`]).
pub fn calibration_batches(
    p: &Prepared,
    norm: &crate::data::Normalization,
    device: tch::Device,
    augment: Option<Augment>,
) -> Result<Vec<tch::Tensor>> {
    crate::data::calibration_images(&p.splits.train, norm, device, augment)
        .map_err(|e| bad_data(&p.source, e))
}
