"""The stream worker on the durable log: partitions by lease, state rebuilt
from the log on takeover, predictions committed idempotently.

Each owned partition gets its own :class:`~harstream.stream.core.worker.StreamCore`
(used through its public verbs only) behind a
:class:`~harstream.stream.durable.window_keys.WindowGrid`, so dropping a partition is
dropping an object and every window has a key (device, window) that does not
depend on the worker. The loop:

1. **balance** (every ``balance_every_ms``): heartbeat into the member set,
   compute this worker's quota (:mod:`~harstream.stream.durable.partitions`), give
   back surplus partitions (drain: flush, predict, commit, release) and take
   free ones (acquire a lease with a new epoch, then rebuild);
2. **read** each owned partition's stream with ``XREADGROUP … >`` and feed
   the samples to the partition's core; acknowledge them (fenced);
3. **predict** due batches of all partitions, one model call per served
   model (each device is served in its mode, as by the single-process
   worker: a :class:`~harstream.stream.core.model_routing.ModelRouter` shared by
   every partition's core, kept in step with the personal-model folder);
   **commit** the predictions through the fenced script (a window at or below
   the device's committed one is skipped, so a replay never duplicates), then
   publish them on the ZeroMQ output bus as the single-process worker does.

**Rebuild on takeover**: ``XAUTOCLAIM`` the previous owner's pending entries,
read the device's committed window and its last probabilities from the
partition's progress hash, and replay the last ``rebuild_s`` seconds of the
log up to the group's last delivered entry. Each device's pipeline restarts
``context + warm-up`` windows before its first uncommitted window, so filters
and window context are warm; the windows already committed are not run
through the model again (their stored probabilities rebuild the smoother)
and not published. A device is routed by the replayed samples' headers, as
when they first came, so it keeps its mode and model. Then reading continues
where the previous owner stopped.

Leases are renewed by a small thread (as Kafka's heartbeat thread), so a
long model call does not cost the partitions; the main loop refuses to read a
partition whose last renewal is older than the lease time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import redis

from harstream.stream.core.incarnation import FOREIGN, JUMP
from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.pipeline import STEP
from harstream.stream.core.protocol import ProtocolError, decode_samples, encode_prediction, encode_signal, encode_stats
from harstream.stream.core.subscriptions import Subscriptions
from harstream.stream.core.worker import StreamCore, WorkerConfig, format_stats
from harstream.stream.durable.broker import GROUP, PREFIX, Backoff, Keys, connect
from harstream.stream.durable.leases import Fenced, Lease, Leases
from harstream.stream.durable.partitions import DEFAULT_PARTITIONS, plan
from harstream.stream.durable.window_keys import WindowGrid

log = logging.getLogger(__name__)


@dataclass
class LogConfig:
    """Tunables of the worker's side of the log."""

    partitions: int = DEFAULT_PARTITIONS
    lease_ttl_ms: int = 600  # a dead owner's partitions are free this long after its last renewal
    renew_every_ms: int = 150
    balance_every_ms: int = 100
    rebuild_s: float = 12.0  # log tail replayed on takeover (context 4 windows + warm-up + window in progress)
    warmup_windows: int = 2  # windows of filter warm-up before the first context window
    read_count: int = 2000  # entries per partition per read
    predictions_maxlen: int = 100_000  # the capped predictions stream
    # A device with no window committed for this long loses its progress record and latest
    # prediction in the broker (0: kept for ever); an id-rotating client cannot grow them for good.
    forget_after_s: float = 3600.0
    prefix: str = PREFIX
    allow_remote_broker: bool = False  # a broker off this machine (see broker.connect)


@dataclass
class Owned:
    """A partition this worker holds."""

    lease: Lease
    core: StreamCore
    grid: WindowGrid = field(default_factory=WindowGrid)
    committed: dict[str, int] = field(default_factory=dict)  # device -> last window an earlier owner wrote
    # their last probabilities: device -> (key of the model that made them, or None if not recorded, {window: probs})
    stored: dict[str, tuple[str | None, dict[int, list[float]]]] = field(default_factory=dict)
    # device -> (model key, (window, probs) of that model) for the progress record
    recent: dict[str, tuple[str, deque]] = field(default_factory=dict)
    renewed: float = 0.0  # monotonic time of the last successful renewal


