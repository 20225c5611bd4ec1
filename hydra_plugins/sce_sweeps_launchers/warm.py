"""Warm start of local jobs: a server imports ``hydra.launcher.preload`` once and forks a child
per job. A job's ``python`` becomes a client (standard library only) that hands the server its
command, environment, directory and streams, relays signals to the child and exits as it did.
Torch initialises CUDA in the child, after ``CUDA_VISIBLE_DEVICES`` is set.

    python -m hydra_plugins.sce_sweeps_launchers.warm serve SOCKET MODULE...  # the server
    python -I -S .../warm.py SOCKET PYTHON_ARGS...                            # a job's client
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys

# What the client passes on to its child (the server handles SIGKILL, which it cannot catch).
RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)
_MAX_MESSAGE = 1 << 20
MODULE = "hydra_plugins.sce_sweeps_launchers.warm"
# What every job of the project's launchers imports, whatever the app: preloaded always.
JOB_MODULES = ("submitit.core.submission", "hydra_plugins.sce_sweeps_launchers.launchers")


def client(socket_path: str, args: list[str]) -> None:
    """Run ``python ARGS`` as a child of the server (with none, cold) and exit as it does."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        sock.connect(socket_path)
        request = {"args": args, "env": dict(os.environ), "cwd": os.getcwd()}
        socket.send_fds(sock, [json.dumps(request).encode()], [0, 1, 2])
        pid = json.loads(sock.recv(_MAX_MESSAGE))["pid"]
    except (OSError, ValueError, KeyError):  # no server, or it went away: start cold
        sock.close()
        os.execv(sys.executable, [sys.executable, *args])

    def relay(signum: int, frame: object) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    for signum in RELAYED:
        signal.signal(signum, relay)
    message = sock.recv(_MAX_MESSAGE)  # the child's wait status, once it has ended
    if not message:
        sys.exit("warm start: the job server stopped before the job ended")
    status = json.loads(message)["status"]
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if signum not in (signal.SIGKILL, signal.SIGSTOP):  # these two keep their action
            signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    sys.exit(os.waitstatus_to_exitcode(status))


def client_python(socket_path: str) -> str:
    """The command line of a client of the server at ``socket_path``, in place of ``python``."""
    import shlex

    return shlex.join([sys.executable, "-I", "-S", os.path.abspath(__file__), socket_path])


class Server:
    """The server, started on construction; :meth:`ready` waits for its imports."""

    def __init__(self, modules: list[str]) -> None:
        import subprocess
        import tempfile

        self.folder = tempfile.mkdtemp(prefix="sce-warm-")  # AF_UNIX paths are short
        self.socket_path = os.path.join(self.folder, "jobs")
        cmd = [sys.executable, "-m", MODULE, "serve", self.socket_path, *modules]
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True
        )
        self._ready: bool | None = None

    def ready(self) -> bool:
        """Wait for the imports; False if they failed (the server says why): jobs start cold."""
        if self._ready is None:
            assert self.process.stdout is not None
            self._ready = self.process.stdout.readline() == b"ready\n"
        return self._ready

    def python(self) -> str:
        """The command that replaces ``python`` in a job's command line."""
        return client_python(self.socket_path)

    def stop(self) -> None:
        """No more jobs: the server exits once its children have ended (not waited for)."""
        assert self.process.stdin is not None
        self.process.stdin.close()  # a no-op once closed


