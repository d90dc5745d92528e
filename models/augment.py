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
from typing import Any

import numpy as np

from harstream.stream.core.protocol import STANDARD_GRAVITY

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


# ------------------------------------------------------------------ swinging limbs
#
# A phone in a trouser pocket rides on the thigh, a watch on the forearm. Both
# hang from a joint (hip, shoulder) that moves with the trunk, and both swing
# about it once per stride (two steps): the thigh pitches ±15-35° (hip
# flexion/extension in walking, Perry & Burnfield "Gait Analysis"), the arm
# ±8-35° about the shoulder with a forearm roll of a few to 20° (arm swing
# studies: Meyns et al. 2013). Rotating and scaling waist data makes none of
# that: the swing turns gravity through the device frame at the stride
# frequency (±0.3-0.6 g that the 0.3 Hz gravity filter cannot follow), adds
# the lever's tangential and centripetal accelerations and a strong rotation
# rate about one horizontal axis. :func:`simulate_limb` synthesises exactly
# those rigid-body kinematics on top of a HAPT waist recording, driven by the
# waist's own gait phase, so the trunk's bounce, the subject's cadence and the
# labels stay real and only the limb is simulated.

#: The HAPT waist device's axes (measured: standing, x reads +1 g; walking,
#: z carries the stride frequency — the body's side-to-side sway — and y the
#: step frequency — forward-backward).
WAIST_UP = np.array([1.0, 0.0, 0.0])
WAIST_SIDEWAYS = np.array([0.0, 0.0, 1.0])
LIMBS = ("thigh", "wrist")


@dataclass(frozen=True)
class LimbMotion:
    """How one simulated limb swings (angles in degrees, lengths in metres)."""

    kind: str
    swing: float  # pendulum amplitude, ± degrees about the sideways axis
    harmonic: float  # relative amplitude of the second harmonic (step frequency)
    harmonic_phase: float  # radians
    phase: float  # radians: where in the stride the swing peaks
    lever: float  # joint → device
    roll: float  # ± degrees about the limb's own long axis (forearm pronation)
    roll_phase: float
    offset: float  # mean flexion, degrees
    trunk_coupling: float  # share of the trunk's own acceleration reaching the device

    @staticmethod
    def draw(kind: str, rng: np.random.Generator) -> LimbMotion:
        """A random limb of ``kind`` (``"thigh"`` or ``"wrist"``) within its
        :data:`LIMB_RANGES` (phases uniform over a turn)."""
        ranges = _ranges_of(kind, LIMB_RANGES)
        # one draw per field, in the dataclass's order (a seed gives the same limb as it always did)
        values = {
            name: rng.uniform(0, 2 * np.pi) if name in PHASES else rng.uniform(*ranges[name]) for name in LIMB_FIELDS
        }
        return LimbMotion(kind, **values)

    @staticmethod
    def draw_unseen(kind: str, rng: np.random.Generator) -> LimbMotion:
        """A random limb of ``kind`` from ranges *beyond* :meth:`draw`'s
        (:data:`UNSEEN_RANGES`: larger swings, longer levers, stronger
        step-frequency harmonics and rolls): for studies, to see how a model
        taught :meth:`draw`'s limbs copes with limbs it never saw."""
        from dataclasses import replace

        limb = LimbMotion.draw(kind, rng)
        beyond: dict[str, Any] = {name: rng.uniform(*lo_hi) for name, lo_hi in _ranges_of(kind, UNSEEN_RANGES).items()}
        return replace(limb, **beyond)


#: The fields :meth:`LimbMotion.draw` draws, in its order, and which of them are phases.
LIMB_FIELDS = (
    "swing",
    "harmonic",
    "harmonic_phase",
    "phase",
    "lever",
    "roll",
    "roll_phase",
    "offset",
    "trunk_coupling",
)
PHASES = ("harmonic_phase", "phase", "roll_phase")
#: Each limb's ranges (uniform) for :meth:`LimbMotion.draw` (see the note above the class).
LIMB_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "thigh": {
        "swing": (15, 35),
        "harmonic": (0, 0.3),
        "lever": (0.15, 0.35),
        "roll": (0, 6),
        "offset": (-5, 15),
        "trunk_coupling": (0.9, 1.1),
    },
    "wrist": {
        "swing": (8, 25),
        "harmonic": (0, 0.4),
        "lever": (0.5, 0.75),
        "roll": (3, 20),
        "offset": (0, 20),
        "trunk_coupling": (0.6, 1.0),
    },
}
#: What :meth:`LimbMotion.draw_unseen` draws afresh after :meth:`LimbMotion.draw`, in this order.
UNSEEN_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "thigh": {"swing": (35, 40), "lever": (0.35, 0.4), "harmonic": (0.3, 0.4), "roll": (6, 10)},
    "wrist": {
        "swing": (25, 30),
        "lever": (0.75, 0.8),
        "harmonic": (0.4, 0.5),
        "roll": (20, 25),
        "trunk_coupling": (0.5, 0.6),
    },
}


