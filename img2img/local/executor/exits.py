"""What a container's exit means to the kubelet: exit code, termination message, restart and back-off."""

from __future__ import annotations

from img2img.api.termination import MAX_MESSAGE_BYTES as MAX_TERMINATION_MESSAGE

# Kubelet constants (pkg/kubelet/container, kuberuntime, images).
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0


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


def backoff_delay(attempt: int) -> float:
    """The kubelet's delay before retry number `attempt` (1-based), of a crashed container (CrashLoopBackOff) or of
    an image pull (ImagePullBackOff): 10 s doubling to 300 s."""
    return min(BACKOFF_INITIAL * (2 ** max(attempt - 1, 0)), BACKOFF_MAX)


def should_restart(restart_policy: str, exit_code: int) -> bool:
    return restart_policy == "Always" or (restart_policy == "OnFailure" and exit_code != 0)

