# Copyright: (c) 2026, AKIG Engineering Team
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Point the DATABASE_URL of an env file at another PostgreSQL host and port, changing nothing else.

The env file is read the way AKIG's backend reads it (``lab/app/backend/src/config.js``):
``KEY=value``, an optional ``export`` prefix, ``"double quoted"`` (backslash escapes),
``'single quoted'`` (literal), unquoted values ending at an inline ``" #"`` comment, blank and
``#`` lines ignored, the last line of a key winning. :func:`repoint_env` rewrites the host and
port of every ``DATABASE_URL`` line in place -- quoting, ``export``, comments, the user, the
password (with its percent-encoding or a raw ``@``), the database and the query stay as they
are -- and refuses, naming the line and the cause, what it cannot read with certainty.

No message holds any part of the URL (a misread URL could put part of the password where the host
or port should be); only the return value of a successful repoint names the hosts and ports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple
from urllib.parse import parse_qsl, unquote

__all__ = ["DatabaseUrlError", "UrlParts", "connect_params", "env_url", "parse_env_value", "parse_url", "repoint_env",
           "repoint_url"]

SCHEMES = ("postgres", "postgresql")
DEFAULT_PORT = 5432
_LINE_RE = re.compile(r"^(?P<lead>\s*(?:export\s+)?)(?P<key>[A-Za-z_][A-Za-z0-9_]*)(?P<eq>\s*=\s*)(?P<rest>.*)$")
_URL_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<tail>.*)$", re.DOTALL)
_HOST_RE = re.compile(r"^[A-Za-z0-9._~%-]+$")
_IPV6_RE = re.compile(r"^[0-9A-Fa-f:.]+(?:%[A-Za-z0-9._~-]+)?$")
_QUERY_TARGETS = ("host", "hostaddr", "port")
# what a libpq connection may take from the app's URL besides the login (node-postgres' ssl=true reads as require)
_LIBPQ_QUERY = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl", "sslpassword", "target_session_attrs")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t"}


class DatabaseUrlError(ValueError):
    """The env file or its URL cannot be repointed with certainty; the message says why (never the URL)."""


@dataclass(frozen=True)
class UrlParts:
    """Where the host and port sit in a URL (``start``/``end`` delimit ``host[:port]``)."""

    scheme: str
    host: str
    port: Optional[int]
    start: int
    end: int
    bracketed: bool


# --------------------------------------------------------------------------- URLs


def parse_url(url: str) -> UrlParts:
    """The host and port of a ``postgres[ql]://[userinfo@]host[:port][/db][?query]`` URL, with their position.

    The userinfo ends at the **last** ``@`` of the authority, so a raw ``@`` in a password is read as libpq
    and Node's URL parser read it. An IPv6 host is written in brackets. Several hosts, an empty host (a
    Unix socket), a host or port in the query and other schemes are refused.
    """
    if not isinstance(url, str):
        raise DatabaseUrlError("the value is not a string")
    match = _URL_RE.match(url)
    if not match:
        raise DatabaseUrlError("the value is not a URL (expected postgresql://user:password@host:port/database)")
    scheme = match.group("scheme")
    if scheme.lower() not in SCHEMES:
        raise DatabaseUrlError("the URL scheme is %r, not postgresql:// or postgres://" % scheme)
    tail_start = match.start("tail")
    tail = match.group("tail")
    authority_end = next((index for index, char in enumerate(tail) if char in "/?#"), len(tail))
    authority = tail[:authority_end]
    at = authority.rfind("@")
    host_start = at + 1
    hostport = authority[host_start:]
    if "," in hostport:
        raise DatabaseUrlError("the URL names several hosts; repoint it by hand")
    if hostport.startswith("["):
        close = hostport.find("]")
        if close < 0:
            raise DatabaseUrlError("the URL's IPv6 host has no closing bracket")
        host, after, bracketed = hostport[1:close], hostport[close + 1:], True
        if not _IPV6_RE.match(host):
            raise DatabaseUrlError("the URL's bracketed host is not an IPv6 address")
    else:
        host, _sep, port_text = hostport.partition(":")
        after, bracketed = (":" + port_text) if _sep else "", False
        if not host:
            raise DatabaseUrlError("the URL has no host (a Unix socket or a host in the query); repoint it by hand")
        if not _HOST_RE.match(host):
            raise DatabaseUrlError("the URL's host is not a host name or an address (a reserved character such "
                                   "as '/', '?' or '#' in the password must be percent-encoded)")
    port: Optional[int] = None
    if after:
        if not after.startswith(":") or not after[1:].isdigit() or not 1 <= int(after[1:]) <= 65535:
            raise DatabaseUrlError("the URL's port is not a TCP port from 1 to 65535 (a reserved character such as "
                                   "'/', '?' or '#' in the password must be percent-encoded)")
        port = int(after[1:])
    if "@" in tail[authority_end:]:
        # postgresql://user:pa/ss@host/db reads as host "user" and path "/ss@host/db": ambiguous, refused
        raise DatabaseUrlError("the URL has an '@' after its host, so where the password ends is ambiguous (a "
                               "reserved character such as '/', '?' or '#' in the password must be percent-encoded)")
    query = tail[authority_end:].partition("?")[2].partition("#")[0]
    for pair in query.split("&") if query else []:
        if pair.partition("=")[0].lower() in _QUERY_TARGETS:
            raise DatabaseUrlError("the URL sets %s in its query string, which would override the host; repoint it "
                                   "by hand" % pair.partition("=")[0].lower())
    start = tail_start + host_start
    return UrlParts(scheme=scheme, host=host, port=port, start=start, end=tail_start + authority_end,
                    bracketed=bracketed)


