//! The networks ccq quantizes: a compact ConvNet, CIFAR-style ResNet-20/32/56 and ResNet-18.

use super::layers::{ConvBn, QLinear, QuantCtx, QuantParams};
use anyhow::{Result, bail};
use burn::prelude::*;
use burn::tensor::activation::relu;
use burn::tensor::module::{adaptive_avg_pool2d, max_pool2d};
use burn::tensor::ops::MaxPoolOptions;
use serde::{Deserialize, Serialize};

/// The architectures ccq builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Compact ConvNet: three conv+BN+ReLU+maxpool stages and one linear layer.
    Convnet,
    /// CIFAR-style ResNet-20 (3 BasicBlocks per stage, 16/32/64 channels).
    Resnet20,
    /// CIFAR-style ResNet-32 (5 blocks per stage).
    Resnet32,
    /// CIFAR-style ResNet-56 (9 blocks per stage).
    Resnet56,
    /// ImageNet-style ResNet-18 (7×7 stem, max-pool, 64..512 channels).
    Resnet18,
}

impl ModelKind {
    /// Lower-case name, as on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Convnet => "convnet",
            ModelKind::Resnet20 => "resnet20",
            ModelKind::Resnet32 => "resnet32",
            ModelKind::Resnet56 => "resnet56",
            ModelKind::Resnet18 => "resnet18",
        }
    }
}

/// Everything needed to rebuild a model: architecture, input shape and class count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// Architecture.
    pub kind: ModelKind,
    /// Input channels.
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Number of classes.
    pub classes: usize,
}

/// Whether a layer is a convolution or a fully connected layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerKind {
    /// 2D convolution.
    Conv,
    /// Fully connected.
    Linear,
}

/// Static description of one quantizable layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    /// Stable dotted name, e.g. `stage2.block0.conv1`.
    pub name: String,
    /// Conv or linear.
    pub kind: LayerKind,
    /// Input channels (features for linear).
    pub in_channels: usize,
    /// Output channels (features for linear).
    pub out_channels: usize,
    /// Kernel size (1 for linear).
    pub kernel: usize,
    /// Number of weights.
    pub params: usize,
    /// Multiply-accumulates per image at the configured input size.
    pub macs: u64,
    /// Float parameters that are not quantized weights: bias and the BatchNorm that follows.
    pub float_params: usize,
}

/// A residual BasicBlock or, for the ConvNet, a plain conv stage.
#[derive(Module, Debug)]
pub struct Block {
    /// First conv (the only one in a plain stage).
    pub conv1: ConvBn,
    /// Second conv of a residual block.
    pub conv2: Option<ConvBn>,
    /// 1×1 projection shortcut when the shape changes.
    pub shortcut: Option<ConvBn>,
    /// Max-pool window after the stage (0: none).
    pub pool: usize,
}

impl Block {
    /// `relu(conv2(relu(conv1 x)) + shortcut x)`, or `pool(relu(conv1 x))` for a plain stage.
    pub fn forward(&self, x: Tensor<4>, ctx: &QuantCtx) -> Tensor<4> {
        let y = relu(self.conv1.forward(x.clone(), ctx));
        let y = match &self.conv2 {
            Some(conv2) => {
                let y = conv2.forward(y, ctx);
                let sc = match &self.shortcut {
                    Some(s) => s.forward(x, ctx),
                    None => x,
                };
                relu(y + sc)
            }
            None => y,
        };
        pool(y, self.pool)
    }
}

/// Max-pool by window code: 0 none, 2 = 2×2/2, 3 = 3×3/2 pad 1.
pub fn pool(x: Tensor<4>, window: usize) -> Tensor<4> {
    match window {
        0 => x,
        2 => max_pool2d(x, MaxPoolOptions::new([2, 2])),
        _ => max_pool2d(
            x,
            MaxPoolOptions::new([3, 3])
                .with_stride([2, 2])
                .with_padding([1, 1]),
        ),
    }
}

/// A network whose every conv and linear layer is quantization-aware.
#[derive(Module, Debug)]
pub struct Network {
    /// First conv + BN.
    pub stem: ConvBn,
    /// Max-pool after the stem (0: none, 2: 2×2/2, 3: 3×3/2 pad 1).
    pub stem_pool: usize,
    /// Stages / residual blocks.
    pub blocks: Vec<Block>,
    /// Global average pooling before the classifier (else flatten).
    pub global_pool: bool,
    /// Classifier.
    pub fc: QLinear,
}

