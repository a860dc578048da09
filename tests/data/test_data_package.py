"""edgefld.data's names load their modules on first use (PEP 562), as type checkers see them."""

from __future__ import annotations

import ast
import importlib
import inspect

import edgefld.data as data_package


def test_each_name_comes_from_the_module_type_checkers_are_told_of():
    tree = ast.parse(inspect.getsource(data_package))
    (checking,) = [node for node in tree.body if isinstance(node, ast.If)]  # if TYPE_CHECKING:
    told = {alias.name: node.module for node in checking.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}
    assert told == data_package._HOMES
    for name, home in data_package._HOMES.items():
        assert getattr(data_package, name) is getattr(importlib.import_module(home), name)


def test_an_unknown_name_is_an_attribute_error():
    try:
        data_package.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("no AttributeError")
