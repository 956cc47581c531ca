"""Which cases served which purpose, and what kind of figure each recorded number is.

A bundle's provenance says, per case id, which cases the weights were trained on
(``training``), which chose a checkpoint or a recipe (``selection``) and which were kept
away from both and reported (``test``); every recorded figure says which kind it is:

* ``test``: cases never trained on and never used to choose a checkpoint or recipe;
* ``cross-validation``: each case held out once by a fold model of the same recipe
  (the shipped weights may have been trained on all of them);
* ``selection``: cases that chose a checkpoint (best validation Dice) or shaped the recipe
  (postprocessing, augmentation, schedule): optimistic, never "held out" or "external";
* ``training-set regression check``: the shipped weights on cases they were trained on (a
  check that the weights reproduce, not a measure of accuracy);
* ``external test``: another dataset, never trained on and never used for any choice.

Plain JSON-able dicts; no torch import (``medcnn models show`` reads this).
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping, Sequence

from medcnn.errors import ConfigError

__all__ = ["FIGURE_KINDS", "ROLES", "data_use_record", "figures", "check_data_use", "figure_case_ids"]

FIGURE_KINDS = ("test", "cross-validation", "selection", "training-set regression check", "external test")
"""The kinds a recorded figure can be (``figure["kind"]``)."""

ROLES = ("training", "selection", "test")
"""The roles a case can have for the shipped weights (``provenance["data_use"][role]``: case ids)."""

# provenance keys that hold figures, with the nested figure dicts they may contain
_FIGURE_PATHS = (("validation",), ("validation", "selection"), ("validation", "external"), ("cross_validation",),
                 ("cross_validation", "external"), ("regression_check",))


def data_use_record(*, training: Sequence[str], selection: Sequence[str] = (), test: Sequence[str] = (),
                    external_test: Sequence[str] = (), recipe_selection: Sequence[str] = (), checkpoint: str,
                    notes: Sequence[str] = ()) -> dict[str, Any]:
    """The ``provenance["data_use"]`` block: case ids per role, how the checkpoint was chosen.

    Args:
        training: case ids the weights were trained on.
        selection: case ids that chose the checkpoint or shaped the recipe.
        test: case ids reported as held out (never trained on, never selected on).
        external_test: case ids of another dataset kept out of training and of every choice.
        recipe_selection: case ids whose results shaped the recipe in earlier runs (they may be
            in ``training`` of the shipped weights, never in ``test`` or ``external_test``).
        checkpoint: how the exported weights were chosen, e.g. ``"final step 1500"``.
    Raises:
        ConfigError: a case id in two roles (selection and test, or training and either).
    """
    rec = {"training": sorted(map(str, training)), "selection": sorted(map(str, selection)),
           "test": sorted(map(str, test)), "external_test": sorted(map(str, external_test)),
           "recipe_selection": sorted(map(str, recipe_selection)), "checkpoint": checkpoint, "notes": list(notes)}
    check_data_use(rec)
    return rec


def check_data_use(rec: Mapping[str, Any], *, source: str = "data_use") -> None:
    """Refuse overlapping roles: a test or external-test case also used for training or selection."""
    sets = {k: set(rec.get(k) or ()) for k in ("training", "selection", "test", "external_test", "recipe_selection")}
    for a, b in (("selection", "test"), ("training", "test"), ("training", "selection"),
                 ("external_test", "training"), ("external_test", "selection"), ("external_test", "test"),
                 ("recipe_selection", "test"), ("recipe_selection", "external_test")):
        both = sorted(sets[a] & sets[b])
        if both:
            raise ConfigError.expected(f"{a} and {b} cases disjoint", f"{len(both)} in both, e.g. {both[0]!r}",
                                       path=source)


def figures(provenance: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(dotted key, figure dict)`` for every recorded figure of a bundle's provenance
    (``validation``, ``validation.selection``, ``validation.external``, ``cross_validation``,
    ``cross_validation.external``, ``regression_check``); empty ones are skipped."""
    for path in _FIGURE_PATHS:
        node: Any = provenance
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and node:
            yield ".".join(path), node


def figure_case_ids(figure: Mapping[str, Any]) -> set[str]:
    """Case ids (or patient ids, for per-patient EF tables) a figure was computed on."""
    ids = {str(c["case_id"]) for c in figure.get("cases") or () if isinstance(c, Mapping) and "case_id" in c}
    ids |= {str(p["patient"]) for p in figure.get("lv_ef_error_per_patient") or () if isinstance(p, Mapping)}
    return ids
