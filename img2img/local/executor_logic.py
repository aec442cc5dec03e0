"""Pure decisions of the local executor (scheduler + kubelet stand-in), kept apart from all I/O.

Everything here takes plain API dicts (as the API server sends them) and returns plain values, so it is unit-tested
without a cluster. `img2img.local.executor` does the I/O around it. The semantics and the message strings follow
kube-scheduler (NodeUnschedulable, TaintToleration, NodeAffinity, NodeResourcesFit filters and `FitError`) and the
kubelet (`getPhase`, pod conditions, container statuses, termination messages, env var expansion).
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from collections.abc import Callable, Iterable, Mapping

DEFAULT_SCHEDULER = "default-scheduler"
TERMINAL_PHASES = ("Succeeded", "Failed")

# Kubelet constants (pkg/kubelet/container, eviction, nodeshutdown, active_deadline).
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
UNKNOWN_EXIT_CODE = 137
UNKNOWN_MESSAGE = "The container could not be located when the pod was terminated"
UNKNOWN_DELETED_MESSAGE = ("The container could not be located when the pod was deleted.  "
                           "The container used to be Running")
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"
EVICTED_REASON = "Evicted"
NODE_LOW_MESSAGE = "The node was low on resource: {resource}. "
SHUTDOWN_REASON = "Terminated"
SHUTDOWN_MESSAGE = "Pod was terminated in response to imminent node shutdown."
TERMINATION_BY_KUBELET = "TerminationByKubelet"
CRASH_BACKOFF_INITIAL = 10.0
CRASH_BACKOFF_MAX = 300.0

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"


# ---- time ---------------------------------------------------------------------------------------------------------
def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def rfc3339(t: dt.datetime | None) -> str | None:
    """metav1.Time: second precision, UTC, `Z`."""
    if t is None:
        return None
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t: dt.datetime) -> str:
    """metav1.MicroTime (Lease renewTime, Event eventTime)."""
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    value = value.replace("Z", "+00:00")
    return dt.datetime.fromisoformat(value)


# ---- quantities ---------------------------------------------------------------------------------------------------
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


def is_terminal(pod: Mapping) -> bool:
    return (pod.get("status") or {}).get("phase") in TERMINAL_PHASES


def holds_resources(pod: Mapping) -> bool:
    """Whether a bound pod counts against its node: every pod not Succeeded/Failed, terminating ones included."""
    return not is_terminal(pod)


# ---- taints and tolerations ---------------------------------------------------------------------------------------
def tolerates(toleration: Mapping, taint: Mapping) -> bool:
    """v1.Toleration.ToleratesTaint."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    operator = toleration.get("operator") or "Equal"
    if operator == "Exists":
        return True
    if operator == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def untolerated_taint(taints: Iterable[Mapping], tolerations: Iterable[Mapping],
                      effects: tuple[str, ...] = ("NoSchedule", "NoExecute")) -> Mapping | None:
    tolerations = list(tolerations or [])
    for taint in taints or []:
        if taint.get("effect") not in effects:
            continue
        if not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


# ---- node affinity ------------------------------------------------------------------------------------------------
def _match_requirement(req: Mapping, values_of: Mapping[str, str]) -> bool:
    key, op, values = req.get("key"), req.get("operator"), list(req.get("values") or [])
    present = key in values_of
    value = values_of.get(key)
    if op == "In":
        return present and value in values
    if op == "NotIn":
        return not present or value not in values
    if op == "Exists":
        return present
    if op == "DoesNotExist":
        return not present
    if op in ("Gt", "Lt"):
        if not present or len(values) != 1:
            return False
        try:
            lhs, rhs = int(value), int(values[0])
        except (TypeError, ValueError):
            return False
        return lhs > rhs if op == "Gt" else lhs < rhs
    return False


def _match_term(term: Mapping, node: Mapping) -> bool:
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term matches no objects
    labels = (node.get("metadata") or {}).get("labels") or {}
    node_fields = {"metadata.name": (node.get("metadata") or {}).get("name")}
    return all(_match_requirement(r, labels) for r in expressions) and all(
        _match_requirement(r, node_fields) for r in fields
    )


def matches_node_affinity(pod: Mapping, node: Mapping) -> bool:
    """nodeSelector AND requiredDuringSchedulingIgnoredDuringExecution (terms ORed)."""
    spec = pod.get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is not None:
        terms = required.get("nodeSelectorTerms") or []
        if not any(_match_term(t, node) for t in terms):
            return False
    return True


