"""The stored login of the remote CLI: the cloud API's URL and a token, in
``$XDG_CONFIG_HOME/coldchain/login.json`` (``~/.config/coldchain/login.json`` without it), a file
of mode 0600 in a folder of mode 0700, written whole or not at all. A file others may read is
refused (it holds a token), as ssh refuses a private key. A token is never sent in clear text to
another host: plain ``http://`` is for loopback addresses unless the operator said ``--insecure``."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from coldchain.errors import TargetError

FILE = "login.json"
INSECURE_ENV = "COLDCHAIN_INSECURE"  # "1": allow a plain-http URL given with --url / COLDCHAIN_URL


@dataclass(frozen=True)
class Login:
    url: str  # normalised: scheme://host[:port][/path], no trailing slash
    token: str
    insecure: bool = False  # plain http to a non-loopback host, accepted at login


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/coldchain`` (if absolute, as the XDG spec says), else ``~/.config/coldchain``."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".config") / "coldchain"


def path() -> Path:
    return config_dir() / FILE


def normalised(url: str) -> str:
    """``url`` checked (http or https, a host, no credentials, query or fragment) without its trailing slash."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetError(f"the cloud's URL is http(s)://HOST[:PORT][/PATH], got {url[:200]!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise TargetError("the cloud's URL takes no user name, password, query or fragment: the token is given "
                          "with --token or asked for")
    try:
        parts.port  # noqa: B018 (raises for a port that is not a number)
    except ValueError as exc:
        raise TargetError(f"the cloud's URL has a bad port: {url[:200]!r}") from exc
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_transport(url: str, insecure: bool) -> None:
    """Refuse plain http to anything but this machine unless ``insecure``: the token would cross the
    network in clear text, readable (and usable) by anyone on the way."""
    if url.startswith("http://") and not loopback(url) and not insecure:
        raise TargetError(f"{url} is plain http to another host: the token would cross the network in clear text. "
                          "Use https:// (a TLS proxy in front of the API), or accept the risk with --insecure "
                          f"(`coldchain login URL --insecure`, or {INSECURE_ENV}=1 with --url)")


def save(login: Login) -> Path:
    """Write the login atomically: a 0600 file in a 0700 folder (created, or tightened, for it)."""
    folder = config_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    target, partial = folder / FILE, folder / f".{FILE}.{os.getpid()}"
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(login), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def load() -> Login | None:
    """The stored login, or None when there is none."""
    where = path()
    try:
        mode = stat.S_IMODE(where.stat().st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TargetError(f"cannot read the login file {where}: {exc.strerror}") from exc
    if mode & 0o077:
        raise TargetError(f"{where} holds a token but others may read it (mode {mode:04o}): `chmod 600 {where}`, "
                          "or `coldchain logout` and log in again")
    try:
        data = json.loads(where.read_text())
        login = Login(url=normalised(str(data["url"])), token=str(data["token"]), insecure=bool(data["insecure"]))
    except (OSError, ValueError, KeyError, TypeError, TargetError) as exc:
        raise TargetError(f"{where} is not a login coldchain wrote ({exc}): `coldchain logout`, then "
                          "`coldchain login URL`") from exc
    return login


def remove() -> Path | None:
    """Forget the stored login; the path it was at, or None when there was none."""
    where = path()
    try:
        where.unlink()
    except FileNotFoundError:
        return None
    return where
