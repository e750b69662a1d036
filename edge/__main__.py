"""`python -m edge` is the `facesleuth` command."""

import sys

from edge.cli import main

sys.exit(main())
