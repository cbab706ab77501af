"""Helpers for the slow suite: run the real `ordo-entry`, drive it with paho-mqtt, autobahn
(asyncio) and the mosquitto command-line tools.

Everything here talks to 127.0.0.1 only, and every wait is bounded in time.

Payload convention (common/src/message.rs): an MQTT payload that parses as JSON reaches a
WAMP subscriber as one positional argument holding that value; any other bytes as one binary
argument. A WAMP publication with a single argument reaches an MQTT subscriber as that
argument's JSON (a binary argument as its raw bytes). The tests identify a message by a small
JSON object {"pub": <publisher name>, "seq": <n>} sent that way from both sides.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import paho.mqtt.client as paho
import txaio

txaio.use_asyncio()

from autobahn.asyncio.wamp import ApplicationSession  # noqa: E402
from autobahn.asyncio.websocket import WampWebSocketClientFactory  # noqa: E402
from autobahn.wamp import message as wamp_message  # noqa: E402
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer  # noqa: E402
from autobahn.wamp.types import ComponentConfig, PublishOptions, SubscribeOptions  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
REALM = "realm1"
HOST = "127.0.0.1"


# --------------------------------------------------------------------------- small utilities


def binary_path() -> Path:
    """Return the ordo-entry binary the suite runs: $ORDO_ENTRY, else the release build."""
    explicit = os.environ.get("ORDO_ENTRY")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "release" / "ordo-entry"


def mount_tmpfs(path: Path, size: str) -> tuple[bool, str]:
    """Mount a tmpfs of `size` (e.g. "8m") at `path` (needs root); return whether it worked, and
    why not."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0, r.stderr.strip()


def _ephemeral_start() -> int:
    """The first port the kernel hands to outgoing connections (`ip_local_port_range`)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_HANDED_OUT: set[int] = set()


def free_port(avoid: Iterable[int] = (), kind: int = socket.SOCK_STREAM) -> int:
    """Return a port on 127.0.0.1 that was free a moment ago and is not handed out twice.

    It is picked below the kernel's ephemeral range: a port from that range (what binding to
    port 0 gives) can be taken by any client connection's local end while the node that
    listens on it restarts, and the restart then fails with `Address already in use`.
    """
    top = _ephemeral_start()
    low = max(1024, top - 16384)
    avoid = set(avoid) | _HANDED_OUT
    for _ in range(500):
        port = random.randrange(low, top)
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port found")


def wait_until(pred: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll `pred` until it is true or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def wait_quiet(count: Callable[[], int], quiet: float, timeout: float) -> int:
    """Wait until `count()` has not changed for `quiet` seconds (at most `timeout`); return it."""
    deadline = time.monotonic() + timeout
    last = count()
    changed = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = count()
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet:
            break
    return last


def ident(pub: str, seq: int) -> dict:
    """Return the JSON object that names message `seq` of publisher `pub`."""
    return {"pub": pub, "seq": seq}


def ident_bytes(pub: str, seq: int) -> bytes:
    return json.dumps(ident(pub, seq), separators=(",", ":")).encode()


def _as_key(obj: Any):
    if isinstance(obj, dict) and set(obj) == {"pub", "seq"} and isinstance(obj["seq"], int):
        return (obj["pub"], obj["seq"])
    return ("<unexpected>", repr(obj))


def key_from_mqtt(payload: bytes):
    """Return (publisher, seq) from an MQTT payload, or ('<unexpected>', repr) if it is not one."""
    try:
        return _as_key(json.loads(payload))
    except ValueError:
        return ("<unexpected>", repr(payload))


def key_from_wamp(args, kwargs):
    """Return (publisher, seq) from a WAMP event: exactly one argument holding the object."""
    if kwargs or not args or len(args) != 1:
        return ("<unexpected>", repr((args, kwargs)))
    return _as_key(args[0])


def duplicates(seq: Iterable) -> list:
    seen, dups = set(), []
    for x in seq:
        if x in seen:
            dups.append(x)
        seen.add(x)
    return dups


def per_publisher_order_violations(keys: Iterable) -> list:
    """Return (publisher, previous seq, seq) wherever a publisher's seq fails to increase."""
    last: dict = {}
    bad = []
    for pub, seq in keys:
        if pub in last and not seq > last[pub]:
            bad.append((pub, last[pub], seq))
        last[pub] = seq
    return bad


