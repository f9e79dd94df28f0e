"""The warm template: a process that has imported what every notebook imports, and forks kernels.

Starting a Jupyter kernel and importing torch, numpy, matplotlib and ``glowcourse`` costs about
two seconds, the same two seconds for every submission. This process pays it once per grading
worker, then, for each submission, forks a child that builds a fresh sandbox around itself and
becomes that submission's kernel. Student code never runs in this process: it only forks.

It runs as its own program (``python -I template.py``, started by ``warm.py``), imports nothing
of the autograder, and speaks JSON lines on stdin/stdout:

- it prints ``{"ready": ...}`` once its imports are done;
- each request ``{"connection_file", "scratch", "readable", "env", "threads", "memory_mb",
  "cpu_s", "processes", "timeout", "cgroup", "spare"}`` gets ``{"pid": P}``: P is the kernel's
  supervisor. A ``spare`` kernel's wall clock starts when P gets SIGUSR1 (it is handed out).

A fork is isolated as ``sandbox.py``'s bubblewrap sandbox is, with the same system calls
(``unshare``, ``mount``, ``pivot_root``), made here because a fork cannot exec bubblewrap and
keep its imports:

- the supervisor (P) joins the pids cgroup, then makes new user, mount, pid, network, IPC and
  UTS namespaces (uid 65534 inside), and kills everything after ``timeout`` seconds;
- its child, pid 1 of the new pid namespace, builds the root: a read-only tmpfs holding
  read-only binds of ``readable`` (system libraries, Python, glowcourse), a minimal ``/dev``,
  a fresh ``/proc``, an empty ``/tmp``, the scratch ``work`` folder at ``/tmp/work`` and the
  ``ipc`` folder (the kernel's Unix sockets); it pivots into it and reaps orphans;
- its child, the kernel, sets the rlimits (address space, CPU seconds, processes, no core
  files), drops every capability (and sets no-new-privileges), clears the environment to
  ``env`` and starts ipykernel on ``connection_file``.

When one of the three dies, the next dies with it (``PR_SET_PDEATHSIG``); when pid 1 dies,
the kernel kills every process of the namespace: nothing a submission starts outlives it.
A failure while isolating is written to ``<scratch>/ipc/launch-error.txt``.
"""
import ctypes
import json
import os
import resource
import signal
import sys
import time
import traceback

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MNT_DETACH = 2
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_NO_NEW_PRIVS, PR_CAP_AMBIENT = 1, 4, 24, 38, 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(os.uname().machine)
SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(os.uname().machine)
WORK = "/tmp/work"
SPARE_WAIT = 3600  # seconds a spare kernel may wait to be handed out
DEVICES = ["null", "zero", "full", "random", "urandom", "tty"]
# statvfs flags that a remount inside a user namespace must keep (the kernel locks them)
LOCKED = [(os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
          (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME), (os.ST_RELATIME, MS_RELATIME)]

libc = ctypes.CDLL(None, use_errno=True)


def _call(name, *args):
    if getattr(libc, name)(*args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{name}{tuple(a.decode() if isinstance(a, bytes) else a for a in args)}: {os.strerror(err)}")


def _syscall(number, *args):
    if libc.syscall(number, *args) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"syscall {number}: {os.strerror(err)}")


def mount(source, target, fstype, flags, data=None):
    _call("mount", source and source.encode(), target.encode(), fstype and fstype.encode(), ctypes.c_ulong(flags),
          data and data.encode())


def bind_readonly(source: str, target: str) -> None:
    """``source`` visible read-only at ``target`` (which exists), as bubblewrap's ``--ro-bind``."""
    mount(source, target, None, MS_BIND | MS_REC)
    locked = os.statvfs(target).f_flag
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY
    for st, ms in LOCKED:
        if locked & st:
            flags |= ms
    mount(None, target, None, flags)


def _mount_point(path: str, like: str) -> None:
    """An empty directory or file at ``path`` to mount ``like`` on; a symlink stays a symlink."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if os.path.islink(like):
        os.symlink(os.readlink(like), path)
    elif os.path.isdir(like):
        os.makedirs(path, exist_ok=True)
    else:
        open(path, "w").close()


def build_root(root: str, req: dict) -> None:
    """Mount the sandbox's file system under ``root`` and make it ``/`` (see the module docstring)."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing mounted here propagates out
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
    os.makedirs(root + "/tmp")
    mount("tmpfs", root + "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for path in req["readable"]:  # after /tmp: a checkout or venv under /tmp lands on the tmpfs
        _mount_point(root + path, path)
        if not os.path.islink(path):
            bind_readonly(path, root + path)
    os.makedirs(root + "/dev")
    mount("tmpfs", root + "/dev", "tmpfs", MS_NOSUID, "mode=0755")
    for name in DEVICES:
        if os.path.exists("/dev/" + name):
            open(f"{root}/dev/{name}", "w").close()
            mount("/dev/" + name, f"{root}/dev/{name}", None, MS_BIND)
    os.makedirs(root + "/dev/shm")
    mount("tmpfs", root + "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    for name, target in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")]:
        os.symlink(target, f"{root}/dev/{name}")
    os.makedirs(root + "/proc")
    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    scratch = req["scratch"]
    for inside, outside in [(WORK, scratch + "/work"), (scratch + "/ipc", scratch + "/ipc")]:
        os.makedirs(root + inside, exist_ok=True)
        mount(outside, root + inside, None, MS_BIND)
    os.chdir(root)
    _syscall(SYS_PIVOT_ROOT, b".", b".")  # the old root ends up under the new one...
    _call("umount2", b".", MNT_DETACH)     # ...and is detached: nothing of it stays reachable
    os.chdir("/")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def set_limits(req: dict) -> None:
    """The kernel's rlimits: address space, CPU seconds, processes, no core files."""
    mem = req["memory_mb"] * 2**20
    for what, value in [(resource.RLIMIT_AS, mem), (resource.RLIMIT_CPU, req["cpu_s"]),
                        (resource.RLIMIT_NPROC, req["processes"]), (resource.RLIMIT_CORE, 0)]:
        resource.setrlimit(what, (value, value))


def drop_capabilities() -> None:
    """No capability left, in this user namespace either, and none can come back (no-new-privileges):
    the read-only mounts cannot be remounted, nothing can be mounted or unshared."""
    _call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    _call("prctl", PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability this kernel knows
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()                 # effective, permitted, inheritable: all empty
    _syscall(SYS_CAPSET, header, data)


BLAS_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                "openblas_set_num_threads64_", "openblas_set_num_threads")


def set_blas_threads(n: int) -> None:
    """numpy's and scipy's OpenBLAS get ``n`` threads. The template loaded them with one (OpenBLAS
    starts its threads when loaded, and a fork keeps only the forking thread); OpenBLAS starts
    the others when asked, here, in the kernel."""
    with open("/proc/self/maps") as fh:
        libs = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and line.split()[-1][:1] == "/"})
    for path in libs:
        lib = ctypes.CDLL(path)
        setter = next((getattr(lib, name) for name in BLAS_SETTERS if hasattr(lib, name)), None)
        if setter is not None:
            setter(n)


