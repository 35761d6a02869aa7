"""What users do with a loaded model: zero-shot classification, search, scoring, SD conditioning, ...

Tasks use only the public model API (encode_image / encode_text / encode_text_full) plus the
tokenizer and preprocessing; they know nothing of checkpoint files or the hub.
"""
