import sys

from ddcore.cli import main

sys.exit(main())
