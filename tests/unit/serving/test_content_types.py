import pytest

from dogbreed.serving import content_types
from dogbreed.serving.errors import NotAcceptableError, UnsupportedMediaTypeError


@pytest.mark.parametrize(
    "header, expected",
    [("image/jpeg", "image/jpeg"), ("IMAGE/PNG", "image/png"), ("application/x-image; q=1", "application/x-image")],
)
def test_supported(header, expected):
    assert content_types.parse(header) == expected


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/json", "image/gif"])
def test_unsupported_lists_the_supported_ones(header):
    with pytest.raises(UnsupportedMediaTypeError) as info:
        content_types.parse(header)
    assert info.value.status_code == 415 and info.value.phrase == "Unsupported Media Type"
    for supported in content_types.SUPPORTED:
        assert supported in info.value.message


@pytest.mark.parametrize(
    "accept", [None, "", "*/*", "application/json", "Application/JSON; charset=utf-8", "text/html, application/*;q=0.8",
               "image/webp, */*;q=0.8", "application/json, image/png"]
)
def test_accept_answered_with_json(accept):
    assert content_types.negotiate(accept) == "application/json"


@pytest.mark.parametrize("accept", ["image/png", "IMAGE/PNG; q=1", "image/*", "text/html, image/png, */*", "image/png, application/json"])
def test_accept_answered_with_png(accept):
    assert content_types.negotiate(accept) == "image/png"


@pytest.mark.parametrize("accept", ["text/csv", "image/jpeg, text/html", "application/x-npy"])
def test_accept_allowing_neither_is_406(accept):
    assert content_types.preferred_answer(accept) is None
    with pytest.raises(NotAcceptableError) as info:
        content_types.negotiate(accept)
    assert info.value.status_code == 406
    assert "application/json" in info.value.message and "image/png" in info.value.message
