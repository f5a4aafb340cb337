"""What is taken out of a repository the jail made (pure table)."""

from __future__ import annotations

import pytest

from jail.quarantine import sanitize

CASES = [
    ("[core]\n\tbare = false\n\tfsmonitor = touch x\n", ["core.fsmonitor"], "bare = false"),
    ("[core]\n\thooksPath = /tmp/h\n[user]\n\tname = U\n", ["core.hookspath"], "name = U"),
    ('[alias]\n\tst = status\n\tx = "!sh -c id"\n', ["alias.x"], "st = status"),
    ('[filter "lfs"]\n\tsmudge = evil\n[diff "x"]\n\ttextconv = evil\n', ["filter.smudge", "diff.textconv"], ""),
    ("[include]\n\tpath = ~/evil\n[credential]\n\thelper = store\n", ["include.path", "credential.helper"], ""),
    (
        "[core]\n\tpager = less\n\teditor = vi\n\tsshCommand = ssh -x\n",
        ["core.pager", "core.editor", "core.sshcommand"],
        "[core]",
    ),
    ('[remote "origin"]\n\turl = https://x.test/r\n\tuploadpack = evil\n', ["remote.uploadpack"], "url = "),
    ("[extensions]\n\tworktreeConfig = true\n", ["extensions.worktreeconfig"], ""),
    ("[core]\n\trepositoryformatversion = 0\n", [], "repositoryformatversion = 0"),
    # found by review: a key on the header line, ext:: transports, gpg/difftool/trailer commands
    ("[core]fsmonitor = touch x\n", ["core.fsmonitor"], "[core]"),
    (
        '[protocol "ext"]\n\tallow = always\n[remote "o"]\n\turl = ext::sh -c id\n',
        ["protocol.allow", "remote.url"],
        "[remote",
    ),
    ('[url "ext::sh -c id "]\n\tinsteadOf = zz://\n', ["url.insteadof"], ""),
    (
        '[gpg]\n\tformat = ssh\n[gpg "ssh"]\n\tdefaultKeyCommand = id\n[commit]\n\tgpgsign = true\n',
        ["gpg.format", "gpg.defaultkeycommand", "commit.gpgsign"],
        "[commit]",
    ),
    ('[difftool "x"]\n\tcmd = id\n[trailer "t"]\n\tcommand = id\n', ["difftool.cmd", "trailer.command"], ""),
    ("[core]\n\talternateRefsCommand = id\n", ["core.alternaterefscommand"], "[core]"),
    ('[submodule "s"]\n\tupdate = !id\n\tpath = s\n', ["submodule.update"], "path = s"),
    ("[core]\n\tfsmonitor = a \\\n b\n\tbare = false\n", ["core.fsmonitor"], "bare = false"),
    ("[user]\n\tname = a \\\nb\n", [], "b"),
]


@pytest.mark.parametrize(("text", "removed", "kept"), CASES)
def test_sanitize(text: str, removed: list[str], kept: str) -> None:
    clean, got = sanitize(text)
    assert got == removed
    assert kept in clean
    assert sanitize(clean)[1] == []  # nothing dangerous left