def not_increasing(ids: list) -> list:
    """Return (index, previous, id) wherever ids[i] <= ids[i-1]."""
    return [(i, ids[i - 1], ids[i]) for i in range(1, len(ids)) if not ids[i] > ids[i - 1]]


# --------------------------------------------------------------------------- the server


class Process:
    """One server process of the suite, restartable on the same ports and data.

    The command comes from `command()`; `start` waits until every TCP port in `tcp_ports`
    accepts. Each start writes its output to `<log_dir>/<log_name>-N.log`; the process runs in
    its own process group so that kill -9 takes everything it started.
    """

    def __init__(self, name: str, log_name: str, log_dir: Path, tcp_ports=()):
        self.name = name
        self.log_name = log_name
        self.log_dir = Path(log_dir)
        self.tcp_ports = list(tcp_ports)
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []
        self._log_file = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until its ports accept connections."""
        assert self.proc is None, f"{self.name} already running"
        log = self.log_dir / f"{self.log_name}-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self._log_file = open(log, "wb")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        env.setdefault("RUST_BACKTRACE", "1")
        env.setdefault("NO_COLOR", "1")  # plain log files
        self.proc = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        for port in self.tcp_ports:
            while True:
                if self.proc.poll() is not None:
                    rc = self.proc.returncode
                    self._reap()
                    raise RuntimeError(f"{self.name} exited with {rc} during start-up\n{self.log_tail()}")
                try:
                    with socket.create_connection((HOST, port), timeout=0.5):
                        break
                except OSError:
                    pass
                if time.monotonic() >= deadline:
                    self.kill9()
                    raise RuntimeError(f"{self.name} did not accept on port {port} in {timeout}s\n{self.log_tail()}")
                time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Send SIGTERM and wait; return the exit code, or None if it had to be killed."""
        assert self.proc is not None, f"{self.name} not running"
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None
        self._reap()
        return rc

    def kill9(self) -> None:
        """SIGKILL the process group and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        self._reap()

    def restart(self) -> int | None:
        """Stop gracefully (SIGTERM) and start again on the same data and ports."""
        rc = self.stop()
        self.start()
        return rc

    def _reap(self) -> None:
        self.proc = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.logs if p.exists())

    def log_tail(self, lines: int = 60) -> str:
        out = []
        for log in self.logs[-2:]:
            try:
                text = log.read_text(errors="replace").splitlines()
            except OSError:
                continue
            out.append(f"--- {log.name} (last {lines} lines) ---")
            out.extend(text[-lines:])
        return "\n".join(out)


class OrdoServer(Process):
    """One `ordo-entry --standalone` on fixed ports and one data dir, started and stopped at will.

    The ports are chosen once (bound to port 0 first) and kept across restarts so that clients
    can reconnect to the same address.
    """

    def __init__(self, binary: Path, data_dir: Path, log_dir: Path):
        self.binary = Path(binary)
        self.data_dir = Path(data_dir)
        self.mqtt_port = free_port()
        self.wamp_port = free_port(avoid=[self.mqtt_port])
        self.rawsocket_port = free_port(avoid=[self.mqtt_port, self.wamp_port])
        super().__init__("ordo-entry", "ordo", log_dir, [self.mqtt_port, self.wamp_port, self.rawsocket_port])

    @property
    def wamp_url(self) -> str:
        return f"ws://{HOST}:{self.wamp_port}/"

    def command(self) -> list[str]:
        return [
            str(self.binary),
            "--standalone",
            "--mqtt", f"{HOST}:{self.mqtt_port}",
            "--wamp", f"{HOST}:{self.wamp_port}",
            "--wamp-rawsocket", f"{HOST}:{self.rawsocket_port}",
            "--data-dir", str(self.data_dir),
        ]

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        super().start(timeout)


# --------------------------------------------------------------------------- MQTT (paho)


@dataclass
class MqttMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool


class QosPublisher(threading.Thread):
    """Publish numbered QoS 1 messages (`ident_bytes`) through `client` in a thread, at most
    `window` unacknowledged, until `limit`, `deadline` seconds, a stop or a lost connection."""

    def __init__(self, client, name: str, topic: str, window: int, limit: int = 1_000_000,
                 pace: float = 0.0, payload: int = 0, deadline: float = 120):
        super().__init__(daemon=True)
        self.client, self.name, self.topic, self.window = client, name, topic, window
        self.limit, self.pace, self.deadline = limit, pace, deadline
        self.pad = b" " * payload  # JSON allows trailing blanks: the payload still parses
        self.mid_seq: dict[int, int] = {}
        self.stop = threading.Event()
        self.error = None

    def run(self):
        c = self.client
        try:
            deadline = time.monotonic() + self.deadline
            for seq in range(self.limit):
                while len(self.mid_seq) - len(c.acked_mids) >= self.window and not self.stop.is_set():
                    if time.monotonic() > deadline or c.disconnected.is_set():
                        return
                    time.sleep(0.0005)
                if self.stop.is_set() or c.disconnected.is_set() or time.monotonic() > deadline:
                    return
                self.mid_seq[c.publish(self.topic, ident_bytes(self.name, seq) + self.pad, qos=1)] = seq
                if self.pace:
                    time.sleep(self.pace)
        except BaseException as e:  # reported by the test
            self.error = e

    def sent(self) -> set:
        return {(self.name, s) for s in self.mid_seq.values()}

    def acked(self) -> set:
        return {(self.name, self.mid_seq[m]) for m in set(self.client.acked_mids) if m in self.mid_seq}

    def finish(self) -> None:
        """Stop and join; fail the test if the thread hung or raised."""
        self.stop.set()
        self.join(15)
        assert not self.is_alive(), f"{self.name} did not stop"
        assert self.error is None, f"{self.name}: {self.error!r}"


class MqttClient:
    """A paho-mqtt 2.x client (MQTT 3.1.1) with its network loop on a background thread.

    Records received messages, acknowledged publications and connection events. paho's automatic
    reconnect is never relied on: close() stops the loop, and a new client reconnects.
    """

    def __init__(self, port: int, client_id: str = "", clean_session: bool = True, inflight: int = 100):
        self.port = port
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=clean_session,
            protocol=paho.MQTTv311,
        )
        self.client.max_inflight_messages_set(inflight)
        self.messages: list[MqttMessage] = []
        self.acked_mids: set[int] = set()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.connect_rc = None
        self.session_present = None
        self._subacks: dict[int, list] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    # callbacks run on paho's network thread
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        self.connect_rc = reason_code
        self.session_present = bool(flags.session_present)
        self.disconnected.clear()
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        self.connected.clear()
        self.disconnected.set()

    def _on_message(self, client, userdata, msg):
        self.messages.append(MqttMessage(msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain), bool(msg.dup)))

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        self.acked_mids.add(mid)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self._subacks[mid] = list(reason_codes)

    def connect(self, timeout: float = 10.0) -> "MqttClient":
        self.client.connect(HOST, self.port, keepalive=60)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.close()
            raise AssertionError(f"MQTT CONNACK not received within {timeout}s")
        assert not self.connect_rc.is_failure, f"MQTT CONNECT refused: {self.connect_rc}"
        return self

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe failed locally: {rc}"
        assert wait_until(lambda: mid in self._subacks, timeout), f"no SUBACK for {topic} within {timeout}s"
        codes = self._subacks[mid]
        assert all(not c.is_failure for c in codes), f"SUBACK refused {topic}: {codes}"
        assert all(c.value == qos for c in codes), f"SUBACK for {topic} granted {codes}, asked QoS {qos}"

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid

    def wait_acked(self, mids: Iterable[int], timeout: float) -> bool:
        mids = set(mids)
        return wait_until(lambda: mids <= self.acked_mids, timeout)

    def wait_messages(self, n: int, timeout: float) -> bool:
        return wait_until(lambda: len(self.messages) >= n, timeout)

    def close(self) -> None:
        try:
            if self.connected.is_set():
                self.client.disconnect()
                self.disconnected.wait(5)
        finally:
            self.client.loop_stop()


# --------------------------------------------------------------------------- WAMP (autobahn asyncio)


class AsyncioThread:
    """An asyncio event loop on its own thread; `run` executes a coroutine there and waits."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="asyncio", daemon=True)
        self._thread.start()

    def _main(self):
        asyncio.set_event_loop(self.loop)
        txaio.config.loop = self.loop
        self.loop.run_forever()

    def run(self, coro, timeout: float = 30.0):
        fut = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return fut.result(timeout)
        except TimeoutError:
            fut.cancel()
            raise

    def close(self):
        if self.loop.is_closed():
            return

        async def cancel_all():
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), timeout=5)
        except Exception:
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class WampEvent:
    publication: int
    args: list
    kwargs: dict
    topic: str | None
    subscription: int


