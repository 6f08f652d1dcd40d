"""Image folders `root/<split>/<class>/<image>`: one scan before tf.data is built, then TFDS's `ImageFolder`.

The scan lists every split and class folder, ignores (and counts) files that are not .png/.jpg/.jpeg, and
decodes each image once with PIL, so that an empty class folder, a class found only in the eval split and an
undecodable image are each one error naming them, instead of a class that cannot be learned or a TensorFlow decode
error that names no file. Decoding every file costs about 0.15 ms per small PNG (BENCHMARKS.md); the pipeline
decodes them all anyway when it fills its cache.
"""

import collections
import dataclasses
import logging
import os

import tensorflow_datasets as tfds
from PIL import Image

from visioncore_jax.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")  # what TFDS's ImageFolder reads


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """What one pass over an image folder found."""

    images: dict[str, dict[str, list[str]]]  # split -> class -> image paths that decode
    corrupt: tuple[str, ...]  # image files that do not decode (sorted)
    ignored: int  # files that are not images


def _decodes(path: str) -> bool:
    """Whether PIL decodes the whole file (a zero-byte, random-bytes or truncated file does not)."""
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        return False


def _subfolders(path: str) -> list[str]:
    return sorted(name for name in os.listdir(path) if os.path.isdir(os.path.join(path, name)))


def scan_image_folder(root: str) -> FolderScan:
    """Lists and decodes every image under `root/<split>/<class>/`."""
    images: dict[str, dict[str, list[str]]] = {}
    corrupt, ignored = [], 0
    for split in _subfolders(root):
        images[split] = {}
        for name in _subfolders(os.path.join(root, split)):
            folder = os.path.join(root, split, name)
            files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                           if os.path.isfile(os.path.join(folder, f)))
            paths = [f for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
            ignored += len(files) - len(paths)
            readable = [path for path in paths if _decodes(path)]
            corrupt += sorted(set(paths) - set(readable))
            images[split][name] = readable
    return FolderScan(images, tuple(sorted(corrupt)), ignored)


def _listing(items, limit: int = 5) -> str:
    items = list(items)
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_image_folder(scan: FolderScan, root: str, train_split: str, eval_split: str, skip_corrupt: bool) -> None:
    """Raises an InputError for a missing split, an undecodable image (unless `skip_corrupt`), an empty class
    folder, or a class that only the eval split has; logs the files skipped and ignored."""
    for key, split in (("train_split", train_split), ("eval_split", eval_split)):
        if split not in scan.images:
            raise InputError(f"--config.data.{key}={split!r} is not a folder of {root} (splits: "
                             f"{sorted(scan.images)}).")
    if scan.corrupt and not skip_corrupt:
        raise InputError(f"{len(scan.corrupt)} image(s) in {root} do not decode: {_listing(scan.corrupt)}; delete "
                         "them, or skip them with --config.data.skip_corrupt=True.")
    if scan.corrupt:
        logging.warning("Skipped %d undecodable images in %s (config.data.skip_corrupt): %s", len(scan.corrupt),
                        root, _listing(scan.corrupt))
    if scan.ignored:
        logging.info("Ignored %d files in %s that are not %s images.", scan.ignored, root, "/".join(IMAGE_EXTENSIONS))
    empty = [f"{split}/{name}" for split in (train_split, eval_split)
             for name, paths in scan.images[split].items() if not paths]
    if empty:
        raise InputError(f"Class folders with no readable image in {root}: {_listing(empty)}; add images or remove "
                         "the folders (a class with no example cannot be learned).")
    eval_only = sorted(set(scan.images[eval_split]) - set(scan.images[train_split]))
    if eval_only:
        raise InputError(f"Classes in {root}/{eval_split} but not in {root}/{train_split}: {_listing(eval_only)}; "
                         "every class needs training images.")


def image_folder_builder(root: str, train_split: str, eval_split: str,
                         skip_corrupt: bool = False) -> tfds.core.DatasetBuilder:
    """TFDS `ImageFolder` over `root` (an existing directory) after `check_image_folder`, without the
    undecodable images when `skip_corrupt`."""
    root = os.path.expanduser(root)
    scan = scan_image_folder(root)
    check_image_folder(scan, root, train_split, eval_split, skip_corrupt)
    builder = tfds.folder_dataset.ImageFolder(root)
    if scan.corrupt:
        # ImageFolder has no option to leave files out: filter its example lists (what `_as_dataset` reads) and
        # the split sizes derived from them.
        corrupt = set(scan.corrupt)
        examples = collections.OrderedDict(
            (split, [e for e in split_examples if e.image_path not in corrupt])
            for split, split_examples in builder._split_examples.items())  # noqa: SLF001
        builder._split_examples = examples  # noqa: SLF001
        builder.info.set_splits(tfds.core.SplitDict([
            tfds.core.SplitInfo(name=split, shard_lengths=[len(e)], num_bytes=0) for split, e in examples.items()]))
    return builder