class RedisWorker:
    """One worker process on the log (sockets and Redis at the edges, cores inside).

    ``router`` serves each device in its mode, each model with its own
    ``runtime`` (``runtime`` serves a model without one); without it,
    ``runtime`` serves ``classes``/``model_id`` to every device. ``personal``
    (:class:`~harstream.stream.personal.registry.PersonalRegistry`) is polled
    in :meth:`chores` and keeps the router's personal models in step with its
    folder.
    """

    def __init__(
        self,
        runtime,
        classes: Sequence[str],
        model_id: str,
        url: str,
        config: WorkerConfig | None = None,
        log_config: LogConfig | None = None,
        worker_id: str = "worker",
        send: Callable[[list[bytes]], None] | None = None,
        router: ModelRouter | None = None,
        personal=None,
    ):
        self.config = config or WorkerConfig()
        if router is None:  # one model for every device, as StreamCore describes it from the config
            router = ModelRouter(
                ServedModel(
                    "waist",
                    "waist",
                    model_id,
                    tuple(classes),
                    self.config.context_steps,
                    self.config.display,
                    features=self.config.features,
                )
            )
        self.router = router  # shared by every partition's core: a personal model serves wherever its device is
        self.personal = personal
        self.runtime, self.classes, self.model_id = runtime, list(router.waist.classes), router.waist.model_id
        self.url = url
        self.lc = log_config or LogConfig()
        self.worker_id = worker_id
        self.keys = Keys(self.lc.prefix)
        self.client = connect(url, allow_remote=self.lc.allow_remote_broker)
        self.leases = Leases(self.client, self.keys, self.lc.lease_ttl_ms)
        self.send = send or (lambda frames: None)
        self.subscriptions = Subscriptions()  # of the output bus: whose signal feed to make
        self.owned: dict[int, Owned] = {}
        self.counts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()  # of the worker itself (model_refused), beside its cores'
        self.retired: Counter[str] = Counter()  # totals of cores of partitions given away
        self.retired_drops: Counter[str] = Counter()
        self.backoff = Backoff()
        self.broker_up = True
        self.members: list[str] = []
        self.rebuild_ms: list[float] = []
        self._latencies: list[float] = []
        self._lags: list[float] = []
        self._lock = threading.Lock()
        self._next_forget = 0.0
        self._lost: set[int] = set()
        self._renewer_stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()

    @property
    def _context_windows(self) -> int:
        """Windows a rebuilt pipeline starts before the first uncommitted one:
        the deepest context of any served model, plus filter warm-up."""
        steps = [s for m in self.router.models for s in m.context_steps] + list(self.config.context_steps)
        return max(steps, default=0) + self.lc.warmup_windows

    # ----------------------------------------------------------- balance

    def balance(self, now: float) -> None:
        """Join/refresh membership; give back surplus partitions; take free ones."""
        self.members = self.leases.heartbeat(self.worker_id)
        if self.worker_id not in self.members:  # our own heartbeat expired meanwhile
            self.members = sorted({*self.members, self.worker_id})
        holders = self.leases.holders(self.lc.partitions)
        with self._lock:
            lost, self._lost = self._lost, set()
        for p in lost:
            self._drop(p, "lease lost")
        for p, o in list(self.owned.items()):
            if holders[p] != o.lease.value:
                self._drop(p, f"lease now {holders[p]!r}")
        free = {p for p, h in enumerate(holders) if h is None}
        todo = plan(set(self.owned), free, self.members.index(self.worker_id), len(self.members), self.lc.partitions)
        for p in todo.release:
            self.release(p, now)
        for p in todo.acquire:
            lease = self.leases.acquire(p, self.worker_id)
            if lease is not None:
                self._take_over(lease, now)

    def _take_over(self, lease: Lease, now: float) -> None:
        started = time.monotonic()
        core = StreamCore(
            self.classes,
            self.model_id,
            self.config,
            self.worker_id,
            router=self.router,
            subscriptions=self.subscriptions,
        )
        core.started = now
        owned = Owned(lease, core, renewed=now)
        self.owned[lease.partition] = owned
        try:
            self._rebuild(owned, now, started)
        except Exception:
            self.owned.pop(lease.partition, None)  # half rebuilt: the lease runs out, someone retries
            raise

    def _rebuild(self, owned: Owned, now: float, started: float) -> None:
        lease, core = owned.lease, owned.core
        stream = self.keys.partition(lease.partition)
        try:
            self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        last = "0-0"
        for group in self.client.xinfo_groups(stream):
            if _text(group["name"]) == GROUP:
                last = _text(group["last-delivered-id"])
        claimed = self._claim_pending(stream)
        for device, raw in self.client.hgetall(self.keys.progress(lease.partition)).items():
            record = json.loads(raw)
            device = _text(device)
            owned.committed[device] = int(record["w"])
            recent = [(int(w), probs) for w, probs in record.get("recent", [])]
            model = record.get("m")  # absent in records of workers that served one model
            owned.stored[device] = (model, dict(recent))
            if model is not None:
                owned.recent[device] = (model, deque(recent, maxlen=self.config.smooth_windows))
        replayed = 0
        context_windows = self._context_windows
        if last != "0-0":
            since = max(0, int(last.split("-")[0]) - int(self.lc.rebuild_s * 1000))
            first_seq: dict[str, int] = {}
            cursor = f"{since}-0"
            for _ in range(10_000):  # bounded: retention / count
                entries = self.client.xrange(stream, min=cursor, max=last, count=5000)
                if not entries:
                    break
                for _entry_id, fields in entries:
                    batch = self._decode(owned, fields)
                    if batch is None:
                        continue
                    first_seq.setdefault(batch.device, batch.seq)
                    done = owned.committed.get(batch.device)
                    start = 0 if done is None else max(0, (done + 1 - context_windows) * STEP)
                    replayed += _admit(owned, batch, now, start)
                cursor = "(" + _text(entries[-1][0])
                if len(entries) < 5000:
                    break
            for device, done in owned.committed.items():  # samples the log no longer had
                if device in first_seq and first_seq[device] > (done + 1) * STEP:
                    owned.grid.counts["lost_samples"] += first_seq[device] - (done + 1) * STEP
            core.take_signals(now + 1e9)  # the replay is not news for the display
        if claimed:
            self.leases.ack(lease, GROUP, claimed)
        elapsed = (time.monotonic() - started) * 1000
        self.rebuild_ms.append(elapsed)
        self.counts["takeovers"] += 1
        log.info(
            "%s: partition %d epoch %d taken (%d pending claimed, %d messages replayed, %.0f ms)",
            self.worker_id,
            lease.partition,
            lease.epoch,
            len(claimed),
            replayed,
            elapsed,
        )

    def _claim_pending(self, stream: str) -> list:
        """Entries the previous owner read and did not acknowledge, now ours:
        listed page by page (XPENDING) and claimed by id (XCLAIM JUSTID).
        Not XAUTOCLAIM: redis-py parses its JUSTID reply as whole entries,
        which fails as soon as anything is pending, and with its own JUSTID
        option it drops the cursor that pages through the rest."""
        claimed: list = []
        start = "-"
        for _ in range(10_000):  # bounded: a page of 1,000 each
            pending = self.client.xpending_range(stream, GROUP, min=start, max="+", count=1000)
            if not pending:
                break
            ids = [p["message_id"] for p in pending]
            claimed += self.client.xclaim(stream, GROUP, self.worker_id, 0, ids, justid=True)
            if len(pending) < 1000:
                break
            start = "(" + _text(ids[-1])
        return claimed

    def release(self, p: int, now: float) -> None:
        """Give partition ``p`` back after predicting every completed window."""
        owned = self.owned.get(p)
        if owned is None:
            return
        while owned.core.pending:
            self._run_batches(now, only=p, force=True)
        self.leases.release(owned.lease)
        self._drop(p, "released")

    def _drop(self, p: int, why: str) -> None:
        owned = self.owned.pop(p, None)
        if owned is None:
            return
        stats = owned.core.stats(time.monotonic())
        self.retired.update(stats["totals"])
        self.retired_drops.update(stats["drops"])
        self.retired.update({k: v for k, v in owned.grid.counts.items()})
        if why != "released":
            self.counts["leases_lost"] += 1
        log.info("%s: partition %d dropped (%s)", self.worker_id, p, why)

    def _renew_loop(self) -> None:
        client = connect(self.url, allow_remote=self.lc.allow_remote_broker)
        leases = Leases(client, self.keys, self.lc.lease_ttl_ms)
        while not self._renewer_stop.wait(self.lc.renew_every_ms / 1000):
            for p, owned in list(self.owned.items()):
                try:
                    ok = leases.renew(owned.lease)
                except Exception:  # broker away: the lease runs out on its own
                    continue
                if ok:
                    owned.renewed = time.monotonic()
                else:
                    with self._lock:
                        self._lost.add(p)
        client.close()

    # --------------------------------------------------------------- read

    def read(self, now: float, block_ms: int) -> int:
        """Read new entries of the owned partitions into their cores; how many."""
        fresh = now - self.lc.lease_ttl_ms / 1000
        streams = {self.keys.partition(p): ">" for p, o in self.owned.items() if o.renewed > fresh}
        if not streams:
            time.sleep(block_ms / 1000)
            return 0
        reply = self.client.xreadgroup(GROUP, self.worker_id, streams, count=self.lc.read_count, block=block_ms or None)
        n = 0
        now = time.monotonic()
        for stream, entries in reply or []:
            p = int(_text(stream).rsplit(":", 1)[1])
            owned = self.owned.get(p)
            if owned is None:
                continue
            for _entry_id, fields in entries:
                batch = self._decode(owned, fields)
                if batch is not None:
                    _admit(owned, batch, now)
                n += 1
            try:
                self.leases.ack(owned.lease, GROUP, [e[0] for e in entries])
            except Fenced as exc:
                self._drop(p, str(exc))
        self.counts["entries"] += n
        return n

    def _decode(self, owned: Owned, fields: dict):
        try:
            return decode_samples([fields[b"t"], fields[b"h"], fields[b"s"]])
        except KeyError as exc:
            owned.core.count_drop("frame_count", f"log entry lacks field {exc}")
        except ProtocolError as exc:
            owned.core.count_drop(exc.reason, exc.detail)
        return None

    # ------------------------------------------------------------ predict

    def _run_batches(self, now: float, only: int | None = None, force: bool = False) -> int:
        """Model calls for every partition with a due batch; returns windows predicted."""
        total = 0
        for _ in range(1000):
            parts = [
                (p, o)
                for p, o in self.owned.items()
                if (only is None or p == only) and (o.core.batch_due(now) or (force and o.core.pending))
            ]
            if not parts:
                break
            taken_all, rows = [], 0
            for p, o in parts:
                if rows >= self.config.max_batch:
                    break
                x, taken = o.core.take_batch()
                taken_all.append((p, o, x, taken))
                rows += len(taken)
            self._predict(taken_all)
            total += rows
            now = time.monotonic()
        return total

    def _predict(self, taken_all: list) -> None:
        """Label the batches taken from the partitions: one model call per
        served model (a partition's batch holds one model's windows), each by
        that model's runtime."""
        by_model: dict[int, tuple[ServedModel, list]] = {}
        for item in taken_all:
            taken = item[3]
            if taken:
                by_model.setdefault(id(taken[0].served), (taken[0].served, []))[1].append(item)
        for served, items in by_model.values():
            self._predict_model(served, items)

    def _predict_model(self, served: ServedModel, items: list) -> None:
        jobs = []  # (p, owned, taken, keys, suppressed mask)
        xs = []
        for p, o, x, taken in items:
            keys = [o.grid.key(w.device, w.generation, w.window) for w in taken]
            old = np.array([k is not None and k <= o.committed.get(w.device, -1) for w, k in zip(taken, keys)], bool)
            jobs.append((p, o, taken, keys, old))
            xs.append(x[~old])
        x_new = np.concatenate(xs)
        n_classes = len(served.classes)
        try:
            if len(x_new):
                probs_new = np.asarray((served.runtime or self.runtime).predict(x_new))
                if probs_new.shape != (len(x_new), n_classes):  # a runtime that lost rows must not shift windows
                    raise ValueError(f"model {served.model_id} returned {probs_new.shape} for {len(x_new)} windows")
            else:
                probs_new = np.empty((0, n_classes))
        except Exception as exc:  # never die on a batch
            for _, o, taken, _, _ in jobs:
                o.core.count_drop("inference", f"{len(taken)} windows: {type(exc).__name__}: {exc}")
            return
        now = time.monotonic()
        wall = time.time()
        offset = 0
        for p, o, taken, keys, old in jobs:
            probs = np.empty((len(taken), n_classes))
            k_new = int((~old).sum())
            probs[~old] = probs_new[offset : offset + k_new]
            offset += k_new
            for i in np.flatnonzero(old):
                probs[i] = _stored_probs(o, taken[i], keys[i])
            predictions = o.core.finish_batch(taken, probs, now)
            rows, out = [], []
            for w, pred, key, was_old in zip(taken, predictions, keys, old):
                if key is None:
                    self.counts["unkeyed"] += 1
                    continue
                model, recent = o.recent.get(pred.device, (None, None))
                if model != w.served.key or recent is None:  # another model's probabilities mean nothing to this one
                    recent = deque(maxlen=self.config.smooth_windows)
                    o.recent[pred.device] = (w.served.key, recent)
                recent.append((key, pred.probs))
                if was_old:
                    self.counts["replayed_windows"] += 1
                    continue
                pred = dataclasses.replace(pred, window=key)
                progress = {"w": key, "m": w.served.key, "recent": list(recent)}
                rows.append((pred.device, key, {"v": 1, **pred.__dict__}, progress))
                out.append(pred)
            if rows:
                try:
                    written, skipped = self.leases.commit(o.lease, rows, self.lc.predictions_maxlen)
                    self.counts["committed"] += written
                    self.counts["skipped_committed"] += skipped
                except Fenced as exc:
                    self.counts["fenced"] += len(rows)
                    self._drop(p, str(exc))
                    continue  # a stale owner publishes nothing
            for pred in out:
                self._latencies.append(pred.latency_ms)
                self._lags.append((wall - pred.t_end) * 1000.0)
                self.send(encode_prediction(pred))
            self.counts["published"] += len(out)

    # ---------------------------------------------------------- the loop

    def step(self, now: float, next_balance: float) -> None:
        """One turn of the loop: balance if due, read, predict."""
        if now >= next_balance:
            self.balance(now)
        due = any(o.core.pending for o in self.owned.values())
        self.read(now, block_ms=0 if due else 10)
        self._run_batches(time.monotonic())

    def chores(self, now: float) -> None:
        """Signals, idle devices, and the personal-model folder."""
        if self.personal is not None:
            self.apply_registry(now)
        if self.lc.forget_after_s > 0 and now >= self._next_forget:
            self._next_forget = now + 1.0
            self.forget_old_devices()
        for o in self.owned.values():
            for signal in o.core.take_signals(now):
                self.send(encode_signal(signal))
            for device in o.core.evict_idle(now):
                o.grid.forget(device)
                o.committed.pop(device, None)
                o.stored.pop(device, None)
                o.recent.pop(device, None)

    def forget_old_devices(self) -> int:
        """Let the broker forget the owned partitions' devices with no window
        committed for ``forget_after_s`` (fenced, as every write); how many."""
        gone = 0
        for p, o in list(self.owned.items()):
            try:
                gone += self.leases.forget(o.lease, int(self.lc.forget_after_s * 1000))
            except Fenced as exc:
                self._drop(p, str(exc))
        self.counts["forgotten_devices"] += gone
        return gone

    def apply_registry(self, now: float) -> None:
        """Let the personal-model registry update the router; count its
        refusals and move the devices concerned at once, in every partition."""
        try:
            events = self.personal.poll(now, self.router)
        except Exception as exc:  # the registry must not stop the worker (it does not raise for a bad file)
            self.drops["internal"] += 1
            log.exception("%s: personal models: %s", self.worker_id, exc)
            return
        self.drops["model_refused"] += sum(e.kind == "refused" for e in events)
        if events:
            for o in self.owned.values():
                o.core.reroute_all()

    def stats(self, now: float) -> dict:
        """The worker's statistics in the single-process worker's shape, plus ``broker``."""
        per = [o.core.stats(now) for o in self.owned.values()]
        totals, drops = Counter(self.retired), Counter(self.retired_drops) + self.drops
        grid: Counter[str] = Counter()
        modes: Counter[str] = Counter()
        served: Counter[str] = Counter()  # devices per model key
        for o, s in zip(self.owned.values(), per):
            totals.update(s["totals"])
            drops.update(s["drops"])
            grid.update(o.grid.counts)
            modes.update(s["modes"])
            served.update({m["key"]: m["devices"] for m in s["models"]})
        lat = np.asarray(self._latencies) if self._latencies else None
        lag = np.asarray(self._lags) if self._lags else None
        batches = sum(s["batches"] for s in per)
        out = {
            "devices": sum(s["devices"] for s in per),
            "interval_s": max((s["interval_s"] for s in per), default=0.0),
            **{
                k: round(sum(s[k] for s in per), 1)
                for k in ("samples_per_s", "windows_per_s", "predictions_per_s", "messages_per_s")
            },
            "batches": batches,
            "batch_mean": round(sum(s["batch_mean"] * s["batches"] for s in per) / batches, 2) if batches else 0.0,
            "batch_max": max((s["batch_max"] for s in per), default=0),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 2) if lat is not None else None,
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 2) if lat is not None else None,
            "lag_p50_ms": round(float(np.percentile(lag, 50)), 2) if lag is not None else None,
            "lag_p99_ms": round(float(np.percentile(lag, 99)), 2) if lag is not None else None,
            "pending": sum(s["pending"] for s in per),
            "pending_high_water": max((s["pending_high_water"] for s in per), default=0),
            "drops": dict(drops),
            "totals": dict(totals),
            "model": self.model_id,
            "models": self.router.describe(served),
            "modes": dict(modes),
            "broker": {
                "up": self.broker_up,
                "url": self.url,
                "members": len(self.members),
                "partitions": sorted(self.owned),
                "epochs": {str(p): o.lease.epoch for p, o in self.owned.items()},
                "lost_samples": grid["lost_samples"] + self.retired["lost_samples"],
                "rebuild_ms_max": round(max(self.rebuild_ms), 1) if self.rebuild_ms else None,
                **dict(self.counts),
            },
        }
        if self.personal is not None:
            out["personal"] = self.personal.stats()
        self._latencies, self._lags, self.rebuild_ms = [], [], []
        return out

    def close(self, leave: bool = True) -> None:
        """Stop renewing; with ``leave``, give every partition back first."""
        if leave:
            now = time.monotonic()
            for p in list(self.owned):
                try:
                    self.release(p, now)
                except Exception as exc:
                    log.warning("%s: releasing partition %d failed (%s); its lease runs out", self.worker_id, p, exc)
            try:
                self.leases.heartbeat(self.worker_id, leave=True)
            except Exception:
                pass
        self._renewer_stop.set()
        self._renewer.join(2)
        self.client.close()


