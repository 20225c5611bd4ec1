"""Warm start of local jobs (``hydra.launcher.preload``): a real server forking real clients'
commands, and real sweeps of a minimal Hydra app through launcher sce_local."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hydra_plugins.sce_sweeps_launchers import warm
from tests.support import wait_until

pytestmark = pytest.mark.e2e  # jobs, servers and writers in processes of their own


@pytest.fixture(scope="module")
def server():
    server = warm.Server(["json", "xml.dom.minidom"])
    assert server.ready()
    yield server
    server.stop()
    assert server.process.wait(timeout=30) == 0


def _client(server: warm.Server, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([*shlex.split(server.python()), *args], **kwargs)


def test_a_job_runs_forked_with_its_own_streams_directory_and_environment(server, tmp_path):
    code = (
        "import json, os, sys\n"
        "print(json.dumps({'argv': sys.argv, 'cwd': os.getcwd(), 'x': os.environ.get('X'),\n"
        "  'ppid': os.getppid(), 'preloaded': 'xml.dom.minidom' in sys.modules}))\n"
        "print('to stderr', file=sys.stderr)\n"
        "sys.exit(3)"
    )
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as o, err.open("w") as e:
        proc = _client(server, "-c", code, "a", "b", stdout=o, stderr=e, cwd=tmp_path,
                       env={**os.environ, "X": "42"})  # fmt: skip
        assert proc.wait(timeout=60) == 3
    seen = json.loads(out.read_text())
    assert seen == {"argv": ["-c", "a", "b"], "cwd": str(tmp_path), "x": "42",
                    "ppid": server.process.pid, "preloaded": True}  # fmt: skip
    assert err.read_text() == "to stderr\n"


def test_modules_run_as_main_and_exceptions_exit_1(server, tmp_path):
    proc = _client(server, "-u", "-m", "json.tool", "--help", stdout=subprocess.PIPE, text=True)
    assert proc.wait(timeout=60) == 0
    assert proc.stdout.read().startswith("usage: python -m json.tool")
    proc = _client(server, "-c", "raise ValueError('boom')", stderr=subprocess.PIPE, text=True)
    assert proc.wait(timeout=60) == 1
    assert "ValueError: boom" in proc.stderr.read()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2, signal.SIGINT])
def test_signals_reach_the_job_and_the_client_ends_as_it_did(server, tmp_path, signum):
    """submitit's controller signals the client (cancel, time limit, preemption)."""
    marker = tmp_path / "handled"
    code = (
        "import signal, sys, time, pathlib\n"
        f"def on(n, f): pathlib.Path({str(marker)!r}).write_text(str(n)); sys.exit(7)\n"
        f"signal.signal({int(signum)}, on) if {int(signum)} != signal.SIGINT else None\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)"
    )
    proc = _client(server, "-c", code, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signum)
    if signum == signal.SIGINT:  # no handler: KeyboardInterrupt, then death by SIGINT
        assert proc.wait(timeout=60) == -signal.SIGINT
    else:
        assert proc.wait(timeout=60) == 7
        assert marker.read_text() == str(int(signum))


def test_a_client_killed_outright_takes_its_job_with_it(server, tmp_path):
    pid_file = tmp_path / "pid"
    code = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    proc = _client(server, "-c", code)
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), 60, "the job", interval=0.05)
    proc.kill()
    proc.wait(timeout=60)
    job = int(pid_file.read_text())
    # the server reaps it once killed
    wait_until(lambda: not Path(f"/proc/{job}").exists(), 60, "the job to end", interval=0.05)


def test_a_job_killed_outright_ends_its_client_as_it_ended(server, tmp_path):
    """The job itself SIGKILLed (the OOM killer, a user's kill -9): its client dies by SIGKILL
    too, as a cold job would, without a traceback (it exited 1 with an OSError: SIGKILL's
    handler cannot be set)."""
    code = "import os, signal; print('ready', flush=True); os.kill(os.getpid(), signal.SIGKILL)"
    proc = _client(server, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read()
    assert proc.stdout.read() == "ready\n" and proc.stderr.read() == ""


def test_without_a_server_a_job_starts_cold(tmp_path):
    command = shlex.split(warm.client_python(str(tmp_path / "none")))
    proc = subprocess.run([*command, "-c", "import sys; print(sys.flags.isolated)"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "0\n"  # a plain interpreter, not the client's isolated one


APP = """
import json, os, sys
import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path=None, config_name=None)
def main(cfg) -> float:
    seen = {"preloaded": "xml.dom.minidom" in sys.modules, "pid": os.getpid(),
            "ppid": os.getppid()}
    out = os.path.join(HydraConfig.get().runtime.output_dir, "seen.json")
    with open(out, "w") as f:
        json.dump(seen, f)
    return float(cfg.x)


if __name__ == "__main__":
    main()
"""


def _sweep(tmp_path: Path, *overrides: str) -> tuple[subprocess.CompletedProcess, list[dict]]:
    (tmp_path / "app.py").write_text(APP)
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "app.py", "-m", "hydra/launcher=sce_local", "+x=1,2,3,4"]
    cmd += ["hydra.launcher.poll_s=0.1", f"hydra.sweep.dir={sweep_dir}", *overrides]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((sweep_dir / str(i) / "seen.json").read_text()) for i in range(4)]
    return proc, seen


def test_a_sweep_forks_its_jobs_from_one_server_that_preloaded_them(tmp_path):
    _, seen = _sweep(tmp_path, "hydra.launcher.preload=[xml.dom.minidom]")
    assert all(s["preloaded"] for s in seen)
    assert len({s["ppid"] for s in seen}) == 1  # one server
    assert len({s["pid"] for s in seen}) == 4


def test_preload_null_starts_every_job_cold(tmp_path):
    _, seen = _sweep(tmp_path, "hydra.launcher.preload=null")
    assert not any(s["preloaded"] for s in seen)
    assert len({s["ppid"] for s in seen}) == 4  # each its own submitit controller


def test_a_preload_that_fails_to_import_leaves_jobs_cold_and_says_so(tmp_path):
    proc, seen = _sweep(tmp_path, "hydra.launcher.preload=[no_such_module_anywhere]")
    assert "warm start is off" in proc.stderr
    assert "No module named 'no_such_module_anywhere'" in proc.stderr
    assert not any(s["preloaded"] for s in seen)