def run_kernel(req: dict) -> None:
    """Become the kernel: environment, threads, fresh random state, then ipykernel. A probe
    (``req["probe"]``) writes what it sees to ``probe.json`` instead."""
    os.environ.clear()
    os.environ.update(req["env"])
    os.chdir(WORK)
    if req.get("probe"):
        try:
            open("/probe", "w").close()
            writable_root = True
        except OSError:
            writable_root = False
        def caps(pid):
            with open(f"/proc/{pid}/status") as fh:
                return int(next(line.split()[1] for line in fh if line.startswith("CapEff:")), 16)
        with open("probe.json", "w") as fh:
            json.dump({"uid": os.getuid(), "pid": os.getpid(), "cwd": os.getcwd(), "writable_root": writable_root,
                       "capabilities": caps("self"), "init_capabilities": caps(1),
                       "processes": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
                       "environ": open("/proc/self/environ", "rb").read().decode(errors="replace"),
                       "visible": [p for p in req.get("look_for", []) if os.path.exists(p)], "root": sorted(os.listdir("/"))}, fh)
        return
    sys.path[:] = [WORK] + [p for p in sys.path if p and os.path.isdir(p)]
    sys.argv = ["ipykernel_launcher", "-f", req["connection_file"]]
    import random

    import numpy
    import torch

    torch.set_num_threads(req["threads"])  # OpenMP read its variables when torch was imported here
    set_blas_threads(req["threads"])
    random.seed()
    numpy.random.seed()
    torch.seed()
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(["-f", req["connection_file"]])
    # What importing glowcourse does in a shell (its NameError hints), done here because it was
    # imported before this kernel's shell existed.
    import glowcourse.hints

    glowcourse.hints.install()
    app.start()


def _die_with_parent(parent: int | None = None) -> None:
    """SIGKILL when the parent (``parent``, or the current one) dies; exit now if it already has."""
    parent = os.getppid() if parent is None else parent
    _call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before we asked
        os._exit(1)


