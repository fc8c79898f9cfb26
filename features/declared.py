"""What a feature step declares about each model input it adds, next to the code that adds it.

A declaration holds what is known before fitting: the name, the kind, the vocabulary the indices
come from, the length of a list or of a dense vector, and whether a numeric feature is a count
(normalized after log1p).
Once the train split is fitted, `pipelines.samples.fitting.Fitted.spec_features` turns the declarations into
the spec's entries (vocabulary sizes, normalization, bucket boundaries), so a feature is named in one
place: the step that makes it.
"""

from __future__ import annotations

from dataclasses import dataclass

INDEX_KINDS = ("categorical", "sequence", "multi_categorical")
KINDS = INDEX_KINDS + ("numeric",)


@dataclass(frozen=True)
class Declared:
    name: str
    kind: str  # one of KINDS
    vocabulary: str | None = None  # index kinds: the vocabulary of the indices
    length: int | None = None  # sequence / multi_categorical: the list length; numeric: a vector's length
    count: bool = False  # numeric: a count, normalized as log1p(x) by default
    statistics_of: str | None = None  # vector: normalized with the fitted statistics of this other vector

    @property
    def is_vector(self) -> bool:
        """A dense float vector (a numeric feature with a length), normalized per dimension."""
        return self.kind == "numeric" and self.length is not None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"feature '{self.name}': kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind in INDEX_KINDS and not self.vocabulary:
            raise ValueError(f"feature '{self.name}': a {self.kind} feature needs its vocabulary")
        if self.kind in ("sequence", "multi_categorical") and self.length is None:
            raise ValueError(f"feature '{self.name}': a {self.kind} feature needs its length")
        if self.kind == "categorical" and self.length is not None:
            raise ValueError(f"feature '{self.name}': a categorical feature is a scalar, it has no length")
        if self.length is not None and (isinstance(self.length, bool) or int(self.length) < 1):
            raise ValueError(f"feature '{self.name}': the length must be a positive integer, got {self.length!r}")
        if self.count and self.kind != "numeric":
            raise ValueError(f"feature '{self.name}': only a numeric feature can be a count")
        if self.count and self.length is not None:
            raise ValueError(f"feature '{self.name}': a count is a scalar, not a vector")
        if self.statistics_of is not None and not self.is_vector:
            raise ValueError(f"feature '{self.name}': only a vector takes the statistics of another one")


def categorical(name: str, vocabulary: str) -> Declared:
    return Declared(name, "categorical", vocabulary=vocabulary)


def sequence(name: str, vocabulary: str, length: int) -> Declared:
    return Declared(name, "sequence", vocabulary=vocabulary, length=int(length))


def multi_categorical(name: str, vocabulary: str, length: int) -> Declared:
    return Declared(name, "multi_categorical", vocabulary=vocabulary, length=int(length))


def numeric(name: str, count: bool = False) -> Declared:
    return Declared(name, "numeric", count=count)


def vector(name: str, length: int, statistics_of: str | None = None) -> Declared:
    """A dense float vector of `length` values (the spec's numeric kind with shape [length]), normalized
    per dimension with its own train statistics or, with `statistics_of`, with those of another vector."""
    return Declared(name, "numeric", length=int(length), statistics_of=statistics_of)
