from django.conf import settings


def test_workspace_defaults():
    assert settings.TIME_ZONE == "Asia/Seoul"
    assert settings.USE_TZ is True
    assert settings.LANGUAGE_CODE == "ko"
