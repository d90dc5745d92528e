"""``harstream worker``: preprocess device streams, run the model, publish predictions.

Each device is served in a mode (README, "Modes"): ``waist`` by ``--model``
(the shipped HAPT model by default), ``any`` by ``--any-model`` (the shipped
placement-free model; phones from the gateway), ``personal`` by a model
found in ``--personal-dir`` (watched while serving). ``--single-model``
serves ``--model`` to every device, as before modes.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from collections.abc import Callable

from harstream.commands._options import (
    PARTITIONS,
    SECONDS,
    SECONDS_OR_OFF,
    STATS_EVERY,
    Number,
    add_broker,
    add_keys,
    check_broker,
    check_endpoints,
    endpoint_help,
    worker_name,
)
from harstream.stream.durable.leases import MAX_LEASE_MS


def _shard(text: str) -> tuple[int, int]:
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"shard {text!r}: expected k/N, e.g. 0/2") from None
    if not 0 <= k < n <= 64:
        raise argparse.ArgumentTypeError(f"shard {text!r}: need 0 <= k < N <= 64")
    return k, n


def configure(parser: argparse.ArgumentParser) -> None:
    from harstream.stream.core.smoothing import DEFAULT_THRESHOLD, DEFAULT_WINDOWS

    parser.add_argument(
        "--model",
        default=None,
        help="model artifact (.keras) for waist mode: replays and phones declared at the waist "
        "(default: the shipped model)",
    )
    parser.add_argument(
        "--any-model",
        default=None,
        metavar="PATH",
        help="placement-free model for any mode: phones from the gateway (default: the shipped "
        "any.keras; skipped with a warning if it does not load, unless given here)",
    )
    parser.add_argument(
        "--any-nogyro-model",
        default=None,
        metavar="PATH",
        help="placement-free model taught without the gyroscope, for any-mode phones that send none "
        "(default: the shipped any_nogyro.keras; without one they get --any-model with their gyro read as 0)",
    )
    parser.add_argument(
        "--personal-dir",
        default=None,
        metavar="DIR",
        help="folder of personal models (<name>.personal.json, its device = the bus id), "
        "watched while serving (default $HARSTREAM_PERSONAL_DIR or runs/personal)",
    )
    parser.add_argument(
        "--personal-poll",
        type=Number(float, 0.05, 3600),
        default=1.0,
        metavar="S",
        help="seconds between looks at --personal-dir (default %(default)s)",
    )
    parser.add_argument(
        "--single-model", action="store_true", help="serve --model to every device: no any mode, no personal models"
    )
    parser.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", "tflite", "tf-function", "keras", "none"),
        help="serving runtime; auto = fastest that agrees with Keras; none = no inference "
        "(uniform probabilities, for transport tests)",
    )
    parser.add_argument("--ingest", default=None, help=endpoint_help("ingest", "bind"))
    parser.add_argument("--publish", default=None, help=endpoint_help("output", "bind"))
    parser.add_argument(
        "--proxy",
        action="store_true",
        help="connect to the back ends of `harstream proxy` (5557 in, 5558 out) instead of binding",
    )
    parser.add_argument("--shard", type=_shard, default=None, metavar="k/N", help="handle only shard k of N")
    parser.add_argument(
        "--id", type=worker_name, default=None, help="worker id in stats and predictions (printable, 1-200 characters)"
    )
    parser.add_argument(
        "--max-batch", type=Number(int, 1, 4096), default=64, help="windows per model call (default 64)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=Number(float, 0, 10_000),
        default=5.0,
        help="how long a completed window may wait for a batch to fill (default 5)",
    )
    parser.add_argument(
        "--display",
        default="decoder",
        choices=("decoder", "smoothed", "raw"),
        help="what the published `smoothed` label is: decoder = the model's HMM decoder "
        "(its metadata's `decoder` entry; the raw label, with a warning, if it has none), "
        "smoothed = moving average of --smooth windows, raw = this window alone "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--between-devices",
        type=Number(int, 0, 1_000_000),
        default=256,
        metavar="N",
        help="display-only updates between windows for at least N waist-mode devices at a time, first come "
        "first served, and for every further one while the worker's loop has room (--between-headroom; a device "
        "that leaves frees its place; 0 = off; never with --redis): per such device a second grid of windows "
        "32 samples (0.64 s) after the model's; one whose body motion or gravity moved since the window it "
        "follows is labelled by the same model and the display decoder's peek at it is published as a "
        "prediction with `between` set (never in the history): the now label ~1.5 points more accurate and "
        "~0.3 s sooner at about +48 %% worker CPU per such device (docs/BENCHMARKS.md) (default %(default)s)",
    )
    parser.add_argument(
        "--between",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--between: between updates for every waist-mode device (no limit); "
        "--no-between: for none (= --between-devices 0)",
    )
    parser.add_argument(
        "--between-headroom",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="places past --between-devices follow the worker loop's load over 5 s: every new run gets one while "
        "the loop uses under half a core, none while it is between half and 3/4, and past 3/4 a quarter of "
        "them are taken back each second, newest first (--no-between-headroom: exactly N) (default on)",
    )
    parser.add_argument(
        "--between-motion",
        type=Number(float, 0, 16),
        default=0.03,
        help="g of body motion a between window must differ by from the window it follows to be labelled "
        "(default %(default)s)",
    )
    parser.add_argument(
        "--between-turn",
        type=Number(float, 0, 180),
        default=10.0,
        help="degrees its gravity must turn, the other way to be labelled (default %(default)s)",
    )
    parser.add_argument(
        "--smooth",
        type=Number(int, 1, 1000),
        default=DEFAULT_WINDOWS,
        help="windows averaged with --display smoothed (default %(default)s)",
    )
    parser.add_argument(
        "--threshold",
        type=Number(float, 0, 1),
        default=DEFAULT_THRESHOLD,
        help="smoothed probability below which the activity is 'unknown' (default %(default)s)",
    )
    parser.add_argument(
        "--idle-timeout", type=SECONDS, default=30.0, help="seconds before a silent device is evicted (default 30)"
    )
    parser.add_argument(
        "--signal-interval",
        type=SECONDS_OR_OFF,
        default=0.5,
        help="seconds between decimated signal messages per device (0 = off; default 0.5)",
    )
    add_broker(
        parser,
        None,
        "consume the durable log on this broker (redis://127.0.0.1:PORT or unix://PATH) "
        "instead of the ingest bus; partitions are shared with other workers by lease",
    )
    parser.add_argument(
        "--partitions", type=PARTITIONS, default=12, help="partitions of the log, as the bridge's (default 12)"
    )
    parser.add_argument(
        "--lease-ms",
        type=Number(int, 100, MAX_LEASE_MS),
        default=600,
        help="lease time: a dead worker's partitions move after this (default 600)",
    )
    parser.add_argument(
        "--forget-after",
        type=Number(float, 0, 30 * 86400),
        default=3600.0,
        metavar="SECONDS",
        help="with --redis: a device with no window committed for this long loses its progress record and "
        "latest prediction in the broker (0 = kept for ever; default %(default)g)",
    )
    parser.add_argument(
        "--no-fast-start",
        action="store_true",
        help="always load the model with Keras and check the runtime, even when a checked "
        "LiteRT conversion of it is cached",
    )
    parser.add_argument(
        "--stale-after",
        type=SECONDS_OR_OFF,
        default=None,
        help="drop samples older than this many seconds of wall clock when they arrive, counted "
        "as stale (a backlog a restarted worker is handed); 0 = never (default 5 on the ingest bus; "
        "never with --redis: the log is there so that every window is predicted, and a partition "
        "taken over is rebuilt from samples older than that)",
    )
    parser.add_argument(
        "--takeover-after",
        type=Number(float, 0, 3600),
        default=2.56,
        help="seconds a device's session must be quiet before another session may take the "
        "device over (default %(default)s)",
    )
    parser.add_argument(
        "--require-session",
        action="store_true",
        help="refuse samples that name no producer session (counted as `session`): a producer "
        "without one can be impersonated; the simulator and the gateway always send one",
    )
    parser.add_argument(
        "--output-secret",
        default=None,
        metavar="FILE",
        help="the output secret of the `harstream proxy` whose back end --publish connects to "
        "(default with --proxy: the proxy's default file; see docs/protocol.md)",
    )
    parser.add_argument(
        "--placement-interval",
        type=Number(float, 0, 86400),
        default=10.0,
        metavar="S",
        help="seconds a device's declared placement (meta.placement) holds before it may change "
        "again; sooner changes are refused and counted as placement_refused (default 10)",
    )
    add_keys(parser)
    parser.add_argument(
        "--whole-model",
        action="store_true",
        help="serve a staged context model in one piece (every window's features computed for "
        "each decision it is part of) instead of its features once per window; for comparison",
    )
    parser.add_argument(
        "--stats-every",
        type=STATS_EVERY,
        default=5.0,
        help="seconds between printed stats lines, each of those seconds: rates and batches over them, "
        "latency and lag the worst second's (default 5)",
    )


def run(args: argparse.Namespace) -> int:
    from harstream.commands._running import bus_errors, stop_on_signals
    from harstream.models.personal_serving import load_personal_model
    from harstream.stream.bus import addresses as bus
    from harstream.stream.bus.zmq_worker import serve
    from harstream.stream.core.headroom import Headroom
    from harstream.stream.core.model_routing import ModelRouter
    from harstream.stream.core.worker import WorkerConfig
    from harstream.stream.personal.registry import PersonalRegistry, personal_dir

    ingest, output = args.ingest, args.publish
    output_secret = args.output_secret
    if args.proxy:
        from harstream.stream.bus.proxy import default_output_secret

        ingest = ingest or ">" + bus.DEFAULT_PROXY_INGEST_BACKEND
        output = output or ">" + bus.DEFAULT_PROXY_OUTPUT_BACKEND
        output_secret = output_secret or str(default_output_secret(output))
    if args.redis:
        check_broker("worker", args)
        check_endpoints("worker", args.keys, ("--publish", output or bus.output_address(), "bind"))
    else:
        check_endpoints(
            "worker",
            args.keys,
            ("--ingest", ingest or bus.ingest_address(), "bind"),
            ("--publish", output or bus.output_address(), "bind"),
        )
    from harstream.stream.core.filters import UciFilterBank

    UciFilterBank()  # designs the filters (imports scipy.signal) now, not when the first samples arrive
    if args.display == "raw":
        args.smooth = 1  # a moving average of one window is the raw label with the unknown threshold
    routing = not args.single_model
    try:
        waist = load_served(args.model, "waist", args)
        anywhere = bare = None
        if routing:
            anywhere = load_any(args)
            bare = load_any_without_gyro(args) if anywhere is not None else None
    except ModelLoadError as exc:
        raise SystemExit(f"worker: {exc}") from None
    runtime, classes, model_id = waist.runtime, list(waist.classes), waist.model_id
    context_steps, display = waist.context_steps, waist.display
    config = WorkerConfig(
        max_batch=args.max_batch,
        max_wait=args.max_wait_ms / 1000.0,
        smooth_windows=args.smooth,
        threshold=args.threshold,
        idle_timeout=args.idle_timeout,
        signal_interval=args.signal_interval,
        shard=args.shard,
        context_steps=context_steps,
        display=display,
        stale_after=stale_after(args),
        takeover_after=args.takeover_after,
        features=waist.features,
        require_session=args.require_session,
        placement_interval=args.placement_interval,
        # the durable log commits windows by number: its path publishes the model's windows only
        between_devices=0 if args.redis or args.between is False else None if args.between else args.between_devices,
        between_headroom=Headroom() if args.between_headroom else None,
        between_motion=args.between_motion,
        between_turn=args.between_turn,
    )
    stop = stop_on_signals()
    import gc

    # What is loaded by now (TensorFlow, Keras, the models: ~400,000 objects) lives as long as
    # the process; out of the collector's sight, a full collection no longer walks it (180 ms
    # every few seconds under load, a latency spike and ~4 % of a core).
    gc.freeze()
    router = personal = None
    if routing:
        router = ModelRouter(waist, anywhere, bare)
        folder = personal_dir(args.personal_dir)
        personal = PersonalRegistry(
            folder,
            lambda path: load_personal_model(path, anywhere, display_maker(args)),
            interval=args.personal_poll,
        )
        print(
            f"worker: modes waist ({waist.model_id}), "
            f"{'any (' + anywhere.model_id + ')' if anywhere else 'no any mode'}, "
            + (f"any without a gyroscope ({bare.model_id}), " if bare else "")
            + f"personal (watching {folder})",
            flush=True,
        )
    serving: Callable[..., dict] = functools.partial(serve, ingest=ingest)  # the bus worker, or:
    if args.redis:  # the worker on the durable log
        from harstream.stream.durable.redis_worker import LogConfig, serve_redis

        log_config = LogConfig(
            partitions=args.partitions,
            lease_ttl_ms=args.lease_ms,
            renew_every_ms=max(20, args.lease_ms // 4),
            allow_remote_broker=args.allow_remote_broker,
            forget_after_s=args.forget_after,
        )
        serving = functools.partial(serve_redis, url=args.redis, log_config=log_config)
    try:
        with bus_errors("worker"):
            final = serving(
                runtime,
                classes,
                model_id,
                output=output,
                config=config,
                worker_id=args.id,
                stop=stop,
                print_every=args.stats_every,
                printer=lambda line: print(line, flush=True),
                router=router,
                personal=personal,
                keys=args.keys,
                output_secret=output_secret,
            )
    except ValueError as exc:  # the broker refused, the partition count disagreeing
        if not args.redis:
            raise
        raise SystemExit(f"worker: {exc}") from None
    if args.redis:
        print(f"worker: stopped; totals {final.get('totals')}, broker {final.get('broker')}", flush=True)
    else:
        print(f"worker: stopped; totals {final.get('totals')}, drops {final.get('drops')}", flush=True)
    return 0


def stale_after(args: argparse.Namespace) -> float | None:
    """``--stale-after`` as the worker takes it (None: never)."""
    if args.stale_after is None:
        return None if args.redis else 5.0
    return args.stale_after or None


class ModelLoadError(Exception):
    """A model given to the worker could not be served."""


def display_maker(args: argparse.Namespace):
    """``(classes, metadata) -> display factory`` for ``--display`` (None: the
    core's moving average of ``--smooth`` windows). A model whose metadata
    carries no decoder is shown window by window, and the start-up line says
    which model that is (several are served at once)."""
    from harstream.models.artifact import model_id_of
    from harstream.stream.core.decoder import display_for
    from harstream.stream.core.smoothing import Smoother

    if args.display != "decoder" or args.runtime == "none":
        return None

    def make(classes: list[str], meta: dict):
        if meta.get("decoder") is None and "architecture" in meta:  # a shared model (a personal head: its own)
            print(
                f"worker: model {model_id_of(meta)} carries no display decoder: "
                "its devices are shown each window's own label",
                flush=True,
            )
            return lambda: Smoother(classes, windows=1, threshold=args.threshold)
        return display_for(classes, meta.get("decoder"), args.threshold)

    return make


def load_served(path: str | None, mode: str, args: argparse.Namespace):
    """The model at ``path`` (the shipped one for its mode when None) with its
    runtime and display, as a :class:`~harstream.stream.core.model_routing.ServedModel`."""
    from harstream.models.artifact import ANY_MODEL, ArtifactError, load_artifact, model_id_of
    from harstream.models.fast_start import load_cached_runtime
    from harstream.models.runtime import NullRuntime, load_runtime
    from harstream.stream.core.activities import ACTIVITIES, PLACEMENT_FREE
    from harstream.stream.core.model_routing import ServedModel

    if args.runtime == "none":
        classes = list(PLACEMENT_FREE if mode == "any" else ACTIVITIES)
        return ServedModel(
            mode, mode, f"none-{mode}" if mode != "waist" else "none", tuple(classes), runtime=NullRuntime(len(classes))
        )
    if path is None and mode == "any":
        path = str(ANY_MODEL)
    cached = None
    features = None
    try:
        if args.runtime in ("auto", "tflite") and not args.no_fast_start:
            # A conversion checked on an earlier start: no TensorFlow, serving in a second.
            # A staged model: numpy features and the decision stage's checked conversion.
            cached = load_cached_runtime(path, whole_model=args.whole_model)
        if cached is not None:
            runtime, meta = cached
            staged = bool(meta.get("stages")) and not args.whole_model
            if staged:
                _one_blas_thread()
                features = runtime.features  # each window's features once, then decisions on feature stacks
            tf_loaded = "tensorflow" in sys.modules or "keras" in sys.modules
            print(
                f"worker: {mode} model {model_id_of(meta)} served by {runtime.name} from its checked conversion "
                f"(fast start; TensorFlow {'loaded' if tf_loaded else 'not loaded'})",
                flush=True,
            )
        else:
            artifact = load_artifact(path)
            meta = artifact.metadata
            if artifact.stages and not args.whole_model:
                from harstream.models.staged_runtime import load_staged_runtime

                _one_blas_thread()
                runtime = load_staged_runtime(artifact, args.runtime)
                features = runtime.features  # each window's features once, then decisions on feature stacks
            else:
                runtime = load_runtime(artifact, args.runtime)
            print(
                f"worker: {mode} model {artifact.model_id} served by {runtime.name} "
                f"(fallback {runtime.fallback.name if runtime.fallback else 'none'}; "
                f"{_agreement(runtime.report)})",
                flush=True,
            )
            logging.getLogger("harstream.worker").debug("runtime choice for %s: %s", artifact.model_id, runtime.report)
    except ArtifactError as exc:
        raise ModelLoadError(str(exc)) from None
    except Exception as exc:  # a runtime that cannot be built for this model
        raise ModelLoadError(f"{path}: {type(exc).__name__}: {exc}") from None
    placement = meta.get("placement", "waist")
    if mode == "any" and placement != "any":
        raise ModelLoadError(f"{path}: placement {placement!r}; --any-model needs a placement-free model ('any')")
    classes = list(meta["classes"])
    make = display_maker(args)
    return ServedModel(
        mode,
        mode,
        model_id_of(meta),
        tuple(classes),
        tuple(int(s) for s in meta.get("context_steps") or ()),
        make(classes, meta) if make else None,
        runtime,
        str(path or ""),
        features,
        waist_likeness=waist_likeness_of(meta, path),
        placement_probabilities=placement_probabilities_of(meta, path),
    )


def placement_estimator_of(meta: dict, path: str | None):
    """The numpy placement estimate a placement-free model's metadata carries
    (:class:`~harstream.models.placement_estimate.PlacementEstimator`), None
    when the model carries none; one that does not load is the model's error."""
    from harstream.models.placement_estimate import PlacementEstimator

    if meta.get("placement") != "any":
        return None
    try:
        return PlacementEstimator.from_metadata(meta)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: {exc}") from None


def waist_likeness_of(meta: dict, path: str | None):
    """The stairs gate's gait evidence from a placement-free model's metadata
    (its numpy placement estimate: ``(n, 128, 9) -> (n,)`` probability that
    each window's gait is a waist's), None when the model carries none."""
    estimator = placement_estimator_of(meta, path)
    return None if estimator is None else estimator.waist_likeness


def placement_probabilities_of(meta: dict, path: str | None):
    """Where each window's device seems worn, from a placement-free model's
    metadata (``(n, 128, 9) -> (n, 3)`` probabilities of waist, thigh,
    wrist; the core takes the waist-likeness from it too), None when the
    model carries no estimate."""
    estimator = placement_estimator_of(meta, path)
    return None if estimator is None else estimator.probabilities


def _one_blas_thread() -> None:
    """One worker is one core: numpy's matmul (the feature stage) must not start BLAS threads."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, user_api="blas")


def load_any(args: argparse.Namespace):
    """The placement-free model for any mode: ``--any-model`` (an error if it
    does not load), else the shipped one (None, with a warning, if it does not)."""
    return _optional_any(args.any_model, None, "no any mode (phones are served in waist mode)", args)


def load_any_without_gyro(args: argparse.Namespace):
    """The placement-free model taught without the gyroscope (``--any-nogyro-model``,
    an error if it does not load; else the shipped one, None with a note if it
    does not), served under its own batch key."""
    from dataclasses import replace

    from harstream.models.artifact import ANY_NO_GYRO_MODEL

    note = "phones without a gyroscope get the any model with their gyro read as 0"
    served = _optional_any(args.any_nogyro_model, ANY_NO_GYRO_MODEL, note, args)
    return None if served is None else replace(served, key="any:no-gyro")


def _optional_any(path: str | None, shipped, note: str, args: argparse.Namespace):
    """A placement-free model: ``path`` (an error if it does not load), else
    ``shipped`` (None: the shipped any.keras), None with ``note`` if that does not load."""
    try:
        return load_served(path or shipped, "any", args)
    except ModelLoadError as exc:
        if path is not None:
            raise
        print(f"worker: {note}: {exc}", flush=True)
        return None


def _agreement(report: dict) -> str:
    """One phrase from a runtime's choice report for the terminal (the whole
    report is logged at debug level)."""
    agreement = report.get("agreement") or report.get("candidates", {}).get(report.get("chosen"), {})
    checked = report.get("check_windows")
    if not agreement or checked is None:
        return "agreement with Keras checked"
    return (
        f"agrees with Keras on {checked} check windows: {agreement.get('argmax_mismatches', '?')} label mismatches, "
        f"max probability difference {agreement.get('max_abs_diff', float('nan')):.1e}"
    )
