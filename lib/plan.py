"""`python -m lib.plan`: the compute plan's command line (the plan itself is lib.training.plan)."""
from lib.training.plan import main

if __name__ == "__main__":
    raise SystemExit(main())
