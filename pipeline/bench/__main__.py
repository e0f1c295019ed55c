"""`python -m pipeline.bench`: the speed benchmark (`--help` for options)."""
import sys

from pipeline.bench.cli import main

sys.exit(main())
