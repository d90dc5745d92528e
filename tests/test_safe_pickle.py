"""The restricted unpickler lets numpy arrays through and nothing else."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest

from harstream.stream.data.safe_pickle import UnsafePickleError, load_restricted


class Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /tmp/harstream-pwned",))


def test_numpy_arrays_come_through():
    arr = np.arange(12, dtype=np.float64).reshape(3, 4)
    back = load_restricted(io.BytesIO(pickle.dumps({"a": [arr]}, protocol=2)))
    np.testing.assert_array_equal(back["a"][0], arr)


def test_a_crafted_malicious_pickle_is_refused_with_the_global_named():
    payload = pickle.dumps(Exploit(), protocol=2)
    with pytest.raises(UnsafePickleError, match=r"posix\.system.*not on the allow-list"):
        load_restricted(io.BytesIO(payload))


def test_builtins_eval_is_refused():
    payload = b"c__builtin__\neval\n(S'1+1'\ntR."
    with pytest.raises(UnsafePickleError, match="__builtin__.eval"):
        load_restricted(io.BytesIO(payload))


def test_the_generic_reconstructor_cannot_build_arbitrary_classes():
    payload = b"ccopy_reg\n_reconstructor\n(c__builtin__\nobject\nc__builtin__\nobject\nNtR."
    with pytest.raises(UnsafePickleError, match="_reconstructor asked to build"):
        load_restricted(io.BytesIO(payload))


def test_embedded_recordings_decode_to_61_sessions(embedded):
    assert len(embedded.recordings) == 61
    assert sum(len(r) for r in embedded.recordings) == 1_122_772
    assert len(embedded.subjects()) == 30
    assert [r.subject for r in embedded.recordings].count(10) == 3
    labels = np.concatenate([r.labels for r in embedded.recordings])
    assert set(np.unique(labels)) == {-1, *range(1, 13)}
