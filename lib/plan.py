"""`python -m lib.plan`: the compute plan's command line (arms: lib.training.plan; running
them: lib.training.runner)."""
from lib.training.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
