import sys

from kitebox.cli import main

sys.exit(main())
