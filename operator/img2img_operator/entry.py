"""The `img2img-operator` command: the operator process, without the Kubernetes client libraries.

kopf imports every Kubernetes client it finds installed, for their model types (kopf._cogs.helpers.thirdparty); the
operator talks to the API with aiohttp alone (``img2img_operator.kube``), and the clients installed for the CLI
(kubernetes) and the gateway (kubernetes_asyncio) would cost the operator process about 40 and 70 MB of memory and
a second of start-up. Blocking them here, in the entry point only, leaves library users and tests free to import
them.
"""

from __future__ import annotations

import sys

# Modules the operator process never imports; None in sys.modules reads as "not installed".
BLOCKED = ("kubernetes", "kubernetes_asyncio")


def main() -> int:
    for name in BLOCKED:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
    from img2img_operator.main import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
