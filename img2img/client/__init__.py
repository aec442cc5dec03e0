"""`img2img submit | status | fetch`: the user's side of a job on a cluster (any kube context, any S3).

Submitting validates offline first (every problem named by its field path, nothing uploaded or created), offloads
large inline images to ``s3://$IMG2IMG_BUCKET/uploads/<namespace>/`` so that a job stays far below etcd's object
size limit (docs/large-images.md), and stamps the submission time with millisecond precision in the annotation
``img2img.dev/submitted-at`` (``creationTimestamp`` only has whole seconds).

Every failure the user can cause or fix (no kube context, no bucket, a job that does not exist, the API server or S3
refusing a request) ends as one line on stderr and a non-zero exit code, never a traceback.

Exit codes: 0 success (``--wait``: COMPLETED); 1 the job FAILED / was CANCELLED / TIMED_OUT, or an error;
124 ``--wait`` gave up before the job finished (the job goes on).

Modules: ``request`` (read and validate a request) and ``offload`` (its large images) prepare a job; ``kube`` (on
``img2img.kube``) and ``s3`` talk to the cluster and the object store, each turning failures into a one-line
``ClientError`` (``errors``); ``view`` prints the RunPod-shaped status; ``submit``, ``wait``, ``status`` and
``fetch`` are the commands.
"""
