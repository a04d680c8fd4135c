//! The one model description: a graph of quantizable conv and linear layers and the float ops
//! between them. The built-in architectures ([`super::builtin`]) and imported ONNX models
//! ([`super::onnx_import`]) both produce it, and [`super::Network`] runs it.
//!
//! Values are numbered: value 0 is the input image, value `i + 1` is node `i`'s output. Nodes are
//! in topological order, and the conv and linear nodes, in that order, are the policy's layers.

use super::network::{LayerInfo, LayerKind};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One operation of a model graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OpSpec {
    /// Quantizable 2D convolution (square kernel; stride, padding and dilation the same on both
    /// axes), grouped or not, optionally with a bias and with a BatchNorm after it.
    Conv {
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
        /// Dilation.
        dilation: usize,
        /// Groups (`in_channels` for a depthwise convolution).
        groups: usize,
        /// A float bias is added.
        bias: bool,
        /// A BatchNorm follows.
        bn: bool,
    },
    /// Quantizable fully connected layer over the flattened input, with a float bias.
    Linear {
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// A BatchNorm that does not follow a convolution.
    BatchNorm {
        /// Channels.
        channels: usize,
    },
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, min), max)` (ReLU6 is `Clip` 0..6).
    Clip {
        /// Lower bound.
        min: f32,
        /// Upper bound.
        max: f32,
    },
    /// Element-wise sum of two values of the same shape.
    Add,
    /// Max pooling.
    MaxPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Implicit padding (−∞) on each side.
        padding: usize,
        /// Output size rounded up rather than down.
        ceil: bool,
    },
    /// Average pooling.
    AvgPool {
        /// Window.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
        /// Output size rounded up rather than down.
        ceil: bool,
        /// Padded zeros count in the divisor.
        count_include_pad: bool,
    },
    /// Mean over the spatial axes, to `[C, 1, 1]`.
    GlobalAvgPool,
    /// To a vector of features.
    Flatten,
}

impl OpSpec {
    /// Whether this op is a quantizable layer (a policy entry).
    pub fn is_layer(&self) -> bool {
        matches!(self, OpSpec::Conv { .. } | OpSpec::Linear { .. })
    }

    /// How many inputs the op takes.
    pub fn arity(&self) -> usize {
        if *self == OpSpec::Add { 2 } else { 1 }
    }
}

/// One node: an op, its inputs and names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Display name; for a layer, its policy name (unique in the graph).
    pub name: String,
    /// Prefix of the node's tensors in checkpoints (unique in the graph).
    pub key: String,
    /// What it computes.
    pub op: OpSpec,
    /// Input values (0: the image; `i + 1`: node `i`'s output).
    pub inputs: Vec<usize>,
}

impl NodeSpec {
    /// The shape of this node's output (it is node `i`), given the shapes of values `0..=i`.
    pub fn out_shape(&self, i: usize, shapes: &[Shape]) -> Result<Shape> {
        let n = self;
        let what = || format!("node {i} `{}`", n.name);
        if n.inputs.len() != n.op.arity() || n.inputs.iter().any(|&v| v > i || v >= shapes.len()) {
            bail!("{}: inputs {:?} are not earlier values", what(), n.inputs);
        }
        let x = &shapes[n.inputs[0]];
        let spatial = |x: &Shape| -> Result<(usize, usize, usize)> {
            match x[..] {
                [c, h, w] => Ok((c, h, w)),
                _ => bail!("{}: needs a [C, H, W] input, got {x:?}", what()),
            }
        };
        Ok(match &n.op {
            &OpSpec::Conv {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
                dilation,
                groups,
                ..
            } => {
                let (c, h, w) = spatial(x)?;
                if c != in_channels
                    || groups == 0
                    || in_channels % groups != 0
                    || out_channels % groups != 0
                    || kernel == 0
                    || dilation == 0
                {
                    bail!(
                        "{}: a conv of {in_channels}→{out_channels} channels in {groups} groups, kernel {kernel}, dilation {dilation} cannot take {x:?}",
                        what()
                    );
                }
                let win = |n| window_out(n, kernel, stride, padding, dilation, false);
                match (win(h), win(w)) {
                    (Some(oh), Some(ow)) => vec![out_channels, oh, ow],
                    _ => bail!("{}: the input {x:?} is smaller than the kernel", what()),
                }
            }
            &OpSpec::Linear {
                in_features,
                out_features,
            } => {
                let numel: usize = x.iter().product();
                if numel != in_features {
                    bail!(
                        "{}: a linear layer of {in_features} inputs cannot take {x:?}",
                        what()
                    );
                }
                vec![out_features]
            }
            &OpSpec::BatchNorm { channels } => {
                if x.first() != Some(&channels) {
                    bail!(
                        "{}: a BatchNorm of {channels} channels cannot take {x:?}",
                        what()
                    );
                }
                x.clone()
            }
            OpSpec::Relu | OpSpec::Clip { .. } => x.clone(),
            OpSpec::Add => {
                if shapes[n.inputs[1]] != *x {
                    bail!(
                        "{}: cannot add {x:?} and {:?} (no broadcasting)",
                        what(),
                        shapes[n.inputs[1]]
                    );
                }
                x.clone()
            }
            &OpSpec::MaxPool {
                kernel,
                stride,
                padding,
                ceil,
            }
            | &OpSpec::AvgPool {
                kernel,
                stride,
                padding,
                ceil,
                ..
            } => {
                let (c, h, w) = spatial(x)?;
                if kernel == 0 || 2 * padding > kernel {
                    bail!("{}: pooling window {kernel} with padding {padding}", what());
                }
                let win = |n| window_out(n, kernel, stride, padding, 1, ceil);
                match (win(h), win(w)) {
                    (Some(oh), Some(ow)) => vec![c, oh, ow],
                    _ => bail!("{}: the input {x:?} is smaller than the window", what()),
                }
            }
            OpSpec::GlobalAvgPool => {
                let (c, _, _) = spatial(x)?;
                vec![c, 1, 1]
            }
            OpSpec::Flatten => vec![x.iter().product()],
        })
    }
}

/// A model graph.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    /// Nodes in topological order.
    pub nodes: Vec<NodeSpec>,
    /// The value that holds the logits.
    pub output: usize,
    /// An imported model's input and output names, kept for the export back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<GraphIo>,
}

/// The names an imported graph's input and output had in the user's file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphIo {
    /// The input (normalised images, `[batch, C, H, W]`).
    pub input: String,
    /// The output (logits, `[batch, classes]`).
    pub output: String,
}

/// Shape of a value without the batch axis: `[C, H, W]` or `[features]`.
pub type Shape = Vec<usize>;

/// Output size of a window of `k` (dilated by `d`) sliding with stride `s` over `n` + 2`p`.
pub fn window_out(n: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Option<usize> {
    let span = d * (k - 1) + 1;
    let padded = n + 2 * p;
    if padded < span || s == 0 {
        return None;
    }
    let steps = padded - span;
    let mut out = if ceil { steps.div_ceil(s) } else { steps / s } + 1;
    // As PyTorch: with ceil, the last window must start inside the input or left padding.
    if ceil && (out - 1) * s >= n + p {
        out -= 1;
    }
    Some(out)
}

impl GraphSpec {
    /// Checks the wiring and infers every value's shape for a `[c, h, w]` input; the output
    /// must be `[classes]`.
    pub fn shapes(&self, input: [usize; 3], classes: usize) -> Result<Vec<Shape>> {
        let mut shapes: Vec<Shape> = vec![input.to_vec()];
        let mut names = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.op.is_layer() && !names.insert(n.name.as_str()) {
                bail!("node {i} `{}`: layer name used twice", n.name);
            }
            if !keys.insert(n.key.as_str()) {
                bail!("node {i} `{}`: key `{}` used twice", n.name, n.key);
            }
            shapes.push(n.out_shape(i, &shapes)?);
        }
        match shapes.get(self.output) {
            Some(s) if *s == [classes] => Ok(shapes),
            Some(s) => bail!("the output value has shape {s:?}, not [{classes}] logits"),
            None => bail!("the output value {} does not exist", self.output),
        }
    }

    /// The quantizable layers, in policy order, with their costs at a `[c, h, w]` input.
    pub fn layer_infos(&self, input: [usize; 3], classes: usize) -> Result<Vec<LayerInfo>> {
        let shapes = self.shapes(input, classes)?;
        let mut layers = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let out: usize = shapes[i + 1].iter().product();
            match n.op {
                OpSpec::Conv {
                    in_channels,
                    out_channels,
                    kernel,
                    groups,
                    bias,
                    bn,
                    ..
                } => {
                    let params = out_channels * (in_channels / groups) * kernel * kernel;
                    let spatial = out / out_channels;
                    layers.push(LayerInfo {
                        name: n.name.clone(),
                        kind: LayerKind::Conv,
                        in_channels,
                        out_channels,
                        kernel,
                        groups,
                        params,
                        macs: (spatial * params) as u64,
                        // Folded at export: a BatchNorm (with any bias) is a multiplier and a shift.
                        float_params: out_channels * if bn { 2 } else { usize::from(bias) },
                    })
                }
                OpSpec::Linear {
                    in_features,
                    out_features,
                } => layers.push(LayerInfo {
                    name: n.name.clone(),
                    kind: LayerKind::Linear,
                    in_channels: in_features,
                    out_channels: out_features,
                    kernel: 1,
                    groups: 1,
                    params: in_features * out_features,
                    macs: (in_features * out_features) as u64,
                    float_params: out_features,
                }),
                _ => {}
            }
        }
        if layers.is_empty() {
            bail!("the graph has no conv or linear layer to quantize");
        }
        Ok(layers)
    }

    /// For each value, whether it is never negative (after a ReLU, a Clip from ≥ 0, pooling or a
    /// sum of such values). The image is taken as signed (it is normalised).
    pub fn non_negative(&self) -> Vec<bool> {
        let mut nonneg = vec![false];
        for n in &self.nodes {
            let arg = |k: usize| nonneg[n.inputs[k]];
            let v = match n.op {
                OpSpec::Relu => true,
                OpSpec::Clip { min, .. } => min >= 0.0,
                OpSpec::MaxPool { .. }
                | OpSpec::AvgPool { .. }
                | OpSpec::GlobalAvgPool
                | OpSpec::Flatten => arg(0),
                OpSpec::Add => arg(0) && arg(1),
                OpSpec::Conv { .. } | OpSpec::Linear { .. } | OpSpec::BatchNorm { .. } => false,
            };
            nonneg.push(v);
        }
        nonneg
    }

    /// For each value, the index of the last node that reads it (`usize::MAX` for the output;
    /// `None` if nothing reads it).
    pub fn last_uses(&self) -> Vec<Option<usize>> {
        let mut last = vec![None; self.nodes.len() + 1];
        for (i, n) in self.nodes.iter().enumerate() {
            for &v in &n.inputs {
                last[v] = Some(i);
            }
        }
        last[self.output] = Some(usize::MAX);
        last
    }

    /// The cut points: positions `p` (node index) before which exactly one computed value is
    /// still needed, with that value. Everything from `p` on depends on that value alone, so a
    /// run can restart there. Position 0 (the image) is always first.
    pub fn cuts(&self) -> Vec<(usize, usize)> {
        let last = self.last_uses();
        let mut cuts = Vec::new();
        for p in 0..self.nodes.len() {
            let live: Vec<usize> = (0..=p)
                .filter(|&v| last[v].is_some_and(|l| l >= p))
                .collect();
            if let [v] = live[..] {
                cuts.push((p, v));
            }
        }
        cuts
    }
}
