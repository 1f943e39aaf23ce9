#!/usr/bin/env python3
# Writes the MNIST test set exactly as the references binarize it for the quality benchmark
# (common.run_quality: numpy's default_rng(0), x = u < p over the whole test set) as an IDX3 file
# of 0/255 bytes, so that vaepipe evaluates the same binary images: its data stage's fixed
# binarization of a 0/1 image is the image itself (u < 1 always, u < 0 never). Without this the
# implementations' test NLLs differ by the two binarizations of the same images, an offset of a
# few tenths of a nat on 1000 images that no number of seeds averages away.
# Usage: shared_test.py --data DIR --out FILE (run with the venv's python: needs numpy).
import argparse
import gzip

import numpy as np

from common import read_idx_images


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", required=True, help="directory of the MNIST IDX .gz files")
    p.add_argument("--out", required=True, help="the binarized test images (.gz IDX3)")
    a = p.parse_args()
    test = read_idx_images(f"{a.data}/t10k-images-idx3-ubyte.gz")
    binary = (np.random.default_rng(0).random(test.shape) < test).astype(np.uint8) * 255
    n, side = test.shape[0], int(round(test.shape[1] ** 0.5))
    header = bytes([0, 0, 8, 3]) + np.array([n, side, side], dtype=">u4").tobytes()
    with gzip.open(a.out, "wb") as f:
        f.write(header + binary.tobytes())


if __name__ == "__main__":
    main()
