"""pytest plugin: the real INN 2.7 server on 127.0.0.1, as fixtures and helpers.

Owns: making sure INN is up for the test session and giving tests a handle
(:class:`InnServer`) to inspect and damage what is stored on it.

Damage helpers: ``cancel`` (gone), ``corrupt`` (one body byte flipped: the yEnc
CRC then fails), ``replace_body`` (any new body), ``reencode_yenc`` (a new
payload with a *valid* CRC, so only the checks inside the payload can notice).

Fixtures (registered from the root ``tests/conftest.py``):

- ``inn`` (session scope): ensures INN answers; yields the frozen
  :class:`InnServer`.  If 127.0.0.1:``port`` greets with 200 and the auth and
  TLS ports answer too, the running server is reused; otherwise
  ``scripts/inn-up.sh`` (idempotent) is run once.  If INN cannot be brought up,
  every test using the fixture *fails* (``pytest.fail``) with the script's
  output -- it is never skipped, because the suite's claims depend on it.
- ``inn_server`` (function scope): the same object under a short name, for
  tests that prefer an explicit per-test dependency.

Tests that use either fixture get the ``inn`` marker automatically.

Helpers: :func:`fresh_message_id` (unique ``<tag.uuid4@test.invalid>`` ids;
INN remembers every id forever, even cancelled ones, so never reuse one).

Invariants:
- Every helper opens its own fresh raw connection (``tests.support.rawnntp``),
  never the product's client, so checks are independent of the code under test.
- Ports/credentials follow the same ``INN_*`` environment overrides as
  ``scripts/inn-up.sh``, so the fixture and the script always agree.
- ``cancel``, ``corrupt``, ``replace_body`` and ``reencode_yenc`` verify their
  effect and raise if it did not happen.
"""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.rawnntp import RawNNTP, dot_stuff, dot_unstuff, fresh_message_id

__all__ = ["InnServer", "InnError", "fresh_message_id", "inn", "inn_server", "REPO_ROOT"]

REPO_ROOT = Path(__file__).resolve().parents[2]
INN_UP_SCRIPT = REPO_ROOT / "scripts" / "inn-up.sh"
SPOOL_ROOT_DEFAULT = Path("/var/spool/news/articles")
# A fresh apt install of inn2 took ~20 s in measurements; leave generous headroom.
INN_UP_TIMEOUT = 300.0


class InnError(AssertionError):
    """A helper could not do what it promised (e.g. cancel did not take effect)."""


