"""Starts the microsoft-sim binary over https for Microsoft's own clients, and stops it afterwards.

The binary comes from MICROSOFT_SIM_BIN (default target/debug/microsoft-sim, relative to the current directory or
the repository root). It serves worlds/clients.json on 127.0.0.1 with a self-signed CA; the CA file is trusted
through REQUESTS_CA_BUNDLE (requests, hence MSAL) and SSL_CERT_FILE (httpx), set only for this session.
"""

import json
import os
import pathlib
import queue
import subprocess
import threading
from dataclasses import dataclass

import pytest

HERE = pathlib.Path(__file__).resolve().parent
CRATE = HERE.parent
REPO = CRATE.parent.parent
WORLD = CRATE / "worlds" / "clients.json"
START_TIMEOUT_S = 60


@dataclass(frozen=True)
class Sim:
    base_url: str
    ca_file: str
    world: dict

    @property
    def app(self) -> dict:
        return self.world["apps"][0]

    @property
    def tenant(self) -> dict:
        return self.world["tenants"][0]

    @property
    def user(self) -> dict:
        return self.tenant["users"][0]

    @property
    def redirect_uri(self) -> str:
        return self.app["redirectUris"][0]


def _binary() -> pathlib.Path:
    configured = pathlib.Path(os.environ.get("MICROSOFT_SIM_BIN", "target/debug/microsoft-sim"))
    candidates = [configured] if configured.is_absolute() else [pathlib.Path.cwd() / configured, REPO / configured]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    pytest.exit(
        f"microsoft-sim binary not found (looked for {', '.join(map(str, candidates))}); "
        "build it with `cargo build -p microsoft-sim` or set MICROSOFT_SIM_BIN",
        returncode=2,
    )


def _first_line(stream, timeout_s: float) -> str:
    lines: "queue.Queue[str]" = queue.Queue()

    def pump() -> None:
        # Keeps reading after the first line so the child never blocks on a full pipe.
        for line in stream:
            lines.put(line)
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    try:
        return lines.get(timeout=timeout_s)
    except queue.Empty:
        return ""


@pytest.fixture(scope="session")
def sim(tmp_path_factory) -> Sim:
    tls_dir = tmp_path_factory.mktemp("sim-tls")
    log_path = tls_dir / "sim.stderr.log"
    with open(log_path, "wb") as stderr:
        proc = subprocess.Popen(
            [
                str(_binary()),
                "--addr",
                "127.0.0.1:0",
                "--world",
                str(WORLD),
                "--tls-self-signed",
                str(tls_dir),
                "--auto-approve",
            ],
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            text=True,
        )
    saved = {k: os.environ.get(k) for k in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "NO_PROXY", "no_proxy")}
    try:
        line = _first_line(proc.stdout, START_TIMEOUT_S)
        if not line.startswith("listening on "):
            pytest.fail(
                f"microsoft-sim did not start (first line {line!r}, exit {proc.poll()}): {log_path.read_text()[-2000:]}"
            )
        base_url = line.removeprefix("listening on ").strip()
        assert base_url.startswith("https://127.0.0.1:"), base_url
        ca_file = str(tls_dir / "ca.pem")
        os.environ["REQUESTS_CA_BUNDLE"] = ca_file
        os.environ["SSL_CERT_FILE"] = ca_file
        # Loopback only: never through a proxy the environment may configure.
        os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
        yield Sim(base_url=base_url, ca_file=ca_file, world=json.loads(WORLD.read_text()))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
