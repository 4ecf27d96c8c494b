"""Turning a .graphql file into registered operations: one stored document per named
operation, holding it and the fragments it uses, printed canonically (that text is what its
sha256 names and what clients send the hash of)."""

from __future__ import annotations

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
    print_ast,
    validate,
)

from prism.errors import BadUserInput


def split_operations(source: str, schema: GraphQLSchema) -> list[tuple[str, str]]:
    """(name, document) for each operation of ``source``; BadUserInput if it does not parse
    or validate, or an operation has no name."""
    try:
        document = parse(source)
    except GraphQLError as exc:
        raise BadUserInput(f"Does not parse: {exc.message}") from exc
    errors = validate(schema, document)
    if errors:
        raise BadUserInput("Does not validate: " + "; ".join(e.message for e in errors))
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    found = []
    for definition in document.definitions:
        if not isinstance(definition, OperationDefinitionNode):
            continue
        if definition.name is None:
            raise BadUserInput("Every registered operation needs a name.")
        used = _fragments_used(definition, fragments)
        single = DocumentNode(definitions=(definition, *(fragments[n] for n in sorted(used))))
        found.append((definition.name.value, print_ast(single)))
    if not found:
        raise BadUserInput("No operation found.")
    return found


def _fragments_used(
    root: OperationDefinitionNode, fragments: dict[str, FragmentDefinitionNode]
) -> set[str]:
    used: set[str] = set()
    pending: list[SelectionSetNode | None] = [root.selection_set]
    while pending:
        selection_set = pending.pop()
        for node in selection_set.selections if selection_set else ():
            if isinstance(node, FragmentSpreadNode):
                name = node.name.value
                if name not in used and name in fragments:
                    used.add(name)
                    pending.append(fragments[name].selection_set)
            else:
                pending.append(getattr(node, "selection_set", None))
    return used
