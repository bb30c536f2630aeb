"""Services stay on loopback unless asked, the repo holds no credentials, and checkpoints load
only through safetensors or ``torch.load(weights_only=True)``. (That the UI really binds
127.0.0.1 and stops cleanly is shown live in tests/test_ui.py.)"""

from __future__ import annotations

import re
import subprocess

from spectralearth.cli import build_parser
from tests.helpers import REPO

CREDENTIAL_PATTERNS = {
    "AWS access key": r"AKIA[0-9A-Z]{16}",
    "private key": r"-----BEGIN [A-Z ]*PRIVATE KEY-----",
    "GitHub token": r"gh[pousr]_[A-Za-z0-9]{36}",
    "password or secret set to a literal": (
        r"(?i)\b(password|passwd|secret_access_key|api_key|token)\b\s*[:=]\s*['\"][^'\"\s]{6,}"
    ),
    "credentials in a URL": r"[a-z]+://[^/\s:@'\"]+:[^/\s:@'\"]+@",
}


def _tracked_text_files():
    names = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in names:
        path = REPO / name
        if path.is_file() and path.stat().st_size < 2_000_000:
            try:
                yield name, path.read_text()
            except UnicodeDecodeError:
                continue


def test_no_credentials_in_the_repository():
    found = [
        f"{name}: {what}"
        for name, text in _tracked_text_files()
        if name != "tests/reliability/test_services_and_secrets.py"
        for what, pattern in CREDENTIAL_PATTERNS.items()
        if re.search(pattern, text)
    ]
    assert found == []


def test_checkpoints_load_only_safely():
    unsafe = []
    for name, text in _tracked_text_files():
        if not name.endswith(".py") or name.startswith("tests/"):
            continue
        for m in re.finditer(r"torch\.load\(([^)]*)\)", text):
            if "weights_only=True" not in m.group(1):
                unsafe.append(f"{name}: {m.group(0)}")
        if re.search(r"\bpickle\.loads?\(", text):
            unsafe.append(f"{name}: pickle.load")
    assert unsafe == []


def test_ui_defaults_to_loopback():
    args = build_parser().parse_args(["ui"])
    assert args.host == "127.0.0.1"
    makefile = (REPO / "Makefile").read_text()
    assert "0.0.0.0" not in makefile
