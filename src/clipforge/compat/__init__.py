"""Drop-in imports for scripts written against OpenAI's `clip` and `open_clip`.

    from clipforge.compat import clip         # instead of: import clip
    from clipforge.compat import open_clip    # instead of: import open_clip

Each module offers the reference's entry points with its signatures and call conventions
(`logits_per_image, logits_per_text = model(image, text)` for clip; `encode_image` /
`encode_text` and the `(image_features, text_features, logit_scale)` forward for open_clip),
backed by `clipforge.load`: offline-first weights resolution, fp32 by default, and the same numbers
as the reference library on the same weights. See docs/tasks.md, "Drop-in imports", for what differs.

Nothing is imported here: the submodules load torch only when imported themselves.
"""
