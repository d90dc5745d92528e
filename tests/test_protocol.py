"""Wire protocol v1: round trips and every malformed-frame reason."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harstream.stream.core.protocol import (
    REASONS,
    Prediction,
    ProtocolError,
    SampleBatch,
    Signal,
    decode_output,
    decode_prediction,
    decode_samples,
    decode_signal,
    decode_stats,
    encode_prediction,
    encode_samples,
    encode_signal,
    encode_stats,
    shard_of,
    shard_prefixes,
)


def good_frames(n: int = 4, labels: bool = True) -> list[bytes]:
    samples = np.arange(n * 6, dtype=np.float32).reshape(n, 6) / 7
    lab = np.arange(n, dtype=np.int16) if labels else None
    return encode_samples(SampleBatch("dev-1", seq=128, t0=1.7e9, samples=samples, labels=lab, meta={"app": "x"}))


def test_samples_round_trip_keeps_every_field():
    samples = np.random.default_rng(0).normal(size=(50, 6)).astype(np.float32)
    sent = SampleBatch(
        "phone_7",
        seq=12345,
        t0=1.7e9 + 0.02,
        samples=samples,
        rate=50.0,
        labels=np.full(50, 4, np.int16),
        meta={"source": "test"},
    )
    got = decode_samples(encode_samples(sent))
    assert (got.device, got.seq, got.t0, got.rate, got.meta) == ("phone_7", 12345, sent.t0, 50.0, {"source": "test"})
    np.testing.assert_array_equal(got.samples, samples)
    np.testing.assert_array_equal(got.labels, sent.labels)


def test_samples_without_labels_decode_with_none():
    assert decode_samples(good_frames(labels=False)).labels is None


def test_prediction_signal_and_stats_round_trip():
    p = Prediction(
        "d1",
        3,
        10.0,
        12.54,
        "WALKING",
        [0.9] + [0.02] * 5,
        "unknown",
        [0.4] * 6,
        "m@1",
        1.5,
        truth="SITTING",
        worker="w",
    )
    assert decode_prediction(encode_prediction(p)) == p
    assert decode_output(encode_prediction(p)) == p
    s = Signal("d1", 10.0, 10.0, [[0.0, 0.1, 1.0]], [[0.0, 0.0, 0.0]])
    assert decode_signal(encode_signal(s)) == s
    stats = decode_stats(encode_stats("w1", {"devices": 3, "drops": {"gap": 1}}))
    assert stats["devices"] == 3 and stats["worker"] == "w1"


def test_shards_partition_the_topic_space():
    halves = [set(shard_prefixes(k, 2)) for k in range(2)]
    assert not halves[0] & halves[1] and len(halves[0] | halves[1]) == 64
    topic = encode_samples(SampleBatch("abc", 0, 0.0, np.zeros((1, 6))))[0]
    assert sum(topic.startswith(p) for p in halves[0] | halves[1]) == 1
    assert topic.startswith(b"s/%02d/" % shard_of("abc"))


def _with_header(frames: list[bytes], **changes) -> list[bytes]:
    header = json.loads(frames[1])
    for key, value in changes.items():
        if value is ...:
            header.pop(key)
        else:
            header[key] = value
    return [frames[0], json.dumps(header).encode(), frames[2]]


def _nan_payload(frames):
    arr = np.frombuffer(frames[2], "<f4").copy()
    arr[5] = np.nan
    return [frames[0], frames[1], arr.tobytes()]


MALFORMED = {  # case: (expected reason, how to spoil a good message)
    "two_frames": ("frame_count", lambda f: f[:2]),
    "four_frames": ("frame_count", lambda f: f + [b""]),
    "topic_of_another_device": ("topic", lambda f: [b"s/00/someone-else/", f[1], f[2]]),
    "header_not_json": ("header", lambda f: [f[0], b"\xff{not json", f[2]]),
    "header_not_object": ("header", lambda f: [f[0], b"[1, 2]", f[2]]),
    "header_without_seq": ("header", lambda f: _with_header(f, seq=...)),
    "negative_seq": ("header", lambda f: _with_header(f, seq=-1)),
    "huge_header": ("header", lambda f: [f[0], b" " * 70_000 + f[1], f[2]]),
    "other_units": ("header", lambda f: _with_header(f, units={"acc": "m/s^2", "gyro": "rad/s"})),
    "rate_not_50_hz": ("header", lambda f: _with_header(f, rate=100.0)),
    "rate_not_a_number": ("header", lambda f: _with_header(f, rate="fast")),
    "version_2": ("version", lambda f: _with_header(f, v=2)),
    "device_id_with_space": ("device", lambda f: [b"s/00/bad id/", _with_header(f, device="bad id")[1], f[2]]),
    "payload_short": ("byte_length", lambda f: [f[0], f[1], f[2][:-4]]),
    "zero_samples": ("byte_length", lambda f: _with_header(f, n=0)),
    "nan_sample": ("non_finite", _nan_payload),
    "labels_too_few": ("labels", lambda f: _with_header(f, labels=[1, 2])),
    "labels_as_booleans": ("labels", lambda f: _with_header(f, labels=[True] * 4)),
    "label_beyond_int16": ("labels", lambda f: _with_header(f, labels=[70_000] * 4)),
    "acc_of_1e35_g": ("range", lambda f: _with_payload(f, 0, 1e35)),
    "gyro_of_150_rad_s": ("range", lambda f: _with_payload(f, 4, -150.0)),
    "t0_of_1e306": ("time", lambda f: _with_header(f, t0=1e306)),
    "negative_t0": ("time", lambda f: _with_header(f, t0=-5.0)),
    "t0_nan": ("time", lambda f: [f[0], f[1].replace(b'"t0":1700000000.0', b'"t0":NaN'), f[2]]),
    "version_true": ("version", lambda f: _with_header(f, v=True)),
    "seq_true": ("header", lambda f: _with_header(f, seq=True)),
    "seq_beyond_2_to_53": ("header", lambda f: _with_header(f, seq=2**60)),
    "n_as_float": ("header", lambda f: _with_header(f, n=4.0)),
    "integer_of_5000_digits": ("header", lambda f: [f[0], f[1][:-1] + b',"x":' + b"9" * 5000 + b"}", f[2]]),
    "nesting_deeper_than_the_parser": ("header", lambda f: [f[0], b"[" * 60_000 + b"]" * 60_000, f[2]]),
    "device_id_ending_in_newline": ("device", lambda f: _with_header(f, device="dev-1\n")),
    "session_with_a_slash": ("session", lambda f: _with_header(f, session="a/b")),
    "session_not_a_string": ("session", lambda f: _with_header(f, session=7)),
    "pressure_not_a_list": ("pressure", lambda f: _with_header(f, pressure={"t": 1, "hPa": 1000})),
    "pressure_row_of_three": ("pressure", lambda f: _with_header(f, pressure=[[1.0, 1000.0, 3.0]])),
    "pressure_as_text": ("pressure", lambda f: _with_header(f, pressure=[[1.0, "1000"]])),
    "pressure_time_negative": ("pressure", lambda f: _with_header(f, pressure=[[-1.0, 1000.0]])),
    "pressure_rows_beyond_1000": ("pressure", lambda f: _with_header(f, pressure=[[i, 1000.0] for i in range(1001)])),
}


def _with_payload(frames, channel, value):
    arr = np.frombuffer(frames[2], "<f4").reshape(-1, 6).copy()
    arr[1, channel] = value
    return [frames[0], frames[1], arr.tobytes()]


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_samples_message_is_rejected_with_its_reason(case):
    reason, spoil = MALFORMED[case]
    with pytest.raises(ProtocolError) as err:
        decode_samples(spoil(good_frames()))
    assert err.value.reason == reason


def test_the_malformed_cases_cover_every_reason():
    assert {reason for reason, _ in MALFORMED.values()} == set(REASONS)


def test_a_session_id_travels_in_the_header():
    sent = SampleBatch("dev-1", 0, 0.0, np.zeros((1, 6), np.float32), session="5f1e")
    assert decode_samples(encode_samples(sent)).session == "5f1e"
    assert decode_samples(good_frames()).session == ""  # none sent


def test_output_encoders_are_total_on_non_finite_numbers():
    p = Prediction("d1", 3, 10.0, float("inf"), "WALKING", [float("nan")] * 6, "unknown", [0.4] * 6, "m", 1.5)
    assert decode_prediction(encode_prediction(p)).probs == [None] * 6
    s = Signal("d1", 10.0, 10.0, [[float("inf"), 0.0, 1.0]], [[0.0, 0.0, 0.0]])
    assert decode_signal(encode_signal(s)).acc == [[None, 0.0, 1.0]]
    stats = decode_stats(encode_stats("w1", {"lag_p99_ms": float("inf"), "n": np.int64(3), "x": {1, 2}}))
    assert stats["lag_p99_ms"] is None and stats["n"] == 3 and stats["worker"] == "w1"


def test_pressure_travels_in_the_header_and_a_message_without_it_has_none():
    rows = np.array([[1700000000.0, 1001.25], [1700000000.04, 1001.24]])
    sent = SampleBatch("dev-1", 0, 1700000000.0, np.zeros((2, 6), np.float32), pressure=rows)
    frames = encode_samples(sent)
    assert len(frames) == 3  # today's three frames: the channel rides in the header
    got = decode_samples(frames)
    np.testing.assert_array_equal(got.pressure, rows)
    assert got.pressure_refused == {}
    assert decode_samples(good_frames()).pressure is None


def test_pressure_that_cannot_be_right_is_refused_by_reason_and_the_samples_kept():
    header = json.loads(good_frames()[1])
    header["pressure"] = [[1.0, 1000.0], [2.0, 1200.0], [3.0, 250.0], [0.5, 1000.0], [4.0, 999.9]]
    frames = good_frames()
    got = decode_samples([frames[0], json.dumps(header).encode(), frames[2]])
    assert got.pressure.tolist() == [[1.0, 1000.0], [4.0, 999.9]]
    assert got.pressure_refused == {"pressure_range": 2, "pressure_order": 1}
    assert len(got) == len(decode_samples(frames))  # the motion is not lost for a bad barometer


def test_non_finite_pressure_is_refused_by_its_own_reason():
    frames = good_frames()
    raw = frames[1][:-1] + b',"pressure":[[1.0,NaN],[2.0,1000.0],[3.0,Infinity]]}'
    got = decode_samples([frames[0], raw, frames[2]])
    assert got.pressure.tolist() == [[2.0, 1000.0]]
    assert got.pressure_refused == {"pressure_non_finite": 2}
