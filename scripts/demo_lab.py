"""The failover demo (run by scripts/demo, as root, on a kernel with ip_vs).

              client 198.18.0.2
                    |                         front bridge, VRRP v3 (0.2 s adverts) on eth0
  d1 198.18.0.11 ---+--- d2 198.18.0.12      VIP 198.18.0.10 (the client's)
  (priority 150)    |    (priority 100)
  d1 198.18.1.2 ----+---- d2 198.18.1.3      back bridge: gateway VIP 198.18.1.1 (same
                    |                         instance, device eth1), IPVS sync daemon on eth1
     web1 198.18.1.11, web2 198.18.1.12      nginx: http :80, https :443 with /owa/healthcheck.htm
     rdp1 198.18.1.21                        xrdp :3389

Both directors run directord with the same services (NAT): http (check http), https (check
exchange), rdp (check rdp). The master holds both VIPs; the real servers route through
198.18.1.1, so replies go back through whichever director is master.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import struct
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.helpers.netns import Background, Namespace, Topology  # noqa: E402
from tests.helpers.servers import enter_namespace, nginx, xrdp  # noqa: E402

PY = sys.executable
VIP, GATEWAY = "198.18.0.10", "198.18.1.1"
ADVERT = 0.2
PRIORITY = {"d1": 150, "d2": 100}
WEB = {"web1": "198.18.1.11", "web2": "198.18.1.12"}
RDP = "198.18.1.21"
CHECK = "interval = 1.0\ntimeout = 1.0\nrise = 1\nfall = 2"
CONFIG = f"""\
[daemon]
state_dir = "{{state}}"
control_socket = "{{state}}/control.sock"
log_format = "logfmt"

[kernel]
ip_forward = true

[[virtual_server]]
name = "http"
protocol = "tcp"
address = "{VIP}"
port = 80
scheduler = "rr"
check = {{{{ type = "http", path = "/", expect_status = [200], {CHECK.replace(chr(10), ", ")} }}}}
  [[virtual_server.real_server]]
  name = "web1"
  address = "{WEB["web1"]}"
  [[virtual_server.real_server]]
  name = "web2"
  address = "{WEB["web2"]}"

[[virtual_server]]
name = "owa"
protocol = "tcp"
address = "{VIP}"
port = 443
scheduler = "rr"
persistence_timeout = 300
check = {{{{ type = "exchange", vdirs = ["owa"], verify = false, {CHECK.replace(chr(10), ", ")} }}}}
  [[virtual_server.real_server]]
  name = "web1"
  address = "{WEB["web1"]}"
  [[virtual_server.real_server]]
  name = "web2"
  address = "{WEB["web2"]}"

[[virtual_server]]
name = "rdp"
protocol = "tcp"
address = "{VIP}"
port = 3389
scheduler = "lc"
persistence_timeout = 600
check = {{{{ type = "rdp", {CHECK.replace(chr(10), ", ")} }}}}
  [[virtual_server.real_server]]
  name = "rdp1"
  address = "{RDP}"

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = 51
priority = {{priority}}
version = 3
advert_interval = {ADVERT}
preempt = true
virtual_addresses = ["{VIP}/24", {{{{ address = "{GATEWAY}/24", device = "eth1" }}}}]

[sync_daemon]
interface = "eth1"
sync_id = 7
instance = "VI_1"
"""
NGINX_SERVERS = """
    server {{
        listen {address}:80;
        location / {{ return 200 "hello from {name} (http)\\n"; }}
    }}
    server {{
        listen {address}:443 ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location = /owa/healthcheck.htm {{
            return 200 "<html><body><h1>200 OK</h1><br/>{name}</body></html>\\n";
        }}
        location / {{ return 200 "hello from {name} (https)\\n"; }}
    }}
