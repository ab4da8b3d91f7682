"""What a saved label's values are called: one rule for the folder and the DICOMweb datastores.

Names come from the label's own `label_names` / `label_info` (as the client sent them); nothing is renamed.
- A label that names every value it holds is read by its own names, whatever its values are (a team's own label
  map: each name gets this server's id for it when the label becomes an atlas).
- A label that leaves values unnamed is read as holding this server's ids (GET /info/ labels, the ids SEER's
  masks carry): the table names those values, and a name the label does give that contradicts the table's name
  for the same id ("spleen" on the liver's id) is refused with both names, since such a label's values would
  mean two things.
- A final label must name every value it holds, by its own names or the table's.
"""

from __future__ import annotations

from dataclasses import dataclass

from seer.errors import BadRequest
from seer.reasoning.targets import LabelTable


@dataclass(frozen=True)
class LabelNames:
    """value -> name for every value a label holds (`names`), and the values the table named (`from_table`)."""

    names: dict[int, str]
    from_table: tuple[int, ...]

    def as_label_names(self) -> dict[str, int]:
        """{name: value}, the form SEER returns and stores in a label's info."""
        return {name: value for value, name in sorted(self.names.items())}


def name_label_values(values: tuple[int, ...] | list[int], client: dict[int, str] | None, table: LabelTable,
                      require_all: bool = True) -> LabelNames:
    """The names of `values` (a label's non-zero values) from the client's names first, then `table`; BadRequest
    when the label leaves values to the table and a name it gives contradicts the table's for the same id, or
    (with `require_all`) a value stays unnamed."""
    client = client or {}
    reads_table = any(v not in client for v in values)
    for value in values if reads_table else ():
        name = client.get(value)
        if name is not None and value in table.by_id and not table.names_label(value, name):
            raise BadRequest(f"The label calls value {value} '{name}', but {value} is this server's id for "
                             f"'{table.by_id[value].name}' (GET /info/ lists the ids) and the label leaves other values "
                             "to this server's names: name every value of the label, or send this server's name for "
                             f"{value}. Nothing was saved.")
    names: dict[int, str] = {}
    from_table: list[int] = []
    for value in values:
        if value in client:
            names[value] = client[value]
        elif value in table.by_id:
            names[value] = table.by_id[value].name
            from_table.append(value)
    unnamed = [v for v in values if v not in names]
    if unnamed and require_all:
        shown = ", ".join(map(str, unnamed[:5])) + (" ..." if len(unnamed) > 5 else "")
        raise BadRequest(f"The label holds value(s) {shown} that name no target of this server (GET /info/ lists the "
                         "labels and their ids) and the label's label_names / label_info do not name them: send "
                         "label_names {name: value} for them. Nothing was saved.")
    return LabelNames(names, tuple(from_table))
