"""How a model's fields carry their rules, for its constructor and for ``load()``.

Each field of a model (:mod:`timeback_tracker.models`) names its rule in its
attrs metadata (:func:`rule`, :func:`rich_rule`; the rule functions live in
``_rules.py``). :class:`Model` runs them all when a model is built and raises
one ValidationError naming every bad field; ``load()`` runs each one as it
reads the field (:func:`field_rules`) and builds the model without judging it
again (:func:`build_judged`). A rule that spans fields (``endDate`` not before
``startDate``) reads the valid fields before its own, in both.
"""

from __future__ import annotations

import contextvars
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, Literal, TypeVar

import attrs

from timeback_tracker._rules import wire_name
from timeback_tracker.exceptions import FieldError, ValidationError

__all__ = [
    "FieldRule",
    "Model",
    "Rule",
    "build_judged",
    "check",
    "field_rules",
    "instance_of",
    "rich_rule",
    "rule",
]

T = TypeVar("T")
_RULE: Final = "timeback_tracker.rule"
Rule = Callable[[Any, Mapping[str, Any]], Iterable[tuple[str, str | None]]]
"""A field's rule: (value, the valid fields before it) -> (path below the field, problem)."""


def rule(problem: Callable[[Any], str | None]) -> dict[str, Rule]:
    """attrs metadata: ``problem`` (value -> the rule it breaks, or None) is the field's rule.

    Example: ``id: str = attrs.field(metadata=rule(iri_problem))``.
    """
    return {_RULE: lambda value, _: (("", problem(value)),)}


def rich_rule(problems: Rule) -> dict[str, Rule]:
    """attrs metadata: the field's rule reports below the field or reads those before it."""
    return {_RULE: problems}


def instance_of(cls: type[Any]) -> Callable[[Any], str | None]:
    """The rule of a field that holds another model."""
    message = f"must be {'an' if cls.__name__[0] in 'AEIOU' else 'a'} {cls.__name__}"
    return lambda value: None if isinstance(value, cls) else message


def _constant(allowed: object) -> Rule:
    """The rule of ``type``, ``@context`` and the like: they hold their one allowed value."""
    message = f"must be {allowed!r}"
    return lambda value, _: (
        ("", None if isinstance(value, str) and value == allowed else message),
    )


class FieldRule(typing.NamedTuple):
    """One field of a model, its JSON key and its rule (see :func:`field_rules`)."""

    field: attrs.Attribute[Any]
    key: str
    rule: Rule

    def problems(self, value: Any, valid: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The rules that ``value`` breaks as the value of this field.

        Args:
            value: The value, as the model holds it (converted).
            valid: The fields before this one that hold valid values, by attribute
                name. A rule that spans fields (``endDate`` not before ``startDate``)
                reads them here, and skips the comparison when one is not valid.

        Returns:
            (path below the model, rule) pairs: ``("extensions.runId", "must be a UUID")``.
        """
        if value is None and self.field.default is None:
            return []  # an optional field, left out
        return [
            (f"{self.key}.{below}" if below else self.key, problem)
            for below, problem in self.rule(value, valid)
            if problem
        ]


_FIELD_RULES: dict[type[Any], tuple[FieldRule, ...]] = {}


def field_rules(cls: type[Any]) -> tuple[FieldRule, ...]:
    """The fields of the model ``cls``, in order, each with its rule.

    Raises:
        KeyError: A field of ``cls`` declares no rule.
    """
    found = _FIELD_RULES.get(cls)
    if found is None:  # once per class: every model built goes through here
        hints = typing.get_type_hints(cls)
        found = _FIELD_RULES[cls] = tuple(
            FieldRule(
                field,
                wire_name(field.name),
                _constant(field.default)
                if typing.get_origin(hints[field.name]) is Literal
                else field.metadata[_RULE],
            )
            for field in attrs.fields(cls)
        )
    return found


_JUDGED: contextvars.ContextVar[type[Any] | None] = contextvars.ContextVar(
    "timeback_tracker.judged", default=None
)


def build_judged(cls: type[T], values: Mapping[str, Any]) -> T:
    """Build the model ``cls`` from values that its :func:`field_rules` found valid.

    :func:`timeback_tracker.load` judges each field as it reads it; judging them
    all again in the constructor would cost as much again. Only ``cls`` itself
    skips its rules: a model that its converters might build is judged as usual.

    Args:
        cls: A model class.
        values: Its fields by attribute name, as converted and judged field by field
            (in order, each with the valid ones before it); left out, the default.
    """
    token = _JUDGED.set(cls)
    try:
        return cls(**values)
    finally:
        _JUDGED.reset(token)


def check(instance: Any, owner: str | None = None) -> None:
    """Raise one ValidationError listing every field of ``instance`` that breaks its rule.

    Args:
        instance: A model.
        owner: What the errors' paths start with; the class name when None.
    """
    if _JUDGED.get() is type(instance):
        return  # built by build_judged()
    owner = owner or type(instance).__name__
    valid: dict[str, Any] = {}
    errors: list[FieldError] = []
    for field_rule in field_rules(type(instance)):
        value = getattr(instance, field_rule.field.name)
        problems = field_rule.problems(value, valid)
        if problems:
            errors += (FieldError(f"{owner}.{path}", message) for path, message in problems)
        else:
            valid[field_rule.field.name] = value
    if errors:
        raise ValidationError(errors)


class Model:
    """The base of every model: built, it checks its fields' rules and names every bad one."""

    __slots__ = ()

    def __attrs_post_init__(self) -> None:
        check(self)
