"""The base of every API model: unknown keys are refused, and null means "not sent".

null = absent: the Kubernetes API server prunes null values of fields that are not ``nullable`` before it stores a
custom resource, so a job read back from the cluster has no key where the user wrote null. Treating null as absent
here too gives one meaning whichever way the job arrives (file, RunPod request, cluster), and matches A1111, where
every field is ``Optional`` and None means its default.

Unknown keys: a misspelt key ("stpes") is an error naming it and the nearest known key, not a default silently
used. A1111 itself ignores unknown keys; the RunPod A1111 worker refuses them, as we do.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from img2img.api.errors import Refusals, unknown_key_reason


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys_and_nulls(cls, data: Any, handler: Any) -> Any:
        if not isinstance(data, dict):
            return handler(data)
        data = cls._normalize_keys({k: v for k, v in data.items() if v is not None})
        if cls.model_config.get("extra") != "forbid":
            return handler(data)
        unknown = [k for k in data if k not in cls.model_fields]
        if not unknown:
            return handler(data)
        # report unknown keys together with the problems of the known ones
        found = Refusals(cls.__name__)
        for key in unknown:
            found.add(str(key), cls._unknown_key_reason(str(key)), data[key])
        try:
            handler({k: v for k, v in data.items() if k not in unknown})
        except ValidationError as exc:
            found.raise_any(also=exc)
        found.raise_any()
        raise AssertionError("unreachable")  # raise_any raised: `found` is not empty

    @classmethod
    def _normalize_keys(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @classmethod
    def _unknown_key_reason(cls, key: str) -> str:
        return unknown_key_reason(key, cls.model_fields)

    def sent(self) -> dict[str, Any]:
        """The keys the user sent, with their values as validated (JSON-compatible)."""
        return self.model_dump(mode="json", exclude_unset=True)
