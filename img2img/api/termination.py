"""Where a container writes its termination message (placeholder: the API package's own module replaces it)."""

TERMINATION_LOG_PATH = "/dev/termination-log"  # Kubernetes' default terminationMessagePath
