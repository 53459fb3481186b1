"""`python -m pixelwise ...` (what torchrun launches) runs the same command line."""

import sys

from pixelwise.cli import main

sys.exit(main())
