"""nginx from Debian's `nginx-light` package in front of SEER Label servers, configured by the deployment recipe
(deploy/nginx-seer-label.conf) with only its marked lines replaced; run in a temporary folder on 127.0.0.1 and
stopped by PID. Shared by the deployment test and bench/bench_team.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from pacs import free_port

RECIPE = Path(__file__).resolve().parents[1] / "deploy" / "nginx-seer-label.conf"


def nginx_binary() -> str | None:
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)



def recipe_for(servers: list[str], port: int) -> str:
    """The recipe's text with its upstream servers ("127.0.0.1:PORT") and listening port replaced."""
    lines, out = RECIPE.read_text().splitlines(), []
    for line in lines:
        if "SEER-LABEL-SERVERS" in line:
            out += [f"    server {s} max_fails=3 fail_timeout=10s;" for s in servers]
        elif line.strip().startswith("server 127.0.0.1:"):
            continue  # the recipe's other example server lines
        elif "SEER-LABEL-LISTEN" in line:
            out.append(f"    listen 127.0.0.1:{port};")
        else:
            out.append(line)
    return "\n".join(out) + "\n"


class Nginx:
    """nginx with the recipe for `servers` (URLs of SEER Label servers); .url once started."""

    def __init__(self, folder: Path, servers: list[str]):
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        hosts = [s.split("://", 1)[-1].rstrip("/") for s in servers]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "seer-label.conf").write_text(recipe_for(hosts, self.port))
        temp = folder / "temp"
        temp.mkdir(exist_ok=True)
        (folder / "nginx.conf").write_text(
            "worker_processes 1;\n"
            f"pid {folder / 'nginx.pid'};\n"
            f"error_log {folder / 'error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            "    log_format upstream '$request_method $request_uri $upstream_addr';\n"
            f"    access_log {folder / 'access.log'} upstream;\n"
            + "".join(f"    {kind}_temp_path {temp / kind};\n"
                      for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            + f"    include {folder / 'seer-label.conf'};\n"
            "}\n")
        self.process = None

    def start(self, timeout_s: float = 30) -> Nginx:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        user = ["-g", "daemon off; user root;"] if os.geteuid() == 0 else ["-g", "daemon off;"]
        check = subprocess.run([binary, "-t", "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"), *user],
                               capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused the recipe: {check.stderr}")
        self.process = subprocess.Popen([binary, "-p", str(self.folder), "-c", str(self.folder / "nginx.conf"), *user],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.folder / 'error.log').read_text()[-2000:]}")
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("nginx did not listen in time")

    def upstreams(self, path_start: str = "") -> list[str]:
        """The server ("127.0.0.1:PORT") that answered each request whose path starts with `path_start`, in order."""
        out = []
        for line in (self.folder / "access.log").read_text().splitlines():
            method, path, upstream = (line.split(" ") + ["", "", ""])[:3]
            if path.startswith(path_start) and upstream != "-":
                out.append(upstream)
        return out

    def stop(self) -> None:
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGQUIT)  # graceful: in-flight requests finish
            self.process.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process = None

    def __enter__(self) -> Nginx:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
