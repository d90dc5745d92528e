"""The final protocol and the ``--compare`` report.

``final_runs`` trains one recipe (chosen on the validation subjects by
:mod:`harstream.models.studies.selection`) on ALL training subjects once per seed and
touches the held-out test subjects exactly once per run: accuracy, macro F1,
confusion matrix. Results accumulate in ``docs/reports/results.json``;
``write_report`` turns them into ``docs/report.md`` with one table of all
models, confusion-matrix PNGs and the live-accuracy figures.

    python -m harstream.models.studies.compare run --seeds 0 1 2 3 4 --ship
    python -m harstream.models.studies.compare report
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from harstream.models.reports import REPORTS, add_reports_option
from harstream.stream.core.activities import ACTIVITIES

from ..dataset import VALIDATION_SUBJECTS, Windows, labelled_windows, split_by_subject
from ..recipe import Recipe, fit, parse_recipe
from ..training import ESTIMATORS
from .selection import best_recipe, load_selection

RESULTS_FILE = REPORTS / "results.json"
REPORT_FILE = REPORTS.parent / "report.md"


def score(y_true: np.ndarray, probabilities: np.ndarray) -> dict:
    """Accuracy, macro F1 and the confusion matrix (rows true, columns predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    y_pred = np.argmax(probabilities, axis=1)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", labels=range(len(ACTIVITIES)))),
        "confusion": confusion_matrix(y_true, y_pred, labels=range(len(ACTIVITIES))).tolist(),
    }


def per_subject_counts(y_true: np.ndarray, y_pred: np.ndarray, subjects: np.ndarray) -> dict[str, list[int]]:
    """``{subject: [correct windows, windows]}``.

    >>> per_subject_counts(np.array([0, 1, 1]), np.array([0, 1, 0]), np.array([2, 2, 4]))
    {'2': [2, 2], '4': [0, 1]}
    """
    return {
        str(s): [int(np.sum((y_true == y_pred) & (subjects == s))), int(np.sum(subjects == s))]
        for s in np.unique(subjects)
    }


