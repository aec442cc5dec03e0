"""The local executor: plays kube-scheduler and the kubelet of one node, against a real API server.

    python -m img2img.local.executor --kubeconfig PATH --config executor.yaml [--node-name N] [--state-dir D]

There is no kubelet, no container runtime and no kube-scheduler in the local stack; this process stands in for them,
through the same API calls they make, so the operator cannot tell the difference:

- **Node** (node.py): registers Node `nodeName`, keeps it Ready and renews its Lease.
- **Scheduler** (scheduler.py, decisions in scheduling.py; `scheduler: true`, for pods whose `schedulerName` is
  `schedulerName`, default `default-scheduler`): kube-scheduler's filters, its messages, bindings.
- **Kubelet** for pods bound to `nodeName` (kubelet.py, one pod_worker.py thread per pod): admission, volumes
  (volumes.py), one local process per container (containers.py, processes.py, env.py, `$(VAR)` expansion), status
  PATCHes (`pods/{name}/status`) with kubelet semantics (pod_status.py), `activeDeadlineSeconds`, graceful deletion
  (SIGTERM, grace, SIGKILL, then DELETE with grace 0), the Eviction API, and node-pressure eviction on demand
  (kills.py): annotate a pod `local.img2img.dev/evict: "true"` (or a resource name such as `"memory"`) and it is
  killed and marked Failed/Evicted with `DisruptionTarget` (`TerminationByKubelet`).
- **Network** (pod_network.py): pods share this host's network, except those annotated `local.img2img.dev/network:
  pod`, which get a network namespace of their own; Services that select them are proxied from this host's loopback
  (kube-proxy's part), and every container's /etc/hosts names the Services (cluster DNS's part).

The modules without I/O (scheduling, quantities, pod_status, exits, kills, env, images, kube_time) hold the
decisions, on plain API dicts; the others do the I/O around them: main.py (the command line and the controller loop),
config.py (the configuration file), informer.py (the pods and nodes, listed and watched; the API client is
img2img.kube's), events.py.
"""
