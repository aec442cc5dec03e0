"""The RunPod-compatible HTTP gateway."""
