import sys

from chaosfm.cli import main

sys.exit(main())