# ---- fit ------------------------------------------------------------------------------------------------------------
@dataclass
class NodeFit:
    """The result of the filter plugins for one node. `resolvable`: preemption could help (resources only)."""

    node: str
    reasons: list[str] = field(default_factory=list)
    resolvable: bool = True

    @property
    def ok(self) -> bool:
        return not self.reasons


def insufficient_resources(pod: Mapping, node: Mapping,
                           bound_pods: Iterable[Mapping]) -> list[tuple[str, Decimal, Decimal, Decimal]]:
    """(resource, requested, used, allocatable) for every resource the pod does not fit, "pods" first."""
    alloc = node_allocatable(node)
    holding = [p for p in bound_pods if holds_resources(p)]
    used: dict[str, Decimal] = {}
    for p in holding:
        for name, q in pod_requests(p).items():
            used[name] = used.get(name, Decimal(0)) + q
    out = []
    max_pods = alloc.get("pods")
    if max_pods is not None and len(holding) + 1 > max_pods:
        out.append(("pods", Decimal(1), Decimal(len(holding)), max_pods))
    for name, q in sorted(pod_requests(pod).items()):
        if q <= 0:
            continue
        have = alloc.get(name, Decimal(0))
        if q > have - used.get(name, Decimal(0)):
            out.append((name, q, used.get(name, Decimal(0)), have))
    return out


def fits(pod: Mapping, node: Mapping, bound_pods: Iterable[Mapping]) -> NodeFit:
    """kube-scheduler's filters, in its order, for one node. `bound_pods`: the pods already assigned to the node."""
    name = (node.get("metadata") or {}).get("name", "")
    spec = pod.get("spec") or {}
    tolerations = spec.get("tolerations") or []
    node_spec = node.get("spec") or {}
    if node_spec.get("unschedulable"):
        taint = {"key": UNSCHEDULABLE_TAINT, "effect": "NoSchedule"}
        if not any(tolerates(t, taint) for t in tolerations):
            return NodeFit(name, ["node(s) were unschedulable"], resolvable=False)
    if spec.get("nodeName") and spec["nodeName"] != name:
        return NodeFit(name, ["node(s) didn't match the requested node name"], resolvable=False)
    taint = untolerated_taint(node_spec.get("taints") or [], tolerations)
    if taint is not None:
        return NodeFit(name, [f"node(s) had untolerated taint {{{taint.get('key')}: {taint.get('value') or ''}}}"],
                       resolvable=False)
    if not matches_node_affinity(pod, node):
        return NodeFit(name, ["node(s) didn't match Pod's node affinity/selector"], resolvable=False)
    missing = insufficient_resources(pod, node, bound_pods)
    if missing:
        return NodeFit(name, ["Too many pods" if r == "pods" else f"Insufficient {r}" for r, *_ in missing])
    return NodeFit(name)


def fit_error_message(results: list[NodeFit]) -> str:
    """framework.FitError.Error() plus the preemption post-filter's summary, as kube-scheduler words it."""
    if not results:
        return "no nodes available to schedule pods"
    n = len(results)
    counts = Counter(reason for r in results for reason in r.reasons)
    reasons = sorted(f"{v} {k}" for k, v in counts.items())
    message = f"0/{n} nodes are available: {', '.join(reasons)}."
    pre = Counter("No preemption victims found for incoming pod" if r.resolvable
                  else "Preemption is not helpful for scheduling" for r in results)
    message += f" preemption: 0/{n} nodes are available: {', '.join(sorted(f'{v} {k}' for k, v in pre.items()))}."
    return message


def _score(pod: Mapping, node: Mapping, bound_pods: list[Mapping]) -> float:
    """LeastAllocated-like: the mean free fraction, after placing the pod, over cpu, memory and what the pod asks."""
    alloc = node_allocatable(node)
    used: dict[str, Decimal] = {}
    for p in bound_pods:
        if holds_resources(p):
            for k, q in pod_requests(p).items():
                used[k] = used.get(k, Decimal(0)) + q
    req = pod_requests(pod)
    names = {"cpu", "memory"} | set(req)
    fractions = []
    for k in names:
        cap = alloc.get(k, Decimal(0))
        if cap > 0:
            fractions.append(float((cap - used.get(k, Decimal(0)) - req.get(k, Decimal(0))) / cap))
    return sum(fractions) / len(fractions) if fractions else 0.0


