//! Quantization-aware conv and linear layers, and BatchNorm.
//!
//! Each layer quantizes its *input* activations (with PACT or LSQ) and its weights (DoReFa or
//! LSQ) at the bits the policy gives it, then runs the float op on the fake-quantized tensors.
//! Layers hold plain libtorch tensors; the network gathers them into one flat buffer ([`super::Network`]).

use crate::quant::policy::{FLOAT_BITS, LayerBits};
use crate::quant::quantizer::{QuantScheme, WeightQuantizer, quantize_act, quantize_weight};
use std::cell::RefCell;
use std::collections::BTreeMap;
use tch::{Device, Kind, Tensor};

/// Collects samples of every layer's input activations (for calibrating clip values).
#[derive(Default)]
pub struct Observer {
    /// Per layer index: a subsample of the input values seen.
    pub samples: RefCell<BTreeMap<usize, Vec<f32>>>,
}

impl Observer {
    fn record(&self, index: usize, x: &Tensor) {
        let flat = x.detach().flatten(0, -1);
        let stride = (flat.numel() / 20_000).max(1) as i64;
        let v = crate::host::to_f32(&flat.slice(0, 0, None, stride));
        self.samples
            .borrow_mut()
            .entry(index)
            .or_default()
            .extend(v);
    }
}

/// What a forward pass needs besides the input: the quantizers and every layer's bits.
#[derive(Clone, Copy)]
pub struct QuantCtx<'a> {
    /// Quantizers in use.
    pub scheme: QuantScheme,
    /// Bits per quantizable layer, indexed by layer index.
    pub bits: &'a [LayerBits],
    /// Calibration observer (records layer inputs when set).
    pub observer: Option<&'a Observer>,
    /// Training mode: BatchNorm uses (and updates) batch statistics.
    pub train: bool,
    /// Weight of a training batch's statistics in BatchNorm's running ones (PyTorch's 0.1).
    pub bn_momentum: f64,
}

impl<'a> QuantCtx<'a> {
    /// An inference context (BatchNorm on running statistics) without observer.
    pub fn new(scheme: QuantScheme, bits: &'a [LayerBits]) -> Self {
        QuantCtx {
            scheme,
            bits,
            observer: None,
            train: false,
            bn_momentum: BatchNorm::MOMENTUM,
        }
    }

    /// The same context in training mode.
    pub fn training(self) -> Self {
        QuantCtx {
            train: true,
            ..self
        }
    }

    /// Bits of layer `index`. A policy names every layer (float ones as `"w": 32`): policies are
    /// checked against the model's layer table when read, so a shorter one is a bug, not input.
    pub fn bits(&self, index: usize) -> LayerBits {
        match self.bits.get(index) {
            Some(b) => *b,
            None => panic!(
                "the policy has {} entries but layer {index} exists; a layer is never silently float",
                self.bits.len()
            ),
        }
    }
}

/// Calls `f(name, tensor, is_parameter)` for every tensor of a module, in a fixed order.
pub type Visit<'a> = dyn FnMut(&str, &Tensor, bool) + 'a;
/// Calls `f(name, tensor, is_parameter)` with mutable access (to replace a tensor).
pub type VisitMut<'a> = dyn FnMut(&str, &mut Tensor, bool) + 'a;

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// Quantizer parameters shared by conv and linear layers.
#[derive(Debug)]
pub struct QuantParams {
    /// PACT clip of the input activations `[1]`.
    pub act_alpha: Tensor,
    /// LSQ step of the input activations `[1]`.
    pub act_step: Tensor,
    /// LSQ step(s) of the weights: one per output channel (per-tensor LSQ uses the first).
    pub w_step: Tensor,
    /// The input can be negative (no ReLU before it), so it is quantized symmetrically.
    pub signed: bool,
}