class _Session(ApplicationSession):
    def __init__(self, config, owner: "WampClient"):
        super().__init__(config)
        self._owner = owner

    def onJoin(self, details):
        if not self._owner._joined.done():
            self._owner._joined.set_result(details)

    def onLeave(self, details):
        self._owner.left = details
        super().onLeave(details)

    def onDisconnect(self):
        self._owner.disconnected.set()
        if not self._owner._joined.done():
            self._owner._joined.set_exception(ConnectionError("WAMP transport closed before the session joined"))


def _with_extra_options(msg, extra: dict):
    """Make a SUBSCRIBE carry extra options (autobahn's SubscribeOptions has no `after`)."""
    base = type(msg)

    def marshal_options(self):
        opts = base.marshal_options(self)
        opts.update(extra)
        return opts

    msg.__class__ = type(base.__name__, (base,), {"__slots__": (), "marshal_options": marshal_options})


class WampClient:
    """An autobahn-python asyncio WAMP session (WebSocket, JSON or msgpack) joined to realm1.

    Methods are synchronous: they run on an AsyncioThread and wait.
    """

    def __init__(self, aio: AsyncioThread, url: str, serializer: str = "json", realm: str = REALM, ssl=None):
        self.aio = aio
        self.url = url
        self.ssl = ssl  # an ssl.SSLContext for wss:// URLs
        self.realm = realm
        self.serializer = {"json": JsonSerializer, "msgpack": MsgPackSerializer}[serializer]()
        self.events: list[WampEvent] = []
        self.session: _Session | None = None
        self.disconnected = threading.Event()
        self.left = None
        self._extra_subscribe: list[dict] = []

    def connect(self, timeout: float = 10.0) -> "WampClient":
        self.aio.run(self._connect(timeout), timeout + 5)
        return self

    async def _connect(self, timeout):
        loop = asyncio.get_running_loop()
        txaio.config.loop = loop
        self._joined = loop.create_future()
        self.session = _Session(ComponentConfig(realm=self.realm), self)
        factory = WampWebSocketClientFactory(lambda: self.session, url=self.url, serializers=[self.serializer])
        u = urlparse(self.url)
        await asyncio.wait_for(loop.create_connection(factory, u.hostname, u.port, ssl=self.ssl), timeout)
        await asyncio.wait_for(asyncio.shield(self._joined), timeout)
        transport = self.session._transport
        send = transport.send

        def send_with_options(msg):
            if isinstance(msg, wamp_message.Subscribe) and self._extra_subscribe:
                _with_extra_options(msg, self._extra_subscribe.pop(0))
            return send(msg)

        transport.send = send_with_options

    def _handler(self, *args, details=None, **kwargs):
        self.events.append(WampEvent(details.publication, list(args), dict(kwargs), details.topic, details.subscription.id))

    def subscribe(self, topic: str, after: int | None = None, match: str | None = None) -> int:
        """Subscribe; with `after`, ask for stored history after that id, then live events."""

        async def go():
            if after is not None:
                self._extra_subscribe.append({"after": after})
            sub = await self.session.subscribe(self._handler, topic, options=SubscribeOptions(match=match, details=True))
            return sub.id

        return self.aio.run(go(), 15)

    def publish(self, topic: str, *args, acknowledge: bool = True, **kwargs):
        """Publish one event; with acknowledge, return the PUBLISHED publication id."""

        async def go():
            res = self.session.publish(topic, *args, options=PublishOptions(acknowledge=acknowledge), **kwargs)
            if acknowledge:
                pub = await res
                return pub.id
            return None

        return self.aio.run(go(), 15)

    def publish_many(self, topic: str, arg_lists: list[list], window: int = 50, timeout: float = 60.0) -> list[int]:
        """Publish with acknowledge=True, up to `window` unacknowledged; return the ids in order.

        The PUBLISH messages leave in list order on the one WebSocket.
        """

        async def go():
            sem = asyncio.Semaphore(window)
            futs = []
            for args in arg_lists:
                await sem.acquire()
                f = asyncio.ensure_future(self.session.publish(topic, *args, options=PublishOptions(acknowledge=True)))
                f.add_done_callback(lambda _f: sem.release())
                futs.append(f)
            pubs = await asyncio.gather(*futs)
            return [p.id for p in pubs]

        return self.aio.run(go(), timeout)

    def wait_events(self, n: int, timeout: float) -> bool:
        return wait_until(lambda: len(self.events) >= n, timeout)

    def close(self) -> None:
        if self.session is None:
            return

        async def go():
            try:
                if self.session.is_attached():
                    await asyncio.wait_for(self.session.leave(), 3)
            except Exception:
                pass
            if self.session._transport is not None:
                self.session._transport.close()

        try:
            self.aio.run(go(), 10)
        except Exception:
            pass
        self.disconnected.wait(5)


