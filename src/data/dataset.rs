//! Labelled image sets, held in memory or read from disk on the fly, and index views into them.

use super::stream::ImageFiles;
use anyhow::Result;
use std::borrow::Cow;
use std::sync::Arc;

/// Where a dataset's pixels are.
#[derive(Clone, Debug)]
pub enum Storage {
    /// Decoded images as `u8` in `N×C×H×W` order.
    Memory(Vec<u8>),
    /// Image files decoded when a batch needs them ([`ImageFiles`]): memory stays bounded
    /// whatever the folder's size.
    Files(ImageFiles),
}

/// Images (`C×H×W`, `u8`) with one label per image.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// The pixels, in memory or on disk.
    pub storage: Storage,
    /// Class index per image.
    pub labels: Vec<u16>,
    /// Channels.
    pub channels: usize,
    /// Height.
    pub height: usize,
    /// Width.
    pub width: usize,
    /// Class names (index = label).
    pub classes: Vec<String>,
}

impl Dataset {
    /// An in-memory dataset.
    pub fn in_memory(
        pixels: Vec<u8>,
        labels: Vec<u16>,
        [channels, height, width]: [usize; 3],
        classes: Vec<String>,
    ) -> Self {
        Dataset {
            storage: Storage::Memory(pixels),
            labels,
            channels,
            height,
            width,
            classes,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// All pixels, when the dataset is held in memory.
    pub fn pixels(&self) -> Option<&[u8]> {
        match &self.storage {
            Storage::Memory(p) => Some(p),
            Storage::Files(_) => None,
        }
    }

    /// Whether images are read from disk when needed.
    pub fn is_streamed(&self) -> bool {
        matches!(self.storage, Storage::Files(_))
    }

    /// Pixels of image `i` (decoded from its file when streamed, with the evaluation
    /// transform).
    pub fn image(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        let n = self.image_len();
        Ok(match &self.storage {
            Storage::Memory(p) => Cow::Borrowed(&p[i * n..(i + 1) * n]),
            Storage::Files(f) => {
                Cow::Owned(f.decode(i, self.channels, [self.height, self.width])?)
            }
        })
    }

    /// Pixels of images `ids`, concatenated (`ids.len() × C×H×W`); streamed images are decoded
    /// in parallel with the evaluation transform.
    pub fn images(&self, ids: &[usize]) -> Result<Vec<u8>> {
        let n = self.image_len();
        match &self.storage {
            Storage::Memory(p) => {
                let mut out = Vec::with_capacity(ids.len() * n);
                for &i in ids {
                    out.extend_from_slice(&p[i * n..(i + 1) * n]);
                }
                Ok(out)
            }
            Storage::Files(f) => f.decode_many(ids, None, self.channels, [self.height, self.width]),
        }
    }
}

/// A subset of a dataset given by indices (a split).
#[derive(Clone, Debug)]
pub struct Subset {
    /// The underlying images.
    pub data: Arc<Dataset>,
    /// Indices into `data`.
    pub idx: Vec<usize>,
}

impl Subset {
    /// All images of `data`.
    pub fn all(data: Arc<Dataset>) -> Self {
        let idx = (0..data.len()).collect();
        Subset { data, idx }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.idx.len()
    }

    /// Whether the subset is empty.
    pub fn is_empty(&self) -> bool {
        self.idx.is_empty()
    }

    /// The first `n` images of this subset.
    pub fn take(&self, n: usize) -> Subset {
        Subset {
            data: self.data.clone(),
            idx: self.idx[..n.min(self.idx.len())].to_vec(),
        }
    }
}

/// A training set and a test set of the same shape.
#[derive(Clone, Debug)]
pub struct TrainTest {
    /// Training images (train/validation/bandit splits are carved from these).
    pub train: Arc<Dataset>,
    /// Test images: reported only.
    pub test: Arc<Dataset>,
}
