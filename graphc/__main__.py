"""`python -m graphc`: the graphc command line."""
import sys

from graphc.cli import main

sys.exit(main())