# --------------------------------------------------------------------------- mosquitto tools


class MosquittoSub:
    """A `mosquitto_sub` process; its lines are read on a thread. Ready once SUBACK is printed."""

    def __init__(self, port: int, topics: list[str], extra: list[str] = (), qos: int = 1):
        # stdbuf: mosquitto_sub's stdout is block-buffered on a pipe; lines are needed as they come
        cmd = ["stdbuf", "-oL", "mosquitto_sub", "-d", "-h", HOST, "-p", str(port), "-q", str(qos), "-F", "MSG %r %t %x"]
        for t in topics:
            cmd += ["-t", t]
        cmd += list(extra)
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.subacked = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if "received SUBACK" in line:
                self.subacked.set()

    def messages(self) -> list[tuple[bool, str, bytes]]:
        """Return (retain flag, topic, payload) per message printed so far."""
        out = []
        for line in list(self.lines):
            if line.startswith("MSG "):
                _, retain, topic, hexpayload = (line.split(" ", 3) + [""])[:4]
                out.append((retain == "1", topic, bytes.fromhex(hexpayload)))
        return out

    def wait_ready(self, timeout: float = 10.0) -> None:
        assert self.subacked.wait(timeout), f"mosquitto_sub got no SUBACK: {self.lines}"

    def wait_exit(self, timeout: float) -> int | None:
        """Wait for the process to exit and its output to be read; return its exit code."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._thread.join(5)  # the last lines may still be in the pipe
        return rc

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._thread.join(5)


def mosquitto_pub(port: int, topic: str, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    """Run mosquitto_pub against the server and return the finished process."""
    return subprocess.run(
        ["mosquitto_pub", "-h", HOST, "-p", str(port), "-t", topic, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
