"""The file policy object (pure): defaults, reveals, and the tree-minus-holes grants landjail uses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jail.config import Flags, build_config
from jail.policy import FsPolicy, build, jail_env, tree_minus_holes


def policy_for(tmp: Path, **flags: Any) -> FsPolicy:
    env = {"HOME": str(tmp / "home"), "XDG_STATE_HOME": str(tmp / "state"), "SSH_AUTH_SOCK": "/run/agent.sock",
           "DOCKER_HOST": "unix:///srv/docker.sock"}  # fmt: skip
    return build(build_config(Flags(**flags), env), env, 1000)


def test_defaults_hide_credentials_agents_engines_and_our_state(tmp_path: Path) -> None:
    p = policy_for(tmp_path, workspace=tmp_path / "ws")
    home = str(tmp_path / "home")
    for hidden in (f"{home}/.ssh", f"{home}/.aws", f"{home}/.docker/config.json", f"{home}/.git-credentials",
                   str(tmp_path / "state" / "boundary"), "/run/user/1000", "/run/agent.sock", "/srv/docker.sock",
                   "/run/docker.sock"):  # fmt: skip
        assert hidden in p.hidden
    assert p.writable == (str(tmp_path / "ws"), home)


def test_naming_a_hidden_path_exactly_reveals_it(tmp_path: Path) -> None:
    ssh = tmp_path / "home" / ".ssh"
    p = policy_for(tmp_path, ro=[ssh], rw=[tmp_path / "home" / ".aws"])
    assert str(ssh) not in p.hidden
    assert str(tmp_path / "home" / ".aws") not in p.hidden
    assert str(tmp_path / "home" / ".kube") in p.hidden
    assert p.extra_rw == (str(tmp_path / "home" / ".aws"),)


def test_the_agent_socket_variable_is_removed() -> None:
    assert jail_env({"SSH_AUTH_SOCK": "/x", "PATH": "/bin"}) == {"PATH": "/bin"}


def test_tree_minus_holes(tmp_path: Path) -> None:
    for d in ("a/secret", "a/open", "b"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "a" / "file").write_text("x")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "secret")
    holes = [str(tmp_path / "a" / "secret")]
    got = set(tree_minus_holes(str(tmp_path), holes))
    assert got == {str(tmp_path / "b"), str(tmp_path / "a" / "open"), str(tmp_path / "a" / "file")}
    assert tree_minus_holes(str(tmp_path / "b"), holes) == [str(tmp_path / "b")]
    assert tree_minus_holes(str(tmp_path / "a" / "secret"), holes) == []
