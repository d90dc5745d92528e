"""What a harstream command prints: its own lines, not third-party start-up noise.

TensorFlow, XLA, absl and LiteRT write INFO lines straight to the process's
stderr from C++ (``I0000 … XLA service … initialized``, the oneDNN and CPU
feature notes, ``Created TensorFlow Lite XNNPACK delegate``). Some obey
``TF_CPP_MIN_LOG_LEVEL``, which must be set before TensorFlow is imported;
others are printed while TensorFlow's libraries load or when an interpreter
is built, whatever the environment says. So, unless ``--verbose`` or
``HARSTREAM_LOG=debug`` asks for everything:

- ``TF_CPP_MIN_LOG_LEVEL=2`` (warnings and info off, errors kept), unless the
  user set it;
- the Python loggers ``tensorflow`` and ``absl`` at ERROR, ``matplotlib`` at WARNING;
- stderr is captured while TensorFlow is first imported and while a LiteRT
  interpreter is built (:func:`quiet_native_stderr`), and written back
  without the lines :func:`drop_noise` knows to be start-up notes; anything
  else (an error, a traceback) still reaches the terminal.

Subprocesses inherit the choice through the environment.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The environment variable that turns third-party logs back on (``debug``).
LOG_ENV = "HARSTREAM_LOG"

#: Lines known to be start-up notes of TensorFlow, XLA, absl and LiteRT:
#: absl-format INFO/WARNING lines (``I0000 00:00:… 22414 port.cc:153] …``),
#: TensorFlow's older format (``2024-01-11 05:40:05.061907: I tensorflow/…:182] …``),
#: absl's note about logging before its initialisation, the CPU feature
#: guard's second line, and LiteRT's INFO lines.
NOISE = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+ +\d+ [\w./-]+:\d+\] "
    r"|\d{4}-\d\d-\d\d [\d:.]+: [IW] [\w./-]+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$"
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\.$"
    r"|INFO: (?:Created TensorFlow Lite|Initialized TensorFlow Lite runtime))"
)


def verbose_requested(flag: bool = False) -> bool:
    """``--verbose`` given, or ``HARSTREAM_LOG=debug`` in the environment."""
    return flag or os.environ.get(LOG_ENV, "").strip().lower() == "debug"


def drop_noise(text: str) -> str:
    """``text`` without the lines :data:`NOISE` matches.

    >>> drop_noise("I0000 00:00:1796.89   22414 service.cc:153] XLA service initialized\\nE0000 real error\\n")
    'E0000 real error\\n'
    """
    return "".join(line for line in text.splitlines(keepends=True) if not NOISE.match(line))


def terminal_safe(line: str) -> str:
    r"""``line`` with every unprintable character written as its escape, so
    that nothing a publisher put in a message (a terminal escape sequence, a
    newline forging a line, a bidi override) acts on the terminal (``harstream tail``'s lines, every log line).

    >>> terminal_safe("[w] drops=\x1b[2J=1 \u202eok")
    '[w] drops=\\x1b[2J=1 \\u202eok'
    """
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)


class PrintableFormatter(logging.Formatter):
    """Log lines whose message shows every unprintable character as its
    escape (:func:`terminal_safe`): a log line often carries a name from
    outside (a file in the personal-model folder, an address, an error a
    peer sent), and a newline in it would forge a log line, an escape
    sequence act on the terminal. A traceback is appended as it is."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging's name)
        record.message = terminal_safe(record.message)
        return super().formatMessage(record)


def configure_logging(verbose: bool) -> None:
    """Set up harstream's own log lines and quiet third-party ones.

    Call before anything imports TensorFlow (``harstream.cli.main`` does).
    """
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    if verbose:
        os.environ[LOG_ENV] = "debug"  # the demo's parts inherit it
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # matplotlib announces building its font cache on a fresh machine
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    if not any(isinstance(f, _QuietImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport("tensorflow"))


_capture_lock = threading.RLock()
_capture_depth = 0


@contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Capture file descriptor 2 during the block (C++ writes there directly),
    then write back what :func:`drop_noise` keeps. A no-op when verbose.
    Nested and concurrent uses capture once."""
    global _capture_depth
    if verbose_requested():
        yield
        return
    with _capture_lock:
        _capture_depth += 1
        try:
            if _capture_depth > 1:
                yield
                return
            sys.stderr.flush()
            saved = os.dup(2)
            with tempfile.TemporaryFile() as capture:
                os.dup2(capture.fileno(), 2)
                try:
                    yield
                finally:
                    sys.stderr.flush()
                    os.dup2(saved, 2)
                    os.close(saved)
                    capture.seek(0)
                    kept = drop_noise(capture.read().decode("utf-8", errors="replace"))
                    if kept:
                        sys.stderr.write(kept)
                        sys.stderr.flush()
        finally:
            _capture_depth -= 1


class _QuietImport(importlib.abc.MetaPathFinder):
    """Runs the first import of one top-level package inside
    :func:`quiet_native_stderr`; every other import is left to the usual finders."""

    def __init__(self, name: str):
        self.name = name

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        # The module keeps its real loader (resource readers, reloads).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with quiet_native_stderr():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)
