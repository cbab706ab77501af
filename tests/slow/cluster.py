"""The multi-process cluster for the slow suite: 3 sync, 3 ndb and 3 entry processes on loopback.

Each node is its own process (`ordo-sync`, `ordo-ndb`, `ordo-entry --cluster`) with its own
data folder, all reading one cluster file written here with free UDP ports. Any node can be
kill -9'd and started again on the same data folder and ports.
"""

from __future__ import annotations

import re
import socket
import subprocess
import urllib.request
from pathlib import Path

from harness import HOST, Process, binary_path, free_port


def free_udp_port(avoid=()) -> int:
    """The same for a node's QUIC (UDP) port."""
    return free_port(avoid=avoid, kind=socket.SOCK_DGRAM)


class Node(Process):
    """One cluster process, restartable on the same data folder and ports, with metrics."""

    def __init__(self, name: str, command: list[str], log_dir: Path, tcp_ports=()):
        self.metrics_port = free_port()
        self._command = command + ["--metrics", f"{HOST}:{self.metrics_port}"]
        super().__init__(name, name, log_dir, tcp_ports)

    def command(self) -> list[str]:
        return self._command

    def metric(self, name: str) -> float | None:
        """Return one unlabelled sample from the node's /metrics, or None if unreachable."""
        try:
            with urllib.request.urlopen(f"http://{HOST}:{self.metrics_port}/metrics", timeout=2) as r:
                text = r.read().decode()
        except OSError:
            return None
        m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
        return float(m.group(1)) if m else None


class OrdoCluster:
    """3 sync + 3 ndb + 3 entries (by default), each a separate process."""

    def __init__(self, root: Path, syncs: int = 3, ndbs: int = 3, entries: int = 3):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        entry_bin = binary_path()
        bindir = entry_bin.parent
        udp: list[int] = []
        for _ in range(syncs + ndbs + entries):
            udp.append(free_udp_port(avoid=udp))
        lines = ['cert_dir = "certs"']
        roles = [("sync", syncs), ("ndb", ndbs), ("entry", entries)]
        k = 0
        self.udp = {}
        for role, n in roles:
            for i in range(1, n + 1):
                lines += [f"[[{role}]]", f"id = {i}", f'addr = "{HOST}:{udp[k]}"']
                self.udp[(role, i)] = udp[k]
                k += 1
        self.cluster_file = self.root / "cluster.toml"
        self.cluster_file.write_text("\n".join(lines) + "\n")
        subprocess.run([str(entry_bin), "cluster-certs", "--cluster", str(self.cluster_file)],
                       check=True, capture_output=True, timeout=30)
        cf = str(self.cluster_file)
        data = self.root / "data"
        self.sync = [Node(f"sync{i}", [str(bindir / "ordo-sync"), "--cluster", cf, "--id", str(i),
                                       "--data-dir", str(data / f"sync{i}")], self.root)
                     for i in range(1, syncs + 1)]
        # a small memory cache, so catch-up and replay also read old records from RocksDB
        self.ndb = [Node(f"ndb{i}", [str(bindir / "ordo-ndb"), "--cluster", cf, "--id", str(i),
                                     "--data-dir", str(data / f"ndb{i}"), "--cache-records", "200"],
                         self.root)
                    for i in range(1, ndbs + 1)]
        self.entry = []
        for i in range(1, entries + 1):
            mqtt = free_port()
            wamp = free_port()
            rawsocket = free_port()
            node = Node(f"entry{i}", [str(entry_bin), "--cluster", cf, "--id", str(i),
                                      "--mqtt", f"{HOST}:{mqtt}", "--wamp", f"{HOST}:{wamp}",
                                      "--wamp-rawsocket", f"{HOST}:{rawsocket}",
                                      "--data-dir", str(data / f"entry{i}")], self.root, [mqtt, wamp])
            node.mqtt_port, node.wamp_port = mqtt, wamp
            node.wamp_url = f"ws://{HOST}:{wamp}/"
            self.entry.append(node)

    def nodes(self) -> list[Node]:
        return self.sync + self.ndb + self.entry

    def start(self) -> None:
        for n in self.sync + self.ndb + self.entry:
            n.start()

    def kill_all(self) -> None:
        for n in self.nodes():
            n.kill9()

    def abandon(self, owner: int) -> str:
        """Run `ordo-sync abandon` for entry `owner` (as the operator); return its output."""
        out = subprocess.run([str(binary_path().parent / "ordo-sync"), "abandon", "--cluster", str(self.cluster_file),
                              "--owner", str(owner), "--below", str(10**12)],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"ordo-sync abandon failed: {out.stdout}{out.stderr}"
        return out.stdout + out.stderr

    def sync_leader(self) -> Node | None:
        """Return the sync node that most recently logged becoming leader."""
        best = None
        for n in self.sync:
            for m in re.finditer(r"^(\S+).*role changed.*term=(\d+) leader=true", n.log_text(), re.M):
                key = (int(m.group(2)), m.group(1))
                if best is None or key > best[0]:
                    best = (key, n)
        return best[1] if best else None

    def log_tails(self) -> str:
        return "\n".join(n.log_tail(15) for n in self.nodes())
