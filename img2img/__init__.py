"""img2img-operator: A1111/RunPod-compatible img2img jobs on Kubernetes."""

API_GROUP = "img2img.dev"
API_VERSION = "v1alpha1"
KIND = "Img2ImgJob"
PLURAL = "img2imgjobs"
PROJECT = "img2img-operator"


def uploads_prefix(namespace: str) -> str:
    """Where `img2img submit` stores a namespace's large inline images in the job bucket (runners may read it)."""
    return f"uploads/{namespace}/"
