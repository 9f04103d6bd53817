import pytest

from dogbreed.serving import content_types
from dogbreed.serving.errors import UnsupportedMediaTypeError


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
    assert info.value.status == 415
    for supported in content_types.SUPPORTED:
        assert supported in info.value.message
