//! Where the data comes from: format, directory, and the default dataset.

use super::dataset::{Dataset, TrainTest};
use super::{cifar, folder, idx};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Default dataset directory (Debian package `dataset-fashion-mnist`).
pub const DEFAULT_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The error for a missing default dataset, with the command that installs it.
pub fn missing_default_error<T>() -> Result<T> {
    bail!(
        "the default dataset (Fashion-MNIST) is not installed: {DEFAULT_DATA_DIR} does not exist.\n  install it with: sudo apt-get install dataset-fashion-mnist\n  or pass --data DIR --format idx|cifar|folder"
    )
}

/// On-disk dataset formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFormat {
    /// idx files (MNIST / Fashion-MNIST).
    Idx,
    /// CIFAR-10 binary batches.
    Cifar,
    /// Image folders `ROOT/train|test/<class>/*.png|jpg`.
    Folder,
}

impl crate::names::Named for DataFormat {
    const ALL: &'static [Self] = &[DataFormat::Idx, DataFormat::Cifar, DataFormat::Folder];
    const WHAT: &'static str = "data format";
    fn name(&self) -> &'static str {
        match self {
            DataFormat::Idx => "idx",
            DataFormat::Cifar => "cifar",
            DataFormat::Folder => "folder",
        }
    }
}
crate::from_str_by_name!(DataFormat);

/// How image folders are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Loader {
    /// Streamed when images of any size are scaled and cropped (`--resize`: training then
    /// gets the random resized crop, which needs the whole image), or when a split's decoded
    /// images would take more than [`Loader::AUTO_LIMIT`] bytes; in memory otherwise.
    #[default]
    Auto,
    /// Every image decoded once, into memory (the fastest for small sets).
    Memory,
    /// Images decoded from disk when a batch needs them, in parallel, the next batch
    /// prefetched: memory stays bounded whatever the folder's size.
    Stream,
}

impl Loader {
    /// Decoded size above which `auto` streams: 1 GiB.
    pub const AUTO_LIMIT: u64 = 1 << 30;

    /// Whether a split whose decoded images take `bytes` is streamed; `resized`: its images
    /// are of any size (`--resize`).
    pub fn streams(self, bytes: u64, resized: bool) -> bool {
        match self {
            Loader::Auto => resized || bytes > Self::AUTO_LIMIT,
            Loader::Memory => false,
            Loader::Stream => true,
        }
    }

    fn is_auto(&self) -> bool {
        *self == Loader::Auto
    }
}

impl crate::names::Named for Loader {
    const ALL: &'static [Self] = &[Loader::Auto, Loader::Memory, Loader::Stream];
    const WHAT: &'static str = "loader";
    fn name(&self) -> &'static str {
        match self {
            Loader::Auto => "auto",
            Loader::Memory => "memory",
            Loader::Stream => "stream",
        }
    }
}
crate::from_str_by_name!(Loader);

/// A dataset on disk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataSource {
    /// Directory.
    pub dir: PathBuf,
    /// Format.
    pub format: DataFormat,
    /// Channels for image folders.
    pub channels: usize,
    /// `[height, width]` for image folders.
    pub size: [usize; 2],
    /// Image folders of any size: the shorter side scaled to this, then the centre `size` crop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<usize>,
    /// How image folders are read.
    #[serde(default, skip_serializing_if = "Loader::is_auto")]
    pub loader: Loader,
}

impl Default for DataSource {
    fn default() -> Self {
        DataSource {
            dir: PathBuf::from(DEFAULT_DATA_DIR),
            format: DataFormat::Idx,
            channels: 1,
            size: [28, 28],
            resize: None,
            loader: Loader::Auto,
        }
    }
}

impl DataSource {
    /// Whether this is the default Fashion-MNIST location.
    pub fn is_default(&self) -> bool {
        self.dir == Path::new(DEFAULT_DATA_DIR)
    }

    /// Loads the training and test sets.
    pub fn load(&self) -> Result<TrainTest> {
        if !self.dir.is_dir() {
            if self.is_default() {
                return missing_default_error();
            }
            bail!("data directory {} does not exist", self.dir.display());
        }
        let (train, test) = match self.format {
            DataFormat::Idx => (
                idx::load_split(&self.dir, "train")?,
                idx::load_split(&self.dir, "t10k")?,
            ),
            DataFormat::Cifar => cifar::load_dir(&self.dir)?,
            DataFormat::Folder => {
                let (c, size, resize, l) = (self.channels, self.size, self.resize, self.loader);
                let train = folder::load_split(&self.dir, "train", c, size, resize, None, l)?;
                let classes = Some(&train.classes[..]);
                let test = folder::load_split(&self.dir, "test", c, size, resize, classes, l)?;
                (train, test)
            }
        };
        if (train.channels, train.height, train.width) != (test.channels, test.height, test.width) {
            bail!(
                "{}: train images are {}×{}×{} but test images are {}×{}×{}",
                self.dir.display(),
                train.channels,
                train.height,
                train.width,
                test.channels,
                test.height,
                test.width
            );
        }
        let mut test = test;
        if test.classes.len() < train.classes.len() {
            test.classes = train.classes.clone();
        }
        let mut train = train;
        if train.classes.len() < test.classes.len() {
            train.classes = test.classes.clone();
        }
        Ok(TrainTest {
            train: Arc::new(train),
            test: Arc::new(test),
        })
    }

    /// Loads the test set only (what inference needs): image folders take their class order
    /// from the training folder's class names, as [`DataSource::load`] does, without decoding
    /// any training image.
    pub fn load_test(&self) -> Result<Dataset> {
        if !self.dir.is_dir() {
            if self.is_default() {
                return missing_default_error();
            }
            bail!("data directory {} does not exist", self.dir.display());
        }
        match self.format {
            DataFormat::Idx => idx::load_split(&self.dir, "t10k"),
            DataFormat::Cifar => cifar::load_test(&self.dir),
            DataFormat::Folder => {
                let [h, w] = self.size;
                let train = self.dir.join("train");
                let classes = if train.is_dir() {
                    let mut c: Vec<String> = std::fs::read_dir(&train)
                        .with_context(|| format!("cannot list {}", train.display()))?
                        .filter_map(|e| e.ok())
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    c.sort();
                    Some(c)
                } else {
                    None
                };
                folder::load_split(
                    &self.dir,
                    "test",
                    self.channels,
                    [h, w],
                    self.resize,
                    classes.as_deref(),
                    self.loader,
                )
            }
        }
    }

    /// Random crop + flip makes sense for natural images, not for digits/clothes in idx files.
    pub fn default_augment(&self) -> bool {
        match self.format {
            DataFormat::Idx => false,
            DataFormat::Cifar => true,
            DataFormat::Folder => self.channels == 3,
        }
    }
}
