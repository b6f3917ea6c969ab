"""`python -m lib.plan`: the compute plan's command line (arms: lib.training.plan; running
them: lib.training.runner; 04's after arms, derived from 02's stored fits:
lib.analysis.targeted.plan_arms)."""
from lib.analysis import targeted
from lib.training import runner


def main(argv: list[str] | None = None) -> int:
    return runner.main(argv, derived=targeted.plan_arms)


if __name__ == "__main__":
    raise SystemExit(main())
