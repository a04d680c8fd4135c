//! SGD with momentum (PyTorch semantics: dampening 0, no Nesterov) and L2 weight decay, applied
//! to a network's flat parameter buffer in a handful of kernels whatever the model.

use crate::model::Network;
use tch::{Kind, Tensor};

/// Optimiser hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hyper {
    /// Images per step.
    pub batch_size: usize,
    /// SGD momentum (dampening 0, as PyTorch).
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
}

/// SGD state over one network's flat buffer.
///
/// A parameter that gets no gradient in a step (a quantizer parameter the scheme does not use,
/// say) is left exactly as it is, as PyTorch skips parameters whose gradient is `None`.
pub struct FlatSgd {
    hyper: Hyper,
    /// Momentum buffer, as long as the flat parameter buffer (created at the first step).
    momentum: Option<Tensor>,
    /// Zero gradients for parameters that got none, kept across steps.
    zeros: Vec<Option<Tensor>>,
    /// Which parameters had a gradient, and the matching 0/1 mask over the flat buffer.
    mask: Option<(Vec<bool>, Tensor)>,
}

/// A fresh optimiser.
pub fn sgd(h: &Hyper) -> FlatSgd {
    FlatSgd {
        hyper: *h,
        momentum: None,
        zeros: Vec::new(),
        mask: None,
    }
}

impl FlatSgd {
    /// A resumed optimiser: `momentum` is the buffer a checkpoint saved ([`FlatSgd::momentum`]).
    pub fn resumed(h: &Hyper, momentum: Option<Tensor>) -> FlatSgd {
        FlatSgd { momentum, ..sgd(h) }
    }

    /// The momentum buffer over the flat parameters (none before the first step).
    pub fn momentum(&self) -> Option<&Tensor> {
        self.momentum.as_ref()
    }

    /// Gradients of `loss` for every parameter of `net` (undefined where a parameter is unused).
    pub fn gradients(net: &Network, loss: &Tensor) -> Vec<Tensor> {
        Tensor::run_backward(&[loss], &net.params, false, false)
    }

    /// One update of `net` at learning rate `lr` from `grads` (one per parameter, in order).
    pub fn step(&mut self, net: &Network, grads: Vec<Tensor>, lr: f64) {
        let used: Vec<bool> = grads.iter().map(Tensor::defined).collect();
        if self.zeros.len() != grads.len() {
            self.zeros = (0..grads.len()).map(|_| None).collect();
        }
        let flat_grads: Vec<Tensor> = grads
            .into_iter()
            .zip(&net.params)
            .enumerate()
            .map(|(i, (g, p))| {
                if g.defined() {
                    g.flatten(0, -1)
                } else {
                    self.zeros[i]
                        .get_or_insert_with(|| {
                            Tensor::zeros([p.numel() as i64], (p.kind(), p.device()))
                        })
                        .shallow_clone()
                }
            })
            .collect();
        let all_used = used.iter().all(|&u| u);
        if !all_used && self.mask.as_ref().is_none_or(|(m, _)| *m != used) {
            let parts: Vec<Tensor> = used
                .iter()
                .zip(&net.params)
                .map(|(&u, p)| {
                    let v = if u { 1.0 } else { 0.0 };
                    Tensor::full([p.numel() as i64], v, (Kind::Float, p.device()))
                })
                .collect();
            self.mask = Some((used, Tensor::cat(&parts, 0)));
        }
        let h = self.hyper;
        tch::no_grad(|| {
            let mut d = Tensor::cat(&flat_grads, 0);
            let mut flat = net.flat.shallow_clone();
            if h.weight_decay != 0.0 {
                let decay = if all_used {
                    &flat * h.weight_decay
                } else {
                    let (_, mask) = self.mask.as_ref().expect("mask built above");
                    &flat * mask * h.weight_decay
                };
                let _ = d.g_add_(&decay);
            }
            let step = match &mut self.momentum {
                Some(buf) if h.momentum != 0.0 => {
                    let _ = buf.g_mul_scalar_(h.momentum).g_add_(&d);
                    buf.shallow_clone()
                }
                _ if h.momentum != 0.0 => {
                    let buf = d.copy();
                    self.momentum = Some(buf.shallow_clone());
                    buf
                }
                _ => d,
            };
            let _ = flat.g_sub_(&(step * lr));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{ModelKind, ModelSpec, QuantCtx, build};
    use crate::quant::policy::{LayerBits, Policy};
    use tch::Device;

    /// PyTorch's per-parameter SGD (`torch.optim.SGD`, foreach off), for comparison.
    fn reference_step(
        params: &[Tensor],
        grads: &[Tensor],
        bufs: &mut [Option<Tensor>],
        h: Hyper,
        lr: f64,
    ) {
        tch::no_grad(|| {
            for ((p, g), b) in params.iter().zip(grads).zip(bufs.iter_mut()) {
                if !g.defined() {
                    continue;
                }
                let d = g + p * h.weight_decay;
                let d = match b {
                    Some(buf) => {
                        let nb = &*buf * h.momentum + &d;
                        *b = Some(nb.shallow_clone());
                        nb
                    }
                    None => {
                        *b = Some(d.copy());
                        d
                    }
                };
                let _ = p.shallow_clone().g_sub_(&(d * lr));
            }
        });
    }

    #[test]
    fn flat_update_matches_per_parameter_sgd() {
        tch::manual_seed(5);
        let spec = ModelSpec {
            kind: ModelKind::Resnet20,
            channels: 1,
            height: 8,
            width: 8,
            classes: 4,
            graph: None,
        };
        let a = build(&spec, Device::Cpu).unwrap();
        let b = a.clone();
        let policy = Policy::uniform(&a.layer_names(), LayerBits { w: 4, a: 4 });
        let ctx = QuantCtx::new(Default::default(), &policy.bits).training();
        let h = Hyper {
            batch_size: 8,
            momentum: 0.9,
            weight_decay: 1e-3,
        };
        let x = Tensor::randn([8, 1, 8, 8], (Kind::Float, Device::Cpu));
        let y = Tensor::from_slice(&[0i64, 1, 2, 3, 0, 1, 2, 3]);
        let init = a.net.flat.copy();
        let mut opt = sgd(&h);
        let mut bufs: Vec<Option<Tensor>> = (0..b.net.params.len()).map(|_| None).collect();
        let mut unused = 0;
        for step in 0..3 {
            let lr = 0.1 / (step + 1) as f64;
            let la = a.net.forward(&x, &ctx).cross_entropy_for_logits(&y);
            let ga = FlatSgd::gradients(&a.net, &la);
            unused = ga.iter().filter(|g| !g.defined()).count();
            opt.step(&a.net, ga, lr);
            let lb = b.net.forward(&x, &ctx).cross_entropy_for_logits(&y);
            let gb = FlatSgd::gradients(&b.net, &lb);
            reference_step(&b.net.params, &gb, &mut bufs, h, lr);
            assert!((la.double_value(&[]) - lb.double_value(&[])).abs() < 1e-5);
        }
        assert!(
            unused > 0,
            "DoReFa/PACT leave the LSQ steps without gradient"
        );
        let diff = (&a.net.flat - &b.net.flat).abs().max().double_value(&[]);
        assert!(
            diff < 1e-5,
            "flat and per-parameter updates differ by {diff}"
        );
        let moved = (&a.net.flat - &init).abs().max().double_value(&[]);
        assert!(moved > 1e-4);
    }
}
