"""Shared fixtures: real sockets, real processes, always torn down.

    endpoint      factory: endpoint("name") -> "ipc:///tmp/fs-XXXX/name.ipc" (short, unique per test);
                  endpoint("name", "tcp") -> "tcp://127.0.0.1:PORT" on a free port
    socket        factory: socket(zmq.SUB, subscribe=b"") -> a zmq socket with linger=0, closed after the
                  test; a context that will not terminate fails the test (a leaked socket)
    recv          recv(sock, timeout=2.0) -> list of frames (bytes); raises TimeoutError, never hangs
    plugin_env    environment for child processes that can load the test node types of
                  tests/plugin/fs_testnodes.py (through the `facesleuth.nodes` entry point group)
    run_graph     factory: run_graph(graph_file_or_yaml, *args) -> RunningGraph, a live
                  `python -m edge run GRAPH ARGS` with its own private runs directory; it is stopped
                  (SIGTERM, then SIGKILL) and its node processes killed at teardown, whatever happened
    write_graph   write_graph(yaml_text, name="graph.yaml") -> Path of the file in tmp_path

    wait_until    wait_until(condition, timeout, what) -> the first truthy condition() (fails on timeout)
    need          need(name, present, reason): skip when an outside tool is missing, except where
                  $FACESLEUTH_TEST_REQUIRE (comma-separated names; .ci/run sets it) says CI must have it

Other parts' tests may use all of these. The test node types are also registered in this process, so
`edge.runtime.graph.load_graph` accepts them in-process.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket as pysocket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

REPO = Path(__file__).resolve().parent.parent
PLUGIN_DIR = Path(__file__).resolve().parent / "plugin"
if str(PLUGIN_DIR) not in sys.path:  # test modules import helpers from fs_testnodes
    sys.path.insert(0, str(PLUGIN_DIR))


def wait_until(condition: Callable[[], Any], timeout: float, what: str,
               describe: Callable[[], str] | None = None) -> Any:
    """Poll `condition()` every 50 ms until truthy (returns it); fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}" + (f"\n{describe()}" if describe else ""))


def need(name: str, present: bool, reason: str) -> None:
    """Skip with `reason` when `present` is false, or fail where the environment requires `name`."""
    if present:
        return
    if name in os.environ.get("FACESLEUTH_TEST_REQUIRE", "").split(","):
        pytest.fail(f"{reason} (required here: FACESLEUTH_TEST_REQUIRE={os.environ['FACESLEUTH_TEST_REQUIRE']})")
    pytest.skip(reason)


# ------------------------------------------------------------------------------------- sockets


