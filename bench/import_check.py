"""ONNX import check (bench/import_check.sh): ccq's float predictions of an imported model against
onnxruntime's, on the same pixels.

    import_check.py png SRC_DIR DST_DIR       # DST/test as lossless PNGs of SRC/test; DST/train -> SRC/train
    import_check.py compare MODEL.onnx DATA_DIR CCQ_LOGITS
    import_check.py agree QDQ.onnx ORIGINAL.onnx DATA_DIR PREDICTIONS   # QDQ in onnxruntime vs the integer engine
"""

import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image


def files(root):
    classes = sorted(os.listdir(os.path.join(root, "test")))
    for c in classes:
        d = os.path.join(root, "test", c)
        for f in sorted(os.listdir(d)):
            yield c, f, os.path.join(d, f)


def png(src, dst):
    n = 0
    for c, f, path in files(src):
        out = os.path.join(dst, "test", c, os.path.splitext(f)[0] + ".png")
        if not os.path.exists(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with Image.open(path) as im:
                im.convert("RGB").save(out + ".tmp.png")
            os.replace(out + ".tmp.png", out)
        n += 1
    train = os.path.join(dst, "train")
    if not os.path.exists(train):
        os.symlink(os.path.abspath(os.path.join(src, "train")), train)
    print(f"{n} test images as PNG in {dst}")


def inputs(model, data):
    m = onnx.load(model)
    meta = {p.key: p.value for p in m.metadata_props}
    mean = np.array([float(v) for v in meta.get("mean", "0").split(",")], np.float32)
    std = np.array([float(v) for v in meta.get("std", "1").split(",")], np.float32)
    xs = []
    for _, _, path in files(data):
        with Image.open(path) as im:
            xs.append(np.asarray(im.convert("RGB"), np.float32).transpose(2, 0, 1))
    return (np.stack(xs) / 255.0 - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)


def run(model, x, optimise=True):
    so = ort.SessionOptions()
    if not optimise:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 500].astype(np.float32)})[0]
                           for i in range(0, len(x), 500)])


def compare(model, data, ccq_logits):
    ref = run(model, inputs(model, data))
    got = np.fromfile(ccq_logits, "<f4").reshape(ref.shape)
    agree = (got.argmax(1) == ref.argmax(1)).mean()
    diff = np.abs(got - ref).max()
    print(f"{os.path.basename(model)}: {len(ref)} images, top-1 agreement with onnxruntime "
          f"{100 * agree:.2f}%, max |Δ logit| {diff:.2e} (logits up to {np.abs(ref).max():.1f})")


def agree(qdq, original, data, predictions):
    """The QDQ graph keeps the original's interface: fed the same normalised images. Run twice:
    as written (QuantizeLinear/DequantizeLinear in float), and with onnxruntime's graph
    optimisations, which fuse QDQ pairs into its own integer kernels."""
    q, o = onnx.load(qdq).graph, onnx.load(original).graph
    same = (q.input[0].name, q.output[0].name) == (o.input[0].name, o.output[0].name)
    x = inputs(original, data)
    got = np.array([int(line) for line in open(predictions)])
    classes = sorted(os.listdir(os.path.join(data, "test")))
    labels = np.array([classes.index(c) for c, _, _ in files(data)])
    print(f"{os.path.basename(qdq)}: input/output names {q.input[0].name}/{q.output[0].name} "
          f"({'the same as' if same else 'DIFFERENT from'} the original's); integer engine top-1 "
          f"{100 * (got == labels).mean():.2f}% on {len(got)} images")
    for optimise in (False, True):
        ref = run(qdq, x, optimise).argmax(1)
        print(f"  onnxruntime, graph optimisations {'on' if optimise else 'off'}: top-1 "
              f"{100 * (ref == labels).mean():.2f}%, agreement with the engine "
              f"{100 * (ref == got).mean():.2f}%")


if __name__ == "__main__":
    if sys.argv[1] == "png":
        png(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "agree":
        agree(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
    else:
        compare(sys.argv[2], sys.argv[3], sys.argv[4])
