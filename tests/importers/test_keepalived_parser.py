"""The keepalived.conf tokenizer and block parser: quotes, comments, braces, include, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from director.importers.keepalived import Stmt, parse_file, tokenize_line
from director.importers.notes import ImportParseError, Notes

DATA = Path(__file__).parent / "data"


def parse_text(tmp_path: Path, text: str, name: str = "keepalived.conf") -> tuple[Stmt, Notes]:
    path = tmp_path / name
    path.write_text(text)
    notes = Notes()
    return parse_file(path, notes), notes


def test_words_quotes_escapes_and_comments() -> None:
    line = tokenize_line("""misc_path "/bin/check 'a b'" x"y z"w \\q  ! comment "not" {""", "f", 1)
    assert line.words == ["misc_path", "/bin/check 'a b'", "xy zw", "\\q"]
    assert tokenize_line("auth_pass 'se#cr!t' # trailing", "f", 1).words == [
        "auth_pass",
        "se#cr!t",
    ]
    assert tokenize_line('regex "a\\tb\\"c\\x41\\101"', "f", 1).words == ["regex", 'a\tb"cAA']
    assert tokenize_line("real_server 1.2.3.4 80{weight 2}", "f", 1).words == [
        "real_server",
        "1.2.3.4",
        "80",
        "{",
        "weight",
        "2",
        "}",
    ]
    assert tokenize_line("   # only a comment", "f", 1).words == []


def test_unterminated_quote_names_file_and_line() -> None:
    with pytest.raises(ImportParseError) as exc:
        tokenize_line('misc_path "/bin/x', "k.conf", 7)
    assert str(exc.value) == 'k.conf:7: unterminated " string'


def test_blocks_nest_and_brace_may_stand_alone(tmp_path: Path) -> None:
    root, _ = parse_text(
        tmp_path,
        "virtual_server 198.18.0.1 80\n{\n  lb_algo rr\n"
        "  real_server 198.18.1.1 80 { weight 2 }\n}\nglobal_defs {\n}\n",
    )
    assert root.children is not None
    vs, defs = root.children
    assert (vs.keyword, vs.args, vs.line) == ("virtual_server", ["198.18.0.1", "80"], 1)
    assert vs.children is not None
    assert [c.keyword for c in vs.children] == ["lb_algo", "real_server"]
    rs = vs.children[1]
    assert rs.children is not None
    assert [(c.keyword, c.args) for c in rs.children] == [("weight", ["2"])]
    assert defs.children == []


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("virtual_server 1.2.3.4 80 {\n  lb_algo rr\n", ":1:", "never closed"),
        ("global_defs {\n}\n}\n", ":3:", "closes no block"),
        ("{\n", ":1:", "follows no keyword"),
    ],
)
def test_structure_errors_name_file_and_line(
    tmp_path: Path, text: str, where: str, message: str
) -> None:
    with pytest.raises(ImportParseError) as exc:
        parse_text(tmp_path, text)
    assert f"keepalived.conf{where}" in str(exc.value)
    assert message in str(exc.value)


def test_include_globs_relative_to_the_including_file() -> None:
    notes = Notes()
    root = parse_file(DATA / "include" / "keepalived.conf", notes)
    services = [c for c in root.children or () if c.keyword == "virtual_server"]
    assert [s.args for s in services] == [["198.18.0.70", "80"], ["198.18.0.70", "25"]]
    assert services[0].file.endswith("conf.d/10-web.conf")
    mail = services[1]
    assert mail.children is not None
    real = [c for c in mail.children if c.keyword == "real_server"]
    assert real[0].file.endswith("servers/mail-real.inc")
    assert real[0].line == 1
    assert [n.setting for n in notes.items] == ["include services/none-*.conf"]


def test_missing_include_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ImportParseError) as exc:
        parse_text(tmp_path, "global_defs {\n}\ninclude /nonexistent/keepalived-extra.conf\n")
    assert "keepalived.conf:3: include /nonexistent/keepalived-extra.conf: no such file" in str(
        exc.value
    )


def test_include_loop_is_stopped(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("include a.conf\n")
    with pytest.raises(ImportParseError) as exc:
        parse_file(tmp_path / "a.conf", Notes())
    assert "nested deeper than" in str(exc.value)
