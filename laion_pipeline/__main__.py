"""`python -m laion_pipeline`: the command line (laion_pipeline.orchestration.commands)."""

import sys

from laion_pipeline.orchestration.commands import main

if __name__ == "__main__":
    sys.exit(main())
