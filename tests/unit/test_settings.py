"""Settings are checked when they are read, before any model loads."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from care_serve.cli import main
from care_serve.settings import Settings


def test_image_formats_take_common_spellings_once() -> None:
    settings = Settings(allowed_image_formats="jpg, png,PNG,tif")  # type: ignore[arg-type]
    assert settings.allowed_image_formats == ["JPEG", "PNG", "TIFF"]


def test_an_image_format_pillow_cannot_decode_is_refused_naming_what_it_can() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(allowed_image_formats="JPEG,PNG,NOPE")  # type: ignore[arg-type]
    message = str(info.value)
    assert "NOPE cannot be decoded here" in message
    assert "JPEG" in message.split("decodes:")[1] and "WEBP" in message.split("decodes:")[1]


def test_serve_refuses_to_start_with_an_undecodable_format(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["serve", "--allowed-image-formats", "JPEG,NOPE", "--http-port", "0", "--grpc-port", "0"]
    assert main(argv) != 0
    assert "NOPE cannot be decoded here" in capsys.readouterr().err


def test_heif_and_avif_are_accepted_by_default_where_pillow_decodes_them() -> None:
    assert Settings().allowed_image_formats == [
        "JPEG",
        "PNG",
        "WEBP",
        "BMP",
        "GIF",
        "TIFF",
        "HEIF",
        "AVIF",
    ]
    assert Settings(allowed_image_formats="heic,heif,avif").allowed_image_formats == [  # type: ignore[arg-type]
        "HEIF",
        "AVIF",
    ]


def test_the_default_skips_formats_this_platform_cannot_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without HEIF/AVIF decoders the default leaves them out; naming one still refuses."""
    import care_serve.settings as settings_module

    without = {"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"}
    monkeypatch.setattr(settings_module, "decodable_formats", lambda: without)
    assert Settings().allowed_image_formats == ["JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"]
    with pytest.raises(ValidationError, match="HEIF cannot be decoded here"):
        Settings(allowed_image_formats="JPEG,HEIF")  # type: ignore[arg-type]
