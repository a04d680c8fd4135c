//! In-memory labelled image sets and index views into them.

use std::sync::Arc;

/// Images as `u8` in `N×C×H×W` order, with one label per image.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Pixels, `len = n·c·h·w`.
    pub pixels: Vec<u8>,
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

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
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