impl QuantParams {
    fn new(out_channels: usize, device: Device) -> Self {
        let opts = (Kind::Float, device);
        Self {
            act_alpha: Tensor::full([1], 8.0, opts),
            act_step: Tensor::full([1], 0.1, opts),
            w_step: Tensor::full([out_channels as i64], 0.01, opts),
            signed: false,
        }
    }

    fn visit(&self, prefix: &str, f: &mut Visit) {
        f(&join(prefix, "act_alpha"), &self.act_alpha, true);
        f(&join(prefix, "act_step"), &self.act_step, true);
        f(&join(prefix, "w_step"), &self.w_step, true);
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        f(&join(prefix, "act_alpha"), &mut self.act_alpha, true);
        f(&join(prefix, "act_step"), &mut self.act_step, true);
        f(&join(prefix, "w_step"), &mut self.w_step, true);
    }

    fn weight_step(&self, scheme: &QuantScheme) -> Tensor {
        match scheme.weight {
            WeightQuantizer::LsqTensor => self.w_step.narrow(0, 0, 1),
            _ => self.w_step.shallow_clone(),
        }
    }

    /// The input of layer `index`, fake-quantized (the first layer reads the 8-bit image itself).
    pub fn input(&self, x: &Tensor, index: usize, ctx: &QuantCtx) -> Tensor {
        if let Some(o) = ctx.observer {
            o.record(index, x);
        }
        let bits = ctx.bits(index);
        if index == 0 || bits.a == FLOAT_BITS {
            return x.shallow_clone();
        }
        quantize_act(
            x,
            &self.act_alpha,
            &self.act_step,
            ctx.scheme.act,
            bits.a,
            self.signed,
        )
    }

    /// The weights `w` of layer `index`, fake-quantized at its policy's weight bits.
    fn weight(&self, w: &Tensor, index: usize, ctx: &QuantCtx) -> Tensor {
        quantize_weight(
            w,
            &self.weight_step(&ctx.scheme),
            ctx.scheme.weight,
            ctx.bits(index).w,
        )
    }
}

/// `x` in the layout convolutions run fastest in on its device: on the CPU, a 4-D tensor goes
/// channels-last (NHWC strides under its NCHW shape), where libtorch's oneDNN convolutions are
/// faster (one core, a training step of 128: ccq's ResNet-20 FP 785 → 638 ms, QAT W4A4 1,243 →
/// 1,079 ms; MobileNetV2 0.35 QAT 69–78 → 93–104 images/s). Elsewhere (not measured on a GPU),
/// and for other ranks, it is unchanged.
pub fn preferred_layout(x: &Tensor) -> Tensor {
    if x.device() != Device::Cpu || x.dim() != 4 {
        return x.shallow_clone();
    }
    let (s, c) = (x.stride(), x.size()[1]);
    if s[1] == 1 && s[3] == c {
        return x.shallow_clone();
    }
    x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// A quantization-aware 2D convolution (square kernel, the same stride, padding and dilation
/// on both axes), grouped or not, with an optional float bias.
#[derive(Debug)]
pub struct QConv {
    /// Weights `[out, in / groups, k, k]`.
    pub weight: Tensor,
    /// Bias `[out]` (imported convolutions; built-in ones have a BatchNorm instead).
    pub bias: Option<Tensor>,
    /// Quantizer parameters.
    pub quant: QuantParams,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Groups (`in` for a depthwise convolution).
    pub groups: usize,
    /// Index of this layer in the policy.
    pub index: usize,
}

/// Shape and placement of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Dilation.
    pub dilation: usize,
    /// Groups.
    pub groups: usize,
}

impl ConvShape {
    /// A plain (ungrouped, undilated) convolution.
    pub fn plain(cin: usize, cout: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        ConvShape {
            cin,
            cout,
            kernel,
            stride,
            padding,
            dilation: 1,
            groups: 1,
        }
    }
}

