"""Interoperation with the JavaScript WAMP clients from npm: autobahn-js and wampy.js.

The clients are pinned in tests/slow/js/package.json (installed by scripts/setup.sh with
`npm ci`). Each test runs tests/slow/js/wamp_client.js with one scenario against a real
ordo-entry over WebSocket; the script prints what it observed as JSON and the assertions are
here: exact payloads, order, PUBLISHED ids against EVENT ids, error URIs and arguments.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from harness import REALM, MqttClient, ident, ident_bytes

JS = Path(__file__).resolve().parent / "js"
SCRIPT = JS / "wamp_client.js"
EVENTS = 20

# autobahn-js ships JSON, msgpack (msgpack5) and CBOR serializers; wampy.js JSON, msgpack
# (msgpackr) and CBOR (cbor-x).
SERIALIZERS = ["json", "msgpack", "cbor"]
CLIENTS = ["autobahn", "wampy"]


@pytest.fixture(scope="session")
def node():
    path = shutil.which("node")
    if path is None:
        pytest.fail("node not found: install Node.js (20 or newer)", pytrace=False)
    for package in ("autobahn", "wampy", "ws", "websocket"):
        if not (JS / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"tests/slow/js/node_modules/{package} missing: run scripts/setup.sh", pytrace=False)
    return path


def run_js(node, ordo, scenario, serializer, *extra, url=None, timeout=40):
    """Run one scenario of wamp_client.js; return its JSON report (failing if it failed)."""
    proc = subprocess.run(
        [node, str(SCRIPT), scenario, url or ordo.wamp_url, REALM, serializer, *map(str, extra)],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no report from {scenario}: rc={proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    report = json.loads(lines[-1])
    assert report.get("ok") is True, f"{scenario} failed: {report.get('error')}\n{proc.stderr[-2000:]}"
    assert proc.returncode == 0
    return report


def expected_payload(i):
    """The payload wamp_client.js publishes as event i (kept in step with payload() there)."""
    return {
        "args": [i, f"event-{i}", {"nested": [1, 2.5, None, True, False]}],
        "kwargs": {"seq": i, "text": "żółw ✓ 🐢", "big": 9007199254740991, "neg": -42, "half": 0.5},
    }


def check_pubsub(report, publication_ids_visible):
    published, events = report["published"], report["events"]
    # Every publication acknowledged, with the permanent ids in increasing order.
    assert len(published) == EVENTS
    assert all(isinstance(p, int) and p > 0 for p in published)
    assert published == sorted(published) and len(set(published)) == EVENTS
    # Every event exactly once, in publication order, with the payload unchanged.
    assert [{"args": e["args"], "kwargs": e["kwargs"]} for e in events] == [
        expected_payload(i) for i in range(EVENTS)
    ]
    if publication_ids_visible:
        # The EVENT's publication id is the id PUBLISHED gave the publisher.
        assert [e["publication"] for e in events] == published


def check_rpc(report, callee):
    assert report["results"] == [
        {"args": [3], "kwargs": {"echo": {"a": 1, "b": 2, "note": "ü"}, "callee": callee}},
        {"args": [42], "kwargs": {"echo": {"a": 40, "b": 2, "note": "ü"}, "callee": callee}},
        {"args": [-2.5], "kwargs": {"echo": {"a": -5, "b": 2.5, "note": "ü"}, "callee": callee}},
    ]
    assert report["errors"] == [
        {"error": "com.ordo.error.custom", "args": ["bad", 7], "kwargs": {"why": "because"}},
        {"error": "wamp.error.no_such_procedure", "args": [], "kwargs": {}},
    ]


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("client", CLIENTS)
def test_pubsub(node, ordo, client, serializer):
    report = run_js(node, ordo, f"{client}-pubsub", serializer)
    # autobahn-js hands the subscriber EVENT's publication id; wampy.js does not expose it.
    check_pubsub(report, publication_ids_visible=client == "autobahn")


@pytest.mark.parametrize("serializer", SERIALIZERS)
@pytest.mark.parametrize("client", CLIENTS)
def test_rpc(node, ordo, client, serializer):
    report = run_js(node, ordo, f"{client}-rpc", serializer)
    check_rpc(report, callee=client)


@pytest.mark.parametrize("scenario", ["pubsub", "rpc"])
def test_autobahn_js_over_rawsocket(node, ordo, scenario):
    """autobahn-js's Node RawSocket transport (JSON: the only serializer it has there)."""
    report = run_js(node, ordo, f"autobahn-{scenario}", "json", url=f"tcp://127.0.0.1:{ordo.rawsocket_port}")
    if scenario == "pubsub":
        check_pubsub(report, publication_ids_visible=True)
    else:
        check_rpc(report, callee="autobahn")


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_pubsub_between_autobahn_js_and_wampy(node, ordo, serializer):
    report = run_js(node, ordo, "cross-pubsub", serializer)
    check_pubsub(report["autobahn_to_wampy"], publication_ids_visible=False)
    check_pubsub(report["wampy_to_autobahn"], publication_ids_visible=True)


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
def test_rpc_between_autobahn_js_and_wampy(node, ordo, serializer):
    report = run_js(node, ordo, "cross-rpc", serializer)
    check_rpc(report["autobahn_calls_wampy"], callee="wampy")
    check_rpc(report["wampy_calls_autobahn"], callee="autobahn")


def test_mqtt_publisher_to_autobahn_js_subscriber_in_order(node, ordo):
    """MQTT QoS 1 publications reach an autobahn-js subscriber once each, in order."""
    n = 50
    proc = subprocess.Popen(
        [node, str(SCRIPT), "autobahn-subscribe", ordo.wamp_url, REALM, "msgpack", "ordo.js.mqtt", str(n)],
        cwd=JS,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    mqtt = None
    try:
        ready = proc.stdout.readline()
        assert json.loads(ready) == {"ready": True}, ready + proc.stderr.read()
        mqtt = MqttClient(ordo.mqtt_port, client_id="js-mqtt-pub").connect()
        mids = [mqtt.publish("ordo/js/mqtt", ident_bytes("mqtt", i), qos=1) for i in range(n)]
        assert mqtt.wait_acked(mids, 20)
        out, err = proc.communicate(timeout=40)
        report = json.loads(out.strip().splitlines()[-1])
        assert report.get("ok") is True, f"{report.get('error')}\n{err[-2000:]}"
        events = report["events"]
        assert [(e["args"], e["kwargs"]) for e in events] == [([ident("mqtt", i)], {}) for i in range(n)]
        ids = [e["publication"] for e in events]
        assert ids == sorted(ids) and len(set(ids)) == n
        assert all(e["topic"] in (None, "ordo.js.mqtt") for e in events)
    finally:
        if mqtt is not None:
            mqtt.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def test_client_failure_is_reported(node, ordo):
    """The driver itself fails loudly: a call to an unknown scenario is an error, not a pass."""
    proc = subprocess.run(
        [node, str(SCRIPT), "no-such-scenario", ordo.wamp_url, REALM, "json"],
        cwd=JS, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is False


def test_connection_to_a_non_wamp_port_fails(node, ordo):
    """A transport that never opens a session is a failed run, not a silent pass."""
    proc = subprocess.run(
        [node, str(SCRIPT), "autobahn-pubsub", f"ws://127.0.0.1:{ordo.mqtt_port}/", REALM, "json"],
        cwd=JS, capture_output=True, text=True, timeout=40,
        env={"WAMP_JS_TIMEOUT_MS": "8000", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 1, proc.stdout
    assert json.loads(proc.stdout.strip().splitlines()[-1])["ok"] is False
