#!/usr/bin/env python3
"""Inference images/s of onnxruntime on a ccq QDQ export, and of PyTorch FP32 on the same
architecture, on random pixels of the model's input shape (speed does not depend on content).

usage: runtime_speed.py MODEL.onnx --model convnet|resnet20 --shape C,H,W --n N --threads T
"""
import argparse
import time

import numpy as np
import onnxruntime as ort


def timed(run, x, batch):
    for i in range(0, min(len(x), 2 * batch), batch):  # warm-up
        run(x[i:i + batch])
    t = time.perf_counter()
    for i in range(0, len(x), batch):
        run(x[i:i + batch])
    return len(x) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("onnx")
    ap.add_argument("--model", choices=["convnet", "resnet20"], required=True)
    ap.add_argument("--shape", required=True)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--ort-only", action="store_true", help="onnxruntime with optimisations only (for peak memory)")
    a = ap.parse_args()
    c, h, w = (int(v) for v in a.shape.split(","))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(a.n, c, h, w)).astype(np.float32)
    for opt in (True,) if a.ort_only else (True, False):
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        if not opt:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(a.onnx, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        ips = timed(lambda b: sess.run(None, {name: b}), x, a.batch)
        print(f"onnxruntime {ort.__version__} (graph optimisations {'on' if opt else 'off'}): {ips:.0f} images/s")
    if a.ort_only:
        return
    import torch
    import torch_reference as ref

    torch.set_num_threads(a.threads)
    net = (ref.ResNet20(c, a.classes, 32) if a.model == "resnet20" else ref.ConvNet(c, a.classes, 32, side=h)).eval()
    xt = torch.from_numpy(x / 255.0)
    with torch.no_grad():
        ips = timed(net, xt, a.batch)
    print(f"pytorch {torch.__version__} FP32 {a.model}: {ips:.0f} images/s")


if __name__ == "__main__":
    main()