impl Network {
    /// Logits `[batch, classes]` for images `[batch, channels, h, w]`.
    pub fn forward(&self, x: Tensor<4>, ctx: &QuantCtx) -> Tensor<2> {
        let mut x = pool(relu(self.stem.forward(x, ctx)), self.stem_pool);
        for b in &self.blocks {
            x = b.forward(x, ctx);
        }
        if self.global_pool {
            x = adaptive_avg_pool2d(x, [1, 1]);
        }
        let [n, c, h, w] = x.dims();
        self.fc.forward(x.reshape([n, c * h * w]), ctx)
    }
}

impl Network {
    /// The conv layers in policy order (the classifier is `fc`, last).
    pub fn convs(&self) -> Vec<&ConvBn> {
        let mut v = vec![&self.stem];
        for b in &self.blocks {
            v.push(&b.conv1);
            v.extend(b.conv2.iter());
            v.extend(b.shortcut.iter());
        }
        v
    }

    /// Mutable conv layers in policy order.
    pub fn convs_mut(&mut self) -> Vec<&mut ConvBn> {
        let mut v = vec![&mut self.stem];
        for b in &mut self.blocks {
            v.push(&mut b.conv1);
            v.extend(b.conv2.iter_mut());
            v.extend(b.shortcut.iter_mut());
        }
        v
    }

    /// Calls `f(index, quantizer params, weight as [out, rest])` for every quantizable layer.
    pub fn for_each_quant(&mut self, f: &mut dyn FnMut(usize, &mut QuantParams, Tensor<2>)) {
        for c in self.convs_mut() {
            let w = c.conv.weight.val();
            let [o, i, k1, k2] = w.dims();
            f(c.conv.index, &mut c.conv.quant, w.reshape([o, i * k1 * k2]));
        }
        let w = self.fc.weight.val();
        f(self.fc.index, &mut self.fc.quant, w);
    }

    /// Every quantizable layer's weights, flattened, in policy order.
    pub fn weights_host(&self) -> Vec<Vec<f32>> {
        let mut v: Vec<Vec<f32>> = self
            .convs()
            .iter()
            .map(|c| crate::host::to_f32(c.conv.weight.val()))
            .collect();
        v.push(crate::host::to_f32(self.fc.weight.val()));
        v
    }

    /// Replaces every quantizable layer's weights (flattened, policy order), keeping parameter ids.
    pub fn set_weights_host(&mut self, w: &[Vec<f32>]) {
        use burn::tensor::TensorData;
        let mut it = w.iter();
        for c in self.convs_mut() {
            let values = it.next().expect("one weight vector per layer").clone();
            let p = c.conv.weight.clone();
            c.conv.weight = p.map(|t| {
                let (shape, device) = (t.shape(), t.device());
                let fresh = Tensor::<4>::from_data(TensorData::new(values, shape), &device);
                if device.is_autodiff() {
                    fresh.require_grad()
                } else {
                    fresh
                }
            });
        }
        let values = it.next().expect("one weight vector per layer").clone();
        let p = self.fc.weight.clone();
        self.fc.weight = p.map(|t| {
            let (shape, device) = (t.shape(), t.device());
            let fresh = Tensor::<2>::from_data(TensorData::new(values, shape), &device);
            if device.is_autodiff() {
                fresh.require_grad()
            } else {
                fresh
            }
        });
    }

    /// Gradients of every quantizable layer's weights (zeros where none), policy order.
    pub fn weight_grads(&self, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
        let mut v: Vec<Vec<f32>> = self
            .convs()
            .iter()
            .map(|c| {
                let w = c.conv.weight.val();
                w.grad(grads)
                    .map(crate::host::to_f32)
                    .unwrap_or_else(|| vec![0.0; w.shape().num_elements()])
            })
            .collect();
        let w = self.fc.weight.val();
        v.push(
            w.grad(grads)
                .map(crate::host::to_f32)
                .unwrap_or_else(|| vec![0.0; w.shape().num_elements()]),
        );
        v
    }
}

/// A network with its layer table.
#[derive(Clone)]
pub struct Model {
    /// What was built.
    pub spec: ModelSpec,
    /// The burn module.
    pub net: Network,
    /// Quantizable layers in policy order.
    pub layers: Vec<LayerInfo>,
}

