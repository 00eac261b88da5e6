"""The network rules the director owns: nftables marks and NAT, and policy routes.

``ruleset`` (pure: config + role -> rules as data -> plan), ``nft`` (applies a plan in one
transaction), ``routes`` (policy routes over netlink), ``service`` (follows role and config).
"""

from director.network.nft import Nft, NftError
from director.network.routes import PolicyRoutes, RouteError
from director.network.service import NetworkRules

__all__ = ["NetworkRules", "Nft", "NftError", "PolicyRoutes", "RouteError"]
