"""The README's two set-up commands, as a new user on Debian 12 / Ubuntu 24.04 runs them.

Those systems refuse ``pip install`` outside a virtualenv (PEP 668); ``PIP_REQUIRE_VIRTUALENV``
makes any pip refuse the same way, so the commands are run under it (issue 8, point 9).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

import xio

from .conftest import LISTENING, ROOT, wait_until

SETUP = re.search(r"## Set up \(two commands\)\n(.*?)\n## ", (ROOT / "README.md").read_text(), re.S)
DEMO_COMMAND, TEST_COMMAND = re.findall(r"```sh\n(.*?)\n```", SETUP[1], re.S)


def test_ci_runs_the_readme_test_command_word_for_word():
    assert (ROOT / ".ci/run").read_text().strip().splitlines()[-1] == TEST_COMMAND


def test_scripts_check_installs_into_the_virtualenv_only():
    script = (ROOT / "scripts/check").read_text()
    pythons = re.findall(r"^\s*(\S+) -m (pip|ruff|pytest)\b", script, re.M)
    assert [tool for _, tool in pythons] == ["pip", "ruff", "ruff", "pytest"]
    assert {python for python, _ in pythons} == {'"$venv/bin/python"'}


@pytest.mark.slow
def test_the_readme_demo_command_works_where_pip_needs_a_virtualenv(tmp_path):
    clone = tmp_path / "xio"
    shutil.copytree(ROOT, clone, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info",
                    "__pycache__", ".*_cache", ".hypothesis"))  # fmt: skip
    python_dir = os.path.dirname(sys.executable)  # "python3" is this interpreter, as in CI
    env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "LANG", "LC_", "HOME"))}
    env.update(PIP_REQUIRE_VIRTUALENV="1", PATH=f"{python_dir}:{os.environ['PATH']}")
    log = tmp_path / "demo.log"
    # --port 0 at the end: the same command on any free port (7700 may be taken here).
    with log.open("wb") as out:
        demo = subprocess.Popen(["sh", "-c", f"{DEMO_COMMAND} --port 0"], cwd=clone, env=env,
                                stdout=out, stderr=out, start_new_session=True)  # fmt: skip
    try:

        def started():
            if demo.poll() is not None:
                pytest.fail(f"the demo command ended:\n{log.read_text(errors='replace')}")
            return LISTENING.search(log.read_text(errors="replace"))

        url = wait_until(started, timeout=240, what="the demo to start")[1]
        hello = xio.client(url).get("/demo/")
        assert hello.status == 200 and hello.content["served_by"] == "demo"
        assert (clone / ".venv/bin/xio-node").exists()
    finally:
        os.killpg(demo.pid, signal.SIGTERM)  # sh and the xio-node it started
        demo.wait(10)
    assert "Could not find an activated virtualenv" not in log.read_text(errors="replace")
