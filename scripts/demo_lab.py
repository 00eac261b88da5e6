"""The demo lab (run by scripts/demo, as root, on a kernel with ip_vs).

client 198.18.0.2 --- 198.18.0.1 director (VIP 198.18.0.10) 198.18.1.1 --- web1 198.18.1.11
                                                                        \\-- web2 198.18.1.12
"""

from __future__ import annotations

import json
import signal
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers.netns import Background, Namespace, Topology  # noqa: E402

PY = sys.executable
CONFIG = """\
[daemon]
state_dir = "{state}"
log_format = "logfmt"

[kernel]
ip_forward = true
conntrack = true
expire_nodest_conn = true
expire_quiescent_template = true

[[virtual_server]]
name = "web"
protocol = "tcp"
address = "198.18.0.10"
port = 80
scheduler = "wrr"
forwarding = "nat"
  [[virtual_server.real_server]]
  name = "web1"
  address = "198.18.1.11"
  weight = {w1}
  [[virtual_server.real_server]]
  name = "web2"
  address = "198.18.1.12"
  weight = 1
"""
WEB = """
import http.server, sys
name = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"hello from {name}\\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer((sys.argv[2], 80), H).serve_forever()
"""


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show(title: str, text: str) -> None:
    print(f"--- {title}")
    print(textwrap.indent(text.rstrip(), "    "), flush=True)


def get(client: Namespace, n: int) -> list[str]:
    code = (
        "import urllib.request\n"
        f"for _ in range({n}):\n"
        "    reply = urllib.request.urlopen('http://198.18.0.10/', timeout=5)\n"
        "    print(reply.read().decode().strip())"
    )
    return client.run(PY, "-c", code).stdout.split("\n")[:n]


def wait_status(state: Path, key: str, timeout: float = 120) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status: dict[str, object] = json.loads((state / "status.json").read_text())
            if status.get(key):
                return status
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"demo: directord did not report {key} in {timeout} s")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="director-demo-"))
    state, config = work / "state", work / "director.toml"
    with Topology() as topo:
        step("building the lab: client, director, web1, web2 in network namespaces")
        client, director = topo.namespace("client"), topo.namespace("director")
        web1, web2 = topo.namespace("web1"), topo.namespace("web2")
        switch = topo.namespace("switch")
        switch.bridge("br0")
        topo.veth(client, "eth0", director, "c0", a_addr="198.18.0.2/24", b_addr="198.18.0.1/24")
        director.add_address("c0", "198.18.0.10/32")
        topo.attach(director, "s0", switch, "br0", addr="198.18.1.1/24")
        for ns, addr in ((web1, "198.18.1.11"), (web2, "198.18.1.12")):
            topo.attach(ns, "eth0", switch, "br0", addr=f"{addr}/24")
            ns.add_route("default", "198.18.1.1")
            ns.spawn(PY, "-c", WEB, ns.name.rsplit("-", 1)[-1], addr)
        config.write_text(CONFIG.format(state=state, w1=1))
        show("director.toml", config.read_text())

        step("directord --check-config")
        check = director.run(PY, "-m", "director.daemon", "--check-config", str(config))
        show("output", check.stdout)

        step("starting directord in the director namespace")
        daemon = start(director, config)
        wait_status(state, "last_sync")
        show("ipvsadm -Ln", director.run("ipvsadm", "-Ln").stdout)
        show("directorctl status", ctl(director, state))

        step("six requests from the client to http://198.18.0.10/ (wrr, weights 1:1)")
        show("responses", "\n".join(get(client, 6)))

        step("reload with web1 at weight 3 (SIGHUP): only that weight changes")
        config.write_text(CONFIG.format(state=state, w1=3))
        daemon.proc.send_signal(signal.SIGHUP)
        time.sleep(3)
        show("ipvsadm -Ln", director.run("ipvsadm", "-Ln").stdout)
        show("eight requests", "\n".join(get(client, 8)))

        step("reload with a broken config: rejected, the running one stays")
        config.write_text(CONFIG.format(state=state, w1=3).replace('"wrr"', '"fastest"'))
        daemon.proc.send_signal(signal.SIGHUP)
        wait_status(state, "reload_error")
        show("directorctl status", ctl(director, state))

        step("kill -9 directord, start it again: the table stays, nothing is re-added")
        daemon.proc.send_signal(signal.SIGKILL)
        daemon.proc.wait()
        show("ipvsadm -Ln after SIGKILL", director.run("ipvsadm", "-Ln").stdout)
        config.write_text(CONFIG.format(state=state, w1=3))
        (state / "status.json").unlink()
        daemon = start(director, config)
        status = wait_status(state, "last_sync")
        sync = status["last_sync"]
        assert isinstance(sync, dict)
        print(f"    restarted: {sync['operations']} IPVS operations needed (adopted the table)")
        show("requests still answered", "\n".join(get(client, 2)))

        step("directord log (logfmt)")
        show("log", daemon.output())
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.wait(timeout=30)
        step("cleaning up the namespaces")
    print("demo finished", flush=True)
    return 0


def start(director: Namespace, config: Path) -> Background:
    return director.spawn(PY, "-m", "director.daemon", "--config", str(config))


def ctl(director: Namespace, state: Path) -> str:
    done = director.run(PY, "-m", "director.cli", "status", "--state-dir", str(state), check=False)
    return done.stdout + done.stderr


if __name__ == "__main__":
    sys.exit(main())
