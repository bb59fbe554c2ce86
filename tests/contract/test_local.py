"""The local API's requests: a bad line is refused with the field named and the request id kept."""

from __future__ import annotations

import json

import pytest

from contract.local import MAX_LINE_BYTES, InferRequest, RequestError, decode_request


def _line(**fields: object) -> bytes:
    return json.dumps({"schema_version": 1, **fields}).encode()


@pytest.mark.parametrize(("fields", "field"), [
    ({"type": "infer", "id": "r1", "mode": "soon"}, "mode"),
    ({"type": "infer", "id": "r1", "mode": "image"}, "image_path"),
    ({"type": "infer", "id": "r1", "mode": "now", "image_b64": "AAAA"}, "image_b64"),
    ({"type": "infer", "id": "r1", "mode": "image", "image_path": "x" * 5000}, "image_path"),
    ({"type": "subscribe", "id": "r1", "topics": ["weather"]}, "topics.0"),
    ({"type": "subscribe", "id": "r1", "topics": []}, "topics"),
    ({"type": "hold_activation", "id": "r1", "reason": "busy", "max_s": -1}, "max_s"),
    ({"type": "reboot", "id": "r1"}, "type"),
    ({"type": "status", "id": "r1", "colour": "red"}, "colour"),
])
def test_a_bad_request_names_its_field_and_keeps_its_id(fields: dict[str, object], field: str) -> None:
    with pytest.raises(RequestError) as caught:
        decode_request(_line(**fields))
    answer = caught.value.answer()
    assert answer.field == field and answer.id == "r1" and answer.code == "bad_request"
    assert field.split(".", maxsplit=1)[0] in answer.message


def test_an_unreadable_id_is_answered_without_one() -> None:
    with pytest.raises(RequestError) as caught:
        decode_request(_line(type="status", id="not an id!"))
    assert caught.value.answer().id is None and caught.value.field == "id"


@pytest.mark.parametrize(("line", "field"), [(b"not json", None), (b'{"type": "status", "id": "r"}', "schema_version"),
                                             (b"[1, 2]", None)])
def test_a_line_that_is_no_request_at_all(line: bytes, field: str | None) -> None:
    with pytest.raises(RequestError) as caught:
        decode_request(line)
    assert caught.value.field == field


def test_an_oversized_line_is_refused_before_parsing() -> None:
    with pytest.raises(RequestError, match="more than"):
        decode_request(b'{"schema_version": 1, "x": "' + b"a" * MAX_LINE_BYTES + b'"}')


def test_an_inline_image_is_bounded() -> None:
    request = decode_request(_line(type="infer", id="r", mode="image", image_b64="QUJD"))
    assert isinstance(request, InferRequest) and request.image_b64 == "QUJD"
