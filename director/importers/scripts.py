"""External check programs: argv from a command line, and the well-known ones made native.

keepalived's ``misc_path`` and Piranha's ``send_program`` name a program with arguments. Most
sites use one of a few well-known checks, which directord does natively (no fork per probe):

- Nagios' ``check_x224`` (RDP) -> an ``rdp`` check;
- an ``openssl s_client`` loop over ``GET /<vdir>/healthcheck.htm`` (Exchange) -> ``exchange``;
- ``wget --spider`` / ``curl`` of an ``http(s)://`` URL -> ``http`` / ``https``.

Anything else stays a ``script`` check with an argument list. A command that needs a shell
(pipes, ``;``, ``$(...)``, redirections) is run as ``["/bin/sh", "-c", TEXT]`` with a note.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ADDRESS = "{address}"
PORT = "{port}"
_VDIR = re.compile(r"GET\s+/([A-Za-z][\w-]*)/healthcheck\.htm", re.IGNORECASE)
_VDIR_VAR = re.compile(r"GET\s+/\$\{?(\w+)\}?/healthcheck\.htm", re.IGNORECASE)
_MAX_SCRIPT_BYTES = 64 * 1024


@dataclass
class Recognised:
    """A native check (TOML data) standing in for a program, and what was recognised."""

    check: dict[str, Any]
    what: str
    caveats: list[str] = field(default_factory=list)


def command_argv(text: str) -> tuple[list[str], bool]:
    """(argv, needs_shell) for a command line: words split as the shell would (quotes group).

    keepalived 2 and nanny run the program directly; a pipe, ``;``, ``&&`` or redirection
    outside quotes only works through a shell, so such a line becomes ``/bin/sh -c TEXT``.
    """
    text = text.strip()
    try:
        lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        words = list(lexer)
        argv = shlex.split(text)
    except ValueError:
        return ["/bin/sh", "-c", text], True
    if any(w and all(c in "();<>|&" for c in w) for w in words) or "`" in text:
        return ["/bin/sh", "-c", text], True
    return argv, False


def _script_text(argv: list[str]) -> str:
    """The program's own text when it is a small readable script, else ''."""
    path = Path(argv[0]) if argv else None
    if path is None or not path.is_absolute():
        return ""
    try:
        if not path.is_file() or path.stat().st_size > _MAX_SCRIPT_BYTES:
            return ""
        data = path.read_bytes()
    except OSError:
        return ""
    if b"\0" in data:
        return ""
    return data.decode("utf-8", errors="replace")


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg in names and i + 1 < len(argv):
            return argv[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


def _port(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() and 0 < int(text) < 65536 else None


def recognise(argv: list[str]) -> Recognised | None:
    """The native check for a well-known program, or None."""
    if not argv:
        return None
    words = argv[2:] if argv[:2] == ["/bin/sh", "-c"] else argv
    program = Path(words[0].split()[0] if words else "").name
    joined = " ".join(words)
    if program.startswith("check_x224"):
        check: dict[str, Any] = {"type": "rdp"}
        check["port"] = _port(_option(argv, "-p", "--port")) or 3389
        return Recognised(check, "Nagios check_x224 (RDP X.224 connection request)")
    body = joined + "\n" + _script_text(words)
    if "s_client" in body and "healthcheck.htm" in body.lower():
        return _exchange(body)
    if program in ("wget", "curl") or re.search(r"\b(wget|curl)\b", body):
        return _url_check(body)
    return None


def _exchange(body: str) -> Recognised:
    vdirs = list(dict.fromkeys(_VDIR.findall(body)))
    for var in _VDIR_VAR.findall(body):
        loop = re.search(rf"for\s+{var}\s+in\s+([^;\n]*?)\s*(;|\n|\bdo\b)", body)
        if loop:
            vdirs += [w.strip("\"'") for w in loop.group(1).split() if w.strip("\"'")]
    check: dict[str, Any] = {"type": "exchange", "verify": False}
    if vdirs:
        check["vdirs"] = list(dict.fromkeys(vdirs))
    port = re.search(r"-connect\s+\S*?:(\d+)", body)
    if port and _port(port.group(1)) is not None:
        check["port"] = int(port.group(1))
    caveats = ["openssl s_client does not verify the certificate: verify = false"]
    if "vdirs" not in check:
        caveats.append("no virtual directory found in the script: the default list is used")
    return Recognised(check, "an openssl s_client loop over /<vdir>/healthcheck.htm", caveats)


def _url_check(body: str) -> Recognised | None:
    url = re.search(r"(https?)://([^\s'\"]+)", body)
    if url is None:
        return None
    parts = urlsplit(url.group(0).replace(ADDRESS, "placeholder").replace("%h", "placeholder"))
    check: dict[str, Any] = {"type": parts.scheme}
    caveats: list[str] = []
    if parts.port is not None:
        check["port"] = parts.port
    else:
        check["port"] = 80 if parts.scheme == "http" else 443
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    check["path"] = path
    insecure = re.search(r"--no-check-certificate|--insecure|\s-[a-zA-Z]*k[a-zA-Z]*(\s|$)", body)
    if parts.scheme == "https" and insecure:
        check["verify"] = False
    host = parts.hostname or ""
    if host not in ("placeholder", "") and not re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", host):
        check["host"] = host
        caveats.append(f"the URL names {host}: it is sent as the Host header")
    if "--spider" in body:
        caveats.append("wget --spider sends HEAD then GET; the native check sends GET")
    check["expect_status"] = ["200-399"]
    tool = "wget" if "wget" in body else "curl"
    return Recognised(check, f"{tool} of {parts.scheme}://.../{path.lstrip('/')}", caveats)
