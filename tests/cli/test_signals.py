"""Ctrl-C and SIGTERM at any moment: one line, 130 or 143, and state saved; real processes, the real INN.

Owns: the black-box proof of ``usenetsync_cli.entry``'s signal policy.

- Starting: a ``sitecustomize`` put on PYTHONPATH (test instrumentation, not
  a product hook) installs an import hook that, when the process first
  imports a chosen module, tells the test through a FIFO and blocks. The
  signal is sent only then, so it lands mid-import every time. The same
  gate on an ``open`` audit event stops a command in its running phase.
- Running: SIGTERM is sent when the process is proven to be mid-way (articles
  posted but not all, a ``par2`` child alive, a directory of the tree open),
  and the saved state proves it landed there.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tests.cli.helpers import run
from tests.support.faultproxy import ARTICLE, FaultProxy
from tests.support.inn import InnServer
from usenetsync_cli.errors import InterruptedByUser, TerminatedError
from usenetsync_cli.store.home import Home
from usenetsync_cli.store.state import State

SEG = "16384"
CONSOLE_SCRIPT = Path(sys.executable).parent / "usenetsync"
_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_leftover_cli() -> Iterator[None]:
    """A failed test must not leave its CLI process behind (e.g. waiting on a lock)."""
    yield
    while _STARTED:
        proc = _STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_GATE = '''
import os, sys

_armed = [True]


def _at_gate():
    _armed[0] = False
    with open(os.environ["GATE_FIFO"], "w") as f:
        f.write("at gate\\n")


class _Finalizer:
    def __del__(self):
        # Python prints an exception raised here as "Exception ignored" and
        # goes on: wait until the stop handler has seen the signal and put
        # it off (its retry timer is armed), then return.
        import signal, time
        _at_gate()
        while signal.getitimer(signal.ITIMER_REAL)[0] == 0:
            time.sleep(0.001)


def _block():
    """Say so on the FIFO $GATE_FIFO, then block until a signal ends the process."""
    if os.environ.get("GATE_IN_DEL"):
        _Finalizer()  # dropped at once: its __del__ runs here
        return
    # Not time.sleep(): Python runs a handler only between bytecodes, so a
    # signal landing after the last check and before the sleep's syscall
    # would wait out the sleep (seen: ~1 run in 15, an hour each). The C-level
    # handler writes to the wakeup fd, set before the test is told: a signal
    # at any moment after that ends the select, and the handler then runs.
    import select, signal
    r, w = os.pipe()
    os.set_blocking(w, False)
    try:
        signal.set_wakeup_fd(w, warn_on_full_buffer=False)
    except ValueError:
        pass  # not the main thread: signals are handled there, this one just waits
    _at_gate()
    # Blocks inside a *string* exec, as dataclass and namedtuple creation run:
    # CPython remembers a KeyboardInterrupt that ends one, even when caught.
    exec("while True:\\n    select.select([r], [], [])\\n    os.read(r, 512)", {"select": select, "os": os, "r": r})


class _ImportGate:
    """Blocks the first import of $GATE_MODULE."""

    def find_spec(self, name, path=None, target=None):
        if _armed[0] and name == os.environ.get("GATE_MODULE"):
            _block()
        return None


def _open_gate(event, args):
    """Blocks the first open of a path ending in $GATE_OPEN."""
    if event == "open" and _armed[0] and isinstance(args[0], (str, bytes, os.PathLike)):
        if os.fsdecode(args[0]).endswith(os.environ["GATE_OPEN"]):
            _block()


if os.environ.get("GATE_MODULE"):
    sys.meta_path.insert(0, _ImportGate())
if os.environ.get("GATE_OPEN"):
    sys.addaudithook(_open_gate)
'''


def _one_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("usenetsync: error: ") and "(hint: " in lines[0], err
    return lines[0]


def _start_gated(
    tmp_path: Path, module: str, argv: list[str], *, opening: str = "", in_del: bool = False, **popen: object
) -> subprocess.Popen[str]:
    """Start the CLI; return once it blocks in ``import module`` (or opening a path ending in ``opening``)."""
    gate_dir = tmp_path / "gate"
    gate_dir.mkdir(exist_ok=True)
    (gate_dir / "sitecustomize.py").write_text(_GATE)
    fifo = tmp_path / "gate.fifo"
    if not fifo.exists():
        os.mkfifo(fifo)
    # Non-blocking read end first: the child's open for writing then never waits.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    env = {**os.environ, "PYTHONPATH": str(gate_dir), "GATE_MODULE": module, "GATE_OPEN": opening,
           "GATE_FIFO": str(fifo), "GATE_IN_DEL": "1" if in_del else ""}
    proc = subprocess.Popen(  # type: ignore[call-overload]
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )
    _STARTED.append(proc)
    try:
        deadline = time.monotonic() + 60
        got = b""
        while b"\n" not in got:
            assert proc.poll() is None, f"the CLI ended before the gate: {proc.communicate()}"
            assert time.monotonic() < deadline, "the CLI never reached the gate"
            ready, _, _ = select.select([rfd], [], [], 0.5)
            if ready:
                got += os.read(rfd, 64)
    finally:
        os.close(rfd)
    return proc


@pytest.mark.parametrize("how", ["python -m", "console script"])
# cli.status: a command module is imported only for its command, still while starting.
@pytest.mark.parametrize("module", ["usenetsync_cli.errors", "typer", "apsw", "usenetsync_cli.cli.status"])
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_while_importing_is_one_line(
    tmp_path: Path, how: str, module: str, sig: signal.Signals, code: int
) -> None:
    argv = [sys.executable, "-m", "usenetsync_cli"] if how == "python -m" else [str(CONSOLE_SCRIPT)]
    assert Path(argv[0]).exists(), "the console script is missing: pip install -e ."
    proc = _start_gated(tmp_path, module, [*argv, "status"])
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (proc.returncode, err)
    line = _one_line(err)
    assert "nothing was done" in line and "Traceback" not in err and out == ""


def test_starting_codes_are_the_familys() -> None:
    # The entry module words a stop before errors.py is imported itself; its
    # codes must be the family's (the errors.py gate above exercises that path).
    from usenetsync_cli import entry

    assert entry._FALLBACK[signal.SIGINT][0] == InterruptedByUser.exit_code == 130
    assert entry._FALLBACK[signal.SIGTERM][0] == TerminatedError.exit_code == 143


def test_ignored_sigint_stays_ignored(tmp_path: Path) -> None:
    # `nohup usenetsync … &` starts with SIGINT ignored: no handler may undo that.
    proc = _start_gated(
        tmp_path, "typer", [sys.executable, "-m", "usenetsync_cli", "status"],
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    proc.send_signal(signal.SIGINT)
    with pytest.raises(subprocess.TimeoutExpired):
        # Proves a negative, so it must wait: the ignored SIGINT changes nothing.
        proc.wait(timeout=1.0)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    _one_line(err)


# ---------------------------------------------------------------- running


def test_stop_signal_in_a_finalizer_is_not_lost(tmp_path: Path) -> None:
    # SIGTERM while a __del__ runs: raised there, the KeyboardInterrupt would
    # be printed as "Exception ignored" and dropped, and the run would go on.
    lock = Home.resolve().lock_path
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the CLI will wait for it: the retried stop lands in that wait
        proc = _start_gated(tmp_path, "", [sys.executable, "-m", "usenetsync_cli", "index", str(tmp_path),
                                           "--lock-wait", "600"], opening=str(lock), in_del=True)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(fd)
    assert proc.returncode == 143, (proc.returncode, err)
    assert "Exception ignored" not in err
    _one_line(err)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_stop_signal_in_the_running_phase_exits_with_our_code(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    # Stopped while taking the home lock, inside a string exec: without care
    # `python -m` would exit by SIGINT (-2) instead of 143, or the stop would
    # be reported as an error of the lock file.
    lock = Home.resolve().lock_path
    proc = _start_gated(tmp_path, "", [sys.executable, "-m", "usenetsync_cli", "index", str(tmp_path)],
                        opening=str(lock))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, (proc.returncode, err)
    line = _one_line(err)
    assert "safe point" in line and "while starting" not in line and out == ""


def _add_server(capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    r = run(capsys, "server", "add", "local", "--host", inn.host, "--port", str(inn.port),
            "--group", inn.group, "--connections", "3")
    assert r.code == 0, r.err


def _tree(root: Path, nbytes: int, nfiles: int) -> None:
    root.mkdir(parents=True)
    for i in range(nfiles):
        (root / f"f{i}.bin").write_bytes(os.urandom(nbytes // nfiles))


def _cli(*args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "usenetsync_cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(proc)
    return proc


def _wait_for(proc: subprocess.Popen[str], what: str, cond: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the command ended before {what}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.005)


def _segment_states() -> dict[int, int]:
    with State.open(Home.resolve()) as st:
        out: dict[int, int] = {}
        for c in st.shards:
            for state, n in c.execute("SELECT state, count(*) FROM segments GROUP BY state"):
                out[state] = out.get(state, 0) + n
        return out


def test_sigterm_during_upload_saves_state_and_resumes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer
) -> None:
    src = tmp_path / "data"
    _tree(src, 4_000_000, 8)  # ~250 articles of 16 KiB
    with FaultProxy(inn.host, inn.port) as proxy:
        r = run(capsys, "server", "add", "local", "--host", proxy.host, "--port", str(proxy.port),
                "--group", inn.group, "--connections", "3", "--timeout", "300")
        assert r.code == 0, r.err
        assert run(capsys, "index", str(src)).code == 0
        # The proxy answers 50 articles and then holds every reply: the upload cannot
        # finish before the signal, whatever the machine's load (no race with its speed).
        proxy.hold_replies(ARTICLE, after=50)
        proc = _cli("upload", str(src), "--segment-size", SEG, "--redundancy", "0")
        _wait_for(proc, "a held reply", lambda: proxy.faults_fired.get("hold_replies", 0) >= 1)
        _wait_for(proc, "the answered articles committed", lambda: sum(
            n for s, n in _segment_states().items() if s in (1, 2)) >= 50)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 143, err
        line = _one_line(err)
        assert "SIGTERM" in line and "state saved" in line and "--resume" in line
        states = _segment_states()
        total = sum(n for s, n in states.items() if s != 4)
        done = sum(n for s, n in states.items() if s in (1, 2))
        assert 50 <= done < total, states  # it landed mid-way, and what was posted is recorded
        proxy.clear_faults()
        r2 = subprocess.run([sys.executable, "-m", "usenetsync_cli", "upload", "--resume", "--redundancy", "0"],
                            capture_output=True, text=True, timeout=300)
        assert r2.returncode == 0, r2.stderr
        states = _segment_states()
        assert states.get(2, 0) == total, states  # every segment verified


def _par2_children(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    out = []
    for k in kids:
        try:
            if "par2" in k.name():
                out.append(k)
        except psutil.NoSuchProcess:
            pass
    return out


def test_sigterm_during_par2_stops_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str], inn: InnServer) -> None:
    # Before, SIGTERM was caught only while posting: during PAR2 it killed the
    # process by the default action (exit -15) in the middle of its writes.
    _add_server(capsys, inn)
    src = tmp_path / "data"
    _tree(src, 20_000_000, 4)
    assert run(capsys, "index", str(src)).code == 0
    r = run(capsys, "upload", str(src), "--segment-size", SEG, "--redundancy", "0")
    assert r.code == 0, r.err
    # Everything is posted: this run only makes and posts recovery data (~13 groups, one par2 each).
    proc = _cli("upload", str(src), "--redundancy", "10", "--json")
    _wait_for(proc, "a par2 child", lambda: bool(_par2_children(proc)))
    kids = _par2_children(proc)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    line = _one_line(err)
    assert "SIGTERM" in line
    assert not [k for k in kids if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]  # no par2 left behind
    from usenetsync_cli.pipeline.recovery import open_recovery_db

    def covered() -> int:
        """Segments in a finished recovery group."""
        with State.open(Home.resolve()) as st:
            conn = open_recovery_db(st)
            try:
                return int(conn.execute("SELECT count(*) FROM group_members").fetchall()[0][0])
            finally:
                conn.close()

    total = sum(n for s, n in _segment_states().items() if s != 4)
    assert covered() < total  # stopped before every group was made
    r = run(capsys, "upload", str(src), "--redundancy", "10")
    assert r.code == 0, r.err
    assert covered() == total  # the next run finished what the stopped one left


def _open_dirs_under(pid: int, root: Path) -> bool:
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(root) + "/"):
            return True
    return False


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stop_signal_during_index(tmp_path: Path, sig: signal.Signals, code: int) -> None:
    root = tmp_path / "tree"
    for d in range(400):
        sub = root / f"d{d:04d}"
        sub.mkdir(parents=True)
        for f in range(100):
            (sub / f"f{f}").touch()
    proc = _cli("index", str(root))
    # A sub-folder of the tree open in the process: the scan is under way.
    _wait_for(proc, "the scan inside the tree", lambda: _open_dirs_under(proc.pid, root))
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    line = _one_line(err)
    assert ("SIGTERM" in line) == (sig == signal.SIGTERM)
    assert out == ""  # no summary: it did not finish
    with State.open(Home.resolve()) as st:
        runs = st.catalog.execute("SELECT command, status FROM runs").fetchall()
    assert ("index", "interrupted") in [tuple(r) for r in runs], runs
