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

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import redis

from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.protocol import HistoryUpdate, Prediction, ProtocolError, decode_samples
from harstream.stream.core.subscriptions import Subscriptions
from harstream.stream.core.worker import StreamCore, WorkerConfig, WorkerStats, one_model_router
from harstream.stream.durable.broker import GROUP, PREFIX, Backoff, Keys, connect
from harstream.stream.durable.history_store import HistoryStore, restore_today
from harstream.stream.durable.leases import Fenced, Lease, Leases
from harstream.stream.durable.partition_state import PartitionState
from harstream.stream.durable.partitions import DEFAULT_PARTITIONS, plan

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


class RedisWorker:
    """One worker process on the log (sockets and Redis at the edges, cores inside).

    ``router`` serves each device in its mode, each model with its own
    ``runtime`` (``runtime`` serves a model without one); without it,
    ``runtime`` serves ``classes``/``model_id`` to every device. ``personal``
    (:class:`~harstream.stream.personal.registry.PersonalRegistry`) is polled
    by the edge loop and keeps the router's personal models in step with its
    folder. It is the edge loop's transport
    (:class:`~harstream.stream.bus.edge.Transport`): :meth:`step` balances,
    reads (and acknowledges) and predicts; each partition's decisions are its
    :class:`~harstream.stream.durable.partition_state.PartitionState`'s.
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
        publish: Callable[[list[Prediction]], None] | None = None,
        router: ModelRouter | None = None,
        personal=None,
        subscriptions: Subscriptions | None = None,
    ):
        # the log commits windows by number: this path publishes the model's windows only
        self.config = replace(config or WorkerConfig(), between_devices=0)
        if router is None:  # one model for every device, as StreamCore describes it from the config
            router = one_model_router(classes, model_id, self.config)
        self.router = router  # shared by every partition's core: a personal model serves wherever its device is
        self.personal = personal
        self.runtime, self.classes, self.model_id = runtime, list(router.waist.classes), router.waist.model_id
        self.url = url
        self.lc = log_config or LogConfig()
        self.worker_id = worker_id
        self.keys = Keys(self.lc.prefix)
        self.client = connect(url, allow_remote=self.lc.allow_remote_broker)
        self.leases = Leases(self.client, self.keys, self.lc.lease_ttl_ms)
        self.history = HistoryStore(self.client, self.lc.prefix)  # final pieces and the day's minutes
        self.publish = publish or (lambda predictions: None)
        # of the output bus: whose signal feed to make
        self.subscriptions = subscriptions if subscriptions is not None else Subscriptions()
        self.owned: dict[int, PartitionState] = {}
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
        self._next_balance = 0.0
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
        owned = PartitionState(lease, core, self.config.smooth_windows, renewed=now)
        self.owned[lease.partition] = owned
        try:
            self._rebuild(owned, now, started)
        except Exception:
            self.owned.pop(lease.partition, None)  # half rebuilt: the lease runs out, someone retries
            raise

    def _rebuild(self, owned: PartitionState, now: float, started: float) -> None:
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
        progress = self.client.hgetall(self.keys.progress(lease.partition))
        owned.load_progress({_text(device): json.loads(raw) for device, raw in progress.items()})
        restore_today(self.history, core, list(owned.committed))  # the day's minutes survive a restart
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
                    replayed += owned.admit(batch, now, owned.replay_from(batch.device, context_windows))
                cursor = "(" + _text(entries[-1][0])
                if len(entries) < 5000:
                    break
            owned.count_unlogged(first_seq)
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
        while owned.core.waiting:
            self._run_batches(now, only=p, force=True)
        self.leases.release(owned.lease)
        self._drop(p, "released")

    def _drop(self, p: int, why: str) -> None:
        owned = self.owned.pop(p, None)
        if owned is None:
            return
        stats = owned.core.stats(time.monotonic())
        self.retired.update(stats.totals)
        self.retired_drops.update(stats.drops)
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
        ttl = self.lc.lease_ttl_ms / 1000
        streams = {self.keys.partition(p): ">" for p, o in self.owned.items() if o.readable(now, ttl)}
        if not streams:
            time.sleep(block_ms / 1000)
            return 0
        reply = self.client.xreadgroup(GROUP, self.worker_id, streams, count=self.lc.read_count, block=block_ms or None)
        n = 0
        now = time.monotonic()
        acks: list[tuple[int, Lease, list]] = []
        for stream, entries in reply or []:
            p = int(_text(stream).rsplit(":", 1)[1])
            owned = self.owned.get(p)
            if owned is None:
                continue
            for _entry_id, fields in entries:
                batch = self._decode(owned, fields)
                if batch is not None:
                    owned.admit(batch, now)
                n += 1
            acks.append((p, owned.lease, [e[0] for e in entries]))
        # every partition's acknowledgement in one round trip, each fenced by its own lease
        results = self.leases.ack_many(GROUP, [(lease, ids) for _, lease, ids in acks if ids])
        for (p, _, _), result in zip([a for a in acks if a[2]], results):
            if isinstance(result, Fenced):
                if p in self.owned:
                    self.owned[p].fence()
                self._drop(p, str(result))
        self.counts["entries"] += n
        return n

    def _decode(self, owned: PartitionState, fields: dict):
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
                if (only is None or p == only) and (o.core.batch_due(now) or (force and o.core.waiting))
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
        jobs = []  # (p, state, taken, keys, mask of windows an earlier owner committed)
        xs = []
        for p, o, x, taken in items:
            keys, old = o.to_run(taken)
            jobs.append((p, o, taken, keys, old))
            xs.append(x[~old])
        x_new = np.concatenate(xs)
        n_classes = len(served.output_classes)  # a personal head's windows get the shared model's classes
        try:
            if len(x_new):
                probs_new = np.asarray((served.runtime or self.runtime).predict(x_new))
                if probs_new.shape != (len(x_new), n_classes):  # a runtime that lost rows must not shift windows
                    raise ValueError(f"model {served.model_id} returned {probs_new.shape} for {len(x_new)} windows")
            else:
                probs_new = np.empty((0, n_classes))
        except Exception as exc:  # never die on a batch; counted in windows, as on the bus
            for _, o, taken, _, _ in jobs:
                o.core.count_drop("inference", f"{len(taken)} windows: {type(exc).__name__}: {exc}", len(taken))
            return
        now = time.monotonic()
        wall = time.time()
        offset = 0
        settled_all = []
        for p, o, taken, keys, old in jobs:
            k_new = int((~old).sum())
            settled = o.settle(taken, keys, old, probs_new[offset : offset + k_new], now)
            offset += k_new
            self.counts["unkeyed"] += settled.unkeyed
            self.counts["replayed_windows"] += settled.replayed
            settled_all.append((p, o, settled))
        # every partition's commit in one round trip, each fenced by its own lease
        to_commit = [(p, o, settled) for p, o, settled in settled_all if settled.rows]
        results = self.leases.commit_many([(o.lease, st.rows) for _, o, st in to_commit], self.lc.predictions_maxlen)
        for (p, o, settled), result in zip(to_commit, results):
            if isinstance(result, Fenced):
                self.counts["fenced"] += len(settled.rows)
                o.fence()
                self._drop(p, str(result))
            else:
                self.counts["committed"] += result[0]
                self.counts["skipped_committed"] += result[1]
        for _, o, settled in settled_all:
            out = o.to_publish(settled)  # a stale owner publishes nothing
            for pred in out:
                self._latencies.append(pred.latency_ms)
                self._lags.append((wall - pred.t_end) * 1000.0)
            if out:
                self.publish(out)
            self.counts["published"] += len(out)

    # ---------------------------------------------------------- the loop

    def step(self, now: float, wake: float, publish: Callable[[list[Prediction]], None]) -> None:
        """One turn of the edge loop: balance if due, read (waiting at most
        until ``wake``, 10 ms), predict, commit and ``publish``. A broker error
        is counted and retried with back-off; anything else is counted here
        and raised for the loop to count (``internal``)."""
        self.publish = publish
        if not self.backoff.ready(now):
            time.sleep(max(0.0, min(0.01, wake - now)))
            return
        try:
            if now >= self._next_balance:
                self._next_balance = now + self.lc.balance_every_ms / 1000
                self.balance(now)
            # Wait for entries until the oldest waiting window must run (never past 10 ms or the next
            # chore), not in a busy loop of non-blocking reads while windows wait for a batch to fill.
            for o in self.owned.values():
                deadline = o.core.next_deadline()
                if deadline is not None:
                    wake = min(wake, deadline)
            self.read(now, block_ms=int(min(10.0, (wake - now) * 1000)) if wake > now + 0.001 else 0)
            self._run_batches(time.monotonic())
            if not self.broker_up:
                log.warning("%s: broker %s back", self.worker_id, self.url)
            self.broker_up = True
            self.backoff.reset()
        except redis.RedisError as exc:
            if self.broker_up:
                log.warning("%s: broker %s: %s; retrying with back-off", self.worker_id, self.url, exc)
            self.broker_up = False
            self.counts["broker_errors"] += 1
            self.backoff.failed(now)
        except Exception:  # a bug must not stop the worker; counted, and the loop logs it
            self.counts["errors"] += 1
            self.backoff.failed(now)
            raise

    def cores(self) -> list[StreamCore]:
        return [o.core for o in self.owned.values()]

    def evict_idle(self, now: float) -> None:
        """Idle devices of every owned partition, forgotten by its core and its state."""
        for o in self.owned.values():
            o.forget(o.core.evict_idle(now))

    def settle_quiet(self, now: float) -> None:
        for o in self.owned.values():
            o.core.settle_quiet(now)

    def take_history(self) -> list[HistoryUpdate]:
        """Every owned partition's history revisions, kept first (fenced by
        its lease; final pieces idempotent by device and time, clipped to what
        is not final yet) and returned as kept; a partition whose lease is
        lost publishes nothing more."""
        out: list[HistoryUpdate] = []
        for p, o in list(self.owned.items()):
            for update in o.core.take_history():
                state = o.core.devices.get(update.device)
                classes = state.served.classes if state is not None else tuple(self.classes)
                kept = self.history.keep(self.keys.lease(p), o.lease.value, update, o.core, classes)
                if kept is None:
                    self.counts["fenced"] += 1
                    o.fence()
                    self._drop(p, f"partition {p}: lease lost while keeping history")
                    break
                out.append(kept)
        return out

    def forget_chore(self, now: float) -> None:
        """The broker's forgetting of devices gone quiet, as a chore; a broker away is retried next time."""
        try:
            self.forget_old_devices()
        except redis.RedisError:
            self.counts["broker_errors"] += 1

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

    def stats(self, now: float) -> WorkerStats:
        """The worker's statistics, every partition's together, with ``broker``."""
        per = [o.core.stats(now) for o in self.owned.values()]
        totals, drops = Counter(self.retired), Counter(self.retired_drops) + self.drops
        grid: Counter[str] = Counter()
        modes: Counter[str] = Counter()
        served: Counter[str] = Counter()  # devices per model key
        for o, s in zip(self.owned.values(), per):
            totals.update(s.totals)
            drops.update(s.drops)
            grid.update(o.grid.counts)
            modes.update(s.modes)
            served.update({m["key"]: m["devices"] for m in s.models})
        lat = np.asarray(self._latencies) if self._latencies else None
        lag = np.asarray(self._lags) if self._lags else None
        batches = sum(s.batches for s in per)
        out = WorkerStats(
            devices=sum(s.devices for s in per),
            interval_s=max((s.interval_s for s in per), default=0.0),
            samples_per_s=round(sum(s.samples_per_s for s in per), 1),
            windows_per_s=round(sum(s.windows_per_s for s in per), 1),
            predictions_per_s=round(sum(s.predictions_per_s for s in per), 1),
            messages_per_s=round(sum(s.messages_per_s for s in per), 1),
            batches=batches,
            batch_mean=round(sum(s.batch_mean * s.batches for s in per) / batches, 2) if batches else 0.0,
            batch_max=max((s.batch_max for s in per), default=0),
            latency_p50_ms=round(float(np.percentile(lat, 50)), 2) if lat is not None else None,
            latency_p99_ms=round(float(np.percentile(lat, 99)), 2) if lat is not None else None,
            lag_p50_ms=round(float(np.percentile(lag, 50)), 2) if lag is not None else None,
            lag_p99_ms=round(float(np.percentile(lag, 99)), 2) if lag is not None else None,
            pending=sum(s.pending for s in per),
            pending_high_water=max((s.pending_high_water for s in per), default=0),
            drops=dict(drops),
            totals=dict(totals),
            model=self.model_id,
            models=self.router.describe(served),
            modes=dict(modes),
            worker=self.worker_id,
            broker={
                "up": self.broker_up,
                "url": self.url,
                "members": len(self.members),
                "partitions": sorted(self.owned),
                "epochs": {str(p): o.lease.epoch for p, o in self.owned.items()},
                "lost_samples": grid["lost_samples"] + self.retired["lost_samples"],
                "rebuild_ms_max": round(max(self.rebuild_ms), 1) if self.rebuild_ms else None,
                **dict(self.counts),
            },
        )
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
    output_secret: str | None = None,
) -> dict:
    """Run a worker on the log until ``stop`` is set; publishes on the ZeroMQ
    output bus (``output`` as in :mod:`~harstream.stream.bus.addresses`, bound by default;
    ``keys``: a CURVE key folder, needed for an address off loopback;
    ``output_secret``: a proxy's output secret file, shown to its back end).
    ``router`` and ``personal`` serve each device in its mode, as in
    :func:`~harstream.stream.bus.zmq_worker.serve` (the registry is closed on return).
    The loop is the bus worker's (:func:`~harstream.stream.bus.edge.run_edge`)."""
    import os

    import redis
    import zmq

    from harstream.stream.bus.addresses import output_address
    from harstream.stream.bus.edge import OutputEdge, run_edge
    from harstream.stream.bus.proxy import output_credentials
    from harstream.stream.bus.sockets import SUBSCRIPTION_BYTES, BusSockets
    from harstream.stream.durable.bridge import check_partitions

    worker_id = worker_id or f"worker-{os.getpid()}"
    stop = stop or threading.Event()
    sockets = BusSockets(keys)
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
            # behind a proxy, its output secret (only workers may publish output)
            options={zmq.XPUB_NODROP: 1, **output_credentials(None if keys else output_secret)},
            retry_bind_s=10.0,
        )
        edge = OutputEdge(pub)
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
                    router=router,
                    personal=personal,
                    subscriptions=edge.subscriptions,
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
        forget = [("forgetting devices", 1.0, worker.forget_chore)] if log_config.forget_after_s > 0 else []
        final = run_edge(
            worker,
            edge,
            worker_id,
            stop,
            runtime_name=getattr(runtime, "name", "?"),
            stats_every=stats_every,
            print_every=print_every,
            printer=printer,
            personal=personal,
            router=worker.router,
            registry_drops=worker.drops,
            extra_chores=forget,
        )
        try:
            worker.close(leave=True)
        except redis.RedisError:
            worker.close(leave=False)
        return final.to_dict()
    finally:
        if personal is not None:
            personal.close()
        sockets.close(1000)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
