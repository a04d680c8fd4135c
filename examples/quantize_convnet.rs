//! Train a ConvNet, search a mixed-precision policy with CCQ and export the integer model,
//! all through the library. `cargo run --release --example quantize_convnet -- [OUT_DIR]`
//! (default OUT_DIR: ./quantize-convnet-example) uses a small synthetic dataset it writes.
use ccq::data::{DataFormat, synthetic};
use ccq::events::{Event, Events};
use ccq::model::ModelKind;
use ccq::pipeline::{self, DataConfig, ExportConfig, QuantizeConfig, Start, TrainConfig};
use ccq::search::target::Target;

/// Prints each search step; a real observer could also plot, or stop the run early.
struct Log;
impl Events for Log {
    fn event(&self, e: &Event<'_>) {
        if let Event::StepChosen {
            step,
            layer,
            after,
            compression,
            ..
        } = e
        {
            println!("step {step}: {layer} to {after}, {compression:.2}x");
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "quantize-convnet-example".into()),
    );
    synthetic::write_idx_dataset(&out.join("data"))?;
    let data = DataConfig {
        val_size: 30,
        bandit_size: 30,
        ..DataConfig::at(out.join("data"), DataFormat::Idx)
    };
    let fp = TrainConfig {
        data: data.clone(),
        epochs: 3,
        ..TrainConfig::new(ModelKind::Convnet, out.join("fp"))
    };
    pipeline::train(&fp, &Log)?;
    let mut search = QuantizeConfig::new(
        out.join("run"),
        Start::Checkpoint(out.join("fp")),
        Some(Target::Compression(6.0)),
    );
    search.data = data;
    search.search.ft_max_epochs = Some(3);
    search.search.final_epochs = 1;
    let q = pipeline::quantize(&search, &Log)?;
    let report = q.report.ok_or("the search did not finish")?;
    let e = pipeline::export(&ExportConfig::new(q.run, out.join("model.ccq")))?;
    println!(
        "{:.2}x, test top-1 {:.2}% (FP val {:.2}%); {} bytes in {}",
        report.cost.compression,
        100.0 * report.test,
        100.0 * report.fp_val,
        e.file_bytes,
        e.out.display()
    );
    Ok(())
}