def _hostport(host: str, port: Optional[int]) -> str:
    text = "[%s]" % host if ":" in host else host
    return text if port is None else "%s:%d" % (text, port)


def _check_target(host: Any, port: Any) -> Tuple[str, int]:
    if not isinstance(host, str) or not host.strip():
        raise DatabaseUrlError("the new host must be a host name or an IP address, got %r" % (host,))
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not (_IPV6_RE.match(host) if ":" in host else _HOST_RE.match(host)):
        raise DatabaseUrlError("the new host %r is not a host name or an IP address" % host)
    if isinstance(port, bool) or not isinstance(port, (int, str)) or not str(port).isdigit() \
            or not 1 <= int(port) <= 65535:
        raise DatabaseUrlError("the new port must be a TCP port from 1 to 65535, got %r" % (port,))
    return host, int(port)


def repoint_url(url: str, host: str, port: int = DEFAULT_PORT) -> Tuple[str, UrlParts]:
    """``url`` with its host and port replaced; the URL's other characters are kept as they are.

    A URL without a port keeps none when ``port`` is the default 5432 (libpq's default), else gets it.
    """
    host, port = _check_target(host, port)
    parts = parse_url(url)
    new_port: Optional[int] = port if (parts.port is not None or port != DEFAULT_PORT) else None
    return url[:parts.start] + _hostport(host, new_port) + url[parts.end:], parts


# --------------------------------------------------------------------------- env files


def parse_env_value(rest: str) -> Tuple[str, int, int, str]:
    """(value, start, end, quote) of the text after ``KEY=``: the value as the app reads it, and where its
    raw text sits in ``rest`` (between the quotes for a quoted value)."""
    if rest.startswith('"'):
        index = 1
        while index < len(rest):
            if rest[index] == "\\":
                index += 2
                continue
            if rest[index] == '"':
                raw = rest[1:index]
                value = re.sub(r'\\(["\\nrt])', lambda found: _ESCAPES.get(found.group(1), found.group(1)), raw)
                return value, 1, index, '"'
            index += 1
        raise DatabaseUrlError("the double-quoted value has no closing quote")
    if rest.startswith("'"):
        end = rest.find("'", 1)
        if end < 0:
            raise DatabaseUrlError("the single-quoted value has no closing quote")
        return rest[1:end], 1, end, "'"
    comment = re.search(r"\s#", rest)
    raw_end = comment.start() if comment else len(rest)
    raw = rest[:raw_end]
    stripped = raw.rstrip()
    return stripped.strip(), len(raw) - len(raw.lstrip()), len(stripped), ""


