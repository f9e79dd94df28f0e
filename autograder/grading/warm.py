"""Warm kernels: each grading worker keeps one template process and forks every kernel from it.

A kernel that starts from nothing spends about two seconds importing torch, numpy, matplotlib
and ``glowcourse``: the same two seconds for each submission. ``template.py`` (a separate
program; student code never runs in it) does those imports once, then forks a kernel per
submission that isolates itself as ``sandbox.py``'s bubblewrap sandbox does (see its
docstring). This module is the grader's side:

- :class:`Template` starts the template, checks once that a fork can build its sandbox here
  (a probe fork that writes a file and reports what it sees), and asks it for kernels;
- :class:`WarmProvisioner` is the jupyter_client provisioner that launches a kernel by asking
  the template instead of running a command: the kernel it gets speaks to nbclient and nbgrader
  exactly as a started one does, so repair, probes, feedback and the gradebook do not change;
- :func:`template_for` gives this process's template, or None with the reason said once on
  stderr, and grading then starts each kernel in bubblewrap as before: with ``--no-warm``,
  ``--no-sandbox``, where the probe fork fails, or after the template died.

Each kernel is still one submission's: its own namespaces, scratch folder, cgroup and limits,
forked from a template no student code has touched.
"""
from __future__ import annotations

import asyncio
import atexit
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.provisioning import LocalProvisioner

from .limits import Limits

__all__ = ["Template", "WarmProvisioner", "WarmUnavailable", "template_for", "request"]

PROGRAM = Path(__file__).with_name("template.py")
START_TIMEOUT = 180   # seconds for the template's imports (a busy 2-core machine: about 10)


class WarmUnavailable(RuntimeError):
    pass


def request(limits: Limits, scratch: Path, connection_file: str, *, cgroup: Path | None = None,
            probe: bool = False, spare: bool = False) -> dict:
    """What the template needs to fork one sandboxed kernel under ``limits``."""
    from .sandbox import kernel_env, readable_paths

    return {"connection_file": connection_file, "scratch": str(scratch), "readable": readable_paths(),
            "env": kernel_env(limits), "threads": limits.kernel_threads(), "memory_mb": limits.memory_mb,
            "cpu_s": limits.cpu_s, "processes": limits.processes, "timeout": limits.notebook_timeout,
            "cgroup": str(cgroup) if cgroup else None, "probe": probe, "spare": spare}


