"""Still only on evidence of stillness, moving only without evidence of rest:
a window that steps is never shown STILL, a window at rest never moving.

The placement-free model learned a walk from a waist and from simulated limbs;
a real arm or thigh that swings harder than those can fall outside everything
it learned, and an RBF SVM far from its support vectors falls back to STILL.
Whether a device is moving does not need the model: a walk is a periodic
acceleration at step frequencies, whatever the device's place and turn. So a
window of a device in ``any`` or ``personal`` mode whose body acceleration
(gravity removed: channels 0-2) shows all three of

- **energy** well above a resting device's micro-motion: the RMS of the body
  acceleration vector at least :data:`MIN_RMS_G` (a phone on a table reads
  about 0.001-0.003 g of sensor noise; HAPT's sitting, standing and lying
  windows at the waist below 0.03 g in 99.9 %; a walk at the trunk about
  0.1-0.3 g, more on a thigh or a wrist);
- **step-band power**: at least :data:`MIN_BAND_SHARE` of that power between
  0.6 and 3 Hz (the stride, 0.6-1.4 Hz, and the step, 1.2-2.8 Hz: cadences of
  70-170 steps a minute);
- **regularity**: the normalised autocorrelation of the acceleration vector
  (the dot product of the signal with itself shifted, so it does not depend
  on how the device is turned) has a peak of at least :data:`MIN_REGULARITY`
  at a lag of one step or one stride (0.36-1.7 s), after falling below
  :data:`MIN_DIP` first (a slow drift is "regular" at every short lag; a
  gait comes back after a dip). Walk detectors on phones carried anywhere
  read the same two cues: Zee (Rai et al., MobiCom 2012) calls a phone idle
  below 0.01 g of standard deviation and walking at a normalised
  autocorrelation above 0.7 at the step lag; Brajdic & Harle (UbiComp 2013)
  found thresholds on the standard deviation and the autocorrelation
  among the best walk detectors on unconstrained phones

is MOVING (:func:`stepping`, all windows of a batch in a few numpy
operations). :class:`MovingEvidence` then keeps it from being shown STILL:
the probability of every non-moving class moves onto WALKING (the moving
class the placement-free model would otherwise give; stairs stay for the
stairs gate, :mod:`~harstream.stream.core.stairs`, to grant on its own
evidence).

The converse holds too: a window whose newest second (:data:`REST_SPAN`
samples: what is shown is the window's end) has a body acceleration RMS
below :data:`MAX_REST_G` is AT REST and is never shown moving, even if the
window as a whole steps (the walk ended inside it). No second of a walk at
any placement is that quiet: the quietest newest second of HAPT's training
subjects' walking and stairs windows reads 0.16 g at the waist (0.15 g on a
simulated wrist; none of 2,569 below 0.05 g at any placement), while 96 % of
their sitting, standing and lying windows' read below 0.05 g; a walk's trunk
bounces 2-5 cm at every step,
0.2-0.8 g peak at 1.5-2 Hz, two steps a second. What it corrects is what a
display decoder still holds of a walk that ended, and a limb's posture the
model misreads as a walk: the probability of every moving class moves onto
the non-moving class the model finds likeliest (STILL, or a calibrated
posture). Its cost: a walk far slower than HAPT's slowest (a
shuffle bouncing under 1 cm at 1.2 steps a second reads about 0.04 g RMS at
the trunk) would be shown STILL; a wrist or thigh swings more than the trunk.

A window that neither steps nor rests (:data:`NEITHER`) is left as the
model and decoder say.

>>> rule = MovingEvidence(("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "STILL"))
>>> rule.judge("STILL", [0.1, 0.0, 0.1, 0.8], STEPPING)
('WALKING', [0.9, 0.0, 0.1, 0.0])
>>> rule.judge("WALKING", [0.7, 0.0, 0.1, 0.2], AT_REST)
('STILL', [0.0, 0.0, 0.0, 1.0])
>>> rule.judge("STILL", [0.1, 0.0, 0.1, 0.8], NEITHER)
('STILL', [0.1, 0.0, 0.1, 0.8])
>>> t = np.arange(128) / 50.0
>>> w = np.zeros((4, 128, 9), np.float32); w[:, :, 2] = np.sin(2 * np.pi * 1.8 * t)
>>> w[0] *= 0.2; w[1] *= 0.002; w[2, :, 2] = 0.3 * np.sin(2 * np.pi * 0.3 * t)   # walk, table, slow sway
>>> w[3] *= 0.1                                                                    # too weak a walk to step
>>> stepping(w).tolist()
[True, False, False, False]
>>> motion_evidence(w).tolist()
[1, -1, 0, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: The samples' rate (Hz) and the lags (samples) of one step (2.8-1.2 Hz) to one stride (0.6 Hz).
RATE = 50.0
STEP_LAG = (18, 84)
#: The band of the stride and step fundamentals (Hz).
BAND_HZ = (0.6, 3.0)
#: Thresholds (see the module doc; chosen on HAPT's training subjects, docs/BENCHMARKS.md).
MIN_RMS_G = 0.08
MIN_BAND_SHARE = 0.35
MIN_REGULARITY = 0.5
MIN_DIP = 0.3
#: Below this body acceleration RMS (g) over its newest REST_SPAN samples (1 s) a window is at rest.
MAX_REST_G = 0.05
REST_SPAN = 50
#: What :func:`motion_evidence` says of a window.
STEPPING, NEITHER, AT_REST = 1, 0, -1

WALKING = "WALKING"
MOVING = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS")


def step_measures(windows: np.ndarray) -> np.ndarray:
    """``(n, 128, 9)`` windows in, ``(n, 4)`` out: each window's body
    acceleration RMS (g), the share of its power in :data:`BAND_HZ`, its
    regularity (the autocorrelation's highest peak at a step or stride lag
    after a dip below :data:`MIN_DIP`; 0 where there is none), and the RMS
    (g) of its newest :data:`REST_SPAN` samples."""
    body = np.asarray(windows, dtype=np.float64)[:, :, 0:3]
    n, length = body.shape[0], body.shape[1]
    if n == 0:
        return np.zeros((0, 4))
    body = body - body.mean(axis=1, keepdims=True)
    energy = np.einsum("nwc,nwc->nw", body, body)  # |a(t)|²
    rms = np.sqrt(energy.mean(axis=1))
    spectrum = np.fft.rfft(body * np.hanning(length)[None, :, None], axis=1)
    power = (np.abs(spectrum) ** 2).sum(axis=2)[:, 1:]  # without the mean
    freqs = np.fft.rfftfreq(length, 1.0 / RATE)[1:]
    in_band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    share = power[:, in_band].sum(axis=1) / np.maximum(power.sum(axis=1), 1e-18)
    # the vector autocorrelation at every lag (zero-padded FFT: not circular), each lag
    # normalised by the energy of the two parts it compares (Zee's normalisation)
    padded = np.fft.rfft(body, n=2 * length, axis=1)
    ac = np.fft.irfft((np.abs(padded) ** 2).sum(axis=2), n=2 * length, axis=1)[:, :length]
    cumulative = np.concatenate([np.zeros((n, 1)), np.cumsum(energy, axis=1)], axis=1)
    lags = np.arange(length)
    head = cumulative[:, length - lags]  # energy of samples 0 .. length-lag-1
    tail = cumulative[:, length : length + 1] - cumulative[:, lags]  # energy of samples lag .. length-1
    r = ac / np.sqrt(np.maximum(head * tail, 1e-18))
    lo, hi = STEP_LAG
    dipped = np.minimum.accumulate(r[:, 1:hi], axis=1)[:, lo - 2 : hi - 2] < MIN_DIP  # fell before each lag
    peak = (r[:, lo:hi] >= r[:, lo - 1 : hi - 1]) & (r[:, lo:hi] >= r[:, lo + 1 : hi + 1])
    regular = np.where(peak & dipped, r[:, lo:hi], 0.0).max(axis=1)
    newest = body[:, -REST_SPAN:] - body[:, -REST_SPAN:].mean(axis=1, keepdims=True)
    rest = np.sqrt(np.einsum("nwc,nwc->n", newest, newest) / newest.shape[1])
    return np.stack([rms, share, regular, rest], axis=1)


def stepping(windows: np.ndarray) -> np.ndarray:
    """Whether each window steps (all three cues of the module doc): ``(n,)`` bools."""
    return motion_evidence(windows) == STEPPING


def motion_evidence(windows: np.ndarray) -> np.ndarray:
    """Each window :data:`STEPPING`, :data:`AT_REST` or :data:`NEITHER` (see
    the module doc): ``(n,)`` int8."""
    return evidence_from(step_measures(windows))


def evidence_from(m: np.ndarray) -> np.ndarray:
    """:func:`motion_evidence` from windows' :func:`step_measures` ``(n, 4)``."""
    steps = (m[:, 0] >= MIN_RMS_G) & (m[:, 1] >= MIN_BAND_SHARE) & (m[:, 2] >= MIN_REGULARITY)
    return np.where(m[:, 3] < MAX_REST_G, AT_REST, np.where(steps, STEPPING, NEITHER)).astype(np.int8)


