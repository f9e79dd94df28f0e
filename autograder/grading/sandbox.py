"""The sandbox student code runs in while it is graded: a Jupyter kernel inside bubblewrap.

nbgrader runs each notebook through nbclient, which starts a Jupyter kernel and sends it the
cells. Here only the *kernel* is sandboxed; nbclient, nbgrader and the gradebook stay outside,
so nothing the student's code does can reach the gradebook, the hidden tests or the scores.

The kernel sees (``bwrap``, https://github.com/containers/bubblewrap):

- a read-only view of the system libraries, the Python installation and ``glowcourse``,
  nothing else: no ``solutions/``, no gradebook, no home directory, no other submission;
- an empty scratch directory of its own as working directory and ``HOME`` (discarded after);
- no network (a fresh network namespace: loopback only); the kernel talks to nbclient over
  Unix sockets in a directory shared with it (``transport = "ipc"``);
- the limits of ``limits.py``: address space (``RLIMIT_AS``: a huge allocation fails with
  ``MemoryError``), CPU seconds, a number of processes (a pids cgroup when the grader may
  create one, else ``RLIMIT_NPROC``), and a wall-clock limit for the whole notebook
  (``timeout -s KILL`` around bubblewrap, out of the kernel's reach).

``SandboxKernelManager`` is the kernel manager nbclient uses; ``check()`` tells, once per
run, whether bubblewrap works here, with a message naming the fix when it does not.
"""
from __future__ import annotations

import atexit
import os
import shutil
import site
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

from queue import Empty

from jupyter_client.asynchronous import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets import Instance, default

from . import warm
from .limits import Limits

__all__ = ["SandboxKernelClient", "SandboxKernelManager", "SandboxUnavailable", "check", "command", "kernel_env", "readable_paths", "sweep"]

WORK = "/tmp/work"          # the kernel's working directory and HOME, inside the sandbox

# Files under /etc a Python/torch/matplotlib kernel reads; the rest of /etc stays out.
ETC = ["ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "localtime", "fonts", "passwd", "group",
       "nsswitch.conf", "hosts", "mime.types", "ssl"]
THREAD_VARS = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"]
ENV_KEEP = ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "NBGRADER_EXECUTION", "NBGRADER_VALIDATING",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TZ"]


class SandboxUnavailable(RuntimeError):
    pass


def readable_paths() -> list[str]:
    """What the kernel may read: system libraries, this Python, its site-packages, glowcourse."""
    import importlib.util

    spec = importlib.util.find_spec("glowcourse")  # without importing it (and torch) here
    if spec is None or not spec.submodule_search_locations:
        raise SandboxUnavailable("the glowcourse package is not installed")
    paths = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64"}
    paths |= {f"/etc/{name}" for name in ETC}
    for p in [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable),
              *site.getsitepackages(), *spec.submodule_search_locations]:
        paths.add(str(p))
        paths.add(os.path.realpath(p))
    exe = Path(sys.executable)
    while exe.is_symlink():  # venv python -> pyenv/conda python: the target's tree too
        exe = (exe.parent / os.readlink(exe)).resolve()
        paths.add(str(exe.parent.parent))
    existing = sorted(p for p in paths if os.path.exists(p))
    # A path inside another one is already visible.
    return [p for p in existing if not any(p != q and p.startswith(q.rstrip("/") + "/") for q in existing)]


def pids_cgroup(limit: int) -> Path | None:
    """A fresh pids cgroup (v1 controller) allowing ``limit`` tasks, if this process may create one."""
    base = Path("/sys/fs/cgroup/pids")
    if not (base / "cgroup.procs").exists() or not os.access(base, os.W_OK):
        return None
    group = base / "autograder" / uuid.uuid4().hex[:12]
    try:
        group.mkdir(parents=True)
        (group / "pids.max").write_text(str(limit))
        return group
    except OSError:
        return None


def remove_cgroup(group: Path | None) -> None:
    if group is None:
        return
    for _ in range(500):  # about 2.5 s at most; a killed sandbox's processes are gone in milliseconds
        try:
            pids = (group / "cgroup.procs").read_text().split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.005)


def thread_env(limits: Limits) -> dict[str, str]:
    """The environment variables that set a kernel's torch/OpenMP threads."""
    return {var: str(limits.kernel_threads()) for var in THREAD_VARS}


