"""xio.node() in a script of one's own: what its author sees, patched or not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from .conftest import ROOT

APP = """
import xio

app = xio.app("shop")
app.bind("www/price", lambda req: {"price": 3})
"""


def run_script(tmp_path, source: str) -> subprocess.CompletedProcess:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)  # fmt: skip


def test_an_unpatched_script_is_told_what_to_call_first(tmp_path):
    unpatched = """
node = xio.node(apps=[app])
print(xio.client(node.url, timeout=5).get("/shop/price").content)  # hung when allowed
"""
    done = run_script(tmp_path, APP + unpatched)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("xio.errors.ConfigError: xio.node() runs on gevent")
    assert "'from gevent import monkey; monkey.patch_all(thread=False, queue=False)'" in last
    assert "at the top of the script" in last
    assert done.stdout == ""


def test_a_patched_script_embeds_nodes_that_answer_and_stay_linked(tmp_path):
    done = run_script(tmp_path, "from gevent import monkey; monkey.patch_all(thread=False, "
                      "queue=False)\n" + APP + """
import json
import time

first = xio.node("first", apps=[app])
second = xio.node("second", peers=[first.url])
deadline = time.monotonic() + 20
while not second.table.hosts_of("shop") and time.monotonic() < deadline:
    time.sleep(0.05)  # patched: the nodes run meanwhile
link = second.links[first.id]
time.sleep(3)  # longer than the link timeout: the link lives on
print(json.dumps({
    "direct": xio.client(first.url, timeout=5).get("/shop/price").content,
    "via_second": xio.client(second.url, timeout=5).get("/shop/price").content,
    "same_link": second.links.get(first.id) is link,
    "url": first.url, "mdns": first.mdns is not None, "state_dir": first.config.state_dir,
}))
second.stop()
first.stop()
""")  # fmt: skip
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["direct"] == seen["via_second"] == {"price": 3}
    assert seen["same_link"] is True
    assert seen["url"].startswith("http://127.0.0.1:") and not seen["url"].endswith(":0")
    assert (seen["mdns"], seen["state_dir"]) == (False, None)
    assert not (tmp_path / ".local").exists()  # a throwaway identity: nothing written
