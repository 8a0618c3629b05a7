"""A wrapper that keeps secret values out of reprs, f-strings, logs and tracebacks."""

from __future__ import annotations


class Secret:
    """A secret value; only `reveal()` gives it back, every other rendering is masked."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self):
        # Pickling would put the value into whatever stores the pickle.
        raise TypeError("a Secret cannot be pickled")
