"""Writes "your own data" datasets made from real Fashion-MNIST: 32×32×3 images, any subset of classes, as an
``.npz`` archive or an image folder (PNG), for tests, benchmarks and the README's examples.

    python scripts/own_data.py --out=/tmp/fm32.npz                      # all 10 classes, 60k/10k, 5k validation
    python scripts/own_data.py --out=/tmp/fm32_5 --format=images --classes=0,1,2,3,4 --train=2000 --test=500

Each 28×28 grey image is padded by 2 pixels to 32×32 and copied into 3 channels (the shape of CIFAR-10 and of
``keras.applications`` models' smallest inputs); labels are renumbered 0..C-1 in the order of ``--classes`` and
``class_names`` keep Fashion-MNIST's names. The validation split is taken from the training images (never the test
images), the same subset for every format.
"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tfprune.experiments.data import builtin as data_lib  # noqa: E402  pylint: disable=wrong-import-position


def padded_rgb(x):
    """uint8 (N, 28, 28) -> uint8 (N, 32, 32, 3): zero border of 2 pixels, the grey value in every channel."""
    return np.repeat(np.pad(x, ((0, 0), (2, 2), (2, 2)))[..., None], 3, axis=-1)


def make_splits(classes=None, train=None, val=0, test=None, seed=0, data_dir=None):
    """``({split: (x uint8 (N, 32, 32, 3), y int32)}, class names)`` from real Fashion-MNIST.

    Args:
      classes: Fashion-MNIST labels to keep, in the order that numbers them 0..C-1 (None: all 10).
      train, test: examples per split (None: all of the kept classes); val: examples moved from train to val.
    """
    names = data_lib.CLASS_NAMES["fashion_mnist"]
    classes = list(range(10)) if classes is None else [int(c) for c in classes]
    (x_train, y_train), (x_test, y_test) = data_lib.load_dataset("fashion_mnist", data_dir, download=False)
    out = {}
    rng = np.random.default_rng(seed)
    for split, x, y, n in (("train", x_train, y_train, None if train is None else train + val),
                           ("test", x_test, y_test, test)):
        keep = np.flatnonzero(np.isin(y, classes))
        if n is not None:
            keep = np.sort(rng.choice(keep, size=min(n, len(keep)), replace=False))
        images = np.round(x[keep] * 255).astype(np.uint8)  # load_dataset scaled them by 1/255: exactly undone
        labels = np.array([classes.index(int(c)) for c in y[keep]], np.int32)
        out[split] = (padded_rgb(images), labels)
    if val:
        x, y = out["train"]
        order = rng.permutation(len(x))
        out["val"] = (x[np.sort(order[:val])], y[np.sort(order[:val])])
        out["train"] = (x[np.sort(order[val:])], y[np.sort(order[val:])])
    return out, [names[c] for c in classes]


def write_npz(path, splits, class_names):
    """``x_<split>``, ``y_<split>`` for every split and ``class_names`` (a string array), compressed."""
    arrays = {f"{a}_{s}": v for s, (x, y) in splits.items() for a, v in (("x", x), ("y", y))}
    np.savez_compressed(path, class_names=np.array(class_names), **arrays)


def write_image_folder(root, splits, class_names, copies=1, side=None):
    """``root/<split>/<class>/<index>.png`` for every image (``copies`` > 1 writes each image that many times, as
    ``<index>_<copy>.png``; ``side``: each image resized bilinearly to side×side first: large folders of real
    images for streaming)."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    safe = [n.replace("/", "-") for n in class_names]  # "T-shirt/top" is no folder name
    for split, (x, y) in splits.items():
        for name in safe:
            os.makedirs(os.path.join(root, split, name), exist_ok=True)
        for i, (image, label) in enumerate(zip(x, y)):
            if side:
                image = tf.cast(tf.round(tf.image.resize(image, (side, side))), tf.uint8)
            png = tf.io.encode_png(image).numpy()
            for c in range(copies):
                suffix = "" if copies == 1 else f"_{c}"
                with open(os.path.join(root, split, safe[label], f"{i:06d}{suffix}.png"), "wb") as f:
                    f.write(png)
    return safe


def main(argv):
    from absl import flags  # pylint: disable=g-import-not-at-top
    del argv
    f = flags.FLAGS
    splits, names = make_splits(f.classes and [int(c) for c in f.classes], f.train, f.val, f.test, f.seed,
                                f.data_dir)
    if f.format == "npz":
        write_npz(f.out, splits, names)
    else:
        write_image_folder(f.out, splits, names, f.copies)
    print(f"wrote {f.out}: " + ", ".join(f"{s} {len(x)}" for s, (x, _) in splits.items()) + f"; classes {names}")


if __name__ == "__main__":
    from absl import app, flags  # pylint: disable=g-import-not-at-top
    flags.DEFINE_string("out", None, "Output .npz file or image folder.", required=True)
    flags.DEFINE_enum("format", "npz", ["npz", "images"], "Archive or PNG folder.")
    flags.DEFINE_list("classes", None, "Fashion-MNIST labels to keep (default all).")
    flags.DEFINE_integer("train", None, "Training examples (default all).")
    flags.DEFINE_integer("val", 5000, "Examples moved from training to validation.")
    flags.DEFINE_integer("test", None, "Test examples (default all).")
    flags.DEFINE_integer("copies", 1, "Copies of each image (image folders: make a large folder).")
    flags.DEFINE_integer("seed", 0, "Subset seed.")
    flags.DEFINE_string("data_dir", None, "Where Fashion-MNIST is (default: the usual search).")
    app.run(main)
