"""BGP VIPs as local addresses: ``[bgp] vip_device`` (e.g. ``"lo"``).

IPVS takes packets at LOCAL_IN, so every active director must accept the VIP as one of its own
addresses. With ``vip_device`` set, directord adds each announced prefix's address (/32, /128)
to that device at start and on reload, and removes the ones it added when they are no longer
configured and at stop (after the routes were withdrawn). An address that was already there is
left alone. Without it, the operator places the VIPs (``ip address add VIP/32 dev lo``).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

import structlog
from pyroute2.iproute.linux import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from director.config.fields import IPAddress

log = structlog.get_logger("director.bgp")


class VipDevice:
    def __init__(self, device: str, netns: str | None = None) -> None:
        self.device = device
        self.netns = netns
        self.added: set[IPAddress] = set()  # ours to remove
        self.errors: list[str] = []

    def _open(self) -> AsyncIPRoute:
        return AsyncIPRoute(netns=self.netns) if self.netns else AsyncIPRoute()

    async def place(self, wanted: Iterable[IPAddress]) -> None:
        """Make the addresses on the device ours = ``wanted`` (others' addresses untouched)."""
        want = set(wanted)
        ipr = self._open()
        try:
            await ipr.setup_endpoint()
            found = await ipr.link_lookup(ifname=self.device)
            if not found:
                self._error(f"placing BGP VIPs: no device {self.device}")
                return
            index = found[0]
            for address in sorted(self.added - want, key=str):
                await self._change(ipr, "del", index, address)
            for address in sorted(want - self.added, key=str):
                await self._change(ipr, "add", index, address)
        finally:
            ipr.close()

    async def _change(self, ipr: AsyncIPRoute, verb: str, index: int, address: IPAddress) -> None:
        prefixlen = 32 if address.version == 4 else 128
        try:
            await ipr.addr(verb, index=index, address=str(address), prefixlen=prefixlen)
        except NetlinkError as exc:
            if verb == "add" and exc.code == errno.EEXIST:
                return  # already there (not ours: it stays when we go)
            if verb == "del" and exc.code == errno.EADDRNOTAVAIL:
                self.added.discard(address)
                return
            self._error(
                f"{'adding' if verb == 'add' else 'removing'} {address}/{prefixlen} "
                f"on {self.device}: {exc.args[1] if len(exc.args) > 1 else exc}"
            )
            return
        if verb == "add":
            self.added.add(address)
        else:
            self.added.discard(address)
        log.info("bgp_vip", action="added" if verb == "add" else "removed",
                 address=str(address), device=self.device)  # fmt: skip

    def _error(self, text: str) -> None:
        self.errors = [*self.errors[-9:], text]
        log.error("bgp_vip_failed", error=text)
