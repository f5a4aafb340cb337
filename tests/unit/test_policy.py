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
    (tmp_path / "ws").mkdir()
    p = policy_for(tmp_path, workspace=tmp_path / "ws")
    home = str(tmp_path / "home")
    for hidden in (f"{home}/.ssh", f"{home}/.aws", f"{home}/.docker/config.json", f"{home}/.git-credentials",
                   str(tmp_path / "state" / "boundary"), "/run/user/1000", "/run/agent.sock", "/srv/docker.sock",
                   "/run/docker.sock"):  # fmt: skip
        assert hidden in p.hidden
    assert p.writable[0] == str(tmp_path / "ws")
    assert home not in p.writable  # HOME is readable; only its tool caches and agents' state are writable
    assert f"{home}/.cache" in p.writable
    assert f"{home}/.cargo/registry" in p.writable
    assert f"{home}/.cargo" not in p.writable  # ~/.cargo/bin is on the user's PATH outside


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


def test_protected_paths_inside_writable_roots(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / ".git" / "hooks").mkdir(parents=True)
    (ws / ".git" / "config").write_text("[core]\n")
    (ws / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    sub = ws / ".git" / "modules" / "lib" / "x"
    sub.mkdir(parents=True)
    (sub / "HEAD").write_text("ref: refs/heads/main\n")
    (sub / "config").write_text("[core]\n")
    bin_in_ws = ws / "node_modules" / ".bin"
    env_path = f"{tmp_path}/home/.local/bin:{bin_in_ws}:/usr/bin"
    env = {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state"), "PATH": env_path}
    p = build(build_config(Flags(workspace=ws), env), env, 1000)
    for path in (ws / ".git" / "config", ws / ".git" / "hooks", ws / ".git" / "info", sub / "config",
                 sub / "hooks", ws / ".envrc", ws / ".vscode", ws / ".idea"):  # fmt: skip
        assert str(path) in p.protected, path
    assert str(ws / ".git") in p.writable  # pinned: bound onto itself, writable inside
    assert str(ws / ".git" / "info") in p.placeholders  # missing: made so that it can be read-only
    assert str(bin_in_ws) not in p.protected  # PATH entries inside the workspace are the project's
    assert str(tmp_path / "home" / ".bashrc") not in p.protected  # HOME is not writable: nothing to protect
    # the workspace being HOME: its startup files and PATH directories are protected there
    env["PATH"] = f"{tmp_path}/home/.local/bin:/usr/bin"
    (tmp_path / "home").mkdir(exist_ok=True)
    p = build(build_config(Flags(workspace=tmp_path / "home"), env), env, 1000)
    for name in (".bashrc", ".profile", ".gitconfig", ".config/git", ".config/systemd", ".local/bin", ".npmrc"):
        path = str(tmp_path / "home" / name)
        assert path in p.protected or path in p.hidden, name  # a secret (~/.npmrc) is hidden, which is more


def test_a_git_file_and_a_worktree(tmp_path: Path) -> None:
    main_git = tmp_path / "main" / ".git"
    wt_gitdir = main_git / "worktrees" / "wt"
    wt_gitdir.mkdir(parents=True)
    (wt_gitdir / "commondir").write_text("../..\n")
    wt = tmp_path / "wt"
    wt.mkdir()
    (wt / ".git").write_text(f"gitdir: {wt_gitdir}\n")
    env = {"HOME": str(tmp_path / "home"), "XDG_STATE_HOME": str(tmp_path / "state"), "PATH": "/usr/bin"}
    p = build(build_config(Flags(workspace=wt, rw=[main_git]), env), env, 1000)
    assert str(wt / ".git") in p.protected  # the pointer itself: never re-pointed at the jail's repository
    assert str(wt_gitdir / "config") in p.protected
    assert str(main_git / "config") in p.protected  # the common dir's config and hooks
    assert str(main_git / "hooks") in p.protected


def test_secrets_follow_both_homes(tmp_path: Path) -> None:
    import pwd

    account = pwd.getpwuid(1000).pw_dir if _has_uid(1000) else None
    p = policy_for(tmp_path)
    home = str(tmp_path / "home")
    for name in (".npmrc", ".pypirc", ".cargo/credentials.toml", ".config/git/credentials", ".vault-token",
                 ".config/containers/auth.json", ".cache/huggingface/token", ".bash_history", ".ssh"):  # fmt: skip
        assert f"{home}/{name}" in p.hidden, name
        if account:
            assert f"{account}/{name}" in p.hidden, name


def _has_uid(uid: int) -> bool:
    import pwd

    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_env_deny_and_allow() -> None:
    env = {"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "x", "OPENAI_API_KEY": "k", "TMUX": "/t,1,0",
           "DISPLAY": ":0", "DOCKER_HOST": "tcp://h:2375"}  # fmt: skip
    cases = [
        ((), (), {"PATH", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "OPENAI_API_KEY", "DOCKER_HOST"}),
        (("AWS_*",), (), {"PATH", "OPENAI_API_KEY", "DOCKER_HOST"}),
        (("AWS_*",), ("AWS_REGION",), {"PATH", "AWS_REGION", "OPENAI_API_KEY", "DOCKER_HOST"}),
        (("*",), ("PATH", "OPENAI_*"), {"PATH", "OPENAI_API_KEY"}),
        ((), ("TMUX",), {"PATH", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "OPENAI_API_KEY", "DOCKER_HOST", "TMUX"}),
    ]
    for deny, allow, kept in cases:
        assert set(jail_env(env, (), deny, allow)) == kept, (deny, allow)
