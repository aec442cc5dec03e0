"""The `img2img-operator` command: the operator process, without the synchronous Kubernetes client.

kopf imports every Kubernetes client it finds installed, for their model types (kopf._cogs.helpers.thirdparty); the
operator talks to the API only through kubernetes_asyncio, and the synchronous client (installed for the CLI) costs
the operator process about 40 MB of memory and half a second of start-up. Blocking it here, in the entry point only,
leaves library users and tests free to import both.
"""

from __future__ import annotations

import sys


def main() -> int:
    sys.modules.setdefault("kubernetes", None)  # type: ignore[arg-type]  # None in sys.modules: "not installed"
    from img2img_operator.main import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