impl Model {
    /// Names of the quantizable layers in policy order.
    pub fn layer_names(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.name.clone()).collect()
    }
}

/// Tracks the activation shape while a network is built and records each layer.
struct Builder<'d> {
    device: &'d Device,
    c: usize,
    h: usize,
    w: usize,
    layers: Vec<LayerInfo>,
}

impl Builder<'_> {
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: String,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
        h: usize,
        w: usize,
    ) -> (ConvBn, usize, usize) {
        let oh = (h + 2 * pad - k) / stride + 1;
        let ow = (w + 2 * pad - k) / stride + 1;
        let index = self.layers.len();
        self.layers.push(LayerInfo {
            name,
            kind: LayerKind::Conv,
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            params: cout * cin * k * k,
            macs: (oh * ow * cout * cin * k * k) as u64,
            float_params: 2 * cout,
        });
        (
            ConvBn::new(cin, cout, k, stride, pad, index, self.device),
            oh,
            ow,
        )
    }

    fn pooled(h: usize, window: usize) -> usize {
        match window {
            0 => h,
            2 => h / 2,
            _ => (h + 2 - 3) / 2 + 1,
        }
    }

    fn plain_stage(&mut self, name: &str, cout: usize) -> Block {
        let (conv1, h, w) = self.conv(
            format!("{name}.conv"),
            self.c,
            cout,
            3,
            1,
            1,
            self.h,
            self.w,
        );
        self.c = cout;
        self.h = Self::pooled(h, 2);
        self.w = Self::pooled(w, 2);
        Block {
            conv1,
            conv2: None,
            shortcut: None,
            pool: 2,
        }
    }

    fn basic_block(&mut self, name: &str, cout: usize, stride: usize) -> Block {
        let (cin, h, w) = (self.c, self.h, self.w);
        let (conv1, oh, ow) = self.conv(format!("{name}.conv1"), cin, cout, 3, stride, 1, h, w);
        let (conv2, _, _) = self.conv(format!("{name}.conv2"), cout, cout, 3, 1, 1, oh, ow);
        let shortcut = (stride != 1 || cin != cout).then(|| {
            self.conv(format!("{name}.shortcut"), cin, cout, 1, stride, 0, h, w)
                .0
        });
        self.c = cout;
        self.h = oh;
        self.w = ow;
        Block {
            conv1,
            conv2: Some(conv2),
            shortcut,
            pool: 0,
        }
    }

    fn linear(&mut self, cin: usize, classes: usize) -> QLinear {
        let index = self.layers.len();
        self.layers.push(LayerInfo {
            name: "fc".into(),
            kind: LayerKind::Linear,
            in_channels: cin,
            out_channels: classes,
            kernel: 1,
            params: cin * classes,
            macs: (cin * classes) as u64,
            float_params: classes,
        });
        QLinear::new(cin, classes, index, self.device)
    }
}

/// Channel widths of the compact ConvNet's three stages.
pub const CONVNET_WIDTHS: [usize; 3] = [16, 32, 64];