def kernel_env(limits: Limits) -> dict[str, str]:
    """The whole environment of a sandboxed kernel: a few of ours, its threads, its HOME."""
    env = {k: os.environ[k] for k in ENV_KEEP if k in os.environ}
    env.update(thread_env(limits))
    env.update(HOME=WORK, TMPDIR="/tmp", MPLCONFIGDIR=f"{WORK}/.config/matplotlib", PYTHONDONTWRITEBYTECODE="1",
               PYTHONNOUSERSITE="1")
    return env


def command(argv: list[str], scratch: Path, limits: Limits, *, cgroup: Path | None = None,
            shared: list[str] = ()) -> list[str]:
    """``argv`` wrapped so that it runs in the sandbox under ``limits``; ``scratch`` becomes its
    writable WORK dir, and each of ``shared`` (folders) is visible and writable at its own path."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable("bubblewrap (bwrap) is not installed")
    cmd = [bwrap, "--unshare-all", "--die-with-parent", "--cap-drop", "ALL", "--hostname", "sandbox",
           "--uid", "65534", "--gid", "65534", "--clearenv",
           # /tmp first: a checkout or venv living under /tmp is bound on top of it below.
           "--tmpfs", "/tmp"]
    for p in readable_paths():
        cmd += ["--ro-bind", p, p]
    cmd += ["--proc", "/proc", "--dev", "/dev", "--bind", str(scratch), WORK]
    for p in shared:
        cmd += ["--bind", p, p]
    for k, v in sorted(kernel_env(limits).items()):
        cmd += ["--setenv", k, v]
    cmd += ["--chdir", WORK, "--", "prlimit", f"--as={limits.memory_mb * 2**20}", f"--cpu={limits.cpu_s}",
            f"--nproc={limits.processes}", "--core=0", "--", *argv]
    # The wall clock outside: the kernel's parent is bubblewrap's pid 1, which nothing inside can
    # signal; killing bubblewrap kills the sandbox (--die-with-parent).
    cmd = ["timeout", "-s", "KILL", str(limits.notebook_timeout), *cmd]
    if cgroup is not None:  # join the cgroup first, then become the sandbox
        cmd = ["sh", "-c", f'echo $$ > "{cgroup}/cgroup.procs" && exec "$@"', "sandbox-launch", *cmd]
    return cmd


_live: dict[int, tuple[Path | None, Path | None]] = {}  # id(manager) -> (scratch, cgroup) not yet removed


def sweep() -> None:
    """Remove what kernels of this process left behind (a kernel that died skips its clean-up)."""
    for key, (scratch, cgroup) in list(_live.items()):
        remove_cgroup(cgroup)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        _live.pop(key, None)


atexit.register(sweep)

_checked: dict[str, str | None] = {}


def check() -> None:
    """Raise SandboxUnavailable, with the reason, unless a sandboxed Python runs here."""
    if "result" not in _checked:
        reason = None
        try:
            with tempfile.TemporaryDirectory(prefix="ag-") as tmp:
                cmd = command([sys.executable, "-c", "import importlib.util as u; assert u.find_spec('glowcourse'); "
                               "open('ok', 'w').write('1')"], Path(tmp), replace(Limits(), notebook_timeout=60))
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
                if proc.returncode != 0 or not (Path(tmp) / "ok").exists():
                    reason = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        except (SandboxUnavailable, OSError, subprocess.SubprocessError) as err:
            reason = str(err)
        _checked["result"] = reason
    if _checked["result"]:
        raise SandboxUnavailable(
            f"the grading sandbox does not work here: {_checked['result']}.\n"
            "Student code must not run as you: install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; "
            "the README's set-up command does it), or, only for trusted notebooks, pass --no-sandbox.")


class SandboxKernelClient(AsyncKernelClient):
    """jupyter_client's client, ready as soon as the kernel has answered ``kernel_info`` and IOPub
    delivers, as jupyter_client's is; without its last step, which drains IOPub until it has
    been silent for 0.2 s (the kernel's start-up status messages make that about 0.3 s a kernel).
    What is still on its way belongs to the ``kernel_info`` request, and nbclient matches every
    message to its own request."""

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
        while True:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except Empty:
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                try:
                    await self.iopub_channel.get_msg(timeout=0.2)
                except Empty:
                    pass  # IOPub not connected yet: ask again
                else:
                    self._handle_kernel_info_reply(reply)
                    break
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:g} seconds")
        while True:  # what has already arrived
            try:
                await self.iopub_channel.get_msg(timeout=0)
            except Empty:
                break

    wait_for_ready = _async_wait_for_ready


class SandboxKernelManager(AsyncKernelManager):
    """An ``AsyncKernelManager`` whose kernel runs in the sandbox (see the module docstring)."""

    limits = Instance(Limits, args=(), help="The limits the kernel runs under (limits.py); "
                      "limits.sandbox False runs it as the grading user.").tag(config=True)

    _scratch: Path | None = None
    _cgroup: Path | None = None
    spare = None  # a warm.Spare this manager adopted

    @default("client_factory")
    def _client_factory_default(self):
        return SandboxKernelClient

    async def _async_pre_start_kernel(self, **kw):
        self.spare = warm.take_spare(self.limits) if self.limits.sandbox and self.provisioner is None else None
        if self.spare is not None:  # forked ahead, with its folders and connection file (warm.py)
            self._scratch, self._cgroup = self.spare.scratch, self.spare.cgroup
            self.connection_file = self.spare.connection_file
            self.load_connection_file()
            self._connection_file_written = True
            _live[id(self)] = (self._scratch, self._cgroup)
        elif self.limits.sandbox:
            self._scratch = Path(tempfile.mkdtemp(prefix="ag-"))
            (self._scratch / "work").mkdir()
            (self._scratch / "ipc").mkdir()
            # Unix sockets in a folder the sandbox shares: no TCP, so no network namespace needed.
            self.transport = "ipc"
            self.ip = str(self._scratch / "ipc" / "k")
            self.connection_file = str(self._scratch / "ipc" / "kernel.json")
            self._cgroup = pids_cgroup(self.limits.processes)
            _live[id(self)] = (self._scratch, self._cgroup)
        if self.limits.sandbox:
            kw.pop("cwd", None)
            # ipykernel's start-up notes would bury the grading progress.
            kw.setdefault("stdout", subprocess.DEVNULL)
            kw.setdefault("stderr", subprocess.DEVNULL)
            if self.provisioner is None and (self.spare is not None or warm.template_for(self.limits) is not None):
                self.kernel_id = self.kernel_id or str(uuid.uuid4())
                self.provisioner = warm.WarmProvisioner(kernel_id=self.kernel_id, kernel_spec=self.kernel_spec,
                                                        parent=self)
        else:
            kw["env"] = {**(kw.get("env") or os.environ), **thread_env(self.limits)}
        return await super()._async_pre_start_kernel(**kw)

    @property
    def warm_scratch(self) -> Path | None:
        return self._scratch

    def warm_request(self) -> dict:
        """What the warm template needs to fork this kernel (``warm.py``)."""
        return warm.request(self.limits, self._scratch, self.connection_file, cgroup=self._cgroup)

    def format_kernel_cmd(self, extra_arguments=None):
        argv = super().format_kernel_cmd(extra_arguments)
        if not self.limits.sandbox:
            return argv
        return command(argv, self._scratch / "work", self.limits, cgroup=self._cgroup, shared=[str(self._scratch / "ipc")])

    async def _async_wait(self, pollinterval: float = 0.01) -> None:
        # jupyter_client polls a killed kernel every 100 ms until it is gone; it is gone at once,
        # and grading waits for one per submission.
        await super()._async_wait(pollinterval=pollinterval)

    async def _async_interrupt_kernel(self) -> None:
        # A signal to the launcher's process group would stop bubblewrap itself (and the
        # kernel with it); ask ipykernel over its control channel to interrupt itself instead.
        if self.limits.sandbox and self.has_kernel:
            msg = self.session.msg("interrupt_request", content={})
            self._connect_control_socket()
            self.session.send(self._control_socket, msg)
            return
        await super()._async_interrupt_kernel()

    interrupt_kernel = _async_interrupt_kernel

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            _live.pop(id(self), None)
            remove_cgroup(self._cgroup)
            self._cgroup = None
            if self._scratch is not None:
                shutil.rmtree(self._scratch, ignore_errors=True)
                self._scratch = None
