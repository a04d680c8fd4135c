//! ONNX import: a user's trained CNN (opsets 11–21) as a [`GraphSpec`] with its weights, decoded
//! with prost from the official `onnx.proto` messages ([`crate::onnx_proto`]).
//!
//! Every `Conv`, `Gemm` and `MatMul` becomes a quantizable layer; a `BatchNormalization` that
//! reads a conv's output (and nothing else does) joins that conv; `Identity`, `Dropout` and
//! `Constant` disappear. Anything else is an error that names the node.

use super::graph::{GraphIo, GraphSpec, NodeSpec, OpSpec, Shape, window_out};
use super::network::{Model, ModelKind, ModelSpec, build};
use crate::onnx_proto::tensor_proto::DataType;
use crate::onnx_proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, tensor_shape_proto::dimension,
    type_proto,
};
use anyhow::{Context, Result, anyhow, bail};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use tch::{Device, Tensor};

/// The ops the importer reads.
pub const SUPPORTED_OPS: &[&str] = &[
    "Conv",
    "BatchNormalization",
    "Relu",
    "Clip",
    "Add",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "Flatten",
    "Reshape",
    "Gemm",
    "MatMul",
    "Identity",
    "Constant",
    "Dropout",
    "Cast",
];

/// The default-domain opsets the importer reads.
pub const OPSETS: std::ops::RangeInclusive<i64> = 11..=21;

/// An imported model and what its file says about its interface.
pub struct Imported {
    /// The model, weights loaded.
    pub model: Model,
    /// The graph input's name.
    pub input_name: String,
    /// The graph output's name.
    pub output_name: String,
    /// The file's `metadata_props`.
    pub metadata: BTreeMap<String, String>,
}

/// A float constant: dims and values.
#[derive(Clone, Debug)]
struct Const {
    dims: Vec<usize>,
    data: Vec<f32>,
}

/// What an ONNX tensor name stands for while importing.
#[derive(Clone, Debug)]
enum Src {
    /// A value of the graph being built.
    Value(usize),
    /// A constant (initializer or `Constant` output).
    Const(Const),
}

/// Reads `path` as an ONNX model and builds it on `device`.
pub fn import(path: &Path, device: Device) -> Result<Imported> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let proto = ModelProto::decode(bytes.as_slice())
        .map_err(|e| anyhow!("{}: not an ONNX model ({e})", path.display()))?;
    from_proto(&proto)
        .map_err(|e| anyhow!("{}: {e:#}", path.display()))
        .and_then(|(spec, tensors, input_name, output_name)| {
            let model = build(&spec, device).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
            load_tensors(&model, tensors).map_err(|e| anyhow!("{}: {e:#}", path.display()))?;
            let metadata = proto
                .metadata_props
                .iter()
                .filter_map(|p| Some((p.key.clone()?, p.value.clone().unwrap_or_default())))
                .collect();
            Ok(Imported {
                model,
                input_name,
                output_name,
                metadata,
            })
        })
}

/// Tensors of the imported model by checkpoint name.
type Tensors = Vec<(String, Const)>;

fn from_proto(proto: &ModelProto) -> Result<(ModelSpec, Tensors, String, String)> {
    let opset = proto
        .opset_import
        .iter()
        .find(|o| matches!(o.domain.as_deref(), None | Some("") | Some("ai.onnx")))
        .and_then(|o| o.version)
        .ok_or_else(|| anyhow!("no default-domain opset in opset_import"))?;
    if !OPSETS.contains(&opset) {
        bail!(
            "opset {opset} is outside the supported {}–{}; re-export with an opset in that range",
            OPSETS.start(),
            OPSETS.end()
        );
    }
    let g = proto
        .graph
        .as_ref()
        .ok_or_else(|| anyhow!("the model has no graph"))?;
    let mut b = Importer::new(g)?;
    for (i, node) in g.node.iter().enumerate() {
        b.node(i, node).map_err(|e| {
            anyhow!(
                "node `{}` ({}): {e:#}",
                node.name.as_deref().unwrap_or("unnamed"),
                node.op_type.as_deref().unwrap_or("?")
            )
        })?;
    }
    let [out] = &g.output[..] else {
        bail!(
            "the graph has {} outputs; ccq imports classifiers with one logits output",
            g.output.len()
        );
    };
    let output_name = out.name.clone().unwrap_or_default();
    let output = match b.srcs.get(&output_name) {
        Some(Src::Value(v)) => *v,
        _ => bail!("the output `{output_name}` is not computed from the input"),
    };
    let classes = match b.shapes[output][..] {
        [c] => c,
        ref s => {
            bail!("the output `{output_name}` has shape {s:?}; ccq needs [batch, classes] logits")
        }
    };
    let [c, h, w] = b.shapes[0][..] else {
        unreachable!("the input shape is checked")
    };
    let graph = GraphSpec {
        nodes: b.nodes,
        output,
        io: Some(GraphIo {
            input: b.input_name.clone(),
            output: output_name.clone(),
        }),
    };
    let spec = ModelSpec {
        kind: ModelKind::Imported,
        channels: c,
        height: h,
        width: w,
        classes,
        graph: Some(graph),
    };
    Ok((spec, b.tensors, b.input_name, output_name))
}

