"""Data sets built from sources that need no internet connection.

- `clipforge.datasets.openclipart`: ~6,900 public-domain clip-art image–caption pairs and a
  zero-shot benchmark over their subject categories, built from Debian's `openclipart-png` and
  `openclipart-svg` packages (`build(out_dir)`; see docs/data.md).

Submodules are imported on use; importing this package does nothing else.
"""
