"""Config input that used to be accepted silently: each is now used as given, or refused in one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from jail.config import ConfigError, Flags, build_config


def test_a_missing_workspace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--workspace .*missing does not exist"):
        build_config(Flags(workspace=tmp_path / "missing"), {"HOME": str(tmp_path)})


def test_a_file_as_workspace_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ConfigError, match=r"--workspace .*file is not a directory"):
        build_config(Flags(workspace=f), {"HOME": str(tmp_path)})


@pytest.mark.parametrize(
    "yaml",
    ["host_map:\n  - a.test=127.0.0.1\n  - b.test=::1\n", "host_map:\n  a.test: 127.0.0.1\n  b.test: '::1'\n"],
    ids=["list", "mapping"],
)
def test_host_map_in_yaml_as_a_list_or_a_mapping(tmp_path: Path, yaml: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml)
    c = build_config(Flags(config=cfg, workspace=tmp_path), {"HOME": str(tmp_path)})
    assert dict(c.host_map) == {"a.test": "127.0.0.1", "b.test": "::1"}


def test_host_map_of_another_shape_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("host_map: a.test\n")
    with pytest.raises(ConfigError, match="'host_map' must be a list of NAME=IP or a mapping"):
        build_config(Flags(config=cfg, workspace=tmp_path), {"HOME": str(tmp_path)})


@pytest.mark.parametrize(("given", "want"), [(["3000"], (3000,)), (["3000,8080", "3000"], (3000, 8080)), ([], ())])
def test_publish_ports(tmp_path: Path, given: list[str], want: tuple[int, ...]) -> None:
    assert build_config(Flags(publish=given, workspace=tmp_path), {"HOME": str(tmp_path)}).publish == want


@pytest.mark.parametrize("bad", ["0", "70000", "http"])
def test_bad_publish_ports_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="--publish"):
        build_config(Flags(publish=[bad], workspace=tmp_path), {"HOME": str(tmp_path)})


def test_a_yaml_syntax_error_is_one_line_with_its_line(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("allowlist:\n  - a.test\n  bad: [\n")
    with pytest.raises(ConfigError) as e:
        build_config(Flags(config=cfg, workspace=tmp_path), {"HOME": str(tmp_path)})
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"config file {cfg}:3: not valid YAML: "), msg
