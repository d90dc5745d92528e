"""The final history of one device: a fixed-lag smoother over the decoder's lattice.

The card shows the quick, causal "now" label (:mod:`~harstream.stream.core.decoder`).
The timeline, the day's minutes and every record kept show this history: each
window's state decided over the same hidden Markov model (the decoder's
states, transition matrix and emission) with ``lag`` windows of look-ahead,
given the state already decided for the window before. With lag 2 a window
is final 2.56 s after it ends (two more 1.28 s hops).

Two things keep a short bout out of the history. Bouts have a minimum length
(``min_windows``): each activity state of the lattice becomes a chain of that
many states, so a bout once entered lasts that long in the model (a
duration-expanded, semi-Markov-like lattice; transition states keep one
window). And a change from one activity to another is made final only when
the look-ahead agrees (``confirm``): if the next windows, decoded without the
minimum length, are not all in the new activity, the bout before goes on
(a bout shorter than the look-ahead, walking-stairs-walking within 2.56 s,
is merged into the one before it while it is still provisional). Neither
waits for more windows than the lag.

A device being handled (picked up, put down, carried between activities,
strapped on) is its own state. Its evidence comes from the signal beside the
classifier's probabilities: each window's body motion (the worker's
:func:`~harstream.stream.core.decoder.window_motion`) and gravity direction
(:func:`~harstream.stream.core.transition_direction.window_gravity`). A window
the classifier reads as a still posture (sitting, standing, lying) while the
body acceleration is about ``handled_motion`` g or more, or as walking or
stairs while the gravity direction turned ``handled_turn`` degrees or more
since the window before (a person walking keeps the device's orientation),
gives that share of its evidence to the handled state; so does a window read
as walking or stairs without steps (a walk's acceleration comes back at each
step or stride: its regularity,
:func:`~harstream.stream.core.stepping.step_measures`, far below
``handled_steps``; a hand moving the device does not step). The handled state is
shown as the bout it interrupts (a phone picked up while standing and put
down again is one stretch of standing, not standing, lying, standing), and as
``unknown`` where nothing was shown before it in the run. A window without
motion or gravity gives it nothing; a model without still postures (the
placement-free one) has no handled state.

A device set down, not worn (a phone on a table or a nightstand), is shown as
such: :data:`~harstream.stream.core.activities.SET_DOWN`, not an activity
(like a postural transition it is no change between activities, and the day
counts it apart from lying). A worn device moves with its wearer, however
still: breathing, the heartbeat and postural tremor keep its rotation and
body acceleration above the sensor's own noise; a device lying on something
still reads the noise alone. A window whose body motion is below
``set_down_motion`` g and whose rotation
(:func:`window_rotation`: the gyroscope about its own mean, so its constant
bias does not count) is below ``set_down_rotation`` rad/s is at rest;
``set_down_windows`` or more at-rest windows in a row are shown set down
(decided with the look-ahead the history has anyway, so a run of up to
``lag + 1`` windows is seen whole before its first window is final; nothing
final changes). A window without rotation (a device without a gyroscope) is
never at rest. The thresholds sit just above one phone's noise floor (the
HAPT recordings'); a phone whose sensors are noisier is never shown set down
(as before: lying, or what its posture reads), one whose gyroscope is much
quieter may show a person keeping very still as set down, and today's
gyroscopes are several times quieter than that 2011 phone's: so the state is
off unless a deployment sets ``set_down_rotation``.

A window stands for the middle half of its samples (a window is about its
middle): its piece of time runs from the end of the previous piece to 96 of
its 128 samples. The first window of a run also takes its first quarter, the
last one (when the run is settled) its last quarter, so pieces tile the
stream without gaps or overlaps.

:meth:`History.push` takes one window and returns the new final pieces (each
adjacent to the one before) and the provisional pieces after them, which
replace every provisional piece returned before (a settled device has none).
A long bout thus arrives in final pieces, one per window. Nothing final is
ever taken back: a piece starts no earlier than the history's
:attr:`~History.final_until`, and a window already seen (a duplicate, or out
of order) is refused. :meth:`History.settle` makes everything pending final
with the look-ahead there is (a device gone quiet); :meth:`History.restart`
also numbers windows afresh (the pipeline restarted after a gap or a new session).

>>> from harstream.stream.core.decoder import DecoderParams
>>> h = History(DecoderParams.uniform(["A", "B"], stay=0.9), HistorySettings(lag=1))
>>> h.push(0, 0.0, 2.54, [0.9, 0.1])             # nothing final yet: one provisional piece
[Piece(start=0.0, end=2.56, label='A', final=False)]
>>> h.push(1, 1.28, 3.82, [0.8, 0.2])[0]          # window 0 is final: its first three quarters
Piece(start=0.0, end=1.92, label='A', final=True)
>>> h.push(1, 1.28, 3.82, [0.1, 0.9]), h.refused  # seen already: refused, nothing changes
([], 'window 1 is not after window 1')
>>> h.settle()                                    # the device went quiet: the rest is final
[Piece(start=1.92, end=3.84, label='A', final=True)]
>>> h.restart()                                   # its pipeline restarted: windows count from 0 again
[]
>>> h.push(0, 3.0, 5.54, [0.1, 0.9])              # what is final stays: the new run starts at 3.84
[Piece(start=3.84, end=5.56, label='B', final=False)]
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harstream.stream.core.activities import POSTURES, SET_DOWN, UNKNOWN
from harstream.stream.core.decoder import Decoder, DecoderParams, Emission
from harstream.stream.core.pipeline import STEP, WINDOW
from harstream.stream.core.protocol import MAX_TIME
from harstream.stream.core.smoothing import refusal_reason
from harstream.stream.core.transition_direction import turn_degrees

#: How many hops of look-ahead the smoother may take at most: with 1.28 s
#: hops, 2 keeps every window final within 3 s of its end.
MAX_LAG = 2
#: A window longer than this (seconds, first to last sample) is not a 50 Hz window.
MAX_WINDOW_SECONDS = 60.0
METHODS = ("marginal", "viterbi")
#: The longest minimum bout the lattice may impose (windows; 8 is about 10 s).
MAX_MIN_WINDOWS = 8
#: The handled state (module docstring): how likely the device is picked up in a window, how
#: likely a (re)start finds it handled, and how steeply the share of a still posture's evidence
#: it takes rises with the window's motion (q = m^k / (m^k + handled_motion^k)).
HANDLED_ENTER = 0.02
HANDLED_INITIAL = 0.1
HANDLED_STEEPNESS = 2.0
#: The same for the lack of steps (q = handled_steps^k / (handled_steps^k + regularity^k)): steep,
#: almost a cut (steepness 2 and 4 kept less accuracy for as many changes on validation).
HANDLED_STEPS_STEEPNESS = 8.0


@dataclass(frozen=True)
class Piece:
    """From ``start`` to ``end`` (bus time, seconds) the device was doing ``label``."""

    start: float
    end: float
    label: str
    final: bool


@dataclass(frozen=True)
class HistorySettings:
    """The smoother's knobs; the defaults chosen on the validation subjects
    (`python -m harstream.models.studies.history_accuracy choose`, docs/reports/history_choice.json)."""

    lag: int = 2  # windows of look-ahead before a window is final
    method: str = "marginal"  # each window's most probable state, or the best path's
    stay: float = 20.0  # extra weight on staying put: matrix + stay * I, renormalised
    power: float = 0.5  # evidence ** power (below 1 trusts the classifier less)
    # what the next decision starts from: the filtered distribution of the last final window
    # ("soft"), or its decided state ("hard": consistent, but one wrong decision carries on)
    carry: str = "soft"
    # the shortest bout of an activity, in windows (1: any length, a plain hidden Markov model);
    # transition states keep 1 (a postural transition takes a window or two)
    min_windows: int = 8
    # a change between activities is made final only when this many windows of look-ahead (at
    # most lag: those there are) are decoded in the new activity too (0: off)
    confirm: int = 2
    # the device handled (module docstring): body motion (g, decoder.window_motion) at which a
    # window the classifier reads as a still posture is as likely the device moved by hand
    # (picked up, put down, carried) as a person keeping still (0: off, the history takes no motion)
    handled_motion: float = 0.2
    # the same for a window the classifier reads as walking or stairs: degrees its gravity direction
    # turned since the window before (a person walking keeps the device's orientation; 0: off)
    handled_turn: float = 45.0
    # the same for a window read as walking or stairs: the step regularity (stepping.step_measures, 0..1)
    # below which it is as likely the device moved by hand as a person walking (0: off); chosen on
    # validation (`history_accuracy steps`, docs/reports/history_steps.json)
    handled_steps: float = 0.25
    # how likely a handled device is still handled a window later (1.28 s)
    handled_stay: float = 0.3
    # a device set down, not worn (module docstring): a window is at rest below both (body motion, g,
    # decoder.window_motion; rotation, rad/s, window_rotation), and this many at-rest windows in a row
    # are shown SET_DOWN (rotation 0: off). Off by default: the thresholds chosen on validation
    # (`history_accuracy set_down`, docs/reports/history_set_down.json: rotation 0.0045) sit just above
    # one 2011 phone's gyroscope noise; today's gyroscopes are several times quieter, so a person
    # sitting still with the phone in a pocket would read as set down. It waits for each device's own
    # noise floor to be learnt.
    set_down_motion: float = 0.007
    set_down_rotation: float = 0.0
    set_down_windows: int = 3

    def __post_init__(self) -> None:
        if not (type(self.lag) is int and 0 <= self.lag <= MAX_LAG):
            raise ValueError(f"history lag {self.lag!r} must be an int in 0..{MAX_LAG}")
        if not (type(self.min_windows) is int and 1 <= self.min_windows <= MAX_MIN_WINDOWS):
            raise ValueError(f"history min_windows {self.min_windows!r} must be an int in 1..{MAX_MIN_WINDOWS}")
        if not (type(self.confirm) is int and 0 <= self.confirm <= MAX_LAG):
            raise ValueError(f"history confirm {self.confirm!r} must be an int in 0..{MAX_LAG}")
        if self.carry not in ("soft", "hard"):
            raise ValueError(f"history carry {self.carry!r} must be soft or hard")
        if self.method not in METHODS:
            raise ValueError(f"history method {self.method!r} must be one of {', '.join(METHODS)}")
        limits = [("stay", self.stay, 1e3), ("power", self.power, 10.0), ("handled_motion", self.handled_motion, 16.0)]
        limits += [("handled_turn", self.handled_turn, 180.0), ("handled_steps", self.handled_steps, 1.0)]
        for name, value, hi in limits:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= hi):
                raise ValueError(f"history {name} {value!r} must be within 0..{hi:g}")
        for name, value in (("set_down_motion", self.set_down_motion), ("set_down_rotation", self.set_down_rotation)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
                raise ValueError(f"history {name} {value!r} must be within 0..1")
        if not (type(self.set_down_windows) is int and 1 <= self.set_down_windows <= MAX_MIN_WINDOWS):
            raise ValueError(
                f"history set_down_windows {self.set_down_windows!r} must be an int in 1..{MAX_MIN_WINDOWS}"
            )
        stay = self.handled_stay
        if not (isinstance(stay, (int, float)) and math.isfinite(stay) and 0.0 <= stay < 1.0):
            raise ValueError(f"history handled_stay {stay!r} must be within 0..1 (1 excluded)")


@dataclass
class _Window:
    window: int
    t_start: float
    t_end: float
    evidence: np.ndarray
    rest: bool = False  # at rest: set down if enough such windows come in a row


@dataclass(frozen=True)
class Lattice:
    """The model a :class:`History` smooths over, for one decoder's parameters
    and one :class:`HistorySettings`: the same for every device of a model, so
    built once (:meth:`shared`) and never written to."""

    states: tuple[str, ...]
    still: np.ndarray  # the classes a moving device is not in (the still postures the model has)
    moving: np.ndarray
    handled: bool  # whether the device-handled state is in the lattice
    matrix: np.ndarray  # expanded by the minimum bout lengths
    initial: np.ndarray
    base: np.ndarray  # each expanded state's base state
    of_base: np.ndarray  # (expanded, base) one-hot: marginals per state
    plain: np.ndarray  # the base transition matrix, without minimum bout lengths
    log_matrix: np.ndarray
    evidence: Emission  # the decoder's own emission

    @staticmethod
    def build(params: DecoderParams, settings: HistorySettings) -> Lattice:
        matrix = params.matrix + settings.stay * np.eye(len(params.states))
        matrix, initial = matrix / matrix.sum(axis=1, keepdims=True), params.initial
        n = len(params.classes)
        still = np.array([i for i, c in enumerate(params.classes) if c in POSTURES], dtype=np.int64)
        moving = np.array([i for i, c in enumerate(params.classes) if c not in POSTURES], dtype=np.int64)
        handled = (settings.handled_motion > 0 or settings.handled_turn > 0 or settings.handled_steps > 0) and len(
            still
        ) > 0
        states = params.states
        if handled:
            matrix, initial = with_handled(matrix, initial, n, settings.handled_stay)
            states = (*params.states, UNKNOWN)
        expanded, initial, base = duration_lattice(
            matrix, initial, [settings.min_windows if i < n else 1 for i in range(len(states))]
        )
        with np.errstate(divide="ignore"):
            log_matrix = np.log(expanded)
        arrays = dict(
            still=still,
            moving=moving,
            matrix=expanded,
            initial=np.array(initial, dtype=np.float64),
            base=base,
            of_base=np.eye(len(states))[base],
            plain=matrix,
            log_matrix=log_matrix,
        )
        for array in arrays.values():
            array.flags.writeable = False
        return Lattice(states=states, handled=handled, evidence=Emission.of(params), **arrays)

    @staticmethod
    def shared(params: DecoderParams, settings: HistorySettings) -> Lattice:
        """The lattice of ``params`` and ``settings``, built at its first use."""
        key = (id(params), settings)
        held = _LATTICES.get(key)
        if held is not None and held[0]() is params:
            return held[1]
        lattice = Lattice.build(params, settings)
        # forgotten with its parameters (a model unloaded), so an id used again is never matched
        _LATTICES[key] = (weakref.ref(params, lambda _: _LATTICES.pop(key, None)), lattice)
        return lattice


_LATTICES: dict[tuple[int, HistorySettings], tuple[weakref.ref, Lattice]] = {}


class History:
    """Fixed-lag smoothing of one device's windows into final pieces of time."""

    def __init__(self, params: DecoderParams, settings: HistorySettings | None = None):
        self.settings = settings or HistorySettings()
        self.params = params
        # every device of a model smooths over the same lattice: built once, shared, read-only
        lattice = Lattice.shared(params, self.settings)
        self.states: tuple[str, ...] = lattice.states
        self._still, self._moving, self._handled = lattice.still, lattice.moving, lattice.handled
        self._matrix, self._initial, self._base = lattice.matrix, lattice.initial, lattice.base
        self._of_base, self._plain, self._log_matrix = lattice.of_base, lattice.plain, lattice.log_matrix
        self._evidence = lattice.evidence
        self._gravity: Sequence[float] | None = None  # the last window's gravity, as given
        self._pending: list[_Window] = []
        self._decided: int | None = None  # state of the last final window of this run
        self._held = UNKNOWN  # what the last final window of this run was shown as
        self._rest_run = 0  # at-rest windows in a row up to the last final window of this run
        self._filtered: np.ndarray | None = None  # its filtered state distribution
        self._last: _Window | None = None  # the last window taken (its number and times)
        self.final_until: float | None = None  # everything before this time is final
        self.refused: str | None = None

    # ------------------------------------------------------------ the verbs

    def push(
        self,
        window: int,
        t_start: float,
        t_end: float,
        probs: Sequence[float],
        motion: float | None = None,
        gravity: Sequence[float] | None = None,
        rotation: float | None = None,
        steps: float | None = None,
    ) -> list[Piece]:
        """One window (its number since the stream began, its first and last
        sample's time, its class probabilities, and if known its body motion:
        :func:`~harstream.stream.core.decoder.window_motion`, g; its gravity:
        :func:`~harstream.stream.core.transition_direction.window_gravity`; its
        rotation: :func:`window_rotation`, rad/s; its step regularity:
        :func:`~harstream.stream.core.stepping.step_measures`): the new final
        pieces, then the provisional ones. A window refused (:attr:`refused`
        says why) changes nothing and returns nothing; a cue that is not a
        finite number >= 0 counts as not known."""
        self.refused = self._refusal(window, t_start, t_end, probs)
        if self.refused is not None:
            return []
        out: list[Piece] = []
        last = self._last
        if last is not None and window != last.window + 1:
            out += self.settle()  # a gap in the windows: the run before it is over
            self._decided = self._filtered = self._gravity = None
            self._held = UNKNOWN
            self._rest_run = 0
        evidence = self._evidence(np.asarray(probs, dtype=np.float64)) ** self.settings.power
        if self._handled:
            evidence = self._with_handled(evidence, motion, self._turn(gravity), steps)
        item = _Window(window, float(t_start), float(t_end), evidence, self._at_rest(motion, rotation))
        self._pending.append(item)
        self._last = item
        while len(self._pending) > self.settings.lag:
            out += self._finalise(self._next_state(), last_of_run=False)
        return out + self._provisional()

    def settle(self) -> list[Piece]:
        """Make every pending window final with the look-ahead there is; the
        last one takes its whole tail. The next contiguous window carries on
        from the state decided here (its piece only covers what is not final)."""
        out: list[Piece] = []
        while self._pending:
            out += self._finalise(self._next_state(), last_of_run=len(self._pending) == 1)
        return out

    def restart(self) -> list[Piece]:
        """The stream starts over (a gap the pipeline restarted on, a new
        session): settle what is pending, then number windows afresh. What is
        final stays final: the new run's pieces start no earlier."""
        out = self.settle()
        self._last = None
        self._decided = self._filtered = self._gravity = None
        self._held = UNKNOWN
        self._rest_run = 0
        return out

    @property
    def pending(self) -> int:
        """Windows taken whose pieces are not final yet."""
        return len(self._pending)

    # ------------------------------------------------------------ internals

    def _turn(self, gravity: Sequence[float] | None) -> float:
        """Degrees the gravity direction turned since the window before (nan: not known)."""
        before, self._gravity = self._gravity, gravity
        return turn_degrees(before, gravity)

    def _with_handled(
        self, evidence: np.ndarray, motion: float | None, turn: float = math.nan, steps: float | None = None
    ) -> np.ndarray:
        """The evidence with the handled state's: the share ``q`` of the still
        postures' evidence the window's motion says is the device moved by
        hand (``q`` is one half at ``handled_motion``, steeply more above,
        steeply less below), and of the moving classes' the turn or the lack
        of steps says; no cue known, no handled evidence."""
        m = float(motion) if isinstance(motion, (int, float)) else math.nan
        r = float(steps) if isinstance(steps, (int, float)) else math.nan
        out = evidence.copy()
        handled = 0.0
        if self.settings.handled_motion > 0 and math.isfinite(m) and m >= 0.0:
            q = _share(m, self.settings.handled_motion)
            out[self._still] *= 1.0 - q
            handled = q * float(evidence[self._still].max())
        if self.settings.handled_turn > 0 and math.isfinite(turn) and len(self._moving):
            q = _share(turn, self.settings.handled_turn)
            out[self._moving] *= 1.0 - q
            handled = max(handled, q * float(evidence[self._moving].max()))
        if self.settings.handled_steps > 0 and math.isfinite(r) and r >= 0.0 and len(self._moving):
            k, half = HANDLED_STEPS_STEEPNESS, self.settings.handled_steps
            q = half**k / (half**k + r**k)  # one half at handled_steps, all of it without any regularity
            out[self._moving] *= 1.0 - q
            handled = max(handled, q * float(evidence[self._moving].max()))
        return np.append(out, handled)

    def _at_rest(self, motion: float | None, rotation: float | None) -> bool:
        """Whether a window reads a device at rest (module docstring): both
        cues known and below their thresholds; never with the set-down state off."""
        s = self.settings
        if s.set_down_rotation <= 0 or s.set_down_motion <= 0:
            return False
        cues = [float(v) if isinstance(v, (int, float)) else math.nan for v in (motion, rotation)]
        return (
            all(math.isfinite(v) and v >= 0.0 for v in cues)
            and cues[0] < s.set_down_motion
            and cues[1] < s.set_down_rotation
        )

    def _set_down(self) -> list[bool]:
        """Whether each pending window is shown set down: at rest, in a run of
        at-rest windows (the final ones before it counted) at least
        ``set_down_windows`` long as far as the pending windows show it."""
        rests = [w.rest for w in self._pending]
        run, through = self._rest_run, []
        for r in rests:
            run = run + 1 if r else 0
            through.append(run)
        for k in range(len(rests) - 2, -1, -1):  # a run's length as far as it is known, for each of its windows
            if rests[k] and rests[k + 1]:
                through[k] = through[k + 1]
        return [r and t >= self.settings.set_down_windows for r, t in zip(rests, through)]

    def _refusal(self, window: int, t_start: float, t_end: float, probs: Sequence[float]) -> str | None:
        if type(window) is not int or window < 0:
            return f"window number {window!r} is not a count"
        if not (isinstance(t_start, (int, float)) and isinstance(t_end, (int, float))):
            return "window times are not numbers"
        if not (math.isfinite(t_start) and math.isfinite(t_end) and 0.0 < t_end - t_start <= MAX_WINDOW_SECONDS):
            return f"window times {t_start!r}..{t_end!r} are not a window (0 < length <= {MAX_WINDOW_SECONDS:g} s)"
        if not (0.0 <= t_start and t_end <= MAX_TIME - 1.0):
            # a producer's t0 that jumped back near 0 within one run puts a window's first samples before
            # 0: its pieces would be refused by every reader of the history (decode_history)
            return f"window times {t_start:.6g}..{t_end:.6g} are outside the bus's times (0..{MAX_TIME:g} s)"
        if self._last is not None and window <= self._last.window:
            return f"window {window} is not after window {self._last.window}"
        return refusal_reason(probs, len(self.params.classes))

    def _prior(self) -> np.ndarray:
        """The distribution of the first pending window's state before its evidence."""
        if self._decided is None or self._filtered is None:
            return self._initial
        if self.settings.carry == "hard":  # the filtered distribution given the decided state
            given = np.where(self._base == self._decided, self._filtered, 0.0)
            if given.sum() > 0:
                return self._matrix.T @ (given / given.sum())
            return self._matrix[np.flatnonzero(self._base == self._decided)[-1]]
        return self._matrix.T @ self._filtered

    def _next_state(self) -> int:
        """The state the first pending window is made final in: the decoded
        one, unless it changes from one activity to another that the next
        ``confirm`` pending windows are not all decoded in (then the last
        final state goes on: a bout shorter than the look-ahead is not one).
        The look-ahead is read without the minimum bout length, which would
        make it agree with any change by construction."""
        states = self._decode()
        new, last, need = states[0], self._decided, self.settings.confirm
        n = len(self.params.classes)
        if need and last is not None and new != last and new < n and last < n:
            ahead = states if self.settings.min_windows == 1 else self._decode_plain()
            if any(s != new for s in ahead[1 : 1 + need]):
                return last
        return new

    def _decode(self) -> list[int]:
        """The state of each pending window, given what came before them."""
        prior = self._prior()
        evidence = np.stack([w.evidence for w in self._pending])[:, self._base]
        if self.settings.method == "viterbi":
            return self._viterbi(prior, evidence)
        return _marginal_states(prior, evidence, self._matrix, self._of_base)

    def _decode_plain(self) -> list[int]:
        """:meth:`_decode` (marginal) on the lattice without minimum bout lengths."""
        evidence = np.stack([w.evidence for w in self._pending])
        return _marginal_states(self._prior() @ self._of_base, evidence, self._plain, np.eye(len(self.states)))

    def _viterbi(self, prior: np.ndarray, evidence: np.ndarray) -> list[int]:
        with np.errstate(divide="ignore"):
            score = np.log(prior) + np.log(evidence[0])
            back = []
            for e in evidence[1:]:
                step = score[:, None] + self._log_matrix
                back.append(step.argmax(axis=0))
                score = step.max(axis=0) + np.log(e)
        path = [int(score.argmax())]
        for pointers in reversed(back):
            path.append(int(pointers[path[-1]]))
        return [int(self._base[e]) for e in path[::-1]]

    def _span(self, w: _Window, last_of_run: bool) -> tuple[float, float]:
        """The piece of time a window stands for, before clipping to what is final."""
        dt = (w.t_end - w.t_start) / (WINDOW - 1)
        start = w.t_start if self._decided is None else w.t_start + (STEP // 2) * dt
        return start, self._end(w, last_of_run)

    def _end(self, w: _Window, last_of_run: bool) -> float:
        """Where a window's piece ends: halfway between its middle and the
        next window's (by the times the windows were given, whatever their
        spacing: a sped-up replay's windows are 2.54 s long but closer than
        1.28 s apart); its last sample's end if it ends the run; three
        quarters in if the next window is not here yet (lag 0)."""
        dt = (w.t_end - w.t_start) / (WINDOW - 1)
        if last_of_run:
            return w.t_end + dt
        after = next((b for a, b in zip(self._pending, self._pending[1:]) if a is w), None)
        if after is None:
            return w.t_start + (STEP + STEP // 2) * dt
        middle = (w.t_start + w.t_end + dt) / 2
        return (middle + (after.t_start + after.t_end + dt) / 2) / 2

    def _finalise(self, state: int, last_of_run: bool) -> list[Piece]:
        w = self._pending[0]
        set_down = self._set_down()[0]
        start, end = self._span(w, last_of_run)
        f = self._prior() * w.evidence[self._base]
        total = f.sum()
        self._filtered = f / total if np.isfinite(total) and total > 0 else self._initial
        self._pending.pop(0)
        self._decided = state
        self._rest_run = self._rest_run + 1 if w.rest else 0
        label = SET_DOWN if set_down else self._shown(state, self._held)
        # a device picked up from where it was set down is handled before anything is worn: unknown
        self._held = UNKNOWN if set_down else label
        if self.final_until is not None:
            # contiguous with, never over, what is final; a boundary computed another way may land a
            # fraction of a microsecond after it: that is float noise (the wire rounds to µs), not a gap
            start = self.final_until if start < self.final_until + 1e-6 else start
        if end <= start:  # all of it is final already (a window after a settle)
            return []
        self.final_until = end
        return [Piece(round(start, 6), round(end, 6), label, True)]

    def _shown(self, state: int, before: str) -> str:
        """What a state is shown as: the handled state as what was shown before it."""
        if self._handled and state == len(self.states) - 1:
            return before
        return self.states[state]

    def _provisional(self) -> list[Piece]:
        if not self._pending:
            return []
        out: list[Piece] = []
        start = self.final_until
        held = self._held
        for w, state, set_down in zip(self._pending, self._decode(), self._set_down()):
            piece_start = w.t_start if start is None else start
            end = self._end(w, last_of_run=w is self._pending[-1])
            start = end
            if end <= piece_start:
                continue
            label = SET_DOWN if set_down else self._shown(state, held)
            held = UNKNOWN if set_down else label
            if out and out[-1].label == label:
                out[-1] = Piece(out[-1].start, round(end, 6), label, False)
            else:
                out.append(Piece(round(piece_start, 6), round(end, 6), label, False))
        return out


def window_rotation(windows: np.ndarray) -> np.ndarray:
    """How much each window turns about its own mean: the RMS over its samples
    of the gyroscope (channels 3-5, rad/s) less each axis's mean (a gyroscope's
    constant bias is no motion), the set-down state's cue. ``(n, 128, 9)``
    windows in, ``(n,)`` out.

    >>> w = np.zeros((2, 128, 9), np.float32); w[:, :, 3] = 0.5   # a bias alone
    >>> w[1, ::2, 4] = 0.02; w[1, 1::2, 4] = -0.02                 # and a turn to and fro
    >>> [round(float(r), 4) for r in window_rotation(w)]
    [0.0, 0.02]
    """
    gyro = np.asarray(windows, dtype=np.float32)[:, :, 3:6]
    about = gyro - gyro.mean(axis=1, keepdims=True)
    return np.sqrt(np.einsum("nwc,nwc->n", about, about) / max(gyro.shape[1], 1))


def _share(x: float, half: float) -> float:
    """How much of a window's evidence a cue ``x`` gives the handled state:
    one half at ``half``, rising steeply (:data:`HANDLED_STEEPNESS`) above it."""
    return x**HANDLED_STEEPNESS / (x**HANDLED_STEEPNESS + half**HANDLED_STEEPNESS)


def _marginal_states(prior: np.ndarray, evidence: np.ndarray, matrix: np.ndarray, of_base: np.ndarray) -> list[int]:
    """Forward-backward over ``evidence`` (windows x lattice states) from
    ``prior``: each window's most probable base state (lattice states summed
    by ``of_base``)."""
    n = len(evidence)
    forward = np.empty_like(evidence)
    f = prior * evidence[0]
    for k in range(n):
        if k:
            f = evidence[k] * (matrix.T @ forward[k - 1])
        total = f.sum()
        f = f / total if np.isfinite(total) and total > 0 else evidence[k] / max(evidence[k].sum(), 1e-300)
        forward[k] = f
    states = [0] * n
    b = np.ones(evidence.shape[1])
    for k in range(n - 1, -1, -1):
        states[k] = int(((forward[k] * b) @ of_base).argmax())
        b = matrix @ (evidence[k] * b)
        b = b / b.sum() if b.sum() > 0 else np.ones_like(b)
    return states


def duration_lattice(
    matrix: np.ndarray, initial: np.ndarray, min_windows: Sequence[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A hidden Markov model whose state ``s`` lasts at least ``min_windows[s]``
    steps: each state becomes a chain of that many (its age), the chain's
    last link stays with ``matrix[s, s]`` and leaves as ``matrix`` says to the
    first link of another state's chain. A (re)start may be in the middle of
    a bout, so it starts in the last links. Returns the expanded matrix, the
    initial distribution and each expanded state's base state.

    >>> m, init, base = duration_lattice(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0.5, 0.5]), [1, 3])
    >>> base.tolist(), init.tolist()
    ([0, 1, 1, 1], [0.5, 0.0, 0.0, 0.5])
    >>> m.round(2).tolist()             # B, once entered, stays three steps
    [[0.9, 0.1, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.2, 0.0, 0.0, 0.8]]
    """
    d = [int(k) for k in min_windows]
    first = np.concatenate([[0], np.cumsum(d)[:-1]]).astype(np.int64)
    last = first + np.asarray(d) - 1
    base = np.repeat(np.arange(len(d)), d)
    expanded = np.zeros((len(base), len(base)))
    for s, (a, z) in enumerate(zip(first, last)):
        for e in range(a, z):
            expanded[e, e + 1] = 1.0  # a bout younger than its minimum goes on
        expanded[z, first] = matrix[s]  # a grown bout leaves as the matrix says, to a new bout's first step
        expanded[z, a] = 0.0
        expanded[z, z] = matrix[s, s]  # or stays
    start = np.zeros(len(base))
    start[last] = initial
    return expanded, start, base


def with_handled(matrix: np.ndarray, initial: np.ndarray, n_classes: int, stay: float) -> tuple[np.ndarray, np.ndarray]:
    """The lattice with one more state, the device handled: entered from any
    state with probability :data:`HANDLED_ENTER`, kept with ``stay``, left
    for an activity as a (re)start would begin; a (re)start is in it with
    :data:`HANDLED_INITIAL`.

    >>> m, init = with_handled(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0.5, 0.5]), 2, 0.8)
    >>> m.round(3).tolist(), init.round(2).tolist()
    ([[0.882, 0.098, 0.02], [0.196, 0.784, 0.02], [0.1, 0.1, 0.8]], [0.45, 0.45, 0.1])
    """
    s = len(matrix)
    out = np.zeros((s + 1, s + 1))
    out[:s, :s] = matrix * (1.0 - HANDLED_ENTER)
    out[:s, s] = HANDLED_ENTER
    start = np.asarray(initial[:n_classes], dtype=np.float64)
    out[s, :n_classes] = (1.0 - stay) * start / start.sum()
    out[s, s] = stay
    return out, np.append(np.asarray(initial) * (1.0 - HANDLED_INITIAL), HANDLED_INITIAL)


def merge_pieces(pieces: Sequence[Piece]) -> list[Piece]:
    """Adjacent pieces of one label and finality joined (for display and scoring).

    >>> merge_pieces([Piece(0, 1, "A", True), Piece(1, 2, "A", True), Piece(2, 3, "B", True)])
    [Piece(start=0, end=2, label='A', final=True), Piece(start=2, end=3, label='B', final=True)]
    """
    out: list[Piece] = []
    for p in pieces:
        if out and out[-1].label == p.label and out[-1].final == p.final and abs(out[-1].end - p.start) < 1e-6:
            out[-1] = Piece(out[-1].start, p.end, p.label, p.final)
        else:
            out.append(p)
    return out


def history_params(display: object, classes: Sequence[str]) -> DecoderParams:
    """The lattice a device's history smooths over: its display decoder's own
    parameters, or (a model without them) a plain sticky filter over its classes."""
    if isinstance(display, Decoder):
        return display.params
    return _plain_params(tuple(classes))


@functools.lru_cache(maxsize=64)
def _plain_params(classes: tuple[str, ...]) -> DecoderParams:
    # one object per class list, so the devices of a model without a decoder share one lattice
    return DecoderParams.uniform(classes, stay=0.9)


__all__ = [
    "History",
    "HistorySettings",
    "Lattice",
    "MAX_LAG",
    "Piece",
    "duration_lattice",
    "history_params",
    "merge_pieces",
    "window_rotation",
]
