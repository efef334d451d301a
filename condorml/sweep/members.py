"""A sweep specification expanded into its members: the grid crossed with the random samples,
crossed with the seeds, numbered m000, m001, ... in a fixed order (the same spec always gives the
same ids, hyperparameters and folders)."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from condorml.config import (
    TrainConfig,
    combination_problems,
)
from condorml.errors import CondormlError
from condorml.sweep.spec import (
    SIGNIFICANT_DIGITS,
    SweepSpec,
    spec_error,
    toml_text,
    written_table,
)


@dataclass(frozen=True)
class Member:
    """One ensemble member: its id, its seed, and every training option that differs by member."""

    member: str
    seed: int
    hyperparameters: dict[str, Any]  # the swept values (and nothing fixed)

    def options(self, fixed: dict[str, Any]) -> dict[str, Any]:
        """All training options of this member: the fixed ones, its hyperparameters, its seed."""
        return {**fixed, **self.hyperparameters, "seed": self.seed, "member": self.member}


def _validate_combination(spec: SweepSpec, member: Member) -> None:
    """Options valid alone but not together (an image size the model cannot take, ...)."""
    options = member.options(spec.train)
    config = TrainConfig(Path("."), Path("."), **options)
    for name, problem in combination_problems(config):
        table = next(
            (t for t, keys in (("grid", spec.grid), ("random", spec.random)) if name in keys),
            "train",
        )
        written = written_table(spec, "train")  # a path as the spec gives it
        value = written.get(name, options.get(name, getattr(config, name)))
        swept = [f"{k} = {toml_text(member.hyperparameters[k])}" for k in spec.swept]
        which = f" (member {member.member}: {', '.join(swept)})" if swept else ""
        raise spec_error(
            spec.path,
            table,
            name,
            f"got {toml_text(value)} with model = {toml_text(config.model)}{which}; {problem}",
        )


def _sample(spec: SweepSpec) -> list[dict[str, Any]]:
    """The random section's samples, drawn in key order from one seeded generator."""
    if not spec.random:
        return [{}]
    rng = np.random.default_rng(spec.random_seed)
    samples = []
    for _ in range(spec.samples):
        sample = {}
        for name, dist in spec.random.items():
            if isinstance(dist, list):
                sample[name] = dist[int(rng.integers(len(dist)))]
                continue
            ((kind, (low, high)),) = dist.items()
            if kind == "int_uniform":
                sample[name] = int(rng.integers(low, high + 1))
            elif kind == "uniform":
                sample[name] = _round(float(rng.uniform(low, high)))
            else:
                sample[name] = _round(float(math.exp(rng.uniform(math.log(low), math.log(high)))))
        samples.append(sample)
    return samples


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def member_id(index: int, total: int) -> str:
    """``m000``-style id, zero-padded to at least 3 digits.

    Example
    -------
    >>> member_id(7, 12), member_id(7, 2000)
    ('m007', 'm0007')
    """
    return f"m{index:0{max(3, len(str(total - 1)))}d}"


def expand(spec: SweepSpec) -> list[Member]:
    """The members of a sweep, in the documented order, with stable ids.

    Raises
    ------
    CondormlError
        If two members would be identical (e.g. a random choice drawn twice) or a member's
        options are invalid together.
    """
    if spec.search is not None and spec.search.method == "tpe":
        # chosen by TPE when each member is about to start (condorml.sweep.study)
        trials = spec.search.trials
        return [Member(member_id(i, trials), spec.seeds[0], {}) for i in range(trials)]
    grid_points = [
        dict(zip(spec.grid, values, strict=True))
        for values in itertools.product(*spec.grid.values())
    ]
    configurations = [{**point, **sample} for point in grid_points for sample in _sample(spec)]
    total = len(configurations) * len(spec.seeds)
    members, seen = [], {}
    for config in configurations:
        for seed in spec.seeds:
            member = Member(member_id(len(members), total), seed, config)
            key = repr(sorted({**config, "seed": seed}.items()))
            if key in seen:
                raise CondormlError(
                    f"{spec.path}: members {seen[key]} and {member.member} would be identical ({key}); "
                    "widen [random] ranges, lower random.samples, or use a grid"
                )
            seen[key] = member.member
            _validate_combination(spec, member)
            members.append(member)
    return members