def serve_redis(
    runtime,
    classes: Sequence[str],
    model_id: str,
    url: str,
    output: str | None = None,
    config: WorkerConfig | None = None,
    log_config: LogConfig | None = None,
    worker_id: str | None = None,
    stop=None,
    stats_every: float = 1.0,
    print_every: float = 5.0,
    sndhwm: int = 200_000,
    on_ready: Callable[[], None] | None = None,
    printer: Callable[[str], None] | None = print,
    router: ModelRouter | None = None,
    personal=None,
    keys: str | None = None,
) -> dict:
    """Run a worker on the log until ``stop`` is set; publishes on the ZeroMQ
    output bus (``output`` as in :mod:`~harstream.stream.bus.addresses`, bound by default;
    ``keys``: a CURVE key folder, needed for an address off loopback).
    ``router`` and ``personal`` serve each device in its mode, as in
    :func:`~harstream.stream.bus.zmq_worker.serve` (the registry is closed on return)."""
    import os

    import redis
    import zmq

    from harstream.stream.bus.addresses import output_address
    from harstream.stream.bus.sockets import SUBSCRIPTION_BYTES, BusSockets
    from harstream.stream.bus.zmq_worker import publish_to_all_with_room
    from harstream.stream.durable.bridge import check_partitions

    worker_id = worker_id or f"worker-{os.getpid()}"
    stop = stop or threading.Event()
    sockets = BusSockets(keys)
    drops: Counter[str] = Counter()

    def send(frames: list[bytes]) -> None:
        if not publish_to_all_with_room(pub, frames):
            drops["output_hwm"] += 1

    worker = None
    backoff = Backoff()
    try:
        pub = sockets.open(
            zmq.XPUB,
            output or output_address(),
            "bind",
            max_message=SUBSCRIPTION_BYTES,
            sndhwm=sndhwm,
            linger=1000,
            options={zmq.XPUB_NODROP: 1},
            retry_bind_s=10.0,
        )
        out_addr = pub.getsockopt_string(zmq.LAST_ENDPOINT)
        log_config = log_config or LogConfig()
        while not stop.is_set():
            try:
                worker = RedisWorker(
                    runtime,
                    classes,
                    model_id,
                    url,
                    config,
                    log_config,
                    worker_id,
                    send,
                    router=router,
                    personal=personal,
                )
                check_partitions(worker.client, worker.keys, log_config.partitions)
                break
            except redis.RedisError as exc:
                if worker is not None:
                    worker.close(leave=False)
                    worker = None
                log.warning("%s: broker %s unreachable (%s); retrying", worker_id, url, exc)
                stop.wait(backoff.next_delay())
        if worker is None:
            return {"worker": worker_id}
        if printer:
            printer(f"worker {worker_id}: log {url} ({log_config.partitions} partitions), output {out_addr}")
        if on_ready:
            on_ready()
        now = time.monotonic()
        next_balance = now
        next_chores, next_stats, next_print = now + 0.1, now + stats_every, now + print_every
        while not stop.is_set():
            now = time.monotonic()
            if not worker.backoff.ready(now):
                time.sleep(0.01)
                continue
            try:
                worker.step(now, next_balance)
                if not worker.broker_up:
                    log.warning("%s: broker %s back", worker_id, url)
                worker.broker_up = True
                worker.backoff.reset()
            except redis.RedisError as exc:
                if worker.broker_up:
                    log.warning("%s: broker %s: %s; retrying with back-off", worker_id, url, exc)
                worker.broker_up = False
                worker.counts["broker_errors"] += 1
                worker.backoff.failed(now)
            except Exception as exc:  # a bug must not stop the worker; counted and logged
                log.exception("%s: unexpected %s; continuing", worker_id, type(exc).__name__)
                worker.counts["errors"] += 1
                worker.backoff.failed(now)
            if now >= next_balance:
                next_balance = now + log_config.balance_every_ms / 1000
            if now >= next_chores:
                next_chores = now + 0.1
                worker.chores(now)
                try:
                    while True:
                        worker.subscriptions.feed(pub.recv(zmq.NOBLOCK))
                except zmq.Again:
                    pass
            if now >= next_stats:
                next_stats = now + stats_every
                stats = {"worker": worker_id, "runtime": getattr(runtime, "name", "?"), **worker.stats(now)}
                stats["drops"] = {**stats["drops"], **drops}
                send(encode_stats(worker_id, stats))
                if printer and now >= next_print:
                    next_print = now + print_every
                    b = stats["broker"]
                    printer(
                        format_stats(stats) + f" broker={'up' if b['up'] else 'DOWN'} "
                        f"partitions={b['partitions']} lost_samples={b['lost_samples']}"
                    )
        final = {"worker": worker_id, **worker.stats(time.monotonic())}
        try:
            worker.close(leave=True)
        except redis.RedisError:
            worker.close(leave=False)
        return final
    finally:
        if personal is not None:
            personal.close()
        sockets.close(1000)


def _admit(owned: Owned, batch, now: float, start_at: int = 0) -> bool:
    """Give one logged batch to the partition's core through its window grid;
    True if the core got samples. A batch the core's incarnation refuses (a
    seq jump far ahead, another session on a live device) goes to the core
    unaligned, which counts it (``jump``, ``session``) as the bus worker
    does, and never reaches the grid: it must not move the device's seq."""
    if owned.core.judge(batch, now) in (JUMP, FOREIGN):
        owned.core.accept(batch, now)
        return False
    admitted = owned.grid.admit(batch, start_at=start_at)
    if admitted is None:
        return False
    owned.core.accept(admitted, now)
    return True


def _stored_probs(owned: Owned, window, key: int | None) -> list[float]:
    """The probabilities an earlier owner committed for ``window`` (key
    ``key``), if they came from the model that now serves it; else uniform
    over its classes (the smoother restarts a little less informed)."""
    n = len(window.served.classes)
    model, probs = owned.stored.get(window.device, (None, {}))
    got = probs.get(key) if key is not None else None
    if got is None or len(got) != n or (model is not None and model != window.served.key):
        return [1.0 / n] * n
    return got


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
