"""The one registry pattern: register, get, order, unknown names refused, loud re-registration."""

from __future__ import annotations

import pytest

from kit.errors import KitError
from kit.registry import Registry


def test_register_get_and_order():
    reg: Registry = Registry("widget")

    @reg.register("b")
    def second():
        return 2

    @reg.register()
    def first():
        return 1

    assert reg.names() == ["b", "first"]
    assert reg.get("b")() == 2 and "first" in reg and "c" not in reg and len(reg) == 2


def test_unknown_name_is_one_line_with_the_known_ones():
    reg: Registry = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(KitError, match=r"configs/x.toml: unknown widget 'zz'; use one of \['a'\]"):
        reg.get("zz", where="configs/x.toml")


def test_second_registration_replaces_loudly():
    reg: Registry = Registry("widget")
    reg.add("a", 1)
    with pytest.warns(UserWarning, match="registered twice"):
        reg.add("a", 2)
    assert reg.get("a") == 2


def test_validate_is_for_config_validators():
    """A pydantic validator asks the registry: a known name comes back, an unknown one is a ValueError listing the names."""
    reg: Registry = Registry("widget")
    reg.add("a", 1)
    assert reg.validate("a") == "a"
    with pytest.raises(ValueError, match=r"unknown widget 'b'; use one of \['a'\]"):
        reg.validate("b")
