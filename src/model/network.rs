//! The networks ccq quantizes: a compact ConvNet, CIFAR-style ResNet-20/32/56 and ResNet-18.

use super::layers::{ConvBn, QLinear, QuantCtx, QuantParams, Visit, VisitMut};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The architectures ccq builds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

impl crate::names::Named for ModelKind {
    const ALL: &'static [Self] = &[
        ModelKind::Convnet,
        ModelKind::Resnet20,
        ModelKind::Resnet32,
        ModelKind::Resnet56,
        ModelKind::Resnet18,
    ];
    const WHAT: &'static str = "model";
    fn name(&self) -> &'static str {
        ModelKind::name(self)
    }
}
crate::from_str_by_name!(ModelKind);

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

impl ModelSpec {
    /// Checks the input shape and class count are ones the architecture can be built for.
    pub fn validate(&self) -> Result<()> {
        if self.channels == 0 || self.classes < 2 || self.channels > 64 || self.classes > 100_000 {
            bail!(
                "model needs 1..64 input channels and 2..100000 classes (got {} channels, {} classes)",
                self.channels,
                self.classes
            );
        }
        let min_side = match self.kind {
            ModelKind::Convnet => 8,
            ModelKind::Resnet18 => 16,
            _ => 4,
        };
        if self.height < min_side
            || self.width < min_side
            || self.height > 4096
            || self.width > 4096
        {
            bail!(
                "{} needs inputs of {min_side}×{min_side} to 4096×4096 (got {}×{})",
                self.kind.name(),
                self.height,
                self.width
            );
        }
        Ok(())
    }
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
#[derive(Debug)]
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
    pub fn forward(&self, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        let y = self.conv1.forward(x, ctx).relu();
        let y = match &self.conv2 {
            Some(conv2) => {
                let y = conv2.forward(&y, ctx);
                let sc = match &self.shortcut {
                    Some(s) => s.forward(x, ctx),
                    None => x.shallow_clone(),
                };
                (y + sc).relu()
            }
            None => y,
        };
        pool(&y, self.pool)
    }

    /// The block's conv layers in policy order.
    pub fn convs(&self) -> Vec<&ConvBn> {
        let mut v = vec![&self.conv1];
        v.extend(self.conv2.iter());
        v.extend(self.shortcut.iter());
        v
    }

    fn visit(&self, prefix: &str, f: &mut Visit) {
        self.conv1.visit(&format!("{prefix}.conv1"), f);
        if let Some(c) = &self.conv2 {
            c.visit(&format!("{prefix}.conv2"), f);
        }
        if let Some(c) = &self.shortcut {
            c.visit(&format!("{prefix}.shortcut"), f);
        }
    }

    fn visit_mut(&mut self, prefix: &str, f: &mut VisitMut) {
        self.conv1.visit_mut(&format!("{prefix}.conv1"), f);
        if let Some(c) = &mut self.conv2 {
            c.visit_mut(&format!("{prefix}.conv2"), f);
        }
        if let Some(c) = &mut self.shortcut {
            c.visit_mut(&format!("{prefix}.shortcut"), f);
        }
    }
}

/// Max-pool by window code: 0 none, 2 = 2×2/2, 3 = 3×3/2 pad 1.
pub fn pool(x: &Tensor, window: usize) -> Tensor {
    match window {
        0 => x.shallow_clone(),
        2 => x.max_pool2d([2, 2], [2, 2], [0, 0], [1, 1], false),
        _ => x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false),
    }
}

/// A network whose every conv and linear layer is quantization-aware.
///
/// The parameters are views into one flat buffer ([`Network::flat`]), so an optimiser updates
/// them all with a handful of kernels; BatchNorm statistics are separate buffers.
#[derive(Debug)]
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
    /// Every parameter's values, concatenated in visiting order.
    pub flat: Tensor,
    /// The parameters in visiting order (views into `flat` that require gradients).
    pub params: Vec<Tensor>,
}

impl Network {
    /// Logits `[batch, classes]` for images `[batch, channels, h, w]`.
    pub fn forward(&self, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        self.forward_from(0, x, ctx)
    }

    /// Number of stages: the stem, every block, and the classifier head.
    pub fn stages(&self) -> usize {
        self.blocks.len() + 2
    }

