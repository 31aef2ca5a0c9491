"""Writers of random-weight models for the real engines that run here (no weights can be downloaded).

``gguf_llama``: a small Llama GGUF for llama.cpp's ``llama-server`` (CPU).
``hf_random``: a Hugging Face Llama directory with an offline tokenizer for ``transformers serve`` (GPU).
"""
