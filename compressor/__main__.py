"""`python -m compressor run|presets|hardware`: the command line lives in compressor/cli/."""

import sys

from compressor.cli import main

if __name__ == "__main__":
    sys.exit(main())
