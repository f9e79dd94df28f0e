"""Set-up files agree with each other and with the README."""
import os
import re
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


def test_setup_script_installs_the_sandbox_and_the_requirements():
    setup = (ROOT / "scripts" / "setup").read_text()
    assert os.access(ROOT / "scripts" / "setup", os.X_OK)
    assert "apt-get install" in setup and "bubblewrap" in setup and "command -v bwrap" in setup
    assert "python3 -m venv .venv" in setup and "pip install -q -r requirements.txt" in setup


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
