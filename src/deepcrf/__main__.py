import sys

from deepcrf.cli import main

sys.exit(main())
