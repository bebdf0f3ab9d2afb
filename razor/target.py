"""The forget target (METHOD.md §4): FA@1 on forget-val that counts as forgotten, fixed, or
"forgotten like the oracle": `forget_target: oracle` aims at what a model that never saw the
concept does there, the retrain oracle's FA@1 plus `oracle_margin`. The oracle's FA is the one a
request records (`oracle_fa`), else measured on the oracle `--method retrain` trained and cached
for this data and concept; with neither, the fixed default stands, recorded as an estimate."""

from __future__ import annotations

from razor.config import TargetParams

DEFAULT = TargetParams.model_fields["forget_target"].default


def resolve(task, p):
    """(`p` with a numeric forget_target, the record of where it came from); params without a
    forget target come back as they are, with None."""
    if not isinstance(p, TargetParams):
        return p, None
    if p.forget_target != "oracle":
        return p, dict(value=p.forget_target, source="fixed")
    if p.oracle_fa is not None:
        fa, record = p.oracle_fa, dict(source="oracle (recorded in the request)")
    else:
        from razor.baselines.retrain import oracle_fa  # a baseline loads when used (as in razor.methods)
        from razor.families import of

        found = oracle_fa(task) if "retrain" in of(task.adapter).methods else None
        if found is None:
            return p.model_copy(update=dict(forget_target=DEFAULT)), dict(
                value=DEFAULT, source="estimate", why="no oracle recorded or cached for this request (`--method "
                "retrain` trains one where the model's recipe allows); the fixed default stands")
        fa, folder = found
        record = dict(source="oracle (measured on forget-val)", oracle=str(folder))
    value = round(min(1.0, fa + p.oracle_margin), 4)
    return p.model_copy(update=dict(forget_target=value)), dict(value=value, oracle_fa=round(fa, 4), **record)
