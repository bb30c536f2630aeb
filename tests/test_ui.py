"""`spectralearth ui` (what `make ui` runs): both servers answer on 127.0.0.1, print their
URLs, and a SIGTERM stops the whole tree."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ok(url: str, deadline: float) -> int:
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status
        except OSError:
            time.sleep(1)
    raise AssertionError(f"{url} did not answer")


def test_ui_serves_dagster_and_mlflow_on_loopback_and_stops_cleanly(tmp_path):
    from tests.helpers import write_params

    params = write_params(tmp_path)
    dport, mport = _free_port(), _free_port()
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "dh"), SPECTRALEARTH_PARAMS=str(params))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spectralearth.cli",
            "ui",
            "--dagster-port",
            str(dport),
            "--mlflow-port",
            str(mport),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.time() + 120
        assert _wait_ok(f"http://127.0.0.1:{dport}/server_info", deadline) == 200
        assert _wait_ok(f"http://127.0.0.1:{mport}/health", deadline) == 200
        listening = {
            c.laddr.port: c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port in (dport, mport)
        }
        assert listening == {dport: "127.0.0.1", mport: "127.0.0.1"}
        tree = [proc.pid] + [c.pid for c in psutil.Process(proc.pid).children(recursive=True)]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    assert f"http://127.0.0.1:{dport}" in out and f"http://127.0.0.1:{mport}" in out
    time.sleep(2)
    alive = [
        p
        for p in tree
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert not alive, f"server processes left running: {alive}"