def _ranges_of(kind: str, table: dict[str, dict[str, tuple[float, float]]]) -> dict[str, tuple[float, float]]:
    if kind not in table:
        raise ValueError(f"limb kind {kind!r}: expected one of {LIMBS}")
    return table[kind]


def gait_phase(samples: np.ndarray, rate: float = 50.0) -> tuple[np.ndarray, np.ndarray]:
    """``(stride phase in radians, walking gate 0..1)`` per sample of a HAPT
    waist recording: the step phase is the analytic (Hilbert) phase of the
    vertical acceleration band-passed to 0.5-3 Hz, the stride phase half of
    it; the gate rises from 0 to 1 as that band's envelope (1 s mean) goes
    from 0.04 to 0.1 g, so a still subject's limb does not swing.
    Offline and non-causal: this builds training data, it never serves."""
    from scipy.signal import butter, hilbert, sosfiltfilt

    vertical = samples[:, 0:3] @ WAIST_UP
    sos = butter(2, (0.5, 3.0), btype="bandpass", fs=rate, output="sos")
    band = sosfiltfilt(sos, vertical - vertical.mean())
    analytic = hilbert(band)
    # the analytic phase of a weak (still) signal jumps about; its rate, clipped
    # to human cadences (1-2.8 steps/s) and smoothed over half a second, integrates
    # to a phase that a limb can follow without impossible accelerations
    cadence = np.diff(np.unwrap(np.angle(analytic)), prepend=0.0) * rate / (2 * np.pi)
    half = max(1, int(rate / 2))
    cadence = np.convolve(np.clip(cadence, 1.0, 2.8), np.ones(half) / half, mode="same")
    phase = np.cumsum(2 * np.pi * cadence / rate) / 2.0
    k = max(1, int(rate))
    envelope = np.convolve(np.abs(analytic), np.ones(k) / k, mode="same")
    gate = np.clip((envelope - 0.04) / 0.06, 0.0, 1.0)
    return phase, gate


