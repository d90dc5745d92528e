"""The stream worker on the durable log: partitions by lease, state rebuilt
from the log on takeover, predictions committed idempotently.

The worker holds one :class:`~harstream.stream.core.worker.StreamCore` (used
through its public verbs only) for every partition it owns, so a model call
takes every partition's windows, as large a batch as the bus worker's. Each
owned partition feeds its devices to it through its own
:class:`~harstream.stream.durable.window_keys.WindowGrid` (every window has a key
(device, window) that does not depend on the worker) and decides alone what
it runs, commits and publishes (its
:class:`~harstream.stream.durable.partition_state.PartitionState`); a device's
partition is its hash (:func:`~harstream.stream.durable.partitions.partition_of`),
and a partition given away takes its devices out of the core
(:meth:`~harstream.stream.core.worker.StreamCore.forget`). The loop:

1. **balance** (every ``balance_every_ms``): heartbeat into the member set,
   compute this worker's quota (:mod:`~harstream.stream.durable.partitions`), give
   back surplus partitions (drain: flush, predict, commit, release) and take
   free ones (acquire a lease with a new epoch, then rebuild);
2. **read** each owned partition's stream with ``XREADGROUP … >`` (an entry
   carries one or several samples messages,
   :func:`~harstream.stream.durable.bridge.entry_messages`) and feed the
   samples to the core; acknowledge them (fenced), in the round trip of
   the next commit (on their own if none comes within ``ack_every_ms``);
3. **predict** due batches, one model call per batch of one served model
   (each device is served in its mode, as by the single-process worker: a
   :class:`~harstream.stream.core.model_routing.ModelRouter`, kept in step
   with the personal-model folder); **commit** each partition's predictions
   through the fenced script, all partitions in one round trip (a window at or below
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

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import redis

from harstream.stream.core.model_routing import ModelRouter, ServedModel
from harstream.stream.core.protocol import HistoryUpdate, Prediction, ProtocolError, SampleBatch, decode_samples
from harstream.stream.core.subscriptions import Subscriptions
from harstream.stream.core.worker import StreamCore, WorkerConfig, WorkerStats, one_model_router
from harstream.stream.durable.bridge import entry_messages
from harstream.stream.durable.broker import GROUP, PREFIX, Backoff, Keys, connect
from harstream.stream.durable.history_store import HistoryStore, hash_or_junk, restore_today
from harstream.stream.durable.leases import Fenced, Lease, Leases, run_scripts
from harstream.stream.durable.partition_state import PartitionState
from harstream.stream.durable.partitions import DEFAULT_PARTITIONS, partition_of, plan

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
    # Entries read are acknowledged in the round trip of each commit, and on their own when no commit
    # took them along for this long (a takeover replays the log tail up to the last entry read anyway,
    # acknowledged or not; acknowledging keeps the pending lists short).
    ack_every_ms: int = 250
    # After a read that brought entries, the next one waits this long (the bridge writes every 20 ms):
    # one read per write of the bridge, not one per turn of the loop while windows wait for a batch.
    read_gap_ms: float = 10.0
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
        self.router = router  # a personal model serves wherever its device is
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
        # one core for every owned partition (each partition's devices are its own)
        self.core = StreamCore(
            self.classes,
            self.model_id,
            self.config,
            self.worker_id,
            router=self.router,
            subscriptions=self.subscriptions,
        )
        self.core.started = time.monotonic()
        self.owned: dict[int, PartitionState] = {}
        self.counts: Counter[str] = Counter()
        self.drops: Counter[str] = Counter()  # of the worker itself (model_refused), beside its core's
        self.retired: Counter[str] = Counter()  # window-grid counts of partitions given away
        # records in the broker no worker wrote (another client's junk), met and set aside, by key kind
        self.junk: Counter[str] = Counter()
        self.backoff = Backoff()
        self.broker_up = True
        self.members: list[str] = []
        self.rebuild_ms: list[float] = []
        self._latencies: list[float] = []
        self._lags: list[float] = []
        self._lock = threading.Lock()
        self._next_balance = 0.0
        self._unacked: dict[int, list] = {}  # partition -> ids of entries read, not yet acknowledged
        self._next_ack = 0.0
        self._read_after = 0.0  # monotonic time before which the loop does not read
        self._backlog: deque[tuple[PartitionState, SampleBatch]] = deque()  # read, not yet admitted
        self._kept_history: list[HistoryUpdate] = []  # kept with a commit, to publish after its predictions
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
        self.members, holders = self.leases.heartbeat_and_holders(self.worker_id, self.lc.partitions)
        if self.worker_id not in self.members:  # our own heartbeat expired meanwhile
            self.members = sorted({*self.members, self.worker_id})
        with self._lock:
            lost, self._lost = self._lost, set()
        for p in lost:
            self._drop(p, "lease lost")
        for p, o in list(self.owned.items()):
            if holders[p] != o.lease.value:
                self._drop(p, f"lease now {holders[p]!r}")
        # free, or held by no member: a worker gone (its lease runs out within the TTL, which the
        # acquire script respects) or junk another client wrote (no expiry: the script takes it)
        free = {p for p, h in enumerate(holders) if h is None or h.rsplit(" ", 1)[0] not in self.members}
        todo = plan(set(self.owned), free, self.members.index(self.worker_id), len(self.members), self.lc.partitions)
        for p in todo.release:
            self.release(p, now)
        for p in todo.acquire:
            lease = self.leases.acquire(p, self.worker_id)
            if lease is not None:
                self._take_over(lease, now)

    def _take_over(self, lease: Lease, now: float) -> None:
        started = time.monotonic()
        owned = PartitionState(lease, self.core, self.config.smooth_windows, renewed=now)
        self.owned[lease.partition] = owned
        try:
            self._rebuild(owned, now, started)
        except Exception:
            self.owned.pop(lease.partition, None)  # half rebuilt: the lease runs out, someone retries
            self.core.forget(owned.devices())
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
        progress = hash_or_junk(self.client, self.keys.progress(lease.partition))
        junk = owned.load_progress({_text(device): raw for device, raw in progress.items()})
        if junk:  # the commit replaces such a record with the device's next window's
            self._junk("progress", len(junk), f"partition {lease.partition}, device {junk[0][:64]!r}")
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
                    for batch in self._decode(lease.partition, fields):
                        first_seq.setdefault(batch.device, batch.seq)
                        replayed += self._admit(owned, batch, now, owned.replay_from(batch.device, context_windows))
                cursor = "(" + _text(entries[-1][0])
                if len(entries) < 5000:
                    break
            owned.count_unlogged(first_seq)
            core.quiet_signals(first_seq)  # the replay is not news for the display
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
        while self.core.waiting and p in self.owned:  # every partition's waiting windows: one core
            self._run_batches(now, force=True)
        if p not in self.owned:  # fenced meanwhile
            return
        self.acknowledge(only=p)
        if p not in self.owned:
            return
        self.leases.release(owned.lease)
        self._drop(p, "released")

    def _drop(self, p: int, why: str) -> None:
        """Forget partition ``p``: its state, and its devices in the core."""
        owned = self.owned.pop(p, None)
        if owned is None:
            return
        self.retired.update(owned.grid.counts)
        self._unacked.pop(p, None)  # the next owner claims them
        windows = self.core.forget(owned.devices())
        if windows:
            self.counts["windows_given_away"] += windows
        if why != "released":
            self.counts["leases_lost"] += 1
        log.info("%s: partition %d dropped (%s)", self.worker_id, p, why)

    def _renew_loop(self) -> None:
        client = connect(self.url, allow_remote=self.lc.allow_remote_broker)
        leases = Leases(client, self.keys, self.lc.lease_ttl_ms)
        while not self._renewer_stop.wait(self.lc.renew_every_ms / 1000):
            owned = list(self.owned.items())
            try:  # every lease in one round trip
                renewed = leases.renew_many([o.lease for _, o in owned])
            except Exception:  # broker away: the leases run out on their own
                continue
            now = time.monotonic()
            for (p, o), ok in zip(owned, renewed):
                if ok:
                    o.renewed = now
                else:
                    with self._lock:
                        self._lost.add(p)
        client.close()

    # --------------------------------------------------------------- read

    def read(self, now: float, block_ms: int) -> int:
        """Read new entries of the owned partitions into the backlog (decoded,
        not yet given to the core: :meth:`admit_some`); how many."""
        ttl = self.lc.lease_ttl_ms / 1000
        streams = {self.keys.partition(p): ">" for p, o in self.owned.items() if o.readable(now, ttl)}
        if not streams:
            time.sleep(block_ms / 1000)
            return 0
        try:
            reply = self.client.xreadgroup(
                GROUP, self.worker_id, streams, count=self.lc.read_count, block=block_ms or None
            )
        except redis.ResponseError as exc:
            # one partition's log of another type, or deleted (and its group with it), by another
            # client: every read of every partition failed, for good. Made readable again, counted.
            if not any(s in str(exc) for s in ("WRONGTYPE", "NOGROUP", "UNBLOCKED")):
                raise
            junk = self.leases.repair_logs([self.owned[p].lease for p in list(self.owned)], GROUP)
            self._junk("log", max(1, junk), str(exc)[:100])
            return 0
        n = messages = 0
        now = time.monotonic()
        for stream, entries in reply or []:
            p = int(_text(stream).rsplit(":", 1)[1])
            owned = self.owned.get(p)
            if owned is None:
                continue
            for _entry_id, fields in entries:
                for batch in self._decode(p, fields):
                    self._backlog.append((owned, batch))
                    messages += 1
                n += 1
            self._unacked.setdefault(p, []).extend(e[0] for e in entries)
        if now >= self._next_ack:  # no commit took the acknowledgements along lately
            self.acknowledge()
        self.counts["entries"] += n
        self.counts["messages"] += messages
        return n

    def admit_some(self) -> int:
        """Give the backlog's messages to the core, each stamped as it arrives,
        until a batch's worth of devices complete a window (as the bus worker
        reads: a large read is predicted as it is taken in, not all stamped
        at once and then queued); how many. A message of a partition given
        away meanwhile is skipped (its next owner replays it from the log)."""
        n = 0
        core = self.core
        while self._backlog and core.ready_devices < core.config.max_batch:
            state, batch = self._backlog.popleft()
            owner = self.owned.get(state.lease.partition)
            if owner is None or owner is not state:
                continue
            self._admit(owner, batch, time.monotonic())
            n += 1
        return n

    def _admit(self, owner: PartitionState, batch: SampleBatch, now: float, start_at: int = 0) -> bool:
        """:meth:`PartitionState.admit`; a bug met on one message drops that message,
        counted ``internal``, and the worker (or a takeover's replay) goes on, as on the bus."""
        try:
            return owner.admit(batch, now, start_at)
        except Exception as exc:
            log.exception("device %s: logged message dropped", batch.device)
            self.core.count_drop("internal", f"device {batch.device}: {type(exc).__name__}: {exc}")
            return False

    def acknowledge(self, only: int | None = None) -> None:
        """Acknowledge the entries read of every owned partition (or of
        ``only``): one round trip, each partition fenced by its own lease."""
        acks = self._acks(only)
        self._acked(acks, self.leases.ack_many(GROUP, [(lease, ids) for _, lease, ids in acks]))

    def _acks(self, only: int | None = None) -> list[tuple[int, Lease, list]]:
        """The entries to acknowledge, per owned partition (or ``only``) that has any; taken from the unacked."""
        self._next_ack = time.monotonic() + self.lc.ack_every_ms / 1000
        parts = [p for p in self._unacked if (only is None or p == only) and p in self.owned]
        acks = [(p, self.owned[p].lease, self._unacked.pop(p)) for p in parts]
        return [a for a in acks if a[2]]

    def _acked(self, acks: list[tuple[int, Lease, list]], results: list) -> None:
        """A partition whose acknowledgement met another owner is fenced and dropped."""
        for (p, _, _), result in zip(acks, results):
            if isinstance(result, Fenced):
                if p in self.owned:
                    self.owned[p].fence()
                self._drop(p, str(result))

    def _decode(self, p: int, fields: dict) -> list[SampleBatch]:
        """The samples messages of one log entry of partition ``p`` (one or
        several), each validated as on the bus; the bad ones counted by reason
        and left out (``partition``: a device that is not ``p``'s)."""
        try:
            messages = entry_messages(fields)
        except ValueError as exc:
            self.core.count_drop("frame_count", str(exc))
            return []
        out = []
        for frames in messages:
            try:
                batch = decode_samples(frames)
            except ProtocolError as exc:
                self.core.count_drop(exc.reason, exc.detail)
                continue
            except Exception as exc:  # a decoder bug must not stop the worker (as on the bus)
                self.core.count_drop("internal", f"undecodable entry ({type(exc).__name__}: {exc})")
                continue
            if partition_of(batch.device, self.lc.partitions) != p:
                self.core.count_drop("partition", f"device {batch.device} in the log of partition {p}, not its own")
                continue
            out.append(batch)
        return out

    # ------------------------------------------------------------ predict

    def _run_batches(self, now: float, force: bool = False) -> int:
        """Model calls while a batch is due (``force``: while any window waits); returns windows predicted."""
        total = 0
        for _ in range(1000):
            if not (self.core.batch_due(now) or (force and self.core.waiting)):
                break
            x, taken = self.core.take_batch()
            self._predict(x, taken)
            total += len(taken)
            now = time.monotonic()
        return total

    def _predict(self, x: np.ndarray, taken: list) -> None:
        """Label one batch (one served model's windows, of any owned
        partitions) in one call of that model's runtime; each partition
        settles its windows, all partitions commit in one round trip, each
        fenced by its own lease, and what held is published."""
        if not taken:
            return
        served: ServedModel = taken[0].served
        by_partition: dict[int, list[int]] = {}
        for i, w in enumerate(taken):
            by_partition.setdefault(partition_of(w.device, self.lc.partitions), []).append(i)
        jobs = []  # (p, state, its windows, keys, mask of windows an earlier owner committed)
        xs = []
        for p, idx in by_partition.items():
            o = self.owned.get(p)
            if o is None:  # given away meanwhile (its devices left the core): nothing of it is ours
                self.counts["windows_given_away"] += len(idx)
                continue
            mine = [taken[i] for i in idx]
            keys, old = o.to_run(mine)
            jobs.append((p, o, mine, keys, old))
            xs.append(x[idx][~old])
        if not jobs:
            return
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
            self.core.count_drop("inference", f"{len(taken)} windows: {type(exc).__name__}: {exc}", len(taken))
            return
        now = time.monotonic()
        wall = time.time()
        offset = 0
        settled_all = []
        for p, o, mine, keys, old in jobs:
            k_new = int((~old).sum())
            settled = o.settle(mine, keys, old, probs_new[offset : offset + k_new], now)
            offset += k_new
            self.counts["unkeyed"] += settled.unkeyed
            self.counts["replayed_windows"] += settled.replayed
            settled_all.append((p, o, settled))
        # every partition's commit and the history revisions of these windows in one round trip,
        # each fenced by its partition's lease
        to_commit = [(p, o, settled) for p, o, settled in settled_all if settled.rows]
        commits = [(o.lease, st.rows) for _, o, st in to_commit]
        calls = self.leases.commit_calls(commits, self.lc.predictions_maxlen)
        items, owners = self._history_items(self.core.take_history())
        keep_calls, at = self.history.keep_calls(items)
        acks = self._acks()  # the entries read so far, acknowledged in the same round trip
        ack_calls = self.leases.ack_calls(GROUP, [(lease, ids) for _, lease, ids in acks])
        replies = run_scripts(self.client, calls + keep_calls + ack_calls)
        results = self.leases.commit_results(commits, replies[: len(calls)])
        for (p, o, settled), result in zip(to_commit, results):
            if isinstance(result, Fenced):
                self.counts["fenced"] += len(settled.rows)
                o.fence()
                self._drop(p, str(result))
            else:
                self.counts["committed"] += result[0]
                self.counts["skipped_committed"] += result[1]
                if result[2]:
                    self._junk("progress", result[2])
        n_kept = len(calls) + len(keep_calls)
        self._kept_history += self._history_out(
            owners, self.history.kept(items, at, replies[len(calls) : n_kept], self.core)
        )
        self._acked(acks, self.leases.ack_results([(lease, ids) for _, lease, ids in acks], replies[n_kept:]))
        out = [
            pred for _, o, settled in settled_all for pred in o.to_publish(settled)
        ]  # a stale owner publishes nothing
        for pred in out:
            self._latencies.append(pred.latency_ms)
            self._lags.append((wall - pred.t_end) * 1000.0)
        if out:
            self.publish(out)
        self.counts["published"] += len(out)

    # ---------------------------------------------------------- the loop

    def step(self, now: float, wake: float, publish: Callable[[list[Prediction]], None]) -> None:
        """One turn of the edge loop: balance if due, read (waiting at most
        until ``wake``, 10 ms; not again within ``read_gap_ms`` of a read that
        brought entries), predict, commit and ``publish``. A broker error
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
            deadline = self.core.next_deadline()
            if deadline is not None:
                wake = min(wake, deadline)
            if self._backlog:  # what was read goes in first, a batch's worth at a time
                pass
            elif now < self._read_after:  # entries came a moment ago: the next ones are a bridge flush away
                time.sleep(max(0.0, min(wake, self._read_after) - now))
            elif self.read(now, block_ms=int(min(10.0, (wake - now) * 1000)) if wake > now + 0.001 else 0):
                self._read_after = time.monotonic() + self.lc.read_gap_ms / 1000
            self.admit_some()
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
        return [self.core]

    def evict_idle(self, now: float) -> None:
        """Idle devices, forgotten by the core and by their partition's state."""
        gone = self.core.evict_idle(now)
        if gone:
            for o in self.owned.values():
                o.forget(gone)

    def settle_quiet(self, now: float) -> None:
        self.core.settle_quiet(now)

    def take_history(self) -> list[HistoryUpdate]:
        """The core's history revisions, each kept first under its device's
        partition's lease (final pieces idempotent by device and time, clipped
        to what is not final yet; all in one round trip, or in the round trip
        of the predictions that made them) and returned as kept; a partition
        whose lease is lost publishes nothing more."""
        out, self._kept_history = self._kept_history, []
        items, owners = self._history_items(self.core.take_history())
        if items:
            out += self._history_out(owners, self.history.keep_many(items, self.core))
        return out

    def _history_items(self, updates: list[HistoryUpdate]) -> tuple[list[tuple], list[int]]:
        """The updates of owned partitions as items to keep, and each one's partition."""
        items, owners = [], []
        for update in updates:
            p = partition_of(update.device, self.lc.partitions)
            o = self.owned.get(p)
            if o is None:  # given away meanwhile: nothing of it is ours
                continue
            state = self.core.devices.get(update.device)
            classes = state.served.classes if state is not None else tuple(self.classes)
            items.append((self.keys.lease(p), o.lease.value, update, classes))
            owners.append(p)
        return items, owners

    def _history_out(self, owners: list[int], kept: list[HistoryUpdate | None]) -> list[HistoryUpdate]:
        """The kept updates to publish; a partition where one was refused is fenced and dropped."""
        out: list[HistoryUpdate] = []
        lost: set[int] = set()
        for p, update in zip(owners, kept):
            if p not in self.owned or p in lost:  # dropped meanwhile (its commit was fenced)
                continue
            if update is None:
                self.counts["fenced"] += 1
                lost.add(p)
                continue
            out.append(update)
        for p in lost:
            self.owned[p].fence()
            self._drop(p, f"partition {p}: lease lost while keeping history")
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
        owned = list(self.owned.items())
        results = self.leases.forget_many([o.lease for _, o in owned], int(self.lc.forget_after_s * 1000))
        for (p, _), result in zip(owned, results):  # every partition in one round trip
            if isinstance(result, Fenced):
                self._drop(p, str(result))
            else:
                gone += result
        self.counts["forgotten_devices"] += gone
        return gone

    def _junk(self, kind: str, n: int = 1, detail: str = "") -> None:
        """Count ``n`` records of ``kind`` in the broker that no worker could
        have written; the first of each kind is logged."""
        if not self.junk[kind]:
            log.warning(
                "%s: a %s record in the broker is junk (written by another client?)%s; set aside and counted "
                "in stats as broker.junk.%s",
                self.worker_id,
                kind,
                f": {detail}" if detail else "",
                kind,
            )
        self.junk[kind] += n

    def stats(self, now: float) -> WorkerStats:
        """The worker's statistics (its core's, with ``broker``)."""
        out = self.core.stats(now)
        grid: Counter[str] = Counter(self.retired)
        for o in self.owned.values():
            grid.update(o.grid.counts)
        lat = np.asarray(self._latencies) if self._latencies else None
        lag = np.asarray(self._lags) if self._lags else None
        # latency and lag of what was published (not of windows replayed on takeover)
        out.latency_p50_ms = round(float(np.percentile(lat, 50)), 2) if lat is not None else None
        out.latency_p99_ms = round(float(np.percentile(lat, 99)), 2) if lat is not None else None
        out.lag_p50_ms = round(float(np.percentile(lag, 50)), 2) if lag is not None else None
        out.lag_p99_ms = round(float(np.percentile(lag, 99)), 2) if lag is not None else None
        out.drops = dict(Counter(out.drops) + self.drops)
        out.broker = {
            "up": self.broker_up,
            "url": self.url,
            "members": len(self.members),
            "partitions": sorted(self.owned),
            "epochs": {str(p): o.lease.epoch for p, o in self.owned.items()},
            "lost_samples": grid["lost_samples"],
            "rebuild_ms_max": round(max(self.rebuild_ms), 1) if self.rebuild_ms else None,
            **dict(self.counts),
            "junk": dict(self.junk + Counter(history=self.history.junk)),
        }
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

    from harstream.stream.bus.edge import EdgeOptions, OutputEdge, run_edge
    from harstream.stream.bus.sockets import BusSockets
    from harstream.stream.durable.bridge import check_partitions

    worker_id = worker_id or f"worker-{os.getpid()}"
    stop = stop or threading.Event()
    sockets = BusSockets(keys)
    worker = None
    backoff = Backoff()
    try:
        edge = OutputEdge.open(sockets, output, sndhwm=sndhwm, keys=keys, output_secret=output_secret, linger=1000)
        out_addr = edge.pub.getsockopt_string(zmq.LAST_ENDPOINT)
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
        options = EdgeOptions(
            getattr(runtime, "name", "?"),
            stats_every,
            print_every,
            printer,
            personal,
            worker.router,
            worker.drops,
            forget,
        )
        final = run_edge(worker, edge, worker_id, stop, options)
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
