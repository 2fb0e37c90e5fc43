"""The compose cluster, black-box: started by ./run.sh before this suite runs (the container
stage of ./test.sh), reached only through the gateway's published ports and the engine's CLI.

Before the first test: the gateway must answer a read on each public port, the shell's environment must be the
one the cluster was started with (the tests run `docker compose up` and ./run.sh again), and
Coinbase is played by a container on the cluster's network, under the name btc_price's
COINBASE_API_URL gives (http://coinbase:8780 in the stage). Anything missing ends the run
with one line saying what (never a skip: the stage has just started the cluster).

The modules are numbered because the cluster's state is shared and lasting: the checks of
how the containers started come before anything restarts them, and the tests that use up
the 100 BTC cap come last (after them no order can be stored until the volumes are new).
"""

from collections.abc import Iterator

import pytest

from tests.cluster.cluster import Api
from tests.cluster.session import Cluster, running_cluster


@pytest.fixture(scope="session", autouse=True)
def cluster() -> Iterator[Cluster]:
    with running_cluster() as opened:
        yield opened


@pytest.fixture
def api(cluster: Cluster) -> Api:
    return cluster.api