@dataclass
class ScheduleResult:
    node: str | None
    message: str = ""
    results: list[NodeFit] = field(default_factory=list)


def schedule(pod: Mapping, nodes: list[Mapping], pods_by_node: Mapping[str, list[Mapping]]) -> ScheduleResult:
    """Pick a node for `pod` (None and the scheduler's message when none fits)."""
    results = []
    feasible = []
    for node in sorted(nodes, key=lambda n: n["metadata"]["name"]):
        name = node["metadata"]["name"]
        bound = pods_by_node.get(name, [])
        r = fits(pod, node, bound)
        results.append(r)
        if r.ok:
            feasible.append((-_score(pod, node, bound), name))
    if feasible:
        return ScheduleResult(sorted(feasible)[0][1], results=results)
    return ScheduleResult(None, fit_error_message(results), results)


def wants_scheduler(pod: Mapping, scheduler_name: str = DEFAULT_SCHEDULER) -> bool:
    """An unbound, live, ungated pod addressed to this scheduler."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    return (
        not spec.get("nodeName")
        and (spec.get("schedulerName") or DEFAULT_SCHEDULER) == scheduler_name
        and not meta.get("deletionTimestamp")
        and not is_terminal(pod)
    )


def scheduling_order(pods: Iterable[Mapping]) -> list[Mapping]:
    """PrioritySort: higher spec.priority first, then older first."""
    return sorted(pods, key=lambda p: (-int((p.get("spec") or {}).get("priority") or 0),
                                       (p.get("metadata") or {}).get("creationTimestamp") or "",
                                       (p.get("metadata") or {}).get("name") or ""))


def unschedulable_condition(reason: str, message: str, now: dt.datetime, previous: Mapping | None) -> dict:
    same = previous and previous.get("status") == "False"
    return {
        "type": "PodScheduled",
        "status": "False",
        "reason": reason,
        "message": message,
        "lastProbeTime": None,
        "lastTransitionTime": previous.get("lastTransitionTime") if same else rfc3339(now),
    }


def admit(pod: Mapping, node: Mapping, active_pods: Iterable[Mapping]) -> tuple[bool, str, str]:
    """The kubelet's admission (predicateAdmitHandler) for a pod bound to this node: node affinity and resources."""
    if not matches_node_affinity(pod, node):
        return False, "NodeAffinity", "Pod was rejected: Predicate NodeAffinity failed"
    missing = insufficient_resources(pod, node, active_pods)
    if missing:
        r, requested, used, cap = missing[0]
        return (False, f"OutOf{r}", "Pod was rejected: Node didn't have enough resource: "
                f"{r}, requested: {format_quantity(r, requested)}, used: {format_quantity(r, used)}, "
                f"capacity: {format_quantity(r, cap)}")
    return True, "", ""


# ---- images -------------------------------------------------------------------------------------------------------
def normalize_image(ref: str) -> str:
    """docker.io/library/busybox:latest style, as containerd reports it."""
    name = ref
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    last = name.rsplit("/", 1)[-1]
    if "@" not in last and ":" not in last:
        name += ":latest"
    return name


def match_image(image: str, table: Mapping[str, Mapping]) -> Mapping | None:
    """The first table entry whose fnmatch pattern matches the image as written or normalized."""
    candidates = (image, normalize_image(image))
    for pattern, entry in table.items():
        if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
            return entry
    return None


def image_id(image: str) -> str:
    normalized = normalize_image(image)
    repo = normalized.split("@", 1)[0]
    last = repo.rsplit("/", 1)
    if ":" in last[-1]:
        repo = repo[: repo.rfind(":")]
    return f"{repo}@sha256:{hashlib.sha256(normalized.encode()).hexdigest()}"


def image_pull_error(image: str) -> str:
    ref = normalize_image(image)
    return (f"rpc error: code = NotFound desc = failed to pull and unpack image \"{ref}\": failed to resolve "
            f"reference \"{ref}\": {ref}: not found (local executor: no entry of its image table matches {image!r})")


# ---- env ----------------------------------------------------------------------------------------------------------
def expand(text: str, lookup: Mapping[str, str]) -> str:
    """k8s.io/kubernetes third_party/forked/golang/expansion.Expand: $(VAR), $$ escapes, unknown refs kept."""
    out = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == "$":
                read, is_var, advance = "$", False, 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    read, is_var, advance = "$(", False, 1
                else:
                    read, is_var, advance = rest[1:close], True, close + 1
            else:
                read, is_var, advance = "$" + rest[0], False, 1
            if is_var:
                out.append(lookup[read] if read in lookup else f"$({read})")
            else:
                out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


