"""The Dagster UI and the MLflow UI for one local user (what ``spectralearth ui`` and
``make ui`` start): both bind 127.0.0.1 unless told otherwise and stop as one tree."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from spectralearth.config import Settings


def _spawn(cmd: list[str], env: dict) -> subprocess.Popen:
    # Own session (so the whole server tree can be stopped) and default SIGINT: shells
    # start background jobs with SIGINT ignored, which children would inherit.
    return subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def serve_uis(settings: Settings, host: str, dagster_port: int, mlflow_port: int) -> int:
    """Run both servers until Ctrl-C or SIGTERM, then stop them (SIGKILL what is left)."""
    layout = settings.layout
    env = dict(os.environ, DAGSTER_HOME=str(layout.dagster_home.resolve()))
    layout.dagster_home.mkdir(parents=True, exist_ok=True)
    layout.mlflow_dir.mkdir(parents=True, exist_ok=True)
    dagster = [sys.executable, "-m", "dagster", "dev", "-m", "dagster_project.definitions",
               "-h", host, "-p", str(dagster_port)]  # fmt: skip
    # one local user: MLflow's default 4 workers take minutes to start on 2 cores
    mlflow = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", settings.tracking.uri,
              "--host", host, "--port", str(mlflow_port), "--workers", "1"]  # fmt: skip
    if settings.tracking.local_db is None:  # a tracking server: its own UI, nothing to start
        procs = [_spawn(dagster, env)]
        print(
            f"Dagster UI: http://{host}:{dagster_port}\n"
            f"MLflow UI:  {settings.tracking.uri} (the tracking server's own)\n(Ctrl-C stops Dagster)"
        )
    else:
        procs = [_spawn(dagster, env), _spawn(mlflow, env)]
        print(
            f"Dagster UI: http://{host}:{dagster_port}\nMLflow UI:  http://{host}:{mlflow_port}\n"
            "(Ctrl-C stops both)"
        )

    def _interrupt(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops both servers, like Ctrl-C
    try:
        for p in procs:
            p.wait()
    except KeyboardInterrupt:
        for p in procs:
            p.send_signal(signal.SIGTERM)  # Dagster maps SIGTERM to its graceful shutdown
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)  # whatever of the tree is left
    return 0