struct Importer {
    srcs: HashMap<String, Src>,
    nodes: Vec<NodeSpec>,
    shapes: Vec<Shape>,
    tensors: Tensors,
    /// How many nodes read each tensor name.
    readers: HashMap<String, usize>,
    /// Value → the linear node that produced it without a bias yet (MatMul).
    bias_pending: HashSet<usize>,
    names: HashSet<String>,
    input_name: String,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute
        .iter()
        .find(|a| a.name.as_deref() == Some(name))
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

/// One value repeated on every axis (`what` names it in the error).
fn same(v: &[i64], what: &str) -> Result<usize> {
    match v {
        [] => bail!("empty {what}"),
        [first, rest @ ..] if rest.iter().all(|x| x == first) && *first >= 0 => Ok(*first as usize),
        _ => bail!("{what} {v:?} differ between axes; ccq supports the same value on both"),
    }
}

/// Decodes a float (or integer, converted) tensor.
fn decode(t: &TensorProto) -> Result<Const> {
    let name = t.name.as_deref().unwrap_or("?");
    if !t.external_data.is_empty() {
        bail!("tensor `{name}` is stored outside the file (external data); re-export it inline");
    }
    let dims: Vec<usize> = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| anyhow!("tensor `{name}`: dimension {d}")))
        .collect::<Result<_>>()?;
    let n: usize = dims.iter().product();
    let raw = t.raw_data.as_deref().unwrap_or(&[]);
    let dt = t.data_type.unwrap_or(0);
    let data: Vec<f32> = if dt == DataType::Float as i32 {
        if raw.is_empty() {
            t.float_data.clone()
        } else {
            raw.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect()
        }
    } else if dt == DataType::Int64 as i32 {
        if raw.is_empty() {
            t.int64_data.iter().map(|&v| v as f32).collect()
        } else {
            raw.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect()
        }
    } else if dt == DataType::Double as i32 {
        if raw.is_empty() {
            t.double_data.iter().map(|&v| v as f32).collect()
        } else {
            raw.chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
                .collect()
        }
    } else {
        bail!("tensor `{name}` has data type {dt}; ccq reads float, double and int64 tensors");
    };
    if data.len() != n {
        bail!(
            "tensor `{name}` holds {} values for dims {dims:?}",
            data.len()
        );
    }
    if data.iter().any(|v| !v.is_finite()) {
        bail!("tensor `{name}` holds NaN or infinite values");
    }
    Ok(Const { dims, data })
}

