"""Alibaba Model Studio Qwen3-ASR for mediaindex: ``qwen3-asr-flash`` and ``qwen3-asr-flash-filetrans``."""
__version__ = "0.1.0"
