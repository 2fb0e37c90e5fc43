"""Schemathesis against the live OpenAPI document of every HTTP service.

Every operation of btc_price, create_buy_order and fetch_buy_orders goes
through schemathesis' phases: the documented examples, the coverage phase
(boundary values, missing and wrong-typed parameters, unexpected methods) and
fuzzing with valid (positive) and invalid (negative) requests generated from
the operation's own schema. The properties checked on every answer:

- never a 5xx: nothing is down here, so even the documented 503 is a failure;
- the status code, content type, headers and body are the documented ones;
- invalid input is refused with a 4xx.

Bounded and deterministic (schemathesis.toml beside this file: one worker,
deterministic generation, a fixed number of examples per operation). Run
through schemathesis' own command line, whose pytest plugin does not support
this pytest yet; a failure prints its report with a curl command to reproduce.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import Suite

CONFIG = Path(__file__).with_name("schemathesis.toml")
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


@pytest.mark.parametrize("service", ["btc_price", "create_buy_order", "fetch_buy_orders"])
def test_every_operation_conforms_to_its_schema(fuzz_suite: Suite, service: str, tmp_path: Path) -> None:
    url = fuzz_suite.service(service).url
    result = subprocess.run(
        [str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", f"{url}/openapi.json"],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,  # schemathesis writes nothing into the source tree
    )
    assert result.returncode == 0, f"schemathesis found failures in {service}:\n{result.stdout}\n{result.stderr}"
    # every operation of the document was tested
    summary = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", result.stdout)
    assert summary, result.stdout
    assert summary[1] == summary[2] == summary[3] != "0", result.stdout
