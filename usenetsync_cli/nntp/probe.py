"""``server test``: what a server says about itself, and how fast it answers.

Owns: one short session (connect, TLS, login, CAPABILITIES, LIST ACTIVE of
each configured group, a few STATs of a Message-ID that cannot exist)
summarised as plain data. Failures travel as
the nntp layer's typed errors.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from .connection import Connection, ServerSpec
from .response import NNTPError

# LIST ACTIVE status flags, as `server test` words them.
_GROUP_STATUS = {"y": "posting allowed", "n": "NO POSTING", "m": "MODERATED (posts go to a moderator)",
                 "x": "NO POSTING (no local posting)", "j": "NO POSTING (junk)"}


@dataclass
class ProbeResult:
    server: str
    address: str
    tls: bool
    greeting: str
    posting_allowed: bool
    authenticated: bool
    capabilities: list[str] = field(default_factory=list)
    # group -> "posting allowed", "MISSING", "NO POSTING", ... (what LIST ACTIVE says); "unknown: ..." when
    # the server does not answer LIST ACTIVE for one group.
    groups: dict[str, str] = field(default_factory=dict)
    connect_ms: float = 0.0
    rtt_ms: float = 0.0


def probe(spec: ServerSpec, *, samples: int = 5) -> ProbeResult:
    t0 = time.perf_counter()
    with Connection(spec) as conn:
        greeting = conn.connect()
        if spec.user:
            conn.authenticate()
        connect_ms = (time.perf_counter() - t0) * 1000
        caps = conn.capabilities()
        if "MODE-READER" in caps:
            conn.mode_reader()
        rtts = []
        for _ in range(samples):
            t = time.perf_counter()
            conn.stat("<usenetsync-probe@invalid>")
            rtts.append((time.perf_counter() - t) * 1000)
        groups: dict[str, str] = {}
        for g in spec.groups:
            try:
                flag = conn.group_status(g)
            except NNTPError as e:
                groups[g] = f"unknown: {e}"
                continue
            groups[g] = "MISSING" if flag is None else _GROUP_STATUS.get(flag[:1], f"status {flag!r}")
        result = ProbeResult(
            server=spec.name, address=spec.address, tls=spec.tls, greeting=str(greeting),
            posting_allowed=bool(conn.posting_allowed), authenticated=bool(spec.user),
            capabilities=sorted(caps), connect_ms=round(connect_ms, 2), rtt_ms=round(statistics.median(rtts), 3),
            groups=groups,
        )
        conn.quit()
    return result
