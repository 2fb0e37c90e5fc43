"""The HA cluster (docker-compose.ha.yml), black-box: started by scripts/ha_stage.sh (after the
container stage), reached through the gateway's published ports and the engine's CLI.

Collected only in that stage (BTC_ORDERS_HA_STAGE=1): anywhere else these modules are not
collected at all, since they kill nodes of a cluster that only the stage starts. The modules are
numbered: the topology is checked first, then a RabbitMQ node is lost, then the write model's
primary, then the old primary comes back.
"""

import os
from collections.abc import Iterator

import pytest

from tests.cluster.cluster import Api
from tests.cluster.session import Cluster, running_cluster

if os.environ.get("BTC_ORDERS_HA_STAGE") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session", autouse=True)
def cluster() -> Iterator[Cluster]:
    with running_cluster() as opened:
        yield opened


@pytest.fixture
def api(cluster: Cluster) -> Api:
    return cluster.api
