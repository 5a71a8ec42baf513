"""The entry point: registers the ``dashscope`` family (flash and filetrans) sharing one client."""
from __future__ import annotations

from mediaindex.hookspecs import hookimpl

from .client import Client
from .engines import FiletransTranscriber, FlashTranscriber, Settings


@hookimpl
def register_transcribers(register, config):
    """Both engines; no request is made and no key is needed until a file is transcribed."""
    settings = Settings.from_config(config)
    client = Client(settings.api_key, settings.base_url, region=settings.region, rpm=settings.rpm,
                    concurrency=settings.concurrency, timeout=settings.timeout)
    register(FlashTranscriber(settings, client))
    register(FiletransTranscriber(settings, client))
