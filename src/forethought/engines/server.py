"""Start an OpenAI-compatible server (vLLM, SGLang, llama.cpp) from a command template, wait until it answers,
and stop it (with every process it started) when done: how `engine.launch` serves each iteration's model."""

from __future__ import annotations

import atexit
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from forethought.errors import UserError

PLACEHOLDERS = ("model", "gguf", "name", "host", "port", "python")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def render_command(template: str, model: str, *, host: str, port: int) -> list[str]:
    """Split a launch template and fill {model} (HF checkpoint dir), {gguf} (GGUF file), {name} (the model as
    given), {host}, {port} and {python} (this interpreter); a placeholder is resolved only when used."""
    from forethought.models import gguf_file, resolve_model

    values = {"name": lambda: model, "host": lambda: host, "port": lambda: str(port),
              "python": lambda: sys.executable, "model": lambda: str(resolve_model(model)),
              "gguf": lambda: str(gguf_file(model))}
    out = []
    for part in shlex.split(template):
        for key, value in values.items():
            if "{" + key + "}" in part:
                part = part.replace("{" + key + "}", value())
        if "{" in part and "}" in part:
            raise UserError(f"engine.launch: unknown placeholder in '{part}'; use {', '.join(PLACEHOLDERS)}")
        out.append(part)
    return out


class ManagedServer:
    """One server process; `base_url` answers once `start()` returns. Use as a context manager or call stop()."""

    def __init__(self, command: list[str], *, host: str = "127.0.0.1", port: int, ready_timeout: float = 900.0,
                 log_path: Path | None = None, env: dict | None = None) -> None:
        self.command, self.host, self.port, self.ready_timeout = command, host, port, ready_timeout
        self.base_url = f"http://{host}:{port}/v1"
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="forethought-server-",
                                                                              suffix=".log")[1])
        self.env = env
        self.process: subprocess.Popen | None = None
        self._temp_log = log_path is None  # a log we made is removed on stop(), unless the server failed

    @classmethod
    def from_template(cls, template: str, model: str, **kwargs) -> ManagedServer:
        host = kwargs.pop("host", "127.0.0.1")
        port = kwargs.pop("port", None) or free_port(host)
        return cls(render_command(template, model, host=host, port=port), host=host, port=port, **kwargs)

    def __enter__(self) -> ManagedServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> ManagedServer:
        """Start the process in its own session and wait until GET /v1/models answers (any HTTP status)."""
        log = open(self.log_path, "ab")
        try:
            self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env={**os.environ, **(self.env or {})})
        except OSError as e:
            raise UserError(f"engine.launch: cannot start '{self.command[0]}' ({e.strerror})") from None
        finally:
            log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            status = self.process.poll()
            if status is not None:
                self._temp_log = False  # the error message points to it
                self.stop()
                raise UserError(f"the server exited with status {status} before answering; "
                                f"its log ({self.log_path}) ends with:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=5) as resp:
                    if resp.status == 200:
                        return self
            except urllib.error.HTTPError:  # it answers, e.g. 401 without a key: it is up
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        self._temp_log = False
        self.stop()
        raise UserError(f"the server did not answer at {self.base_url} within {self.ready_timeout:.0f} s; "
                        f"see its log: {self.log_path}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate the server's process group (SIGTERM, then SIGKILL after 20 s)."""
        process, self.process = self.process, None
        if self._temp_log:
            self.log_path.unlink(missing_ok=True)
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
        except ProcessLookupError:
            pass
