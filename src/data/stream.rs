//! Image files read from disk when a batch needs them: the storage of folders too large to
//! decode into memory, with parallel decoding and the evaluation and training transforms.

use super::folder::{decode_image, decode_random_resized, decode_resized};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// The files of an image-folder split, decoded on demand.
#[derive(Clone, Debug)]
pub struct ImageFiles {
    /// One file per image, in the dataset's order.
    pub paths: Vec<PathBuf>,
    /// Images of any size: the shorter side is scaled to this, then the centre is cropped
    /// (evaluation) or a random region is cropped and scaled (training).
    pub resize: Option<usize>,
}

impl ImageFiles {
    /// Reads every file's header (in parallel), so that a file that is not an image, or one of
    /// the wrong size where there is no `resize`, is an error before any training starts.
    pub fn check_headers(&self, [height, width]: [usize; 2]) -> Result<()> {
        use rayon::prelude::*;
        self.paths.par_iter().try_for_each(|p| -> Result<()> {
            let (w, h) = image::ImageReader::open(p)
                .and_then(|r| r.with_guessed_format())
                .with_context(|| format!("cannot read {}", p.display()))?
                .into_dimensions()
                .with_context(|| format!("{}: unreadable image", p.display()))?;
            if self.resize.is_none() && (w as usize != width || h as usize != height) {
                bail!(
                    "{}: image is {w}×{h} but the declared input size is {width}×{height}",
                    p.display()
                );
            }
            if w == 0 || h == 0 || w > 16384 || h > 16384 {
                bail!("{}: image is {w}×{h} (1 to 16384 a side)", p.display());
            }
            Ok(())
        })
    }

    /// Image `i` with the evaluation transform: as it is, or (with `resize`) scaled and
    /// centre-cropped.
    pub fn decode(
        &self,
        i: usize,
        channels: usize,
        [height, width]: [usize; 2],
    ) -> Result<Vec<u8>> {
        let f = &self.paths[i];
        let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
        match self.resize {
            Some(n) => decode_resized(&bytes, channels, height, width, n),
            None => decode_image(&bytes, channels, height, width),
        }
        .with_context(|| format!("{}", f.display()))
    }

    /// Images `ids`, concatenated, decoded in parallel. With `train_seeds` (one per image, and
    /// only where there is a `resize`), each gets the training transform
    /// ([`decode_random_resized`]) drawn from its seed; otherwise the evaluation transform.
    pub fn decode_many(
        &self,
        ids: &[usize],
        train_seeds: Option<&[u64]>,
        channels: usize,
        size: [usize; 2],
    ) -> Result<Vec<u8>> {
        use rayon::prelude::*;
        let one = |k: usize| -> Result<Vec<u8>> {
            let i = ids[k];
            match (train_seeds, self.resize) {
                (Some(seeds), Some(_)) => {
                    let f = &self.paths[i];
                    let bytes =
                        std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
                    decode_random_resized(&bytes, channels, size, seeds[k])
                        .with_context(|| format!("{}", f.display()))
                }
                _ => self.decode(i, channels, size),
            }
        };
        let parts: Vec<Vec<u8>> = (0..ids.len())
            .into_par_iter()
            .map(one)
            .collect::<Result<_>>()?;
        Ok(parts.concat())
    }
}
