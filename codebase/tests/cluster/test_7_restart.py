"""`./run.sh --stop` then `./run.sh`: the data lives in named volumes, so every order is still
there afterwards, its key still replays it, and new orders flow again."""

import subprocess
import time

import pytest

from tests.cluster.cluster import REPO, Deadline, containers, converge, run
from tests.cluster.session import Cluster

STOP_SECONDS = 180
START_SECONDS = 420  # ./run.sh waits up to 180 s for readiness after `compose up`


@pytest.mark.timeout(900)
def test_run_sh_stop_then_run_sh_keeps_every_order(cluster: Cluster) -> None:
    api = cluster.api
    recent = {order["id"]: order for order in (api.created("EUR", f"{n}.50") for n in range(1, 6))}
    before = {order["id"]: order for order in converge(api, recent)}
    replay_of = next(iter(recent.values()))
    replay_before = api.put_order("EUR", replay_of["amount"], replay_of["idempotence_key"])
    assert replay_before.status_code == 200

    cluster.coinbase.disconnect()  # a container compose does not know would keep its network alive
    run(["./run.sh", "--stop"], timeout=STOP_SECONDS, env=cluster.env)
    assert not [c.name for c in containers(cluster.env) if c.running], "./run.sh --stop left containers running"

    start_again(cluster)
    api.reconnect()  # a new gateway: the old connections lead nowhere

    after = converge(api, before)
    assert len(after) >= len(before)
    replay_after = api.put_order("EUR", replay_of["amount"], replay_of["idempotence_key"])
    assert replay_after.status_code == 200
    assert replay_after.content == replay_before.content  # the write model kept it, key and all
    fresh = api.created("USD", "9.99")
    assert api.projected(fresh["id"]) == fresh


def start_again(cluster: Cluster) -> None:
    """./run.sh, putting Coinbase back on the cluster's network as soon as compose made it."""
    process = subprocess.Popen(
        ["./run.sh"], cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = Deadline(START_SECONDS)
    connected = False
    try:
        while process.poll() is None and not deadline.expired():
            if not connected and all(network_exists(n) for n in cluster.coinbase.networks):
                cluster.coinbase.connect()
                connected = True
            time.sleep(0.2)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=30)[0]
    assert process.returncode == 0, f"./run.sh exited {process.returncode}:\n{output[-4000:]}"
    if not connected:
        cluster.coinbase.connect()


def network_exists(name: str) -> bool:
    done = subprocess.run(["docker", "network", "inspect", name], capture_output=True, timeout=30, check=False)
    return done.returncode == 0
