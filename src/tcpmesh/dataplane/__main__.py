"""``python -m tcpmesh.dataplane``: the gateway proxy (a supervisor of worker processes)."""

import sys

from tcpmesh.dataplane.supervisor import main

sys.exit(main())