def _axis_angle(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(n, 3, 3)`` about one unit ``axis`` by ``angle`` radians (Rodrigues)."""
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    s, c = np.sin(angle)[:, None, None], np.cos(angle)[:, None, None]
    return np.eye(3)[None] + s * k[None] + (1 - c) * (k @ k)[None]


def simulate_limb(samples: np.ndarray, limb: LimbMotion, rate: float = 50.0) -> np.ndarray:
    """Raw ``(n, 6)`` samples (acc in g, gyro in rad/s) of a device on a
    limb swinging as ``limb`` says, hanging from a joint that moves like the
    HAPT waist device that recorded ``samples``.

    In the waist frame the limb hangs down (−up) from its joint and turns by
    ``θ(t) = offset + gate·A·(sin(φ+φ0) + h·sin(2(φ+φ0)+β))`` about the
    sideways axis, φ the waist's stride phase (:func:`gait_phase`), then
    rolls by ``ψ(t)`` about its own axis. The device measures, in its own
    frame ``R(t)``: the joint's specific force (the waist's, the trunk's
    motion scaled by ``trunk_coupling``) plus the lever's acceleration
    ``d²(R ℓ)/dt²`` (tangential and centripetal), and the waist's rotation
    rate plus the limb's own. The result is in the limb's frame; turn it
    with :func:`rotate_samples` for a pocket or strap worn another way.
    """
    from scipy.signal import butter, sosfiltfilt

    samples = np.asarray(samples, np.float64)
    phase, gate = gait_phase(samples, rate)
    phi = phase + limb.phase
    swing = np.deg2rad(limb.swing) * gate * (np.sin(phi) + limb.harmonic * np.sin(2 * phi + limb.harmonic_phase))
    theta = np.deg2rad(limb.offset) + swing
    psi = np.deg2rad(limb.roll) * gate * np.sin(phi + limb.roll_phase)
    # device orientation in the waist frame: swing about sideways, then roll about the limb's long axis
    rotation = _axis_angle(WAIST_SIDEWAYS, theta) @ _axis_angle(WAIST_UP, psi)

    lever = rotation @ (-limb.lever * WAIST_UP)  # joint → device, metres, (n, 3)
    lever_acc = np.gradient(np.gradient(lever, axis=0), axis=0) * rate * rate / STANDARD_GRAVITY

    acc = samples[:, 0:3]
    if limb.trunk_coupling != 1.0:  # the trunk's own motion (not gravity) reaches a loose limb damped
        sos = butter(2, 0.3, fs=rate, output="sos")
        gravity = sosfiltfilt(sos, acc, axis=0)
        acc = gravity + limb.trunk_coupling * (acc - gravity)
    force = acc + lever_acc  # specific force at the device, waist frame, g

    # the limb's own rotation rate in the device frame: log of R(t)ᵀR(t+dt), per second
    from scipy.spatial.transform import Rotation

    step = np.einsum("nji,njk->nik", rotation[:-1], rotation[1:])
    own = Rotation.from_matrix(step).as_rotvec() * rate
    own = np.concatenate([own[:1], 0.5 * (own[1:] + own[:-1]), own[-1:]])  # centred on each sample

    out = np.empty_like(samples)
    out[:, 0:3] = np.einsum("nji,nj->ni", rotation, force)  # Rᵀ · force
    out[:, 3:6] = np.einsum("nji,nj->ni", rotation, samples[:, 3:6]) + own
    return out


# ------------------------------------------------------------------ moving while staying put
#
# A person sitting or standing does not hold a wrist or a thigh still. The hand
# reaches for a cup, gestures while talking, types; the thigh shifts when the
# legs cross or uncross, and a knee bounces. HAPT's waist sees almost none of
# it, and :func:`simulate_limb` keeps a still limb at its mean angle, so no
# model taught from them has seen a limb that moves while its owner stays put.
# :func:`simulate_fidgets` adds such motion to the still bouts of a simulated
# limb recording, from the kinematics of human movement rather than data:
# reaches and gestures follow the minimum-jerk profile (Flash & Hogan 1985),
# 0.3-1.2 s each way over 3-35 cm while the forearm turns 10-70°; physiological
# tremor and typing add 3-9 Hz vibration of 0.005-0.03 g; a bouncing knee
# oscillates at 3.5-6 Hz. What it does not make: periodic hand work at step
# frequencies (wiping, stirring, waving), which a wrist step counter counts as
# steps too.


@dataclass(frozen=True)
class Fidgets:
    """How one simulated limb moves while its owner sits or stands (rates per
    minute, times in seconds, angles in degrees, lengths in metres, g)."""

    kind: str
    per_minute: float  # reach-hold-return movements
    reach: tuple[float, float]  # each movement's one-way time
    hold: tuple[float, float]  # time held away before coming back
    angle: tuple[float, float]  # how far the limb turns
    distance: tuple[float, float]  # how far the device travels
    tremor_g: float  # RMS of the 3-9 Hz vibration (tremor, typing)
    bounces_per_minute: float  # bouts of a bouncing knee
    bounce_g: tuple[float, float]  # its acceleration amplitude

    @staticmethod
    def draw(kind: str, rng: np.random.Generator) -> Fidgets:
        """A random fidgeting habit of ``kind`` within :data:`FIDGET_RANGES`."""
        r = _ranges_of(kind, FIDGET_RANGES)
        return Fidgets(
            kind,
            per_minute=float(rng.uniform(*r["per_minute"])),
            reach=r["reach"],
            hold=r["hold"],
            angle=r["angle"],
            distance=r["distance"],
            tremor_g=float(rng.uniform(*r["tremor_g"])),
            bounces_per_minute=float(rng.uniform(*r["bounces_per_minute"])),
            bounce_g=r["bounce_g"],
        )


#: Ranges per limb (see the note above :class:`Fidgets`). A thigh's movements
#: are posture shifts (legs crossed, held long); a wrist's are reaches and gestures.
FIDGET_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "wrist": {
        "per_minute": (3, 20),
        "reach": (0.3, 1.2),
        "hold": (0.0, 4.0),
        "angle": (10, 70),
        "distance": (0.03, 0.35),
        "tremor_g": (0.005, 0.03),
        "bounces_per_minute": (0, 0),
        "bounce_g": (0, 0),
    },
    "thigh": {
        "per_minute": (0.5, 4),
        "reach": (0.5, 1.5),
        "hold": (2.0, 30.0),
        "angle": (10, 45),
        "distance": (0.02, 0.2),
        "tremor_g": (0.002, 0.01),
        "bounces_per_minute": (0, 1.5),
        "bounce_g": (0.05, 0.3),
    },
}
#: HAPT labels of the bouts a limb fidgets in: sitting and standing.
FIDGET_LABELS = (4, 5)


def minimum_jerk(tau: np.ndarray) -> np.ndarray:
    """The minimum-jerk position profile from 0 to 1 over ``tau`` in [0, 1]
    (clipped outside): 10τ³ - 15τ⁴ + 6τ⁵.

    >>> minimum_jerk(np.array([-1.0, 0.0, 0.5, 1.0, 2.0])).tolist()
    [0.0, 0.0, 0.5, 1.0, 1.0]
    """
    t = np.clip(tau, 0.0, 1.0)
    return t**3 * (10 - 15 * t + 6 * t * t)


def simulate_fidgets(
    samples: np.ndarray, labels: np.ndarray, fidgets: Fidgets, rng: np.random.Generator, rate: float = 50.0
) -> np.ndarray:
    """Raw ``(n, 6)`` samples (acc in g, gyro in rad/s) of a device that
    fidgets as ``fidgets`` says inside every sitting or standing bout of
    ``labels`` (:data:`FIDGET_LABELS`), on top of what it measured there.

    Each movement turns the device about a random axis by an angle in
    ``angle`` and carries it ``distance`` along a random direction, out and
    back on :func:`minimum_jerk` profiles with a ``hold`` between; movements
    stay inside their bout. The device measures its specific force and rate
    of turn in its own moving frame, exactly as :func:`simulate_limb` does.
    """
    from scipy.signal import butter, sosfilt
    from scipy.spatial.transform import Rotation

    samples = np.asarray(samples, np.float64)
    labels = np.asarray(labels)
    n = len(samples)
    t = np.arange(n) / rate
    rotvec = np.zeros((n, 3))
    position = np.zeros((n, 3))
    vibration = np.zeros((n, 3))
    still = np.isin(labels, FIDGET_LABELS)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], still.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        span = (stop - start) / rate
        at = rng.exponential(60.0 / fidgets.per_minute)
        while at < span:
            there, hold, back = rng.uniform(*fidgets.reach), rng.uniform(*fidgets.hold), rng.uniform(*fidgets.reach)
            if at + there + hold + back >= span:
                break
            axis, direction = rng.normal(size=3), rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            direction /= np.linalg.norm(direction)
            local = t[start:stop] - t[start] - at
            profile = minimum_jerk(local / there) - minimum_jerk((local - there - hold) / back)
            rotvec[start:stop] += np.outer(profile, axis * np.deg2rad(rng.uniform(*fidgets.angle)))
            position[start:stop] += np.outer(profile, direction * rng.uniform(*fidgets.distance))
            at += there + hold + back + rng.exponential(60.0 / fidgets.per_minute)
        noise = rng.normal(size=(stop - start, 3))
        sos = butter(2, (3.0, 9.0), btype="bandpass", fs=rate, output="sos")
        shaped = sosfilt(sos, noise, axis=0)
        vibration[start:stop] = fidgets.tremor_g * shaped / max(float(np.sqrt((shaped**2).sum(axis=1).mean())), 1e-12)
        if fidgets.bounces_per_minute > 0:
            at = rng.exponential(60.0 / fidgets.bounces_per_minute)
            while at < span:
                length = rng.uniform(3.0, 20.0)
                inside = (t[start:stop] - t[start] >= at) & (t[start:stop] - t[start] < min(at + length, span))
                direction = rng.normal(size=3)
                direction /= np.linalg.norm(direction)
                wave = rng.uniform(*fidgets.bounce_g) * np.sin(2 * np.pi * rng.uniform(3.5, 6.0) * t[start:stop])
                vibration[start:stop] += np.outer(np.where(inside, wave, 0.0), direction)
                at += length + rng.exponential(60.0 / fidgets.bounces_per_minute)

    turn = Rotation.from_rotvec(rotvec).as_matrix()  # device frame at rest → moved, (n, 3, 3)
    carried = np.gradient(np.gradient(position, axis=0), axis=0) * rate * rate / STANDARD_GRAVITY
    step = np.einsum("nji,njk->nik", turn[:-1], turn[1:])
    own = Rotation.from_matrix(step).as_rotvec() * rate
    own = np.concatenate([own[:1], 0.5 * (own[1:] + own[:-1]), own[-1:]]) if n > 1 else np.zeros((n, 3))
    out = np.empty_like(samples)
    out[:, 0:3] = np.einsum("nji,nj->ni", turn, samples[:, 0:3] + carried) + vibration
    out[:, 3:6] = np.einsum("nji,nj->ni", turn, samples[:, 3:6]) + own
    return out
