"""``python -m inference detect IMAGE_OR_URL...``"""

from inference.cli import main

raise SystemExit(main())