/// Builds a model for `spec` on `device` (weights freshly initialised).
pub fn build(spec: &ModelSpec, device: &Device) -> Result<Model> {
    if spec.channels == 0 || spec.classes < 2 {
        bail!(
            "model needs at least one input channel and two classes (got {} channels, {} classes)",
            spec.channels,
            spec.classes
        );
    }
    let min_side = match spec.kind {
        ModelKind::Convnet => 8,
        ModelKind::Resnet18 => 16,
        _ => 4,
    };
    if spec.height < min_side || spec.width < min_side {
        bail!(
            "{} needs inputs of at least {min_side}×{min_side} (got {}×{})",
            spec.kind.name(),
            spec.height,
            spec.width
        );
    }
    let mut b = Builder {
        device,
        c: spec.channels,
        h: spec.height,
        w: spec.width,
        layers: Vec::new(),
    };
    let net = match spec.kind {
        ModelKind::Convnet => {
            let [w0, w1, w2] = CONVNET_WIDTHS;
            let (stem, h, w) = b.conv("stem.conv".into(), spec.channels, w0, 3, 1, 1, b.h, b.w);
            b.c = w0;
            b.h = Builder::pooled(h, 2);
            b.w = Builder::pooled(w, 2);
            let blocks = vec![b.plain_stage("stage1", w1), b.plain_stage("stage2", w2)];
            let fc = b.linear(b.c * b.h * b.w, spec.classes);
            Network {
                stem,
                stem_pool: 2,
                blocks,
                global_pool: false,
                fc,
            }
        }
        ModelKind::Resnet20 | ModelKind::Resnet32 | ModelKind::Resnet56 => {
            let n = match spec.kind {
                ModelKind::Resnet20 => 3,
                ModelKind::Resnet32 => 5,
                _ => 9,
            };
            let (stem, h, w) = b.conv("stem.conv".into(), spec.channels, 16, 3, 1, 1, b.h, b.w);
            (b.c, b.h, b.w) = (16, h, w);
            let mut blocks = Vec::new();
            for (s, width) in [16, 32, 64].into_iter().enumerate() {
                for i in 0..n {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    blocks.push(b.basic_block(&format!("stage{}.block{i}", s + 1), width, stride));
                }
            }
            let fc = b.linear(64, spec.classes);
            Network {
                stem,
                stem_pool: 0,
                blocks,
                global_pool: true,
                fc,
            }
        }
        ModelKind::Resnet18 => {
            let (stem, h, w) = b.conv("stem.conv".into(), spec.channels, 64, 7, 2, 3, b.h, b.w);
            (b.c, b.h, b.w) = (64, Builder::pooled(h, 3), Builder::pooled(w, 3));
            let mut blocks = Vec::new();
            for (s, width) in [64, 128, 256, 512].into_iter().enumerate() {
                for i in 0..2 {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    blocks.push(b.basic_block(&format!("stage{}.block{i}", s + 1), width, stride));
                }
            }
            let fc = b.linear(512, spec.classes);
            Network {
                stem,
                stem_pool: 3,
                blocks,
                global_pool: true,
                fc,
            }
        }
    };
    Ok(Model {
        spec: spec.clone(),
        net,
        layers: b.layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: ModelKind) -> ModelSpec {
        ModelSpec {
            kind,
            channels: 1,
            height: 28,
            width: 28,
            classes: 10,
        }
    }

    #[test]
    fn resnet20_layer_table() {
        let m = build(&spec(ModelKind::Resnet20), &Device::flex()).unwrap();
        // stem + 9 blocks × 2 convs + 2 shortcuts + fc
        assert_eq!(m.layers.len(), 1 + 18 + 2 + 1);
        let names = m.layer_names();
        assert_eq!(names[0], "stem.conv");
        assert!(names.contains(&"stage2.block0.shortcut".to_string()));
        assert!(names.contains(&"stage3.block2.conv2".to_string()));
        assert_eq!(names.last().unwrap(), "fc");
        let stem = &m.layers[0];
        assert_eq!(stem.params, 16 * 9);
        assert_eq!(stem.macs, 28 * 28 * 16 * 9);
        // stage2 first conv: 16→32, stride 2 on 28×28 → 14×14
        let l = m
            .layers
            .iter()
            .find(|l| l.name == "stage2.block0.conv1")
            .unwrap();
        assert_eq!(l.macs, (14 * 14 * 32 * 16 * 9) as u64);
        let total: usize = m.layers.iter().map(|l| l.params).sum();
        assert!(
            (260_000..280_000).contains(&total),
            "ResNet-20 has ~0.27M weights, got {total}"
        );
    }

    #[test]
    fn every_model_runs_any_input() {
        let dev = Device::flex();
        for (kind, c, h, w) in [
            (ModelKind::Convnet, 3, 32, 24),
            (ModelKind::Resnet32, 3, 16, 16),
            (ModelKind::Resnet18, 1, 28, 28),
        ] {
            let s = ModelSpec {
                kind,
                channels: c,
                height: h,
                width: w,
                classes: 7,
            };
            let m = build(&s, &dev).unwrap();
            let bits = vec![crate::quant::policy::LayerBits { w: 4, a: 4 }; m.layers.len()];
            let ctx = QuantCtx::new(Default::default(), &bits);
            let y = m
                .net
                .valid()
                .forward(Tensor::zeros([2, c, h, w], &dev), &ctx);
            assert_eq!(y.dims(), [2, 7], "{kind:?}");
        }
        let bad = ModelSpec {
            kind: ModelKind::Resnet18,
            channels: 1,
            height: 8,
            width: 8,
            classes: 10,
        };
        assert!(build(&bad, &dev).is_err());
    }
}
