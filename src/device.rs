//! Choosing the device a job runs on, and making CUDA available to a CPU-linked binary.
//!
//! ccq links only `libtorch_cpu` and `libc10`, so it starts from a slim CPU install of libtorch.
//! When a CUDA device is asked for, `libtorch_cuda.so` is loaded at run time (`dlopen` with
//! `RTLD_GLOBAL`, from the directory `libtorch_cpu.so` was loaded from), which registers
//! libtorch's CUDA backend.

use anyhow::{Result, bail};
use std::path::PathBuf;
use tch::Device;

/// The directory holding the `libtorch_cpu.so` this process runs with.
fn libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| PathBuf::from(p).parent().map(PathBuf::from))
}

/// Loads `libtorch_cuda.so` once; returns why it could not be loaded, if so.
fn load_cuda() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            // libtorch_cpu.so is mapped at start-up (the binary links it). Nothing may ask libtorch
            // about CUDA before this: it creates its CUDA hooks once, on first use.
            let dir = libtorch_dir().ok_or("cannot find the loaded libtorch_cpu.so")?;
            let path = dir.join("libtorch_cuda.so");
            if !path.is_file() {
                return Err(format!(
                    "{} does not exist: this libtorch is a CPU-only build",
                    path.display()
                ));
            }
            let c = std::ffi::CString::new(path.to_string_lossy().as_bytes())
                .map_err(|e| e.to_string())?;
            // SAFETY: `c` is a valid NUL-terminated path; dlopen has no other preconditions.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a valid C string (or null) describing the last error.
                let err = unsafe { libc::dlerror() };
                let msg = if err.is_null() {
                    "unknown error".to_string()
                } else {
                    // SAFETY: non-null pointer from dlerror, valid until the next dl* call.
                    unsafe { std::ffi::CStr::from_ptr(err) }
                        .to_string_lossy()
                        .into_owned()
                };
                return Err(format!("cannot load {}: {msg}", path.display()));
            }
            Ok(())
        })
        .clone()
}

/// Keeps freed memory in the process instead of returning it to the kernel after every step.
///
/// libtorch's CPU tensors come from glibc's malloc; with its default thresholds every large
/// activation is an `mmap`, and freed heap tops are trimmed, so each training step page-faults
/// its activations in again (about a fifth of a ResNet-20 step on 2 cores). Call once at start.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; these values are within glibc's limits.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
    }
}

/// Whether a CUDA GPU is usable (loads libtorch's CUDA backend if it is there).
pub fn cuda_available() -> bool {
    load_cuda().is_ok() && tch::Cuda::is_available()
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`. Call it before anything else asks libtorch about
/// CUDA (seeding included): libtorch settles whether CUDA exists on the first such question. (CUDA when libtorch sees a GPU, else the CPU).
pub fn parse_device(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    let index = match s.as_str() {
        "cpu" => return Ok(Device::Cpu),
        "auto" => {
            return Ok(if cuda_available() {
                Device::Cuda(0)
            } else {
                Device::Cpu
            });
        }
        "cuda" | "gpu" => 0,
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => i,
            _ => bail!("--device {spec}: expected cpu, cuda, cuda:N or auto"),
        },
    };
    if let Err(why) = load_cuda() {
        bail!(
            "--device {spec}: CUDA is not available ({why}); install the full torch wheel (scripts/setup-torch.sh --full) or use --device cpu"
        );
    }
    if !tch::Cuda::is_available() {
        bail!(
            "--device {spec}: libtorch's CUDA backend loaded but sees no GPU (driver missing, or CUDA_VISIBLE_DEVICES empty); use --device cpu"
        );
    }
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        bail!("--device {spec}: only {count} CUDA device(s) visible");
    }
    Ok(Device::Cuda(index))
}

/// A device in words (`cpu`, `cuda:0`).
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device(" CPU ").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        let auto = parse_device("auto").unwrap();
        assert_eq!(auto == Device::Cpu, !cuda_available());
        if !cuda_available() {
            let e = parse_device("cuda").unwrap_err().to_string();
            assert!(
                e.contains("--device cuda") && e.contains("--device cpu"),
                "{e}"
            );
        }
    }
}
