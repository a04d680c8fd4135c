//! BatchNorm put back after the convolutions of an imported model whose exporter folded it
//! into their weights and bias (PyTorch's default).
//!
//! Quantization-aware training of such a network has no normalisation left to absorb the
//! changes quantization makes to each layer's output, and DoReFa-style rescaling would undo the
//! folded scale. Each conv without a BatchNorm gets one that is, on the data, the identity:
//! running mean `μ` and variance `σ²` of the conv's output, `γ = √(σ² + ε)`, `β = μ`. The
//! network computes the same function in inference; in training, BatchNorm works as it did
//! when the model was trained, and the export folds it back.

use super::graph::OpSpec;
use super::network::{Model, NodeOp, build};
use anyhow::{Result, bail};
use tch::{Kind, Tensor};

/// `model` with a BatchNorm after every conv that has none, its statistics measured on
/// `batches` (normalised images); `None` when every conv has one already.
pub fn unfold_batchnorm(model: &Model, batches: &[Tensor]) -> Result<Option<Model>> {
    let mut spec = model.spec.clone();
    let Some(graph) = spec.graph.as_mut() else {
        return Ok(None);
    };
    let mut unfolded = Vec::new();
    for (pos, n) in graph.nodes.iter_mut().enumerate() {
        if let OpSpec::Conv { bn: bn @ false, .. } = &mut n.op {
            *bn = true;
            unfolded.push(pos);
        }
    }
    if unfolded.is_empty() {
        return Ok(None);
    }
    if batches.is_empty() {
        bail!("no images to measure the convolutions' statistics on");
    }
    // Per unfolded conv: Σx and Σx² per channel, and the count.
    let ctx_bits = vec![crate::quant::policy::LayerBits::FLOAT; model.layers.len()];
    let ctx = super::QuantCtx::new(Default::default(), &ctx_bits);
    let mut sums: Vec<(Tensor, Tensor, f64)> = Vec::new();
    tch::no_grad(|| {
        for (b, x) in batches.iter().enumerate() {
            let values = model.net.values(x, &ctx);
            for (i, &pos) in unfolded.iter().enumerate() {
                let y = values[pos + 1].to_kind(Kind::Double);
                let s1 = y.sum_dim_intlist([0, 2, 3].as_slice(), false, Kind::Double);
                let s2 = (&y * &y).sum_dim_intlist([0, 2, 3].as_slice(), false, Kind::Double);
                let n = (y.numel() / y.size()[1] as usize) as f64;
                if b == 0 {
                    sums.push((s1, s2, n));
                } else {
                    let e = &mut sums[i];
                    e.0 += s1;
                    e.1 += s2;
                    e.2 += n;
                }
            }
        }
    });
    let new = build(&spec, model.net.device())?;
    // Every tensor of the old model, by name, into the new one.
    let mut old = std::collections::HashMap::new();
    model.net.visit(&mut |name, t, _| {
        old.insert(name.to_string(), t.shallow_clone());
    });
    tch::no_grad(|| {
        new.net.visit(&mut |name, t, _| {
            if let Some(v) = old.get(name) {
                t.shallow_clone().copy_(v);
            }
        });
        for (&pos, (s1, s2, n)) in unfolded.iter().zip(&sums) {
            let NodeOp::Conv(c) = &new.net.nodes[pos].op else {
                unreachable!("unfolded nodes are convs")
            };
            let bn = c.bn.as_ref().expect("a BatchNorm was added");
            let mean = s1 / *n;
            let var = (s2 / *n - &mean * &mean).clamp_min(0.0);
            let to = |t: Tensor| t.to_kind(Kind::Float);
            bn.running_mean
                .shallow_clone()
                .copy_(&to(mean.shallow_clone()));
            bn.running_var
                .shallow_clone()
                .copy_(&to(var.shallow_clone()));
            bn.gamma
                .shallow_clone()
                .copy_(&to((var + bn.epsilon).sqrt()));
            bn.beta.shallow_clone().copy_(&to(mean));
        }
    });
    Ok(Some(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GraphSpec, ModelKind, ModelSpec, NodeSpec, QuantCtx};
    use crate::quant::policy::LayerBits;
    use tch::Device;

    #[test]
    fn the_added_batchnorm_is_the_identity_on_the_data() {
        tch::manual_seed(4);
        let node = |name: &str, op, src| NodeSpec {
            name: name.into(),
            key: name.into(),
            op,
            inputs: vec![src],
        };
        let conv = OpSpec::Conv {
            in_channels: 2,
            out_channels: 4,
            kernel: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
            bias: true,
            bn: false,
        };
        let spec = ModelSpec {
            kind: ModelKind::Imported,
            channels: 2,
            height: 6,
            width: 6,
            classes: 3,
            graph: Some(GraphSpec {
                nodes: vec![
                    node("conv", conv, 0),
                    node("relu", OpSpec::Relu, 1),
                    node("gap", OpSpec::GlobalAvgPool, 2),
                    node("flat", OpSpec::Flatten, 3),
                    node(
                        "fc",
                        OpSpec::Linear {
                            in_features: 4,
                            out_features: 3,
                        },
                        4,
                    ),
                ],
                output: 5,
                io: None,
            }),
        };
        let model = build(&spec, Device::Cpu).unwrap();
        let x = Tensor::randn([16, 2, 6, 6], (Kind::Float, Device::Cpu)) * 2.0 + 0.5;
        let new = unfold_batchnorm(&model, std::slice::from_ref(&x))
            .unwrap()
            .expect("the conv had no BatchNorm");
        assert!(matches!(
            new.graph.nodes[0].op,
            OpSpec::Conv {
                bn: true,
                bias: true,
                ..
            }
        ));
        let bits = vec![LayerBits::FLOAT; 2];
        let ctx = QuantCtx::new(Default::default(), &bits);
        let before = model.net.forward(&x, &ctx);
        let after = new.net.forward(&x, &ctx);
        let diff = (&before - &after).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "inference is unchanged ({diff})");
        // In training mode the batch statistics are these images' own: still the identity.
        let train = new.net.forward(&x, &ctx.training());
        let diff = (&before - &train).abs().max().double_value(&[]);
        assert!(diff < 1e-3, "training mode on the measured batch ({diff})");
        assert!(
            unfold_batchnorm(&new, &[x]).unwrap().is_none(),
            "nothing left to unfold"
        );
    }
}
