"""`python -m lib.data audit|ensure ...`: the data layer's command line."""
from lib.data import main

raise SystemExit(main())
