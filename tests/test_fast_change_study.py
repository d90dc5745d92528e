"""The two-model decoder of the fast-change study (a one-window model as a second observation)."""

from __future__ import annotations

import numpy as np

from harstream.models.studies.fast_change import TwoModelDecoder
from harstream.stream.core.decoder import Decoder, DecoderParams


def labels_of(decoder, probs, fast=None):
    if fast is None:
        return [decoder.update(list(p))[0] for p in probs]
    return [decoder.update(list(p), None, list(q))[0] for p, q in zip(probs, fast)]


def test_without_weight_or_agreement_rule_it_shows_what_the_shipped_decoder_shows():
    rng = np.random.default_rng(3)
    params = DecoderParams.uniform(["A", "B", "C"], stay=0.8, switch_at=0.6)
    probs = rng.dirichlet([0.5, 0.5, 0.5], size=200).round(6)
    probs[:, -1] = 1.0 - probs[:, :-1].sum(axis=1)
    fast = rng.dirichlet([0.5, 0.5, 0.5], size=200)
    two = TwoModelDecoder(params, np.eye(3), fast_weight=0.0, agree_switch_at=None)
    assert labels_of(two, probs, fast) == labels_of(Decoder(params), probs)


def test_a_one_window_model_that_sees_the_change_first_moves_the_display_sooner():
    params = DecoderParams.uniform(["A", "B"], stay=0.95, switch_at=0.6)
    # the context model still says A for two windows after the change; the one-window model says B at once
    probs = [[0.9, 0.1]] * 4 + [[0.6, 0.4], [0.45, 0.55], [0.2, 0.8], [0.1, 0.9]]
    fast = [[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 4
    alone = labels_of(Decoder(params), probs)
    both = labels_of(TwoModelDecoder(params, np.eye(2), fast_weight=1.0), probs, fast)
    assert both.index("B") < alone.index("B")
