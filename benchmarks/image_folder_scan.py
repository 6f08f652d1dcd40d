r"""Cost of the image-folder scan (every image decoded once with PIL) against a header-only check and against
building the whole input pipeline, on scikit-learn's digits (1,797 8x8 images) written as a PNG image folder.

  python -m benchmarks.image_folder_scan
"""

import os
import tempfile
import time

import numpy as np
from absl import app
from PIL import Image
from sklearn.datasets import load_digits

from configs import test as test_config
from visioncore_jax.data import build_input, image_folder

ROUNDS = 3


def write_digits(root: str) -> None:
    """`root/{train,test}/<digit>/<i>.png`, a fifth of the images (seeded) in test."""
    digits = load_digits()
    test = np.random.default_rng(0).random(len(digits.target)) < 0.2
    for index, (pixels, label) in enumerate(zip(digits.images, digits.target, strict=True)):
        folder = os.path.join(root, "test" if test[index] else "train", str(label))
        os.makedirs(folder, exist_ok=True)
        Image.fromarray((pixels * 255 / 16).astype(np.uint8)).convert("RGB").save(os.path.join(folder, f"{index}.png"))


def header_only(path: str) -> bool:
    """Reads only the header (for comparison: catches empty and random-bytes files, not truncated ones)."""
    try:
        with Image.open(path):
            return True
    except OSError:
        return False


def main(argv):
    del argv
    with tempfile.TemporaryDirectory() as root:
        write_digits(root)
        full_decode, times = image_folder._decodes, {"full decode": [], "header only": [], "build_input": []}  # noqa: SLF001
        for _ in range(ROUNDS):  # alternated, so load from other processes hits both alike
            for name, check in (("full decode", full_decode), ("header only", header_only)):
                image_folder._decodes = check  # noqa: SLF001
                start = time.perf_counter()
                scan = image_folder.scan_image_folder(root)
                times[name].append(time.perf_counter() - start)
            image_folder._decodes = full_decode  # noqa: SLF001
            config = test_config.get_config()
            config.data.update(name="image_folder", image_folder=root, image_size=8, crop_padding=0)
            start = time.perf_counter()
            build_input(config)
            times["build_input"].append(time.perf_counter() - start)
        count = sum(len(paths) for split in scan.images.values() for paths in split.values())
        print(f"{count} images; median of {ROUNDS} rounds:")
        for name, values in times.items():
            print(f"  {name:12s} {np.median(values) * 1e3:8.1f} ms ({np.median(values) / count * 1e3:.3f} ms/image)")


if __name__ == "__main__":
    app.run(main)
