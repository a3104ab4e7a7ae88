"""The README is a door and the pages behind it hold: README.md stays short, every relative link in README.md and
docs/*.md leads to a file (and a ``#anchor`` to a heading of it), every ``autosrh-ray …`` command shown in a fenced
shell block parses with the CLI's own parser, and no page names a path of the machine it was written on."""
from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
README_MAX_LINES = 200
SHELL_FENCES = {"", "bash", "sh", "shell", "console", "zsh"}
LINK = re.compile(r"(?<!!)\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
MACHINE_PATH = re.compile(r"(?<![\w.~$-])/(?:work|tmp|home)/")


def _pages() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md"))]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _lines(path: Path) -> list[tuple[int, str, str | None]]:
    """(1-based line number, text, the fence's info string or None outside fenced code) of every line; fence
    delimiter lines themselves count as inside."""
    out, fence, info = [], None, None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, info = m[2], m[3].lower()
            out.append((number, line, info))
        elif fence is not None:
            out.append((number, line, info))
            if m and m[2][0] == fence[0] and len(m[2]) >= len(fence) and not m[3]:
                fence = info = None
        else:
            out.append((number, line, None))
    return out


def _without_code_spans(line: str) -> str:
    return re.sub(r"(`+)(?:(?!\1).)+?\1", lambda m: " " * len(m[0]), line)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (letters, digits, _ and - kept), spaces → -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for _, line, info in _lines(path):
        m = re.match(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if info is not None or not m:
            continue
        base = slug(m[2])
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def relative_links(path: Path) -> list[tuple[int, str]]:
    """(line, target) of every relative Markdown link outside fenced code and code spans."""
    out = []
    for number, line, info in _lines(path):
        if info is not None:
            continue
        for m in LINK.finditer(_without_code_spans(line)):
            target = m[1]
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:, …
                continue
            out.append((number, target))
    return out


def link_problem(page: Path, target: str) -> str | None:
    """Why ``target`` (as written in ``page``) does not resolve, or None."""
    file_part, _, anchor = target.partition("#")
    destination = (page.parent / file_part).resolve() if file_part else page
    if not destination.exists():
        return f"{file_part} does not exist (relative to {_name(page.parent) if page.parent != ROOT else 'the root'})"
    if anchor and destination.suffix.lower() == ".md":
        if not destination.is_file():
            return f"{destination} is not a file"
        if anchor not in anchors(destination):
            return f"no heading with anchor #{anchor} in {_name(destination)}"
    return None


def shown_commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, arguments after ``autosrh-ray``) of every ``autosrh-ray`` command in the page's fenced shell blocks:
    continuation lines joined, ``$ `` prompts and comments dropped, ``&&`` / ``||`` / ``;`` / ``|`` chains split,
    ``.venv/bin/autosrh-ray`` and commands after ``ray job submit … --`` included."""
    logical: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line, info in _lines(path):
        if info is None or info not in SHELL_FENCES or FENCE.match(line):
            pending = None
            continue
        text = re.sub(r"^\s*\$ ", "", line) if pending is None else line
        start, before = pending if pending else (number, "")
        joined = before + " " + text
        if text.rstrip().endswith("\\"):
            pending = (start, joined.rstrip()[:-1])
        else:
            logical.append((start, joined))
            pending = None
    out = []
    for number, text in logical:
        if not re.search(r"(?:^|[\s/])autosrh-ray(?:\s|$)", text):
            continue
        try:
            tokens = shlex.split(text, comments=True)
        except ValueError as err:  # an unbalanced quote: report it as the command's failure
            out.append((number, [f"<shlex: {err}>"]))
            continue
        command: list[str] | None = None
        for token in [*tokens, "&&"]:
            if token in ("&&", "||", ";", "|"):
                if command is not None:
                    out.append((number, command))
                command = None
            elif command is not None:
                command.append(token)
            elif token == "autosrh-ray" or token.endswith("/autosrh-ray"):
                command = []
    return out


def test_readme_is_short():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move the detail into docs/")


def test_pages_exist():
    assert README.is_file()
    assert len(_pages()) > 1, "no docs/*.md pages"


def test_every_relative_link_resolves():
    problems = []
    checked = 0
    for page in _pages():
        for number, target in relative_links(page):
            checked += 1
            why = link_problem(page, target)
            if why:
                problems.append(f"{_name(page)}:{number}: [{target}] {why}")
    assert checked, "no relative links found: the link pattern is broken"
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_no_link_into_shared():
    """Users have the repository only: no page links out of it (e.g. ../shared)."""
    problems = []
    for page in _pages():
        for number, target in relative_links(page):
            file_part = target.partition("#")[0]
            if file_part and ROOT not in (page.parent / file_part).resolve().parents:
                problems.append(f"{_name(page)}:{number}: [{target}] leads out of the repository")
    assert not problems, "\n".join(problems)


def test_slugs_follow_github():
    assert slug("When stages stop, and which numbers to trust") == "when-stages-stop-and-which-numbers-to-trust"
    assert slug("`engine/`: pure PyTorch") == "engine-pure-pytorch"
    assert slug("Use your own model") == "use-your-own-model"
    assert slug("A Ray Tune study before pruning") == "a-ray-tune-study-before-pruning"


def test_every_shown_command_parses():
    from autosrh_ray.cli import _parser  # here, not at the top: the CLI module may move

    parser = _parser()
    problems = []
    checked = 0
    for page in _pages():
        for number, args in shown_commands(page):
            checked += 1
            err = io.StringIO()
            try:
                with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                    parser.parse_args(args)
            except SystemExit as exit_:
                if exit_.code not in (0, None):  # 0: a documented --help
                    message = err.getvalue().strip().splitlines()
                    problems.append(f"{_name(page)}:{number}: autosrh-ray {shlex.join(args)}\n    "
                                    + (message[-1] if message else f"exit {exit_.code}"))
    assert checked >= 3, f"only {checked} autosrh-ray commands found in fenced blocks: the scan is broken"
    assert not problems, "commands the CLI does not accept:\n" + "\n".join(problems)


def test_readme_shows_the_two_commands():
    text = README.read_text(encoding="utf-8")
    assert ("python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/autosrh-ray run "
            "workflows/quickstart.yaml --output runs/quickstart") in text
    assert 'python3 -m venv .venv && .venv/bin/pip install -e ".[test]" && .venv/bin/python -m pytest -q' in text


def test_no_machine_paths():
    """No /work, /tmp or /home path of the machine a page was written on; shell examples in fenced blocks may
    show /tmp or /home for illustration, never /work."""
    problems = []
    for page in _pages():
        for number, line, info in _lines(page):
            found = [m[0] for m in MACHINE_PATH.finditer(line)
                     if info is None or info not in SHELL_FENCES or m[0].startswith("/work")]
            if found:
                problems.append(f"{_name(page)}:{number}: {', '.join(found)} in: {line.strip()}")
    assert not problems, "machine paths in the docs:\n" + "\n".join(problems)
