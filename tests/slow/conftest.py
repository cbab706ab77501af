"""Fixtures for the slow end-to-end suite: a real ordo-entry per test, and its clients."""

from __future__ import annotations

import shutil

import pytest

from cluster import OrdoCluster
from harness import AsyncioThread, MqttClient, OrdoServer, WampClient, binary_path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture(scope="session")
def ordo_binary():
    path = binary_path()
    if not path.is_file():
        pytest.fail(
            f"ordo-entry not found at {path}: build it with `cargo build --release -p ordo-entry`, "
            "or set ORDO_ENTRY (or CARGO_TARGET_DIR) to where it is",
            pytrace=False,
        )
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} not found: run scripts/setup.sh", pytrace=False)
    return path


@pytest.fixture
def ordo(ordo_binary, tmp_path, request):
    """A running `ordo-entry --standalone` on free ports with a fresh data dir.

    The same object restarts (`restart`, `stop` + `start`) or kill -9s (`kill9`) it on the same
    data dir and ports. Torn down with SIGKILL whatever state it is in; on failure the end of its
    log is printed.
    """
    server = OrdoServer(ordo_binary, tmp_path / "data", tmp_path)
    server.start()
    yield server
    still_alive = server.alive()
    server.kill9()
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print(f"\nordo-entry alive at teardown: {still_alive}\n{server.log_tail()}")


@pytest.fixture
def cluster(ordo_binary, tmp_path, request):
    """A running 3 sync + 3 ndb + 3 entry cluster (tests/slow/cluster.py) on free ports.

    Torn down with SIGKILL; on failure the end of every node's log is printed.
    """
    c = OrdoCluster(tmp_path / "cluster")
    try:
        c.start()
    except BaseException:
        c.kill_all()
        raise
    yield c
    c.kill_all()
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed:
        print("\n" + c.log_tails())


@pytest.fixture
def aio():
    loop = AsyncioThread()
    yield loop
    loop.close()


@pytest.fixture
def clients(aio):
    """Factory for MQTT and WAMP clients; every client it made is closed at teardown."""
    made = []

    class Factory:
        def mqtt(self, server, client_id="", clean_session=True, inflight=100, connect=True) -> MqttClient:
            c = MqttClient(server.mqtt_port, client_id=client_id, clean_session=clean_session, inflight=inflight)
            made.append(c)
            return c.connect() if connect else c

        def wamp(self, server, serializer="json") -> WampClient:
            c = WampClient(aio, server.wamp_url, serializer=serializer)
            made.append(c)
            return c.connect()

    yield Factory()
    for c in reversed(made):
        try:
            c.close()
        except Exception:
            pass
