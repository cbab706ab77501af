#!/usr/bin/env python3
"""Ack latency of a fresh cluster under a light, steady load, and when its slow acks happen.

Starts a cluster of separate processes (3 sync, 3 ndb, ENTRIES entries; the slow suite's
`OrdoCluster`, data under a scratch folder on disk), connects one paho-mqtt publisher to entry 1
and publishes 64-byte QoS 1 messages at RATE per second for SECS seconds. Prints the ack
latency (p50/p90/p99/max), the UDP datagrams the machine sent per message, and every stretch of
acks over 15 ms with its time, so a tail can be told from one stall or from steady jitter.
With `--burst N` it first publishes N messages as fast as paho can, to measure after a load.

    ORDO_ENTRY=target/release/ordo-entry .venv/bin/python scripts/latency-probe.py 1 200 20

The bench (`ordo-bench`, bench/) measures throughput and tails at half of peak against the
peers; this probe answers a narrower question: what the cluster costs a message when it is
nearly idle. Each node's own heartbeat line (in `<scratch>/<node>-1.log`) gives the segment
stages and fsync times of the same run.
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "slow"))

import paho.mqtt.client as mqtt  # noqa: E402
from cluster import OrdoCluster  # noqa: E402

SLOW_MS = 15.0


def udp_datagrams_out() -> int:
    rows = [line.split() for line in open("/proc/net/snmp") if line.startswith("Udp:")]
    return int(dict(zip(rows[0][1:], rows[1][1:]))["OutDatagrams"])


def connect(port: int) -> mqtt.Client:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="probe", protocol=mqtt.MQTTv311)
    client.max_inflight_messages_set(65535)
    client.connect("127.0.0.1", port)
    client.loop_start()
    deadline = time.time() + 10
    while not client.is_connected():
        if time.time() > deadline:
            raise SystemExit("the probe could not connect to entry 1")
        time.sleep(0.05)
    client.publish("probe/warm", b"x", qos=1).wait_for_publish(10)
    return client


def burst(client: mqtt.Client, count: int) -> None:
    started = time.perf_counter()
    window = []
    for _ in range(count):
        window.append(client.publish("probe/burst", b"z" * 64, qos=1))
        if len(window) >= 2000:
            window[0].wait_for_publish(60)
            window = window[1000:]
    window[-1].wait_for_publish(120)
    print(f"burst of {count} in {time.perf_counter() - started:.1f} s", flush=True)
    time.sleep(1)


def paced(client: mqtt.Client, rate: float, secs: float) -> list[tuple[float, float]]:
    """Publish at `rate` for `secs`; return (send time from start, latency ms) per ack."""
    sent: dict[int, float] = {}
    acked: dict[int, float] = {}
    client.on_publish = lambda _c, _u, mid, _rc, _p: acked.__setitem__(mid, time.perf_counter())
    datagrams = udp_datagrams_out()
    start = time.perf_counter()
    n = 0
    while (now := time.perf_counter()) - start < secs:
        due = start + n / rate
        if now < due:
            time.sleep(min(due - now, 0.001))
            continue
        at = time.perf_counter()
        sent[client.publish("probe/paced", b"y" * 64, qos=1).mid] = at
        n += 1
    datagrams = udp_datagrams_out() - datagrams
    time.sleep(2)
    print(f"published {n}; UDP datagrams sent on the machine: {datagrams} ({datagrams / max(n, 1):.1f} per message)")
    return sorted((at - start, (acked[mid] - at) * 1e3) for mid, at in sent.items() if mid in acked)


def report(acks: list[tuple[float, float]]) -> None:
    lat = sorted(ms for _, ms in acks)
    n = len(lat)
    if n == 0:
        raise SystemExit("no acks")
    print(f"acks {n}: p50 {lat[n // 2]:.2f} p90 {lat[int(n * 0.9)]:.2f} "
          f"p99 {lat[int(n * 0.99)]:.2f} max {lat[-1]:.2f} ms")
    stretches: list[list[float]] = []  # [first, last, worst, count]
    for at, ms in acks:
        if ms <= SLOW_MS:
            continue
        if stretches and at - stretches[-1][1] < 0.1:
            s = stretches[-1]
            s[1], s[2], s[3] = at, max(s[2], ms), s[3] + 1
        else:
            stretches.append([at, at, ms, 1])
    for first, last, worst, count in stretches:
        print(f"  {first:7.3f}-{last:7.3f} s: {count} acks over {SLOW_MS:.0f} ms, worst {worst:.1f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("entries", type=int, help="entry processes (publisher on entry 1)")
    ap.add_argument("rate", type=float, help="QoS 1 messages per second")
    ap.add_argument("secs", type=float, help="seconds of paced publishing")
    ap.add_argument("--burst", type=int, default=0, help="publish this many first, flat out")
    ap.add_argument("--scratch", default="/tmp/ordo-latency-probe", help="cluster data and logs (removed first)")
    args = ap.parse_args()
    shutil.rmtree(args.scratch, ignore_errors=True)
    cluster = OrdoCluster(Path(args.scratch), entries=args.entries)
    cluster.start()
    try:
        client = connect(cluster.entry[0].mqtt_port)
        if args.burst:
            burst(client, args.burst)
        report(paced(client, args.rate, args.secs))
        client.loop_stop()
    finally:
        cluster.kill_all()
        # Each node's RocksDB preallocates tens of MB; keep only the logs.
        shutil.rmtree(Path(args.scratch) / "data", ignore_errors=True)
    print(f"logs: {args.scratch}")


if __name__ == "__main__":
    main()
