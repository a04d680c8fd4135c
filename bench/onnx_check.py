#!/usr/bin/env python3
"""Runs a ccq ONNX QDQ export in onnxruntime on the Fashion-MNIST test split and compares its
predictions with the integer engine's (`ccq infer --predictions FILE`).

usage: onnx_check.py MODEL.onnx PREDICTIONS.txt [DATA_DIR] [--no-opt]

--no-opt disables onnxruntime's graph optimisations, which otherwise fuse the QDQ pattern into its
own integer kernels (QLinearConv etc., with their own bias and requantization rounding).
"""
import gzip, sys, time
import numpy as np
import onnxruntime as ort


def idx(path):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    model, preds = args[0], args[1]
    data = args[2] if len(args) > 2 else "/usr/share/datasets/fashion-mnist"
    opts = ort.SessionOptions()
    if "--no-opt" in sys.argv:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    x = idx(f"{data}/t10k-images-idx3-ubyte.gz").astype(np.float32)[:, None, :, :]
    y = idx(f"{data}/t10k-labels-idx1-ubyte.gz")
    sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    t = time.perf_counter()
    logits = np.concatenate([sess.run(None, {"pixels": x[i:i + 500]})[0] for i in range(0, len(x), 500)])
    dt = time.perf_counter() - t
    ours = np.array([int(l) for l in open(preds)])
    theirs = logits.argmax(1)
    agree = (ours == theirs).mean()
    print(f"onnxruntime {ort.__version__}: top-1 {100 * (theirs == y).mean():.2f}%, {len(x) / dt:.0f} images/s; "
          f"integer engine top-1 {100 * (ours == y).mean():.2f}%; agreement {100 * agree:.2f}% ({(ours != theirs).sum()} of {len(x)} differ)")
    sys.exit(0 if agree >= 0.999 else 1)


if __name__ == "__main__":
    main()
