"""Operations on the IPVS table: what the planner emits and a kernel executes, in order."""

from __future__ import annotations

from dataclasses import dataclass

from director.ipvs.model import Dest, DestKey, Service, ServiceKey


@dataclass(frozen=True)
class AddService:
    """Add a virtual service."""

    service: Service

    def describe(self) -> str:
        return f"adding service {self.service.key}"


@dataclass(frozen=True)
class EditService:
    """Change a virtual service's settings."""

    service: Service

    def describe(self) -> str:
        return f"editing service {self.service.key}"


@dataclass(frozen=True)
class DelService:
    """Delete a virtual service."""

    key: ServiceKey

    def describe(self) -> str:
        return f"deleting service {self.key}"


@dataclass(frozen=True)
class AddDest:
    """Add a destination to a virtual service."""

    service: ServiceKey
    dest: Dest

    def describe(self) -> str:
        return f"adding destination {self.dest.key} to {self.service}"


@dataclass(frozen=True)
class EditDest:
    """Change a destination's settings."""

    service: ServiceKey
    dest: Dest

    def describe(self) -> str:
        return f"editing destination {self.dest.key} of {self.service}"


@dataclass(frozen=True)
class DelDest:
    """Delete a destination from a virtual service."""

    service: ServiceKey
    key: DestKey

    def describe(self) -> str:
        return f"deleting destination {self.key} from {self.service}"


Op = AddService | EditService | DelService | AddDest | EditDest | DelDest


@dataclass(frozen=True)
class OpFailure:
    """An operation the kernel refused, with the errno it gave."""

    op: Op
    errno: int
    message: str

    def __str__(self) -> str:
        return f"{self.op.describe()}: {self.message}"


def touched_services(ops: list[Op]) -> set[ServiceKey]:
    """The services whose kernel state an operation list changes."""
    keys: set[ServiceKey] = set()
    for op in ops:
        if isinstance(op, AddService | EditService):
            keys.add(op.service.key)
        elif isinstance(op, DelService):
            keys.add(op.key)
        else:
            keys.add(op.service)
    return keys