@dataclass(frozen=True)
class InnServer:
    """Where the real INN listens, plus helpers acting on it through fresh connections."""

    host: str = "127.0.0.1"
    port: int = 119
    auth_port: int = 1190
    tls_port: int = 563
    user: str = "testuser"
    password: str = "testpass"
    groups: tuple[str, ...] = ("alt.binaries.test", "alt.binaries.misc")
    cert: Path = Path("/etc/news/cert.pem")
    spool: Path = SPOOL_ROOT_DEFAULT

    @property
    def group(self) -> str:
        """The default group tests post to."""
        return self.groups[0]

    # -- connections -------------------------------------------------------------------
    def connect(self, *, timeout: float = 10.0) -> RawNNTP:
        """Raw connection to the no-auth port (caller closes it)."""
        return RawNNTP(self.host, self.port, timeout=timeout)

    def tls_context(self) -> ssl.SSLContext:
        """Client context that trusts exactly INN's self-signed certificate."""
        ctx = ssl.create_default_context(cafile=str(self.cert))
        return ctx

    # -- queries -----------------------------------------------------------------------
    def stat(self, message_id: str) -> int:
        """NNTP code of ``STAT <id>`` on a fresh connection (223 present, 430 absent)."""
        with self.connect() as conn:
            code = conn.stat(message_id)
            conn.quit()
        return code

    def body(self, message_id: str) -> bytes | None:
        """Unstuffed BODY content (CRLFs kept), or None if the server answers 430."""
        with self.connect() as conn:
            data = conn.body(message_id)
            conn.quit()
        return data

    def post(self, article: bytes) -> tuple[int, str]:
        """POST an unstuffed article on a fresh connection; returns the final reply."""
        with self.connect() as conn:
            reply = conn.post(article)
            conn.quit()
        return reply

    # -- damage ------------------------------------------------------------------------
    def cancel(self, message_id: str) -> None:
        """Delete an article so STAT answers 430 (``ctlinnd cancel``), verified.

        ``ctlinnd`` prints "Ok" even for unknown ids, hence the STAT check.
        """
        proc = subprocess.run(
            ["ctlinnd", "cancel", message_id],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if proc.returncode != 0:
            raise InnError(f"ctlinnd cancel {message_id} failed rc={proc.returncode}: {proc.stdout}{proc.stderr}")
        code = self.stat(message_id)
        if code != 430:
            raise InnError(f"after ctlinnd cancel, STAT {message_id} answered {code}, expected 430")

    def article_file(self, message_id: str) -> Path:
        """Tradspool file holding the article (wire format: CRLF, dot-stuffed, '.' line).

        Located via ``HDR Xref <id>`` (overview), falling back to the Xref header.
        """
        xref = self._xref(message_id)
        # Xref: "<pathhost> group:number [group:number ...]"; any entry names a hard link
        for entry in xref.split()[1:]:
            group, _, number = entry.rpartition(":")
            if group and number.isdigit():
                path = self.spool.joinpath(*group.split("."), number)
                if path.is_file():
                    return path
        raise InnError(
            f"no tradspool file for {message_id} (Xref {xref!r}) under {self.spool}; is INN_STORAGE=tradspool?"
        )

    def corrupt(self, message_id: str, offset_in_body: int) -> Path:
        """Flip one byte of the article body as BODY returns it, in the spool file.

        ``offset_in_body`` indexes the *unstuffed* body (what ``body()`` returns).
        The new byte is never CR, LF or NUL, and the file is re-dot-stuffed, so
        the article stays valid on the wire; only its content changes.  The
        file is rewritten in place (same inode, so crosspost hard links agree).
        Verified with BODY afterwards; returns the spool path.
        """
        path = self.article_file(message_id)
        _head, unstuffed, _term = _split_spool(path)
        body = bytearray(unstuffed)
        if not 0 <= offset_in_body < len(body):
            raise ValueError(f"offset {offset_in_body} outside body of {len(body)} bytes")
        old = body[offset_in_body]
        if old in (0x0D, 0x0A):
            raise ValueError(f"offset {offset_in_body} is a line terminator; flipping it would break CRLF framing")
        new = old ^ 0x01
        if new in (0x00, 0x0A, 0x0D):
            new = old ^ 0x02
        body[offset_in_body] = new
        self.replace_body(message_id, bytes(body))
        return path

    def replace_body(self, message_id: str, body: bytes) -> Path:
        """Make the article's body ``body`` (unstuffed, CRLF lines), in the spool; headers are kept.

        The file is rewritten in place (same inode, so crosspost hard links
        agree), dot-stuffed as INN stores it.  Verified with BODY afterwards;
        returns the spool path.
        """
        if not body.endswith(b"\r\n"):
            raise ValueError("an article body ends with CRLF")
        path = self.article_file(message_id)
        head, _old, terminator = _split_spool(path)
        with open(path, "r+b") as fh:
            fh.write(head + dot_stuff(body) + terminator)
            fh.truncate()
        if self.body(message_id) != body:
            raise InnError(f"rewriting the body of {message_id} did not show in BODY")
        return path

    def reencode_yenc(self, message_id: str, mutate: Callable[[bytes], bytes]) -> bytes:
        """Replace a single-part yEnc article's payload by ``mutate(payload)``, with a fresh, valid CRC.

        The body is framed exactly as usenetsync posts it (``=ybegin part=1
        total=1 line=128 size=N name=…``, ``=ypart begin=1 end=N``, data,
        ``=yend size=N part=1 pcrc32=… crc32=…``), so a reader's yEnc and CRC
        checks pass and only what is *inside* the payload (GCM tag,
        ciphertext, signature, digest) can reveal the change.  Returns the
        new payload; verified by decoding BODY again.
        """
        import sabctools

        from usenetsync_cli.core.article import decode_yenc_part
        from usenetsync_cli.errors import UsenetSyncError

        old = self.body(message_id)
        if old is None:
            raise InnError(f"{message_id} is not on the server (430)")
        try:
            part = decode_yenc_part(old)
        except UsenetSyncError as e:
            raise InnError(f"{message_id} is not a yEnc article: {e}") from None
        if not part.crc_ok or part.total not in (None, 1):
            raise InnError(f"{message_id} is not an intact single-part yEnc article")
        payload = mutate(part.payload)
        if not payload:
            raise ValueError("a yEnc article needs a payload")
        encoded, crc = sabctools.yenc_encode(payload)
        size = len(payload)
        body = (
            b"=ybegin part=1 total=1 line=128 size=%d name=%s\r\n=ypart begin=1 end=%d\r\n"
            % (size, part.name.encode("utf-8"), size)
            + encoded
            + b"\r\n=yend size=%d part=1 pcrc32=%08x crc32=%08x\r\n" % (size, crc, crc)
        )
        self.replace_body(message_id, body)
        check = decode_yenc_part(self.body(message_id) or b"")
        if not check.crc_ok or check.payload != payload:
            raise InnError(f"re-encoding {message_id} did not round-trip")
        return payload

    def _xref(self, message_id: str) -> str:
        with self.connect() as conn:
            code, _ = conn.command(f"HDR Xref {message_id}")
            if code == 225:
                for line in conn.read_block().splitlines():
                    parts = line.decode("utf-8", "replace").split(None, 1)
                    if len(parts) == 2 and parts[1].strip():
                        conn.quit()
                        return parts[1].strip()
            elif code == 430:
                raise InnError(f"{message_id} is not on the server (430)")
            code, text = conn.command(f"HEAD {message_id}")
            if code != 221:
                raise InnError(f"HEAD {message_id}: {code} {text}")
            headers = conn.read_block()
            conn.quit()
        for line in headers.split(b"\r\n"):
            if line.lower().startswith(b"xref:"):
                return line[5:].strip().decode("utf-8", "replace")
        raise InnError(f"{message_id} has no Xref")


def _split_spool(path: Path) -> tuple[bytes, bytes, bytes]:
    """(header block incl. the empty line, unstuffed body, terminator as stored) of a tradspool file."""
    raw = path.read_bytes()
    sep = raw.find(b"\r\n\r\n")
    if sep < 0:
        raise InnError(f"{path}: no header/body separator")
    head, stuffed = raw[: sep + 4], raw[sep + 4 :]
    terminator = b""
    if stuffed.endswith(b".\r\n") and (len(stuffed) == 3 or stuffed.endswith(b"\r\n.\r\n")):
        stuffed, terminator = stuffed[:-3], b".\r\n"
    return head, dot_unstuff(stuffed), terminator


# -- bringing INN up ------------------------------------------------------------------
def server_from_env() -> InnServer:
    """InnServer honouring the INN_* overrides that scripts/inn-up.sh also reads."""
    env = os.environ
    groups = tuple(env.get("INN_GROUPS", "alt.binaries.test alt.binaries.misc").split())
    spool = SPOOL_ROOT_DEFAULT
    try:
        out = subprocess.run(
            ["/usr/lib/news/bin/innconfval", "patharticles"], capture_output=True, text=True, timeout=10, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            spool = Path(out.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass  # not installed yet; inn-up.sh will install it with the default spool
    return InnServer(
        port=int(env.get("INN_PORT", "119")),
        auth_port=int(env.get("INN_AUTH_PORT", "1190")),
        tls_port=int(env.get("INN_TLS_PORT", "563")),
        user=env.get("INN_USER", "testuser"),
        password=env.get("INN_PASS", "testpass"),
        groups=groups,
        spool=spool,
    )


def _greets(host: str, port: int, *, tls: bool = False, timeout: float = 3.0) -> bool:
    """True if the port sends a 200/201 greeting (after a TLS handshake if ``tls``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock: socket.socket = raw
            if tls:
                # Liveness only; certificate checking is the smoke test's job.
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
                sock = ctx.wrap_socket(raw, server_hostname=host)
            line = sock.makefile("rb").readline()
            return line[:3] in (b"200", b"201")
    except (OSError, ssl.SSLError):
        return False


def _all_up(server: InnServer) -> bool:
    return (
        _greets(server.host, server.port)
        and _greets(server.host, server.auth_port)
        and _greets(server.host, server.tls_port, tls=True)
    )


def ensure_inn() -> InnServer:
    """Return the running INN, starting it with scripts/inn-up.sh if needed; pytest.fail otherwise."""
    server = server_from_env()
    if _all_up(server):
        return server
    if not INN_UP_SCRIPT.is_file():
        pytest.fail(f"INN is not answering on {server.host}:{server.port} and {INN_UP_SCRIPT} is missing", pytrace=False)
    try:
        proc = subprocess.run(
            ["bash", str(INN_UP_SCRIPT)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=INN_UP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.fail(f"could not run {INN_UP_SCRIPT}: {exc}", pytrace=False)
    # inn-up.sh already waits for the greetings; a short grace period covers slow forks.
    deadline = time.monotonic() + (30.0 if proc.returncode == 0 else 0.0)
    while True:
        if _all_up(server):
            return server_from_env()  # spool path is only knowable once INN is installed
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    pytest.fail(
        f"INN did not come up on {server.host}:{server.port}/{server.auth_port}/{server.tls_port} "
        f"after {INN_UP_SCRIPT} (rc={proc.returncode}).\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}",
        pytrace=False,
    )


@pytest.fixture(scope="session")
def inn() -> Iterator[InnServer]:
    """The real INN server for the whole session (started if needed, never skipped)."""
    yield ensure_inn()


@pytest.fixture
def inn_server(inn: InnServer) -> InnServer:
    """Function-scoped alias of the session ``inn`` fixture."""
    return inn


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tag tests that touch the real server so ``-m 'not inn'`` can deselect them."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "inn" in names or "inn_server" in names:
            item.add_marker(pytest.mark.inn)