"""
# X.224 Connection Request with an RDP Negotiation Request (TLS | CredSSP), 19 bytes
X224_CR = r"\x03\x00\x00\x13\x0e\xe0\x00\x00\x00\x00\x00\x01\x00\x08\x00\x03\x00\x00\x00"
RDP_PROBE = (
    f"exec 3<>/dev/tcp/{VIP}/3389; printf '{X224_CR}' >&3; timeout 5 head -c 19 <&3 | od -An -tx1"
)
# Runs in the client: waits until its ARP entry for the VIP is the given MAC (the new master's,
# set by its gratuitous ARP), prints that wall-clock time, then requests through the VIP until
# one is answered and prints that time.
UNTIL_THROUGH = f"""
until ip neigh show {VIP} | grep -qi "$1"; do sleep 0.01; done
date +%s.%N
until curl -s -m 1 -o /dev/null http://{VIP}/; do sleep 0.01; done
date +%s.%N
"""


def step(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def show(title: str, text: str) -> None:
    print(f"--- {title}")
    print(textwrap.indent(text.rstrip(), "    "), flush=True)


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Poll check until it holds; the seconds it took."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"demo: timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


class Director:
    def __init__(self, ns: Namespace, work: Path) -> None:
        self.ns, self.name = ns, ns.name.rsplit("-", 1)[-1]
        self.state = work / self.name
        self.state.mkdir()
        self.config = self.state / "director.toml"
        self.config.write_text(CONFIG.format(state=self.state, priority=PRIORITY[self.name]))
        self.proc: Background | None = None

    def start(self) -> None:
        (self.state / "status.json").unlink(missing_ok=True)
        argv = ("env", "PYTHONUNBUFFERED=1", PY, "-m", "director.daemon")  # log lines at once
        self.proc = self.ns.spawn(*argv, "--config", str(self.config))

    def synced(self, since: float = 0.0) -> bool:
        """Its status.json shows a sync (one after ``since``, wall clock, when given)."""
        try:
            last = json.loads((self.state / "status.json").read_text()).get("last_sync")
        except (OSError, ValueError):
            return False
        return bool(last) and float(last.get("at", 0.0)) > since

    def ctl(self, *args: str) -> str:
        sock = str(self.state / "control.sock")
        done = self.ns.run(PY, "-m", "director.cli", "--socket", sock, *args, check=False)
        return done.stdout + done.stderr

    def has(self, address: str) -> bool:
        return f" {address}/" in self.ns.ip("-4", "-o", "address", "show")

    def mac(self) -> str:
        return self.ns.ip("-o", "link", "show", "dev", "eth0").split("link/ether ")[1].split()[0]

    def ipvsadm(self, *args: str) -> str:
        return self.ns.run("ipvsadm", *args).stdout

    def became_master(self) -> float:
        """Wall-clock time of the last role_changed ... role=master in the log."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            for line in reversed(self.proc.output().split("\n") if self.proc else []):
                if "event=role_changed" in line and "role=master" in line:
                    stamp = line.split("timestamp=", 1)[1].split()[0].replace("Z", "+00:00")
                    return datetime.fromisoformat(stamp).timestamp()
            time.sleep(0.1)
        raise SystemExit(f"demo: {self.name} did not log role=master")

    def metrics(self, *names: str) -> str:
        text = self.ns.run("curl", "-s", "http://127.0.0.1:9469/metrics").stdout
        return "\n".join(line for line in text.split("\n") if line.startswith(names))

    def log_tail(self, lines: int) -> str:
        out = self.proc.output() if self.proc else ""
        return "\n".join(out.rstrip().split("\n")[-lines:])


def capture_arp(ns: Namespace, mac: str, found: list[float]) -> threading.Thread:
    """A thread in ns that appends the kernel's arrival time of the first ARP packet on eth0
    saying VIP is at mac (the new master's gratuitous ARP)."""
    stamp_option = getattr(socket, "SO_TIMESTAMPNS", 35)
    want = bytes.fromhex(mac.replace(":", ""))

    def work() -> None:
        enter_namespace(ns.name)
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806)) as sock:
            sock.bind(("eth0", 0x0806))
            sock.setsockopt(socket.SOL_SOCKET, stamp_option, 1)
            sock.settimeout(60)
            with contextlib.suppress(TimeoutError):
                while True:
                    data, ancillary, _flags, _addr = sock.recvmsg(128, 64)
                    if data[22:28] != want or socket.inet_ntoa(data[28:32]) != VIP:
                        continue
                    for _level, kind, raw in ancillary:
                        if kind == stamp_option:
                            sec, nsec = struct.unpack("qq", raw[:16])
                            found.append(sec + nsec / 1e9)
                    return

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def requests(client: Namespace, url: str, n: int) -> str:
    script = f'for i in $(seq {n}); do curl -sk -m 3 "{url}" || echo "(no answer)"; done'
    return client.run("sh", "-c", script).stdout


