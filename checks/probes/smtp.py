"""SMTP: banner 220, EHLO 250, optionally STARTTLS (220, TLS handshake, EHLO 250 again), QUIT.

Replies are read line by line (RFC 5321 section 4.2: ``250-...`` continues, ``250 ...`` ends);
the parser is pure. A 4xx/5xx banner (``421 too busy``, ``554 no service``) is down with the
server's text, as is a server that does not offer STARTTLS when it is asked for, or garbage.
The QUIT reply is waited for briefly and never decides the verdict.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from dataclasses import dataclass

from checks.probes.result import ProbeFailed, ProbeResult, Step, Target, guarded, preview, stream

MAX_REPLY_LINES = 100
QUIT_WAIT = 1.0  # at most, and never past the probe's deadline: QUIT does not decide


@dataclass(frozen=True)
class SmtpSpec:
    """What an SMTP check says and expects."""

    helo_name: str = "localhost"
    starttls: bool = False
    server_name: str | None = None  # SNI and the name checked in the certificate
    verify: bool = False
    ca_file: str | None = None

    def __post_init__(self) -> None:
        if (
            not self.helo_name
            or not self.helo_name.isascii()
            or any(c.isspace() or not c.isprintable() for c in self.helo_name)
        ):
            raise ValueError(
                f"helo_name must be a host name or address literal: {self.helo_name!r}"
            )


@dataclass(frozen=True)
class Reply:
    """An SMTP reply: its code and its lines."""

    code: int
    lines: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.code} {' / '.join(self.lines)}".rstrip()


class SmtpSyntaxError(ValueError):
    """A line that is not an SMTP reply line."""


def parse_line(line: bytes) -> tuple[int, bool, str]:
    """b"250-SIZE 10240000\\r\\n" -> (250, False, "SIZE 10240000"): code, last line?, text."""
    text = line.rstrip(b"\r\n")
    code, sep = text[:3], text[3:4]
    if (
        len(code) != 3
        or not code.isdigit()
        or not b"2" <= code[:1] <= b"5"
        or sep not in (b"", b" ", b"-")
    ):
        raise SmtpSyntaxError(f"not an SMTP reply line: {preview(line)}")
    return int(code), sep != b"-", text[4:].decode("utf-8", errors="replace")


def parse_reply(lines: list[bytes]) -> Reply:
    """A complete multi-line reply from its lines (the last one without '-')."""
    parsed = [parse_line(line) for line in lines]
    codes = {code for code, _last, _text in parsed}
    if len(codes) != 1:
        raise SmtpSyntaxError(f"reply lines with different codes: {sorted(codes)}")
    return Reply(parsed[0][0], tuple(text for _code, _last, text in parsed))


def offers(ehlo: Reply, extension: str) -> bool:
    """Whether an EHLO reply lists extension (the first line is the greeting)."""
    return any(line.split(" ")[0].upper() == extension for line in ehlo.lines[1:])


@functools.lru_cache(maxsize=16)
def tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context(cafile=ca_file)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


async def read_reply(reader: asyncio.StreamReader, step: Step) -> Reply:
    lines: list[bytes] = []
    while len(lines) < MAX_REPLY_LINES:
        try:
            line = await reader.readline()
        except ValueError as exc:  # longer than the reader's limit
            raise ProbeFailed(f"SMTP reply line over 64 KiB from {step.target}") from exc
        if not line.endswith(b"\n"):
            got = f" (received {preview(line)})" if line else ""
            raise ProbeFailed(f"{step.target} closed the connection while {step.doing}{got}")
        lines.append(line)
        try:
            if parse_line(line)[1]:
                return parse_reply(lines)
        except SmtpSyntaxError as exc:
            raise ProbeFailed(f"bad reply while {step.doing}: {exc}") from exc
    raise ProbeFailed(f"SMTP reply of more than {MAX_REPLY_LINES} lines from {step.target}")


async def command(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, step: Step, line: str, want: int
) -> Reply:
    verb = line.split(" ")[0]
    step.doing = f"waiting for the reply to {verb} from {step.target}"
    writer.write(line.encode("ascii") + b"\r\n")
    await writer.drain()
    reply = await read_reply(reader, step)
    if reply.code != want:
        raise ProbeFailed(f"{step.target} answered {verb} with {reply} (expected {want})")
    return reply


async def probe(
    target: Target,
    spec: SmtpSpec,
    timeout: float,  # noqa: ASYNC109
) -> ProbeResult:
    async def check(step: Step) -> None:
        context = None
        if spec.starttls:
            try:
                context = tls_context(spec.verify, spec.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ProbeFailed(f"cannot load ca_file {spec.ca_file}: {exc}") from exc
        async with stream(step) as (reader, writer):
            step.doing = f"waiting for the SMTP banner from {target}"
            banner = await read_reply(reader, step)
            if banner.code != 220:
                raise ProbeFailed(f"SMTP banner from {target} is {banner} (expected 220)")
            ehlo = await command(reader, writer, step, f"EHLO {spec.helo_name}", 250)
            if context is not None:
                if not offers(ehlo, "STARTTLS"):
                    raise ProbeFailed(f"{target} does not offer STARTTLS (EHLO reply: {ehlo})")
                await command(reader, writer, step, "STARTTLS", 220)
                step.doing = f"in the TLS handshake with {target} after STARTTLS"
                name = spec.server_name or (str(target.address) if spec.verify else None)
                await writer.start_tls(context, server_hostname=name)
                await command(reader, writer, step, f"EHLO {spec.helo_name}", 250)
            step.doing = f"saying QUIT to {target}"
            writer.write(b"QUIT\r\n")
            loop = asyncio.get_running_loop()
            quit_by = min(loop.time() + QUIT_WAIT, step.deadline - 0.01)
            with contextlib.suppress(TimeoutError, ProbeFailed, OSError):
                async with asyncio.timeout_at(quit_by):
                    await writer.drain()
                    await read_reply(reader, step)

    return await guarded(target, timeout, check)
