"""img2img-operator: A1111/RunPod-compatible img2img jobs on Kubernetes."""

API_GROUP = "img2img.dev"
API_VERSION = "v1alpha1"
KIND = "Img2ImgJob"
PLURAL = "img2imgjobs"
PROJECT = "img2img-operator"


def uploads_prefix(namespace: str) -> str:
    """Where `img2img submit` stores a namespace's large inline images in the job bucket (runners may read it)."""
    return f"uploads/{namespace}/"


def split_s3_uri(uri: str, need_key: bool = True) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key); ValueError naming the URI when it is not one (a prefix may have no key)."""
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or (need_key and not key):
        raise ValueError(f"an s3:// URI needs a bucket{' and a key' if need_key else ''}: {uri!r}")
    return bucket, key