def _report_error(req: dict) -> None:
    try:
        with open(req["scratch"] + "/ipc/launch-error.txt", "a") as fh:
            fh.write(traceback.format_exc())
    except OSError:
        pass


def supervise(req: dict) -> None:
    """The forked child: namespaces, then pid 1 and the kernel (see the module docstring). Never returns."""
    code = 1
    handed_out = []
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the template ignores it; here children are waited for
        # A spare kernel (forked ahead of its submission) starts its clock when it is handed out
        # (SIGUSR1, ignored by the template until this handler is in place); until then it may
        # wait an hour.
        signal.signal(signal.SIGUSR1, lambda *_: (handed_out.append(1), signal.alarm(max(1, int(req["timeout"])))))
        _die_with_parent()
        os.setsid()
        null = os.open("/dev/null", os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.closerange(3, resource.getrlimit(resource.RLIMIT_NOFILE)[1])  # the template's pipes included
        if req.get("cgroup"):
            with open(req["cgroup"] + "/cgroup.procs", "w") as fh:
                fh.write(str(os.getpid()))
        uid, gid = os.getuid(), os.getgid()
        os.makedirs(req["scratch"] + "/root", exist_ok=True)
        _call("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)
        for name, text in [("setgroups", "deny"), ("uid_map", f"65534 {uid} 1"), ("gid_map", f"65534 {gid} 1")]:
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
        init = os.fork()
        if init == 0:
            pid_one(req)
        signal.signal(signal.SIGALRM, lambda *_: os.kill(init, signal.SIGKILL))
        signal.alarm(SPARE_WAIT if req.get("spare") and not handed_out else max(1, int(req["timeout"])))
        while True:
            try:
                _, status = os.waitpid(init, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status) & 0xFF
    except BaseException:
        _report_error(req)
    os._exit(code)


def pid_one(req: dict) -> None:
    """Pid 1 of the sandbox: build the root, start the kernel, reap orphans until the kernel exits."""
    code = 1
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)  # the supervisor's, not the sandbox's
        _die_with_parent()
        build_root(req["scratch"] + "/root", req)
        libc.sethostname(b"sandbox", 7)
        drop_capabilities()
        _call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)  # not to be ptraced by the kernel below
        kernel = os.fork()
        if kernel == 0:
            try:
                _die_with_parent()
                set_limits(req)
                drop_capabilities()
                run_kernel(req)
                os._exit(0)
            except BaseException:
                _report_error(req)
                os._exit(1)
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == kernel:
                code = os.waitstatus_to_exitcode(status) & 0xFF
                break
    except BaseException:
        _report_error(req)
    os._exit(code)


def warm_up() -> list[str]:
    """Import what the notebooks import (once, here): the forks inherit it."""
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    import importlib
    import pkgutil

    modules = ["numpy", "scipy", "scipy.linalg", "torch", "torch.nn", "matplotlib", "matplotlib.pyplot",
               "IPython", "ipykernel.kernelapp", "ipykernel.ipkernel", "matplotlib_inline.backend_inline", "glowcourse",
               # what ipykernel imports as it starts (its debugger, history database, ...)
               "ipykernel.zmqshell", "ipykernel.debugger", "debugpy", "sqlite3", "pdb", "faulthandler", "code",
               "mimetypes"]
    for name in modules:
        importlib.import_module(name)
    import glowcourse

    for info in pkgutil.walk_packages(glowcourse.__path__, "glowcourse."):
        importlib.import_module(info.name)
        modules.append(info.name)
    import matplotlib.font_manager  # noqa: F401  (the font list, built or read once)
    return modules


def main() -> None:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything an import prints must not reach the protocol
    if len(sys.argv) > 1:
        _die_with_parent(int(sys.argv[1]))
    start = time.perf_counter()
    modules = warm_up()
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:  # a fork copies one thread: locks held by the others would never be released
        out.write(json.dumps({"error": f"the template has {threads} threads after its imports, expected 1"}) + "\n")
        out.flush()
        return
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # a fork's until it sets its own (see supervise)
    out.write(json.dumps({"ready": round(time.perf_counter() - start, 3), "modules": len(modules)}) + "\n")
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            pid = os.fork()
            if pid == 0:
                supervise(req)
            out.write(json.dumps({"pid": pid}) + "\n")
        except Exception as err:  # a bad request: say so, keep serving
            out.write(json.dumps({"error": f"{type(err).__name__}: {err}"}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
