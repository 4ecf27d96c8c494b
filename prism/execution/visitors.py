"""Validation rules whose visitor functions are looked up once per class.

graphql-core looks up a rule's enter and leave functions per instance and node kind (four
``getattr`` and a tuple each), and a validation makes a new instance of every rule, so a
small document's validation spent much of its time there. ``resolved_per_class(rule)`` is
the rule with that lookup done once per class: it validates exactly as the rule does (a test
compares both on valid and invalid documents)."""

from __future__ import annotations

from types import FunctionType, MethodType
from typing import Any, ClassVar

from graphql import ASTValidationRule
from graphql.language.visitor import EnterLeaveVisitor

_NEITHER = EnterLeaveVisitor(None, None)


class _ResolvedPerClass(ASTValidationRule):
    """A rule whose enter and leave functions per node kind are looked up once per class.

    graphql-core looks them up per instance (four ``getattr`` and a tuple per rule and node
    kind), and a validation makes a new instance of every rule. A kind a rule does not visit
    is answered with one shared empty pair; the functions found are the class's, bound to
    the instance (a static method as it is)."""

    # kind -> ((enter, bind it), (leave, bind it)), per class (``resolved_per_class``)
    _kinds: ClassVar[dict[str, tuple[tuple[Any, bool], tuple[Any, bool]]]] = {}

    def get_enter_leave_for_kind(self, kind: str) -> EnterLeaveVisitor:
        try:
            return self.enter_leave_map[kind]
        except KeyError:
            pass
        kinds = type(self)._kinds
        found = kinds.get(kind)
        if found is None:
            cls = type(self)
            found = kinds[kind] = (
                _handler(cls, f"enter_{kind}") or _handler(cls, "enter") or (None, False),
                _handler(cls, f"leave_{kind}") or _handler(cls, "leave") or (None, False),
            )
        (enter, bind_enter), (leave, bind_leave) = found
        pair = (
            _NEITHER
            if enter is None and leave is None
            else EnterLeaveVisitor(
                MethodType(enter, self) if bind_enter else enter,
                MethodType(leave, self) if bind_leave else leave,
            )
        )
        self.enter_leave_map[kind] = pair
        return pair


def _handler(cls: type, name: str) -> tuple[Any, bool] | None:
    """The function ``name`` of ``cls`` and whether it binds to the instance (None: none)."""
    for klass in cls.__mro__:
        if name in vars(klass):
            raw = vars(klass)[name]
            if isinstance(raw, staticmethod):
                return raw.__func__, False
            return (raw, True) if raw is not None else None
    return None


_PER_CLASS: dict[type[ASTValidationRule], type[ASTValidationRule]] = {}


def resolved_per_class(rule: type[ASTValidationRule]) -> type[ASTValidationRule]:
    """``rule`` with its visitor functions looked up once per class (``_ResolvedPerClass``);
    it validates exactly as ``rule`` does. A rule whose visitor functions are other than
    plain functions or static methods is kept as it is."""
    found = _PER_CLASS.get(rule)
    if found is None:
        plain = all(
            isinstance(value, FunctionType | staticmethod)
            for klass in rule.__mro__
            for name, value in vars(klass).items()
            if name.startswith(("enter", "leave"))
        )
        found = type(rule.__name__, (_ResolvedPerClass, rule), {"_kinds": {}}) if plain else rule
        _PER_CLASS[rule] = found
    return found