def repoint_env(text: str, host: str, port: int = DEFAULT_PORT, key: str = "DATABASE_URL") -> Dict[str, Any]:
    """Point every ``key`` line of the env file ``text`` at ``host``:``port``.

    Returns ``changed``, the new ``text``, ``lines`` (1-based numbers of the ``key`` lines) and
    ``before`` (``host:port`` each pointed at, the port ``None`` when the URL has none). Raises
    :class:`DatabaseUrlError` (naming the line, never the URL) when the file has no such line or a
    line cannot be read with certainty.
    """
    if not isinstance(text, str):
        raise DatabaseUrlError("the env file content is not text")
    new_host, new_port = _check_target(host, port)
    lines = text.splitlines(keepends=True)
    found: List[int] = []
    before: List[Dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        body = line.rstrip("\r\n")
        stripped = body.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE_RE.match(body)
        if not match or match.group("key") != key:
            continue
        found.append(number)
        rest_start = match.start("rest")
        try:
            # the host and port hold no quote, backslash or space (_check_target), so they are written as they are
            value, start, end, _quote = parse_env_value(match.group("rest"))
            raw = match.group("rest")[start:end]
            parts = parse_url(raw)
            seen = parse_url(value)
            if (seen.host, seen.port) != (parts.host, parts.port):
                raise DatabaseUrlError("its escapes change the host or port")
            new_raw, _parts = repoint_url(raw, new_host, new_port)
        except DatabaseUrlError as exc:
            raise DatabaseUrlError("line %d (%s): %s; nothing was changed" % (number, key, exc)) from None
        before.append({"line": number, "host": parts.host, "port": parts.port})
        offset = rest_start + start
        lines[number - 1] = body[:offset] + new_raw + body[rest_start + end:] + line[len(body):]
    if not found:
        raise DatabaseUrlError("no %s line (KEY=VALUE, optionally after export) in the env file; nothing was changed"
                               % key)
    new_text = "".join(lines)
    return {"changed": new_text != text, "text": new_text, "lines": found, "before": before,
            "host": new_host, "port": new_port}


# --------------------------------------------------------------------------- connecting as the app


def env_url(text: str, key: str = "DATABASE_URL") -> str:
    """The value of the last ``key`` line of the env file ``text``, as the app reads it (the last line wins).
    Raises :class:`DatabaseUrlError` naming the line, never the value."""
    value = None
    for number, line in enumerate(text.splitlines(), start=1):
        match = _LINE_RE.match(line)
        if not line.strip() or line.strip().startswith("#") or not match or match.group("key") != key:
            continue
        try:
            value = parse_env_value(match.group("rest"))[0]
        except DatabaseUrlError as exc:
            raise DatabaseUrlError("line %d (%s): %s" % (number, key, exc)) from None
    if value is None:
        raise DatabaseUrlError("no %s line (KEY=VALUE, optionally after export) in the env file" % key)
    return value


def connect_params(url: str) -> Dict[str, Any]:
    """psycopg2/libpq keyword arguments that log in as ``url`` does: host, port, user, password (percent-decoded),
    dbname and the TLS settings of its query (node-postgres' ``ssl=true`` as ``sslmode=require``). The result
    holds the password: never print or return it."""
    parts = parse_url(url)
    tail = url[len(parts.scheme) + 3:]
    userinfo = url[len(parts.scheme) + 3:parts.start - 1] if parts.start > len(parts.scheme) + 3 else ""
    user, _sep, password = userinfo.partition(":")
    rest = tail[parts.end - len(parts.scheme) - 3:]
    path, _q, query = rest.partition("?")
    query = query.partition("#")[0]
    params: Dict[str, Any] = {"host": parts.host, "port": parts.port or DEFAULT_PORT}
    if user:
        params["user"] = unquote(user)
    if _sep:
        params["password"] = unquote(password)
    dbname = unquote(path.partition("#")[0].lstrip("/"))
    if dbname:
        params["dbname"] = dbname
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in _LIBPQ_QUERY:
            params[name] = value
        elif name == "ssl" and value.lower() in ("true", "1", "require") and "sslmode" not in params:
            params["sslmode"] = "require"
    return params
