//! `ccq info`: what a checkpoint, an ONNX model or a `.ccq` file holds.

use super::jobs::pct;
use anyhow::Result;
use ccq::model::cost::cost_table;
use ccq::pipeline;
use clap::Args;
use std::path::PathBuf;

/// `ccq info` (a checkpoint, or a `.ccq` file).
#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Checkpoint (directory, or its weights file), or an ONNX model (`.onnx`).
    pub checkpoint: PathBuf,
}

/// Runs `ccq info`.
pub fn info(a: InfoArgs) -> Result<()> {
    if pipeline::export::is_ccq_file(&a.checkpoint) {
        return super::deploy::info_ccq(&a.checkpoint);
    }
    let i = pipeline::inspect(&a.checkpoint)?;
    let (meta, s) = (&i.meta, &i.meta.spec);
    if let Some(o) = &i.onnx {
        let n = &meta.normalization;
        println!(
            "ONNX model {}: {} nodes on {}×{}×{} inputs (`{}`), {} classes (`{}`); normalisation mean {:?} std {:?}",
            i.dir.display(),
            s.graph.as_ref().map_or(0, |g| g.nodes.len()),
            s.channels,
            s.height,
            s.width,
            o.input,
            s.classes,
            o.output,
            n.mean,
            n.std
        );
        print!("{}", cost_table(&i.layers, &i.cost));
        return Ok(());
    }
    let kind = if meta.policy.is_some() {
        format!(
            "quantized ({:?} weights, {:?} activations)",
            meta.scheme.weight, meta.scheme.act
        )
    } else {
        "full precision".into()
    };
    println!(
        "checkpoint {}: {} on {}×{}×{} inputs, {} classes; {kind}; data {}",
        i.dir.display(),
        s.kind.name(),
        s.channels,
        s.height,
        s.width,
        s.classes,
        meta.data.dir.display()
    );
    print!("{}", cost_table(&i.layers, &i.cost));
    if let Some(v) = meta.val {
        println!("validation top-1 {}", pct(v.top1));
    }
    if let Some(t) = meta.test {
        println!("test top-1 {} top-5 {}", pct(t.top1), pct(t.top5));
    }
    println!("epochs trained: {}", meta.epochs);
    Ok(())
}
