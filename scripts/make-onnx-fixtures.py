"""Makes the ONNX fixtures of ccq's import tests: a reduced-width ResNet-18 and a MobileNetV2
(width 0.35), both on 3x32x32 inputs, trained briefly on the CIFAR-10 dev split and exported with
torch.onnx.export (the TorchScript exporter):

- resnet18_w8.onnx: widths 8/16/32/64, 3x3 stem + 3x3/2 max-pool, opset 17, BatchNorm folded into
  the convs (constant folding on, PyTorch's default);
- mobilenetv2_035.onnx: torchvision's MobileNetV2 layout at width 0.35 with a stride-1 stem,
  ReLU6 as Clip, opset 13, BatchNormalization kept (constant folding off).

Each file carries its preprocessing as metadata (`mean`, `std`, per channel, for pixels / 255).
Beside each, NAME.inputs.u8 holds the first 32 test images (NCHW bytes, as PIL decodes them),
NAME.logits.f32 onnxruntime's logits for them (little-endian f32, [32, 10]), and
NAME.ort-predictions.txt onnxruntime's class for every test image (in ccq's order: classes, then
files, by name), for bench/import_check.sh.

    bench/.venv/bin/python scripts/make-onnx-fixtures.py CIFAR_DIR OUT_DIR [EPOCHS]

ONLY=NAME makes one model, THREADS sets torch's threads (default 1). The committed fixtures:
ResNet-18 with 10 epochs (72.98% on the dev test split), MobileNetV2 with
`ONLY=mobilenetv2_035 ... 15` (79.38%, 77-85 s per epoch at 1 thread).
"""

import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

MEAN = [0.4914, 0.4822, 0.4465]
STD = [0.2470, 0.2435, 0.2616]


def load_split(root, split):
    classes = sorted(os.listdir(os.path.join(root, split)))
    xs, ys = [], []
    for label, c in enumerate(classes):
        d = os.path.join(root, split, c)
        for f in sorted(os.listdir(d)):
            with Image.open(os.path.join(d, f)) as im:
                xs.append(np.asarray(im.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))
            ys.append(label)
    return np.stack(xs), np.array(ys, dtype=np.int64)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
    def __init__(self, widths=(8, 16, 32, 64), classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.pool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(nn.Sequential(Block(cin, w, 1 if i == 0 else 2), Block(w, w, 1)))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def divisible(v, d=8):
    n = max(d, int(v + d / 2) // d * d)
    return n + d if n < 0.9 * v else n


class Inverted(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, width=0.35, classes=10):
        super().__init__()
        cin = divisible(32 * width)
        last = divisible(1280 * max(1.0, width))
        layers = [nn.Conv2d(3, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6()]
        for t, c, n, s in self.SETTINGS:
            cout = divisible(c * width)
            for i in range(n):
                layers.append(Inverted(cin, cout, s if i == 0 else 1, t))
                cin = cout
        layers += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(last, classes)

    def forward(self, x):
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(self.dropout(torch.flatten(x, 1)))


class OpsMix(nn.Module):
    """Untrained: the ops the two networks do not use (dilation, conv bias, average pooling,
    a BatchNorm after no conv, Reshape, MatMul + Add, Dropout, Identity via flatten)."""

    def __init__(self, classes=10):
        super().__init__()
        torch.manual_seed(3)
        self.conv = nn.Conv2d(3, 8, 3, 1, 2, dilation=2, bias=True)
        self.pool = nn.AvgPool2d(3, 2, 1, count_include_pad=True)
        self.bn = nn.BatchNorm2d(8)
        with torch.no_grad():
            self.bn.running_mean.uniform_(-0.5, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.uniform_(-0.2, 0.2)
        self.pool2 = nn.AvgPool2d(2, 2)
        self.w = nn.Parameter(torch.randn(8 * 8 * 8, classes) * 0.05)
        self.b = nn.Parameter(torch.randn(classes) * 0.1)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        x = self.bn(F.relu6(self.pool(self.conv(x))))
        x = self.pool2(x).reshape(-1, 8 * 8 * 8)
        return self.dropout(x @ self.w + self.b)


def normalise(x):
    x = torch.from_numpy(x).float() / 255.0
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def train(model, xs, ys, epochs, seed):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = epochs * (len(xs) // 128)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(xs))
        start, total = time.time(), 0.0
        for b in range(len(xs) // 128):
            idx = order[b * 128:(b + 1) * 128]
            x = normalise(xs[idx])
            if rng.random() < 0.5:
                x = x.flip(3)
            dx, dy = rng.integers(-4, 5, 2)
            x = torch.roll(x, (int(dy), int(dx)), (2, 3))
            loss = F.cross_entropy(model(x), torch.from_numpy(ys[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        print(f"  epoch {epoch + 1}: loss {total / (len(xs) // 128):.3f}, "
              f"{time.time() - start:.0f} s", flush=True)
    model.eval()


def export(model, path, opset, folding):
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), path, dynamo=False,
                      opset_version=opset, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                      do_constant_folding=folding)
    m = onnx.load(path)
    for key, value in (("mean", MEAN), ("std", STD)):
        p = m.metadata_props.add()
        p.key, p.value = key, ",".join(str(v) for v in value)
    onnx.save(m, path)


def main():
    root, out = sys.argv[1], sys.argv[2]
    epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    torch.set_num_threads(int(os.environ.get("THREADS", "1")))
    os.makedirs(out, exist_ok=True)
    xs, ys = load_split(root, "train")
    tx, ty = load_split(root, "test")
    print(f"data: {len(xs)} train, {len(tx)} test", flush=True)
    models = [
        ("resnet18_w8", ResNet18(), 17, True),
        ("mobilenetv2_035", MobileNetV2(), 13, False),
        ("ops_mix", OpsMix().eval(), 11, False),
    ]
    only = os.environ.get("ONLY")
    for name, model, opset, folding in models:
        if only and name != only:
            continue
        print(f"{name}: {sum(p.numel() for p in model.parameters())} parameters", flush=True)
        if name != "ops_mix":
            train(model, xs, ys, epochs, seed=1)
        with torch.no_grad():
            torch_logits = torch.cat([model(normalise(tx[i:i + 500])) for i in range(0, len(tx), 500)])
        path = os.path.join(out, f"{name}.onnx")
        export(model, path, opset, folding)
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        ort_logits = np.concatenate([
            sess.run(None, {"image": normalise(tx[i:i + 500]).numpy()})[0]
            for i in range(0, len(tx), 500)
        ])
        acc = (ort_logits.argmax(1) == ty).mean()
        agree = (ort_logits.argmax(1) == torch_logits.numpy().argmax(1)).mean()
        print(f"{name}: test top-1 {100 * acc:.2f}% (onnxruntime), agreement with PyTorch "
              f"{100 * agree:.2f}%, {os.path.getsize(path)} bytes", flush=True)
        tx[:32].tofile(os.path.join(out, f"{name}.inputs.u8"))
        ort_logits[:32].astype("<f4").tofile(os.path.join(out, f"{name}.logits.f32"))
        with open(os.path.join(out, f"{name}.ort-predictions.txt"), "w") as f:
            f.writelines(f"{c}\n" for c in ort_logits.argmax(1))


if __name__ == "__main__":
    main()