impl QConv {
    /// Kaiming-normal initialised conv (fan-out, as torchvision ResNets), with a zero bias
    /// when `bias`.
    pub fn new(shape: ConvShape, bias: bool, index: usize, device: Device) -> Self {
        let ConvShape {
            cin,
            cout,
            kernel: k,
            groups,
            ..
        } = shape;
        let std = (2.0 / (cout * k * k) as f64).sqrt();
        let dims = [cout as i64, (cin / groups) as i64, k as i64, k as i64];
        let weight = Tensor::randn(dims, (Kind::Float, device)) * std;
        Self {
            weight,
            bias: bias.then(|| Tensor::zeros([cout as i64], (Kind::Float, device))),
            quant: QuantParams::new(cout, device),
            stride: shape.stride,
            padding: shape.padding,
            dilation: shape.dilation,
            groups,
            index,
        }
    }

    /// Quantized weights as the forward pass uses them.
    pub fn quantized_weight(&self, ctx: &QuantCtx) -> Tensor {
        self.quant.weight(&self.weight, self.index, ctx)
    }

    /// Forward pass with fake quantization of the input and the weights.
    pub fn forward(&self, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        let x = self.quant.input(x, self.index, ctx);
        let w = preferred_layout(&self.quantized_weight(ctx));
        let (s, p, d) = (
            self.stride as i64,
            self.padding as i64,
            self.dilation as i64,
        );
        x.conv2d(
            &w,
            self.bias.as_ref(),
            [s, s],
            [p, p],
            [d, d],
            self.groups as i64,
        )
    }
}

/// A quantization-aware linear layer with a float bias.
#[derive(Debug)]
pub struct QLinear {
    /// Weights `[out, in]` (PyTorch layout, so per-output-channel scales are on dim 0).
    pub weight: Tensor,
    /// Bias `[out]` (kept in float; folded at export).
    pub bias: Tensor,
    /// Quantizer parameters.
    pub quant: QuantParams,
    /// Index of this layer in the policy.
    pub index: usize,
}

impl QLinear {
    /// Uniform(-1/√in, 1/√in) initialised linear layer, as PyTorch.
    pub fn new(cin: usize, cout: usize, index: usize, device: Device) -> Self {
        let bound = 1.0 / (cin as f64).sqrt();
        let opts = (Kind::Float, device);
        Self {
            weight: Tensor::rand([cout as i64, cin as i64], opts) * (2.0 * bound) - bound,
            bias: Tensor::rand([cout as i64], opts) * (2.0 * bound) - bound,
            quant: QuantParams::new(cout, device),
            index,
        }
    }

    /// Quantized weights as the forward pass uses them.
    pub fn quantized_weight(&self, ctx: &QuantCtx) -> Tensor {
        self.quant.weight(&self.weight, self.index, ctx)
    }

    /// Forward pass `[batch, in] -> [batch, out]`.
    pub fn forward(&self, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        let x = self.quant.input(x, self.index, ctx);
        let w = self.quantized_weight(ctx);
        x.linear(&w, Some(&self.bias))
    }

    /// Visits weight, bias and quantizer parameters.
    pub fn visit(&self, prefix: &str, f: &mut Visit) {
        f(&join(prefix, "weight"), &self.weight, true);
        f(&join(prefix, "bias"), &self.bias, true);
        self.quant.visit(&join(prefix, "quant"), f);
    }

    /// Mutable [`QLinear::visit`].
    pub fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        f(&join(prefix, "weight"), &mut self.weight, true);
        f(&join(prefix, "bias"), &mut self.bias, true);
        self.quant.visit_mut(&join(prefix, "quant"), f);
    }
}

/// Batch normalisation over channels (momentum 0.1, ε 1e-5, as PyTorch).
#[derive(Debug)]
pub struct BatchNorm {
    /// Scale γ.
    pub gamma: Tensor,
    /// Shift β.
    pub beta: Tensor,
    /// Running mean (a buffer).
    pub running_mean: Tensor,
    /// Running variance (a buffer).
    pub running_var: Tensor,
    /// ε added to the variance.
    pub epsilon: f64,
}

