"""The state directory: key pairs made once and reused, the client config, sockets.

Zero-config runs keep everything a restart must find again in one directory, by default
``$XDG_STATE_HOME/wgslirpy`` (XDG Base Directory spec: "state data that should persist
between (application) restarts"), else ``~/.local/state/wgslirpy``; ``--state-dir`` picks
another. Contract:

* the directory is created with mode 0700 (existing ones we own are tightened to 0700);
* every file written here is created with mode 0600 and replaced atomically (write to a
  temporary file in the same directory, ``os.replace``), so a crash never leaves half a key;
* a key file holds one base64 key and a newline, exactly as ``wg genkey`` writes it, and is
  never rewritten once it exists (the client keeps working across restarts);
* nothing here opens a network socket; problems raise :class:`ConfigError` naming the path.

Files: ``gateway.key`` (our private key), ``client.key`` (the client's private key),
``client.conf`` (the client's wg-quick config, rewritten at each start), ``uapi.sock`` (the
control socket ``wgslirpy show`` reads) and ``peer-endpoint`` (the peer's last address).
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from .atomicfile import write_atomic
from .config import read_key_file
from .errors import ConfigError
from .wg import crypto

GATEWAY_KEY = "gateway.key"
CLIENT_KEY = "client.key"
CLIENT_CONF = "client.conf"
UAPI_SOCKET = "uapi.sock"
PEER_ENDPOINT = "peer-endpoint"

#: In-tunnel addresses of a zero-config start (the classic SLiRP 10.0.2.0/24 plan):
#: the gateway answers ping at the first two, DNS at the next two; the client gets the last.
DEFAULT_PINGABLE = ("10.0.2.1", "fd00::1")
DEFAULT_DNS = ("10.0.2.53", "fd00::53")
DEFAULT_CLIENT_ADDRESSES = ("10.0.2.15/32", "fd00::15/128")
#: keepalive the printed client config asks for (keeps NAT mappings towards us open)
DEFAULT_CLIENT_KEEPALIVE = 25


def default_state_dir(env: Mapping[str, str] | None = None, home: str | None = None) -> Path:
    """``$XDG_STATE_HOME/wgslirpy`` if that is an absolute path, else ``~/.local/state/wgslirpy``."""
    env = os.environ if env is None else env
    xdg = env.get("XDG_STATE_HOME", "")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "wgslirpy"
    base = Path(home) if home is not None else Path(os.path.expanduser("~"))
    return base / ".local" / "state" / "wgslirpy"


def genkey(rng: Callable[[int], bytes] = os.urandom) -> str:
    """A new private key as ``wg genkey`` prints it (base64 of a clamped X25519 scalar, no newline)."""
    return base64.b64encode(crypto.generate_private_key(rng)).decode("ascii")


def pubkey(private_key: bytes) -> str:
    """The base64 public key of a raw private key, as ``wg pubkey`` prints it (no newline)."""
    return base64.b64encode(crypto.public_key(private_key)).decode("ascii")


class StateDir:
    """One state directory; see the module docstring for what it holds."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        #: absolute path of the directory (it may not exist until :meth:`ensure`)
        self.path = Path(os.path.abspath(os.fspath(path)))

    def file(self, name: str) -> Path:
        return self.path / name

    def ensure(self) -> Path:
        """Create the directory (mode 0700, parents as needed) or tighten ours to 0700."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            st = self.path.stat()
            if not stat.S_ISDIR(st.st_mode):
                raise ConfigError(f"--state-dir: {self.path} is not a directory")
            if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) != 0o700:
                os.chmod(self.path, 0o700)
        except OSError as e:
            raise ConfigError(f"--state-dir: cannot create {self.path}: {e.strerror or e}") from None
        return self.path

    def write_private(self, name: str, text: str, *, exclusive: bool = False) -> Path:
        """Write ``text`` to ``name`` atomically with mode 0600; returns the path.

        ``exclusive``: never replace an existing file (FileExistsError if there is one), so
        two processes creating the same key at once agree on the first one written."""
        self.ensure()
        target = self.file(name)
        try:
            write_atomic(target, text, exclusive=exclusive, prefix=f".{name}.")  # mode 0600
        except FileExistsError:
            raise
        except OSError as e:
            raise ConfigError(f"cannot write {target}: {e.strerror or e}") from None
        return target

    def key(self, name: str, *, rng: Callable[[int], bytes] = os.urandom) -> tuple[bytes, bool]:
        """The private key in ``name``, made (``wg genkey`` format, 0600) if missing.

        Returns ``(raw key, created)``. An existing file is read, never rewritten.
        """
        path = self.file(name)
        created = False
        if not path.exists():
            try:
                self.write_private(name, genkey(rng) + "\n", exclusive=True)
                created = True
            except FileExistsError:
                pass  # another process made it first: use theirs
        return read_key_file(str(path), "state directory key"), created

    def has(self, name: str) -> bool:
        return self.file(name).exists()
