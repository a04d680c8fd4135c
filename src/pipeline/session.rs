//! Settings every job shares: seed, threads, device and optimiser.

use crate::error::{Error, Result};
use crate::train::{Devices, Hyper};

/// Settings every job shares.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    /// Seed of weight initialisation, shuffling and sampling.
    pub seed: u64,
    /// Worker threads of libtorch and rayon (`None`: all cores; rayon's is set only once per
    /// process).
    pub threads: Option<usize>,
    /// Images per batch.
    pub batch_size: usize,
    /// SGD momentum.
    pub momentum: f64,
    /// Weight decay (`None`: the job's default).
    pub weight_decay: Option<f64>,
    /// Device: `cpu`, `cuda`, `cuda:N`, or `auto` (CUDA when libtorch sees a GPU).
    pub device: String,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            seed: 1,
            threads: None,
            batch_size: 128,
            momentum: 0.9,
            weight_decay: None,
            device: "auto".into(),
        }
    }
}

impl Session {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.threads == Some(0) {
            return Err(Error::InvalidConfig("threads must be at least 1".into()));
        }
        if self.batch_size < 2 {
            return Err(Error::InvalidConfig(
                "batch size must be at least 2 (BatchNorm needs batch statistics)".into(),
            ));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(Error::InvalidConfig(format!(
                "momentum {} must be within [0, 1)",
                self.momentum
            )));
        }
        if let Some(wd) = self.weight_decay
            && !(wd.is_finite() && wd >= 0.0)
        {
            return Err(Error::InvalidConfig(format!(
                "weight decay {wd} must be finite and non-negative"
            )));
        }
        Ok(())
    }

    /// Validates, sets the thread count (if given), seeds libtorch and returns the device.
    pub fn start(&self) -> Result<Devices> {
        self.validate()?;
        if let Some(t) = self.threads {
            set_threads(t)?;
        }
        let devices = Devices::on(crate::device::parse_device(&self.device)?);
        devices.seed(self.seed);
        Ok(devices)
    }

    /// Optimiser settings, with `default_wd` unless a weight decay is given.
    pub fn hyper(&self, default_wd: f64) -> Hyper {
        Hyper {
            batch_size: self.batch_size,
            momentum: self.momentum,
            weight_decay: self.weight_decay.unwrap_or(default_wd),
        }
    }
}

/// Sets the worker threads of libtorch (intra-op) and of rayon. Rayon's global pool can be set
/// up once per process: after the first call, only libtorch's count changes.
pub fn set_threads(t: usize) -> Result<()> {
    if t == 0 {
        return Err(Error::InvalidConfig("threads must be at least 1".into()));
    }
    tch::set_num_threads(t as i32);
    static RAYON: std::sync::Once = std::sync::Once::new();
    let mut result = Ok(());
    RAYON.call_once(|| {
        result = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global()
            .map_err(|e| Error::InvalidConfig(format!("cannot set up the thread pool: {e}")));
    });
    result
}
