"""`python -m img2img.local.executor`: see main.py."""

import sys

from img2img.local.executor.main import main

sys.exit(main())