    /// The stage that holds quantizable layer `index` (0: stem, 1..=B: blocks, B+1: head).
    pub fn stage_of(&self, index: usize) -> usize {
        if index == self.stem.conv.index {
            return 0;
        }
        for (b, blk) in self.blocks.iter().enumerate() {
            if blk.convs().iter().any(|c| c.conv.index == index) {
                return b + 1;
            }
        }
        self.blocks.len() + 1
    }

    /// Runs stages `stage..` on `x`, the input of stage `stage` (the image for stage 0).
    pub fn forward_from(&self, stage: usize, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        let mut x = if stage == 0 {
            pool(&self.stem.forward(x, ctx).relu(), self.stem_pool)
        } else {
            x.shallow_clone()
        };
        for b in self.blocks.iter().skip(stage.saturating_sub(1)) {
            x = b.forward(&x, ctx);
        }
        self.head(&x, ctx)
    }

    /// The input of every stage (index = stage; stage 0's is `x` itself), and the logits.
    pub fn stage_inputs(&self, x: &Tensor, ctx: &QuantCtx) -> (Vec<Tensor>, Tensor) {
        let mut inputs = vec![x.shallow_clone()];
        let mut h = pool(&self.stem.forward(x, ctx).relu(), self.stem_pool);
        for b in &self.blocks {
            inputs.push(h.shallow_clone());
            h = b.forward(&h, ctx);
        }
        inputs.push(h.shallow_clone());
        (inputs, self.head(&h, ctx))
    }

    fn head(&self, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        let x = if self.global_pool {
            x.adaptive_avg_pool2d([1, 1])
        } else {
            x.shallow_clone()
        };
        self.fc.forward(&x.flatten(1, -1), ctx)
    }
}

impl Network {
    /// The conv layers in policy order (the classifier is `fc`, last).
    pub fn convs(&self) -> Vec<&ConvBn> {
        let mut v = vec![&self.stem];
        for b in &self.blocks {
            v.extend(b.convs());
        }
        v
    }

    /// Calls `f(index, quantizer params, weight as [out, rest])` for every quantizable layer.
    pub fn for_each_quant(&self, f: &mut dyn FnMut(usize, &QuantParams, Tensor)) {
        for c in self.convs() {
            let w = &c.conv.weight;
            f(c.conv.index, &c.conv.quant, w.flatten(1, -1));
        }
        f(
            self.fc.index,
            &self.fc.quant,
            self.fc.weight.shallow_clone(),
        );
    }

    /// Every quantizable layer's weight tensor, in policy order.
    pub fn weights(&self) -> Vec<Tensor> {
        let mut v: Vec<Tensor> = self
            .convs()
            .iter()
            .map(|c| c.conv.weight.shallow_clone())
            .collect();
        v.push(self.fc.weight.shallow_clone());
        v
    }

    /// Every quantizable layer's weights, flattened, in policy order.
    pub fn weights_host(&self) -> Vec<Vec<f32>> {
        self.weights().iter().map(crate::host::to_f32).collect()
    }

    /// Calls `f(name, tensor, is_parameter)` for every tensor, in a fixed order.
    pub fn visit(&self, f: &mut Visit) {
        self.stem.visit("stem", f);
        for (i, b) in self.blocks.iter().enumerate() {
            b.visit(&format!("blocks.{i}"), f);
        }
        self.fc.visit("fc", f);
    }

    fn visit_mut(&mut self, f: &mut VisitMut) {
        self.stem.visit_mut("stem", f);
        for (i, b) in self.blocks.iter_mut().enumerate() {
            b.visit_mut(&format!("blocks.{i}"), f);
        }
        self.fc.visit_mut("fc", f);
    }

    /// The device the network lives on.
    pub fn device(&self) -> Device {
        self.flat.device()
    }