def main() -> int:
    begun = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="director-demo-"))
    timings: list[tuple[str, float]] = []
    with Topology() as topo:
        step("building the lab: client, d1, d2, web1, web2, rdp1 in network namespaces")
        front, back = topo.namespace("front"), topo.namespace("back")
        for switch in (front, back):
            switch.bridge("br0")  # VRRP multicast must be flooded to every port
            switch.ip("link", "set", "dev", "br0", "type", "bridge", "mcast_snooping", "0")
        client = topo.namespace("client")
        topo.attach(client, "eth0", front, "br0", addr="198.18.0.2/24")
        directors = []
        for n, name in enumerate(("d1", "d2")):
            ns = topo.namespace(name)
            topo.attach(ns, "eth0", front, "br0", addr=f"198.18.0.{11 + n}/24")
            topo.attach(ns, "eth1", back, "br0", addr=f"198.18.1.{2 + n}/24")
            directors.append(Director(ns, work))
        d1, d2 = directors
        servers: dict[str, Background] = {}
        for name, address in (*WEB.items(), ("rdp1", RDP)):
            ns = topo.namespace(name)
            topo.attach(ns, "eth0", back, "br0", addr=f"{address}/24")
            ns.add_route("default", GATEWAY)  # the VIP on the back network
            key, cert = work / f"{name}.key", work / f"{name}.crt"
            ns.run(
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj",
                f"/CN={name}", "-keyout", str(key), "-out", str(cert),
            )  # fmt: skip
            if name == "rdp1":
                servers[name] = xrdp(ns, work / name, address, 3389, (cert, key))
            else:
                blocks = NGINX_SERVERS.format(address=address, name=name, cert=cert, key=key)
                servers[name] = nginx(ns, work / name, blocks)
        web_ns = {ns.name.rsplit("-", 1)[-1]: ns for ns in topo.namespaces}
        print("    client 198.18.0.2 -- front bridge -- d1 .11 / d2 .12 (VIP 198.18.0.10)")
        print("    d1 198.18.1.2 / d2 198.18.1.3 (gateway VIP 198.18.1.1) -- back bridge --")
        print("    web1 198.18.1.11, web2 198.18.1.12 (nginx http+https), rdp1 198.18.1.21 (xrdp)")
        show(f"d1's director.toml (d2's differs only in priority = {PRIORITY['d2']})",
             d1.config.read_text())  # fmt: skip

        step("directord --check-config")
        for d in directors:
            done = d.ns.run(PY, "-m", "director.daemon", "--check-config", str(d.config))
            show(d.name, done.stdout + done.stderr)

        step("starting directord on d1 and d2 (both at once)")
        started = time.monotonic()
        for d in directors:
            d.start()
        for d in directors:
            wait_for(f"{d.name}'s first IPVS sync", d.synced, 400)
        ready = time.monotonic() - started
        print(f"    both synced their IPVS tables {ready:.1f} s after start (Python start-up)")
        took = wait_for("d1 to become master (VIP on d1)", lambda: d1.has(VIP), 60)
        wait_for("the gateway VIP on d1", lambda: d1.has(GATEWAY), 10)
        wait_for("d2's backup sync daemon", lambda: "backup" in d2.ipvsadm("-L", "--daemon"), 60)
        print(f"    d1 holds both VIPs {took:.1f} s after that")
        for d in directors:
            show(f"directorctl status on {d.name}", d.ctl("status"))
        show("ipvsadm -Ln on d1", d1.ipvsadm("-Ln"))
        show("sync daemons: d1 | d2",
             d1.ipvsadm("-L", "--daemon") + d2.ipvsadm("-L", "--daemon"))  # fmt: skip
        show("ip -4 -o address on d2 (no VIP: backup)", d2.ns.ip("-4", "-o", "address", "show"))

        step("client requests through the VIP: http (rr), https Exchange-like, RDP X.224")
        show(f"6 x curl http://{VIP}/", requests(client, f"http://{VIP}/", 6))
        show(f"curl -k https://{VIP}/owa/healthcheck.htm",
             requests(client, f"https://{VIP}/owa/healthcheck.htm", 1))  # fmt: skip
        show("RDP Connection Request -> reply (0xd0 = X.224 Connection Confirm, from xrdp)",
             client.run("bash", "-c", RDP_PROBE).stdout)  # fmt: skip

        step("web1's nginx stopped: the http and exchange checks take it out")
        servers["web1"].stop()
        gone = f"{WEB['web1']}:80"
        took = wait_for("web1 out of the http service", lambda: gone not in d1.ipvsadm("-Ln"), 60)
        wait_for("web1 out on d2 too", lambda: gone not in d2.ipvsadm("-Ln"), 60)
        timings.append(("web1 stopped -> removed from IPVS (fall 2, interval 1 s)", took))
        print(f"    web1 removed {took:.2f} s after nginx stopped (on both directors)")
        show("directorctl status on d1", d1.ctl("status"))
        show("4 x curl: only web2 answers", requests(client, f"http://{VIP}/", 4))

        step("web1's nginx started again: back in after one good round (rise 1)")
        blocks = NGINX_SERVERS.format(
            address=WEB["web1"], name="web1", cert=work / "web1.crt", key=work / "web1.key"
        )
        servers["web1"] = nginx(web_ns["web1"], work / "web1", blocks)
        took = wait_for("web1 back", lambda: gone in d1.ipvsadm("-Ln"), 60)
        timings.append(("web1 started -> back in IPVS", took))
        print(f"    web1 back {took:.2f} s after nginx started")
        show("4 x curl", requests(client, f"http://{VIP}/", 4))

        step("kill -9 d1's directord (the master): d2 takes over")
        assert d1.proc is not None
        watcher = client.spawn("sh", "-c", UNTIL_THROUGH, "sh", d2.mac())  # polls from now on
        garp: list[float] = []
        capture = capture_arp(client, d2.mac(), garp)
        time.sleep(0.5)
        killed = time.time()
        d1.proc.proc.send_signal(signal.SIGKILL)
        took = wait_for("the VIP on d2", lambda: d2.has(VIP), 60)
        print(f"    VIP on d2 {took:.3f} s after kill -9 (seen by polling `ip address`)")
        took = d2.became_master() - killed
        timings.append(
            ("kill -9 -> d2 master (its log; 3 x 0.2 + 0.12 s skew after d1's last advert)", took)
        )
        print(f"    d2 logged role=master {took:.3f} s after kill -9")
        watcher.proc.wait(timeout=60)
        capture.join(10)
        if garp:
            timings.append(("kill -9 -> d2's first GARP reaches the client (kernel stamp)",
                            garp[0] - killed))  # fmt: skip
            first = garp[0] - killed
            print(f"    d2's first gratuitous ARP reached the client {first:.3f} s after kill -9")
        arp, through = (float(t) - killed for t in watcher.output().split())
        timings.append(("kill -9 -> client's shell loop sees d2's MAC in `ip neigh`", arp))
        timings.append(("kill -9 -> client's first request answered through d2", through))
        print(f"    the client's ARP entry for the VIP is d2's MAC {arp:.3f} s after kill -9")
        print(f"    client's first answer through d2 {through:.3f} s after kill -9")
        d1.proc.proc.wait()
        wait_for("d2's master sync daemon", lambda: "master" in d2.ipvsadm("-L", "--daemon"), 30)
        show("d2's log at takeover (last lines)", d2.log_tail(4))
        show("directorctl status on d2", d2.ctl("status"))
        show("metrics on d2 (curl 127.0.0.1:9469/metrics | grep director_vrrp_)",
             d2.metrics("director_vrrp_state", "director_vrrp_transitions"))  # fmt: skip
        show("d1 after kill -9: nobody cleaned up its VIPs (a crash leaves them)",
             d1.ns.ip("-4", "-o", "address", "show"))  # fmt: skip
        show("6 x curl through d2", requests(client, f"http://{VIP}/", 6))

        step("directord restarted on d1: removes its leftover VIPs, preempts back (preempt = true)")
        restarted = time.time()
        d1.start()
        took = wait_for("d1's leftover VIP removed", lambda: not d1.has(GATEWAY), 400)
        # The client's polling loop (a process every 10 ms) would slow d1's start-up on the
        # guest's one CPU: it starts once d1 has programmed its table, just before its VRRP.
        wait_for("d1's first sync after the restart", lambda: d1.synced(restarted), 400)
        watcher = client.spawn("sh", "-c", UNTIL_THROUGH, "sh", d1.mac())
        print(f"    leftover VIPs removed {took:.1f} s after the restart (first act of the start)")
        # the VIPs go first (before the daemon's imports); mastership needs the whole start-up
        wait_for("d1 master again", lambda: d1.has(VIP), 400)
        wait_for("d2 back to backup", lambda: not d2.has(VIP), 30)
        took = d1.became_master() - restarted
        timings.append(("restart d1 -> master again (incl. Python start-up)", took))
        print(f"    d1 logged role=master {took:.1f} s after the restart (priority 150 > 100)")
        watcher.proc.wait(timeout=60)
        through = float(watcher.output().split()[-1]) - restarted
        timings.append(("restart d1 -> client's first request answered through d1", through))
        wait_for("d1 synced", d1.synced, 400)
        wait_for("d2's backup sync daemon", lambda: "backup" in d2.ipvsadm("-L", "--daemon"), 30)
        for d in directors:
            show(f"directorctl status on {d.name}", d.ctl("status"))
        show("6 x curl through d1", requests(client, f"http://{VIP}/", 6))

        step("timings")
        for what, seconds in timings:
            print(f"    {seconds:7.3f} s  {what}")

        step("stopping everything, removing the namespaces")
        for d in directors:
            if d.proc is not None:
                d.proc.proc.send_signal(signal.SIGTERM)
                d.proc.proc.wait(timeout=60)
    print(f"demo finished in {time.monotonic() - begun:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
