"""`python -m gdexp` is the `gdexp` command."""
import sys

from .cli import main

sys.exit(main())