    /// Moves every parameter into one fresh flat buffer on `device` (a copy: nothing is shared
    /// with the tensors held before) and makes them gradient-tracking views into it. Buffers are
    /// copied to `device` as well.
    pub fn flatten(&mut self, device: Device) {
        let mut total = 0i64;
        self.visit(&mut |_, t, is_param| {
            if is_param {
                total += t.numel() as i64;
            }
        });
        let flat = Tensor::zeros([total], (Kind::Float, device));
        let mut params = Vec::new();
        let mut offset = 0i64;
        tch::no_grad(|| {
            self.visit_mut(&mut |_, t, is_param| {
                if is_param {
                    let n = t.numel() as i64;
                    let mut slot = flat.narrow(0, offset, n).view(t.size().as_slice());
                    slot.copy_(t);
                    let p = slot.detach().set_requires_grad(true);
                    params.push(p.shallow_clone());
                    *t = p;
                    offset += n;
                } else {
                    *t = t.to_device(device).copy();
                }
            });
        });
        self.flat = flat;
        self.params = params;
    }

    /// A deep copy on `device` (parameters, buffers and flat storage all new).
    pub fn copy_to(&self, device: Device) -> Network {
        let mut net = self.shallow();
        net.flatten(device);
        net
    }

    fn shallow(&self) -> Network {
        let conv = |c: &ConvBn| ConvBn {
            conv: super::layers::QConv {
                weight: c.conv.weight.shallow_clone(),
                quant: quant(&c.conv.quant),
                stride: c.conv.stride,
                padding: c.conv.padding,
                index: c.conv.index,
            },
            bn: super::layers::BatchNorm {
                gamma: c.bn.gamma.shallow_clone(),
                beta: c.bn.beta.shallow_clone(),
                running_mean: c.bn.running_mean.shallow_clone(),
                running_var: c.bn.running_var.shallow_clone(),
                epsilon: c.bn.epsilon,
            },
        };
        fn quant(q: &QuantParams) -> QuantParams {
            QuantParams {
                act_alpha: q.act_alpha.shallow_clone(),
                act_step: q.act_step.shallow_clone(),
                w_step: q.w_step.shallow_clone(),
            }
        }
        Network {
            stem: conv(&self.stem),
            stem_pool: self.stem_pool,
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    conv1: conv(&b.conv1),
                    conv2: b.conv2.as_ref().map(conv),
                    shortcut: b.shortcut.as_ref().map(conv),
                    pool: b.pool,
                })
                .collect(),
            global_pool: self.global_pool,
            fc: QLinear {
                weight: self.fc.weight.shallow_clone(),
                bias: self.fc.bias.shallow_clone(),
                quant: quant(&self.fc.quant),
                index: self.fc.index,
            },
            flat: self.flat.shallow_clone(),
            params: self.params.iter().map(Tensor::shallow_clone).collect(),
        }
    }
}

impl Clone for Network {
    fn clone(&self) -> Self {
        self.copy_to(self.device())
    }
}

/// A network with its layer table.
#[derive(Clone)]
pub struct Model {
    /// What was built.
    pub spec: ModelSpec,
    /// The network.
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
struct Builder {
    device: Device,
    c: usize,
    h: usize,
    w: usize,
    layers: Vec<LayerInfo>,
}

impl Builder {
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

/// Builds a model for `spec` on `device` (weights freshly initialised from libtorch's generator,
/// which `tch::manual_seed` seeds).
pub fn build(spec: &ModelSpec, device: Device) -> Result<Model> {
    spec.validate()?;
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
                flat: Tensor::new(),
                params: Vec::new(),
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
                flat: Tensor::new(),
                params: Vec::new(),
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
                flat: Tensor::new(),
                params: Vec::new(),
            }
        }
    };
    let mut net = net;
    net.flatten(device);
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
        let m = build(&spec(ModelKind::Resnet20), Device::Cpu).unwrap();
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
        let dev = Device::Cpu;
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
            let m = build(&s, dev).unwrap();
            let bits = vec![crate::quant::policy::LayerBits { w: 4, a: 4 }; m.layers.len()];
            let ctx = QuantCtx::new(Default::default(), &bits);
            let x = Tensor::zeros([2, c as i64, h as i64, w as i64], (Kind::Float, dev));
            let y = m.net.forward(&x, &ctx);
            assert_eq!(y.size(), [2, 7], "{kind:?}");
        }
        let bad = ModelSpec {
            kind: ModelKind::Resnet18,
            channels: 1,
            height: 8,
            width: 8,
            classes: 10,
        };
        assert!(build(&bad, dev).is_err());
    }
}
