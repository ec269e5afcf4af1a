"""`python -m trainlab` is the `trainlab` command; torchrun starts it so: `torchrun ... -m trainlab train`."""

import sys

from trainlab.cli import main

if __name__ == "__main__":  # not when a tool imports every module
    sys.exit(main())
