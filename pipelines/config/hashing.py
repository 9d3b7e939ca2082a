"""The one settings hash: every setting that can change results, hashed stably.

Settings that do not change results (device, loader workers, checkpoint frequency, data folder, evaluation
batch size, names, output folder, the study section) are marked once, with
:func:`lgeom.specs.neutral_setting`, and :func:`config_hash` leaves them out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from dataclasses import fields
from typing import Any

from lgeom.specs import changes_results
from pipelines.config.experiment import Config, config_from_dict
from pipelines.config.sections import SECTIONS, section_keys


def result_settings(cfg: Config) -> dict[str, Any]:
    """Every setting of ``cfg`` that can change results, as ``{dotted key: value}``: all keys but those
    marked neutral (:func:`lgeom.specs.neutral_setting`) and the study section. Model and data options
    always count (the registries do not mark them).
    """
    out: dict[str, Any] = {}
    top_fields = {f.name: f for f in fields(Config)}
    for top, value in cfg.to_dict().items():
        if not changes_results(top_fields[top]):
            continue
        if top not in SECTIONS:
            out[top] = value
            continue
        keys = section_keys(SECTIONS[top])
        out.update({f"{top}.{k}": v for k, v in value.items() if k not in keys or keys[k].changes_results})
    return out


def config_hash(
    cfg: Config | Mapping[str, Any], *, sections: Collection[str] | None = None, leave_out: Collection[str] = ()
) -> str:
    """Stable 16-hex-digit hash of the settings that change results (:func:`result_settings`), of every
    section or only of ``sections``, without the dotted keys in ``leave_out`` (an endpoint's key hashes
    :data:`~pipelines.config.sections.ENDPOINT_SECTIONS` without ``train.seeds``, see
    ``pipelines.common.endpoint_key``).
    """
    if not isinstance(cfg, Config):
        cfg = config_from_dict(cfg)
    settings = {
        k: v
        for k, v in result_settings(cfg).items()
        if (sections is None or k.split(".", 1)[0] in sections) and k not in leave_out
    }
    blob = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
