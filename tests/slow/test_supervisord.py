"""supervisord/masterfree.supervisord.ini starts a working 9-process cluster.

The shipped file is used as it is, except that its fixed ports (MQTT 1881-1883, WAMP 9031-9033)
are rewritten to free ones so the test never collides with a broker already on this machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

from cluster import free_udp_port
from harness import REPO, MqttClient, binary_path, free_port, ident_bytes, key_from_mqtt, wait_until

INI = REPO / "supervisord" / "masterfree.supervisord.ini"


def test_masterfree_ini_runs_the_cluster(ordo_binary, tmp_path):
    supervisord = REPO / ".venv" / "bin" / "supervisord"
    assert supervisord.exists(), "supervisord missing: run scripts/setup.sh"
    root = tmp_path / "root"
    (root / "log").mkdir(parents=True)
    bindir = binary_path().parent
    udp: list[int] = []
    for _ in range(9):
        udp.append(free_udp_port(avoid=udp))
    lines = ['cert_dir = "certs"']
    for k, role in enumerate(["sync", "ndb", "entry"]):
        for i in range(1, 4):
            lines += [f"[[{role}]]", f"id = {i}", f'addr = "127.0.0.1:{udp[k * 3 + i - 1]}"']
    (root / "cluster.toml").write_text("\n".join(lines) + "\n")
    subprocess.run([str(ordo_binary), "cluster-certs", "--cluster", str(root / "cluster.toml")],
                   check=True, capture_output=True, timeout=30)
    text = INI.read_text()
    ports: dict[str, int] = {}
    taken: list[int] = []
    for old in ["1881", "1882", "1883", "9031", "9032", "9033", "9041", "9042", "9043"]:
        ports[old] = free_port(avoid=taken)
        taken.append(ports[old])
        text = text.replace(f"127.0.0.1:{old}", f"127.0.0.1:{ports[old]}")
    assert len(re.findall(r"^\[program:", text, re.M)) == 9
    ini = tmp_path / "masterfree.ini"
    ini.write_text(text)
    env = dict(os.environ, ORDO_ROOT=str(root), ORDO_BIN=str(bindir))
    proc = subprocess.Popen([str(supervisord), "-n", "-c", str(ini)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        mqtt = [ports["1881"], ports["1882"], ports["1883"]]

        def accepting(port):
            try:
                MqttClient(port).connect(timeout=1).close()
                return True
            except Exception:
                return False

        assert wait_until(lambda: all(accepting(p) for p in mqtt), 60, interval=0.3), (
            "entries did not start under supervisord\n"
            + "\n".join((root / "log" / f"entry{i}.log").read_text(errors="replace")[-2000:] for i in (1, 2, 3)
                        if (root / "log" / f"entry{i}.log").exists())
        )
        sub = MqttClient(mqtt[2]).connect()
        sub.subscribe("sv/t", qos=1)
        pub = MqttClient(mqtt[0]).connect()
        mids = [pub.publish("sv/t", ident_bytes("sv", n), qos=1) for n in range(50)]
        assert pub.wait_acked(mids, 30), "publishes through entry1 were not acknowledged"
        assert sub.wait_messages(50, 30), f"entry3's subscriber got {len(sub.messages)} of 50"
        assert [key_from_mqtt(m.payload) for m in sub.messages] == [("sv", n) for n in range(50)]
        pub.close()
        sub.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        # supervisord stops its children on SIGTERM; make sure nothing is left behind
        subprocess.run(["pkill", "-9", "-f", str(root)], check=False)
        time.sleep(0.2)
