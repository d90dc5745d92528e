"""Light augmentation of pipeline windows for training only.

A window's nine channels are three 3-axis triplets in the phone's frame:
body_acc xyz, body_gyro xyz, total_acc xyz. A phone worn slightly differently
sees every triplet rotated by the same rotation, so :func:`rotate` applies one
small random rotation per window to all three triplets (the filters are
linear, so rotating the filtered signals is what the pipeline would emit for
the rotated phone). :func:`scale` multiplies a window by a factor near 1
(sensor gain, vigour) and :func:`jitter` adds small noise.

>>> import numpy as np
>>> x = np.random.default_rng(0).normal(size=(4, 128, 9)).astype("float32")
>>> y = rotate(x, max_degrees=10, rng=np.random.default_rng(1))
>>> bool(np.allclose(np.linalg.norm(y[..., 6:9], axis=-1), np.linalg.norm(x[..., 6:9], axis=-1), atol=1e-5))
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TRIPLETS = (slice(0, 3), slice(3, 6), slice(6, 9))


def random_rotations(n: int, max_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices about uniformly random axes, angles uniform in ±max_degrees."""
    from scipy.spatial.transform import Rotation

    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.deg2rad(rng.uniform(-max_degrees, max_degrees, size=(n, 1)))
    return Rotation.from_rotvec(axes * angles).as_matrix()


def rotate(x: np.ndarray, max_degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Rotate every triplet of each window by that window's one random rotation."""
    rot = random_rotations(len(x), max_degrees, rng).astype(x.dtype)
    out = np.empty_like(x)
    for part in TRIPLETS:
        out[..., part] = np.einsum("nij,ntj->nti", rot, x[..., part])
    return out


def scale(x: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Multiply each window by one factor drawn from N(1, sigma)."""
    return x * rng.normal(1.0, sigma, size=(len(x), 1, 1)).astype(x.dtype)


def jitter(x: np.ndarray, sigma: np.ndarray | float, rng: np.random.Generator) -> np.ndarray:
    """Add Gaussian noise (``sigma`` per channel or scalar)."""
    return x + (rng.normal(size=x.shape) * sigma).astype(x.dtype)


@dataclass(frozen=True)
class Augmentation:
    """One augmentation recipe; ``apply`` transforms a batch of windows.

    ``jitter`` is relative to each channel's standard deviation in the
    training windows (``channel_std``), so it is small on every channel.
    """

    max_degrees: float = 10.0
    scale_sigma: float = 0.05
    jitter: float = 0.02

    def apply(self, x: np.ndarray, rng: np.random.Generator, channel_std: np.ndarray | float = 1.0) -> np.ndarray:
        if self.max_degrees > 0:
            x = rotate(x, self.max_degrees, rng)
        if self.scale_sigma > 0:
            x = scale(x, self.scale_sigma, rng)
        if self.jitter > 0:
            x = jitter(x, self.jitter * np.asarray(channel_std), rng)
        return x.astype(np.float32, copy=False)


def augmented_batches(x: np.ndarray, y: np.ndarray, batch_size: int, augmentation: Augmentation | None, seed: int):
    """A ``keras.utils.PyDataset`` of shuffled (optionally augmented) batches, reshuffled every epoch."""
    import keras

    channel_std = x.reshape(-1, x.shape[-1]).std(axis=0)

    class _Batches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return int(np.ceil(len(x) / batch_size))

        def __getitem__(self, i: int):
            idx = self.order[i * batch_size : (i + 1) * batch_size]
            xb = x[idx]
            if augmentation is not None:
                xb = augmentation.apply(xb, self.rng, channel_std)
            return xb, y[idx]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return _Batches()


def uniform_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` rotation matrices drawn uniformly over all 3-D orientations (any angle)."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(n, random_state=rng).as_matrix()


def rotation_within(max_degrees: float | None, rng: np.random.Generator) -> np.ndarray:
    """One rotation matrix: uniform over all orientations when ``max_degrees``
    is None, else about a random axis by an angle uniform in ±max_degrees."""
    if max_degrees is None:
        return uniform_rotations(1, rng)[0]
    return random_rotations(1, max_degrees, rng)[0]


def rotate_samples(samples: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """Raw ``(n, 6)`` samples (acc xyz, gyro xyz) as a device turned by
    ``rotation`` would have measured them (both sensors share the frame).

    >>> r = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])   # 90° about z
    >>> rotate_samples(np.array([[1.0, 0, 0, 0, 2, 0]]), r).tolist()
    [[0.0, 1.0, 0.0, -2.0, 0.0, 0.0]]
    """
    out = np.empty_like(samples)
    out[:, 0:3] = samples[:, 0:3] @ rotation.T.astype(samples.dtype)
    out[:, 3:6] = samples[:, 3:6] @ rotation.T.astype(samples.dtype)
    return out