def subject_bootstrap_interval(
    counts: dict[str, list[int]], confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the window accuracy with the *subjects*
    resampled: how much the figure depends on which people were held out,
    which repeats of a deterministic model (or of a network's seeds) cannot show."""
    from scipy.stats import bootstrap

    correct = np.array([c for c, _ in counts.values()], float)
    total = np.array([n for _, n in counts.values()], float)
    res = bootstrap(
        (correct, total),
        lambda c, n, axis=-1: c.sum(axis=axis) / n.sum(axis=axis),
        paired=True,
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        n_resamples=5000,
        random_state=seed,
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def predict(model, x: np.ndarray, batch: int = 512) -> np.ndarray:
    """Class probabilities, calling the model directly batch by batch
    (``model.predict`` has a large constant overhead)."""
    out = [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    return np.concatenate(out) if out else np.empty((0, len(ACTIVITIES)), np.float32)


def per_window_latency_ms(model, windows: np.ndarray, batch: int = 256, repeats: int = 7) -> dict:
    """Median time per window of a direct batched call (``batch`` windows),
    and of a single-window call, in milliseconds."""
    x = np.ascontiguousarray(windows[:batch], dtype=np.float32)
    one = x[:1]
    model(x, training=False)  # build/trace once
    model(one, training=False)
    batched, single = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x, training=False)
        batched.append((time.perf_counter() - t) / len(x))
        t = time.perf_counter()
        model(one, training=False)
        single.append(time.perf_counter() - t)
    return {"batched_ms": 1e3 * float(np.median(batched)), "single_ms": 1e3 * float(np.median(single)), "batch": len(x)}


def measure_latencies(recipes: list[Recipe], registry_names: list[str]) -> dict[str, dict]:
    """Per-window latency of each model, built fresh (latency does not depend
    on the weights), all measured in this one process so they compare."""
    import keras

    from harstream.stream.data.recordings import UCI_TEST_SUBJECTS, load_embedded

    from ..registry import ChannelStats, build_model

    dataset = load_embedded()
    windows = labelled_windows(dataset.of_subjects(UCI_TEST_SUBJECTS[:2])).x[:256]
    stats = ChannelStats.of(windows)
    from ..modern import build

    def build_for_timing(recipe: Recipe):
        if recipe.architecture not in ESTIMATORS:
            return build(recipe.architecture, windows, **recipe.model_options)
        # An SVM's cost grows with its support vectors: time one fitted on
        # the training subjects, as the final runs fit it.
        from ..svm import fit_svm

        train, _ = split_by_subject(labelled_windows(dataset.recordings, context_steps=recipe.context))
        return fit_svm(train, 0, **recipe.model_options)[0]

    models = [(name, lambda name=name: build_model(name, stats)) for name in registry_names]
    models += [(r.label, lambda r=r: build_for_timing(r)) for r in recipes]
    out = {}
    for label, make in models:
        model = make()
        shape = tuple(model.input_shape[1:])
        # a context model takes stacks of windows; what is in them does not change the cost
        x = windows if shape == windows.shape[1:] else np.repeat(windows[:, None], shape[0], axis=1)
        out[label] = {**per_window_latency_ms(model, x), "parameters": int(model.count_params())}
        keras.backend.clear_session()
    return out


SEED_MODELS = ("lstm", "cnn_lstm", "conv_lstm")
_RUN_ROW = re.compile(r"^\|\s*(\d+)\s*\|\s*(\d+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*([\d.]+)\s*\|\s*$")


def seed_model_runs(report: Path) -> list[dict]:
    """The per-run rows (seed, accuracy, macro F1) of a ``harstream evaluate
    --model NAME --repeats N --report-dir`` report (the tutorial's seed models)."""
    if not report.is_file():
        return []
    runs = []
    for line in report.read_text().splitlines():
        m = _RUN_ROW.match(line)
        if m:
            runs.append(
                {
                    "seed": int(m[2]),
                    "accuracy": float(m[3]) / 100,
                    "macro_f1": float(m[4]) / 100,
                    "train_seconds": float(m[5]),
                }
            )
    return runs


def with_seed_models(results: dict, reports: Path = REPORTS) -> dict:
    """``results`` with the tutorial's models first, from their own reports:
    ``reports/NAME.md`` and any later repeats in ``reports/*/NAME.md`` (a
    seed already counted is not counted twice)."""
    out = {}
    for name in SEED_MODELS:
        sources = [reports / f"{name}.md", *sorted(reports.glob(f"*/{name}.md"))]
        runs: dict[int, dict] = {}
        for source in sources:
            for run in seed_model_runs(source):
                runs.setdefault(run["seed"], run)
        if runs:
            out[f"{name} (tutorial)"] = {
                "runs": [runs[seed] for seed in sorted(runs)],
                "sources": [str(p.relative_to(reports.parent)) for p in sources if p.is_file()],
                "latency": results.get(name, {}).get("latency", {}),
                "parameters": results.get(name, {}).get("latency", {}).get("parameters", "?"),
            }
    out.update({k: v for k, v in results.items() if k not in SEED_MODELS})
    return out


def load_results(path: Path = RESULTS_FILE) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save_results(results: dict, path: Path = RESULTS_FILE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def final_runs(
    recipe: Recipe,
    train: Windows,
    test: Windows,
    seeds: list[int],
    keep_dir: Path | None = None,
    verbose: int = 0,
) -> list[dict]:
    """Train on all training subjects per seed; test once per seed.

    Each run's model is saved under ``keep_dir`` (``seed<N>.keras``) when given.
    """
    import keras

    runs = []
    for seed in seeds:
        start = time.perf_counter()
        model, _ = fit(recipe, train, seed, verbose=verbose)
        seconds = time.perf_counter() - start
        probs = predict(model, test.x)
        run = {
            "seed": seed,
            "train_seconds": round(seconds, 1),
            **score(test.y, probs),
            "per_subject": per_subject_counts(test.y, probs.argmax(axis=1), test.subjects),
        }
        run["parameters"] = int(model.count_params())
        if keep_dir is not None:
            from ..artifact import save_artifact

            save_artifact(
                model,
                {
                    "architecture": recipe.label,
                    "recipe": recipe.to_json(),
                    "seed": seed,
                    "context_steps": list(recipe.context),
                    "test_accuracy": run["accuracy"],
                },
                keep_dir / f"seed{seed}.keras",
            )
        print(
            f"{recipe.label} seed {seed}: test accuracy {run['accuracy']:.4f} macro F1 {run['macro_f1']:.4f} ({seconds:.0f} s)",
            flush=True,
        )
        runs.append(run)
        keras.backend.clear_session()
    return runs


def summarise(runs: list[dict]) -> dict:
    acc = np.array([r["accuracy"] for r in runs])
    f1 = np.array([r["macro_f1"] for r in runs])
    return {
        "repeats": len(runs),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std()),
        "macro_f1_mean": float(f1.mean()),
        "macro_f1_std": float(f1.std()),
    }


def plot_confusion(confusion: list[list[int]], title: str, path: Path) -> Path:
    """Row-normalised confusion matrix PNG with counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.asarray(confusion)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ConfusionMatrixDisplay(cm, display_labels=[a.replace("WALKING_", "W_").lower() for a in ACTIVITIES]).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=35
    )
    ax.set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _fmt_int(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _fmt_pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def feature_study_lines(study_file: Path) -> list[str]:
    """The report's section on ``feature_study.json`` (none if it was not run)."""
    if not study_file.is_file():
        return []
    study = json.loads(study_file.read_text())["studies"]
    lines = [
        "## Feature study (validation subjects)",
        "",
        "`python -m harstream.models.studies.feature_study`: an RBF SVM on the same hand-crafted features, "
        "for three questions — how far the features go on the causal windows, what UCI's zero-phase "
        "filtering would add, and what the windows just before the current one add.",
        "",
        "| study | validation acc % | sitting→standing / standing→sitting errors |",
        "|---|---|---|",
    ]
    for name, r in study.items():
        cm = r["validation_confusion"]
        lines.append(f"| {name} | {100 * r['validation_accuracy']:.2f} | {cm[3][4]} / {cm[4][3]} |")
    return lines + [""]


def context_study_lines(study_file: Path) -> list[str]:
    """The report's section on ``context_study.json`` (none if it was not run)."""
    if not study_file.is_file():
        return []
    ctx = json.loads(study_file.read_text())
    lines = [
        "## Where the context windows help (test subjects, after the final runs)",
        "",
        f"`{ctx.get('command', 'python -m harstream.models.studies.context_study')}`: the held-out windows split by "
        f"whether the samples the context model looks at (windows {', '.join(map(str, ctx['context_steps']))} "
        "steps back to the current one) hold an activity change. HAPT's script has short activities, so a "
        "change is often in view; someone sitting for an hour gives no such hint.",
        "",
        f"| windows | count | with context ({ctx['with']}) % | without ({ctx['without']}) % |",
        "|---|---|---|---|",
    ]
    for name, r in ctx["parts"].items():
        lines.append(f"| {name} | {r['windows']:,} | {100 * r['with']:.2f} | {100 * r['without']:.2f} |")
    return lines + [""]


def write_report(results: dict, live: dict | None = None, path: Path = REPORT_FILE) -> Path:
    """``docs/report.md``: one table of all models, confusion matrices, live accuracy."""
    lines = [
        "# harstream model report",
        "",
        "Held-out UCI test subjects (2, 4, 9, 10, 12, 13, 18, 20, 24), windows from the causal",
        "streaming preprocessing, protocol in [evaluation.md](evaluation.md). Made by",
        "`harstream evaluate --compare` (= `python -m harstream.models.studies.compare report`) from",
        "`docs/reports/results.json` (final runs), `selection.json` (validation screen), `live.json`",
        "and the tutorial models' own `harstream evaluate` reports.",
        "Each section names the command that made its figures; the studies are the modules in "
        "`models/studies/` (`python -m harstream.models.studies.<name>`), kept apart from what the worker runs.",
        "",
        "| model | repeats | test accuracy % (mean ± std) | macro F1 % | parameters | batched ms/window | single-window call ms | validation acc % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results.items():
        runs = entry.get("runs", [])
        if not runs:
            continue
        s = summarise(runs)
        if entry.get("sources"):
            name = f"{name} (" + ", ".join(f"[source]({src})" for src in entry["sources"]) + ")"
        lat = entry.get("latency", {})
        val = entry.get("validation_accuracy")
        lines.append(
            f"| {name} | {s['repeats']} | {_fmt_pct(s['accuracy_mean'], s['accuracy_std'])} | "
            f"{_fmt_pct(s['macro_f1_mean'], s['macro_f1_std'])} | {_fmt_int(entry.get('parameters', runs[0].get('parameters', '?')))} | "
            f"{lat.get('batched_ms', float('nan')):.3f} | {lat.get('single_ms', float('nan')):.2f} | "
            f"{'' if val is None else f'{100 * val:.2f}'} |"
        )
    lines += [
        "",
        "Latency: median of 7 direct eager `model(x)` calls (`python -m harstream.models.studies.compare latency`), "
        "256 windows per batched call, all models in one run on this machine (2 shared cores, loaded). "
        "The single-window column is eager Keras overhead; the worker serves single windows through its "
        "compiled runtime (`models/runtime.py`, tflite/tf-function), see the live section.",
        "",
    ]
    spread = [
        (name, entry["runs"][0])
        for name, entry in results.items()
        if entry.get("runs") and "per_subject" in entry["runs"][0]
    ]
    if spread:
        lines += [
            "## How much the figure depends on who is held out",
            "",
            "Repeats with different seeds show how much a model depends on its initialisation; they "
            "cannot show how much the accuracy depends on *which* nine people were held out (and a "
            "deterministic model such as the SVM repeats itself exactly). Per test subject, the first "
            "run's window accuracy, and a 95 % percentile bootstrap interval with the subjects resampled "
            "(`scipy.stats.bootstrap`, 5,000 resamples).",
            "",
            "| model | accuracy per test subject % (min / median / max) | 95 % interval, subjects resampled |",
            "|---|---|---|",
        ]
        for name, run in spread:
            acc = sorted(100 * c / n for c, n in run["per_subject"].values())
            low, high = subject_bootstrap_interval(run["per_subject"])
            lines.append(
                f"| {name} | {acc[0]:.1f} / {np.median(acc):.1f} / {acc[-1]:.1f} | {100 * low:.2f} – {100 * high:.2f} |"
            )
        lines.append("")
    selection = load_selection(path.parent / "reports" / "selection.json")
    if selection:
        lines += [
            "## Candidates screened on the validation subjects",
            "",
            "Trained on 16 training subjects, scored on validation subjects "
            f"{', '.join(map(str, VALIDATION_SUBJECTS))} (never the test subjects), one seed each. "
            "The best final validation accuracy was chosen for the final runs above "
            "(`python -m harstream.models.studies.selection --epochs N RECIPE…`; the runs in docs/BENCHMARKS.md).",
            "",
            "| candidate | epochs | validation acc % (last epoch) | best epoch (acc %) | parameters | train s | sitting→standing / standing→sitting errors | batched ms/window |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in selection:
            cm = r.get("validation_confusion")
            sit_stand = f"{cm[3][4]} / {cm[4][3]}" if cm else ""
            lines.append(
                f"| {r['recipe']['label']} | {'–' if r['recipe']['architecture'] in ESTIMATORS else r['recipe']['epochs']} | "
                f"{100 * r['validation_accuracy']:.2f} | "
                f"{r['best_epoch']} ({100 * r['best_validation_accuracy']:.2f}) | {r['parameters']:,} | {r['train_seconds']:.0f} | {sit_stand} | "
                f"{results.get(r['recipe']['label'], {}).get('latency', {}).get('batched_ms', float('nan')):.3f} |"
            )
        lines.append("")
    lines += feature_study_lines(path.parent / "reports" / "feature_study.json")
    lines += context_study_lines(path.parent / "reports" / "context_study.json")
    lines += ["## Confusion matrices (summed over the repeats)", ""]
    for name, entry in results.items():
        runs = entry.get("runs", [])
        if not runs or any("confusion" not in r for r in runs):
            continue
        total = np.sum([r["confusion"] for r in runs], axis=0)
        png = plot_confusion(
            total.tolist(),
            f"{name}: {len(runs)} runs, held-out subjects",
            path.parent / "reports" / f"confusion_{name}.png",
        )
        lines += [f"### {name}", "", f"![{name} confusion]({png.relative_to(path.parent).as_posix()})", ""]
    if live:
        from .live_accuracy import live_report_lines

        lines += live_report_lines(live, path.parent / "reports", path.parent)
    study = path.parent / "reports" / "personalisation.json"
    if study.is_file():
        rows = json.loads(study.read_text())
        lines += [
            "## Fine-tuning on one's own data (personalisation study)",
            "",
            "`python -m harstream.models.studies.personalisation`: per held-out subject, the shipped model fine-tuned "
            "on all but the subject's last session, then scored on that last session. "
            + (
                "The SVM is refitted on all embedded training windows plus the subject's, the subject's "
                "weighted to count as much as the rest."
                if rows and rows[0].get("method") == "svm refit"
                else "5 epochs, Adam 1e-4, BatchNorm frozen, as many embedded training windows mixed in."
            ),
            "",
            "| subject | own windows | scored session (windows) | accuracy before % | after % |",
            "|---|---|---|---|---|",
        ]
        for r in rows:
            lines.append(
                f"| {r['subject']} | {r['own_windows']} | {r['test_session']} ({r['test_windows']}) | "
                f"{100 * r['accuracy_before']:.1f} | {100 * r['accuracy_after']:.1f} |"
            )
        before = np.mean([r["accuracy_before"] for r in rows])
        after = np.mean([r["accuracy_after"] for r in rows])
        lines += ["", f"Mean over subjects: {100 * before:.1f} % before, {100 * after:.1f} % after.", ""]
    path.write_text("\n".join(lines) + "\n")
    return path


def ship_default(model_path: Path, entry: dict, target: Path | None = None) -> Path:
    """Copy one final run's model to the shipped default with the protocol's
    figures (mean ± std over all seeds) in its metadata.

    The shipped seed is the FIRST seed of the run, fixed in advance, not the
    best on test (picking the best test run would leak the test subjects)."""
    from ..artifact import DEFAULT_MODEL, load_artifact, save_artifact

    art = load_artifact(model_path)
    s = summarise(entry["runs"])
    meta = {k: v for k, v in art.metadata.items() if k not in ("sha256", "library_versions")}
    meta.update(
        {
            "architecture": entry["recipe"]["label"],
            "data": entry.get("data", {}),
            "split": entry.get("split", {}),
            "windows": entry.get("windows", {}),
            "epochs": entry["recipe"]["epochs"],
            "batch_size": entry["recipe"]["batch_size"],
            "seed": entry["runs"][0]["seed"],
            "protocol": "docs/evaluation.md",
            "repeats": s["repeats"],
            "test_accuracy_mean": s["accuracy_mean"],
            "test_accuracy_std": s["accuracy_std"],
            "macro_f1_mean": s["macro_f1_mean"],
            "validation_accuracy": entry.get("validation_accuracy"),
            "command": entry.get("command"),
        }
    )
    return save_artifact(art.model, meta, target or DEFAULT_MODEL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="final protocol runs and the comparison report")
    add_reports_option(parser)
    sub = parser.add_subparsers(dest="action", required=True)
    run = sub.add_parser("run", help="train the selected recipe on all training subjects, test once per seed")
    run.add_argument("--recipe", help="architecture[+aug]; default: the best on validation in selection.json")
    run.add_argument("--epochs", type=int, help="default: the selected recipe's")
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    run.add_argument("--keep", type=Path, default=Path("/tmp/harstream-final"), help="folder for each seed's model")
    run.add_argument("--ship", action="store_true", help="save seed 0's model as models/pretrained/default.keras")
    sub.add_parser("report", help="write docs/report.md from docs/reports/results.json")
    lat = sub.add_parser(
        "latency", help="time per-window inference of every model in results.json and the seed LSTM, in one run"
    )
    lat.add_argument(
        "--extra", nargs="*", default=["lstm", "cnn_lstm", "conv_lstm"], help="registry architectures to time too"
    )
    args = parser.parse_args(argv)

    if args.action == "latency":
        results = load_results(args.reports / "results.json")
        by_label = {
            r.label: r
            for r in [Recipe.from_json(e["recipe"]) for e in results.values() if "recipe" in e]
            + [Recipe.from_json(x["recipe"]) for x in load_selection(args.reports / "selection.json")]
        }
        recipes = list(by_label.values())
        for name, timing in measure_latencies(recipes, args.extra).items():
            results.setdefault(name, {})["latency"] = timing
            print(f"{name}: {timing['batched_ms']:.3f} ms/window batched, {timing['single_ms']:.2f} ms single call")
        save_results(results, args.reports / "results.json")
        return 0

    if args.action == "report":
        live_file = args.reports / "live.json"
        live = json.loads(live_file.read_text()) if live_file.is_file() else None
        print(
            write_report(
                with_seed_models(load_results(args.reports / "results.json"), args.reports),
                live,
                args.reports.parent / "report.md",
            )
        )
        return 0

    from harstream.stream.data.recordings import load_embedded

    selection = load_selection(args.reports / "selection.json")
    recipe = parse_recipe(args.recipe, args.epochs or 12) if args.recipe else best_recipe(selection)
    if args.epochs and not args.recipe:
        recipe = Recipe.from_json({**recipe.to_json(), "epochs": args.epochs})
    dataset = load_embedded()
    windows = labelled_windows(dataset.recordings, context_steps=recipe.context)
    train, test = split_by_subject(windows)
    runs = final_runs(recipe, train, test, args.seeds, keep_dir=args.keep / recipe.label, verbose=2)
    results = load_results(args.reports / "results.json")
    val = [r["validation_accuracy"] for r in selection if r["recipe"]["label"] == recipe.label]
    entry = {
        "recipe": recipe.to_json(),
        "runs": runs,
        "parameters": runs[0]["parameters"],
        "validation_accuracy": max(val) if val else None,
        "data": {"source": dataset.source, "sha256": dataset.sha256, "windowed_by": "harstream causal pipeline"},
        "split": {
            "test_subjects": sorted(set(test.subjects.tolist())),
            "train_subjects": sorted(set(train.subjects.tolist())),
            "validation_subjects_for_selection": list(VALIDATION_SUBJECTS),
        },
        "windows": {"train": len(train), "test": len(test)},
        "command": "python -m harstream.models.studies.compare " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    results[recipe.label] = {**results.get(recipe.label, {}), **entry}
    save_results(results, args.reports / "results.json")
    print(json.dumps(summarise(runs)))
    if args.ship:
        print(ship_default(args.keep / recipe.label / f"seed{args.seeds[0]}.keras", results[recipe.label]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