def free_tcp_port() -> int:
    with pysocket.socket(pysocket.AF_INET, pysocket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short private directory under /tmp (ipc paths are limited to 107 bytes; tmp_path is long)."""
    d = Path(tempfile.mkdtemp(prefix="fs-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def endpoint(short_tmp: Path) -> Callable[..., str]:
    """Factory of unique endpoints: ipc files in `short_tmp`, or loopback tcp on a free port."""
    counter = iter(range(10**6))

    def make(name: str = "ep", kind: str = "ipc") -> str:
        if kind == "tcp":
            return f"tcp://127.0.0.1:{free_tcp_port()}"
        if kind != "ipc":
            raise ValueError(f"endpoint kind {kind!r}: ipc or tcp")
        return f"ipc://{short_tmp}/{name}-{next(counter)}.ipc"

    return make


@pytest.fixture
def zmq_context() -> Iterator[zmq.Context]:
    """A fresh context; the test fails if it cannot terminate (some socket was left open)."""
    ctx = zmq.Context()
    yield ctx
    t = threading.Thread(target=ctx.term, daemon=True)
    t.start()
    t.join(5)
    if t.is_alive():
        pytest.fail("zmq context did not terminate within 5 s: a socket was leaked")


@pytest.fixture
def socket(zmq_context: zmq.Context) -> Iterator[Callable[..., zmq.Socket]]:
    """Factory: socket(kind, subscribe=None, **options) -> socket with linger=0, closed after the test."""
    made: list[zmq.Socket] = []

    def make(kind: int, subscribe: bytes | None = None, **options: Any) -> zmq.Socket:
        s = zmq_context.socket(kind)
        s.linger = 0
        for k, v in options.items():
            setattr(s, k, v)
        if subscribe is not None:
            s.setsockopt(zmq.SUBSCRIBE, subscribe)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close(linger=0)


def recv_frames(sock: zmq.Socket, timeout: float = 2.0) -> list[bytes]:
    """One multipart message within `timeout` s, else TimeoutError."""
    if not sock.poll(int(timeout * 1000)):
        raise TimeoutError(f"nothing received within {timeout} s")
    return sock.recv_multipart()


@pytest.fixture
def recv() -> Callable[..., list[bytes]]:
    return recv_frames


# ------------------------------------------------------------------------------ test node plugin


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for subprocesses in which the test node types load as a real plugin: a dist-info
    with a `facesleuth.nodes` entry point, next to tests/plugin on PYTHONPATH."""
    site = tmp_path_factory.mktemp("plugin-site")
    info = site / "fs_testnodes-0.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fs-testnodes\nVersion: 0.0\n")
    (info / "entry_points.txt").write_text("[facesleuth.nodes]\ntestnodes = fs_testnodes\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_DIR), str(site), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture(scope="session", autouse=True)
def _register_test_nodes() -> None:
    """Register the test node types in this process too (graph validation tests run in-process)."""
    import fs_testnodes  # noqa: F401


# ------------------------------------------------------------------------------------- graphs


@pytest.fixture
def write_graph(tmp_path: Path) -> Callable[..., Path]:
    def write(text: str, name: str = "graph.yaml") -> Path:
        p = tmp_path / name
        p.write_text(textwrap.dedent(text).lstrip("\n"))
        return p

    return write


class RunningGraph:
    """A `python -m edge run` subprocess with a private runs directory (TMPDIR), output in files."""

    def __init__(self, graph: Path, args: tuple[str, ...], env: dict[str, str], root: Path) -> None:
        self.root = root  # TMPDIR of the runner: its runs live in root/facesleuth-UID/
        self.stdout_path, self.stderr_path = root / "stdout.txt", root / "stderr.txt"
        self.env = {**env, "TMPDIR": str(root)}
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge", "run", str(graph), *args],
                                         cwd=REPO, env=self.env, stdout=out, stderr=err)
        self.t_start = time.monotonic()
        self._node_pids: dict[str, int] = {}

    @property
    def runs_root(self) -> Path:
        return self.root / f"facesleuth-{os.getuid()}"

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def describe(self) -> str:
        """stdout + stderr, for assertion messages."""
        return f"--- stdout\n{self.stdout()}\n--- stderr\n{self.stderr()}"

    def wait(self, timeout: float = 20.0) -> int:
        """Exit code of the runner; fails the test (with its output) if it runs past `timeout` s."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"graph still running after {timeout} s\n{self.describe()}")

    def stop(self, timeout: float = 20.0) -> tuple[int, float]:
        """SIGTERM the runner as systemd or Ctrl-C would: (exit code, seconds it took to exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.wait(timeout)
        return code, time.monotonic() - t0

    def run_dir(self, timeout: float = 15.0) -> Path:
        """The run directory (with endpoints.json) once the runner has written it."""
        latest = self.runs_root / "latest"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (latest / "endpoints.json").is_file():
                return latest.resolve()
            if self.proc.poll() is not None:
                pytest.fail(f"runner exited with {self.proc.returncode} before starting\n{self.describe()}")
            time.sleep(0.05)
        pytest.fail(f"no run directory after {timeout} s\n{self.describe()}")

    def endpoints(self) -> dict[str, Any]:
        return json.loads((self.run_dir() / "endpoints.json").read_text())

    def node_pids(self) -> dict[str, int]:
        """name -> pid of every live node process (children running edge.runtime.noderun NAME.json)."""
        import psutil

        pids = {}
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return {}
        for c in children:
            try:
                cmd = c.cmdline()
            except psutil.Error:
                continue
            if "edge.runtime.noderun" in cmd:
                pids[Path(cmd[-1]).stem] = c.pid
                self._node_pids[f"{Path(cmd[-1]).stem}:{c.pid}"] = c.pid
        return pids

    def wait_for(self, condition: Callable[[], Any], timeout: float = 15.0, what: str = "condition") -> Any:
        """Poll `condition()` every 50 ms until truthy; fail with the runner's output on timeout."""
        return wait_until(condition, timeout, what, self.describe)

    def seen_pids(self) -> list[int]:
        """Every node pid that node_pids() ever saw (to check for orphans)."""
        return sorted(set(self._node_pids.values()))

    def terminate(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after `timeout` s; kill node processes left behind (the test will have
        checked for orphans itself where that matters)."""
        import psutil

        if self.proc.poll() is None:
            self.node_pids()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for pid in self.seen_pids():
            try:
                p = psutil.Process(pid)
                if "edge.runtime.noderun" in " ".join(p.cmdline()):
                    p.kill()
            except psutil.Error:
                pass


@pytest.fixture
def run_graph(plugin_env: dict[str, str], write_graph: Callable[..., Path]) -> Iterator[Callable[..., RunningGraph]]:
    """Factory: run_graph(path_or_yaml_text, *args, env=None) -> RunningGraph (always torn down)."""
    running: list[tuple[RunningGraph, Path]] = []

    def start(graph: Path | str, *args: str, env: dict[str, str] | None = None) -> RunningGraph:
        path = Path(graph) if isinstance(graph, Path) else write_graph(graph, f"graph{len(running)}.yaml")
        root = Path(tempfile.mkdtemp(prefix="fsr-", dir="/tmp"))
        g = RunningGraph(path, tuple(args), {**plugin_env, **(env or {})}, root)
        running.append((g, root))
        return g

    yield start
    for g, root in running:
        g.terminate()
        shutil.rmtree(root, ignore_errors=True)
