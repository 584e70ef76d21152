"""@value (controller/core/values.py) behaves as @dataclass(frozen=True) from the first use on,
whatever that first use is; before it, the class costs no generated code (issue 16)."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any

import pytest

from controller.core import values
from controller.core.values import value


def declare() -> tuple[type[Any], type[Any]]:
    """The same class declared both ways (fresh: nothing has made it yet)."""

    @value
    class Lazy:
        """A doc."""

        a: int
        b: str = "x"
        c: list[int] = dataclasses.field(default_factory=list, compare=False)

    @dataclasses.dataclass(frozen=True)
    class Eager:
        """A doc."""

        a: int
        b: str = "x"
        c: list[int] = dataclasses.field(default_factory=list, compare=False)

    return Lazy, Eager


FIRST_USES = {
    "instance": lambda cls: cls(1),
    "fields": lambda cls: dataclasses.fields(cls),
    "is_dataclass": lambda cls: dataclasses.is_dataclass(cls),
    "signature": lambda cls: inspect.signature(cls),
    "match_args": lambda cls: cls.__match_args__,
    "params": lambda cls: cls.__dataclass_params__,
}


@pytest.mark.parametrize("first_use", sorted(FIRST_USES))
def test_any_first_use_makes_the_same_dataclass(first_use: str) -> None:
    lazy, eager = declare()
    assert lazy in values._pending
    FIRST_USES[first_use](lazy)
    assert lazy not in values._pending
    assert [(f.name, f.default, f.compare) for f in dataclasses.fields(lazy)] == [
        (f.name, f.default, f.compare) for f in dataclasses.fields(eager)
    ]
    assert str(inspect.signature(lazy)) == str(inspect.signature(eager))
    assert lazy.__match_args__ == eager.__match_args__ == ("a", "b", "c")
    assert lazy.__dataclass_params__.frozen


def test_instances_are_frozen_values() -> None:
    lazy, _ = declare()
    one = lazy(1)
    assert repr(one).endswith(".Lazy(a=1, b='x', c=[])")
    assert one == lazy(1, c=[5]) and hash(one) == hash(lazy(1))  # c: compare=False
    assert one != lazy(2) and one.c is not lazy(1).c  # a new list each
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 2
    assert dataclasses.replace(one, b="y") == lazy(1, "y")
    assert dataclasses.asdict(one) == {"a": 1, "b": "x", "c": []}
    assert copy.deepcopy(one) == one
    match one:
        case lazy(1, "x"):  # positional: __match_args__
            pass
        case _:
            pytest.fail("no match")
    with pytest.raises(TypeError):
        lazy()  # a is required, as with the dataclass


def test_a_subclass_makes_its_base_first() -> None:
    lazy, _ = declare()

    @value
    class Sub(lazy):  # type: ignore[valid-type, misc]
        d: int = 0

    assert [f.name for f in dataclasses.fields(Sub)] == ["a", "b", "c", "d"]
    assert Sub(1, d=2) == Sub(1, d=2) and lazy not in values._pending


def test_a_class_defining_what_value_generates_is_refused() -> None:
    with pytest.raises(TypeError, match="defines __init__"):

        @value
        class Own:
            a: int

            def __init__(self) -> None:
                pass
