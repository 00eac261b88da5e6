"""Batched IPVS requests (many to a sendmsg, refusals matched to their request) on a fake kernel.

The fake (tests/helpers/fake_genl.py) runs each sendmsg's requests in order like Linux's
netlink_rcv_skb; the real kernel's refusals mid-batch are proven in tests/vm/test_ipvs_netlink.py.
"""

from __future__ import annotations

import errno
import ipaddress

from director.ipvs.genl import GenlSocket
from director.ipvs.memory import MemoryIPVS
from director.ipvs.model import Dest, DestKey, Protocol, Service, ServiceKey, Table
from director.ipvs.netlink import NetlinkIPVS, op_request
from director.ipvs.ops import AddDest, AddService, Op
from director.reconcile.owned import MemoryOwnedStore
from director.reconcile.plan import plan
from director.reconcile.reconciler import Reconciler
from tests.helpers.fake_genl import FAMILY_ID, FakeGenlLink
from tests.helpers.tables import web_table

A = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.10"), 443)
MISSING = ServiceKey.inet(Protocol.TCP, ipaddress.IPv4Address("198.18.0.11"), 443)
D1 = Dest(DestKey.of(ipaddress.IPv4Address("198.18.1.2"), 443), weight=3)
D2 = Dest(DestKey.of(ipaddress.IPv4Address("198.18.1.3"), 443), weight=4)


def kernel_over(memory: MemoryIPVS, queue_limit: int = 1 << 20) -> tuple[NetlinkIPVS, FakeGenlLink]:
    link = FakeGenlLink(memory, queue_limit)
    return NetlinkIPVS(GenlSocket(sock=link, family_id=FAMILY_ID)), link


def test_a_refusal_mid_batch_names_its_request_and_the_rest_still_runs() -> None:
    memory = MemoryIPVS()
    kernel, link = kernel_over(memory)
    ops: list[Op] = [
        AddService(Service(A, "wlc")),
        AddDest(MISSING, D1),  # no such service
        AddDest(A, D1),
        AddDest(A, D1),  # already there
        AddDest(A, D2),
    ]
    failures = kernel.execute(ops)
    assert link.sends == 1
    assert [(f.op, f.errno) for f in failures] == [(ops[1], errno.ESRCH), (ops[3], errno.EEXIST)]
    assert str(failures[0]).startswith(
        "adding destination 198.18.1.2:443 to TCP 198.18.0.11:443: No such process"
    )
    assert str(failures[1]) == (
        "adding destination 198.18.1.2:443 to TCP 198.18.0.10:443: File exists (it already exists)"
    )
    assert memory.table.dests[A] == {D1.key: D1, D2.key: D2}


def test_requests_span_several_sendmsgs_and_errors_land_on_the_right_one() -> None:
    memory = MemoryIPVS()
    kernel, link = kernel_over(memory)
    desired = web_table(300, 10)
    ops = plan(desired, Table())
    bad = [310, 1700, len(ops) - 1]  # in the first, a middle and the last batch
    for i in bad:
        op = ops[i]
        assert isinstance(op, AddDest)
        ops[i] = AddDest(MISSING, op.dest)
    failures = kernel.execute(ops)
    assert link.sends > 10  # 3,300 requests of ~140 bytes in 32 KiB batches
    assert [f.op for f in failures] == [ops[i] for i in bad]
    assert all(f.errno == errno.ESRCH for f in failures)
    assert sum(len(d) for d in memory.table.dests.values()) == 3000 - len(bad)


def test_batch_bytes_are_the_reference_messages_back_to_back() -> None:
    memory = MemoryIPVS()
    link = FakeGenlLink(memory)
    sock = GenlSocket(sock=link, family_id=FAMILY_ID)
    sent: list[bytes] = []
    link_send = link.send

    def record(data: bytes | bytearray, /) -> int:
        sent.append(bytes(data))
        return link_send(data)

    link.send = record  # type: ignore[method-assign]
    ops: list[Op] = [AddService(Service(A, "rr")), AddDest(A, D1), AddDest(A, D2)]
    sock.batch(map(op_request, ops))
    (data,) = sent
    offset = 0
    for op in ops:
        cmd, payload = op_request(op)
        size = 20 + len(payload)
        header = data[offset : offset + 20]
        assert data[offset + 20 : offset + size] == payload
        assert header[4:6] == FAMILY_ID.to_bytes(2, "little") and header[16] == cmd
        assert int.from_bytes(header[6:8], "little") == 0x1  # NLM_F_REQUEST, no ack asked
        offset += size
    assert data[offset + 4 : offset + 8] == bytes([1, 0, 5, 0])  # NOOP, REQUEST|ACK
    assert offset + 16 == len(data)


def test_an_overrun_answer_queue_is_reported_and_the_next_sync_repairs() -> None:
    memory = MemoryIPVS()
    kernel, link = kernel_over(memory)
    desired = web_table(20, 5)
    rec = Reconciler(kernel, MemoryOwnedStore())
    rec.sync(desired, full=True)
    link.queue_limit = 3  # room for three answers: the refusals below overrun it
    extra = Dest(DestKey.of(ipaddress.IPv4Address("198.18.2.1"), 80))
    ops: list[Op] = [AddDest(MISSING, d) for d in (D1, D2, extra, D1, D2)]
    ops += [AddDest(k, extra) for k in desired.services]  # done, but not in the config
    failures = kernel.execute(ops)
    lost = [f for f in failures if f.errno == errno.ENOBUFS]
    assert lost, failures
    assert all(str(f).endswith("No buffer space available") for f in lost)
    # What the kernel did is read back: the next full sync brings it to the desired table.
    link.queue_limit = 1 << 20
    result = rec.sync(desired, full=True)
    assert result.ok and len(result.ops) == len(desired.services)  # the extras deleted
    assert memory.table == desired
    assert plan(desired, kernel.dump()) == []


def test_cold_apply_reads_the_table_back_in_one_dump() -> None:
    memory = MemoryIPVS()
    kernel, link = kernel_over(memory)
    desired = web_table(100, 4)
    rec = Reconciler(kernel, MemoryOwnedStore())
    result = rec.sync(desired, full=True)
    assert result.ok and result.counts == (100, 400)
    assert rec.observed == desired
    # a dump of the empty kernel, 500 requests in 3 batches, a dump after (1 + 100 requests)
    assert link.sends == 1 + 3 + (1 + 100)
