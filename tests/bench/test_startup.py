"""bench.startup compares like with like: keepalived's config is the Exchange example's table
and VRRP instance, as the keepalived importer reads it."""

from __future__ import annotations

from pathlib import Path

from bench.startup import KEEPALIVED_CONF, our_config
from director.config import parse_config
from director.desired import compile_table
from director.importers.emit import dumps
from director.importers.from_keepalived import import_keepalived


def test_keepalived_conf_imports_as_the_exchange_table_and_vrrp_instance(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF)
    imported = parse_config(dumps(import_keepalived(conf).config), "<imported>")
    ours = parse_config(our_config(tmp_path), "<bench>")
    assert compile_table(imported) == compile_table(ours)
    assert len(compile_table(ours).services) == 3
    (theirs_vi,) = imported.vrrp_instances
    (ours_vi,) = ours.vrrp_instances
    fields = ("interface", "vrid", "priority", "version", "advert_interval", "preempt")
    assert {f: getattr(theirs_vi, f) for f in fields} == {f: getattr(ours_vi, f) for f in fields}

    def placed(vi: object) -> list[tuple[object, str]]:
        return [(a.address, a.device or vi.interface) for a in vi.virtual_addresses]  # type: ignore[attr-defined]

    assert placed(theirs_vi) == placed(ours_vi) == [(ours_vi.virtual_addresses[0].address, "eth0")]
    assert ours.daemon.state_dir == str(tmp_path)