impl Importer {
    fn new(g: &GraphProto) -> Result<Importer> {
        let mut srcs = HashMap::new();
        for t in &g.initializer {
            let name = t.name.clone().unwrap_or_default();
            srcs.insert(name, Src::Const(decode(t)?));
        }
        let inputs: Vec<_> = g
            .input
            .iter()
            .filter(|i| !srcs.contains_key(i.name.as_deref().unwrap_or("")))
            .collect();
        let [input] = inputs[..] else {
            bail!(
                "the graph has {} inputs besides its weights; ccq imports models with one image input",
                inputs.len()
            );
        };
        let input_name = input.name.clone().unwrap_or_default();
        let dims: Vec<Option<i64>> = match input.r#type.as_ref().and_then(|t| t.value.as_ref()) {
            Some(type_proto::Value::TensorType(t)) => t
                .shape
                .as_ref()
                .map(|s| {
                    s.dim
                        .iter()
                        .map(|d| match d.value {
                            Some(dimension::Value::DimValue(v)) => Some(v),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
            _ => bail!("the input `{input_name}` is not a tensor"),
        };
        let shape = match dims[..] {
            [_, Some(c), Some(h), Some(w)] if c > 0 && h > 0 && w > 0 => {
                vec![c as usize, h as usize, w as usize]
            }
            _ => bail!(
                "the input `{input_name}` has shape {dims:?}; ccq needs [batch, C, H, W] with fixed C, H and W"
            ),
        };
        srcs.insert(input_name.clone(), Src::Value(0));
        let mut readers = HashMap::new();
        for n in &g.node {
            for i in &n.input {
                *readers.entry(i.clone()).or_insert(0) += 1;
            }
        }
        for o in &g.output {
            *readers
                .entry(o.name.clone().unwrap_or_default())
                .or_insert(0) += 1;
        }
        Ok(Importer {
            srcs,
            nodes: Vec::new(),
            shapes: vec![shape],
            tensors: Vec::new(),
            readers,
            bias_pending: HashSet::new(),
            names: HashSet::new(),
            input_name,
        })
    }

    fn src(&self, name: &str) -> Result<&Src> {
        self.srcs
            .get(name)
            .ok_or_else(|| anyhow!("input `{name}` is not defined before this node"))
    }

    fn value(&self, node: &NodeProto, k: usize) -> Result<usize> {
        let name = node.input.get(k).map(String::as_str).unwrap_or("");
        match self.src(name)? {
            Src::Value(v) => Ok(*v),
            Src::Const(_) => {
                bail!("input `{name}` is a constant; ccq needs it computed from the image")
            }
        }
    }

    fn constant(&self, node: &NodeProto, k: usize) -> Result<Option<Const>> {
        match node.input.get(k).map(String::as_str) {
            None | Some("") => Ok(None),
            Some(name) => match self.src(name)? {
                Src::Const(c) => Ok(Some(c.clone())),
                Src::Value(_) => bail!("input `{name}` must be a constant (an initializer)"),
            },
        }
    }

    fn output(&mut self, node: &NodeProto, src: Src) -> Result<()> {
        let name = node
            .output
            .first()
            .ok_or_else(|| anyhow!("the node has no output"))?;
        for extra in node.output.iter().skip(1) {
            if !extra.is_empty() && self.readers.get(extra).copied().unwrap_or(0) > 0 {
                bail!("its second output `{extra}` is used; ccq supports only the first");
            }
        }
        self.srcs.insert(name.clone(), src);
        Ok(())
    }

    /// A unique, stable layer name: the weight's name without `.weight`, else the node's path.
    fn layer_name(&mut self, node: &NodeProto, weight: Option<&str>, i: usize) -> String {
        let from_weight = weight
            .filter(|w| !w.starts_with("onnx::") && w.ends_with(".weight"))
            .map(|w| w.trim_end_matches(".weight").to_string());
        let from_node = node.name.as_deref().filter(|n| !n.is_empty()).map(|n| {
            let op = node.op_type.as_deref().unwrap_or("");
            let parts: Vec<&str> = n
                .trim_start_matches('/')
                .split('/')
                .filter(|p| !p.is_empty() && *p != op)
                .collect();
            // PyTorch paths repeat the parent: `/layer1/layer1.0/conv1` → `layer1.0.conv1`.
            let kept: Vec<&str> = parts
                .iter()
                .enumerate()
                .filter(|(k, p)| {
                    parts
                        .get(k + 1)
                        .is_none_or(|next| !next.starts_with(&format!("{p}.")))
                })
                .map(|(_, p)| *p)
                .collect();
            kept.join(".")
        });
        let base = from_weight
            .or(from_node.filter(|n| !n.is_empty()))
            .unwrap_or_else(|| {
                format!(
                    "{}{i}",
                    node.op_type.as_deref().unwrap_or("layer").to_lowercase()
                )
            });
        let mut name = base.clone();
        let mut k = 2;
        while !self.names.insert(name.clone()) {
            name = format!("{base}_{k}");
            k += 1;
        }
        name
    }

    fn push(&mut self, name: String, op: OpSpec, inputs: Vec<usize>) -> Result<usize> {
        let i = self.nodes.len();
        let node = NodeSpec {
            name,
            key: format!("n{i}"),
            op,
            inputs,
        };
        let shape = node.out_shape(i, &self.shapes)?;
        self.nodes.push(node);
        self.shapes.push(shape);
        Ok(i + 1)
    }

    fn node(&mut self, i: usize, node: &NodeProto) -> Result<()> {
        let op = node.op_type.as_deref().unwrap_or("");
        if !matches!(node.domain.as_deref(), None | Some("") | Some("ai.onnx")) {
            bail!(
                "domain `{}` is not ONNX's default domain",
                node.domain.as_deref().unwrap_or("")
            );
        }
        let plain = |name: &str| format!("{}{i}", name.to_lowercase());
        match op {
            "Identity" | "Dropout" => {
                let src = self
                    .src(node.input.first().map(String::as_str).unwrap_or(""))?
                    .clone();
                if op == "Dropout" && attr_i(node, "training_mode", 0) != 0 {
                    bail!("Dropout in training mode");
                }
                self.output(node, src)
            }
            "Cast" => {
                // PyTorch casts Clip's bounds; a cast to float of a float value changes nothing.
                let src = self
                    .src(node.input.first().map(String::as_str).unwrap_or(""))?
                    .clone();
                let to = attr_i(node, "to", 0);
                if matches!(src, Src::Value(_)) && to != DataType::Float as i64 {
                    bail!("a Cast of the image's values to data type {to}; ccq computes in float");
                }
                self.output(node, src)
            }
            "Constant" => {
                let t = attr(node, "value")
                    .and_then(|a| a.t.as_ref())
                    .map(decode)
                    .transpose()?;
                let c = match t {
                    Some(c) => c,
                    None => {
                        if let Some(v) = attr(node, "value_float").and_then(|a| a.f) {
                            Const {
                                dims: vec![],
                                data: vec![v],
                            }
                        } else if let Some(v) = attr(node, "value_int").and_then(|a| a.i) {
                            Const {
                                dims: vec![],
                                data: vec![v as f32],
                            }
                        } else if let Some(a) = attr(node, "value_ints") {
                            Const {
                                dims: vec![a.ints.len()],
                                data: a.ints.iter().map(|&v| v as f32).collect(),
                            }
                        } else if let Some(a) = attr(node, "value_floats") {
                            Const {
                                dims: vec![a.floats.len()],
                                data: a.floats.clone(),
                            }
                        } else {
                            bail!("a Constant without a tensor, float or int value");
                        }
                    }
                };
                self.output(node, Src::Const(c))
            }
            "Conv" => self.conv(i, node),
            "BatchNormalization" => self.batch_norm(i, node),
            "Relu" => {
                let x = self.value(node, 0)?;
                let v = self.push(plain(op), OpSpec::Relu, vec![x])?;
                self.output(node, Src::Value(v))
            }
            "Clip" => {
                let x = self.value(node, 0)?;
                let scalar = |c: Option<Const>| -> Result<Option<f32>> {
                    match c {
                        None => Ok(None),
                        Some(c) if c.data.len() == 1 => Ok(Some(c.data[0])),
                        Some(c) => bail!("a Clip bound of {} values", c.data.len()),
                    }
                };
                let min = scalar(self.constant(node, 1)?)?
                    .or(attr(node, "min").and_then(|a| a.f))
                    .unwrap_or(f32::MIN);
                let max = scalar(self.constant(node, 2)?)?
                    .or(attr(node, "max").and_then(|a| a.f))
                    .unwrap_or(f32::MAX);
                let op = if min == 0.0 && max == f32::MAX {
                    OpSpec::Relu
                } else {
                    OpSpec::Clip { min, max }
                };
                let v = self.push(plain("clip"), op, vec![x])?;
                self.output(node, Src::Value(v))
            }
            "Add" => self.add(i, node),
            "MaxPool" | "AveragePool" => self.pool(i, node, op),
            "GlobalAveragePool" => {
                let x = self.value(node, 0)?;
                let v = self.push(plain("gap"), OpSpec::GlobalAvgPool, vec![x])?;
                self.output(node, Src::Value(v))
            }
            "Flatten" => {
                let axis = attr_i(node, "axis", 1);
                if axis != 1 {
                    bail!("Flatten with axis {axis}; ccq supports axis 1 (keep the batch axis)");
                }
                let x = self.value(node, 0)?;
                self.flatten(node, x, i)
            }
            "Reshape" => {
                let x = self.value(node, 0)?;
                let shape = self
                    .constant(node, 1)?
                    .ok_or_else(|| anyhow!("Reshape without a constant shape"))?;
                let numel: usize = self.shapes[x].iter().product();
                let ok = match shape.data[..] {
                    [_, f] => f == -1.0 || f == numel as f32,
                    _ => false,
                };
                if !ok {
                    bail!(
                        "Reshape to {:?}; ccq supports only reshaping to [batch, features] ({numel} features here)",
                        shape.data
                    );
                }
                self.flatten(node, x, i)
            }
            "Gemm" => self.gemm(i, node),
            "MatMul" => self.matmul(i, node),
            _ => bail!("unsupported op; ccq imports {}", SUPPORTED_OPS.join(", ")),
        }
    }

    fn flatten(&mut self, node: &NodeProto, x: usize, i: usize) -> Result<()> {
        let v = self.flat(x, i)?;
        self.output(node, Src::Value(v))
    }

    /// `x` as a vector of features: itself, or a flatten node (for ONNX node `i`) reading it.
    fn flat(&mut self, x: usize, i: usize) -> Result<usize> {
        if self.shapes[x].len() == 1 {
            Ok(x)
        } else {
            self.push(format!("flatten{i}"), OpSpec::Flatten, vec![x])
        }
    }

    fn conv(&mut self, i: usize, node: &NodeProto) -> Result<()> {
        let x = self.value(node, 0)?;
        let w = self
            .constant(node, 1)?
            .ok_or_else(|| anyhow!("a Conv without weights"))?;
        let bias = self.constant(node, 2)?;
        let [cout, cin_g, kh, kw] = w.dims[..] else {
            bail!(
                "weights of shape {:?}; ccq supports 2-D convolutions",
                w.dims
            );
        };
        if kh != kw {
            bail!("a {kh}×{kw} kernel; ccq supports square kernels");
        }
        let groups = attr_i(node, "group", 1).max(1) as usize;
        let stride = same(&attr_ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?;
        let dilation = same(
            &attr_ints(node, "dilations").unwrap_or(vec![1, 1]),
            "dilations",
        )?;
        let cin = self.shapes[x].first().copied().unwrap_or(0);
        if cin_g * groups != cin {
            bail!(
                "weights {:?} in {groups} groups cannot read {cin} channels",
                w.dims
            );
        }
        let padding = self.padding(node, x, kh, stride, dilation)?;
        if let Some(b) = &bias
            && b.data.len() != cout
        {
            bail!("a bias of {} values for {cout} channels", b.data.len());
        }
        let weight_name = node.input.get(1).map(String::as_str);
        let name = self.layer_name(node, weight_name, i);
        let op = OpSpec::Conv {
            in_channels: cin,
            out_channels: cout,
            kernel: kh,
            stride,
            padding,
            dilation,
            groups,
            bias: bias.is_some(),
            bn: false,
        };
        let v = self.push(name, op, vec![x])?;
        let key = format!("n{}", v - 1);
        self.tensors.push((format!("{key}.conv.weight"), w));
        if let Some(b) = bias {
            self.tensors.push((format!("{key}.conv.bias"), b));
        }
        self.output(node, Src::Value(v))
    }

    /// Symmetric padding from `pads` or `auto_pad`.
    fn padding(&self, node: &NodeProto, x: usize, k: usize, s: usize, d: usize) -> Result<usize> {
        let auto = attr_s(node, "auto_pad").unwrap_or_else(|| "NOTSET".into());
        match auto.as_str() {
            "NOTSET" => same(&attr_ints(node, "pads").unwrap_or(vec![0; 4]), "pads"),
            "VALID" => Ok(0),
            "SAME_UPPER" | "SAME_LOWER" => {
                let n = *self.shapes[x]
                    .get(1)
                    .ok_or_else(|| anyhow!("needs a [C, H, W] input"))?;
                let h = self.shapes[x][1..].iter().all(|&v| v == n);
                let out = n.div_ceil(s.max(1));
                let total = ((out - 1) * s + d * (k - 1) + 1).saturating_sub(n);
                if !h || total % 2 != 0 {
                    bail!(
                        "auto_pad {auto} needs uneven padding here; ccq supports symmetric padding"
                    );
                }
                Ok(total / 2)
            }
            other => bail!("auto_pad {other}"),
        }
    }

    fn batch_norm(&mut self, i: usize, node: &NodeProto) -> Result<()> {
        let x = self.value(node, 0)?;
        if attr_i(node, "training_mode", 0) != 0 {
            bail!("BatchNormalization in training mode");
        }
        let eps = attr_f(node, "epsilon", 1e-5);
        let mut p = Vec::new();
        for k in 1..=4 {
            p.push(
                self.constant(node, k)?
                    .ok_or_else(|| anyhow!("input {k} is missing"))?,
            );
        }
        let channels = self.shapes[x].first().copied().unwrap_or(0);
        if p.iter().any(|t| t.data.len() != channels) {
            bail!("parameters do not match {channels} channels");
        }
        // The engine's BatchNorm uses ε = 1e-5: move the difference into the variance.
        for v in &mut p[3].data {
            *v = (*v + eps - 1e-5).max(0.0);
        }
        let input = node.input[0].as_str();
        let fuse = x > 0
            && self.readers.get(input) == Some(&1)
            && matches!(self.nodes[x - 1].op, OpSpec::Conv { bn: false, .. });
        let key = if fuse {
            if let OpSpec::Conv { bn, .. } = &mut self.nodes[x - 1].op {
                *bn = true;
            }
            self.output(node, Src::Value(x))?;
            format!("n{}.bn", x - 1)
        } else {
            let v = self.push(
                format!("batchnorm{i}"),
                OpSpec::BatchNorm { channels },
                vec![x],
            )?;
            self.output(node, Src::Value(v))?;
            format!("n{}", v - 1)
        };
        for (name, t) in ["gamma", "beta", "running_mean", "running_var"]
            .iter()
            .zip(p)
        {
            self.tensors.push((format!("{key}.{name}"), t));
        }
        Ok(())
    }

    fn add(&mut self, i: usize, node: &NodeProto) -> Result<()> {
        let a = self
            .src(node.input.first().map(String::as_str).unwrap_or(""))?
            .clone();
        let b = self
            .src(node.input.get(1).map(String::as_str).unwrap_or(""))?
            .clone();
        match (a, b) {
            (Src::Value(a), Src::Value(b)) => {
                let v = self.push(format!("add{i}"), OpSpec::Add, vec![a, b])?;
                self.output(node, Src::Value(v))
            }
            (Src::Value(v), Src::Const(c)) | (Src::Const(c), Src::Value(v)) => {
                let out = self.shapes[v].clone();
                let fits = c.data.len() == out.iter().product::<usize>() && out.len() == 1;
                if !self.bias_pending.remove(&v) || !fits {
                    bail!("adding a constant is supported only as the bias of a MatMul");
                }
                let key = format!("n{}.bias", v - 1);
                let slot = self
                    .tensors
                    .iter_mut()
                    .find(|(k, _)| *k == key)
                    .expect("a MatMul stores a zero bias");
                slot.1 = Const {
                    dims: vec![c.data.len()],
                    data: c.data,
                };
                self.output(node, Src::Value(v))
            }
            _ => bail!("adding two constants"),
        }
    }

    fn pool(&mut self, i: usize, node: &NodeProto, op: &str) -> Result<()> {
        let x = self.value(node, 0)?;
        let kernel = same(
            &attr_ints(node, "kernel_shape").ok_or_else(|| anyhow!("no kernel_shape"))?,
            "kernel_shape",
        )?;
        let stride = same(&attr_ints(node, "strides").unwrap_or(vec![1, 1]), "strides")?;
        if same(
            &attr_ints(node, "dilations").unwrap_or(vec![1, 1]),
            "dilations",
        )? != 1
        {
            bail!("dilated pooling");
        }
        if attr_i(node, "storage_order", 0) != 0 {
            bail!("storage_order 1");
        }
        let padding = self.padding(node, x, kernel, stride, 1)?;
        let ceil = attr_i(node, "ceil_mode", 0) != 0;
        let spec = if op == "MaxPool" {
            OpSpec::MaxPool {
                kernel,
                stride,
                padding,
                ceil,
            }
        } else {
            OpSpec::AvgPool {
                kernel,
                stride,
                padding,
                ceil,
                count_include_pad: attr_i(node, "count_include_pad", 0) != 0,
            }
        };
        // Sanity: the window fits.
        let side = self.shapes[x].get(1).copied().unwrap_or(0);
        if window_out(side, kernel, stride, padding, 1, ceil).is_none() {
            bail!("a {kernel}×{kernel} window does not fit a side of {side}");
        }
        let v = self.push(format!("{}{i}", op.to_lowercase()), spec, vec![x])?;
        self.output(node, Src::Value(v))
    }

    /// A linear layer from weights `[out, in]`, with a bias (zero until an `Add` sets it).
    fn linear(
        &mut self,
        i: usize,
        node: &NodeProto,
        x: usize,
        w: Const,
        bias: Option<Const>,
    ) -> Result<()> {
        let [out, inp] = w.dims[..] else {
            unreachable!("2-D checked")
        };
        let numel: usize = self.shapes[x].iter().product();
        if numel != inp {
            bail!(
                "weights of {inp} inputs ({out} outputs) cannot read {:?}",
                self.shapes[x]
            );
        }
        let x = self.flat(x, i)?;
        let weight_name = node.input.get(1).map(String::as_str);
        let name = self.layer_name(node, weight_name, i);
        let op = OpSpec::Linear {
            in_features: inp,
            out_features: out,
        };
        let v = self.push(name, op, vec![x])?;
        let key = format!("n{}", v - 1);
        self.tensors.push((format!("{key}.weight"), w));
        let pending = bias.is_none();
        let bias = bias.unwrap_or(Const {
            dims: vec![out],
            data: vec![0.0; out],
        });
        if bias.data.len() != out {
            bail!("a bias of {} values for {out} outputs", bias.data.len());
        }
        self.tensors.push((
            format!("{key}.bias"),
            Const {
                dims: vec![out],
                data: bias.data,
            },
        ));
        if pending {
            self.bias_pending.insert(v);
        }
        self.output(node, Src::Value(v))
    }

    fn gemm(&mut self, i: usize, node: &NodeProto) -> Result<()> {
        let x = self.value(node, 0)?;
        if attr_i(node, "transA", 0) != 0 {
            bail!("transA = 1");
        }
        let w = self
            .constant(node, 1)?
            .ok_or_else(|| anyhow!("a Gemm without constant weights"))?;
        let [r, c] = w.dims[..] else {
            bail!("weights of shape {:?}", w.dims)
        };
        let alpha = attr_f(node, "alpha", 1.0);
        let beta = attr_f(node, "beta", 1.0);
        let w = if attr_i(node, "transB", 0) != 0 {
            w
        } else {
            transpose(&w.data, r, c)
        };
        let w = Const {
            data: w.data.iter().map(|v| v * alpha).collect(),
            ..w
        };
        let bias = self.constant(node, 2)?.map(|b| Const {
            data: b.data.iter().map(|v| v * beta).collect(),
            ..b
        });
        self.linear(i, node, x, w, bias)
    }

    fn matmul(&mut self, i: usize, node: &NodeProto) -> Result<()> {
        let x = self.value(node, 0)?;
        let w = self
            .constant(node, 1)?
            .ok_or_else(|| anyhow!("a MatMul without constant weights"))?;
        let [r, c] = w.dims[..] else {
            bail!("weights of shape {:?}", w.dims)
        };
        self.linear(i, node, x, transpose(&w.data, r, c), None)
    }
}

/// `[r, c]` row-major data as `[c, r]`.
fn transpose(data: &[f32], r: usize, c: usize) -> Const {
    let mut out = vec![0.0; data.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = data[i * c + j];
        }
    }
    Const {
        dims: vec![c, r],
        data: out,
    }
}

/// Copies the imported tensors into `model` (every one must exist with its shape).
fn load_tensors(model: &Model, tensors: Tensors) -> Result<()> {
    let mut by_name: HashMap<String, Const> = tensors.into_iter().collect();
    let mut wrong = Vec::new();
    model.net.visit(&mut |name, t, _| {
        if let Some(c) = by_name.remove(name) {
            let dims: Vec<i64> = c.dims.iter().map(|&d| d as i64).collect();
            if dims != t.size() {
                wrong.push(format!("{name}: {dims:?} for {:?}", t.size()));
                return;
            }
            let v = Tensor::from_slice(&c.data)
                .view(dims.as_slice())
                .to_device(t.device());
            tch::no_grad(|| t.shallow_clone().copy_(&v));
        }
    });
    if !wrong.is_empty() || !by_name.is_empty() {
        bail!(
            "internal: imported tensors do not fit the graph (wrong: {wrong:?}, unused: {:?})",
            by_name.keys().collect::<Vec<_>>()
        );
    }
    Ok(())
}
