"""`python -m hhcl ...` (and `torchrun -m hhcl train ...`) run the command line."""

import sys

from hhcl.cli import main

if __name__ == "__main__":
    sys.exit(main())
