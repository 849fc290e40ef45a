"""What a plan chose: (dotted config key, value, reason) entries in recipe
order, plus notes and warnings for the user."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass
class PlannedRecipe:
  """The recipe's entries in order, and what the user should know."""
  entries: list[tuple[str, Any, str]] = field(default_factory=list)
  warnings: list[str] = field(default_factory=list)
  notes: list[str] = field(default_factory=list)
  # The spacing (mm per stored axis) of the records the recipe reads, when
  # the plan resamples the converter's: `run` writes them.
  resample_to: Optional[tuple[float, ...]] = None

  def add(self, key: str, value: Any, reason: str) -> None:
    self.entries.append((key, value, reason))

  def values(self) -> dict[str, Any]:
    return {k: v for k, v, _ in self.entries}
