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
    """Tiers that do not describe a price (said why)."""


@dataclass(frozen=True)
class Tier:
    up_to: Decimal | None  # None: no upper bound (the last tier)
    unit_price: Decimal


def tiers_parse(raw: Sequence[dict]) -> list[Tier]:
    """`[{"upTo": n | null, "unitPrice": x}, ...]` as tiers, checked: at least one,
    bounds positive and rising, only the last unbounded, prices not negative."""
    if not raw:
        raise PricingInvalid("at least one tier is needed")
    tiers: list[Tier] = []
    for index, entry in enumerate(raw):
        up_to, price = entry.get("upTo"), entry.get("unitPrice")
        last = index == len(raw) - 1
        if up_to is None and not last:
            raise PricingInvalid(f"tiers[{index}].upTo: only the last tier may be unbounded")
        if up_to is not None:
            up_to = Decimal(str(up_to))
            if up_to <= 0 or (tiers and up_to <= tiers[-1].up_to):
                raise PricingInvalid(f"tiers[{index}].upTo must be above the previous bound")
        if price is None or Decimal(str(price)) < 0:
            raise PricingInvalid(f"tiers[{index}].unitPrice must be zero or more")
        tiers.append(Tier(up_to, Decimal(str(price))))
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
    if model == "GRADUATED":
        return graduated_total(tiers, before + amount) - graduated_total(tiers, before)
    raise PricingInvalid(f"unknown pricing model {model!r}")
