"""The demand of capacity-aware locality: this instance's answers per client place.

Why it exists: capacity-aware locality keeps a tier's clients in it only while the
tier has the capacity for them, which needs to know where the queries come from.
The core is pure and owns no counters, so the runtime measures: the transports
count every answer per client class (``FrontMemo.class_totals``, one list increment
on the hot path, exact), and this meter turns the answers since its last look into
each client place's share, averages the shares over ``selection.demand_window``
(an exponential average with that half-life, updated every sixth of it), rounds
them to whole percents (an unchanged demand then gives equal plans, so the SOA
serial and the memoized answers stay), and hands the result to the compiler, which
recompiles the capacity-aware services only (``Compiler.set_demand``).

What feddns sees is its own queries: behind NodeLocal DNSCache or CoreDNS that is
each resolver's cache misses, a proxy for its clients' demand (README).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from feddns.dns.front import FrontMemo
from feddns.policy.locality import Locator, Place
from feddns.policy.spreading import Demand

UPDATES_PER_WINDOW = 6
"""Looks per ``demand_window``: the demand follows a move within about one window."""


class DemandMeter:
    """Measures where queries come from and gives it to the compiler."""

    def __init__(self, front: FrontMemo, apply: Callable[[Demand | None], int], *,
                 locator: Callable[[], Locator], window: Callable[[], float]) -> None:
        self.front = front
        self.apply = apply
        """Takes each new demand (``Compiler.set_demand``)."""
        self.locator = locator
        """The locator in force (a reload replaces it): client class -> place."""
        self.window = window
        self.average: dict[Place, float] = {}
        """Each place's share of the queries, averaged."""
        self.demand: Demand | None = None
        """The last demand handed over."""
        self._last: dict[int, int] = {}

    def tick(self) -> Demand | None:
        """Look at the counts once: fold the new answers in; hand over a changed demand."""
        totals = self.front.class_totals()
        locator = self.locator()
        new: dict[Place, int] = {}
        for cls, n in totals.items():
            delta = n - self._last.get(cls, 0)
            if delta > 0 and cls < len(locator.places):
                place = locator.place(cls)
                new[place] = new.get(place, 0) + delta
        self._last = totals
        count = sum(new.values())
        if count == 0:
            return self.demand
        shares = {p: n / count for p, n in new.items()}
        if not self.average:
            self.average = shares
        else:
            alpha = 1 - 0.5 ** (1 / UPDATES_PER_WINDOW)
            for p in self.average.keys() | shares.keys():
                self.average[p] = (1 - alpha) * self.average.get(p, 0.0) + \
                    alpha * shares.get(p, 0.0)
        places = tuple(sorted(((p, round(v * 100) / 100) for p, v in self.average.items()
                               if round(v * 100) > 0),
                              key=lambda item: (item[0].cluster or "", item[0].region or "",
                                                item[0].zone or "")))
        demand = Demand(places) if places else None
        if demand != self.demand:
            self.demand = demand
            self.apply(demand)
        return demand

    async def run(self) -> None:
        """Look every sixth of ``selection.demand_window`` until cancelled."""
        while True:
            await asyncio.sleep(self.window() / UPDATES_PER_WINDOW)
            self.tick()
