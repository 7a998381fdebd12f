"""Run softseg's benchmark (see benchmarks/README.md): a thin wrapper over :func:`softseg.benchmark.main`.

    python benchmarks/run.py                      # every workload, full size (minutes)
    python benchmarks/run.py --quick              # tiny inputs, seconds
    python benchmarks/run.py --workloads W1 W5-3d --repeats 7
"""

import sys

from softseg.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
