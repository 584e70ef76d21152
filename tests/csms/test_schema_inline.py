"""csms.schema.inline_refs: the 2.0.1 schemas with their definitions inlined judge payloads
exactly as the files do (same first error, same path), only faster."""

from __future__ import annotations

from typing import Any

import pytest

from controller.csms.schema import exact_draft6_validator, inline_refs
from controller.ocpp201 import rpc as rpc201

SAMPLES: list[Any] = [
    {},
    {"eventType": "Started"},
    {"idToken": {"idToken": "x" * 40, "type": "ISO14443"}},
    {"evseId": "one", "chargingProfile": {"id": 1}},
    {"setVariableData": [{"component": {}, "variable": {"name": 5}, "attributeValue": "1"}]},
]


@pytest.mark.parametrize("action", sorted(rpc201.SCHEMAS.actions))
def test_inlined_schema_judges_like_the_file(action: str) -> None:
    for message_type in (2, 3):
        original = rpc201.SCHEMAS.load(message_type, action)
        inlined = inline_refs(original)
        assert "$ref" not in repr({k: v for k, v in inlined.items() if k != "definitions"})
        plain, fast = exact_draft6_validator(original), exact_draft6_validator(inlined)
        for sample in SAMPLES:
            # validate() raises the first error iter_errors yields: the one that picks the
            # CALLERROR code.
            a = next(iter(plain.iter_errors(sample)), None)
            b = next(iter(fast.iter_errors(sample)), None)
            assert (a is None) == (b is None), (action, sample)
            if a is not None and b is not None:
                assert (a.validator, list(a.absolute_path)) == (b.validator, list(b.absolute_path))


def test_a_recursive_schema_is_refused() -> None:
    loop = {
        "definitions": {"A": {"$ref": "#/definitions/A"}},
        "properties": {"a": {"$ref": "#/definitions/A"}},
    }
    with pytest.raises(ValueError, match="too deep"):
        inline_refs(loop)
