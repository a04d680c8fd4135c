//! The built-in architectures as graphs: a compact ConvNet, CIFAR-style ResNet-20/32/56 and
//! ImageNet-style ResNet-18.

use super::graph::{GraphSpec, NodeSpec, OpSpec};
use super::network::{ModelKind, ModelSpec};
use anyhow::{Result, bail};

/// Channel widths of the compact ConvNet's three stages.
pub const CONVNET_WIDTHS: [usize; 3] = [16, 32, 64];

/// Appends nodes and tracks the current value and channel count.
struct Builder {
    nodes: Vec<NodeSpec>,
    x: usize,
    c: usize,
}

impl Builder {
    fn push(&mut self, name: String, key: String, op: OpSpec, inputs: Vec<usize>) -> usize {
        self.nodes.push(NodeSpec {
            name,
            key,
            op,
            inputs,
        });
        self.nodes.len()
    }

    /// A conv + BatchNorm (no bias) reading `src`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: String,
        key: &str,
        src: usize,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> usize {
        let op = OpSpec::Conv {
            in_channels: cin,
            out_channels: cout,
            kernel: k,
            stride,
            padding: pad,
            dilation: 1,
            groups: 1,
            bias: false,
            bn: true,
        };
        self.push(name, key.into(), op, vec![src])
    }

    fn simple(&mut self, key: String, op: OpSpec, inputs: Vec<usize>) -> usize {
        self.push(key.clone(), key, op, inputs)
    }

    fn relu(&mut self, key: &str, src: usize) -> usize {
        self.simple(format!("{key}.relu"), OpSpec::Relu, vec![src])
    }

    fn max_pool(
        &mut self,
        key: &str,
        src: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
    ) -> usize {
        let op = OpSpec::MaxPool {
            kernel,
            stride,
            padding,
            ceil: false,
        };
        self.simple(format!("{key}.pool"), op, vec![src])
    }

    /// conv 3×3 + BN + ReLU + 2×2 max-pool.
    fn plain_stage(&mut self, name: &str, key: &str, cout: usize) {
        let c = self.conv(format!("{name}.conv"), key, self.x, self.c, cout, 3, 1, 1);
        let r = self.relu(key, c);
        self.x = self.max_pool(key, r, 2, 2, 0);
        self.c = cout;
    }

    /// `relu(bn(conv2(relu(bn(conv1 x)))) + shortcut x)`; the shortcut is a 1×1 conv + BN when
    /// the shape changes.
    fn basic_block(&mut self, name: &str, key: &str, cout: usize, stride: usize) {
        let (x, cin) = (self.x, self.c);
        let c1 = self.conv(
            format!("{name}.conv1"),
            &format!("{key}.conv1"),
            x,
            cin,
            cout,
            3,
            stride,
            1,
        );
        let r1 = self.relu(&format!("{key}.conv1"), c1);
        let c2 = self.conv(
            format!("{name}.conv2"),
            &format!("{key}.conv2"),
            r1,
            cout,
            cout,
            3,
            1,
            1,
        );
        let sc = if stride != 1 || cin != cout {
            self.conv(
                format!("{name}.shortcut"),
                &format!("{key}.shortcut"),
                x,
                cin,
                cout,
                1,
                stride,
                0,
            )
        } else {
            x
        };
        let sum = self.simple(format!("{key}.add"), OpSpec::Add, vec![c2, sc]);
        self.x = self.relu(key, sum);
        self.c = cout;
    }

    /// Flatten (after a global average pool when `global`) and the `fc` classifier.
    fn head(mut self, features: usize, classes: usize, global: bool) -> GraphSpec {
        if global {
            self.x = self.simple("head.gap".into(), OpSpec::GlobalAvgPool, vec![self.x]);
        }
        let f = self.simple("head.flatten".into(), OpSpec::Flatten, vec![self.x]);
        let op = OpSpec::Linear {
            in_features: features,
            out_features: classes,
        };
        let output = self.push("fc".into(), "fc".into(), op, vec![f]);
        GraphSpec {
            nodes: self.nodes,
            output,
            io: None,
        }
    }
}

/// The graph of built-in architecture `spec.kind` for `spec`'s input and classes.
pub fn graph(spec: &ModelSpec) -> Result<GraphSpec> {
    let mut b = Builder {
        nodes: Vec::new(),
        x: 0,
        c: spec.channels,
    };
    let g = match spec.kind {
        ModelKind::Convnet => {
            let [w0, w1, w2] = CONVNET_WIDTHS;
            let c = b.conv("stem.conv".into(), "stem", 0, spec.channels, w0, 3, 1, 1);
            let r = b.relu("stem", c);
            b.x = b.max_pool("stem", r, 2, 2, 0);
            b.c = w0;
            b.plain_stage("stage1", "blocks.0.conv1", w1);
            b.plain_stage("stage2", "blocks.1.conv1", w2);
            let (h, w) = (spec.height / 2 / 2 / 2, spec.width / 2 / 2 / 2);
            b.head(w2 * h * w, spec.classes, false)
        }
        ModelKind::Resnet20 | ModelKind::Resnet32 | ModelKind::Resnet56 | ModelKind::Resnet18 => {
            let (n, widths, stem_k, stem_stride, stem_pad) = match spec.kind {
                ModelKind::Resnet20 => (3, &[16, 32, 64][..], 3, 1, 1),
                ModelKind::Resnet32 => (5, &[16, 32, 64][..], 3, 1, 1),
                ModelKind::Resnet56 => (9, &[16, 32, 64][..], 3, 1, 1),
                _ => (2, &[64, 128, 256, 512][..], 7, 2, 3),
            };
            let w0 = widths[0];
            let c = b.conv(
                "stem.conv".into(),
                "stem",
                0,
                spec.channels,
                w0,
                stem_k,
                stem_stride,
                stem_pad,
            );
            b.x = b.relu("stem", c);
            if spec.kind == ModelKind::Resnet18 {
                b.x = b.max_pool("stem", b.x, 3, 2, 1);
            }
            b.c = w0;
            let mut block = 0;
            for (s, &width) in widths.iter().enumerate() {
                for i in 0..n {
                    let stride = if s > 0 && i == 0 { 2 } else { 1 };
                    let name = format!("stage{}.block{i}", s + 1);
                    b.basic_block(&name, &format!("blocks.{block}"), width, stride);
                    block += 1;
                }
            }
            let last = *widths.last().expect("widths");
            b.head(last, spec.classes, true)
        }
        ModelKind::Imported => bail!("an imported model carries its own graph"),
    };
    Ok(g)
}