class EnvError(Exception):
    """CreateContainerConfigError: the message is what the kubelet shows in the waiting state."""


_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref_value(pod: Mapping, path: str, *, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path] or ""
    m = _FIELD_LABEL.match(path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise EnvError(f"unsupported fieldRef {path!r}")


def resource_field_value(container: Mapping, ref: Mapping, node_alloc: Mapping[str, Decimal]) -> str:
    resource = ref.get("resource", "")
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is not None:
        value = parse_quantity(raw)
    else:  # no limit: the node's allocatable, as the kubelet reports it
        value = node_alloc.get(name, Decimal(0)) if kind == "limits" else Decimal(0)
    return str(int(math.ceil(value / divisor)))


def secret_value(secret: Mapping, key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode("utf-8", errors="replace")
    string_data = secret.get("stringData") or {}
    return string_data.get(key)


def configmap_value(cm: Mapping, key: str) -> str | None:
    data = cm.get("data") or {}
    if key in data:
        return data[key]
    binary = cm.get("binaryData") or {}
    if key in binary:
        return base64.b64decode(binary[key]).decode("utf-8", errors="replace")
    return None


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

Getter = Callable[[str, str], "Mapping | None"]  # (namespace, name) -> object, None if not found


def _referenced(ns: str, ref: Mapping, get: Getter, noun: str) -> Mapping | None:
    """The Secret or ConfigMap ``ref`` names; None when it is missing and optional, else the kubelet's error."""
    obj = get(ns, ref.get("name", ""))
    if obj is None and not ref.get("optional"):
        raise EnvError(f'{noun} "{ref.get("name")}" not found')
    return obj


def container_env(pod: Mapping, container: Mapping, *, get_secret: Getter, get_configmap: Getter,
                  service_env: Mapping[str, str], pod_ip: str, host_ip: str,
                  node_alloc: Mapping[str, Decimal] | None = None) -> dict[str, str]:
    """kubelet makeEnvironmentVariables: envFrom, then env (with $(VAR) expansion), then service links.

    Raises EnvError with the kubelet's message for CreateContainerConfigError.
    """
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    # where a variable can come from: (read it, a key's value, the kubelet's words for it)
    sources = {"configMapRef": (get_configmap, configmap_value, "configmap", "ConfigMap"),
               "secretRef": (get_secret, secret_value, "secret", "Secret")}
    key_refs = {"secretKeyRef": sources["secretRef"], "configMapKeyRef": sources["configMapRef"]}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        kind = next((k for k in sources if k in source), None)
        if kind is None:
            continue
        get, value_of, noun, _ = sources[kind]
        ref = source[kind]
        obj = _referenced(ns, ref, get, noun)
        for k in (obj or {}).get("data") or {}:
            if _ENV_NAME.match(prefix + k):
                env[prefix + k] = value_of(obj, k) or ""
    lookup_base = dict(service_env)
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "valueFrom" not in var:
            value = expand(var.get("value") or "", {**lookup_base, **env})
        else:
            source = var["valueFrom"] or {}
            kind = next((k for k in key_refs if k in source), None)
            if kind is not None:
                get, value_of, noun, title = key_refs[kind]
                ref = source[kind]
                obj = _referenced(ns, ref, get, noun)
                value = value_of(obj, ref.get("key", "")) if obj is not None else None
                if value is None:
                    if ref.get("optional"):
                        continue
                    raise EnvError(f"couldn't find key {ref.get('key')} in {title} {ns}/{ref.get('name')}")
            elif "fieldRef" in source:
                value = field_ref_value(pod, source["fieldRef"].get("fieldPath", ""), pod_ip=pod_ip, host_ip=host_ip)
            elif "resourceFieldRef" in source:
                value = resource_field_value(container, source["resourceFieldRef"], node_alloc or {})
            else:
                raise EnvError(f"unsupported valueFrom for {name}")
        env[name] = value
    for k, v in service_env.items():
        env.setdefault(k, v)
    return env


def container_argv(container: Mapping, env: Mapping[str, str]) -> list[str] | None:
    """command + args with $(VAR) expansion; None when there is no command (there is no image entrypoint here)."""
    command = list(container.get("command") or [])
    if not command:
        return None
    return [expand(a, env) for a in command + list(container.get("args") or [])]


# ---- termination messages -----------------------------------------------------------------------------------------
def log_tail(data: bytes, lines: int = FALLBACK_LOG_LINES, max_bytes: int = FALLBACK_LOG_BYTES) -> str:
    """The last `lines` lines, at most `max_bytes` bytes (kubelet's FallbackToLogsOnError)."""
    parts = data.splitlines(keepends=True)[-lines:]
    tail = b"".join(parts)[-max_bytes:]
    return tail.decode("utf-8", errors="replace")


def termination_message(file_content: bytes | None, policy: str | None, exit_code: int, log: bytes = b"") -> str:
    message = (file_content or b"")[:MAX_TERMINATION_MESSAGE].decode("utf-8", errors="replace")
    if not message and (policy or "File") == "FallbackToLogsOnError" and exit_code != 0:
        message = log_tail(log)
    return message


def exit_code_of(returncode: int) -> int:
    """Popen.returncode → container exit code (signals as 128 + n, like a shell and containerd)."""
    return 128 - returncode if returncode < 0 else returncode


def crash_backoff(restarts: int) -> float:
    """Kubelet's CrashLoopBackOff delay before restart number `restarts` (1-based): 10 s doubling to 300 s."""
    return min(CRASH_BACKOFF_INITIAL * (2 ** max(restarts - 1, 0)), CRASH_BACKOFF_MAX)


def should_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)


# ---- container and pod status -------------------------------------------------------------------------------------
@dataclass
class ContainerRun:
    """What the executor knows about one container instance (and its previous one)."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    container_id: str = ""
    image_id: str = ""
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    exit_code: int | None = None
    restart_count: int = 0
    last_state: dict | None = None  # API form of lastState.terminated

    def terminated_dict(self) -> dict:
        d = {"exitCode": self.exit_code if self.exit_code is not None else 0, "reason": self.reason}
        if self.message:
            d["message"] = self.message
        d["startedAt"] = rfc3339(self.started_at)
        d["finishedAt"] = rfc3339(self.finished_at)
        if self.container_id:
            d["containerID"] = self.container_id
        return d

    @property
    def ready(self) -> bool:
        return self.state == "running"  # no readiness probes: ready once started


def container_status(run: ContainerRun) -> dict:
    status: dict = {
        "name": run.name,
        "image": normalize_image(run.image),
        "imageID": run.image_id,
        "ready": run.ready,
        "restartCount": run.restart_count,
        "started": run.state == "running",
    }
    if run.container_id:
        status["containerID"] = run.container_id
    if run.state == "running":
        status["state"] = {"running": {"startedAt": rfc3339(run.started_at)}}
    elif run.state == "terminated":
        status["state"] = {"terminated": run.terminated_dict()}
    else:
        waiting = {"reason": run.reason}
        if run.message:
            waiting["message"] = run.message
        status["state"] = {"waiting": waiting}
    status["lastState"] = {"terminated": run.last_state} if run.last_state else {}
    return status


def pod_phase(restart_policy: str, init_runs: list[ContainerRun], runs: list[ContainerRun], terminal: bool) -> str:
    """kubelet getPhase (no sidecar containers). `terminal`: the kubelet decided the pod is done (deleted, killed)."""
    pending_init = failed_init = 0
    for r in init_runs:
        if r.state == "terminated":
            if r.exit_code != 0:
                failed_init += 1
        elif r.state == "waiting" and r.last_state and r.last_state.get("exitCode", 0) != 0:
            failed_init += 1
        else:
            pending_init += 1
    if failed_init and restart_policy == "Never":
        return "Failed"
    if pending_init or failed_init:
        return "Failed" if terminal else "Pending"
    running = waiting = stopped = succeeded = 0
    for r in runs:
        if r.state == "running":
            running += 1
        elif r.state == "terminated":
            stopped += 1
            if r.exit_code == 0:
                succeeded += 1
        elif r.last_state:
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if restart_policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if restart_policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(ctype: str, ok: bool, previous: Mapping[str, Mapping], now: dt.datetime,
               reason: str = "", message: str = "") -> dict:
    status = "True" if ok else "False"
    prev = previous.get(ctype)
    # reason/message always present (None = absent): a strategic merge patch must clear what an older status set.
    return {"type": ctype, "status": status, "reason": reason or None, "message": message or None,
            "lastProbeTime": None,
            "lastTransitionTime": prev.get("lastTransitionTime") if prev and prev.get("status") == status
            else rfc3339(now)}


def pod_conditions(phase: str, init_runs: list[ContainerRun], runs: list[ContainerRun], sandbox_ready: bool,
                   previous: Iterable[Mapping], now: dt.datetime) -> list[dict]:
    """The kubelet-owned conditions (PodReadyToStartContainers, Initialized, ContainersReady, Ready, PodScheduled)."""
    prev = {c.get("type"): c for c in previous or []}
    terminal = phase in TERMINAL_PHASES
    conds = [_condition("PodReadyToStartContainers", sandbox_ready and not terminal, prev, now)]
    incomplete = [r.name for r in init_runs if not (r.state == "terminated" and r.exit_code == 0)]
    if not init_runs:
        conds.append(_condition("Initialized", True, prev, now))
    elif not incomplete:
        conds.append(_condition("Initialized", True, prev, now, reason="PodCompleted" if terminal else ""))
    else:
        conds.append(_condition("Initialized", False, prev, now, "ContainersNotInitialized",
                                f"containers with incomplete status: [{' '.join(incomplete)}]"))
    if terminal:
        ready, reason, message = False, "PodCompleted", ""
    else:
        unready = [r.name for r in runs if not r.ready]
        ready = not unready and not incomplete
        reason = "" if ready else "ContainersNotReady"
        message = "" if ready else f"containers with unready status: [{' '.join(unready or [r.name for r in runs])}]"
    conds.append(_condition("ContainersReady", ready, prev, now, reason, message))
    conds.append(_condition("Ready", ready, prev, now, reason, message))
    conds.append(_condition("PodScheduled", True, prev, now))
    return conds


def disruption_condition(message: str, previous: Iterable[Mapping], now: dt.datetime) -> dict:
    prev = {c.get("type"): c for c in previous or []}
    cond = _condition("DisruptionTarget", True, prev, now, TERMINATION_BY_KUBELET, message)
    return cond


@dataclass
class PodView:
    """The kubelet-side facts one status is built from."""

    restart_policy: str
    init_runs: list[ContainerRun]
    runs: list[ContainerRun]
    host_ip: str
    pod_ip: str | None
    start_time: dt.datetime
    sandbox_ready: bool = False
    terminal: bool = False  # the kubelet killed the pod (deletion, deadline, eviction, shutdown)
    phase_override: str | None = None  # Failed with a reason (deadline, eviction, shutdown, admission)
    reason: str | None = None
    message: str | None = None
    disruption: str | None = None  # DisruptionTarget message (TerminationByKubelet)


def build_pod_status(view: PodView, previous_conditions: Iterable[Mapping], now: dt.datetime) -> dict:
    """The status a kubelet would PATCH (strategic merge: conditions merge by type, container lists replace)."""
    phase = view.phase_override or pod_phase(view.restart_policy, view.init_runs, view.runs, view.terminal)
    previous_conditions = list(previous_conditions or [])
    status: dict = {
        "phase": phase,
        "conditions": pod_conditions(phase, view.init_runs, view.runs, view.sandbox_ready, previous_conditions, now),
        "hostIP": view.host_ip,
        "hostIPs": [{"ip": view.host_ip}],
        "startTime": rfc3339(view.start_time),
        "containerStatuses": [container_status(r) for r in view.runs],
    }
    if view.init_runs:
        status["initContainerStatuses"] = [container_status(r) for r in view.init_runs]
    if view.pod_ip:
        status["podIP"] = view.pod_ip
        status["podIPs"] = [{"ip": view.pod_ip}]
    if view.reason:
        status["reason"] = view.reason
    if view.message:
        status["message"] = view.message
    if view.disruption:
        status["conditions"].append(disruption_condition(view.disruption, previous_conditions, now))
    return status


def rejected_status(reason: str, message: str, host_ip: str, now: dt.datetime) -> dict:
    """Kubelet admission rejection: the pod fails before anything runs."""
    return {"phase": "Failed", "reason": reason, "message": message, "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}], "startTime": rfc3339(now)}


def was_started(container_status_api: Mapping | None) -> bool:
    """Whether an API container status shows the container ran (used after an executor restart)."""
    if not container_status_api:
        return False
    state = container_status_api.get("state") or {}
    return "running" in state or "terminated" in state or bool(container_status_api.get("lastState") or {})


def shutdown_grace(pod: Mapping, cap: float) -> float:
    spec = pod.get("spec") or {}
    grace = spec.get("terminationGracePeriodSeconds")
    return min(float(30 if grace is None else grace), cap)
