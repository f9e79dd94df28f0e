"""Set-up files agree with each other and with the README."""
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from autograder import course

ROOT = course.ROOT
CONDA_NAMES = {"pytorch": "torch"}  # conda-forge name -> PyPI name


def requirement_specs(lines):
    specs = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if not line:
            continue
        if line.startswith("-e"):
            specs["-e ."] = ""
            continue
        m = re.match(r"^([A-Za-z0-9_.\-]+)\s*(.*)$", line)
        name = CONDA_NAMES.get(m.group(1).lower(), m.group(1).lower())
        specs[name] = m.group(2).replace(" ", "")
    return specs


def test_environment_yml_and_requirements_list_the_same_packages():
    pip = requirement_specs((ROOT / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_lines, pip_lines = [], []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_lines += dep["pip"]
        elif not dep.startswith(("python", "pip")) or dep.startswith("python-"):
            conda_lines.append(dep.replace("==", "==", 1))
    conda = requirement_specs(conda_lines + pip_lines)
    assert conda == pip


def readme_commands():
    text = (ROOT / "README.md").read_text()
    head = "\n".join(text.splitlines()[:25])
    return re.findall(r"^\s*(scripts/setup && .+)$", head, re.M)


def test_readme_starts_with_the_demo_and_test_commands_and_ci_runs_the_test_one():
    commands = readme_commands()
    assert len(commands) == 2, commands
    demo, tests = commands
    assert demo.endswith("-m autograder demo") and "pytest" in tests
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci


def run_setup(tmp_path, *, uid: int, tools: tuple[str, ...], venv: bool = False):
    """Run scripts/setup in a copy of the repository with stand-ins for ``tools`` (apt-get, bwrap,
    sudo, python3 and the venv's pip) that record their calls, with a ``.venv`` already there or
    not; return (process, calls)."""
    repo, bindir, log = tmp_path / "repo", tmp_path / "bin", tmp_path / "calls"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "setup", repo / "scripts" / "setup")  # keeps its mode: it must be executable
    bindir.mkdir()
    for real in ("bash", "sh", "dirname", "mkdir", "chmod"):
        (bindir / real).symlink_to(shutil.which(real))

    def stand_in(path, name, then=""):
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n{then}')
        path.chmod(0o755)

    stand_in(bindir / "id", "id", f"echo {uid}\n")
    pip = "mkdir -p .venv/bin\n" + f"printf '#!/bin/sh\\necho \"pip $*\" >> \"{log}\"\\n' > .venv/bin/pip\nchmod +x .venv/bin/pip\n"
    for tool in tools:
        stand_in(bindir / tool, tool, {"sudo": '"$@"\n', "python3": pip}.get(tool, ""))
    if venv:
        (repo / ".venv" / "bin").mkdir(parents=True)
        stand_in(repo / ".venv" / "bin" / "python", "venv python")
        stand_in(repo / ".venv" / "bin" / "pip", "pip")
    proc = subprocess.run([str(repo / "scripts" / "setup")], env={"PATH": str(bindir)}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=30)
    calls = [line for line in log.read_text().splitlines() if not line.startswith("id ")] if log.exists() else []
    return proc, calls


VENV = ["python3 -m venv .venv", "pip install -q -r requirements.txt"]


def test_setup_installs_bubblewrap_as_root_then_the_requirements(tmp_path):
    proc, calls = run_setup(tmp_path, uid=0, tools=("apt-get", "python3"))
    assert proc.returncode == 0, proc.stderr
    assert calls == ["apt-get update -qq", "apt-get install -y -qq bubblewrap", *VENV]


def test_setup_installs_bubblewrap_with_sudo_as_a_user(tmp_path):
    proc, calls = run_setup(tmp_path, uid=1000, tools=("sudo", "apt-get", "python3"))
    assert proc.returncode == 0, proc.stderr
    assert calls == ["sudo apt-get update -qq", "apt-get update -qq", "sudo apt-get install -y -qq bubblewrap",
                     "apt-get install -y -qq bubblewrap", *VENV]


def test_setup_leaves_an_installed_bubblewrap_alone(tmp_path):
    proc, calls = run_setup(tmp_path, uid=0, tools=("bwrap", "apt-get", "python3"))
    assert proc.returncode == 0, proc.stderr
    assert calls == VENV


def test_setup_run_again_updates_the_existing_venv(tmp_path):
    proc, calls = run_setup(tmp_path, uid=1000, tools=("bwrap", "python3"), venv=True)
    assert proc.returncode == 0, proc.stderr
    assert calls == VENV[1:]


def test_setup_without_a_way_to_install_bubblewrap_says_so_and_sets_up_the_rest(tmp_path):
    proc, calls = run_setup(tmp_path, uid=1000, tools=("python3",))
    assert proc.returncode == 0, proc.stderr
    assert "bubblewrap" in proc.stderr and "--no-sandbox" in proc.stderr
    assert calls == VENV


@pytest.mark.slow
def test_wheel_carries_the_embedded_data(tmp_path):
    # What Colab's setup cell installs must include the .npz files.
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = Path(tmp_path).glob("glowcourse-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("glowcourse/data/digits.npz", "glowcourse/data/mnist5k.npz", "glowcourse/data/README.md", "glowcourse/checks/__init__.py", "glowcourse/checks/capstone.py"):
        assert f in names
    assert not any(n.startswith(("autograder/", "tests/", "solutions/")) for n in names)
