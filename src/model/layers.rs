//! Quantization-aware conv and linear layers.
//!
//! Each layer quantizes its *input* activations (with PACT or LSQ) and its weights (DoReFa or
//! LSQ) at the bits the policy gives it, then runs the float op on the fake-quantized tensors.

use crate::quant::policy::{FLOAT_BITS, LayerBits};
use crate::quant::quantizer::{QuantScheme, quantize_act, quantize_weight};
use burn::module::Param;
use burn::nn::{BatchNorm, BatchNormConfig};
use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Distribution, TensorData};
use std::cell::RefCell;
use std::collections::BTreeMap;

/// Collects samples of every layer's input activations (for calibrating clip values).
#[derive(Default)]
pub struct Observer {
    /// Per layer index: a subsample of the input values seen.
    pub samples: RefCell<BTreeMap<usize, Vec<f32>>>,
}

impl Observer {
    fn record<const D: usize>(&self, index: usize, x: &Tensor<D>) {
        let v = crate::host::to_f32(x.clone());
        let stride = (v.len() / 20_000).max(1);
        let mut m = self.samples.borrow_mut();
        m.entry(index)
            .or_default()
            .extend(v.iter().step_by(stride).copied());
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
}

impl<'a> QuantCtx<'a> {
    /// A context without observer.
    pub fn new(scheme: QuantScheme, bits: &'a [LayerBits]) -> Self {
        QuantCtx {
            scheme,
            bits,
            observer: None,
        }
    }

    /// Bits of layer `index` (float if the policy is shorter, which only happens for float runs).
    pub fn bits(&self, index: usize) -> LayerBits {
        self.bits.get(index).copied().unwrap_or(LayerBits::FLOAT)
    }
}

/// Quantizer parameters shared by conv and linear layers.
#[derive(Module, Debug)]
pub struct QuantParams {
    /// PACT clip of the input activations.
    pub act_alpha: Param<Tensor<1>>,
    /// LSQ step of the input activations.
    pub act_step: Param<Tensor<1>>,
    /// LSQ step(s) of the weights: one per output channel (per-tensor LSQ uses the first).
    pub w_step: Param<Tensor<1>>,
}

impl QuantParams {
    fn new(out_channels: usize, device: &Device) -> Self {
        Self {
            act_alpha: Param::from_tensor(Tensor::from_data(TensorData::from([8.0f32]), device)),
            act_step: Param::from_tensor(Tensor::from_data(TensorData::from([0.1f32]), device)),
            w_step: Param::from_tensor(Tensor::ones([out_channels], device).mul_scalar(0.01)),
        }
    }

    fn weight_step(&self, scheme: &QuantScheme) -> Tensor<1> {
        use crate::quant::quantizer::WeightQuantizer::*;
        match scheme.weight {
            LsqTensor => self.w_step.val().narrow(0, 0, 1),
            _ => self.w_step.val(),
        }
    }

    fn input<const D: usize>(&self, x: Tensor<D>, index: usize, ctx: &QuantCtx) -> Tensor<D> {
        if let Some(o) = ctx.observer {
            o.record(index, &x);
        }
        let bits = ctx.bits(index);
        // The first layer reads the 8-bit image itself: already on an 8-bit grid.
        if index == 0 || bits.a == FLOAT_BITS {
            return x;
        }
        quantize_act(
            x,
            self.act_alpha.val(),
            self.act_step.val(),
            ctx.scheme.act,
            bits.a,
        )
    }
}

/// A quantization-aware 2D convolution without bias (a BatchNorm follows it).
#[derive(Module, Debug)]
pub struct QConv {
    /// Weights `[out, in, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// Quantizer parameters.
    pub quant: QuantParams,
    /// Stride.
    pub stride: usize,
    /// Zero padding on each side.
    pub padding: usize,
    /// Index of this layer in the policy.
    pub index: usize,
}

impl QConv {
    /// Kaiming-normal initialised conv (fan-out, as torchvision ResNets).
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        index: usize,
        device: &Device,
    ) -> Self {
        let std = (2.0 / (cout * k * k) as f64).sqrt();
        let weight = Tensor::random([cout, cin, k, k], Distribution::Normal(0.0, std), device);
        Self {
            weight: Param::from_tensor(weight),
            quant: QuantParams::new(cout, device),
            stride,
            padding,
            index,
        }
    }

    /// Quantized weights as the forward pass uses them.
    pub fn quantized_weight(&self, ctx: &QuantCtx) -> Tensor<4> {
        let bits = ctx.bits(self.index);
        quantize_weight(
            self.weight.val(),
            self.quant.weight_step(&ctx.scheme),
            ctx.scheme.weight,
            bits.w,
        )
    }

    /// Forward pass with fake quantization of the input and the weights.
    pub fn forward(&self, x: Tensor<4>, ctx: &QuantCtx) -> Tensor<4> {
        let x = self.quant.input(x, self.index, ctx);
        let w = self.quantized_weight(ctx);
        let opts = ConvOptions::new([self.stride; 2], [self.padding; 2], [1, 1], 1);
        conv2d(x, w, None, opts)
    }
}

/// A quantization-aware linear layer with a float bias.
#[derive(Module, Debug)]
pub struct QLinear {
    /// Weights `[out, in]` (PyTorch layout, so per-output-channel scales are on dim 0).
    pub weight: Param<Tensor<2>>,
    /// Bias `[out]` (kept in float; folded at export).
    pub bias: Param<Tensor<1>>,
    /// Quantizer parameters.
    pub quant: QuantParams,
    /// Index of this layer in the policy.
    pub index: usize,
}

impl QLinear {
    /// Uniform(-1/√in, 1/√in) initialised linear layer, as PyTorch.
    pub fn new(cin: usize, cout: usize, index: usize, device: &Device) -> Self {
        let bound = 1.0 / (cin as f64).sqrt();
        Self {
            weight: Param::from_tensor(Tensor::random(
                [cout, cin],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            bias: Param::from_tensor(Tensor::random(
                [cout],
                Distribution::Uniform(-bound, bound),
                device,
            )),
            quant: QuantParams::new(cout, device),
            index,
        }
    }

    /// Quantized weights as the forward pass uses them.
    pub fn quantized_weight(&self, ctx: &QuantCtx) -> Tensor<2> {
        let bits = ctx.bits(self.index);
        quantize_weight(
            self.weight.val(),
            self.quant.weight_step(&ctx.scheme),
            ctx.scheme.weight,
            bits.w,
        )
    }

    /// Forward pass `[batch, in] -> [batch, out]`.
    pub fn forward(&self, x: Tensor<2>, ctx: &QuantCtx) -> Tensor<2> {
        let x = self.quant.input(x, self.index, ctx);
        let w = self.quantized_weight(ctx);
        x.matmul(w.transpose()) + self.bias.val().unsqueeze::<2>()
    }
}

/// Conv followed by BatchNorm (ReLU is applied by the caller).
#[derive(Module, Debug)]
pub struct ConvBn {
    /// The convolution.
    pub conv: QConv,
    /// Its batch normalisation.
    pub bn: BatchNorm,
}

impl ConvBn {
    /// A conv + BN pair.
    pub fn new(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        padding: usize,
        index: usize,
        device: &Device,
    ) -> Self {
        Self {
            conv: QConv::new(cin, cout, k, stride, padding, index, device),
            bn: BatchNormConfig::new(cout).init(device),
        }
    }

    /// `bn(conv(x))`.
    pub fn forward(&self, x: Tensor<4>, ctx: &QuantCtx) -> Tensor<4> {
        self.bn.forward(self.conv.forward(x, ctx))
    }
}
