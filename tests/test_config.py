"""Tests of the configuration file and where passwords come from."""

from __future__ import annotations

from pathlib import Path

import pytest

from usenetsync_cli.config import Config, ServerEntry, dump_toml, store_prompted_password
from usenetsync_cli.errors import ConfigError, NotFoundError
from usenetsync_cli.store.home import Home


def test_round_trip_and_mode(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h")
    cfg = Config()
    cfg.servers["a b"] = ServerEntry(name="a b", host="h", user="u", password_env="PW", groups=["x.y", 'q"z'])
    cfg.servers["m"] = ServerEntry(name="m", host="n", tls=True, port=563, connections=8, groups=["g"])
    cfg.metrics_file = "/var/lib/node/usenetsync.prom"
    cfg.save(home)
    assert (home.config_file.stat().st_mode & 0o777) == 0o600
    back = Config.load(home)
    assert back.servers["a b"].groups == ["x.y", 'q"z'] and back.servers["m"].tls
    assert [s.name for s in back.posting_servers()] == ["a b", "m"]
    assert back.metrics_file == "/var/lib/node/usenetsync.prom"
    with pytest.raises(NotFoundError):
        back.get("zzz")


def test_plain_password_key_is_refused(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h").ensure()
    home.config_file.write_text('[servers.a]\nhost = "h"\nuser = "u"\npassword = "oops"\n')
    with pytest.raises(ConfigError, match="plain 'password' key") as ei:
        Config.load(home)
    assert "oops" not in str(ei.value)


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = ServerEntry(name="a", host="h", user="u", password_env="MY_PW")
    with pytest.raises(ConfigError, match="MY_PW is not set"):
        e.spec()
    monkeypatch.setenv("MY_PW", "s3cret")
    assert e.spec().password == "s3cret" and "s3cret" not in repr(e.spec())
    home = Home.resolve(tmp_path / "h").ensure()
    path = store_prompted_password(home, "a", "typed")
    assert (path.stat().st_mode & 0o777) == 0o600
    assert ServerEntry(name="a", host="h", user="u", password_file=str(path)).password() == "typed"


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h").ensure()
    home.config_file.write_text("[servers.a\n")
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load(home)


def test_dump_toml_never_writes_unknown_types() -> None:
    with pytest.raises(TypeError):
        dump_toml({"servers": {"a": {"x": object()}}})


def test_unknown_top_level_key_and_bad_metrics_file_are_refused(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "h").ensure()
    home.config_file.write_text('metric_file = "/x"\n')  # misspelt: silently ignoring it would lose the metrics
    with pytest.raises(ConfigError, match="unknown key 'metric_file'"):
        Config.load(home)
    home.config_file.write_text("metrics_file = 3\n")
    with pytest.raises(ConfigError, match="metrics_file must be a path"):
        Config.load(home)
