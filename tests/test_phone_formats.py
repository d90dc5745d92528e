"""Parsers of what phone apps send: units, gravity, signs, and clear refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harstream.stream.gateway.phone_formats import (
    FormatError,
    MessageOrder,
    detect_format,
    load_message,
    parse_hello,
    parse_samples,
    parse_sensor_logger,
    parse_sensor_server,
)

G = 9.80665


def entry(name, t_s, x, y, z):
    return {"name": name, "time": int(t_s * 1e9), "values": {"x": x, "y": y, "z": z}}


def logger_batch(*entries, device="dev-1"):
    return {"messageId": 0, "sessionId": "s", "deviceId": device, "payload": list(entries)}


def test_our_protocol_converts_declared_units_to_g_and_rad_s():
    hello = parse_hello({"type": "hello", "device": "p1", "units": {"acc": "m/s2", "gyro": "deg/s"}})
    r = parse_samples({"type": "samples", "acc": [[1500.0, 0, G, 0]], "gyro": [[1500.0, 180, 0, -90]]}, hello)
    assert r.acc_t.tolist() == [1.5] and r.gyro_t.tolist() == [1.5]
    np.testing.assert_allclose(r.acc, [[0, 1, 0]])
    np.testing.assert_allclose(r.gyro, [[math.pi, 0, -math.pi / 2]])


def test_ios_frame_flips_acceleration_but_not_rotation():
    hello = parse_hello({"type": "hello", "device": "p1", "units": {"acc": "g"}, "frame": "ios"})
    r = parse_samples({"type": "samples", "acc": [[0, 0, 0, -1]], "gyro": [[0, 1, 2, 3]]}, hello)
    np.testing.assert_allclose(r.acc, [[0, 0, 1]])
    np.testing.assert_allclose(r.gyro, [[1, 2, 3]])


def test_sensor_logger_total_acceleration_is_preferred_over_the_gravity_free_accelerometer():
    r = parse_sensor_logger(
        logger_batch(
            entry("accelerometer", 1.0, 0.5, 0, 0),
            entry("totalacceleration", 1.0, 0.5, G, 0),
            entry("gravity", 1.0, 0, G, 0),
        )
    )
    np.testing.assert_allclose(r.acc, [[0.5 / G, 1, 0]])


def test_sensor_logger_adds_gravity_interpolated_to_the_accelerometer_times():
    r = parse_sensor_logger(
        logger_batch(
            entry("accelerometer", 1.00, 0, 0, 0),
            entry("accelerometer", 1.01, G, 0, 0),
            entry("gravity", 0.99, 0, 0, G),
            entry("gravity", 1.03, 0, 0, 3 * G),
        )
    )
    np.testing.assert_allclose(r.acc, [[0, 0, 1.5], [1, 0, 2.0]])
    np.testing.assert_allclose(r.acc_t, [1.0, 1.01])


def test_sensor_logger_ios_default_frame_is_flipped_to_android_signs():
    batch = logger_batch(
        entry("accelerometer", 1.0, 0.1 * G, 0, 0), entry("gravity", 1.0, 0, 0, -G), entry("gyroscope", 1.0, 0.3, 0, 0)
    )
    r = parse_sensor_logger(batch, platform="ios")
    np.testing.assert_allclose(r.acc, [[-0.1, 0, 1]])
    np.testing.assert_allclose(r.gyro, [[0.3, 0, 0]])


def test_sensor_logger_accelerometer_without_gravity_says_what_to_enable():
    with pytest.raises(FormatError, match="enable Gravity or Total Acceleration") as info:
        parse_sensor_logger(logger_batch(entry("accelerometer", 1.0, 0, 0, 0)))
    assert info.value.reason == "fields"


def test_sensor_logger_entries_are_sorted_by_time_and_other_sensors_ignored():
    r = parse_sensor_logger(
        logger_batch(
            entry("gyroscope", 2.0, 2, 0, 0),
            entry("gyroscope", 1.0, 1, 0, 0),
            {"name": "location", "time": 5, "values": {"latitude": 51.5}},
        )
    )
    assert r.gyro_t.tolist() == [1.0, 2.0] and r.gyro[:, 0].tolist() == [1, 2]
    assert len(r.acc_t) == 0


def test_sensor_server_event_in_m_s2_becomes_g_and_boot_time_becomes_seconds():
    r = parse_sensor_server(
        {"type": "android.sensor.gyroscope", "values": [0.1, 0.2, 0.3], "timestamp": 123_456_789_000, "accuracy": 3}
    )
    assert r.gyro_t.tolist() == [123.456789] and r.gyro.tolist() == [[0.1, 0.2, 0.3]]


@pytest.mark.parametrize(
    "message, reason, words",
    [
        ({"type": "android.sensor.light", "values": [1, 2, 3], "timestamp": 1}, "fields", "sensor type"),
        ({"type": "android.sensor.accelerometer", "values": [1, 2], "timestamp": 1}, "types", "3 numbers"),
        ({"type": "android.sensor.accelerometer", "values": [1, 2, 3], "timestamp": "now"}, "types", "timestamp"),
        ({"type": "android.sensor.accelerometer", "values": [0, 0, 51 * G], "timestamp": 1}, "values", "exceeds 50 g"),
        ({"type": "android.sensor.gyroscope", "values": [0, float("nan"), 0], "timestamp": 1}, "values", "NaN"),
    ],
)
def test_sensor_server_refusals_name_the_problem(message, reason, words):
    with pytest.raises(FormatError, match=words) as info:
        parse_sensor_server(message)
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "batch, reason, words",
    [
        ({"deviceId": "d", "payload": {}}, "types", "payload must be a list"),
        ({"deviceId": "has space", "payload": []}, "device", "deviceId"),
        ({"payload": []}, "device", "deviceId"),
        (
            logger_batch({"name": "gyroscope", "time": 1, "values": {"x": 1, "y": 2}}),
            "types",
            r"payload\[0\] \(gyroscope\)",
        ),
        (logger_batch({"name": "gyroscope", "time": True, "values": {"x": 1, "y": 2, "z": 3}}), "types", "time"),
        (logger_batch(entry("gyroscope", -1.0, 0, 0, 0)), "values", "negative time"),
    ],
)
def test_sensor_logger_refusals_name_the_problem(batch, reason, words):
    with pytest.raises(FormatError, match=words) as info:
        parse_sensor_logger(batch)
    assert info.value.reason == reason


def test_hello_refuses_unknown_units_and_frames_with_the_choices():
    with pytest.raises(FormatError, match=r"deg/s.*rad/s"):
        parse_hello({"type": "hello", "device": "x", "units": {"gyro": "rpm"}})
    with pytest.raises(FormatError, match="frame"):
        parse_hello({"type": "hello", "device": "x", "frame": "upside-down"})


def test_load_message_and_detect_format():
    assert detect_format(load_message('{"type": "hello", "device": "a"}')) == "harstream"
    assert detect_format(load_message('{"payload": []}')) == "sensorlogger"
    assert detect_format({"type": "android.sensor.gyroscope"}) == "sensorserver"
    for raw in (b"\xff\xfe", "[]", "nope", "[" * 100_000):
        with pytest.raises(FormatError) as info:
            load_message(raw)
        assert info.value.reason == "json"


def test_message_order_waits_boundedly_for_a_missing_batch():
    order = MessageOrder(max_pending=2, max_wait=3.0)
    assert order.add(5, "a", 0.0) == ["a"]
    assert order.add(7, "c", 0.1) == []  # 6 missing: wait
    assert order.add(8, "d", 0.2) == []
    assert order.add(9, "e", 0.3) == ["c", "d", "e"]  # too many waiting: give up on 6
    assert order.skipped == 1
    assert order.add(6, "late", 0.4) == ["late"]  # passed on; the resampler drops its old readings
    assert order.add(11, "g", 0.5) == []
    assert order.add(12, "h", 4.0) == ["g", "h"]  # waited too long for 10
    assert order.add(None, "no id", 4.1) == ["no id"]


def test_bus_and_phone_rejections_are_one_input_error_counted_by_reason():
    from collections import Counter

    from harstream.stream.core.errors import InputError
    from harstream.stream.core.protocol import ProtocolError, decode_samples

    rejected = Counter()
    for refuse in (lambda: decode_samples([b"x"]), lambda: load_message("{")):
        try:
            refuse()
        except InputError as exc:
            rejected[exc.reason] += 1
            assert str(exc) == f"{exc.reason}: {exc.detail}"
    assert rejected == {"frame_count": 1, "json": 1}
    assert issubclass(ProtocolError, ValueError) and issubclass(FormatError, ValueError)
