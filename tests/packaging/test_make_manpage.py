"""edgefl(1) is generated from the CLI's own parser: every subcommand and option is in it."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess

import make_manpage
import pytest

from edgefld.cli.main import build_parser
from edgefld.exit_codes import EXIT_CODE_HELP

SECTIONS = ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "COMMANDS", "FILES", "ENVIRONMENT", "EXIT STATUS",
            "SEE ALSO"]
MACROS = {"TH", "SH", "SS", "TP", "PP", "B", "I", "BR", "br", "nh", "ad", "nf", "fi"}


@pytest.fixture(scope="module")
def page() -> str:
    return make_manpage.render(build_parser(), EXIT_CODE_HELP, "9.9.9", "2026-01-02")


def _commands(parser: argparse.ArgumentParser, words: list[str]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield words + [name], child
                yield from _commands(child, words + [name])


def test_sections_in_order(page):
    found = re.findall(r'^\.SH "?([^"\n]+)"?$', page, re.M)
    assert found == SECTIONS
    assert page.splitlines()[1].startswith('.TH EDGEFL 1 "2026-01-02" "edgefl 9.9.9"')


def test_every_subcommand_and_option_is_documented(page):
    commands = list(_commands(build_parser(), ["edgefl"]))
    assert {" ".join(w) for w, _ in commands} >= {"edgefl client", "edgefl server", "edgefl data download",
                                                   "edgefl exit-codes"}
    for words, parser in commands:
        heading = make_manpage.roff_escape(" ".join(words))
        assert f'.SS "{heading}"' in page, heading
        section = page.split(f'.SS "{heading}"', 1)[1].split("\n.SS ", 1)[0]
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            for flag in action.option_strings:
                assert f"\\fB{make_manpage.roff_escape(flag)}\\fR" in section, (heading, flag)
            if action.help and action.help != argparse.SUPPRESS:
                # As argparse shows it: %(default)s and the like expanded.
                shown = action.help % {**vars(action), "prog": parser.prog} if "%" in action.help else action.help
                first_words = make_manpage.roff_escape(shown)[:25]
                assert first_words in section, (heading, action.dest)


def test_exit_codes_listed(page):
    exit_section = page.split(".SH EXIT STATUS", 1)[1].split(".SH ", 1)[0]
    assert re.findall(r"^\.B (\d+)$", exit_section, re.M) == [str(int(c)) for c in sorted(EXIT_CODE_HELP)]


def test_files_section_names_the_config(page):
    assert ".I /etc/edgefl.toml" in page.split(".SH FILES", 1)[1]


def test_roff_is_well_formed(page):
    for number, line in enumerate(page.splitlines(), 1):
        assert not line.startswith("'"), number
        if line.startswith(".") and not line.startswith('.\\"'):
            assert line[1:].split(" ", 1)[0] in MACROS, (number, line)
        # every hyphen is escaped (a bare "-" may become a typographic hyphen and break copy-paste)
        if not line.startswith(('.\\"', ".TH ")):
            assert not re.search(r"(?<!\\)-", line), (number, line)


@pytest.mark.parametrize(("text", "escaped"), [
    ("--config PATH", "\\-\\-config PATH"), (".hidden", "\\&.hidden"), ("a\\b", "a\\eb"),
    ("  two\n lines ", "two lines"),
])
def test_roff_escape(text, escaped):
    assert make_manpage.roff_escape(text) == escaped


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed")
def test_groff_renders_without_warnings(page):
    result = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z"], input=page, capture_output=True, text=True)
    assert (result.returncode, result.stderr) == (0, "")


def test_page_date_from_source_date_epoch():
    assert make_manpage.page_date("1795867200") == "2026-11-28"
    assert make_manpage.page_date(None) == "1970-01-01"
