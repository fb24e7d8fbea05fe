"""What usage costs under a plan rate: per unit, or graduated over the cycle's cumulative
usage, exactly (Decimal; rounding to a currency's minor unit is for display only).

Revenue accrues as usage arrives, so the unit of work is an increment: `charge` prices
`amount` more usage on top of `before` already used in the cycle. Graduated tiers apply
to the cumulative total: with tiers up to 1,000 at 0.10 and beyond at 0.08, going from
900 to 1,200 costs 100 at 0.10 plus 200 at 0.08.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal


class PricingInvalid(ValueError):
    """Tiers that do not describe a price: `problems` holds (path, message) pairs, the
    path relative to the list (`[1].upTo`)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{where}: {message}" for where, message in problems))
        self.problems = problems


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # None: no upper bound (the last tier)
    unit_price: Decimal


TIER_KEYS = ("upTo", "unitPrice")


def _number(value: object) -> Decimal | None:
    """A JSON number as an exact Decimal; None for anything else (text and booleans too)."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    number = Decimal(str(value))
    return number if number.is_finite() else None


def tiers_parse(raw: object) -> list[Tier]:
    """`[{"upTo": n | null, "unitPrice": x}, ...]` as tiers, checked (the one rule set of
    the API and the admin): at least one tier, each an object with exactly those keys,
    bounds positive and rising, only the last open, prices numbers not below zero."""
    if not isinstance(raw, list) or not raw:
        raise PricingInvalid([("", "Must be a list of at least one tier.")])
    problems: list[tuple[str, str]] = []
    tiers: list[Tier] = []
    previous: Decimal | None = None
    for index, entry in enumerate(raw):
        where = f"[{index}]"
        if not isinstance(entry, dict):
            problems.append((where, 'Must be an object like {"upTo": 100, "unitPrice": 1}.'))
            continue
        problems += [(f"{where}.{key}", "Unknown field.") for key in entry if key not in TIER_KEYS]
        price = _number(entry.get("unitPrice"))
        if price is None:
            problems.append((f"{where}.unitPrice", "Must be a number."))
        elif price < 0:
            problems.append((f"{where}.unitPrice", "Must not be negative."))
        if "upTo" not in entry:
            problems.append((f"{where}.upTo", "Required (null for an open last tier)."))
            continue
        bound = None if entry["upTo"] is None else _number(entry["upTo"])
        if entry["upTo"] is None:
            if index != len(raw) - 1:
                problems.append((f"{where}.upTo", "Only the last tier may be open (null)."))
        elif bound is None:
            problems.append((f"{where}.upTo", "Must be a number or null."))
        elif bound <= 0:
            problems.append((f"{where}.upTo", "Must be above zero."))
        elif previous is not None and bound <= previous:
            problems.append((f"{where}.upTo", f"Must be above the previous bound {previous}."))
        if bound is not None:
            previous = bound
        tiers.append(Tier(bound, price if price is not None else Decimal(0)))
    if problems:
        raise PricingInvalid(problems)
    return tiers


def graduated_total(tiers: Sequence[Tier], usage: Decimal) -> Decimal:
    """The price of `usage` units from zero."""
    total, floor = Decimal(0), Decimal(0)
    for tier in tiers:
        if usage <= floor:
            break
        ceiling = usage if tier.up_to is None else min(usage, tier.up_to)
        total += (ceiling - floor) * tier.unit_price
        if tier.up_to is None:
            return total
        floor = tier.up_to
    if usage > floor:  # beyond the last bounded tier: its price goes on
        total += (usage - floor) * tiers[-1].unit_price
    return total


def total_price(
    *,
    model: str,
    usage: Decimal,
    unit_price: Decimal | None = None,
    tiers: Sequence[Tier] = (),
) -> Decimal:
    """The price of a cycle's whole `usage`."""
    if model == "PER_UNIT":
        return usage * (unit_price or Decimal(0))
    if model == "GRADUATED":
        return graduated_total(tiers, usage)
    raise PricingInvalid([("model", f"Unknown pricing model {model!r}.")])


def charge(
    *,
    model: str,
    before: Decimal,
    amount: Decimal,
    unit_price: Decimal | None = None,
    tiers: Sequence[Tier] = (),
) -> Decimal:
    """The revenue of `amount` more usage after `before` in the cycle."""
    if model == "PER_UNIT":
        return amount * (unit_price or Decimal(0))
    after = total_price(model=model, usage=before + amount, unit_price=unit_price, tiers=tiers)
    return after - total_price(model=model, usage=before, unit_price=unit_price, tiers=tiers)
