//! The networks ccq quantizes: a [`GraphSpec`] (built in, or imported) run with
//! quantization-aware conv and linear layers.

use super::graph::{GraphSpec, OpSpec};
use super::layers::{
    BatchNorm, ConvBn, ConvShape, QConv, QLinear, QuantCtx, QuantParams, Visit, VisitMut,
};
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
    /// A graph imported from a user's model (ONNX); [`ModelSpec::graph`] holds it.
    Imported,
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
            ModelKind::Imported => "imported",
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// The graph of an imported model (`kind` is `imported`); built-in kinds build theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<GraphSpec>,
}

impl ModelSpec {
    /// A built-in architecture's spec.
    pub fn builtin(
        kind: ModelKind,
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
    ) -> Self {
        ModelSpec {
            kind,
            channels,
            height,
            width,
            classes,
            graph: None,
        }
    }

    /// The model's graph: the imported one, or the built-in architecture's.
    pub fn graph(&self) -> Result<GraphSpec> {
        match (&self.graph, self.kind) {
            (Some(g), ModelKind::Imported) => Ok(g.clone()),
            (None, ModelKind::Imported) => bail!("an imported model spec without its graph"),
            (Some(_), k) => bail!("a {} model spec that carries a graph", k.name()),
            (None, _) => super::builtin::graph(self),
        }
    }

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
            ModelKind::Imported => 1,
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

fn one() -> usize {
    1
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

/// A 1×1, one-channel conv description with `params` weights and `macs` MACs: the layer tests of
/// the cost model and the search use.
#[cfg(test)]
pub(crate) fn test_layer(name: &str, params: usize, macs: u64) -> LayerInfo {
    LayerInfo {
        name: name.into(),
        kind: LayerKind::Conv,
        in_channels: 1,
        out_channels: 1,
        kernel: 1,
        groups: 1,
        params,
        macs,
        float_params: 0,
    }
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
    /// Groups of a grouped (depthwise: `in_channels`) convolution; 1 otherwise.
    #[serde(default = "one")]
    pub groups: usize,
    /// Number of weights.
    pub params: usize,
    /// Multiply-accumulates per image at the configured input size.
    pub macs: u64,
    /// Float parameters that are not quantized weights: bias and the BatchNorm that follows.
    pub float_params: usize,
}

/// What a node computes, with its tensors.
#[derive(Debug)]
pub enum NodeOp {
    /// Quantizable convolution (+ BatchNorm).
    Conv(ConvBn),
    /// Quantizable linear layer over the flattened input.
    Linear(QLinear),
    /// A BatchNorm on its own.
    BatchNorm(BatchNorm),
    /// ReLU.
    Relu,
    /// Clamp to `[min, max]`.
    Clip(f64, f64),
    /// Sum of two values.
    Add,
    /// Max pooling: window, stride, padding, ceil mode.
    MaxPool(usize, usize, usize, bool),
    /// Average pooling: window, stride, padding, ceil mode, padded zeros counted.
    AvgPool(usize, usize, usize, bool, bool),
    /// Spatial mean.
    GlobalAvgPool,
    /// To `[batch, features]`.
    Flatten,
}

/// A node of a [`Network`].
#[derive(Debug)]
pub struct Node {
    /// Prefix of its tensors' names.
    pub key: String,
    /// Input values.
    pub inputs: Vec<usize>,
    /// What it computes.
    pub op: NodeOp,
}

/// A network whose every conv and linear layer is quantization-aware.
///
/// It runs a [`GraphSpec`]: value 0 is the input, value `i + 1` node `i`'s output. The
/// parameters are views into one flat buffer ([`Network::flat`]), so an optimiser updates them
/// all with a handful of kernels; BatchNorm statistics are separate buffers.
#[derive(Debug)]
pub struct Network {
    /// The nodes, in topological order.
    pub nodes: Vec<Node>,
    /// The value that holds the logits.
    pub output: usize,
    /// Per value, the last node that reads it (`usize::MAX`: the output).
    last_use: Vec<Option<usize>>,
    /// Restart points `(node position, value)`: see [`GraphSpec::cuts`].
    cuts: Vec<(usize, usize)>,
    /// Node position of each quantizable layer, in policy order.
    layer_nodes: Vec<usize>,
    /// Every parameter's values, concatenated in visiting order.
    pub flat: Tensor,
    /// The parameters in visiting order (views into `flat` that require gradients).
    pub params: Vec<Tensor>,
}

impl Network {
    /// A network for `graph` with freshly initialised weights (validate the graph first).
    pub fn new(graph: &GraphSpec, device: Device) -> Network {
        let mut index = 0;
        let mut layer_nodes = Vec::new();
        let nodes: Vec<Node> = graph
            .nodes
            .iter()
            .enumerate()
            .map(|(pos, n)| {
                let op = match n.op {
                    OpSpec::Conv {
                        in_channels,
                        out_channels,
                        kernel,
                        stride,
                        padding,
                        dilation,
                        groups,
                        bias,
                        bn,
                    } => {
                        let shape = ConvShape {
                            cin: in_channels,
                            cout: out_channels,
                            kernel,
                            stride,
                            padding,
                            dilation,
                            groups,
                        };
                        NodeOp::Conv(ConvBn::new(shape, bias, bn, index, device))
                    }
                    OpSpec::Linear {
                        in_features,
                        out_features,
                    } => NodeOp::Linear(QLinear::new(in_features, out_features, index, device)),
                    OpSpec::BatchNorm { channels } => {
                        NodeOp::BatchNorm(BatchNorm::new(channels, device))
                    }
                    OpSpec::Relu => NodeOp::Relu,
                    OpSpec::Clip { min, max } => NodeOp::Clip(min as f64, max as f64),
                    OpSpec::Add => NodeOp::Add,
                    OpSpec::MaxPool {
                        kernel,
                        stride,
                        padding,
                        ceil,
                    } => NodeOp::MaxPool(kernel, stride, padding, ceil),
                    OpSpec::AvgPool {
                        kernel,
                        stride,
                        padding,
                        ceil,
                        count_include_pad,
                    } => NodeOp::AvgPool(kernel, stride, padding, ceil, count_include_pad),
                    OpSpec::GlobalAvgPool => NodeOp::GlobalAvgPool,
                    OpSpec::Flatten => NodeOp::Flatten,
                };
                if n.op.is_layer() {
                    layer_nodes.push(pos);
                    index += 1;
                }
                Node {
                    key: n.key.clone(),
                    inputs: n.inputs.clone(),
                    op,
                }
            })
            .collect();
        let nonneg = graph.non_negative();
        let mut nodes: Vec<Node> = nodes;
        for n in &mut nodes {
            let signed = !nonneg[n.inputs[0]];
            match &mut n.op {
                NodeOp::Conv(c) => c.conv.quant.signed = signed,
                NodeOp::Linear(l) => l.quant.signed = signed,
                _ => {}
            }
        }
        let mut net = Network {
            nodes,
            output: graph.output,
            last_use: graph.last_uses(),
            cuts: graph.cuts(),
            layer_nodes,
            flat: Tensor::new(),
            params: Vec::new(),
        };
        net.flatten(device);
        net
    }

    /// Logits `[batch, classes]` for images `[batch, channels, h, w]`.
    pub fn forward(&self, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        self.forward_from(0, x, ctx)
    }

    /// Number of stages: the segments between restart points.
    pub fn stages(&self) -> usize {
        self.cuts.len()
    }

    /// The stage that holds quantizable layer `index`: the last restart point before it.
    pub fn stage_of(&self, index: usize) -> usize {
        let pos = self.layer_nodes[index];
        self.cuts.iter().rposition(|&(p, _)| p <= pos).unwrap_or(0)
    }

    /// Runs stages `stage..` on `x`, the input of stage `stage` (the image for stage 0).
    pub fn forward_from(&self, stage: usize, x: &Tensor, ctx: &QuantCtx) -> Tensor {
        let (pos, value) = self.cuts[stage];
        self.run(pos, value, x, ctx, &mut |_, _| {})
    }

    /// The input of every stage (index = stage; stage 0's is `x` itself), and the logits.
    pub fn stage_inputs(&self, x: &Tensor, ctx: &QuantCtx) -> (Vec<Tensor>, Tensor) {
        let mut inputs = vec![x.shallow_clone()];
        let mut next = 1;
        let logits = self.run(0, 0, x, ctx, &mut |pos, values| {
            if let Some(&(p, v)) = self.cuts.get(next)
                && p == pos
            {
                inputs.push(
                    values[v]
                        .as_ref()
                        .expect("a cut value is live")
                        .shallow_clone(),
                );
                next += 1;
            }
        });
        (inputs, logits)
    }

    /// Every value the forward pass computes (index = value; 0 is `x`).
    pub fn values(&self, x: &Tensor, ctx: &QuantCtx) -> Vec<Tensor> {
        let mut values: Vec<Option<Tensor>> = (0..=self.nodes.len()).map(|_| None).collect();
        values[0] = Some(x.shallow_clone());
        self.exec(0, &mut values, false, ctx, &mut |_, _| {});
        values
            .into_iter()
            .map(|v| v.expect("every value is kept"))
            .collect()
    }

    /// Runs nodes `start..` with value `value` set to `x`; `seen(pos, values)` is called before
    /// each node. A value is dropped after its last reader.
    fn run(
        &self,
        start: usize,
        value: usize,
        x: &Tensor,
        ctx: &QuantCtx,
        seen: &mut dyn FnMut(usize, &[Option<Tensor>]),
    ) -> Tensor {
        let mut values: Vec<Option<Tensor>> = (0..=self.nodes.len()).map(|_| None).collect();
        values[value] = Some(super::layers::preferred_layout(x));
        self.exec(start, &mut values, true, ctx, seen);
        values[self.output].take().expect("the output is computed")
    }

    /// Runs nodes `start..` over `values`, dropping each value after its last reader when
    /// `drop`.
    fn exec(
        &self,
        start: usize,
        values: &mut [Option<Tensor>],
        drop: bool,
        ctx: &QuantCtx,
        seen: &mut dyn FnMut(usize, &[Option<Tensor>]),
    ) {
        for (pos, node) in self.nodes.iter().enumerate().skip(start) {
            seen(pos, values);
            let arg = |k: usize| values[node.inputs[k]].as_ref().expect("a live input");
            let y = match &node.op {
                NodeOp::Conv(c) => c.forward(arg(0), ctx),
                NodeOp::Linear(l) => l.forward(&arg(0).flatten(1, -1), ctx),
                NodeOp::BatchNorm(bn) => bn.forward(arg(0), ctx.train, ctx.bn_momentum),
                NodeOp::Relu => arg(0).relu(),
                NodeOp::Clip(lo, hi) => arg(0).clamp(*lo, *hi),
                NodeOp::Add => arg(0) + arg(1),
                &NodeOp::MaxPool(k, s, p, ceil) => {
                    let (k, s, p) = (k as i64, s as i64, p as i64);
                    arg(0).max_pool2d([k, k], [s, s], [p, p], [1, 1], ceil)
                }
                &NodeOp::AvgPool(k, s, p, ceil, count) => {
                    let (k, s, p) = (k as i64, s as i64, p as i64);
                    arg(0).avg_pool2d([k, k], [s, s], [p, p], ceil, count, None::<i64>)
                }
                NodeOp::GlobalAvgPool => arg(0).adaptive_avg_pool2d([1, 1]),
                NodeOp::Flatten => arg(0).flatten(1, -1),
            };
            if drop {
                for &v in &node.inputs {
                    if self.last_use[v] == Some(pos) {
                        values[v] = None;
                    }
                }
            }
            values[pos + 1] = Some(y);
        }
    }

    /// The quantizable layers' ops, in policy order.
    pub fn layers(&self) -> impl Iterator<Item = &NodeOp> {
        self.layer_nodes.iter().map(|&p| &self.nodes[p].op)
    }

    /// Calls `f(index, quantizer params, weight as [out, rest])` for every quantizable layer.
    pub fn for_each_quant(&self, f: &mut dyn FnMut(usize, &QuantParams, Tensor)) {
        for (i, op) in self.layers().enumerate() {
            match op {
                NodeOp::Conv(c) => f(i, &c.conv.quant, c.conv.weight.flatten(1, -1)),
                NodeOp::Linear(l) => f(i, &l.quant, l.weight.shallow_clone()),
                _ => unreachable!("layer nodes are conv or linear"),
            }
        }
    }

    /// Every quantizable layer's weight tensor, in policy order.
    pub fn weights(&self) -> Vec<Tensor> {
        self.layers()
            .map(|op| match op {
                NodeOp::Conv(c) => c.conv.weight.shallow_clone(),
                NodeOp::Linear(l) => l.weight.shallow_clone(),
                _ => unreachable!("layer nodes are conv or linear"),
            })
            .collect()
    }

    /// Every quantizable layer's weights, flattened, in policy order.
    pub fn weights_host(&self) -> Vec<Vec<f32>> {
        self.weights().iter().map(crate::host::to_f32).collect()
    }

    /// Resets every BatchNorm's running statistics (mean 0, variance 1); false when the network
    /// has none.
    pub fn reset_batchnorm(&self) -> bool {
        let mut any = false;
        for bn in self.batchnorms_from(0) {
            bn.reset_statistics();
            any = true;
        }
        any
    }

    /// Every BatchNorm (a convolution's own or a node of its own) of the nodes from `pos` on, in
    /// graph order.
    fn batchnorms_from(&self, pos: usize) -> impl Iterator<Item = &BatchNorm> {
        self.nodes[pos..].iter().filter_map(|n| match &n.op {
            NodeOp::Conv(c) => c.bn.as_ref(),
            NodeOp::BatchNorm(bn) => Some(bn),
            _ => None,
        })
    }

    /// The running mean and variance of every BatchNorm that stage `stage` and the stages after
    /// it run ([`Network::forward_from`]), in a fixed order: views of the buffers the network
    /// uses (empty when there are none).
    pub fn batchnorm_buffers(&self, stage: usize) -> Vec<Tensor> {
        let (pos, _) = self.cuts[stage];
        self.batchnorms_from(pos)
            .flat_map(|bn| {
                [
                    bn.running_mean.shallow_clone(),
                    bn.running_var.shallow_clone(),
                ]
            })
            .collect()
    }

    /// Calls `f(name, tensor, is_parameter)` for every tensor, in a fixed order.
    pub fn visit(&self, f: &mut Visit) {
        for n in &self.nodes {
            match &n.op {
                NodeOp::Conv(c) => c.visit(&n.key, f),
                NodeOp::Linear(l) => l.visit(&n.key, f),
                NodeOp::BatchNorm(bn) => bn.visit(&n.key, f),
                _ => {}
            }
        }
    }

    fn visit_mut(&mut self, f: &mut VisitMut) {
        for n in &mut self.nodes {
            match &mut n.op {
                NodeOp::Conv(c) => c.visit_mut(&n.key, f),
                NodeOp::Linear(l) => l.visit_mut(&n.key, f),
                NodeOp::BatchNorm(bn) => bn.visit_mut(&n.key, f),
                _ => {}
            }
        }
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
        fn quant(q: &QuantParams) -> QuantParams {
            QuantParams {
                act_alpha: q.act_alpha.shallow_clone(),
                act_step: q.act_step.shallow_clone(),
                w_step: q.w_step.shallow_clone(),
                signed: q.signed,
            }
        }
        fn bn(b: &BatchNorm) -> BatchNorm {
            BatchNorm {
                gamma: b.gamma.shallow_clone(),
                beta: b.beta.shallow_clone(),
                running_mean: b.running_mean.shallow_clone(),
                running_var: b.running_var.shallow_clone(),
                epsilon: b.epsilon,
            }
        }
        let nodes = self
            .nodes
            .iter()
            .map(|n| Node {
                key: n.key.clone(),
                inputs: n.inputs.clone(),
                op: match &n.op {
                    NodeOp::Conv(c) => NodeOp::Conv(ConvBn {
                        conv: QConv {
                            weight: c.conv.weight.shallow_clone(),
                            bias: c.conv.bias.as_ref().map(Tensor::shallow_clone),
                            quant: quant(&c.conv.quant),
                            stride: c.conv.stride,
                            padding: c.conv.padding,
                            dilation: c.conv.dilation,
                            groups: c.conv.groups,
                            index: c.conv.index,
                        },
                        bn: c.bn.as_ref().map(bn),
                    }),
                    NodeOp::Linear(l) => NodeOp::Linear(QLinear {
                        weight: l.weight.shallow_clone(),
                        bias: l.bias.shallow_clone(),
                        quant: quant(&l.quant),
                        index: l.index,
                    }),
                    NodeOp::BatchNorm(b) => NodeOp::BatchNorm(bn(b)),
                    NodeOp::Relu => NodeOp::Relu,
                    &NodeOp::Clip(a, b) => NodeOp::Clip(a, b),
                    NodeOp::Add => NodeOp::Add,
                    &NodeOp::MaxPool(k, s, p, c) => NodeOp::MaxPool(k, s, p, c),
                    &NodeOp::AvgPool(k, s, p, c, i) => NodeOp::AvgPool(k, s, p, c, i),
                    NodeOp::GlobalAvgPool => NodeOp::GlobalAvgPool,
                    NodeOp::Flatten => NodeOp::Flatten,
                },
            })
            .collect();
        Network {
            nodes,
            output: self.output,
            last_use: self.last_use.clone(),
            cuts: self.cuts.clone(),
            layer_nodes: self.layer_nodes.clone(),
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
    /// The graph the network runs.
    pub graph: GraphSpec,
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

/// Builds a model for `spec` on `device` (weights freshly initialised from libtorch's generator,
/// which `tch::manual_seed` seeds).
pub fn build(spec: &ModelSpec, device: Device) -> Result<Model> {
    spec.validate()?;
    let graph = spec.graph()?;
    let layers = graph.layer_infos([spec.channels, spec.height, spec.width], spec.classes)?;
    let net = Network::new(&graph, device);
    Ok(Model {
        spec: spec.clone(),
        graph,
        net,
        layers,
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
            graph: None,
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
                graph: None,
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
            graph: None,
        };
        assert!(build(&bad, dev).is_err());
    }

    #[test]
    fn every_restart_point_gives_the_same_logits() {
        tch::manual_seed(5);
        let m = build(&spec(ModelKind::Resnet20), Device::Cpu).unwrap();
        // The image; before and after the stem's ReLU and each block's final ReLU (inside a
        // residual block two values are live, so there is no restart point there); before the
        // flatten and the fc.
        assert_eq!(m.net.stages(), 1 + 2 + 2 * 9 + 2);
        assert_eq!(m.net.stage_of(0), 0);
        assert_eq!(m.net.stage_of(1), 2, "block 1 starts after the stem's ReLU");
        assert_eq!(
            m.net.stage_of(m.layers.len() - 1),
            22,
            "fc runs last, on its own"
        );
        let bits = vec![crate::quant::policy::LayerBits { w: 4, a: 4 }; m.layers.len()];
        let ctx = QuantCtx::new(Default::default(), &bits);
        let x = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
        let (inputs, logits) = m.net.stage_inputs(&x, &ctx);
        assert_eq!(inputs.len(), m.net.stages());
        for (s, input) in inputs.iter().enumerate() {
            let y = m.net.forward_from(s, input, &ctx);
            assert!(y.equal(&logits), "stage {s}");
        }
        assert!(m.net.forward(&x, &ctx).equal(&logits));
    }

    #[test]
    fn layer_inputs_after_a_relu_are_unsigned() {
        let m = build(&spec(ModelKind::Resnet20), Device::Cpu).unwrap();
        let mut signed = Vec::new();
        m.net.for_each_quant(&mut |i, q, _| {
            if q.signed {
                signed.push(i)
            }
        });
        assert_eq!(
            signed,
            [0],
            "only the stem reads a signed (normalised) image"
        );
        let g = m.graph.clone();
        let nonneg = g.non_negative();
        let add = g
            .nodes
            .iter()
            .position(|n| n.op == crate::model::OpSpec::Add)
            .unwrap();
        assert!(
            !nonneg[add + 1],
            "conv + shortcut before the ReLU can be negative"
        );
        assert!(nonneg[add + 2], "after the block's ReLU");
    }
}
