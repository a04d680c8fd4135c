"""Runs a QDQ ONNX graph (as `ccq export --onnx` writes it) in float64 with PyTorch, to tell the
integer engine's exactness apart from float32 rounding: the engine computes the graph's real
arithmetic exactly (up to its 2^-24 fixed point), onnxruntime in float32, where values within
rounding of a quantization boundary can land one level apart.

    python bench/qdq_float64.py MODEL.qdq.onnx ORIGINAL.onnx PNG_DIR ENGINE_PREDICTIONS

prints the top-1 agreement of the float64 run with the engine's predictions, and with
onnxruntime's float32 run (graph optimisations off), and the images where float32 and float64
disagree. Reads the images as bench/import_check.py does (the original model's normalisation).
"""

import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from onnx import numpy_helper

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from import_check import inputs  # noqa: E402

INT_RANGE = {
    onnx.TensorProto.INT8: (-128, 127),
    onnx.TensorProto.UINT8: (0, 255),
    onnx.TensorProto.INT16: (-32768, 32767),
}


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def per_axis(v, x, axis):
    """Broadcast a per-axis (or scalar) parameter `v` against `x` along `axis`."""
    if v.dim() == 0:
        return v
    shape = [1] * x.dim()
    shape[axis] = -1
    return v.reshape(shape)


def run(model, x):
    g = model.graph
    env = {i.name: torch.from_numpy(numpy_helper.to_array(i).astype(np.float64))
           for i in g.initializer}
    dtypes = {i.name: i.data_type for i in g.initializer}
    env[g.input[0].name] = torch.from_numpy(x.astype(np.float64))
    for n in g.node:
        a = attrs(n)
        i = [env[k] if k else None for k in n.input]
        op = n.op_type
        if op == "DequantizeLinear":
            ax = a.get("axis", 1)
            zp = i[2] if len(i) > 2 else torch.zeros(())
            y = (i[0] - per_axis(zp, i[0], ax)) * per_axis(i[1], i[0], ax)
        elif op == "QuantizeLinear":
            lo, hi = INT_RANGE[dtypes[n.input[2]]]
            # Round half to even, as ONNX specifies (torch.round does).
            y = torch.clamp(torch.round(i[0] / i[1]) + i[2], lo, hi)
        elif op == "Clip":
            y = torch.clamp(i[0], i[1], i[2])
        elif op == "Conv":
            p = a.get("pads", [0, 0, 0, 0])
            y = F.conv2d(i[0], i[1], i[2] if len(i) > 2 else None, stride=a.get("strides", 1),
                         padding=(p[0], p[1]), dilation=a.get("dilations", 1),
                         groups=a.get("group", 1))
        elif op == "Gemm":
            b = i[1].t() if a.get("transB", 0) else i[1]
            y = a.get("alpha", 1.0) * (i[0] @ b) + (i[2] if len(i) > 2 else 0)
        elif op in ("Add", "Sub", "Mul", "Div"):
            y = {"Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": torch.div}[op](*i)
        elif op == "Relu":
            y = torch.relu(i[0])
        elif op == "Identity":
            y = i[0]
        elif op == "Flatten":
            y = i[0].flatten(a.get("axis", 1))
        elif op == "GlobalAveragePool":
            y = i[0].mean(dim=(2, 3), keepdim=True)
        elif op == "MaxPool":
            p = a.get("pads", [0, 0, 0, 0])
            y = F.max_pool2d(i[0], a["kernel_shape"], a.get("strides"), (p[0], p[1]))
        elif op == "AveragePool":
            p = a.get("pads", [0, 0, 0, 0])
            y = F.avg_pool2d(i[0], a["kernel_shape"], a.get("strides"), (p[0], p[1]),
                             count_include_pad=bool(a.get("count_include_pad", 0)))
        else:
            raise SystemExit(f"{n.name}: op {op} is not handled here")
        env[n.output[0]] = y
    return env[g.output[0].name].numpy()


def main(qdq, original, data, predictions):
    x = inputs(original, data)
    model = onnx.load(qdq)
    with torch.no_grad():
        exact = np.concatenate([run(model, x[k:k + 500]) for k in range(0, len(x), 500)])
    engine = np.array([int(line) for line in open(predictions)])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(qdq, so, providers=["CPUExecutionProvider"])
    f32 = s.run(None, {s.get_inputs()[0].name: x.astype(np.float32)})[0]
    top = np.sort(exact, 1)
    margin = top[:, -1] - top[:, -2]
    e, f = exact.argmax(1), f32.argmax(1)
    print(f"float64 vs integer engine: {100 * (e == engine).mean():.2f}% top-1 agreement "
          f"({(e != engine).sum()} of {len(e)} differ)")
    print(f"float64 vs onnxruntime float32: {100 * (e == f).mean():.2f}% "
          f"({(e != f).sum()} differ), max |Δ logit| {np.abs(exact - f32).max():.4f}")
    print(f"integer engine vs onnxruntime float32: {100 * (engine == f).mean():.2f}%")
    for what, other in (("float32", f), ("the engine", engine)):
        bad = np.nonzero(e != other)[0]
        if len(bad):
            print(f"float64 top-2 logit margin where {what} differs: max {margin[bad].max():.4f}, "
                  f"median {np.median(margin[bad]):.4f} (images with a margin under "
                  f"{margin[bad].max():.4f}: {(margin <= margin[bad].max()).sum()})")


if __name__ == "__main__":
    main(*sys.argv[1:5])