def run_command(args: list[str]) -> int:
    """Run ``python [-u] -m MODULE ...`` or ``-c CODE ...`` in this forked process; return its
    exit code (-SIGINT after a KeyboardInterrupt), once :func:`flush_job` is done."""
    import runpy
    import traceback

    code = 0
    try:
        while args and args[0] in ("-u", "-B", "-E", "-s"):
            args = args[1:]
        if len(args) < 2 or args[0] not in ("-m", "-c"):
            raise SystemExit(f"warm start runs `-m MODULE ...` or `-c CODE ...`, not {args}")
        if args[0] == "-m":
            sys.argv = [args[1], *args[2:]]  # runpy puts the module's path first
            runpy.run_module(args[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = ["-c", *args[2:]]
            exec(compile(args[1], "<string>", "exec"), {"__name__": "__main__"})
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:  # as the interpreter: print the message, exit 1
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:  # as the interpreter: the traceback, then die of SIGINT
        traceback.print_exc()
        code = -signal.SIGINT
    except BaseException:  # noqa: BLE001 (as the interpreter: print it, exit 1)
        traceback.print_exc()
        code = 1
    flush_job()
    return code if code == -signal.SIGINT else code & 0xFF


def flush_job() -> None:
    """Before ``os._exit`` (which skips the interpreter's exit): join the job's threads, close
    its tracker, flush its log handlers and streams."""
    import logging
    import threading

    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    tracking = sys.modules.get("sce_sweeps.runtime.tracking")
    if tracking is not None:
        tracking.close_at_exit()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # a closed stream
            stream.flush()


def _child(request: dict, fds: list[int]) -> None:
    """In the forked child: take the client's streams, directory and environment; run."""
    for fd, target in zip(fds, (0, 1, 2)):
        os.dup2(fd, target)
        os.close(fd)
    for signum in (*RELAYED, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for stream in (sys.stdout, sys.stderr):  # as `python -u`
        stream.reconfigure(line_buffering=True, write_through=True)
    code = run_command(list(request["args"]))
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    os._exit(code)


def serve(socket_path: str, modules: list[str]) -> None:
    """Import ``modules``, fork a child per client until stdin closes, exit after the last."""
    import importlib
    import selectors

    for name in modules:
        importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(socket_path)
    listener.listen(128)
    print("ready", flush=True)

    events = selectors.DefaultSelector()
    events.register(listener, selectors.EVENT_READ, "accept")
    events.register(sys.stdin, selectors.EVENT_READ, "launcher")
    children: dict[int, tuple[socket.socket, int]] = {}  # pid -> (its client's socket, pidfd)
    accepting = True
    while accepting or children:
        for key, _ in events.select():
            what = key.data
            if what == "accept":
                conn, _ = listener.accept()
                try:
                    message, fds, _, _ = socket.recv_fds(conn, _MAX_MESSAGE, 3)
                    request = json.loads(message)
                except (OSError, ValueError):
                    conn.close()
                    continue
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    events.close()
                    listener.close()
                    for other, other_pidfd in children.values():
                        other.close()
                        os.close(other_pidfd)
                    conn.close()
                    _child(request, fds)
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pid] = (conn, pidfd)
                conn.sendall(json.dumps({"pid": pid}).encode())
                events.register(pidfd, selectors.EVENT_READ, ("ended", pid))
                events.register(conn, selectors.EVENT_READ, ("client", pid))
            elif what == "launcher":
                if not os.read(sys.stdin.fileno(), 4096):
                    events.unregister(sys.stdin)
                    events.unregister(listener)
                    listener.close()
                    os.unlink(socket_path)
                    os.rmdir(os.path.dirname(socket_path))
                    accepting = False
            elif what[0] == "ended":
                pid = what[1]
                conn, pidfd = children.pop(pid)
                _, status = os.waitpid(pid, 0)
                events.unregister(pidfd)
                os.close(pidfd)
                if conn.fileno() in events.get_map():
                    events.unregister(conn)
                with contextlib.suppress(OSError):  # the client is gone
                    conn.sendall(json.dumps({"status": status}).encode())
                conn.close()
            elif what[0] == "client":  # the client ended (killed) before its child
                pid = what[1]
                conn = children[pid][0]
                if conn.recv(_MAX_MESSAGE):  # clients send nothing after their request
                    continue
                events.unregister(conn)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3:])
    else:
        client(sys.argv[1], sys.argv[2:])
