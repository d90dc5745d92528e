"""What fine-tuning on one's own data buys, per held-out subject (the
personalisation figures of the report)::

    python -m harstream.models.studies.personalisation [BASE.keras] [--reports DIR]

writes ``personalisation.json`` into the reports folder (default ``docs/reports``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harstream.models.reports import add_reports_option, write_report
from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

from ..artifact import load_artifact
from ..dataset import labelled_windows
from ..finetune import embedded_training_windows, is_svm, svm_options, tune

REPORT_NAME = "personalisation.json"


def personalisation_study(base: str | Path | None = None, epochs: int = 5, learning_rate: float = 1e-4) -> list[dict]:
    """What fine-tuning on one's own data buys, measured on the held-out
    subjects: for each test subject, fine-tune the base model on all but
    their last session and score that last session before and after."""
    data = load_embedded()
    artifact = load_artifact(base)
    steps = artifact.context_steps
    pool = embedded_training_windows(steps)
    rows = []
    for subject in UCI_TEST_SUBJECTS:
        recs = sorted(data.of_subjects([subject]), key=lambda r: r.name)
        if len(recs) < 2:
            continue
        own, test = labelled_windows(recs[:-1], context_steps=steps), labelled_windows(recs[-1:], context_steps=steps)
        model = load_artifact(base).model
        method = "svm refit" if is_svm(model) else "gradient descent"
        _, before, after, _ = tune(
            model, own, test, epochs, learning_rate, pool, None, seed=0, svm_options=svm_options(artifact.metadata)
        )
        rows.append(
            {
                "subject": subject,
                "own_windows": len(own),
                "test_session": recs[-1].name,
                "test_windows": len(test),
                "accuracy_before": before,
                "accuracy_after": after,
                "method": method,
            }
        )
        print(
            f"subject {subject}: {len(own)} own windows; {recs[-1].name} {100 * before:.1f} % -> {100 * after:.1f} %",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="personalisation: a subject's own windows on top of the shipped model")
    parser.add_argument("model", nargs="?", default=None, help="model artifact (default: the shipped one)")
    add_reports_option(parser)
    args = parser.parse_args(argv)
    rows = personalisation_study(args.model)
    report = write_report(args.reports, REPORT_NAME, rows)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
