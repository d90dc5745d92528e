"""The worker's start-up says WHICH served model has no display decoder: it
serves several at once (waist, any, any without a gyroscope), and a bare
"the model has no decoder parameters" read as if the main model had none."""

from __future__ import annotations

import argparse
import json

from harstream.commands.worker import display_maker
from harstream.models.artifact import ANY_MODEL, model_id_of

NOGYRO_META = ANY_MODEL.parent / "any_nogyro.json"


def _args(**kw) -> argparse.Namespace:
    return argparse.Namespace(**{"display": "decoder", "runtime": "auto", "threshold": 0.5, **kw})


def test_a_model_without_a_decoder_is_named_and_shown_window_by_window(capsys):
    meta = {"architecture": "svm-nodecoder", "sha256": "0123456789abcdef", "classes": ["WALKING", "STILL"]}
    make = display_maker(_args())(meta["classes"], meta)
    said = capsys.readouterr().out
    assert "svm-nodecoder@01234567" in said and "no display decoder" in said
    display = make()
    assert display.update([0.9, 0.1])[0] == "WALKING"
    assert display.update([0.2, 0.8])[0] == "STILL"  # this window alone, nothing carried over


def test_the_shipped_models_with_a_decoder_say_nothing(capsys):
    meta = json.loads((ANY_MODEL.with_suffix(".json")).read_text())
    assert meta.get("decoder") is not None
    display_maker(_args())(meta["classes"], meta)
    assert capsys.readouterr().out == ""


def test_the_shipped_model_without_a_gyroscope_is_the_one_named_if_it_has_no_decoder(capsys):
    meta = json.loads(NOGYRO_META.read_text())
    display_maker(_args())(meta["classes"], meta)
    said = capsys.readouterr().out
    assert (model_id_of(meta) in said) == (meta.get("decoder") is None)


def test_no_decoder_is_asked_for_with_another_display():
    assert display_maker(_args(display="smoothed")) is None
    assert display_maker(_args(runtime="none")) is None