class Forked:
    """The ``subprocess.Popen`` face of a kernel the template forked (what a provisioner holds).

    ``pid`` is the kernel's supervisor; killing it kills the sandbox (its children die with it).
    It is not this process's child, so its end is watched through a pidfd."""

    stdin = stdout = stderr = None

    def __init__(self, pid: int):
        self.pid = pid
        try:
            self._fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._fd = None  # already gone
        self.returncode = None if self._fd is not None else 1

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._fd], [], [], 0)[0]:
            self.returncode = 1  # ended; its status went to the template (a kernel ends by being shut down)
            os.close(self._fd)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._fd], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return self.poll()

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:
            try:  # through the pidfd: never to another process that reused the pid
                signal.pidfd_send_signal(self._fd, signum)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class Template:
    """One template process: started, probed, asked for kernels, stopped with this process."""

    def __init__(self, limits: Limits):
        from .sandbox import kernel_env

        self.log = tempfile.NamedTemporaryFile(prefix="ag-template-", suffix=".log", delete=False)
        # OpenMP (torch) starts its threads at the first parallel region, in the kernel; OpenBLAS
        # (numpy, scipy) starts them when loaded, in the template, so it is loaded with one (a
        # fork copies one thread) and given the kernel's threads in the kernel.
        # Its environment is the kernel's, not this process's: a fork's /proc/self/environ shows
        # what the template was started with, whatever the kernel sets later.
        self.home = tempfile.TemporaryDirectory(prefix="ag-template-")
        env = {**kernel_env(limits), "HOME": self.home.name, "MPLCONFIGDIR": self.home.name,
               "OPENBLAS_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-I", str(PROGRAM), str(os.getpid())], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        atexit.register(self.close)
        self.limits = limits
        self.ready = False  # its imports take seconds: the caller may do other work meanwhile

    def wait_ready(self) -> None:
        """Wait for the template's imports, then probe one fork (raises WarmUnavailable)."""
        if self.ready:
            return
        try:  # a forked kernel is not this process's child: its end is watched through a pidfd
            os.close(os.pidfd_open(os.getpid()))
        except (AttributeError, OSError) as err:
            self.close()
            raise WarmUnavailable(f"this system cannot watch a forked kernel (pidfd_open: {err})") from None
        ready = self._read(START_TIMEOUT)
        if "ready" not in ready:
            self.close()
            raise WarmUnavailable(ready.get("error") or "the template did not start")
        self._probe()
        self.ready = True

    def _read(self, timeout: float) -> dict:
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            return {"error": f"the template did not answer within {timeout:g} s"}
        line = self.proc.stdout.readline()
        if not line:
            return {"error": "the template exited" + self._log_tail()}
        return json.loads(line)

    def _log_tail(self) -> str:
        try:
            tail = Path(self.log.name).read_text(errors="replace").strip().splitlines()[-1:]
        except OSError:
            tail = []
        return f" ({tail[0][:200]})" if tail else ""

    def fork(self, req: dict) -> int:
        """The pid of a new kernel's supervisor (raises WarmUnavailable if the template is gone)."""
        if self.proc.poll() is not None:
            raise WarmUnavailable("the template exited" + self._log_tail())
        try:
            self.proc.stdin.write(json.dumps(req) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WarmUnavailable("the template exited" + self._log_tail()) from None
        answer = self._read(30)
        if "pid" not in answer:
            raise WarmUnavailable(answer.get("error", "no answer"))
        return answer["pid"]

    def report(self, look_for: list[str] = ()) -> dict:
        """What a forked sandbox sees (its uid, pids, capabilities, root, environment, which of
        ``look_for`` exist), from a fork that writes it down instead of starting a kernel."""
        with tempfile.TemporaryDirectory(prefix="ag-") as tmp:
            scratch = Path(tmp)
            (scratch / "work").mkdir()
            (scratch / "ipc").mkdir()
            req = request(self.limits, scratch, str(scratch / "ipc" / "kernel.json"), probe=True)
            forked = Forked(self.fork({**req, "look_for": [str(p) for p in look_for]}))
            try:
                forked.wait(60)
            except subprocess.TimeoutExpired:
                forked.kill()
            report = scratch / "work" / "probe.json"
            if not report.exists():
                error = scratch / "ipc" / "launch-error.txt"
                why = error.read_text().strip().splitlines()[-1] if error.exists() else "no report"
                raise WarmUnavailable(f"a forked kernel could not build its sandbox: {why}")
            return json.loads(report.read_text())

    def _probe(self) -> None:
        seen = self.report()
        expected = {"uid": 65534, "pid": 2, "cwd": "/tmp/work", "writable_root": False, "capabilities": 0,
                    "init_capabilities": 0, "processes": [1, 2]}
        wrong = {k: seen.get(k) for k in expected if seen.get(k) != expected[k]}
        if wrong:
            raise WarmUnavailable(f"a forked kernel's sandbox is not as expected: {wrong}")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass
        self.home.cleanup()


_template: Template | None = None
_unavailable: str | None = None


def _say_once(reason: str) -> None:
    global _unavailable
    if _unavailable is None:
        print(f"warm kernels off: {reason}; each kernel starts from scratch (slower, as safe).", file=sys.stderr,
              flush=True)
    _unavailable = reason


def template_for(limits: Limits, *, wait: bool = True) -> Template | None:
    """This process's template for ``limits``, started on first use and ready (``wait=False``:
    started, not waited for), or None: see the module docstring."""
    global _template
    if not (limits.sandbox and limits.warm) or _unavailable is not None:
        return None
    if _template is not None and _template.proc.poll() is not None and _template.ready:
        lost("the template exited" + _template._log_tail())
        return None
    if _template is not None and _template.limits != limits:  # other limits: another template
        _template.close()
        _template = None
    try:
        if _template is None:
            _template = Template(limits)
        if wait:
            _template.wait_ready()
    except (WarmUnavailable, OSError, ValueError) as err:
        _template = None
        _say_once(str(err))
        return None
    return _template


@dataclass
class Spare:
    """A kernel forked ahead of its submission, so that its start overlaps the previous one's
    grading: fresh, untouched, its own scratch folder, cgroup and connection file. Its wall
    clock starts when it is handed out (``take_spare``)."""

    limits: Limits
    scratch: Path
    cgroup: Path | None
    connection_file: str
    process: Forked

    def discard(self) -> None:
        from .sandbox import remove_cgroup

        self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass
        remove_cgroup(self.cgroup)
        shutil.rmtree(self.scratch, ignore_errors=True)


_spare: Spare | None = None


def prepare_spare(limits: Limits) -> None:
    """Fork the next kernel now (one spare per process), if a template serves ``limits``."""
    global _spare
    from jupyter_client.connect import write_connection_file

    from .sandbox import pids_cgroup

    template = template_for(limits)
    if template is None or _spare is not None:
        return
    scratch = Path(tempfile.mkdtemp(prefix="ag-"))
    (scratch / "work").mkdir()
    (scratch / "ipc").mkdir()
    connection_file, _ = write_connection_file(str(scratch / "ipc" / "kernel.json"), ip=str(scratch / "ipc" / "k"),
                                               transport="ipc")
    cgroup = pids_cgroup(limits.processes)
    try:
        pid = template.fork(request(limits, scratch, connection_file, cgroup=cgroup, spare=True))
    except WarmUnavailable as err:
        shutil.rmtree(scratch, ignore_errors=True)
        lost(str(err))
        return
    _spare = Spare(limits, scratch, cgroup, connection_file, Forked(pid))


def take_spare(limits: Limits) -> Spare | None:
    """The spare kernel, its clock started, if there is a live one for ``limits``; else None."""
    global _spare
    spare, _spare = _spare, None
    if spare is None:
        return None
    if spare.limits != limits or spare.process.poll() is not None:
        spare.discard()
        return None
    spare.process.send_signal(signal.SIGUSR1)
    return spare


def _discard_spare() -> None:
    global _spare
    if _spare is not None:
        _spare.discard()
        _spare = None


atexit.register(_discard_spare)


def lost(reason: str) -> None:
    """The template failed mid-run: say so once and start kernels the cold way from now on."""
    global _template
    _discard_spare()
    if _template is not None:
        _template.close()
        _template = None
    _say_once(reason)


class WarmProvisioner(LocalProvisioner):
    """Launches the kernel by asking the template for a fork (see the module docstring); the
    kernel manager (``sandbox.SandboxKernelManager``) supplies the request. If the template is
    gone, it launches the manager's bubblewrap command as the local provisioner does."""

    async def launch_kernel(self, cmd: list[str], **kwargs):
        km = self.parent
        if km.spare is not None:  # adopted by the manager: already started, listening
            self.process = km.spare.process
            self.pid, self.pgid, self.cwd = self.process.pid, None, km.warm_scratch
            await self._bound()
            prepare_spare(km.limits)
            return self.connection_info
        template = template_for(km.limits)
        if template is not None:
            try:
                pid = template.fork(km.warm_request())
            except WarmUnavailable as err:
                lost(str(err))
            else:
                self.process = Forked(pid)
                self.pid, self.pgid, self.cwd = pid, None, km.warm_scratch
                await self._bound()
                prepare_spare(km.limits)
                return self.connection_info
        return await super().launch_kernel(cmd, **kwargs)

    async def _bound(self, timeout: float = 30) -> None:
        """Return once the kernel listens on its Unix sockets (or has died, or ``timeout``).

        A client that connects earlier is refused and retries every 100 ms (zmq's reconnect
        interval), and jupyter_client then waits 0.2 s more for IOPub: a third of a second a
        kernel, where a cold start hides it behind its imports."""
        info = self.connection_info
        sockets = [Path(f"{info['ip']}-{info[key]}") for key in ("shell_port", "iopub_port", "stdin_port",
                                                                  "control_port", "hb_port")]
        deadline = time.monotonic() + timeout
        while not all(s.exists() for s in sockets):
            if self.process.poll() is not None or time.monotonic() > deadline:
                return  # jupyter_client reports a dead or silent kernel as it always has
            await asyncio.sleep(0.005)
