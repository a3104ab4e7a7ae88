"""``autosrh-ray --help`` and every command's help: plain text (no reStructuredText markup), a description line
for each command, help for every option; ``autosrh-ray config`` prints the reference without ``--list``."""
from __future__ import annotations

import re

import pytest

from autosrh_ray.cli import _parser, main

COMMANDS = ("run", "prepare", "compare", "predict", "config", "generate")


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def _subparsers() -> dict:
    return next(a for a in _parser()._actions if a.dest == "command").choices


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_top_level_help_is_plain_text_and_names_every_command(capsys):
    text = _help(capsys)
    assert "``" not in text and ":func:" not in text
    description = text.split("\n\n")[1]
    for command in COMMANDS:
        assert command in description and re.search(rf"^    {command}\s+\S", text, re.M), command


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_a_description_and_every_option_a_help(capsys, command):
    text = _help(capsys, command)
    paragraphs = text.split("\n\n")
    assert paragraphs[0].startswith(f"usage: autosrh-ray {command}")
    assert not paragraphs[1].startswith(("positional arguments:", "options:")), "no description line"
    assert "``" not in text
    for action in _subparsers()[command]._actions:
        assert action.help, (command, action.option_strings or action.dest)
        if action.help != "show this help message and exit":
            assert _flat(action.help % {"default": action.default}) in _flat(text), action.help  # shown


def test_the_options_that_had_no_help_have_one():
    sub = _subparsers()
    for command, option in (("compare", "--set"), ("generate", "--set"), ("generate", "--shards"),
                            ("generate", "--gzip")):
        action = next(a for a in sub[command]._actions if option in a.option_strings)
        assert action.help and len(action.help) > 10, (command, option)


def test_config_without_list_prints_the_reference(capsys):
    assert main(["config"]) == 0
    plain = capsys.readouterr().out
    assert main(["config", "--list"]) == 0
    assert capsys.readouterr().out == plain and plain.startswith("# Configuration reference")


def test_parser_subcommands_are_the_documented_ones():
    assert tuple(_subparsers()) == COMMANDS