def evidence_of(
    windows: Sequence[np.ndarray], wanted: Sequence[bool], measures: Sequence[np.ndarray] | None = None
) -> list[np.ndarray | None]:
    """:func:`motion_evidence` of each device's new ``windows`` where
    ``wanted`` (None elsewhere), all in one call (per device a call costs
    more than a batched window); from their :func:`step_measures` if the
    caller has them already (``measures``, one array per device)."""
    idx = [i for i, (w, want) in enumerate(zip(windows, wanted)) if want and len(w)]
    out: list[np.ndarray | None] = [None] * len(windows)
    if idx and measures is not None:
        for i in idx:
            out[i] = evidence_from(measures[i])
    elif idx:
        every = motion_evidence(np.concatenate([windows[i] for i in idx]))
        for i, part in zip(idx, np.split(every, np.cumsum([len(windows[i]) for i in idx])[:-1])):
            out[i] = part
    return out


class MovingEvidence:
    """Keeps a stepping window from being shown as a non-moving class of a
    model of ``classes``, and a window at rest from being shown moving
    (pure; the same for every device): see the module doc. ``last`` says
    what the latest judgement changed: ``"steps"``, ``"rest"`` or ``""``."""

    __slots__ = ("classes", "walking", "moving", "still", "last")

    def __init__(self, classes: Sequence[str]):
        self.classes = tuple(classes)
        self.walking = self.classes.index(WALKING)
        self.moving = [i for i, c in enumerate(self.classes) if c in MOVING]
        self.still = [i for i, c in enumerate(self.classes) if c not in MOVING]
        self.last = ""

    def judge(self, label: str, probs: Sequence[float], evidence: int | None) -> tuple[str, list[float]]:
        """The label and probabilities that may be shown for a window that
        the model (or display) labelled ``label``, given its
        :func:`motion_evidence` (None: unknown, nothing changes)."""
        out = [float(p) for p in probs]
        if evidence == STEPPING and label not in MOVING:
            self.last, onto, taken = "steps", self.walking, self.still
        elif evidence == AT_REST and label in MOVING and self.still:
            # the likeliest non-moving class (ties: the first): STILL, or a calibrated posture
            self.last, taken = "rest", self.moving
            onto = max(self.still, key=lambda i: (out[i], -i))
        else:
            self.last = ""
            return label, out
        moved = sum(out[i] for i in taken)
        for i in taken:
            out[i] = 0.0
        out[onto] = round(out[onto] + moved, 6)  # at least every class it took had: the argmax
        return self.classes[onto], out
