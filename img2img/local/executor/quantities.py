"""Resource quantities ("500m", "24Gi") and the requests a pod holds on a node, as kube-scheduler counts them."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1), "k": Decimal(10**3),
            "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12), "P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """A resource.Quantity string ("500m", "24Gi", "1e3", 2) as an exact Decimal."""
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    text = str(value).strip()
    m = _QUANTITY.match(text)
    if not m:
        raise ValueError(f"invalid quantity {value!r}")
    number, exponent, suffix = m.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as e:  # pragma: no cover - the regex already guards this
        raise ValueError(f"invalid quantity {value!r}") from e
    if exponent:
        return base * (Decimal(10) ** int(exponent[1:]))
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    return base * _DECIMAL[suffix or ""]


def format_quantity(resource: str, value: Decimal) -> str:
    """Short human form for messages: cpu in millicores when fractional, else the plain integer."""
    if resource == "cpu" and value != value.to_integral_value():
        return f"{int(value * 1000)}m"
    if value == value.to_integral_value():
        return str(int(value))
    return str(value)


def _container_requests(container: Mapping) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    requests = resources.get("requests") or {}
    limits = resources.get("limits") or {}
    out: dict[str, Decimal] = {}
    # The API server defaults requests to limits; tolerate objects that were not defaulted (unit tests, dry runs).
    for name in set(requests) | set(limits):
        raw = requests.get(name, limits.get(name))
        out[name] = parse_quantity(raw)
    return out


def pod_requests(pod: Mapping) -> dict[str, Decimal]:
    """The scheduler's view of a pod's requests: max(sum(containers), max(init containers)) + overhead."""
    spec = pod.get("spec") or {}
    total: dict[str, Decimal] = {}
    for c in spec.get("containers") or []:
        for name, q in _container_requests(c).items():
            total[name] = total.get(name, Decimal(0)) + q
    for c in spec.get("initContainers") or []:
        for name, q in _container_requests(c).items():
            if q > total.get(name, Decimal(0)):
                total[name] = q
    for name, raw in (spec.get("overhead") or {}).items():
        total[name] = total.get(name, Decimal(0)) + parse_quantity(raw)
    return {k: v for k, v in total.items() if v != 0}


def node_allocatable(node: Mapping) -> dict[str, Decimal]:
    status = node.get("status") or {}
    alloc = status.get("allocatable") or status.get("capacity") or {}
    return {k: parse_quantity(v) for k, v in alloc.items()}

