"""Settings of the smallest Django + Channels project that runs the tutorial's chat.

``FD_CHANNEL_LAYER`` picks the layer: unset or ``memory`` for Channels' in-memory
layer, a ``redis://`` URL for channels_redis.
"""

import os

SECRET_KEY = "test-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels", "chat"]
ROOT_URLCONF = "chatsite.urls"
ASGI_APPLICATION = "chatsite.asgi.application"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

_layer = os.environ.get("FD_CHANNEL_LAYER", "memory")
if _layer == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [_layer]},
        }
    }