impl BatchNorm {
    /// PyTorch's default momentum of the running statistics.
    pub const MOMENTUM: f64 = 0.1;

    /// γ = 1, β = 0, running statistics 0 and 1.
    pub fn new(channels: usize, device: Device) -> Self {
        let opts = (Kind::Float, device);
        let c = [channels as i64];
        Self {
            gamma: Tensor::ones(c, opts),
            beta: Tensor::zeros(c, opts),
            running_mean: Tensor::zeros(c, opts),
            running_var: Tensor::ones(c, opts),
            epsilon: 1e-5,
        }
    }

    /// Normalises `x` with batch statistics (moving the running ones by `momentum`) when
    /// training, else with the running statistics.
    pub fn forward(&self, x: &Tensor, train: bool, momentum: f64) -> Tensor {
        x.batch_norm(
            Some(&self.gamma),
            Some(&self.beta),
            Some(&self.running_mean),
            Some(&self.running_var),
            train,
            momentum,
            self.epsilon,
            true,
        )
    }

    /// Running statistics back to their initial state (mean 0, variance 1).
    pub fn reset_statistics(&self) {
        tch::no_grad(|| {
            let _ = self.running_mean.shallow_clone().fill_(0.0);
            let _ = self.running_var.shallow_clone().fill_(1.0);
        });
    }

    /// Visits γ, β and the running statistics.
    pub fn visit(&self, prefix: &str, f: &mut Visit) {
        f(&join(prefix, "gamma"), &self.gamma, true);
        f(&join(prefix, "beta"), &self.beta, true);
        f(&join(prefix, "running_mean"), &self.running_mean, false);
        f(&join(prefix, "running_var"), &self.running_var, false);
    }

    /// Mutable [`BatchNorm::visit`].
    pub fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        f(&join(prefix, "gamma"), &mut self.gamma, true);
        f(&join(prefix, "beta"), &mut self.beta, true);
        f(&join(prefix, "running_mean"), &mut self.running_mean, false);
        f(&join(prefix, "running_var"), &mut self.running_var, false);
    }
}

/// A convolution, with the BatchNorm that follows it if any (activations are separate nodes).
#[derive(Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: QConv,
    /// Its batch normalisation.
    pub bn: Option<BatchNorm>,
}

impl ConvBn {
    /// A conv, followed by a BatchNorm when `bn`.
    pub fn new(shape: ConvShape, bias: bool, bn: bool, index: usize, device: Device) -> Self {
        Self {
            conv: QConv::new(shape, bias, index, device),
            bn: bn.then(|| BatchNorm::new(shape.cout, device)),
        }
    }

    /// `bn(conv(x))`.
    pub fn forward(&self, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        let y = self.conv.forward(x, ctx);
        match &self.bn {
            Some(bn) => bn.forward(&y, ctx.train, ctx.bn_momentum),
            None => y,
        }
    }

    /// Visits conv weight (and bias), quantizer parameters and BatchNorm.
    pub fn visit(&self, prefix: &str, f: &mut Visit) {
        f(&join(prefix, "conv.weight"), &self.conv.weight, true);
        if let Some(b) = &self.conv.bias {
            f(&join(prefix, "conv.bias"), b, true);
        }
        self.conv.quant.visit(&join(prefix, "conv.quant"), f);
        if let Some(bn) = &self.bn {
            bn.visit(&join(prefix, "bn"), f);
        }
    }

    /// Mutable [`ConvBn::visit`].
    pub fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        f(&join(prefix, "conv.weight"), &mut self.conv.weight, true);
        if let Some(b) = &mut self.conv.bias {
            f(&join(prefix, "conv.bias"), b, true);
        }
        self.conv.quant.visit_mut(&join(prefix, "conv.quant"), f);
        if let Some(bn) = &mut self.bn {
            bn.visit_mut(&join(prefix, "bn"), f);
        }
    }
}
