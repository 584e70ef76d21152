"""``@value``: a frozen dataclass whose generated methods are made when the class is first used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar, dataclass_transform

T = TypeVar("T", bound=type)

# What the stdlib's @dataclass adds to a class and code may look up before an instance
# exists: each is a placeholder until the class is first used.
_PLACEHOLDERS = (
    "__init__",
    "__dataclass_fields__",
    "__dataclass_params__",
    "__match_args__",
    "__signature__",
)


class _FirstUse:
    """A class attribute that makes the real dataclass on first access, then answers as it."""

    def __init__(self, cls: type, name: str) -> None:
        self.cls = cls
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        _make(self.cls)
        if self.name == "__signature__":
            return None  # inspect.signature: no override, read the generated __init__
        return getattr(owner if obj is None else obj, self.name)


# Classes declared with @value whose dataclass is not made yet.
_pending: set[type] = set()


def _make(cls: type) -> None:
    # Not for a first use racing from two threads (between the delattr and the dataclass
    # call the class has no __init__): these values are made on the event loop's thread only
    # (drivers hand their readings over with call_soon_threadsafe, DESIGN conventions 4).
    if cls not in _pending:
        return
    _pending.discard(cls)
    for name in _PLACEHOLDERS:
        delattr(cls, name)
    # The class body is untouched until here: the same dataclass as decorating it at once.
    dataclass(frozen=True)(cls)


@dataclass_transform(frozen_default=True)
def value(cls: T) -> T:
    """``@dataclass(frozen=True)``, with its methods generated on first use (an instance,
    ``fields()``, ``is_dataclass()``, a match, a signature). Making a frozen dataclass runs
    six small ``exec`` calls (0.36 ms each class on the CI machine, Python 3.11); the state
    machine declares dozens of events and commands of which a start uses a few (issue 16:
    start-up CPU). tests/core/test_values.py: the same dataclass whatever the first use."""

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        _make(cls)
        cls.__init__(self, *args, **kwargs)  # type: ignore[misc]

    for name in _PLACEHOLDERS:
        if name in cls.__dict__:
            raise TypeError(f"@value: {cls.__qualname__} defines {name} itself")
        setattr(cls, name, __init__ if name == "__init__" else _FirstUse(cls, name))
    _pending.add(cls)
    return cls
