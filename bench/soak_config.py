"""The soak benchmark's director config as data (:mod:`bench.soak`): 200 virtual services of
10 real servers on the farm's addresses, checked every second, VRRP against the peer, nftables
rules that follow the role, the sync daemon. :meth:`Plan.change` is what each reload changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.checks import addresses
from tests.vrrp_io.lab import VIP

VRID = 51
MASTER, BACKUP, PEER_PRIORITY = 150, 50, 100
METRICS_PORT = 9469
SPARES = 10  # farm addresses beyond --checks: real servers added and removed by reloads


@dataclass
class Plan:
    """The director's config as data; :meth:`render` writes the TOML."""

    services: list[list[str]]  # per virtual service, its real servers' addresses
    spares: list[str]
    advert_interval: float
    weights: dict[str, int] = field(default_factory=dict)
    priority: int = MASTER
    added: list[tuple[int, str]] = field(default_factory=list)  # (service, address) by reloads

    @classmethod
    def of(cls, checks: int, per_service: int, advert_interval: float) -> Plan:
        farm = addresses(checks + SPARES)
        used, spares = farm[:checks], farm[checks:]
        services = [used[i : i + per_service] for i in range(0, len(used), per_service)]
        return cls(services, spares, advert_interval)

    def checks(self) -> int:
        return sum(len(s) for s in self.services)

    def all(self) -> list[str]:
        """Every farm address, spares included (they are served from the start)."""
        return [a for s in self.services for a in s if a not in self.spares] + self.spares

    def change(self, n: int) -> str:
        """The n-th reload's change (n >= 1): a weight, and every third reload a real server
        added (odd) or removed (even). What changed, for the log."""
        servers = [a for s in self.services for a in s]
        address = servers[(n * 7919) % len(servers)]
        weight = 1 + n % 4
        self.weights[address] = weight
        what = f"weight {address} {weight}"
        if n % 3 == 0:
            if (n // 3) % 2 == 1 or not self.added:
                index = (n // 3) % len(self.services)
                spare = self.spares[(n // 3) % len(self.spares)]
                if spare not in self.services[index]:
                    self.services[index].append(spare)
                    self.added.append((index, spare))
                    what += f", +{spare} in svc{index:03}"
            else:
                index, spare = self.added.pop(0)
                self.services[index].remove(spare)
                what += f", -{spare} from svc{index:03}"
        return what

    def render(self, state: Path, sock: Path) -> str:
        head = f"""[daemon]
state_dir = "{state}"
control_socket = "{sock}"
metrics_address = "127.0.0.1:{METRICS_PORT}"
log_format = "json"
max_concurrent_probes = 512
resync_interval = 30.0

[[vrrp_instance]]
name = "VI_1"
interface = "eth0"
vrid = {VRID}
priority = {self.priority}
version = 3
advert_interval = {self.advert_interval:g}
virtual_addresses = ["{VIP}/32"]

[sync_daemon]
interface = "eth0"

[[fwmark]]
mark = 80
address = "{VIP}"
ports = [80, 443]

[[snat]]
source = "198.18.64.0/18"
to = "{VIP}"

[[masquerade]]
source = "198.18.128.0/24"
out_interface = "eth0"

[[virtual_server]]
name = "fw80"
fwmark = 80
"""
        parts = [head]
        for i, servers in enumerate(self.services):
            parts.append(
                f"""
[[virtual_server]]
name = "svc{i:03}"
protocol = "tcp"
address = "{VIP}"
port = {10000 + i}
scheduler = "wrr"
  [virtual_server.check]
  type = "http"
  interval = 1.0
  timeout = 1.0
"""
            )
            for address in servers:
                weight = self.weights.get(address, 1)
                parts.append(
                    "  [[virtual_server.real_server]]\n"
                    f'  address = "{address}"\n  port = 80\n  weight = {weight}\n'
                )
        return "".join(parts)
