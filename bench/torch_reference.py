#!/usr/bin/env python3
"""PyTorch reference for ccq's benchmarks (never a dependency of ccq itself).

Mirrors ccq's quantization-aware layers: every conv/linear quantizes its input activations
(PACT, except the first layer, which reads the 8-bit image) and its weights (DoReFa), with a
straight-through estimator. Modes:
  step   ms per QAT training step (forward + backward + SGD) of ResNet-20 or the ConvNet
  infer  FP32 inference images/s
"""
import argparse, time
import torch
import torch.nn as nn
import torch.nn.functional as F


def ste_round(x):
    return x + (torch.round(x) - x).detach()


def dorefa(w, bits):
    if bits >= 32:
        return w
    t = torch.tanh(w)
    u = t / (2 * t.abs().max()) + 0.5
    n = 2 ** bits - 1
    return 2 * (ste_round(u * n) / n) - 1


def pact(x, alpha, bits):
    if bits >= 32:
        return x
    y = torch.minimum(F.relu(x), alpha)
    step = alpha.detach() / (2 ** bits - 1)
    return y + (torch.round(y / step) * step - y).detach()


class QConv(nn.Conv2d):
    def __init__(self, cin, cout, k, stride, pad, first, bits):
        super().__init__(cin, cout, k, stride, pad, bias=False)
        self.alpha = nn.Parameter(torch.tensor(8.0))
        self.first, self.bits = first, bits

    def forward(self, x):
        if not self.first:
            x = pact(x, self.alpha, self.bits)
        return F.conv2d(x, dorefa(self.weight, self.bits), None, self.stride, self.padding)


class QLinear(nn.Linear):
    def __init__(self, cin, cout, bits):
        super().__init__(cin, cout)
        self.alpha = nn.Parameter(torch.tensor(8.0))
        self.bits = bits

    def forward(self, x):
        return F.linear(pact(x, self.alpha, self.bits), dorefa(self.weight, self.bits), self.bias)


class Block(nn.Module):
    def __init__(self, cin, cout, stride, bits):
        super().__init__()
        self.c1, self.b1 = QConv(cin, cout, 3, stride, 1, False, bits), nn.BatchNorm2d(cout)
        self.c2, self.b2 = QConv(cout, cout, 3, 1, 1, False, bits), nn.BatchNorm2d(cout)
        self.sc = None
        if stride != 1 or cin != cout:
            self.sc = nn.Sequential(QConv(cin, cout, 1, stride, 0, False, bits), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return F.relu(y + (self.sc(x) if self.sc is not None else x))


class ResNet20(nn.Module):
    def __init__(self, cin, classes, bits):
        super().__init__()
        self.stem, self.bn = QConv(cin, 16, 3, 1, 1, True, bits), nn.BatchNorm2d(16)
        blocks, c = [], 16
        for s, w in enumerate([16, 32, 64]):
            for i in range(3):
                blocks.append(Block(c, w, 2 if s > 0 and i == 0 else 1, bits))
                c = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = QLinear(64, classes, bits)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class ConvNet(nn.Module):
    def __init__(self, cin, classes, bits, side=28):
        super().__init__()
        w = [16, 32, 64]
        self.convs = nn.ModuleList([QConv(cin, w[0], 3, 1, 1, True, bits), QConv(w[0], w[1], 3, 1, 1, False, bits), QConv(w[1], w[2], 3, 1, 1, False, bits)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(c) for c in w])
        s = side // 2 // 2 // 2
        self.fc = QLinear(w[2] * s * s, classes, bits)

    def forward(self, x):
        for c, b in zip(self.convs, self.bns):
            x = F.max_pool2d(F.relu(b(c(x))), 2)
        return self.fc(x.flatten(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["step", "infer"])
    ap.add_argument("--model", default="resnet20", choices=["resnet20", "convnet"])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    bits = a.bits if a.mode == "step" else 32
    dev = torch.device(a.device)
    net = (ResNet20 if a.model == "resnet20" else ConvNet)(1, 10, bits).to(dev)
    x = torch.randn(a.batch, 1, 28, 28, device=dev)
    y = torch.randint(0, 10, (a.batch,), device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    if a.mode == "step":
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
        def step():
            opt.zero_grad()
            loss = F.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
            loss.item()
        for _ in range(2):
            step()
        sync()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        sync()
        ms = (time.perf_counter() - t) * 1000 / a.steps
        print(f"pytorch {torch.__version__} {a.model} QAT W{a.bits}A{a.bits} step, batch {a.batch}: {ms:.1f} ms/step ({torch.get_num_threads()} threads)")
    else:
        net.eval()
        with torch.no_grad():
            for _ in range(2):
                net(x)
            t = time.perf_counter()
            for _ in range(a.steps):
                net(x)
            dt = time.perf_counter() - t
        print(f"pytorch {torch.__version__} {a.model} FP32 inference, batch {a.batch}: {a.steps * a.batch / dt:.0f} images/s")


if __name__ == "__main__":
    main()
